//! Exchange: the native state of one request/response, created in access and
//! carried through header_filter, body_filter and log.
//!
//! It holds what the log record needs so the record is built straight from
//! native state, without per-request Lua tables.

use crate::auth::key::CacheKey;
use crate::auth::verdict::{Account, Denial, Verdict};
use crate::auth::AuthError;
use crate::config::{Destination, Route};
use crate::log::body::Capture;
use crate::stats;
use std::borrow::Cow;
use std::sync::Arc;

/// How the auth cache answered, as the log record's `auth.cache` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// No lookup (no credential, or not reached).
    None,
    /// A fresh positive entry (L1 or L2).
    Hit,
    /// Not cached: the auth service answered.
    Miss,
    /// The auth service failed; an expired entry inside its stale window was used.
    Stale,
    /// A cached 401/403.
    Negative,
}

impl CacheStatus {
    /// The name used in log records and `kong.ctx.shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "none",
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Negative => "negative",
        }
    }
}

/// Header values in config order, `None` where the request lacks the header.
pub type HeaderValues = Vec<Option<Vec<u8>>>;

static NO_VALUES: HeaderValues = Vec::new();

/// The credential being fetched: its key and the header values to forward.
/// Values are dropped as soon as the auth call is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    key: CacheKey,
    creds: HeaderValues,
    forwarded: HeaderValues,
}

/// The methods nginx itself parses, as static strings; any other method
/// (extension methods are legal) is copied.
const METHODS: [&str; 16] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
];

fn method_name(method: &[u8]) -> Cow<'static, str> {
    match METHODS.iter().find(|m| m.as_bytes() == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(String::from_utf8_lossy(method).into_owned()),
    }
}

/// One request/response passing through the plugin.
#[derive(Debug)]
pub struct Exchange {
    started_at_ms: u64,
    // A static string for the usual methods: no allocation (see method_name).
    method: Cow<'static, str>,
    // Kept only when the request is logged (empty otherwise).
    uri: String,
    status: Option<u16>,
    response_bytes: u64,
    verdict: Option<Verdict>,
    cache_status: CacheStatus,
    // The matched route's index in the config's `routes`.
    route: Option<usize>,
    // The gateway answered with its own error after the verdict: no account
    // response headers.
    refused: bool,
    // What only a miss or a logged request needs, boxed on first use: a
    // hit moves a small exchange into its slot and out, and allocates none.
    more: Option<Box<More>>,
}

/// The part of an [`Exchange`] a cache hit without logging never needs.
#[derive(Debug, Default)]
struct More {
    pending: Option<Pending>,
    auth_error: Option<AuthError>,
    auth_latency_ms: Option<f64>,
    // After a miss: the API-version header, for routing once the auth
    // service answered.
    api_version: Option<Vec<u8>>,
    upstream_path: Option<Vec<u8>>,
    request_capture: Option<Capture>,
    response_capture: Option<Capture>,
}

impl Exchange {
    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    /// Starts an exchange in the access phase; `now_ms` is the request start
    /// (epoch milliseconds, from nginx: the core reads no clock). A client
    /// may send any bytes in the URI (`/caf\xE9`): they are kept as text for
    /// the log record, each invalid UTF-8 sequence as U+FFFD. `uri` is
    /// `None` when the request is not logged (then nothing is copied).
    pub fn begin(method: &[u8], uri: Option<&[u8]>, now_ms: u64) -> Self {
        stats::REQUESTS.incr();
        Exchange {
            started_at_ms: now_ms,
            method: method_name(method),
            uri: uri.map_or_else(String::new, |u| String::from_utf8_lossy(u).into_owned()),
            status: None,
            response_bytes: 0,
            verdict: None,
            cache_status: CacheStatus::None,
            route: None,
            refused: false,
            more: None,
        }
    }

    /// The request method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request URI as the client sent it (empty when not logged).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Keeps the upstream path a route rewrote to, so that a pointer to it
    /// stays valid for the rest of the request; answers it.
    pub fn set_upstream_path(&mut self, path: Option<Vec<u8>>) -> Option<&[u8]> {
        let more = self.more();
        more.upstream_path = path;
        more.upstream_path.as_deref()
    }

    /// Keeps the API-version header of a request that waits for the auth
    /// service (its header list is not read twice).
    pub fn set_api_version(&mut self, value: Option<&[u8]>) {
        if value.is_some() || self.more.is_some() {
            self.more().api_version = value.map(<[u8]>::to_vec);
        }
    }

    /// The API-version header kept by [`Exchange::set_api_version`].
    pub fn api_version(&self) -> Option<&[u8]> {
        self.more.as_ref()?.api_version.as_deref()
    }

    /// Records the routing decision: the route's index in the config.
    pub fn set_route(&mut self, index: usize) {
        self.route = Some(index);
    }

    /// The gateway ends this allowed request with its own error (a route
    /// it cannot apply): the response gets no account headers.
    pub fn refuse(&mut self) {
        self.refused = true;
    }

    /// Whether [`Exchange::refuse`] was called.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Records the verdict that decides this request.
    pub fn set_verdict(&mut self, verdict: Verdict, status: CacheStatus) {
        self.verdict = Some(verdict);
        self.cache_status = status;
    }

    /// Records how the cache answered without a verdict.
    pub fn set_cache_status(&mut self, status: CacheStatus) {
        self.cache_status = status;
    }

    /// How the cache answered.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }

    /// Remembers the credential to fetch after a cache miss.
    /// The values are copied: only a miss pays for it.
    pub fn set_pending(
        &mut self,
        key: CacheKey,
        creds: &[Option<&[u8]>],
        forwarded: &[Option<&[u8]>],
    ) {
        let owned = |vs: &[Option<&[u8]>]| vs.iter().map(|v| v.map(<[u8]>::to_vec)).collect();
        self.more().pending = Some(Pending {
            key,
            creds: owned(creds),
            forwarded: owned(forwarded),
        });
    }

    /// The cache key of the credential being fetched.
    pub fn pending_key(&self) -> Option<CacheKey> {
        self.more.as_ref()?.pending.as_ref().map(|p| p.key)
    }

    /// Credential and forwarded header values of the credential being fetched.
    pub fn pending_values(&self) -> (&HeaderValues, &HeaderValues) {
        match self.more.as_ref().and_then(|m| m.pending.as_ref()) {
            Some(p) => (&p.creds, &p.forwarded),
            None => (&NO_VALUES, &NO_VALUES),
        }
    }

    /// Drops the raw header values once they are no longer needed.
    pub fn clear_pending_values(&mut self) {
        if let Some(p) = self.more.as_mut().and_then(|m| m.pending.as_mut()) {
            p.creds = Vec::new();
            p.forwarded = Vec::new();
        }
    }

    /// Records why the auth service gave no usable answer.
    pub fn set_auth_error(&mut self, err: AuthError) {
        self.more().auth_error = Some(err);
    }

    /// Why the auth service gave no usable answer, if it did not.
    pub fn auth_error(&self) -> Option<&AuthError> {
        self.more.as_ref()?.auth_error.as_ref()
    }

    /// Records how long the auth call took.
    pub fn set_auth_latency(&mut self, ms: f64) {
        self.more().auth_latency_ms = Some(ms);
    }

    /// The authenticated account, if the verdict is allow.
    pub fn account(&self) -> Option<&Arc<Account>> {
        match &self.verdict {
            Some(Verdict::Allow(a)) => Some(a),
            _ => None,
        }
    }

    /// The denial, if the verdict is deny.
    pub fn denial(&self) -> Option<&Arc<Denial>> {
        match &self.verdict {
            Some(Verdict::Deny(d)) => Some(d),
            _ => None,
        }
    }

    /// header_filter: the response status is known.
    pub fn response(&mut self, status: u16) {
        stats::RESPONSES.incr();
        self.status = Some(status);
    }

    /// body_filter: a response chunk went by; copied (bounded) when the
    /// response body is logged.
    pub fn body_chunk(&mut self, chunk: &[u8]) {
        stats::RESPONSE_BYTES.add(chunk.len() as u64);
        self.response_bytes += chunk.len() as u64;
        if let Some(c) = self.more.as_mut().and_then(|m| m.response_capture.as_mut()) {
            c.push(chunk);
        }
    }

    /// Sets the body captures (when the log records bodies).
    pub fn set_captures(&mut self, request: Option<Capture>, response: Option<Capture>) {
        if request.is_some() || response.is_some() {
            let more = self.more();
            more.request_capture = request;
            more.response_capture = response;
        }
    }

    /// access: the request body (at most what the capture keeps) and its full size.
    pub fn request_body(&mut self, data: &[u8], size: u64) {
        if let Some(c) = self.more.as_mut().and_then(|m| m.request_capture.as_mut()) {
            c.push(data);
            c.set_size(size.max(data.len() as u64));
        }
    }

    /// The request body capture, if bodies are logged.
    pub fn request_capture(&self) -> Option<&Capture> {
        self.more.as_ref()?.request_capture.as_ref()
    }

    /// The response body capture, if bodies are logged.
    pub fn response_capture(&self) -> Option<&Capture> {
        self.more.as_ref()?.response_capture.as_ref()
    }

    /// Request start, epoch milliseconds.
    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    /// The response status, once header_filter ran.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// How long the auth call took, milliseconds (0 without one).
    pub fn auth_latency_ms(&self) -> f64 {
        self.more
            .as_ref()
            .and_then(|m| m.auth_latency_ms)
            .unwrap_or(0.0)
    }

    /// The matched route among the config's `routes`: name, `host:port`
    /// target, Kong upstream.
    pub fn route_parts<'a>(
        &self,
        routes: &'a [Route],
    ) -> (Option<&'a str>, Option<String>, Option<&'a str>) {
        match self.route.and_then(|i| routes.get(i)) {
            Some(Route {
                name,
                destination: Destination::Target(t),
                ..
            }) => (Some(name), Some(t.to_string()), None),
            Some(Route {
                name,
                destination: Destination::Upstream(u),
                ..
            }) => (Some(name), None, Some(u)),
            None => (None, None, None),
        }
    }

    /// log: the exchange is over.
    pub fn finish(&self) {
        stats::COMPLETED.incr();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_fill_the_exchange() {
        let mut x = Exchange::begin(b"POST", Some(b"/send?x=1"), 1_000);
        assert_eq!(x.status(), None);
        x.response(201);
        x.body_chunk(&[0; 10]);
        x.body_chunk(&[0; 5]);
        assert_eq!((x.method(), x.uri()), ("POST", "/send?x=1"));
        assert_eq!(x.status(), Some(201));
        assert_eq!(x.response_bytes, 15);
        assert_eq!(x.cache_status(), CacheStatus::None);
        assert_eq!(x.route_parts(&[]), (None, None, None));
    }

    #[test]
    fn response_capture_keeps_at_most_its_limit() {
        let mut x = Exchange::begin(b"GET", Some(b"/"), 5);
        x.set_captures(None, Some(Capture::new(4)));
        x.body_chunk(b"hello");
        let c = x.response_capture().expect("capture");
        assert_eq!((c.data(), c.size(), c.truncated()), (&b"hell"[..], 5, true));
    }
}
