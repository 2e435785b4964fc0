//! Redact: masks the values of listed fields (`log.redact_body_fields`) in JSON
//! and form-urlencoded bodies before they go into a log record.
//!
//! Bodies are captured up to `max_body_bytes`, so a body may be cut anywhere.
//! Redaction holds there too: a value is replaced by the mask as soon as its
//! first byte is seen, so a cut body yields a redacted prefix that never holds
//! any part of a masked value. JSON is read by a one-pass streaming tokenizer
//! (no value tree), which copies everything else byte for byte: whitespace,
//! member order, escapes and number spelling are kept. A body that is not JSON
//! errs instead of passing through, and the caller drops it.

/// What replaces a masked value: a JSON string in JSON bodies, the text itself
/// in form bodies.
pub const MASK: &str = "[REDACTED]";

/// [`MASK`] as a JSON string.
const MASK_JSON: &[u8] = b"\"[REDACTED]\"";

/// How a body can be redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON text: [`Redactor::json`].
    Json,
    /// `application/x-www-form-urlencoded`: [`Redactor::form`].
    Form,
    /// Anything else: no field structure to redact.
    Other,
}

/// The kind of a body, from its `Content-Type` header value: `application/json`
/// or any `+json` type is [`BodyKind::Json`], `application/x-www-form-urlencoded`
/// is [`BodyKind::Form`] (parameters ignored, case-insensitive).
///
/// With no content type or another one, the body is sniffed: if its first byte
/// after JSON whitespace (and a UTF-8 byte order mark) is `{` or `[`, it is
/// [`BodyKind::Json`], so a JSON body sent with a wrong or missing type is
/// still redacted (or dropped, if it turns out not to be JSON).
pub fn body_kind(content_type: Option<&[u8]>, data: &[u8]) -> BodyKind {
    if let Some(value) = content_type {
        let essence = value
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if essence.eq_ignore_ascii_case(b"application/json") {
            return BodyKind::Json;
        }
        if essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            return BodyKind::Form;
        }
        let suffix = essence.len().checked_sub(5).and_then(|i| essence.get(i..));
        if essence.contains(&b'/') && suffix.is_some_and(|s| s.eq_ignore_ascii_case(b"+json")) {
            return BodyKind::Json;
        }
    }
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    match data.iter().find(|b| !is_json_ws(**b)) {
        Some(b'{' | b'[') => BodyKind::Json,
        _ => BodyKind::Other,
    }
}

/// Why a body could not be redacted as JSON. The caller then drops the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactError {
    /// A byte JSON does not allow where it stands: the body is not JSON.
    #[error("invalid json at byte {offset}")]
    Syntax {
        /// Offset of the offending byte in the body.
        offset: usize,
    },
    /// The body is not UTF-8, which a JSON text must be.
    #[error("invalid utf-8 at byte {offset}")]
    Utf8 {
        /// Offset of the first byte that is not part of valid UTF-8.
        offset: usize,
    },
    /// A complete (not truncated) body that ends inside a value.
    #[error("json ends early")]
    Incomplete,
}

/// The compiled `redact_body_fields`: masks their values in bodies.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Field names, compared ASCII case-insensitively.
    fields: Vec<Box<[u8]>>,
}

impl Redactor {
    /// A redactor for these field names (ASCII case-insensitive).
    pub fn new(fields: &[String]) -> Self {
        let mut list: Vec<Box<[u8]>> = Vec::with_capacity(fields.len());
        for f in fields {
            if !list.iter().any(|g| g.eq_ignore_ascii_case(f.as_bytes())) {
                list.push(f.as_bytes().into());
            }
        }
        Redactor { fields: list }
    }

    /// Whether no field is listed (bodies are then only checked and copied).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn matches(&self, name: &[u8]) -> bool {
        self.fields.iter().any(|f| f.eq_ignore_ascii_case(name))
    }

    /// Appends `data` to `out` with the value of every object member whose
    /// key is a listed field replaced by `"[REDACTED]"` (a JSON string), at
    /// any depth and whatever the value's type. Keys are compared after
    /// decoding their escapes (`"pass\u0077ord"` is `password`). Only object
    /// members are masked: array elements and values equal to a field name
    /// are kept. Everything else is copied unchanged.
    ///
    /// When `truncated`, `data` is a body cut by the capture limit: it may end
    /// anywhere (inside a key, a string, an escape, a number, a UTF-8
    /// character) and the output is the redacted prefix, which holds no byte
    /// of a masked value (`{"password": "hun` gives `{"password":
    /// "[REDACTED]"`). A character cut at the very end is dropped.
    ///
    /// An empty or whitespace-only body is copied as is.
    ///
    /// Errors: [`RedactError`] when `data` is not a JSON text (or, when
    /// `truncated`, not the start of one), with `out` left as it was.
    pub fn json(&self, data: &[u8], truncated: bool, out: &mut Vec<u8>) -> Result<(), RedactError> {
        let start = out.len();
        let result = self.json_into(data, truncated, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn json_into(
        &self,
        data: &[u8],
        truncated: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        let data = utf8_prefix(data, truncated)?;
        out.reserve(data.len());
        let mut run = JsonRun {
            redactor: self,
            s: Scanner { data, pos: 0 },
            out,
            stack: Frames::default(),
            copied: 0,
            muted: None,
            key: Vec::new(),
        };
        match run.run() {
            Ok(()) => {}
            Err(Stop::End) if truncated => {}
            Err(Stop::End) => return Err(RedactError::Incomplete),
            Err(Stop::Invalid(offset)) => return Err(RedactError::Syntax { offset }),
        }
        if run.muted.is_none() {
            run.out
                .extend_from_slice(data.get(run.copied..).unwrap_or_default());
        }
        Ok(())
    }

    /// Appends the `application/x-www-form-urlencoded` body `data` to `out`
    /// with the value of every pair whose key is a listed field replaced by
    /// `[REDACTED]`: `a=1&password=x` gives `a=1&password=[REDACTED]`.
    ///
    /// Pairs are split on `&` and `;`. A key is compared after percent-decoding
    /// it (`+` as a space), as a whole and by each of its `[...]` and `.`
    /// segments, so `user[password]`, `user.password` and `password[]` match
    /// `password` as the frameworks that nest form fields read them.
    ///
    /// When `truncated`, the last pair may be cut: it is masked if its key
    /// matches, and dropped if it has no `=` yet (its key may be cut short).
    pub fn form(&self, data: &[u8], truncated: bool, out: &mut Vec<u8>) {
        out.reserve(data.len());
        let mut key = Vec::new();
        let mut rest = data;
        loop {
            let (pair, tail) = match rest.iter().position(|&b| b == b'&' || b == b';') {
                Some(i) => {
                    let (pair, tail) = rest.split_at(i);
                    (pair, Some(tail))
                }
                None => (rest, None),
            };
            match pair.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let (name, value) = pair.split_at(eq);
                    if self.form_key_matches(name, &mut key) {
                        out.extend_from_slice(name);
                        out.push(b'=');
                        out.extend_from_slice(MASK.as_bytes());
                    } else {
                        out.extend_from_slice(name);
                        out.extend_from_slice(value);
                    }
                }
                None if tail.is_none() && truncated => {}
                None => out.extend_from_slice(pair),
            }
            match tail.and_then(<[u8]>::split_first) {
                Some((sep, more)) => {
                    out.push(*sep);
                    rest = more;
                }
                None => break,
            }
        }
    }

    fn form_key_matches(&self, raw: &[u8], buf: &mut Vec<u8>) -> bool {
        if self.fields.is_empty() {
            return false;
        }
        // Most keys have nothing to decode (and `buf` then allocates nothing).
        let key = if raw.iter().any(|&b| matches!(b, b'%' | b'+')) {
            percent_decode(raw, buf);
            &buf[..]
        } else {
            raw
        };
        self.matches(key)
            || key
                .split(|&b| matches!(b, b'[' | b']' | b'.'))
                .any(|segment| !segment.is_empty() && self.matches(segment))
    }
}

/// Decodes a form key: `+` is a space, `%XX` a byte; a `%` not followed by
/// two hex digits stays as is.
fn percent_decode(raw: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        match b {
            b'+' => buf.push(b' '),
            b'%' => {
                let hi = raw.get(i).and_then(|&h| hex_value(h));
                let lo = raw.get(i + 1).and_then(|&l| hex_value(l));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        buf.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => buf.push(b'%'),
                }
            }
            _ => buf.push(b),
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `data`, or when `truncated` its longest UTF-8 prefix if only a character
/// cut at the end is missing.
fn utf8_prefix(data: &[u8], truncated: bool) -> Result<&[u8], RedactError> {
    match std::str::from_utf8(data) {
        Ok(_) => Ok(data),
        Err(e) if truncated && e.error_len().is_none() => {
            Ok(data.get(..e.valid_up_to()).unwrap_or_default())
        }
        Err(e) => Err(RedactError::Utf8 {
            offset: e.valid_up_to(),
        }),
    }
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes that stand for themselves inside a JSON string: all but control
/// characters, `"` and `\`.
static PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = false;
        i += 1;
    }
    t[b'"' as usize] = false;
    t[b'\\' as usize] = false;
    t
};

/// The index of the first byte at or after `from` that does not stand for
/// itself inside a JSON string (see [`PLAIN`]), or `bytes.len()`.
///
/// Eight bytes at a time: one `u64` load and a few arithmetic steps tell
/// whether any of the eight is a control byte, `"` or `\`, so plain runs
/// cost about a step per eight bytes instead of a table lookup and a branch
/// per byte.
fn plain_end(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let found = special_bytes(u64::from_le_bytes(*word));
        if found != 0 {
            // Little-endian load: the lowest flagged byte comes first.
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes.get(at).is_some_and(|&b| PLAIN[usize::from(b)]) {
        at += 1;
    }
    at
}

/// The high bit of each byte of `w` that is below 0x20, `"` or `\`, and
/// only of those: every flag is exact, so a caller may walk them all (the
/// record writer's escaper does).
///
/// Each test adds to the low seven bits of every byte a constant that sets
/// the byte's high bit exactly when those bits are at least some bound; the
/// sum stays below 0x100, so no carry crosses into the next byte (unlike the
/// shorter subtract-and-borrow tests, whose flags above the first can be
/// wrong). A byte from 0x80 up is never flagged.
pub(crate) fn special_bytes(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // High bit set unless the byte is zero.
    let nonzero = |y: u64| (y & LOW7).wrapping_add(LOW7) | y;
    // High bit set unless the byte is below 0x20.
    let not_control = (w & LOW7).wrapping_add(ONES * (0x80 - 0x20)) | w;
    let not_quote = nonzero(w ^ (ONES * u64::from(b'"')));
    let not_backslash = nonzero(w ^ (ONES * u64::from(b'\\')));
    !(not_control & not_quote & not_backslash) & HIGH
}

/// Why the tokenizer stopped before the end of a complete document.
#[derive(Debug)]
enum Stop {
    /// The data ran out inside the document.
    End,
    /// A byte that does not fit the grammar, at this offset.
    Invalid(usize),
}

type Scan<T> = Result<T, Stop>;

/// A cursor over JSON text that checks tokens.
#[derive(Debug)]
struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    /// Skips whitespace; the next byte, if any.
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.data.get(self.pos) {
            if !is_json_ws(b) {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn byte(&self, at: usize) -> Scan<u8> {
        self.data.get(at).copied().ok_or(Stop::End)
    }

    /// A string, at its opening quote: its contents' range and whether they
    /// hold escapes.
    // Inlined into its two callers, so the range comes back in registers
    // rather than through memory: about a tenth of a redaction's time.
    #[inline(always)]
    fn string(&mut self) -> Scan<(usize, usize, bool)> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos = plain_end(self.data, self.pos);
            match self.byte(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Ok((start, self.pos - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(Stop::Invalid(self.pos)),
            }
        }
    }

    /// An escape, at its backslash.
    fn escape(&mut self) -> Scan<()> {
        match self.byte(self.pos + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
            b'u' => {
                for at in self.pos + 2..self.pos + 6 {
                    if !self.byte(at)?.is_ascii_hexdigit() {
                        return Err(Stop::Invalid(at));
                    }
                }
                self.pos += 6;
            }
            _ => return Err(Stop::Invalid(self.pos + 1)),
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.data.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    /// At least one digit, then any more.
    fn some_digits(&mut self) -> Scan<()> {
        if !self.byte(self.pos)?.is_ascii_digit() {
            return Err(Stop::Invalid(self.pos));
        }
        self.digits();
        Ok(())
    }

    /// A number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Scan<()> {
        if self.byte(self.pos)? == b'-' {
            self.pos += 1;
        }
        match self.byte(self.pos)? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return Err(Stop::Invalid(self.pos)),
        }
        if self.data.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if matches!(self.data.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.byte(self.pos)?, b'+' | b'-') {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        for (i, &w) in word.iter().enumerate() {
            if self.byte(self.pos + i)? != w {
                return Err(Stop::Invalid(self.pos + i));
            }
        }
        self.pos += word.len();
        Ok(())
    }
}

/// What the grammar allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (document start, after `:`, after `,` in an array).
    Value,
    /// A value or `]` (after `[`).
    ValueOrClose,
    /// A key (after `,` in an object).
    Key,
    /// A key or `}` (after `{`).
    KeyOrClose,
    /// `:` after a key.
    Colon,
    /// `,` or the container's close after a value; nothing but whitespace
    /// after the top-level value.
    Next,
}

/// An open container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    Array,
}

/// The open containers, innermost last. The first [`INLINE_FRAMES`] levels
/// are bits of a `u64` (set: an array), deeper ones go to a `Vec` that only
/// a document nested that deep allocates, so that a redaction allocates
/// nothing but its output.
#[derive(Debug, Default)]
struct Frames {
    depth: usize,
    bits: u64,
    deeper: Vec<Frame>,
}

/// Levels [`Frames`] keeps without allocating.
const INLINE_FRAMES: usize = 64;

impl Frames {
    fn push(&mut self, frame: Frame) {
        if self.depth < INLINE_FRAMES {
            let bit = 1 << self.depth;
            match frame {
                Frame::Array => self.bits |= bit,
                Frame::Object => self.bits &= !bit,
            }
        } else {
            self.deeper.push(frame);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        if self.depth > INLINE_FRAMES {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }

    fn last(&self) -> Option<Frame> {
        match self.depth {
            0 => None,
            d if d <= INLINE_FRAMES => Some(if self.bits >> (d - 1) & 1 == 1 {
                Frame::Array
            } else {
                Frame::Object
            }),
            _ => self.deeper.last().copied(),
        }
    }

    fn len(&self) -> usize {
        self.depth
    }

    fn is_empty(&self) -> bool {
        self.depth == 0
    }
}

/// One redaction of a JSON text.
#[derive(Debug)]
struct JsonRun<'a, 'o> {
    redactor: &'a Redactor,
    s: Scanner<'a>,
    out: &'o mut Vec<u8>,
    stack: Frames,
    /// `data[..copied]` is written (or masked) already.
    copied: usize,
    /// Inside a masked value that started at this depth: nothing is copied.
    muted: Option<usize>,
    /// Decoded key, when it has escapes.
    key: Vec<u8>,
}

impl JsonRun<'_, '_> {
    /// Checks the whole text, masking as it goes. `Ok` means a complete
    /// document (or only whitespace).
    fn run(&mut self) -> Scan<()> {
        let mut expect = Expect::Value;
        let mut mask_next = false;
        loop {
            let Some(b) = self.s.skip_ws() else {
                let complete =
                    self.stack.is_empty() && matches!(expect, Expect::Value | Expect::Next);
                return if complete { Ok(()) } else { Err(Stop::End) };
            };
            let at = self.s.pos;
            expect = match expect {
                Expect::ValueOrClose if b == b']' => {
                    self.s.pos += 1;
                    self.close()
                }
                Expect::Value | Expect::ValueOrClose => {
                    if mask_next {
                        mask_next = false;
                        self.mute();
                    }
                    self.value(b)?
                }
                Expect::KeyOrClose if b == b'}' => {
                    self.s.pos += 1;
                    self.close()
                }
                Expect::Key | Expect::KeyOrClose if b == b'"' => {
                    mask_next = self.key()?;
                    Expect::Colon
                }
                Expect::Colon if b == b':' => {
                    self.s.pos += 1;
                    Expect::Value
                }
                Expect::Next => {
                    self.s.pos += 1;
                    match (self.stack.last(), b) {
                        (Some(Frame::Object), b',') => Expect::Key,
                        (Some(Frame::Array), b',') => Expect::Value,
                        (Some(Frame::Object), b'}') | (Some(Frame::Array), b']') => self.close(),
                        _ => return Err(Stop::Invalid(at)),
                    }
                }
                Expect::Key | Expect::KeyOrClose | Expect::Colon => return Err(Stop::Invalid(at)),
            };
        }
    }

    /// A value starting with `b`: a scalar is read whole, a container opened.
    fn value(&mut self, b: u8) -> Scan<Expect> {
        match b {
            b'{' => {
                self.s.pos += 1;
                self.stack.push(Frame::Object);
                return Ok(Expect::KeyOrClose);
            }
            b'[' => {
                self.s.pos += 1;
                self.stack.push(Frame::Array);
                return Ok(Expect::ValueOrClose);
            }
            b'"' => {
                self.s.string()?;
            }
            b'-' | b'0'..=b'9' => self.s.number()?,
            b't' => self.s.literal(b"true")?,
            b'f' => self.s.literal(b"false")?,
            b'n' => self.s.literal(b"null")?,
            _ => return Err(Stop::Invalid(self.s.pos)),
        }
        Ok(self.done())
    }

    /// Closes the innermost container (its closing byte read).
    fn close(&mut self) -> Expect {
        self.stack.pop();
        self.done()
    }

    /// A value ended; ends the mask if it was the masked one.
    fn done(&mut self) -> Expect {
        if self.muted == Some(self.stack.len()) {
            self.muted = None;
            self.copied = self.s.pos;
        }
        Expect::Next
    }

    /// The value starting here is masked: writes what precedes it and the
    /// mask, before reading any of the value.
    fn mute(&mut self) {
        let pending = self.s.data.get(self.copied..self.s.pos).unwrap_or_default();
        self.out.extend_from_slice(pending);
        self.out.extend_from_slice(MASK_JSON);
        self.muted = Some(self.stack.len());
    }

    /// A key, at its opening quote: whether its value is to be masked.
    fn key(&mut self) -> Scan<bool> {
        let (start, end, escaped) = self.s.string()?;
        if self.muted.is_some() || self.redactor.is_empty() {
            return Ok(false);
        }
        let raw = self.s.data.get(start..end).unwrap_or_default();
        if escaped {
            decode_key(raw, &mut self.key);
            Ok(self.redactor.matches(&self.key))
        } else {
            Ok(self.redactor.matches(raw))
        }
    }
}

/// Decodes the escapes of a checked JSON string's contents into `buf`
/// (surrogate pairs joined, a lone surrogate as U+FFFD).
fn decode_key(raw: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'\\' {
            buf.push(b);
            i += 1;
            continue;
        }
        let e = raw.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let c = match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex4(raw.get(i..i + 4));
                i += 4;
                if (0xd800..0xdc00).contains(&cp) && raw.get(i..i + 2) == Some(b"\\u") {
                    let low = hex4(raw.get(i + 2..i + 6));
                    if (0xdc00..0xe000).contains(&low) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
                buf.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            other => other,
        };
        buf.push(c);
    }
}

fn hex4(digits: Option<&[u8]>) -> u32 {
    digits.map_or(0xfffd, |d| {
        d.iter()
            .fold(0, |acc, &h| acc << 4 | u32::from(hex_value(h).unwrap_or(0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn redactor(fields: &[&str]) -> Redactor {
        Redactor::new(&fields.iter().map(|f| f.to_string()).collect::<Vec<_>>())
    }

    fn json(r: &Redactor, data: &str) -> String {
        json_bytes(r, data.as_bytes(), false).expect("valid json")
    }

    fn json_bytes(r: &Redactor, data: &[u8], truncated: bool) -> Result<String, RedactError> {
        let mut out = Vec::new();
        r.json(data, truncated, &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8 output"))
    }

    fn form(r: &Redactor, data: &str, truncated: bool) -> String {
        let mut out = Vec::new();
        r.form(data.as_bytes(), truncated, &mut out);
        String::from_utf8(out).expect("utf-8 output")
    }

    fn windows(secret: &str) -> Vec<&str> {
        (0..secret.len().saturating_sub(2))
            .filter_map(|i| secret.get(i..i + 3))
            .collect()
    }

    // --- body_kind

    #[test]
    fn json_content_types_are_json() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/vnd.api+json",
            "application/problem+JSON; charset=utf-8",
        ] {
            assert_eq!(
                body_kind(Some(ct.as_bytes()), b"x=1"),
                BodyKind::Json,
                "{ct}"
            );
        }
    }

    #[test]
    fn form_content_type_is_form() {
        for ct in [
            "application/x-www-form-urlencoded",
            "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8",
        ] {
            assert_eq!(
                body_kind(Some(ct.as_bytes()), b"{}"),
                BodyKind::Form,
                "{ct}"
            );
        }
    }

    #[test]
    fn unknown_or_missing_content_type_sniffs_json() {
        assert_eq!(body_kind(None, b"{\"a\":1}"), BodyKind::Json);
        assert_eq!(body_kind(None, b" \r\n\t[1]"), BodyKind::Json);
        assert_eq!(body_kind(None, b"\xef\xbb\xbf{}"), BodyKind::Json);
        assert_eq!(body_kind(Some(b"text/plain"), b"{\"a\":1}"), BodyKind::Json);
        assert_eq!(body_kind(Some(b"+json"), b"{}"), BodyKind::Json);
        assert_eq!(body_kind(Some(b"text/plain"), b"hello"), BodyKind::Other);
        assert_eq!(
            body_kind(Some(b"application/octet-stream"), b"\x00{"),
            BodyKind::Other
        );
        assert_eq!(body_kind(None, b""), BodyKind::Other);
        assert_eq!(body_kind(None, b"a=1&b=2"), BodyKind::Other);
    }

    // --- JSON

    #[test]
    fn listed_member_is_masked() {
        let r = redactor(&["password"]);
        assert_eq!(
            json(&r, r#"{"user":"ann","password":"hunter2"}"#),
            r#"{"user":"ann","password":"[REDACTED]"}"#
        );
    }

    #[test]
    fn members_are_masked_in_nested_objects_and_arrays_of_objects() {
        let r = redactor(&["password", "token"]);
        let input = r#"{"a":{"b":{"password":"x","c":1}},"list":[{"token":"t1"},{"token":"t2","k":[{"password":"y"}]}],"token":"t0"}"#;
        let want = r#"{"a":{"b":{"password":"[REDACTED]","c":1}},"list":[{"token":"[REDACTED]"},{"token":"[REDACTED]","k":[{"password":"[REDACTED]"}]}],"token":"[REDACTED]"}"#;
        assert_eq!(json(&r, input), want);
    }

    #[test]
    fn every_value_type_is_masked_whole() {
        let r = redactor(&["secret"]);
        for value in [
            r#""text""#,
            r#""esc\"aped\\ \u00e9""#,
            "0",
            "-12",
            "3.25",
            "-1.5e+10",
            "6E-3",
            "true",
            "false",
            "null",
            "{}",
            "[]",
            r#"{"a":{"b":[1,2,{"secret":3}]},"c":"d"}"#,
            r#"[1,"two",[3],{"four":4}]"#,
        ] {
            let input = format!(r#"{{"secret":{value},"next":1}}"#);
            assert_eq!(
                json(&r, &input),
                r#"{"secret":"[REDACTED]","next":1}"#,
                "{value}"
            );
        }
    }

    #[test]
    fn keys_match_case_insensitively() {
        let r = redactor(&["Api_Key"]);
        assert_eq!(
            json(&r, r#"{"API_KEY":1,"api_key":2,"aPi_kEy":3,"api-key":4}"#),
            r#"{"API_KEY":"[REDACTED]","api_key":"[REDACTED]","aPi_kEy":"[REDACTED]","api-key":4}"#
        );
    }

    #[test]
    fn escaped_keys_are_decoded_before_matching() {
        let r = redactor(&["password", "a/b", "tab\tkey", "😀x"]);
        let input = r#"{"pass\u0077ord":"s1","\u0050ASSWORD":"s2","a\/b":"s3","tab\tkey":"s4","\ud83d\ude00x":"s5","pass\\word":"kept"}"#;
        let out = json(&r, input);
        for s in ["s1", "s2", "s3", "s4", "s5"] {
            assert!(!out.contains(s), "{s} in {out}");
        }
        // Keys keep their original spelling; only values change.
        assert!(out.starts_with(r#"{"pass\u0077ord":"[REDACTED]","\u0050ASSWORD":"[REDACTED]""#));
        assert!(out.ends_with(r#""pass\\word":"kept"}"#));
    }

    #[test]
    fn lone_surrogate_key_is_kept_and_never_matches() {
        let r = redactor(&["x"]);
        let input = r#"{"\ud800x":"v","\udc00":"w"}"#;
        assert_eq!(json(&r, input), input);
    }

    #[test]
    fn only_object_members_are_masked() {
        let r = redactor(&["password"]);
        let input = r#"["password",{"a":"password"},"password"]"#;
        assert_eq!(json(&r, input), input);
        assert_eq!(json(&r, r#""password""#), r#""password""#);
    }

    #[test]
    fn whitespace_order_and_spelling_are_kept() {
        let r = redactor(&["token"]);
        let input = "\n{ \"z\" : 1.50E+2 ,\r\n\t\"token\"  :\t [ 1 , 2 ] , \"a\":\"\\u00e9\" }  \n";
        let want =
            "\n{ \"z\" : 1.50E+2 ,\r\n\t\"token\"  :\t \"[REDACTED]\" , \"a\":\"\\u00e9\" }  \n";
        assert_eq!(json(&r, input), want);
    }

    #[test]
    fn masked_value_holding_listed_keys_is_masked_once() {
        let r = redactor(&["auth", "token"]);
        assert_eq!(
            json(&r, r#"{"auth":{"token":"t","auth":{"x":1}},"b":2}"#),
            r#"{"auth":"[REDACTED]","b":2}"#
        );
    }

    #[test]
    fn empty_redactor_copies_and_still_checks() {
        let r = Redactor::new(&[]);
        assert!(r.is_empty());
        let input = r#"{"password":"x","a":[1,{"b":null}]}"#;
        assert_eq!(json(&r, input), input);
        assert!(json_bytes(&r, b"{oops}", false).is_err());
        assert!(!redactor(&["a"]).is_empty());
    }

    #[test]
    fn output_is_appended() {
        let r = redactor(&["p"]);
        let mut out = b"prefix:".to_vec();
        r.json(br#"{"p":1}"#, false, &mut out).expect("valid");
        assert_eq!(out, br#"prefix:{"p":"[REDACTED]"}"#);
    }

    #[test]
    fn top_level_scalars_and_blank_bodies_are_accepted() {
        let r = redactor(&["p"]);
        for input in ["1", " -0.5 ", "\"s\"", "true", "null", "", " \n "] {
            assert_eq!(json(&r, input), input, "{input:?}");
        }
    }

    #[test]
    fn non_json_input_errs_and_leaves_out_unchanged() {
        let r = redactor(&["password"]);
        for input in [
            "hello",
            "password=hunter2",
            "{password: 1}",
            "{'password': 'x'}",
            r#"{"password" "x"}"#,
            r#"{"password":"x",}"#,
            r#"{"password":"x"}}"#,
            r#"{"password":"x"} {"b":1}"#,
            r#"{"a":1 "b":2}"#,
            "[1,]",
            "[,1]",
            "{,}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"bad \x escape"}"#,
            r#"{"a":"\u12G4"}"#,
            "{\"a\":\"raw\ncontrol\"}",
            r#"{"password":"x"]"#,
            "[1}",
            "]",
            "\u{feff}{}",
            r#"{"a":1 /* comment */}"#,
        ] {
            let mut out = b"kept".to_vec();
            assert!(
                r.json(input.as_bytes(), false, &mut out).is_err(),
                "{input:?}"
            );
            assert_eq!(out, b"kept", "{input:?}");
        }
    }

    #[test]
    fn secret_in_invalid_json_errs_rather_than_passing_through() {
        let r = redactor(&["password"]);
        let mut out = Vec::new();
        let err = r.json(br#"{"password": hunter2}"#, false, &mut out);
        assert_eq!(err, Err(RedactError::Syntax { offset: 13 }));
        assert!(out.is_empty());
        // Also when truncated: bytes before the cut must still be JSON.
        assert!(r.json(br#"{"password": hunter2"#, true, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn invalid_utf8_errs() {
        let r = redactor(&["p"]);
        let mut out = Vec::new();
        assert_eq!(
            r.json(b"{\"a\":\"\xff\"}", false, &mut out),
            Err(RedactError::Utf8 { offset: 6 })
        );
        assert_eq!(
            r.json(b"{\"a\":\"\xff\"}", true, &mut out),
            Err(RedactError::Utf8 { offset: 6 })
        );
        // A complete body may not end inside a character either.
        assert!(r.json(b"\"\xe2\x9c", false, &mut out).is_err());
    }

    #[test]
    fn complete_body_ending_early_errs() {
        let r = redactor(&["p"]);
        for input in [r#"{"a":1"#, r#"{"p":"x"#, "[", r#"{"a""#, "-", r#""\u00"#] {
            assert_eq!(
                json_bytes(&r, input.as_bytes(), false),
                Err(RedactError::Incomplete),
                "{input}"
            );
        }
    }

    #[test]
    fn cut_value_of_listed_key_is_masked() {
        let r = redactor(&["password"]);
        for (input, want) in [
            (r#"{"password": "hun"#, r#"{"password": "[REDACTED]""#),
            (r#"{"password": ""#, r#"{"password": "[REDACTED]""#),
            (r#"{"password": "a\u00"#, r#"{"password": "[REDACTED]""#),
            (r#"{"password": 12"#, r#"{"password": "[REDACTED]""#),
            (r#"{"password": t"#, r#"{"password": "[REDACTED]""#),
            (r#"{"password": {"a": ["x"#, r#"{"password": "[REDACTED]""#),
            (
                r#"{"password": "hunter2", "b": "cu"#,
                r#"{"password": "[REDACTED]", "b": "cu"#,
            ),
        ] {
            assert_eq!(
                json_bytes(&r, input.as_bytes(), true).as_deref(),
                Ok(want),
                "{input}"
            );
        }
    }

    #[test]
    fn cut_before_the_value_starts_leaks_nothing() {
        let r = redactor(&["password"]);
        for input in [
            r#"{"passw"#,
            r#"{"pass\u00"#,
            r#"{"password"#,
            r#"{"password""#,
            r#"{"password" :"#,
            r#"{"password": "#,
        ] {
            assert_eq!(
                json_bytes(&r, input.as_bytes(), true).as_deref(),
                Ok(input),
                "{input}"
            );
        }
    }

    #[test]
    fn cut_multibyte_char_is_dropped() {
        let r = redactor(&["p"]);
        let full = r#"{"a":"✓✓"}"#.as_bytes();
        for cut in 0..=full.len() {
            let out = json_bytes(&r, &full[..cut], true).expect("prefix of valid json");
            assert!(full.starts_with(out.as_bytes()));
            assert!(cut - out.len() <= 2, "cut {cut}: {out}");
        }
    }

    #[test]
    fn cut_at_every_position_never_leaks_the_secret() {
        let r = redactor(&["password", "token", "pin"]);
        let secrets = ["qwz2-SECRET", "xk_ABCDEF123", "987654", "QWERTY-1", "ZXCVB"];
        let input = r#"{"user": {"name": "ann", "password": "qwz2-SECRET",
  "sessions": [{"token": "xk_ABCDEF123", "pin": 987654},
               {"token": {"inner": ["QWERTY-1", true, null]}, "note": "ok"}],
  "pin"  :  "ZXCVB"}, "after": [1, 2, 3]}"#;
        let full = json(&r, input);
        for cut in 0..=input.len() {
            let out = json_bytes(&r, &input.as_bytes()[..cut], true).expect("prefix of valid json");
            assert!(full.starts_with(&out), "cut {cut}: {out}");
            for secret in secrets {
                for w in windows(secret) {
                    assert!(!out.contains(w), "cut {cut} leaks {w:?}: {out}");
                }
            }
        }
    }

    #[test]
    fn deep_nesting_needs_no_recursion() {
        let r = redactor(&["p"]);
        let depth = 100_000;
        let input = format!("{}{{\"p\":1}}{}", "[".repeat(depth), "]".repeat(depth));
        let out = json(&r, &input);
        assert!(out.contains(r#"{"p":"[REDACTED]"}"#));
        assert_eq!(out.len(), input.len() + MASK_JSON.len() - 1);
    }

    #[test]
    fn error_messages_are_short_and_lowercase() {
        assert_eq!(
            RedactError::Syntax { offset: 3 }.to_string(),
            "invalid json at byte 3"
        );
        assert_eq!(
            RedactError::Utf8 { offset: 0 }.to_string(),
            "invalid utf-8 at byte 0"
        );
        assert_eq!(RedactError::Incomplete.to_string(), "json ends early");
    }

    // --- string scanning

    /// The flags [`special_bytes`] must give: bytes a JSON string cannot hold.
    fn specials_one_by_one(word: [u8; 8]) -> u64 {
        word.iter()
            .enumerate()
            .filter(|(_, &b)| !PLAIN[usize::from(b)])
            .fold(0, |m, (i, _)| m | 0x80 << (8 * i))
    }

    #[test]
    fn special_bytes_flags_exactly_the_bytes_a_string_cannot_hold() {
        // Every pair of neighbours at every position: a borrow or carry
        // between bytes would show up as a wrong flag.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for at in 0..7 {
                    let mut word = [b'a'; 8];
                    word[at] = a;
                    word[at + 1] = b;
                    assert_eq!(
                        special_bytes(u64::from_le_bytes(word)),
                        specials_one_by_one(word),
                        "{word:?}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn special_bytes_matches_a_byte_by_byte_check(word in any::<[u8; 8]>()) {
            prop_assert_eq!(special_bytes(u64::from_le_bytes(word)), specials_one_by_one(word));
        }

        #[test]
        fn plain_end_finds_the_first_byte_a_string_cannot_hold(
            bytes in prop::collection::vec(
                prop_oneof![4 => 0x20u8..=0xff, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20],
                0..40,
            ),
            from in any::<prop::sample::Index>(),
        ) {
            let from = from.index(bytes.len() + 1);
            let want = bytes[from..]
                .iter()
                .position(|&b| !PLAIN[usize::from(b)])
                .map_or(bytes.len(), |i| from + i);
            prop_assert_eq!(plain_end(&bytes, from), want);
        }
    }

    // --- form

    #[test]
    fn form_pairs_with_listed_keys_are_masked() {
        let r = redactor(&["password", "token"]);
        assert_eq!(
            form(&r, "a=1&password=hunter2&b=&token=x%20y&c", false),
            "a=1&password=[REDACTED]&b=&token=[REDACTED]&c"
        );
        assert_eq!(form(&r, "password=a=b", false), "password=[REDACTED]");
        assert_eq!(
            form(&r, "password&password=", false),
            "password&password=[REDACTED]"
        );
        assert_eq!(form(&r, "", false), "");
    }

    #[test]
    fn form_keys_are_decoded_and_case_insensitive() {
        let r = redactor(&["password", "api key"]);
        assert_eq!(
            form(&r, "pass%77ord=1&PASS%57ORD=2&api+key=3&api%20KEY=4&pass%zzword=5&%=6", false),
            "pass%77ord=[REDACTED]&PASS%57ORD=[REDACTED]&api+key=[REDACTED]&api%20KEY=[REDACTED]&pass%zzword=5&%=6"
        );
    }

    #[test]
    fn nested_form_keys_match_by_segment() {
        let r = redactor(&["password"]);
        assert_eq!(
            form(&r, "user[password]=1&user%5Bpassword%5D=2&user.password=3&password[]=4&a[0][Password]=5&user[passwords]=6", false),
            "user[password]=[REDACTED]&user%5Bpassword%5D=[REDACTED]&user.password=[REDACTED]&password[]=[REDACTED]&a[0][Password]=[REDACTED]&user[passwords]=6"
        );
    }

    #[test]
    fn form_semicolons_separate_pairs() {
        let r = redactor(&["password"]);
        assert_eq!(
            form(&r, "a=1;password=x&b=2", false),
            "a=1;password=[REDACTED]&b=2"
        );
    }

    #[test]
    fn cut_last_form_pair_is_masked_or_dropped() {
        let r = redactor(&["password"]);
        assert_eq!(
            form(&r, "a=1&password=hun", true),
            "a=1&password=[REDACTED]"
        );
        assert_eq!(form(&r, "a=1&password=", true), "a=1&password=[REDACTED]");
        assert_eq!(form(&r, "a=1&passw", true), "a=1&");
        assert_eq!(form(&r, "a=1&pass%7", true), "a=1&");
        assert_eq!(form(&r, "a=1&flag", true), "a=1&");
        assert_eq!(form(&r, "a=1&b=cu", true), "a=1&b=cu");
        // Complete bodies keep a key-only last pair.
        assert_eq!(form(&r, "a=1&flag", false), "a=1&flag");
    }

    // --- properties

    /// Field names as configured; generated keys vary their case.
    const FIELDS: [&str; 4] = ["password", "token", "API_KEY", "Secret"];

    /// Bytes that only secret values contain: none is in a plain key or value,
    /// in JSON punctuation or in the mask.
    const SECRET_BYTES: &[u8] = b"QXZ#%~@56789";

    fn secret_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("password"),
            Just("PassWord"),
            Just("token"),
            Just("TOKEN"),
            Just("api_key"),
            Just("Api_Key"),
            Just("secret"),
            Just("SECRET"),
        ]
        .prop_map(String::from)
    }

    fn plain_key() -> impl Strategy<Value = String> {
        "[a-z_]{0,6}".prop_filter("not a listed field", |k| {
            !FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k))
        })
    }

    fn number(text: String) -> Value {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn secret_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[QXZ#%~@]{1,10}".prop_map(Value::String),
            "-?[5-9]{1,6}".prop_map(number),
            "-?[5-9]{1,3}\\.[5-9]{1,2}".prop_map(number),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]
    }

    fn secret_value() -> impl Strategy<Value = Value> {
        secret_leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((plain_key(), inner), 0..4)
                    .prop_map(|e| Value::Object(e.into_iter().collect())),
            ]
        })
    }

    fn plain_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z é✓\"\\\\\n\t\u{1}/]{0,8}".prop_map(Value::String),
            "-?[1-4][0-4]{0,5}".prop_map(number),
            "-?[0-4]\\.[1-4]{1,2}".prop_map(number),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]
    }

    /// JSON documents whose secret fields (at any depth) hold values made only
    /// of [`SECRET_BYTES`] (besides JSON punctuation), and nothing else does.
    fn document() -> impl Strategy<Value = Value> {
        plain_leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    prop_oneof![(plain_key(), inner), (secret_key(), secret_value())],
                    0..6
                )
                .prop_map(|e| Value::Object(e.into_iter().collect())),
            ]
        })
    }

    /// What redaction must give, computed on the parsed value.
    fn reference(v: &Value, r: &Redactor) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = if r.matches(k.as_bytes()) {
                            Value::String(MASK.into())
                        } else {
                            reference(v, r)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| reference(v, r)).collect()),
            other => other.clone(),
        }
    }

    /// Serialized string and number leaves under secret keys.
    fn secret_atoms(v: &Value, r: &Redactor, under_secret: bool, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    secret_atoms(v, r, under_secret || r.matches(k.as_bytes()), out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| secret_atoms(v, r, under_secret, out)),
            Value::String(_) | Value::Number(_) if under_secret => out.push(v.to_string()),
            _ => {}
        }
    }

    fn serialize(v: &Value, pretty: bool) -> String {
        if pretty {
            serde_json::to_string_pretty(v).unwrap_or_default()
        } else {
            v.to_string()
        }
    }

    fn fields() -> Redactor {
        redactor(&FIELDS)
    }

    proptest! {
        #[test]
        fn redacted_document_is_valid_json_matching_the_reference(doc in document(), pretty in any::<bool>()) {
            let r = fields();
            let input = serialize(&doc, pretty);
            let out = json_bytes(&r, input.as_bytes(), false);
            prop_assert!(out.is_ok(), "{:?}", out);
            let out = out.unwrap_or_default();
            let parsed: Result<Value, _> = serde_json::from_str(&out);
            prop_assert!(parsed.is_ok(), "not json: {}", out);
            let want = reference(&doc, &r);
            prop_assert_eq!(parsed.unwrap_or_default(), want.clone());
            // Byte for byte: only masked values change.
            prop_assert_eq!(out, serialize(&want, pretty));
        }

        #[test]
        fn json_redaction_is_idempotent(doc in document(), pretty in any::<bool>(), cut in any::<prop::sample::Index>()) {
            let r = fields();
            let input = serialize(&doc, pretty);
            let once = json_bytes(&r, input.as_bytes(), false);
            let twice = json_bytes(&r, once.clone().unwrap_or_default().as_bytes(), false);
            prop_assert_eq!(&once, &twice);
            // Also for a cut body.
            let cut = cut.index(input.len() + 1);
            let once = json_bytes(&r, &input.as_bytes()[..cut], true);
            let twice = json_bytes(&r, once.clone().unwrap_or_default().as_bytes(), true);
            prop_assert!(once.is_ok());
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn cut_document_never_leaks_a_secret(doc in document(), pretty in any::<bool>()) {
            let r = fields();
            let input = serialize(&doc, pretty);
            let full = json_bytes(&r, input.as_bytes(), false).unwrap_or_default();
            let mut atoms = Vec::new();
            secret_atoms(&doc, &r, false, &mut atoms);
            prop_assert!(!full.bytes().any(|b| SECRET_BYTES.contains(&b)), "{}", full);
            // Every cut, not one random one: the documents are small.
            for cut in 0..=input.len() {
                let out = json_bytes(&r, &input.as_bytes()[..cut], true);
                prop_assert!(out.is_ok(), "cut {}: {:?}", cut, out);
                let out = out.unwrap_or_default();
                prop_assert!(full.starts_with(&out), "cut {}: {} not a prefix of {}", cut, out, full);
                prop_assert!(!out.bytes().any(|b| SECRET_BYTES.contains(&b)), "cut {}: {}", cut, out);
                for atom in &atoms {
                    for w in windows(atom) {
                        prop_assert!(!out.contains(w), "cut {} leaks {:?}: {}", cut, w, out);
                    }
                }
            }
        }

        #[test]
        fn form_redaction_is_idempotent_and_never_leaks(
            pairs in prop::collection::vec(
                prop_oneof![
                    ("[a-z0-4+]{0,6}", "[a-z0-4+%]{0,6}"),
                    (prop_oneof![
                        secret_key(),
                        Just("pass%77ord".to_string()),
                        Just("user[password]".to_string()),
                        Just("api%5Fkey".to_string()),
                    ], "[QXZ~!@]{1,8}"),
                ],
                0..8,
            ),
            seps in prop::collection::vec(prop_oneof![Just('&'), Just(';')], 8),
            cut in any::<prop::sample::Index>(),
        ) {
            let r = fields();
            let mut body = String::new();
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    body.push(seps[i % seps.len()]);
                }
                body.push_str(&format!("{k}={v}"));
            }
            let once = form(&r, &body, false);
            prop_assert_eq!(form(&r, &once, false), once.clone());
            prop_assert!(!once.bytes().any(|b| b"QXZ~!@".contains(&b)), "{}", once);
            let cut = cut.index(body.len() + 1);
            let once = form(&r, &body[..cut], true);
            prop_assert_eq!(form(&r, &once, true), once.clone());
            prop_assert!(!once.bytes().any(|b| b"QXZ~!@".contains(&b)), "cut {}: {}", cut, once);
        }
    }
}
