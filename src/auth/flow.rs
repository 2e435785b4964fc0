//! Plugin: the runtime state of one compiled config (its L1 auth cache and
//! key deriver) and the decisions of the access phase, as pure steps that the
//! Lua core drives between its socket and shared-dict operations.
//!
//! ```text
//! lookup ──hit──────────────────────────────▶ Allow / Deny
//!   │ miss
//!   ▼
//! load_shared (L2) ──fresh─────────────────▶ Allow / Deny
//!   │ miss (a stale L2 entry is kept in L1 for later)
//!   ▼
//! auth_request ─▶ [Lua: cosocket] ─▶ auth_response ─▶ Allow / Deny / stale / Failed
//! ```

use crate::auth::cache::{Cache, Entry};
use crate::auth::key::{CacheKey, KeyDeriver};
use crate::auth::verdict::{self, Verdict};
use crate::auth::{shared, AuthError};
use crate::config::{AuthMethod, Config, Destination};
use crate::exchange::{CacheStatus, Exchange};
use crate::http1::{self, Response};
use crate::log::recorder::Recorder;
use crate::routing::{self, Router};
use crate::stats;
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest auth service response we read (head and body).
pub const MAX_AUTH_RESPONSE_BYTES: usize = 1024 * 1024;

/// Where a request stands after a step of the access phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The request has no credential: 401 without any auth call.
    NoCredential,
    /// Authenticated: proxy it (with the account's headers).
    Allow,
    /// The auth service rejected the credential: pass its 401/403 on.
    Deny,
    /// Not cached: the next step is needed.
    Miss,
    /// The auth service failed and nothing stale exists: `failure_status`.
    Failed,
}

/// A shared-dict write the Lua side must perform: value and exptime (s).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedWrite {
    /// Encoded entry (binary: see `auth::shared`).
    pub value: Vec<u8>,
    /// Seconds until the dict may drop it (the end of its stale window).
    pub ttl: f64,
}

/// A routing decision to apply, borrowing the config (`'c`) and the
/// request path (`'p`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAction<'c, 'p> {
    /// The matched route's place in `config.routes`.
    pub index: usize,
    /// The matched route's name.
    pub name: &'c str,
    /// Where the request goes.
    pub destination: &'c Destination,
    /// The upstream path when the route strips its prefix (bytes: the
    /// request path need not be UTF-8); a suffix of the request path
    /// unless a `/` had to be put in front.
    pub path: Option<Cow<'p, [u8]>>,
}

/// The cache tier a verdict was found in.
#[derive(Debug, Clone, Copy)]
enum Tier {
    /// This worker's LRU.
    L1,
    /// The shared dict.
    L2,
    /// Redis (the cluster tier).
    L3,
}

/// One header value, `None` when the request lacks the header.
type Values<'a> = Option<&'a [u8]>;

/// One compiled config and its caches.
#[derive(Debug)]
pub struct Plugin {
    /// The compiled config.
    pub config: Config,
    router: Router,
    /// The log pipeline, when `log.enabled`.
    pub recorder: Option<Recorder>,
    keys: KeyDeriver,
    cache: RefCell<Cache>,
    /// Requests routed by each route, by index in `config.routes` (for the
    /// metrics; made once here, so counting a decision allocates nothing).
    routed: Box<[AtomicU64]>,
}

/// Everything that changes the auth service's answer, or what an entry
/// keeps of it, apart from the request's own header values: two configs
/// sharing a dict never read each other's entries unless they would have
/// written the same ones (an L2 entry holds rendered header values by rule
/// index and only the account fields routes read).
fn scope(config: &Config) -> Vec<u8> {
    use std::fmt::Write;
    let a = &config.auth;
    let mut s = format!(
        "{:?}|{}|{}|{}|{}",
        a.method,
        a.url.raw,
        a.account_pointer.as_str(),
        a.account_id_pointer.as_str(),
        a.exp_pointer.as_str()
    );
    for h in a.credential_headers.iter().chain(&a.forward_headers) {
        s.push('|');
        s.push_str(h.as_str());
    }
    for (list, rules) in [
        ("u", &config.upstream_headers),
        ("r", &config.response_headers),
    ] {
        for rule in rules {
            let _ = write!(s, "|{list}:{}={:?}", rule.name.as_str(), rule.source);
        }
    }
    for p in verdict::routed_pointers(config) {
        let _ = write!(s, "|a:{p}");
    }
    if let Some(c) = &config.consumer {
        let _ = write!(s, "|c:{}", c.pointer.as_str());
    }
    s.into_bytes()
}

/// Which [`Plugin::spoofable_names`] a request carries: bit `j` for name
/// `j` below 31, bit 31 for any name from 31 on (so a u32 says it, and Lua
/// reads it as a plain number). Nearly always 0: only a client trying to
/// spoof sends one, so the strip costs nothing otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoofMask(pub u32);

impl SpoofMask {
    /// The bit of name `j`.
    pub const fn bit(j: usize) -> u32 {
        if j < 31 {
            1 << j
        } else {
            1 << 31
        }
    }

    fn set(&mut self, j: usize) {
        self.0 |= Self::bit(j);
    }
}

impl Plugin {
    /// Runtime state for `config`; `secret` is this node's cache-key secret.
    pub fn new(config: Config, secret: &[u8]) -> Self {
        let cache = RefCell::new(Cache::new(config.auth.cache_size as usize));
        Plugin {
            router: Router::new(&config),
            recorder: config.log.as_ref().map(Recorder::new),
            // The scope is fixed per config: folded into the key once, so a
            // request hashes its header values only.
            keys: KeyDeriver::new(secret).scoped(&scope(&config)),
            cache,
            routed: config.routes.iter().map(|_| AtomicU64::new(0)).collect(),
            config,
        }
    }

    /// Starts the exchange of a request entering access, with the URI and
    /// body captures when the log records it (nothing copied otherwise).
    pub fn begin(&self, method: &[u8], uri: &[u8], start_ms: u64) -> Exchange {
        let Some(r) = &self.recorder else {
            return Exchange::begin(method, None, start_ms);
        };
        let mut ex = Exchange::begin(method, Some(uri), start_ms);
        let (request, response) = r.captures();
        ex.set_captures(request, response);
        ex
    }

    /// The header names whose values [`Plugin::lookup`] takes, in its
    /// order: the credential headers, then the forwarded ones (lowercase).
    pub fn value_names(&self) -> impl Iterator<Item = &str> {
        let auth = &self.config.auth;
        auth.credential_headers
            .iter()
            .chain(&auth.forward_headers)
            .map(|h| h.as_str())
    }

    /// The cache key for these credential and forwarded header values (in
    /// config order, `None` when absent), or `None` when no credential is
    /// present (absent or empty).
    pub fn cache_key(
        &self,
        creds: &[Option<&[u8]>],
        forwarded: &[Option<&[u8]>],
    ) -> Option<CacheKey> {
        // An empty header carries no credential either.
        if creds.iter().all(|v| v.is_none_or(<[u8]>::is_empty)) {
            return None;
        }
        // per value: present (1) and the value, or absent (0); the config's
        // scope is in the deriver's key
        let values = creds.iter().chain(forwarded).flat_map(|v| match v {
            Some(v) => [Some(&b"\x01"[..]), Some(*v)],
            None => [Some(&b"\x00"[..]), None],
        });
        Some(self.keys.derive(values.flatten()))
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> Option<T> {
        // Never contended: every call runs to completion on the worker's one
        // thread and no Lua runs beneath it. try_borrow keeps that a non-panic.
        self.cache.try_borrow_mut().ok().map(|mut c| f(&mut c))
    }

    fn take_verdict(ex: &mut Exchange, verdict: Verdict, status: CacheStatus) -> Step {
        let step = match verdict {
            Verdict::Allow(_) => {
                stats::ALLOWED.incr();
                Step::Allow
            }
            Verdict::Deny(_) => {
                stats::DENIED.incr();
                Step::Deny
            }
        };
        ex.set_verdict(verdict, status);
        step
    }

    /// A cached verdict decides the request: an allow counts under the
    /// tier's hits, a deny as a negative hit (overall and the tier's).
    fn take_hit(ex: &mut Exchange, verdict: Verdict, tier: Tier) -> Step {
        let (hits, negative) = match tier {
            Tier::L1 => (&stats::L1_HITS, &stats::L1_NEGATIVE_HITS),
            Tier::L2 => (&stats::L2_HITS, &stats::L2_NEGATIVE_HITS),
            Tier::L3 => (&stats::L3_HITS, &stats::L3_NEGATIVE_HITS),
        };
        let status = match verdict {
            Verdict::Allow(_) => {
                hits.incr();
                CacheStatus::Hit
            }
            Verdict::Deny(_) => {
                stats::NEGATIVE_HITS.incr();
                negative.incr();
                CacheStatus::Negative
            }
        };
        Self::take_verdict(ex, verdict, status)
    }

    /// The fresh L1 verdict for `key`, if any.
    fn fresh_l1(&self, key: &CacheKey, now: f64) -> Option<Verdict> {
        self.with_cache(|c| c.get_fresh(key, now).map(|e| e.verdict.clone()))
            .flatten()
    }

    /// The header names a client must not send upstream, in this order:
    /// every upstream header rule's, then the route header (lowercase).
    pub fn spoofable_names(&self) -> impl Iterator<Item = &str> {
        self.config
            .upstream_headers
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.config.route_header.as_ref().map(|h| h.as_str()))
    }

    /// Reads a request's header list (lowercase names, as nginx lists them)
    /// once: the values of [`Plugin::value_names`] (`None` where absent)
    /// and the API-version header's first value when routes need it, then
    /// hands them to `then` with the [`SpoofMask`] of the
    /// [`Plugin::spoofable_names`] present. Those are skipped, as if
    /// already stripped: a name both spoofable and read never reaches the
    /// auth call from the client. `Err(i)`: header `i` of
    /// [`Plugin::value_names`] appears more than once. Which of two
    /// credentials would the upstream read? The request is refused instead
    /// (as Kong's key-auth does).
    pub fn read_headers<'h, T>(
        &self,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        then: impl FnOnce(&[Option<&'h [u8]>], Option<&'h [u8]>, SpoofMask) -> T,
    ) -> Result<T, usize> {
        const INLINE: usize = 8;
        let auth = &self.config.auth;
        let count = auth.credential_headers.len() + auth.forward_headers.len();
        let mut inline: [Option<&[u8]>; INLINE] = [None; INLINE];
        let mut heap = Vec::new();
        let found: &mut [Option<&[u8]>] = if count <= INLINE {
            &mut inline[..count]
        } else {
            heap.resize(count, None);
            &mut heap
        };
        let version_name =
            (!self.router.is_empty()).then(|| self.config.api_version.header.as_str().as_bytes());
        let mut version = None;
        let mut spoofed = SpoofMask(0);
        'list: for (name, value) in headers {
            for (j, spoofable) in self.spoofable_names().enumerate() {
                if name == spoofable.as_bytes() {
                    spoofed.set(j);
                    continue 'list;
                }
            }
            for (i, wanted) in self.value_names().enumerate() {
                if name == wanted.as_bytes() {
                    if found[i].is_some() {
                        return Err(i);
                    }
                    found[i] = Some(value);
                }
            }
            if version.is_none() && version_name == Some(name) {
                version = Some(value);
            }
        }
        Ok(then(found, version, spoofed))
    }

    /// Splits header values in [`Plugin::value_names`] order into the
    /// credential and the forwarded ones. `values` must hold one per name.
    fn split<'v, 'a>(&self, values: &'v [Values<'a>]) -> (&'v [Values<'a>], &'v [Values<'a>]) {
        values.split_at(self.config.auth.credential_headers.len().min(values.len()))
    }

    /// [`Plugin::cache_key`] for values in [`Plugin::value_names`] order
    /// (missing trailing ones are absent).
    pub fn key_of(&self, values: &[Option<&[u8]>]) -> Option<CacheKey> {
        let auth = &self.config.auth;
        let n = auth.credential_headers.len() + auth.forward_headers.len();
        if values.len() >= n {
            let (creds, forwarded) = self.split(&values[..n]);
            return self.cache_key(creds, forwarded);
        }
        let mut padded = values.to_vec();
        padded.resize(n, None);
        let (creds, forwarded) = self.split(&padded);
        self.cache_key(creds, forwarded)
    }

    /// First step: looks the credential up in L1. `values`: one per
    /// [`Plugin::value_names`] (`None`: the request lacks the header). A
    /// hit copies nothing; a miss keeps the values for the auth call.
    pub fn lookup(&self, ex: &mut Exchange, values: &[Option<&[u8]>], now: f64) -> Step {
        let key = self.key_of(values);
        let Some(key) = key else {
            stats::NO_CREDENTIAL.incr();
            ex.set_cache_status(CacheStatus::None);
            return Step::NoCredential;
        };
        if let Some(verdict) = self.fresh_l1(&key, now) {
            return Self::take_hit(ex, verdict, Tier::L1);
        }
        stats::L1_MISSES.incr();
        let auth = &self.config.auth;
        let n = (auth.credential_headers.len() + auth.forward_headers.len()).min(values.len());
        let (creds, forwarded) = self.split(&values[..n]);
        ex.set_pending(key, creds, forwarded);
        Step::Miss
    }

    /// While waiting for a concurrent auth call in this worker: the L1
    /// answer for the pending key, if it has arrived.
    pub fn recheck(&self, ex: &mut Exchange, now: f64) -> Step {
        let Some(key) = ex.pending_key() else {
            return Step::Miss;
        };
        match self.fresh_l1(&key, now) {
            Some(verdict) => Self::take_hit(ex, verdict, Tier::L1),
            None => Step::Miss,
        }
    }

    /// Second step: a value read from the shared dict for this request's key.
    /// A fresh entry is a hit (and fills L1); a stale one is kept in L1 in
    /// case the auth service fails; anything else is a miss.
    pub fn load_shared(&self, ex: &mut Exchange, value: &[u8], now: f64) -> Step {
        self.load_entry(ex, value, now, Tier::L2)
    }

    /// [`Plugin::load_shared`] for a value read from Redis (same entry
    /// form; counted under the cluster tier).
    pub fn load_cluster(&self, ex: &mut Exchange, value: &[u8], now: f64) -> Step {
        self.load_entry(ex, value, now, Tier::L3)
    }

    fn load_entry(&self, ex: &mut Exchange, value: &[u8], now: f64, tier: Tier) -> Step {
        let Some(key) = ex.pending_key() else {
            return Step::Miss;
        };
        let Some(entry) = shared::decode_entry(value, &self.config) else {
            return Step::Miss;
        };
        let fresh = entry.is_fresh(now);
        let verdict = entry.verdict.clone();
        self.with_cache(|c| c.put(key, entry, now));
        if !fresh {
            return Step::Miss;
        }
        Self::take_hit(ex, verdict, tier)
    }

    /// Third step: the HTTP/1.1 request to send to the auth service.
    pub fn auth_request(&self, ex: &Exchange) -> Result<Vec<u8>, http1::Http1Error> {
        let auth = &self.config.auth;
        let (creds, forwarded) = ex.pending_values();
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(creds.len() + forwarded.len() + 1);
        let names = auth.credential_headers.iter().chain(&auth.forward_headers);
        for (name, value) in names.zip(creds.iter().chain(forwarded)) {
            if let Some(v) = value {
                headers.push((name.as_str(), v));
            }
        }
        headers.push(("accept", b"application/json"));
        let mut out = Vec::with_capacity(256);
        http1::encode_request(
            &http1::Request {
                method: match auth.method {
                    AuthMethod::Get => "GET",
                    AuthMethod::Post => "POST",
                },
                host: &auth.url.host,
                port: auth.url.port,
                tls: auth.url.tls,
                path: &auth.url.path,
                headers: &headers,
                body: b"",
            },
            &mut out,
        )?;
        Ok(out)
    }

    /// Last step: the auth service's answer (or why there is none), at `now`.
    /// Returns the step and, for a cacheable verdict, the shared-dict write.
    pub fn auth_response(
        &self,
        ex: &mut Exchange,
        response: Result<&Response, AuthError>,
        now: f64,
    ) -> (Step, Option<SharedWrite>) {
        stats::AUTH_CALLS.incr();
        stats::L2_MISSES.incr();
        let answer = response.and_then(|r| verdict::interpret(&self.config, r, now));
        let Some(key) = ex.pending_key() else {
            return (Step::Failed, None);
        };
        ex.clear_pending_values();
        match answer {
            Ok(answer) => {
                let mut write = None;
                if answer.ttl > 0.0 {
                    let entry = Entry::new(
                        answer.verdict.clone(),
                        now,
                        answer.ttl,
                        self.config.auth.stale_ttl_s,
                    );
                    write = Some(SharedWrite {
                        value: shared::encode_entry(&entry),
                        ttl: answer.ttl + self.config.auth.stale_ttl_s,
                    });
                    self.with_cache(|c| c.put(key, entry, now));
                } else {
                    // Not cacheable (no-store, exp passed): drop what we had.
                    self.with_cache(|c| c.remove(&key));
                }
                stats::MISSES.incr();
                match answer.verdict {
                    Verdict::Allow(_) => stats::AUTH_CALLS_OK.incr(),
                    Verdict::Deny(_) => stats::AUTH_CALLS_DENIED.incr(),
                }
                (
                    Self::take_verdict(ex, answer.verdict, CacheStatus::Miss),
                    write,
                )
            }
            Err(err) => (self.fail(ex, &err, now), None),
        }
    }

    /// The auth call failed (or a concurrent one did): serve a stale entry
    /// if one is inside its window, else [`Step::Failed`].
    pub fn fail(&self, ex: &mut Exchange, err: &AuthError, now: f64) -> Step {
        stats::count_auth_error(err);
        if matches!(
            err,
            AuthError::Rejected | AuthError::LockTimeout | AuthError::FlightFailed
        ) {
            // No call of its own (auth_response counted those): the request
            // still went past both tiers.
            stats::L2_MISSES.incr();
        }
        ex.set_auth_error(err.clone());
        let Some(key) = ex.pending_key() else {
            stats::FAILED_CLOSED.incr();
            return Step::Failed;
        };
        let stale = self
            .with_cache(|c| c.get_stale(&key, now).map(|e| e.verdict.clone()))
            .flatten();
        match stale {
            Some(verdict) => {
                stats::STALE_SERVED.incr();
                Self::take_verdict(ex, verdict, CacheStatus::Stale)
            }
            None => {
                stats::FAILED_CLOSED.incr();
                Step::Failed
            }
        }
    }

    /// Routes an authenticated request: the first matching route for `path`
    /// (without query) and the API-version header value, or `None` (keep the
    /// default upstream). Records the decision on the exchange for the log.
    pub fn route<'p>(
        &self,
        ex: &mut Exchange,
        path: &'p [u8],
        version_header: Option<&[u8]>,
    ) -> Option<RouteAction<'_, 'p>> {
        if self.router.is_empty() {
            return None;
        }
        let (index, upstream_path) = {
            let account = ex.account()?;
            let decision = self.router.decide(&routing::Request {
                method: ex.method(),
                path,
                api_version_header: version_header,
                account: &account.object,
                account_id: &account.id,
            })?;
            // The decision borrows the account too: re-borrow a borrowed
            // upstream path from `path` (it is a suffix of it, or "/").
            let upstream_path = decision.path.map(|p| match p {
                Cow::Borrowed(b"/") => Cow::Borrowed(&b"/"[..]),
                Cow::Borrowed(b) => match path.len().checked_sub(b.len()) {
                    Some(at) if std::ptr::eq(path[at..].as_ptr(), b.as_ptr()) => {
                        Cow::Borrowed(&path[at..])
                    }
                    _ => Cow::Owned(b.to_vec()),
                },
                Cow::Owned(v) => Cow::Owned(v),
            });
            (decision.index, upstream_path)
        };
        let route = self.config.routes.get(index)?;
        stats::ROUTED.incr();
        if let Some(n) = self.routed.get(index) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        ex.set_route(index);
        Some(RouteAction {
            index,
            name: &route.name,
            destination: &route.destination,
            path: upstream_path,
        })
    }

    /// `(route name, requests it routed)` for every route, in config order.
    pub fn route_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.config
            .routes
            .iter()
            .zip(self.routed.iter())
            .map(|(r, n)| (r.name.as_str(), n.load(Ordering::Relaxed)))
    }

    /// Forgets one cache key in L1.
    pub fn purge(&self, key: &CacheKey) {
        self.with_cache(|c| c.remove(key));
    }

    /// Forgets every L1 entry.
    pub fn purge_all(&self) {
        self.with_cache(Cache::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;
    use serde_json::json;

    fn plugin() -> Plugin {
        let c = compile(json!({
            "auth": {"url": "http://127.0.0.1:9/auth", "forward_headers": ["x-tenant"]},
            "upstream_headers": [{"name": "x-account-id", "pointer": "/id"}]
        }))
        .expect("valid");
        Plugin::new(c, b"test-secret")
    }

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            keepalive: true,
        }
    }

    /// [`Plugin::lookup`] with owned credential and forwarded values.
    fn lookup(
        p: &Plugin,
        ex: &mut Exchange,
        creds: Vec<Option<Vec<u8>>>,
        forwarded: Vec<Option<Vec<u8>>>,
        now: f64,
    ) -> Step {
        let all: Vec<Option<Vec<u8>>> = creds.into_iter().chain(forwarded).collect();
        let values: Vec<Option<&[u8]>> = all.iter().map(Option::as_deref).collect();
        p.lookup(ex, &values, now)
    }

    fn cred(v: &str) -> Vec<Option<Vec<u8>>> {
        vec![Some(v.as_bytes().to_vec())]
    }

    fn miss(p: &Plugin, token: &str, now: f64) -> Exchange {
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        assert_eq!(lookup(p, &mut ex, cred(token), vec![None], now), Step::Miss);
        ex
    }

    /// [`Plugin::read_headers`] over (name, value) pairs: the values read
    /// (owned) and the spoof mask, or the repeated header's index.
    fn scan(p: &Plugin, list: &[(&str, &str)]) -> Result<(Vec<Option<String>>, u32), usize> {
        let pairs = list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        p.read_headers(pairs, |values, _, spoofed| {
            let values = values
                .iter()
                .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect();
            (values, spoofed.0)
        })
    }

    #[test]
    fn read_headers_marks_spoofable_headers_and_skips_them() {
        let c = compile(json!({
            "auth": {"url": "http://127.0.0.1:9/auth", "forward_headers": ["x-tenant"]},
            "upstream_headers": [
                {"name": "x-account-id", "pointer": "/id"},
                {"name": "x-tenant", "pointer": "/tenant"}
            ],
            "route_header": "x-route"
        }))
        .expect("valid");
        let p = Plugin::new(c, b"s");
        let names: Vec<&str> = p.spoofable_names().collect();
        assert_eq!(names, ["x-account-id", "x-tenant", "x-route"]);

        let clean = scan(&p, &[("authorization", "Bearer a"), ("accept", "*/*")]);
        assert_eq!(clean, Ok((vec![Some("Bearer a".into()), None], 0)));

        // x-tenant is both forwarded and set upstream: the client's value is
        // a spoof, stripped, never forwarded to the auth service; repeating
        // a spoofable header is no error.
        let spoofed = scan(
            &p,
            &[
                ("x-route", "email"),
                ("authorization", "Bearer a"),
                ("x-tenant", "t1"),
                ("x-tenant", "t2"),
            ],
        );
        assert_eq!(spoofed, Ok((vec![Some("Bearer a".into()), None], 0b110)));

        assert_eq!(
            scan(&p, &[("authorization", "a"), ("authorization", "b")]),
            Err(0)
        );
    }

    #[test]
    fn spoof_mask_folds_names_from_the_32nd_into_bit_31() {
        assert_eq!(SpoofMask::bit(0), 1);
        assert_eq!(SpoofMask::bit(30), 1 << 30);
        assert_eq!(SpoofMask::bit(31), 1 << 31);
        assert_eq!(SpoofMask::bit(200), 1 << 31);
    }

    #[test]
    fn no_credential_needs_no_auth_call() {
        let p = plugin();
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        assert_eq!(
            lookup(&p, &mut ex, vec![None], vec![Some(b"t".to_vec())], 0.0),
            Step::NoCredential
        );
    }

    #[test]
    fn empty_credential_is_no_credential() {
        let p = plugin();
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        assert_eq!(
            lookup(&p, &mut ex, vec![Some(Vec::new())], vec![None], 0.0),
            Step::NoCredential
        );
    }

    #[test]
    fn answer_is_cached_until_ttl() {
        let p = plugin();
        let mut ex = miss(&p, "Bearer a", 0.0);
        let (step, write) = p.auth_response(&mut ex, Ok(&resp(200, r#"{"id": "a1"}"#)), 0.0);
        assert_eq!(step, Step::Allow);
        assert_eq!(write.expect("cacheable").ttl, 90.0);
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        assert_eq!(
            lookup(&p, &mut ex, cred("Bearer a"), vec![None], 59.0),
            Step::Allow
        );
        assert_eq!(ex.account().map(|a| &*a.id), Some("a1"));
        miss(&p, "Bearer a", 60.0);
    }

    #[test]
    fn forwarded_values_are_part_of_the_key() {
        let p = plugin();
        let mut ex = miss(&p, "Bearer a", 0.0);
        p.auth_response(&mut ex, Ok(&resp(200, r#"{"id": "a1"}"#)), 0.0);
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        let step = lookup(
            &p,
            &mut ex,
            cred("Bearer a"),
            vec![Some(b"tenant-2".to_vec())],
            1.0,
        );
        assert_eq!(step, Step::Miss);
    }

    #[test]
    fn failure_serves_stale_inside_the_window_only() {
        let p = plugin();
        let mut ex = miss(&p, "Bearer a", 0.0);
        p.auth_response(&mut ex, Ok(&resp(200, r#"{"id": "a1"}"#)), 0.0);
        let mut ex = miss(&p, "Bearer a", 70.0);
        let (step, write) = p.auth_response(&mut ex, Err(AuthError::Timeout), 70.0);
        assert_eq!((step, write), (Step::Allow, None));
        assert_eq!(ex.cache_status(), CacheStatus::Stale);
        let mut ex = miss(&p, "Bearer a", 95.0);
        assert_eq!(
            p.auth_response(&mut ex, Ok(&resp(502, "")), 95.0).0,
            Step::Failed
        );
    }

    #[test]
    fn errors_are_never_cached() {
        let p = plugin();
        let mut ex = miss(&p, "Bearer a", 0.0);
        assert_eq!(
            p.auth_response(&mut ex, Ok(&resp(200, "garbage")), 0.0).0,
            Step::Failed
        );
        miss(&p, "Bearer a", 0.1);
    }

    #[test]
    fn denial_is_cached_for_the_negative_ttl() {
        let p = plugin();
        let mut ex = miss(&p, "Bearer bad", 0.0);
        assert_eq!(
            p.auth_response(&mut ex, Ok(&resp(401, "")), 0.0).0,
            Step::Deny
        );
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        assert_eq!(
            lookup(&p, &mut ex, cred("Bearer bad"), vec![None], 9.9),
            Step::Deny
        );
        assert_eq!(ex.cache_status(), CacheStatus::Negative);
        miss(&p, "Bearer bad", 10.0);
    }

    #[test]
    fn configs_that_keep_different_things_never_share_keys() {
        let with = |extra: serde_json::Value| {
            let mut c = json!({"auth": {"url": "http://127.0.0.1:9/auth"}});
            c.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            Plugin::new(compile(c).expect("valid"), b"test-secret")
        };
        let v: [Option<&[u8]>; 1] = [Some(b"Bearer a")];
        let base = with(json!({}));
        let same = with(json!({}));
        assert_eq!(base.key_of(&v), same.key_of(&v));
        for other in [
            json!({"upstream_headers": [{"name": "x-id", "pointer": "/id"}]}),
            json!({"response_headers": [{"name": "x-id", "value": "1"}]}),
            json!({"routes": [{"name": "r", "account_match": {"/plan": ["pro"]}, "target": "a:1"}]}),
            json!({"auth": {"url": "http://127.0.0.1:9/other"}}),
        ] {
            assert_ne!(base.key_of(&v), with(other.clone()).key_of(&v), "{other}");
        }
    }

    #[test]
    fn shared_dict_entry_from_another_worker_is_a_hit() {
        let a = plugin();
        let b = plugin(); // same secret: another worker of the node
        let mut ex = miss(&a, "Bearer a", 0.0);
        let (_, write) = a.auth_response(&mut ex, Ok(&resp(200, r#"{"id": "a1"}"#)), 0.0);
        let write = write.expect("cacheable");
        let mut ex = miss(&b, "Bearer a", 1.0);
        assert_eq!(b.load_shared(&mut ex, &write.value, 1.0), Step::Allow);
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        assert_eq!(
            lookup(&b, &mut ex, cred("Bearer a"), vec![None], 2.0),
            Step::Allow
        );
    }

    #[test]
    fn auth_request_forwards_present_headers_only() {
        let p = plugin();
        let mut ex = Exchange::begin(b"GET", Some(b"/"), 0);
        lookup(&p, &mut ex, cred("Bearer a"), vec![None], 0.0);
        let req = String::from_utf8(p.auth_request(&ex).expect("encodes")).expect("utf8");
        assert!(req.starts_with("GET /auth HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nauthorization: Bearer a\r\n"), "{req}");
        assert!(!req.contains("x-tenant"), "{req}");
    }

    #[test]
    fn authenticated_request_is_routed_and_recorded() {
        let c = compile(json!({
            "auth": {"url": "http://127.0.0.1:9/auth"},
            "routes": [
                {"name": "email", "paths": ["/send"], "target": "127.0.0.1:8002", "strip_prefix": true},
                {"name": "pro", "account_match": {"/plan": ["pro"]}, "upstream": "pro-backend"}
            ]
        }))
        .expect("valid");
        let p = Plugin::new(c, b"test-secret");
        let mut ex = miss(&p, "Bearer a", 0.0);
        p.auth_response(
            &mut ex,
            Ok(&resp(200, r#"{"id": "a1", "plan": "pro"}"#)),
            0.0,
        );
        let a = p.route(&mut ex, b"/send/now", None).expect("email matches");
        assert_eq!(a.name, "email");
        assert_eq!(a.path.as_deref(), Some(&b"/now"[..]));
        let a = p.route(&mut ex, b"/other", None).expect("pro matches");
        assert_eq!(a.destination, &Destination::Upstream("pro-backend".into()));
        assert_eq!(
            ex.route_parts(&p.config.routes),
            (Some("pro"), None, Some("pro-backend"))
        );
    }

    #[test]
    fn each_route_counts_its_own_decisions() {
        let c = compile(json!({
            "auth": {"url": "http://127.0.0.1:9/auth"},
            "routes": [
                {"name": "email", "paths": ["/send"], "target": "127.0.0.1:8002"},
                {"name": "other", "paths": ["/other"], "target": "127.0.0.1:8003"}
            ]
        }))
        .expect("valid");
        let p = Plugin::new(c, b"test-secret");
        let mut ex = miss(&p, "Bearer a", 0.0);
        p.auth_response(&mut ex, Ok(&resp(200, r#"{"id": "a1"}"#)), 0.0);
        for _ in 0..3 {
            assert!(p.route(&mut ex, b"/send", None).is_some());
        }
        assert!(p.route(&mut ex, b"/nowhere", None).is_none());
        let counts: Vec<(&str, u64)> = p.route_counts().collect();
        assert_eq!(counts, vec![("email", 3), ("other", 0)]);
    }

    #[test]
    fn unauthenticated_request_is_never_routed() {
        let c = compile(json!({
            "auth": {"url": "http://127.0.0.1:9/auth"},
            "routes": [{"name": "any", "target": "127.0.0.1:1"}]
        }))
        .expect("valid");
        let p = Plugin::new(c, b"test-secret");
        let mut ex = miss(&p, "Bearer a", 0.0);
        assert_eq!(p.route(&mut ex, b"/", None), None);
    }

    #[test]
    fn purge_forgets_a_key() {
        let p = plugin();
        let mut ex = miss(&p, "Bearer a", 0.0);
        p.auth_response(&mut ex, Ok(&resp(200, r#"{"id": "a1"}"#)), 0.0);
        let key = p
            .cache_key(&[Some(b"Bearer a")], &[None])
            .expect("credential");
        p.purge(&key);
        miss(&p, "Bearer a", 1.0);
    }
}
