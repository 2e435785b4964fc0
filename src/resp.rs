//! RESP2 framing for the Redis tier (issue #10): commands out, replies in.
//! Pure: Lua moves the bytes over a cosocket, this module only frames them.
//!
//! Written by hand rather than with the `redis-protocol` crate: a reply
//! comes from the network into a module every nginx worker maps, so each
//! limit is checked before anything is allocated (nesting depth, element
//! count, bulk length) and nesting is walked without recursion, so no reply
//! can exhaust the worker's stack or memory; the client needs five reply
//! types and one command form, about as much code as the limits alone.
//! `fuzz/fuzz_targets/resp_reply.rs` drives [`decode`] with arbitrary bytes.

use std::fmt;

/// A bulk string longer than this is refused (an L2/L3 entry is a few
/// hundred bytes; Redis's own limit is 512 MiB).
pub const MAX_BULK: usize = 4 << 20;
/// An array with more elements than this is refused.
pub const MAX_ELEMENTS: usize = 4096;
/// Arrays nested deeper than this are refused (XREAD answers nest 4 deep).
pub const MAX_DEPTH: usize = 8;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the server refused the command (not a framing error).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` then n bytes; `None` for the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` then n replies; `None` for the null array (`*-1`).
    Array(Option<Vec<Reply>>),
}

/// Why bytes are not a RESP2 reply. The connection cannot be trusted any
/// more: close it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// An unknown type byte.
    Type(u8),
    /// A length, integer or line that is malformed.
    Syntax(&'static str),
    /// A limit above was passed.
    TooLarge(&'static str),
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Type(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::Syntax(what) => write!(f, "malformed RESP {what}"),
            RespError::TooLarge(what) => write!(f, "RESP {what} over its limit"),
        }
    }
}

impl std::error::Error for RespError {}

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The line starting at `at` (without its CRLF) and the offset after the
/// CRLF; `None` when the CRLF has not arrived yet.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = &buf[at..];
    match rest.iter().position(|&b| b == b'\r') {
        Some(i) if i + 1 < rest.len() => {
            // the same answer a prefix without the CRLF gets below
            if i > MAX_BULK {
                return Err(RespError::TooLarge("line"));
            }
            if rest[i + 1] != b'\n' {
                return Err(RespError::Syntax("line end"));
            }
            Ok(Some((&rest[..i], at + i + 2)))
        }
        // a lone CR at the end: wait for its LF
        _ => {
            if rest.len() > MAX_BULK {
                return Err(RespError::TooLarge("line"));
            }
            Ok(None)
        }
    }
}

fn integer(text: &[u8]) -> Result<i64, RespError> {
    let s = std::str::from_utf8(text).map_err(|_| RespError::Syntax("integer"))?;
    // i64's parser takes a leading '+', RESP does not
    if s.starts_with('+') {
        return Err(RespError::Syntax("integer"));
    }
    s.parse().map_err(|_| RespError::Syntax("integer"))
}

/// A length: -1 (null) or 0..=max.
fn length(text: &[u8], max: usize, what: &'static str) -> Result<Option<usize>, RespError> {
    match integer(text)? {
        -1 => Ok(None),
        n if n < 0 => Err(RespError::Syntax(what)),
        n => {
            let n = usize::try_from(n).map_err(|_| RespError::TooLarge(what))?;
            if n > max {
                return Err(RespError::TooLarge(what));
            }
            Ok(Some(n))
        }
    }
}

/// An array being filled: the elements so far and how many it has.
struct Open {
    items: Vec<Reply>,
    len: usize,
}

/// Decodes the first reply in `buf`: `Ok(Some((reply, bytes used)))`,
/// `Ok(None)` when more bytes are needed, or an error for bytes that can
/// never become a reply.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let mut at = 0;
    let mut open: Vec<Open> = Vec::new();
    loop {
        if at >= buf.len() {
            return Ok(None);
        }
        let kind = buf[at];
        let Some((text, next)) = line(buf, at + 1)? else {
            return Ok(None);
        };
        let (mut reply, after) = match kind {
            b'+' => (
                Reply::Simple(String::from_utf8_lossy(text).into_owned()),
                next,
            ),
            b'-' => (
                Reply::Error(String::from_utf8_lossy(text).into_owned()),
                next,
            ),
            b':' => (Reply::Integer(integer(text)?), next),
            b'$' => match length(text, MAX_BULK, "bulk length")? {
                None => (Reply::Bulk(None), next),
                Some(n) => {
                    let end = next + n;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(RespError::Syntax("bulk end"));
                    }
                    (Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)
                }
            },
            b'*' => match length(text, MAX_ELEMENTS, "array length")? {
                None => (Reply::Array(None), next),
                Some(0) => (Reply::Array(Some(Vec::new())), next),
                Some(n) => {
                    if open.len() >= MAX_DEPTH {
                        return Err(RespError::TooLarge("nesting"));
                    }
                    open.push(Open {
                        items: Vec::with_capacity(n.min(64)),
                        len: n,
                    });
                    at = next;
                    continue;
                }
            },
            other => return Err(RespError::Type(other)),
        };
        at = after;
        // Close every array this reply completes.
        loop {
            let Some(top) = open.last_mut() else {
                return Ok(Some((reply, at)));
            };
            top.items.push(reply);
            if top.items.len() < top.len {
                break;
            }
            let Some(done) = open.pop() else {
                return Err(RespError::Syntax("array"));
            };
            reply = Reply::Array(Some(done.items));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(bytes: &[u8]) -> Reply {
        match decode(bytes) {
            Ok(Some((r, used))) => {
                assert_eq!(used, bytes.len(), "{bytes:?}");
                r
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }

    #[test]
    fn encodes_a_command_as_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&[b"SET", b"k", b"", b"PX", b"1500"], &mut out);
        assert_eq!(
            out,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
    }

    #[test]
    fn decodes_every_reply_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(whole(b"-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Some(vec![])));
        assert_eq!(
            whole(b"$4\r\na\r\nb\r\n"),
            Reply::Bulk(Some(b"a\r\nb".to_vec()))
        );
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(whole(b"*0\r\n"), Reply::Array(Some(vec![])));
        assert_eq!(
            whole(b"*2\r\n*1\r\n$1\r\nx\r\n:1\r\n"),
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec()))])),
                Reply::Integer(1)
            ]))
        );
    }

    #[test]
    fn stops_after_the_first_reply() {
        assert_eq!(decode(b":1\r\n:2\r\n"), Ok(Some((Reply::Integer(1), 4))));
    }

    #[test]
    fn asks_for_more_at_every_cut_of_a_reply() {
        let full: &[u8] = b"*3\r\n$3\r\nabc\r\n*1\r\n+OK\r\n$-1\r\n";
        assert!(matches!(decode(full), Ok(Some((_, n))) if n == full.len()));
        for cut in 0..full.len() {
            assert_eq!(decode(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_malformed_and_oversized_replies() {
        assert_eq!(decode(b"?x\r\n"), Err(RespError::Type(b'?')));
        assert_eq!(decode(b":1x\r\n"), Err(RespError::Syntax("integer")));
        assert_eq!(decode(b":+1\r\n"), Err(RespError::Syntax("integer")));
        assert_eq!(decode(b"$-2\r\n"), Err(RespError::Syntax("bulk length")));
        assert_eq!(decode(b"$1\r\nabc"), Err(RespError::Syntax("bulk end")));
        assert_eq!(decode(b"+OK\rX"), Err(RespError::Syntax("line end")));
        assert_eq!(
            decode(format!("${}\r\n", MAX_BULK + 1).as_bytes()),
            Err(RespError::TooLarge("bulk length"))
        );
        assert_eq!(
            decode(format!("*{}\r\n", MAX_ELEMENTS + 1).as_bytes()),
            Err(RespError::TooLarge("array length"))
        );
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(decode(deep.as_bytes()), Err(RespError::TooLarge("nesting")));
        // a huge announced bulk that has not arrived allocates nothing yet
        assert_eq!(decode(format!("${MAX_BULK}\r\nab").as_bytes()), Ok(None));
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Simple),
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24))
                .prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..4)).prop_map(Reply::Array)
        })
    }

    /// The server side of the framing, for the round trip.
    fn write(r: &Reply, out: &mut Vec<u8>) {
        match r {
            Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    write(i, out);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn round_trips_and_needs_every_byte(r in reply()) {
            let mut bytes = Vec::new();
            write(&r, &mut bytes);
            prop_assert_eq!(decode(&bytes), Ok(Some((r, bytes.len()))));
            if !bytes.is_empty() {
                prop_assert_eq!(decode(&bytes[..bytes.len() - 1]), Ok(None));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
