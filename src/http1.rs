//! HTTP/1.1 framing for the auth-service call and the HTTP log sink (design §1).
//!
//! Rust does no I/O here. [`encode_request`] builds the bytes Lua sends on its
//! cosocket; a [`ResponseParser`] is fed every chunk Lua receives until it
//! reports [`Progress::Complete`] (or [`ResponseParser::eof`] when the peer
//! closed). httparse parses the response head; this module does the body
//! framing of RFC 9112 §6.3: no body (HEAD, 1xx, 204, 304), chunked,
//! Content-Length, or read until close.
//!
//! Bounds: every byte of the response (interim heads, head, chunk lines,
//! body, trailers) counts against the parser's `max_bytes`, and nothing beyond
//! it is ever buffered; a single head is also capped at [`MAX_HEAD_BYTES`] and
//! [`MAX_HEADERS`] lines. A declared Content-Length or chunk size that cannot
//! fit fails at once, before its bytes arrive.
//!
//! Bytes after the end of a complete response are an error
//! ([`Http1Error::TrailingData`]), not merely a reason to drop the connection:
//! a response whose framing does not account for every byte received may be
//! desynchronized (response splitting), and an auth decision must not rest on
//! it. Any error leaves no response; Lua then closes the socket instead of
//! returning it to the keepalive pool.
//!
//! The result does not depend on how the bytes are split across `feed` calls
//! (tested with proptest, fuzzed in `fuzz/fuzz_targets/http1_response.rs`).

/// Most header lines one response head may have.
pub const MAX_HEADERS: usize = 100;

/// Largest response head (status line and header lines) in bytes. Each
/// interim (1xx) head is capped on its own; all of them also count against
/// the parser's `max_bytes`.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Longest chunk-size line (with extensions) or trailer line, CRLF included.
const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// Why a request could not be encoded or a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// A request header name is not an RFC 9110 token. Carries the name up
    /// to its first invalid byte only: the rest may hold a value.
    #[error("invalid byte in request header name after {0:?}")]
    InvalidHeaderName(String),
    /// A request header value contains CR, LF or NUL. Carries the header
    /// name, never the value (values may be credentials).
    #[error("invalid value for request header {0}")]
    InvalidHeaderValue(String),
    /// The caller set a header the encoder owns because it frames the
    /// message: `host`, `content-length`, `transfer-encoding`, `connection`.
    #[error("request header {0} is set by the encoder")]
    ReservedHeader(String),
    /// The request's method, path or host (named) cannot go on the wire.
    #[error("invalid request {0}")]
    InvalidRequest(&'static str),
    /// The response head is not valid HTTP/1.x (httparse's reason).
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// The response head has more than [`MAX_HEADERS`] header lines.
    #[error("too many response headers (max {0})")]
    TooManyHeaders(usize),
    /// A response head is longer than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The response is (or declares itself) larger than the parser's cap.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The status is not one this client can handle (below 100, or 101
    /// Switching Protocols, which it never asks for).
    #[error("unexpected response status {0}")]
    UnexpectedStatus(u16),
    /// Content-Length is not digits, overflows, or has conflicting values.
    #[error("invalid content-length")]
    InvalidContentLength,
    /// Transfer-Encoding is empty, or sent in an HTTP/1.0 response (faulty
    /// framing per RFC 9112 §6.1).
    #[error("invalid transfer-encoding")]
    InvalidTransferEncoding,
    /// The chunked body is malformed (the part named).
    #[error("invalid chunked body: {0}")]
    InvalidChunk(&'static str),
    /// The peer closed the connection before sending any byte (on a reused
    /// keepalive connection, an idempotent request may be retried once).
    #[error("connection closed before any response")]
    NoResponse,
    /// The peer closed the connection in the middle of the response.
    #[error("connection closed before the response was complete")]
    UnexpectedEof,
    /// Bytes arrived after the end of a complete response.
    #[error("data after the end of the response")]
    TrailingData,
}

/// One HTTP/1.1 request to encode. Header values are bytes because they may
/// be forwarded verbatim from the client's request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method token, as sent (`GET`, `POST`, ...).
    pub method: &'a str,
    /// Host name or IP address; an IPv6 address with or without brackets.
    pub host: &'a str,
    /// TCP port; left out of the Host header when it is the scheme's default.
    pub port: u16,
    /// Whether the connection is TLS (https): picks the default port.
    pub tls: bool,
    /// Origin-form target: path and query, starting with `/`.
    pub path: &'a str,
    /// Extra header lines, in order, as (name, value).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body; empty for none.
    pub body: &'a [u8],
}

/// Appends one HTTP/1.1 request to `out`.
///
/// Arguments: `req`, the request; `out`, the buffer the bytes are appended to
/// (Lua sends them as one string).
///
/// Returns: `Ok(())` after writing `METHOD path HTTP/1.1`, `Host` (with
/// `:port` unless it is the scheme's default, IPv6 in brackets), the given
/// headers in order, `Content-Length` when the body is non-empty or the
/// method is POST, PUT or PATCH (`0` for an empty body), `Connection:
/// keep-alive`, `User-Agent: auth-router/<version>` unless the caller gave
/// one, an empty line and the body.
///
/// Errors: [`Http1Error::InvalidRequest`] for a method that is not a token, a
/// path that does not start with `/` or holds a space, control or non-ASCII
/// byte, or a host with a byte no host name or IP address has;
/// [`Http1Error::InvalidHeaderName`], [`Http1Error::InvalidHeaderValue`]
/// (CR, LF or NUL: header injection) and [`Http1Error::ReservedHeader`] for
/// the headers. Nothing is written to `out` on error.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) -> Result<(), Http1Error> {
    if !is_token(req.method.as_bytes()) {
        return Err(Http1Error::InvalidRequest("method"));
    }
    if !is_origin_form(req.path) {
        return Err(Http1Error::InvalidRequest("path"));
    }
    if !is_host(req.host) {
        return Err(Http1Error::InvalidRequest("host"));
    }
    let mut user_agent = false;
    for (name, value) in req.headers {
        if !is_token(name.as_bytes()) {
            let valid = name.bytes().take_while(|&b| is_tchar(b)).count();
            let prefix = name.get(..valid).unwrap_or_default();
            return Err(Http1Error::InvalidHeaderName(prefix.to_string()));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            return Err(Http1Error::ReservedHeader(lower));
        }
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Http1Error::InvalidHeaderValue(lower));
        }
        user_agent |= lower == "user-agent";
    }

    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    if req.host.contains(':') && !req.host.starts_with('[') {
        out.push(b'[');
        out.extend_from_slice(req.host.as_bytes());
        out.push(b']');
    } else {
        out.extend_from_slice(req.host.as_bytes());
    }
    if req.port != if req.tls { 443 } else { 80 } {
        out.push(b':');
        out.extend_from_slice(req.port.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !req.body.is_empty() || matches!(req.method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(req.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: keep-alive\r\n");
    if !user_agent {
        out.extend_from_slice(b"User-Agent: auth-router/");
        out.extend_from_slice(crate::VERSION.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body);
    Ok(())
}

/// RFC 9110 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn is_origin_form(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

/// A reg-name, IPv4 or IPv6 address (bracketed or not): RFC 3986 host bytes.
fn is_host(host: &str) -> bool {
    let inner = match host.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inner) => inner,
            None => return false,
        },
        None => host,
    };
    !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:%!$&'()*+,;=".contains(&b))
}

/// What a [`ResponseParser`] needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The response is not complete: receive more and feed it.
    NeedMore,
    /// The response is complete: stop reading; [`ResponseParser::response`]
    /// has it.
    Complete,
}

/// A complete HTTP response (the final one; interim 1xx are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 200-999 (interim 1xx responses are skipped).
    pub status: u16,
    /// Header lines in received order, names lowercased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked; empty when the response has none.
    pub body: Vec<u8>,
    /// Whether the connection may go back to the keepalive pool: false for
    /// HTTP/1.0 without `Connection: keep-alive`, `Connection: close`, a
    /// close-delimited body, Content-Length alongside Transfer-Encoding, or a
    /// peer that already closed.
    pub keepalive: bool,
}

impl Response {
    /// The first value of a header.
    ///
    /// Arguments: `name_lowercase`, the header name (compared without case).
    ///
    /// Returns: the value of the first header line with that name, or `None`.
    pub fn header(&self, name_lowercase: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name_lowercase))
            .map(|(_, v)| v.as_slice())
    }

    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The comma-separated elements of every `name` header line, trimmed,
    /// empty ones skipped (RFC 9110 §5.6.1).
    fn list<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|e| !e.is_empty())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name)
            .any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
    }
}

#[derive(Debug)]
enum State {
    /// Reading a head into `buf`.
    Head,
    /// Content-Length body, bytes left.
    Length(u64),
    /// Body delimited by the peer closing.
    Close,
    /// Chunked body.
    Chunk(Chunk),
    Done,
    Failed(Http1Error),
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line into `buf`.
    Size,
    /// Chunk data, bytes left.
    Data(u64),
    /// The CR after chunk data.
    Cr,
    /// The LF after chunk data.
    Lf,
    /// Reading trailer lines into `buf` until an empty one.
    Trailer,
}

/// Push parser for one HTTP/1.x response: bytes in, [`Progress`] out.
///
/// Feed it every received chunk, in order, until it returns
/// [`Progress::Complete`]; on a closed connection call
/// [`ResponseParser::eof`]. Errors are final: every later call returns the
/// same error.
#[derive(Debug)]
pub struct ResponseParser {
    max_bytes: usize,
    head_request: bool,
    /// Bytes consumed so far, never above `max_bytes`.
    received: usize,
    /// The head being read, or the current chunk-size or trailer line.
    buf: Vec<u8>,
    resp: Response,
    state: State,
}

impl ResponseParser {
    /// A parser for the response to one request.
    ///
    /// Arguments: `max_bytes`, the most bytes the whole response (interim
    /// heads, head, framing and body, as received) may take; `head_request`,
    /// whether the request was HEAD (its response has no body whatever its
    /// headers say).
    ///
    /// Returns: a parser waiting for the first byte.
    pub fn new(max_bytes: usize, head_request: bool) -> Self {
        ResponseParser {
            max_bytes,
            head_request,
            received: 0,
            buf: Vec::new(),
            resp: Response {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
                keepalive: false,
            },
            state: State::Head,
        }
    }

    /// Consumes the next received bytes.
    ///
    /// Arguments: `data`, the next chunk from the socket (any size, empty
    /// allowed).
    ///
    /// Returns: [`Progress::NeedMore`] until the response is complete, then
    /// [`Progress::Complete`].
    ///
    /// Errors: [`Http1Error::Malformed`], [`Http1Error::TooManyHeaders`],
    /// [`Http1Error::HeadTooLarge`], [`Http1Error::UnexpectedStatus`] for the
    /// head; [`Http1Error::InvalidContentLength`],
    /// [`Http1Error::InvalidTransferEncoding`], [`Http1Error::InvalidChunk`]
    /// for the framing; [`Http1Error::TooLarge`] past `max_bytes`;
    /// [`Http1Error::TrailingData`] for bytes past the end of the response;
    /// or the earlier error if the parser already failed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, Http1Error> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        self.consume(data).map_err(|e| self.fail(e))
    }

    /// Tells the parser the peer closed the connection.
    ///
    /// Returns: [`Progress::Complete`] when that completes a close-delimited
    /// body or the response was already complete (its `keepalive` is then
    /// false).
    ///
    /// Errors: [`Http1Error::NoResponse`] if no byte was received,
    /// [`Http1Error::UnexpectedEof`] if the response was incomplete, or the
    /// earlier error if the parser already failed.
    pub fn eof(&mut self) -> Result<Progress, Http1Error> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Done | State::Close => {
                self.resp.keepalive = false;
                self.state = State::Done;
                Ok(Progress::Complete)
            }
            State::Head if self.received == 0 => Err(self.fail(Http1Error::NoResponse)),
            _ => Err(self.fail(Http1Error::UnexpectedEof)),
        }
    }

    /// The response, once complete.
    ///
    /// Returns: `Some` after [`Progress::Complete`]; `None` before, and after
    /// any error.
    pub fn response(&self) -> Option<&Response> {
        matches!(self.state, State::Done).then_some(&self.resp)
    }

    /// Like [`ResponseParser::response`], without copying.
    ///
    /// Returns: the complete response, or `None`.
    pub fn into_response(self) -> Option<Response> {
        matches!(self.state, State::Done).then_some(self.resp)
    }

    fn fail(&mut self, e: Http1Error) -> Http1Error {
        self.state = State::Failed(e.clone());
        self.buf = Vec::new();
        self.resp.body = Vec::new();
        e
    }

    fn consume(&mut self, mut data: &[u8]) -> Result<Progress, Http1Error> {
        while !data.is_empty() {
            let used = match self.state {
                State::Head => self.head(data)?,
                State::Length(left) => {
                    let used = self.body(left, data)?;
                    self.state = match left - used as u64 {
                        0 => State::Done,
                        left => State::Length(left),
                    };
                    used
                }
                State::Close => {
                    self.spend(data.len())?;
                    self.resp.body.extend_from_slice(data);
                    data.len()
                }
                State::Chunk(chunk) => self.chunk(chunk, data)?,
                State::Done => return Err(Http1Error::TrailingData),
                State::Failed(ref e) => return Err(e.clone()),
            };
            data = data.get(used..).unwrap_or_default();
        }
        Ok(match self.state {
            State::Done => Progress::Complete,
            _ => Progress::NeedMore,
        })
    }

    /// Counts `n` consumed bytes against the cap.
    fn spend(&mut self, n: usize) -> Result<(), Http1Error> {
        if n > self.budget() {
            return Err(Http1Error::TooLarge(self.max_bytes));
        }
        self.received += n;
        Ok(())
    }

    fn budget(&self) -> usize {
        self.max_bytes.saturating_sub(self.received)
    }

    /// Reads head bytes; parses once an empty line has arrived.
    fn head(&mut self, data: &[u8]) -> Result<usize, Http1Error> {
        if self.buf.is_empty() {
            // Leading empty lines (an extra CRLF after a previous message)
            // are skipped, so every empty line in `buf` ends the head and
            // each head is parsed at most once.
            let blank = data.iter().take_while(|&&b| b == b'\r' || b == b'\n');
            let blank = blank.count();
            if blank > 0 {
                self.spend(blank)?;
                return Ok(blank);
            }
        }
        let old = self.buf.len();
        let room = MAX_HEAD_BYTES.saturating_sub(old).min(self.budget());
        let take = data.len().min(room);
        if take == 0 {
            return Err(if old >= MAX_HEAD_BYTES {
                Http1Error::HeadTooLarge(MAX_HEAD_BYTES)
            } else {
                Http1Error::TooLarge(self.max_bytes)
            });
        }
        self.buf
            .extend_from_slice(data.get(..take).unwrap_or_default());
        let fresh = self.buf.get(old.saturating_sub(2)..).unwrap_or_default();
        let ended =
            fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
        if !ended {
            self.spend(take)?;
            return Ok(take);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let end = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) => {
                self.spend(take)?;
                return Ok(take);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Http1Error::TooManyHeaders(MAX_HEADERS))
            }
            Err(e) => return Err(Http1Error::Malformed(e)),
        };
        let version = parsed.version.unwrap_or(1);
        let status = parsed.code.unwrap_or(0);
        let headers = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        // The head ends in the bytes just added: earlier ones held no empty line.
        let used = end.saturating_sub(old);
        self.spend(used)?;
        self.buf.clear();
        self.start_body(version, status, headers)?;
        Ok(used)
    }

    /// Picks the body framing of a parsed head (RFC 9112 §6.3).
    fn start_body(
        &mut self,
        version: u8,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Http1Error> {
        if status < 100 || status == 101 {
            return Err(Http1Error::UnexpectedStatus(status));
        }
        if status < 200 {
            return Ok(()); // interim: read the next head
        }
        self.resp.status = status;
        self.resp.headers = headers;
        let close = self.resp.has_token("connection", "close");
        self.resp.keepalive =
            !close && (version >= 1 || self.resp.has_token("connection", "keep-alive"));
        if self.head_request || status == 204 || status == 304 {
            self.state = State::Done;
            return Ok(());
        }
        if self.resp.values("transfer-encoding").next().is_some() {
            if version == 0 {
                return Err(Http1Error::InvalidTransferEncoding);
            }
            let Some(last) = self.resp.list("transfer-encoding").last() else {
                return Err(Http1Error::InvalidTransferEncoding);
            };
            let chunked = last.eq_ignore_ascii_case(b"chunked");
            // Transfer-Encoding overrides Content-Length; both together
            // smell of smuggling, so the connection is not reused.
            if !chunked || self.resp.values("content-length").next().is_some() {
                self.resp.keepalive = false;
            }
            self.state = if chunked {
                State::Chunk(Chunk::Size)
            } else {
                State::Close
            };
        } else if self.resp.values("content-length").next().is_some() {
            let length = self.content_length()?;
            if length > self.budget() as u64 {
                return Err(Http1Error::TooLarge(self.max_bytes));
            }
            self.resp.body.reserve(length as usize);
            self.state = match length {
                0 => State::Done,
                n => State::Length(n),
            };
        } else {
            self.resp.keepalive = false;
            self.state = State::Close;
        }
        Ok(())
    }

    /// The Content-Length: every element of every line the same digits.
    fn content_length(&self) -> Result<u64, Http1Error> {
        let mut length = None;
        let elements = self
            .resp
            .values("content-length")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii);
        for e in elements {
            if e.is_empty() || !e.iter().all(u8::is_ascii_digit) {
                return Err(Http1Error::InvalidContentLength);
            }
            let n = e.iter().try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            match (n, length) {
                (None, _) => return Err(Http1Error::InvalidContentLength),
                (Some(n), Some(prev)) if n != prev => return Err(Http1Error::InvalidContentLength),
                (n, _) => length = n,
            }
        }
        length.ok_or(Http1Error::InvalidContentLength)
    }

    /// Appends up to `left` body bytes from `data`; returns how many.
    fn body(&mut self, left: u64, data: &[u8]) -> Result<usize, Http1Error> {
        let take = usize::try_from(left).map_or(data.len(), |left| left.min(data.len()));
        self.spend(take)?;
        self.resp
            .body
            .extend_from_slice(data.get(..take).unwrap_or_default());
        Ok(take)
    }

    fn chunk(&mut self, chunk: Chunk, data: &[u8]) -> Result<usize, Http1Error> {
        match chunk {
            Chunk::Size | Chunk::Trailer => self.chunk_line(chunk, data),
            Chunk::Data(left) => {
                let used = self.body(left, data)?;
                self.state = State::Chunk(match left - used as u64 {
                    0 => Chunk::Cr,
                    left => Chunk::Data(left),
                });
                Ok(used)
            }
            Chunk::Cr | Chunk::Lf => {
                self.spend(1)?;
                let (want, next) = match chunk {
                    Chunk::Cr => (b'\r', Chunk::Lf),
                    _ => (b'\n', Chunk::Size),
                };
                if data.first() != Some(&want) {
                    return Err(Http1Error::InvalidChunk("no crlf after chunk data"));
                }
                self.state = State::Chunk(next);
                Ok(1)
            }
        }
    }

    /// Reads a chunk-size or trailer line into `buf`; acts on it at its LF.
    fn chunk_line(&mut self, chunk: Chunk, data: &[u8]) -> Result<usize, Http1Error> {
        let lf = data.iter().position(|&b| b == b'\n');
        let want = lf.map_or(data.len(), |i| i + 1);
        let room = MAX_CHUNK_LINE_BYTES.saturating_sub(self.buf.len());
        let budget = self.budget();
        if want > room.min(budget) {
            // The byte after the smaller limit breaks it.
            return Err(if room <= budget {
                Http1Error::InvalidChunk("line too long")
            } else {
                Http1Error::TooLarge(self.max_bytes)
            });
        }
        self.spend(want)?;
        self.buf
            .extend_from_slice(data.get(..want).unwrap_or_default());
        if lf.is_none() {
            return Ok(want);
        }
        let line = std::mem::take(&mut self.buf);
        let Some(line) = line.strip_suffix(b"\r\n").filter(|l| !l.contains(&b'\r')) else {
            return Err(Http1Error::InvalidChunk("line not ended by crlf"));
        };
        self.state = match chunk {
            Chunk::Size => match chunk_size(line)? {
                0 => State::Chunk(Chunk::Trailer),
                n if n > self.budget() as u64 => return Err(Http1Error::TooLarge(self.max_bytes)),
                n => State::Chunk(Chunk::Data(n)),
            },
            // Trailer fields are read and discarded; an empty line ends them.
            _ if line.is_empty() => State::Done,
            _ => State::Chunk(Chunk::Trailer),
        };
        Ok(want)
    }
}

/// The size of a chunk-size line (CRLF removed): hex digits, then optional
/// whitespace and `;extensions`, which are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Http1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, rest) = line.split_at(digits);
    let rest = rest.trim_ascii_start();
    if hex.is_empty() || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(Http1Error::InvalidChunk("bad chunk size"));
    }
    hex.iter()
        .try_fold(0u64, |n, &d| {
            let d = char::from(d).to_digit(16)?;
            n.checked_mul(16)?.checked_add(u64::from(d))
        })
        .ok_or(Http1Error::InvalidChunk("chunk size overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get<'a>(headers: &'a [(&'a str, &'a [u8])]) -> Request<'a> {
        Request {
            method: "GET",
            host: "auth.local",
            port: 80,
            tls: false,
            path: "/auth?x=1",
            headers,
            body: b"",
        }
    }

    fn encode(req: &Request<'_>) -> Result<String, Http1Error> {
        let mut out = Vec::new();
        encode_request(req, &mut out)?;
        Ok(String::from_utf8(out).expect("ascii"))
    }

    /// Feeds `pieces` in order (stopping at the first error), then `eof` if
    /// asked; the response or the error.
    fn run(pieces: &[&[u8]], eof: bool, max: usize, head: bool) -> Result<Response, Http1Error> {
        let mut p = ResponseParser::new(max, head);
        for piece in pieces {
            p.feed(piece)?;
        }
        if eof {
            p.eof()?;
        }
        p.into_response().ok_or(Http1Error::UnexpectedEof)
    }

    fn parse(bytes: &[u8]) -> Result<Response, Http1Error> {
        run(&[bytes], false, 1 << 20, false)
    }

    fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = points.iter().map(|&p| p.min(bytes.len())).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[from..p]);
            from = p;
        }
        pieces
    }

    // encode_request

    #[test]
    fn encode_request_writes_golden_bytes() {
        let headers: &[(&str, &[u8])] = &[
            ("Authorization", b"Bearer t0k"),
            ("X-Forwarded-For", b"10.0.0.1"),
        ];
        assert_eq!(
            encode(&get(headers)).unwrap(),
            format!(
                "GET /auth?x=1 HTTP/1.1\r\n\
                 Host: auth.local\r\n\
                 Authorization: Bearer t0k\r\n\
                 X-Forwarded-For: 10.0.0.1\r\n\
                 Connection: keep-alive\r\n\
                 User-Agent: auth-router/{}\r\n\r\n",
                crate::VERSION
            )
        );
    }

    #[test]
    fn encode_request_post_gets_port_content_length_and_body() {
        let mut req = get(&[]);
        req.method = "POST";
        req.port = 8443;
        req.tls = true;
        req.body = b"{\"a\":1}";
        assert_eq!(
            encode(&req).unwrap(),
            format!(
                "POST /auth?x=1 HTTP/1.1\r\nHost: auth.local:8443\r\nContent-Length: 7\r\n\
                 Connection: keep-alive\r\nUser-Agent: auth-router/{}\r\n\r\n{{\"a\":1}}",
                crate::VERSION
            )
        );
        req.body = b"";
        assert!(encode(&req).unwrap().contains("\r\nContent-Length: 0\r\n"));
    }

    #[test]
    fn encode_request_omits_default_tls_port_and_brackets_ipv6() {
        let mut req = get(&[]);
        req.tls = true;
        req.port = 443;
        assert!(encode(&req).unwrap().contains("\r\nHost: auth.local\r\n"));
        req.host = "::1";
        req.port = 8080;
        assert!(encode(&req).unwrap().contains("\r\nHost: [::1]:8080\r\n"));
        req.host = "[::1]";
        assert!(encode(&req).unwrap().contains("\r\nHost: [::1]:8080\r\n"));
    }

    #[test]
    fn encode_request_keeps_callers_user_agent() {
        let headers: &[(&str, &[u8])] = &[("user-agent", b"curl/8")];
        let text = encode(&get(headers)).unwrap();
        assert!(text.contains("\r\nuser-agent: curl/8\r\n"));
        assert!(!text.contains("auth-router/"));
    }

    #[test]
    fn encode_request_rejects_header_injection_without_echoing_the_value() {
        let headers: &[(&str, &[u8])] = &[("X-Api-Key", b"s3cret\r\nHost: evil")];
        let mut out = b"kept".to_vec();
        let err = encode_request(&get(headers), &mut out).unwrap_err();
        assert_eq!(err, Http1Error::InvalidHeaderValue("x-api-key".into()));
        assert!(!err.to_string().contains("s3cret"));
        assert_eq!(out, b"kept");
        for bad in [&b"a\nb"[..], b"a\rb", b"a\0b"] {
            let headers: &[(&str, &[u8])] = &[("x-a", bad)];
            assert!(matches!(
                encode(&get(headers)),
                Err(Http1Error::InvalidHeaderValue(_))
            ));
        }
    }

    #[test]
    fn encode_request_rejects_invalid_name_showing_only_the_valid_prefix() {
        let headers: &[(&str, &[u8])] = &[("X-Api-Key: s3cret", b"")];
        let err = encode(&get(headers)).unwrap_err();
        assert_eq!(err, Http1Error::InvalidHeaderName("X-Api-Key".into()));
        assert!(!err.to_string().contains("s3cret"));
        let headers: &[(&str, &[u8])] = &[("", b"x")];
        assert_eq!(
            encode(&get(headers)),
            Err(Http1Error::InvalidHeaderName(String::new()))
        );
    }

    #[test]
    fn encode_request_rejects_framing_headers() {
        for name in ["Host", "content-length", "Transfer-Encoding", "CONNECTION"] {
            let headers: &[(&str, &[u8])] = &[(name, b"x")];
            assert_eq!(
                encode(&get(headers)),
                Err(Http1Error::ReservedHeader(name.to_ascii_lowercase()))
            );
        }
    }

    #[test]
    fn encode_request_rejects_bad_method_path_and_host() {
        let mut req = get(&[]);
        req.method = "GET /x HTTP/1.1\r\n";
        assert_eq!(encode(&req), Err(Http1Error::InvalidRequest("method")));
        for path in ["auth", "/a b", "/a\r\nX: y", "/é", ""] {
            let mut req = get(&[]);
            req.path = path;
            assert_eq!(encode(&req), Err(Http1Error::InvalidRequest("path")));
        }
        for host in ["", "a b", "a\r\nX: y", "a/b", "[::1", "u@h"] {
            let mut req = get(&[]);
            req.host = host;
            assert_eq!(encode(&req), Err(Http1Error::InvalidRequest("host")));
        }
    }

    // ResponseParser: framing

    #[test]
    fn content_length_response_is_complete_with_keepalive() {
        let mut p = ResponseParser::new(1024, false);
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n";
        assert_eq!(p.feed(r), Ok(Progress::NeedMore));
        assert!(p.response().is_none());
        assert_eq!(p.feed(b"{\"id\":1}"), Ok(Progress::Complete));
        let resp = p.response().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"{\"id\":1}");
        assert!(resp.keepalive);
        assert_eq!(resp.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(resp.headers[0].0, "content-type");
        assert_eq!(resp.header("x-missing"), None);
    }

    #[test]
    fn chunked_body_is_dechunked_ignoring_extensions_and_trailers() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
              5;name=\"v\"\r\nhello\r\nA \r\n, chunked!\r\n000\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"hello, chunked!");
        assert!(r.keepalive);
    }

    #[test]
    fn close_delimited_body_completes_at_eof_without_keepalive() {
        let mut p = ResponseParser::new(1024, false);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\n\r\nsome"),
            Ok(Progress::NeedMore)
        );
        assert_eq!(p.feed(b" body"), Ok(Progress::NeedMore));
        assert_eq!(p.eof(), Ok(Progress::Complete));
        let r = p.into_response().unwrap();
        assert_eq!(r.body, b"some body");
        assert!(!r.keepalive);
    }

    #[test]
    fn interim_100_continue_is_skipped() {
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"ok");
        assert_eq!(r.header("link"), None);
    }

    #[test]
    fn no_body_for_204_304_and_head() {
        for status in ["204 No Content", "304 Not Modified"] {
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            let r = parse(head.as_bytes()).unwrap();
            assert!(r.body.is_empty() && r.keepalive);
        }
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = run(&[head], false, 1024, true).unwrap();
        assert!(r.body.is_empty() && r.keepalive);
    }

    #[test]
    fn keepalive_follows_version_and_connection() {
        let cases: [(&[u8], bool); 5] = [
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: x, close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0, 0\r\n\r\n", true),
        ];
        for (bytes, keepalive) in cases {
            assert_eq!(parse(bytes).unwrap().keepalive, keepalive, "{bytes:?}");
        }
    }

    #[test]
    fn transfer_encoding_wins_over_content_length_without_keepalive() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"ok");
        assert!(!r.keepalive);
    }

    #[test]
    fn transfer_encoding_not_ending_in_chunked_reads_until_close() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nraw";
        let r = run(&[head], true, 1024, false).unwrap();
        assert_eq!(r.body, b"raw");
        assert!(!r.keepalive);
    }

    #[test]
    fn response_of_exactly_max_bytes_is_accepted() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert!(run(&[bytes], false, bytes.len(), false).is_ok());
        assert_eq!(
            run(&[bytes], false, bytes.len() - 1, false),
            Err(Http1Error::TooLarge(bytes.len() - 1))
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let r = parse(b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
    }

    // ResponseParser: errors

    #[test]
    fn oversized_head_fails() {
        let mut p = ResponseParser::new(1 << 20, false);
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n"), Ok(Progress::NeedMore));
        let filler = format!("X-Big: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            p.feed(filler.as_bytes()),
            Err(Http1Error::HeadTooLarge(MAX_HEAD_BYTES))
        );
        assert!(p.buf.capacity() <= 2 * MAX_HEAD_BYTES);
    }

    #[test]
    fn head_beyond_max_bytes_fails() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            run(&[bytes], false, 20, false),
            Err(Http1Error::TooLarge(20))
        );
    }

    #[test]
    fn oversized_body_by_content_length_fails_before_the_body_arrives() {
        let mut p = ResponseParser::new(100, false);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"),
            Err(Http1Error::TooLarge(100))
        );
    }

    #[test]
    fn oversized_chunked_body_fails() {
        // 47 bytes of head, then 22 per chunk: the second chunk cannot fit.
        let mut p = ResponseParser::new(80, false);
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(p.feed(head), Ok(Progress::NeedMore));
        let chunk = format!("10\r\n{}\r\n", "x".repeat(16));
        assert_eq!(p.feed(chunk.as_bytes()), Ok(Progress::NeedMore));
        assert_eq!(p.feed(chunk.as_bytes()), Err(Http1Error::TooLarge(80)));
    }

    #[test]
    fn oversized_close_delimited_body_fails() {
        let mut p = ResponseParser::new(64, false);
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(Progress::NeedMore));
        assert_eq!(p.feed(&[b'x'; 100]), Err(Http1Error::TooLarge(64)));
    }

    #[test]
    fn bad_chunk_size_fails() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for line in [
            "xyz\r\n", "\r\n", ";ext\r\n", "-5\r\n", "5 x\r\n", "5\n", "5\rx\r\n",
        ] {
            let err = parse(format!("{head}{line}").as_bytes()).unwrap_err();
            assert!(
                matches!(err, Http1Error::InvalidChunk(_)),
                "{line:?}: {err}"
            );
        }
    }

    #[test]
    fn chunk_size_overflow_fails() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let err = parse(format!("{head}1{}\r\n", "0".repeat(16)).as_bytes()).unwrap_err();
        assert_eq!(err, Http1Error::InvalidChunk("chunk size overflows"));
        let leading_zeros = format!("{head}{}1\r\nx\r\n0\r\n\r\n", "0".repeat(40));
        assert_eq!(parse(leading_zeros.as_bytes()).unwrap().body, b"x");
    }

    #[test]
    fn overlong_chunk_line_fails() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let line = format!("{head}1;{}", "e".repeat(MAX_CHUNK_LINE_BYTES));
        assert_eq!(
            parse(line.as_bytes()),
            Err(Http1Error::InvalidChunk("line too long"))
        );
    }

    #[test]
    fn missing_crlf_after_chunk_data_fails() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n";
        assert_eq!(
            parse(bytes),
            Err(Http1Error::InvalidChunk("no crlf after chunk data"))
        );
    }

    #[test]
    fn invalid_content_length_fails() {
        for cl in ["abc", "+5", "-1", "5, 6", "", "99999999999999999999999"] {
            let bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                parse(bytes.as_bytes()),
                Err(Http1Error::InvalidContentLength),
                "{cl:?}"
            );
        }
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse(twice), Err(Http1Error::InvalidContentLength));
    }

    #[test]
    fn transfer_encoding_in_http10_or_empty_fails() {
        let bytes = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(parse(bytes), Err(Http1Error::InvalidTransferEncoding));
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n";
        assert_eq!(parse(bytes), Err(Http1Error::InvalidTransferEncoding));
    }

    #[test]
    fn unexpected_eof_mid_body_fails() {
        let mut p = ResponseParser::new(1024, false);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            Ok(Progress::NeedMore)
        );
        assert_eq!(p.eof(), Err(Http1Error::UnexpectedEof));
        assert!(p.response().is_none());
        let mut p = ResponseParser::new(1024, false);
        assert_eq!(p.feed(b"HTTP/1.1 200"), Ok(Progress::NeedMore));
        assert_eq!(p.eof(), Err(Http1Error::UnexpectedEof));
    }

    #[test]
    fn eof_before_any_byte_is_no_response() {
        let mut p = ResponseParser::new(1024, false);
        assert_eq!(p.feed(b""), Ok(Progress::NeedMore));
        assert_eq!(p.eof(), Err(Http1Error::NoResponse));
    }

    #[test]
    fn data_after_complete_fails_and_drops_the_response() {
        let bytes = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(parse(bytes), Err(Http1Error::TrailingData));
        let mut p = ResponseParser::new(1024, false);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
            Ok(Progress::Complete)
        );
        assert_eq!(p.feed(b""), Ok(Progress::Complete));
        assert_eq!(p.feed(b"y"), Err(Http1Error::TrailingData));
        assert!(p.response().is_none());
    }

    #[test]
    fn errors_are_final() {
        let mut p = ResponseParser::new(1024, false);
        assert_eq!(
            p.feed(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Err(Http1Error::Malformed(httparse::Error::Status))
        );
        let again = Err(Http1Error::Malformed(httparse::Error::Status));
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n\r\n"), again);
        assert_eq!(p.eof(), again);
    }

    #[test]
    fn too_many_headers_fail() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            bytes.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        assert_eq!(parse(&bytes), Err(Http1Error::TooManyHeaders(MAX_HEADERS)));
    }

    #[test]
    fn switching_protocols_and_bad_status_fail() {
        let bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        assert_eq!(parse(bytes), Err(Http1Error::UnexpectedStatus(101)));
        let bytes = b"HTTP/1.1 099 Odd\r\n\r\n";
        assert_eq!(parse(bytes), Err(Http1Error::UnexpectedStatus(99)));
    }

    // ResponseParser: properties

    /// A valid response: its bytes, expected status, body and keepalive, and
    /// whether it needs eof to complete.
    #[derive(Debug, Clone)]
    struct Valid {
        bytes: Vec<u8>,
        status: u16,
        body: Vec<u8>,
        keepalive: bool,
        eof: bool,
    }

    fn valid_response() -> impl Strategy<Value = Valid> {
        let body = || proptest::collection::vec(any::<u8>(), 0..200);
        let length = body().prop_map(|body| {
            let mut bytes =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            bytes.extend_from_slice(&body);
            Valid {
                bytes,
                status: 200,
                body,
                keepalive: true,
                eof: false,
            }
        });
        let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6);
        let chunked = (chunks, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(chunks, ext, trailers, upper)| {
                let mut bytes =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n".to_vec();
                let ext = if ext { ";name=\"va;lue\"; flag" } else { "" };
                for c in &chunks {
                    let size = if upper {
                        format!("{:X}", c.len())
                    } else {
                        format!("{:x}", c.len())
                    };
                    bytes.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                    bytes.extend_from_slice(c);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(format!("0{ext}\r\n").as_bytes());
                if trailers {
                    bytes.extend_from_slice(b"X-Checksum: abc\r\nX-Other: 1\r\n");
                }
                bytes.extend_from_slice(b"\r\n");
                let body = chunks.concat();
                Valid {
                    bytes,
                    status: 200,
                    body,
                    keepalive: true,
                    eof: false,
                }
            },
        );
        let close = body().prop_map(|body| {
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
            bytes.extend_from_slice(&body);
            Valid {
                bytes,
                status: 200,
                body,
                keepalive: false,
                eof: true,
            }
        });
        let continued = body().prop_map(|body| {
            let mut bytes = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            bytes.extend_from_slice(&body);
            Valid {
                bytes,
                status: 200,
                body,
                keepalive: true,
                eof: false,
            }
        });
        let no_content = Just(Valid {
            bytes: b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec(),
            status: 204,
            body: Vec::new(),
            keepalive: false,
            eof: false,
        });
        prop_oneof![length, chunked, close, continued, no_content]
    }

    /// Bytes likely to reach deep parser states: HTTP fragments and noise.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        const WORDS: &[&str] = &[
            "HTTP/1.1 ",
            "HTTP/1.0 ",
            "200 OK",
            "100 Continue",
            "204 X",
            "\r\n",
            "\n",
            "\r",
            "Content-Length: ",
            "Transfer-Encoding: chunked",
            "Connection: close",
            "5",
            "0",
            "ff",
            ";x=y",
            ": ",
            "abc",
            ",",
        ];
        let word = prop_oneof![
            proptest::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 1..4),
        ];
        proptest::collection::vec(word, 0..40).prop_map(|words| words.concat())
    }

    proptest! {
        #[test]
        fn valid_responses_parse_the_same_in_any_split(
            v in valid_response(),
            points in proptest::collection::vec(0usize..1000, 0..12),
            byte_by_byte in any::<bool>(),
        ) {
            let whole = run(&[&v.bytes], v.eof, 1 << 20, false).unwrap();
            prop_assert_eq!(whole.status, v.status);
            prop_assert_eq!(&whole.body, &v.body);
            prop_assert_eq!(whole.keepalive, v.keepalive);
            let pieces: Vec<&[u8]> = if byte_by_byte {
                v.bytes.chunks(1).collect()
            } else {
                split_at_points(&v.bytes, &points)
            };
            prop_assert_eq!(run(&pieces, v.eof, 1 << 20, false), Ok(whole));
        }

        #[test]
        fn any_bytes_never_panic_and_split_does_not_change_the_outcome(
            bytes in prop_oneof![noise(), proptest::collection::vec(any::<u8>(), 0..300)],
            points in proptest::collection::vec(0usize..400, 0..12),
            max in 0usize..400,
            head in any::<bool>(),
        ) {
            let whole = run(&[&bytes], true, max, head);
            let pieces = split_at_points(&bytes, &points);
            prop_assert_eq!(run(&pieces, true, max, head), whole.clone());
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(run(&singles, true, max, head), whole);
        }
    }
}
