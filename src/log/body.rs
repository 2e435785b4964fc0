//! Body: bounded capture of a request or response body, and its text form in
//! a log record.
//!
//! A [`Capture`] copies at most `max_body_bytes` of the chunks it is given and
//! counts every byte, so a 10 MiB response costs at most the cap in memory
//! while the record still tells its real size. The chunks themselves are only
//! read: the caller passes them on unchanged. [`encode`] then turns the
//! captured (and, by `redact`, masked) bytes into record text: UTF-8 as is,
//! anything else base64.

use base64::Engine as _;
use std::borrow::Cow;

/// The first bytes of a body, up to a limit, and its full size.
#[derive(Clone, PartialEq, Eq)]
pub struct Capture {
    /// Most bytes kept.
    limit: usize,
    /// The kept bytes: the body's first `min(size, limit)` bytes.
    data: Vec<u8>,
    /// Every byte seen, kept or not.
    size: u64,
}

impl std::fmt::Debug for Capture {
    // Never the bytes: a body may hold secrets that redaction has not masked yet.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("limit", &self.limit)
            .field("captured", &self.data.len())
            .field("size", &self.size)
            .finish()
    }
}

impl Capture {
    /// An empty capture keeping at most `limit` bytes. With `limit` 0 nothing
    /// is kept but the size is still counted. Allocates nothing yet.
    pub fn new(limit: usize) -> Self {
        Capture {
            limit,
            data: Vec::new(),
            size: 0,
        }
    }

    /// Counts `chunk` and copies as much of it as fits under the limit.
    ///
    /// The buffer grows with the data (at least doubling, so many small chunks
    /// copy in amortized linear time) but never past the limit: a body shorter
    /// than the limit costs its own size, not the limit.
    pub fn push(&mut self, chunk: &[u8]) {
        self.size = self.size.saturating_add(chunk.len() as u64);
        let room = self.limit.saturating_sub(self.data.len());
        let take = chunk.len().min(room);
        if take == 0 {
            return;
        }
        let need = self.data.len() + take;
        if need > self.data.capacity() {
            let doubled = self.data.capacity().saturating_mul(2).min(self.limit);
            let target = need.max(doubled);
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend_from_slice(&chunk[..take]);
    }

    /// Sets the body's full size when it is known apart from the pushed bytes
    /// (a request body nginx spilled to a temp file, of which only the first
    /// `limit` bytes were read). Never less than the bytes kept.
    pub fn set_size(&mut self, size: u64) {
        self.size = size.max(self.data.len() as u64);
    }

    /// Every byte pushed, including those past the limit (`body_size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether bytes were left out (`body_truncated`).
    pub fn truncated(&self) -> bool {
        self.size > self.data.len() as u64
    }

    /// The kept bytes: the body's first `min(size, limit)` bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// How a body is written in a record (`body_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes are valid UTF-8 and written as a JSON string.
    Utf8,
    /// The bytes are base64 (standard alphabet, padded).
    Base64,
}

impl Encoding {
    /// The record's `body_encoding` value: `"utf8"` or `"base64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

/// The body as record text: valid UTF-8 as is, otherwise base64 (standard
/// alphabet, padded).
///
/// When `truncated`, an incomplete UTF-8 sequence at the very end (a
/// character cut by the cap, at most 3 bytes) is trimmed, so a cut text body
/// stays text. A complete body ending that way is not text: base64.
pub fn encode(data: &[u8], truncated: bool) -> (Cow<'_, str>, Encoding) {
    match std::str::from_utf8(data) {
        Ok(text) => (Cow::Borrowed(text), Encoding::Utf8),
        Err(e) => {
            // `error_len() == None`: the input ends inside a sequence that
            // would be valid if it went on, i.e. a cut character.
            let cut = truncated && e.error_len().is_none();
            match data.get(..e.valid_up_to()).map(std::str::from_utf8) {
                Some(Ok(text)) if cut => (Cow::Borrowed(text), Encoding::Utf8),
                _ => (
                    Cow::Owned(base64::engine::general_purpose::STANDARD.encode(data)),
                    Encoding::Base64,
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    #[test]
    fn capture_keeps_everything_under_the_limit() {
        let mut c = Capture::new(100);
        c.push(b"hello ");
        c.push(b"");
        c.push(b"world");
        assert_eq!(c.data(), b"hello world");
        assert_eq!(c.size(), 11);
        assert!(!c.truncated());
    }

    #[test]
    fn capture_stops_at_the_limit_and_keeps_counting() {
        let mut c = Capture::new(8);
        c.push(b"12345");
        c.push(b"6789");
        c.push(b"abcdef");
        assert_eq!(c.data(), b"12345678");
        assert_eq!(c.size(), 15);
        assert!(c.truncated());
    }

    #[test]
    fn capture_exactly_at_the_limit_is_not_truncated() {
        let mut c = Capture::new(4);
        c.push(b"abcd");
        assert!(!c.truncated());
        c.push(b"");
        assert!(!c.truncated());
        c.push(b"e");
        assert!(c.truncated());
        assert_eq!(c.data(), b"abcd");
    }

    #[test]
    fn known_full_size_overrides_the_count() {
        let mut c = Capture::new(4);
        c.push(b"abcd");
        assert!(!c.truncated());
        c.set_size(10 << 20);
        assert_eq!((c.size(), c.truncated()), (10 << 20, true));
        assert_eq!(c.data(), b"abcd");
        // Never below what was kept.
        c.set_size(1);
        assert_eq!((c.size(), c.truncated()), (4, false));
    }

    #[test]
    fn zero_limit_captures_nothing_but_counts() {
        let mut c = Capture::new(0);
        assert!(!c.truncated());
        c.push(b"abc");
        c.push(&[0u8; 1000]);
        assert_eq!(c.data(), b"");
        assert_eq!(c.size(), 1003);
        assert!(c.truncated());
        assert_eq!(c.data.capacity(), 0);
    }

    #[test]
    fn capture_allocates_nothing_up_front() {
        let c = Capture::new(64 * 1024);
        assert_eq!(c.data.capacity(), 0);
    }

    #[test]
    fn capture_capacity_never_exceeds_the_limit() {
        let limit = 1000;
        let mut c = Capture::new(limit);
        for _ in 0..500 {
            c.push(b"xyz");
            assert!(c.data.capacity() <= limit, "{}", c.data.capacity());
        }
        assert_eq!(c.data().len(), limit);
        assert_eq!(c.size(), 1500);
    }

    #[test]
    fn small_body_costs_its_size_not_the_limit() {
        let mut c = Capture::new(1 << 20);
        c.push(&[7u8; 300]);
        assert!(c.data.capacity() < 1024, "{}", c.data.capacity());
    }

    #[test]
    fn capture_grows_geometrically() {
        let mut c = Capture::new(1 << 20);
        let mut reallocations = 0;
        let mut cap = c.data.capacity();
        for _ in 0..(1 << 14) {
            c.push(b"0123456789abcdef");
            if c.data.capacity() != cap {
                reallocations += 1;
                cap = c.data.capacity();
            }
        }
        assert_eq!(c.data().len(), 1 << 18);
        assert!(reallocations <= 20, "{reallocations}");
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let mut c = Capture::new(100);
        c.push(b"secret-value");
        let text = format!("{c:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("115"), "{text}"); // b's' as a number
    }

    #[test]
    fn encoding_names_match_the_record() {
        assert_eq!(Encoding::Utf8.as_str(), "utf8");
        assert_eq!(Encoding::Base64.as_str(), "base64");
    }

    #[test]
    fn utf8_is_kept_as_text() {
        let (text, enc) = encode("héllo → ✓".as_bytes(), false);
        assert_eq!(enc, Encoding::Utf8);
        assert_eq!(text, "héllo → ✓");
        assert!(matches!(text, Cow::Borrowed(_)));
        let (text, enc) = encode(b"", true);
        assert_eq!((text.as_ref(), enc), ("", Encoding::Utf8));
    }

    #[test]
    fn binary_becomes_padded_base64() {
        let data = [0xffu8, 0x00, 0xfe, 0x80];
        let (text, enc) = encode(&data, false);
        assert_eq!(enc, Encoding::Base64);
        assert_eq!(text, "/wD+gA==");
        assert_eq!(STANDARD.decode(text.as_bytes()).ok(), Some(data.to_vec()));
    }

    #[test]
    fn cut_multibyte_char_is_trimmed_only_when_truncated() {
        let full = "ab✓".as_bytes(); // ✓ is 3 bytes
        for cut in 3..full.len() {
            let (text, enc) = encode(&full[..cut], true);
            assert_eq!((text.as_ref(), enc), ("ab", Encoding::Utf8), "cut {cut}");
            let (text, enc) = encode(&full[..cut], false);
            assert_eq!(enc, Encoding::Base64, "cut {cut}");
            assert_eq!(
                STANDARD.decode(text.as_bytes()).ok().as_deref(),
                Some(&full[..cut])
            );
        }
    }

    #[test]
    fn invalid_byte_before_the_end_is_base64_even_when_truncated() {
        let data = b"ab\xffcd\xe2\x9c";
        let (_, enc) = encode(data, true);
        assert_eq!(enc, Encoding::Base64);
        // A byte that can never start or continue a sequence is not a cut.
        let (_, enc) = encode(b"abc\xff", true);
        assert_eq!(enc, Encoding::Base64);
    }

    proptest! {
        #[test]
        fn capture_holds_the_prefix_and_the_size(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
            limit in 0usize..1500,
        ) {
            let mut c = Capture::new(limit);
            let mut all = Vec::new();
            for ch in &chunks {
                c.push(ch);
                all.extend_from_slice(ch);
                prop_assert!(c.data.capacity() <= limit);
            }
            let kept = all.len().min(limit);
            prop_assert_eq!(c.data(), &all[..kept]);
            prop_assert_eq!(c.size(), all.len() as u64);
            prop_assert_eq!(c.truncated(), all.len() > limit);
        }

        #[test]
        fn encode_round_trips(data in prop::collection::vec(any::<u8>(), 0..300), truncated in any::<bool>()) {
            let (text, enc) = encode(&data, truncated);
            match enc {
                Encoding::Utf8 => {
                    // Text is the data, less at most a cut character when truncated.
                    prop_assert!(data.starts_with(text.as_bytes()));
                    let trimmed = data.len() - text.len();
                    prop_assert!(trimmed == 0 || (truncated && trimmed <= 3));
                }
                Encoding::Base64 => {
                    prop_assert_eq!(STANDARD.decode(text.as_bytes()).ok(), Some(data));
                }
            }
        }
    }
}
