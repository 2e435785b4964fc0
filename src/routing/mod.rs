//! Routing: the compiled route table (design §2 `routes`, `api_version`,
//! `flags_pointer`) and the per-request decision.
//!
//! [`Router::new`] compiles a config's routes once, when the config is compiled;
//! [`Router::decide`] picks the first route that matches a request, and
//! [`Router::explain`] says, for every route up to the chosen one, why it did or
//! did not match. Both run the same matcher ([`Router::decide`] only skips the
//! routes the path index proves cannot match), so they cannot disagree.
//!
//! # Matching
//! Routes are tried in config order and the first match wins; no match is
//! `None` (the request keeps Kong's configured service). A route matches when
//! every dimension it sets matches; an empty (absent) dimension matches anything.
//! The dimensions are checked in this order, and [`Router::explain`] reports the
//! first one that fails:
//!
//! 1. `paths`: one of the prefixes is a prefix of the request path (the path
//!    without its query string), compared byte for byte. Like Kong's prefix
//!    paths there is no segment boundary: `/send` also matches `/sender`. Write
//!    `/send/` to require one (it then no longer matches `/send` itself), or list
//!    both.
//! 2. `methods`: the request method is one of them, exactly (HTTP methods are
//!    case-sensitive; the config compiler uppercases the configured ones).
//! 3. `api_versions`: the request's API version (below) is one of them. A
//!    request with no API version never matches a route that lists versions.
//! 4. `accounts`: the account id is in the allowlist (a hash set).
//! 5. `account_match`: for every pointer, the account's value there is one of
//!    the allowed strings. A string is compared as is; a number as its JSON text
//!    (`42`, `4.5`); anything else (missing, `null`, bool, array, object) fails.
//! 6. `flags`: every flag is on (below).
//! 7. `percentage`: the account's bucket for this route is below the
//!    percentage (below).
//!
//! # API version
//! Resolved once per request, in this order, the first one found wins (an empty
//! string counts as not found): the `api_version.header` request header; the
//! first capture group of `api_version.path_prefix_pattern` on the path; the
//! account's value at `api_version.account_pointer` (a string, or a number as
//! its JSON text); `api_version.default`.
//!
//! # Flags
//! The account's value at `flags_pointer` is either an array of flag names
//! (a flag is on when its name is an element) or an object of name to boolean
//! (on when the value is `true`). Anything else, or nothing, means no flag is on.
//!
//! # Percentage rollout: the stable contract
//! ```text
//! bucket  = murmur3_x86_32(seed = 0, bytes = UTF-8 of route.name ":" account_id) mod 10000
//! matches = bucket < percentage * 100        (IEEE-754 double arithmetic)
//! ```
//! `murmur3_x86_32` is Austin Appleby's MurmurHash3 32-bit (`MurmurHash3_x86_32`),
//! the hash Unleash uses for its stickiness (with `% 100` where we use `% 10000`).
//! The bucket depends only on the route name and the account id, so an account
//! gets the same answer on every request, worker, node and release, and adding,
//! removing or reordering other routes never moves it. Raising a route's
//! percentage only adds accounts; renaming a route reshuffles its accounts.
//! [`bucket`] computes it; its known-answer tests pin the formula and any change
//! to them is a breaking change. `percentage = 100` matches without hashing
//! (every bucket is below 10000), `0` never matches.
//!
//! # Cost
//! Path matching does not grow with the number of routes: every configured
//! prefix sits in a byte trie whose terminal nodes hold, in config order, the
//! routes having that prefix or a shorter configured prefix of it. A decision
//! walks the path through the trie once (cost bounded by the path length), then
//! evaluates only those routes merged with the routes that have no `paths`, in
//! config order, stopping at the first match. Memory is the sum over terminal
//! nodes of their lists: linear in the number of prefixes unless many configured
//! prefixes nest inside one another.

mod index;

use crate::config::{ApiVersion, Config, Destination, Pointer, Route};
use index::PathIndex;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::fmt;

/// Number of percentage buckets: a percentage is honoured to 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// How many values an explanation lists before eliding the rest.
const EXPLAIN_MAX_LISTED: usize = 10;

/// The account's bucket for a route (0 to [`BUCKETS`] - 1): the stable
/// percentage contract, see the module docs.
pub fn bucket(route_name: &str, account_id: &str) -> u32 {
    let key = route_name
        .bytes()
        .chain(std::iter::once(b':'))
        .chain(account_id.bytes());
    murmur3_x86_32(key, 0) % BUCKETS
}

/// MurmurHash3_x86_32 over a byte stream. Written out rather than taken from
/// the `murmur3` crate, whose `Read`-based API costs 35-70 ns per bucket
/// against about 10 here; the tests hold it equal to that crate and to the
/// published vectors.
fn murmur3_x86_32(bytes: impl Iterator<Item = u8>, seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    let (mut h, mut k, mut len) = (seed, 0u32, 0u32);
    for b in bytes {
        k |= u32::from(b) << (8 * (len % 4));
        len = len.wrapping_add(1);
        if len % 4 == 0 {
            h ^= mix(k);
            h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
            k = 0;
        }
    }
    if len % 4 != 0 {
        h ^= mix(k);
    }
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A JSON pointer split into tokens once, when the router is built:
/// `serde_json::Value::pointer` unescapes and allocates every token on every
/// call (about 90 ns for `/plan`). Same semantics as `Value::pointer`.
#[derive(Debug, Clone)]
struct Lookup {
    /// The pointer as configured, for explanations.
    text: Pointer,
    /// Unescaped tokens, each with its array index when it is one.
    tokens: Vec<(String, Option<usize>)>,
}

impl Lookup {
    fn new(pointer: &Pointer) -> Self {
        // A validated pointer is "" or starts with '/': skip what precedes the first '/'.
        let tokens = if pointer.as_str().is_empty() {
            Vec::new()
        } else {
            pointer
                .as_str()
                .split('/')
                .skip(1)
                .map(|t| {
                    let key = t.replace("~1", "/").replace("~0", "~");
                    // As serde_json: no sign, no leading zero.
                    let index = if key.starts_with('+') || (key.starts_with('0') && key.len() != 1)
                    {
                        None
                    } else {
                        key.parse().ok()
                    };
                    (key, index)
                })
                .collect()
        };
        Lookup {
            text: pointer.clone(),
            tokens,
        }
    }

    fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.tokens
            .iter()
            .try_fold(value, |v, (key, index)| match v {
                Value::Object(map) => map.get(key.as_str()),
                Value::Array(list) => index.and_then(|i| list.get(i)),
                _ => None,
            })
    }

    fn as_str(&self) -> &str {
        self.text.as_str()
    }
}

/// What a routing decision is made from: the request and its account.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request method, as sent (`GET`).
    pub method: &'a str,
    /// The request path, without the query string: bytes as nginx decoded
    /// them, not necessarily UTF-8 (`/caf%E9`).
    pub path: &'a [u8],
    /// The value of the `api_version.header` request header, if sent (bytes,
    /// not necessarily UTF-8).
    pub api_version_header: Option<&'a [u8]>,
    /// The account object returned by the auth service.
    pub account: &'a Value,
    /// The account id (read at `auth.account_id_pointer`).
    pub account_id: &'a str,
}

/// Where the request's API version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// The `api_version.header` request header.
    Header,
    /// The first capture group of `api_version.path_prefix_pattern`.
    Path,
    /// The account's value at `api_version.account_pointer`.
    Account,
    /// `api_version.default`.
    Default,
}

impl VersionSource {
    /// `header`, `path`, `account` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionSource::Header => "header",
            VersionSource::Path => "path",
            VersionSource::Account => "account",
            VersionSource::Default => "default",
        }
    }
}

impl fmt::Display for VersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's API version and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVersion<'a> {
    /// The version (never empty): bytes, since a header or path may carry
    /// any; compared byte for byte with `api_versions`.
    pub value: Cow<'a, [u8]>,
    /// Its source.
    pub source: VersionSource,
}

impl ResolvedVersion<'_> {
    /// The version as text for people (invalid UTF-8 shown as U+FFFD).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The route chosen for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The route's 0-based position in `routes`.
    pub index: usize,
    /// The route's name.
    pub name: &'a str,
    /// Where the request goes.
    pub destination: &'a Destination,
    /// The route's longest prefix matching the path; `None` for a route without `paths`.
    pub prefix: Option<&'a str>,
    /// With `strip_prefix`, the upstream path: the request path without
    /// [`Decision::prefix`], always starting with `/` (`/send` on `/sendmail`
    /// gives `/mail`, on `/send` gives `/`). `None` means keep the path as is.
    pub path: Option<Cow<'a, [u8]>>,
}

/// A route dimension, named as in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// `paths`.
    Paths,
    /// `methods`.
    Methods,
    /// `api_versions`.
    ApiVersions,
    /// `accounts`.
    Accounts,
    /// `account_match`.
    AccountMatch,
    /// `flags`.
    Flags,
    /// `percentage`.
    Percentage,
}

impl Dimension {
    /// The config field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Paths => "paths",
            Dimension::Methods => "methods",
            Dimension::ApiVersions => "api_versions",
            Dimension::Accounts => "accounts",
            Dimension::AccountMatch => "account_match",
            Dimension::Flags => "flags",
            Dimension::Percentage => "percentage",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route did not match: its first failing dimension and the values involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The first dimension that failed.
    pub dimension: Dimension,
    /// The values involved, for people.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dimension, self.detail)
    }
}

/// One route's verdict in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// The route's 0-based position in `routes`.
    pub index: usize,
    /// The route's name.
    pub name: &'a str,
    /// `None` when the route matched, else why not.
    pub mismatch: Option<Mismatch>,
}

/// Why a request got its decision: see [`Router::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation<'a> {
    /// The request's API version, if any.
    pub api_version: Option<ResolvedVersion<'a>>,
    /// Every route up to and including the chosen one (all routes when none matched), in order.
    pub steps: Vec<Step<'a>>,
    /// The decision, exactly as [`Router::decide`] returns it.
    pub decision: Option<Decision<'a>>,
}

/// The compiled route table of one config. Build once per config, share
/// across requests.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Compiled>,
    index: PathIndex,
    api_version: ApiVersion,
    /// `api_version.account_pointer`.
    account_version: Lookup,
    /// `flags_pointer`.
    flags: Lookup,
}

/// A route in the form the matcher wants.
#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    paths: Vec<String>,
    methods: Vec<String>,
    api_versions: Vec<String>,
    accounts: HashSet<String>,
    account_match: Vec<(Lookup, HashSet<String>)>,
    flags: Vec<String>,
    percentage: f64,
    /// `percentage * 100`: a bucket below it matches.
    limit: f64,
    destination: Destination,
    strip_prefix: bool,
}

impl Compiled {
    fn new(r: &Route) -> Self {
        Compiled {
            name: r.name.clone(),
            paths: r.paths.clone(),
            methods: r.methods.clone(),
            api_versions: r.api_versions.clone(),
            accounts: r.accounts.iter().cloned().collect(),
            account_match: r
                .account_match
                .iter()
                .map(|(p, allowed)| (Lookup::new(p), allowed.iter().cloned().collect()))
                .collect(),
            flags: r.flags.clone(),
            percentage: r.percentage,
            limit: r.percentage * 100.0,
            destination: r.destination.clone(),
            strip_prefix: r.strip_prefix,
        }
    }
}

/// The first failing dimension, cheap to produce on the hot path;
/// [`Router::explain`] turns it into a [`Mismatch`] with the values.
#[derive(Debug, Clone, Copy)]
enum Miss {
    Paths,
    Methods,
    ApiVersions,
    Accounts,
    /// Index into the route's `account_match`.
    AccountMatch(usize),
    /// Index into the route's `flags`.
    Flags(usize),
    /// The account's bucket.
    Percentage(u32),
}

/// Per-request values computed at most once, and only when a route needs them.
struct Eval<'a> {
    req: Request<'a>,
    router: &'a Router,
    version: OnceCell<Option<ResolvedVersion<'a>>>,
    flags: OnceCell<Option<&'a Value>>,
}

impl<'a> Eval<'a> {
    fn version(&self) -> Option<&ResolvedVersion<'a>> {
        self.version
            .get_or_init(|| resolve_version(self.router, &self.req))
            .as_ref()
    }

    fn flags(&self) -> Option<&'a Value> {
        *self
            .flags
            .get_or_init(|| self.router.flags.get(self.req.account))
    }
}

fn nonempty(s: &[u8]) -> Option<&[u8]> {
    (!s.is_empty()).then_some(s)
}

/// A string as is, a number as its JSON text; nothing else has a text.
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

fn resolve_version<'a>(router: &'a Router, req: &Request<'a>) -> Option<ResolvedVersion<'a>> {
    let cfg = &router.api_version;
    let found = |value: Cow<'a, [u8]>, source| {
        (!value.is_empty()).then_some(ResolvedVersion { value, source })
    };
    if let Some(v) = req.api_version_header.and_then(nonempty) {
        return found(Cow::Borrowed(v), VersionSource::Header);
    }
    let from_path = cfg
        .path_prefix_pattern
        .as_ref()
        .and_then(|re| re.captures(req.path))
        .and_then(|c| c.get(1))
        .and_then(|m| nonempty(m.as_bytes()));
    if let Some(v) = from_path {
        return found(Cow::Borrowed(v), VersionSource::Path);
    }
    let from_account = router
        .account_version
        .get(req.account)
        .and_then(scalar_text)
        .and_then(|t| {
            let bytes = match t {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            };
            found(bytes, VersionSource::Account)
        });
    if from_account.is_some() {
        return from_account;
    }
    cfg.default
        .as_deref()
        .and_then(|d| found(Cow::Borrowed(d.as_bytes()), VersionSource::Default))
}

fn flag_on(flags: Option<&Value>, name: &str) -> bool {
    match flags {
        Some(Value::Array(names)) => names.iter().any(|v| v.as_str() == Some(name)),
        Some(Value::Object(map)) => matches!(map.get(name), Some(Value::Bool(true))),
        _ => false,
    }
}

/// The path with `prefix` (a prefix of it) removed, starting with `/`.
fn strip<'a>(path: &'a [u8], prefix: &str) -> Cow<'a, [u8]> {
    let cut = prefix.len();
    match path.get(cut..) {
        Some(rest) if rest.starts_with(b"/") => Cow::Borrowed(rest),
        Some([]) | None => Cow::Borrowed(b"/"),
        // The prefix's own trailing '/' starts the rest: no allocation.
        Some(rest) if prefix.ends_with('/') => Cow::Borrowed(path.get(cut - 1..).unwrap_or(rest)),
        Some(rest) => {
            let mut owned = Vec::with_capacity(rest.len() + 1);
            owned.push(b'/');
            owned.extend_from_slice(rest);
            Cow::Owned(owned)
        }
    }
}

impl Router {
    /// Compiles the routes of a validated config.
    pub fn new(config: &Config) -> Self {
        Router::from_parts(&config.routes, &config.api_version, &config.flags_pointer)
    }

    /// Compiles `routes` (in config order) with the config's `api_version`
    /// and `flags_pointer`.
    pub fn from_parts(routes: &[Route], api_version: &ApiVersion, flags_pointer: &Pointer) -> Self {
        let routes: Vec<Compiled> = routes.iter().map(Compiled::new).collect();
        Router {
            index: PathIndex::build(&routes),
            routes,
            api_version: api_version.clone(),
            account_version: Lookup::new(&api_version.account_pointer),
            flags: Lookup::new(flags_pointer),
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes (every decision is `None`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route matching `req`, or `None` (keep Kong's configured service).
    pub fn decide<'a>(&'a self, req: &Request<'a>) -> Option<Decision<'a>> {
        let ev = self.eval(req);
        self.first_match(&ev, self.index.candidates(req.path), |_, _| {})
    }

    /// The decision together with why: every route up to and including the
    /// chosen one (all of them when none matched) with its first failing
    /// dimension, and the resolved API version with its source.
    ///
    /// Not for the request path: it evaluates every route and formats text.
    pub fn explain<'a>(&'a self, req: &Request<'a>) -> Explanation<'a> {
        let ev = self.eval(req);
        let mut steps = Vec::new();
        let decision = self.first_match(&ev, 0..self.routes.len(), |i, miss| {
            if let Some(r) = self.routes.get(i) {
                steps.push(Step {
                    index: i,
                    name: &r.name,
                    mismatch: Some(describe(r, miss, &ev)),
                });
            }
        });
        if let Some(d) = &decision {
            steps.push(Step {
                index: d.index,
                name: d.name,
                mismatch: None,
            });
        }
        Explanation {
            api_version: ev.version().cloned(),
            steps,
            decision,
        }
    }

    fn eval<'a>(&'a self, req: &Request<'a>) -> Eval<'a> {
        Eval {
            req: *req,
            router: self,
            version: OnceCell::new(),
            flags: OnceCell::new(),
        }
    }

    /// The one matching loop shared by `decide` and `explain`: the first of
    /// `candidates` (ascending route indices) that matches.
    fn first_match<'a>(
        &'a self,
        ev: &Eval<'a>,
        candidates: impl Iterator<Item = usize>,
        mut on_miss: impl FnMut(usize, Miss),
    ) -> Option<Decision<'a>> {
        for i in candidates {
            let Some(r) = self.routes.get(i) else {
                continue;
            };
            match check(r, ev) {
                Ok(prefix) => {
                    return Some(Decision {
                        index: i,
                        name: &r.name,
                        destination: &r.destination,
                        prefix,
                        path: match prefix {
                            Some(p) if r.strip_prefix => Some(strip(ev.req.path, p)),
                            _ => None,
                        },
                    })
                }
                Err(miss) => on_miss(i, miss),
            }
        }
        None
    }
}

/// Whether route `r` matches: its longest matching prefix (`None` when it has
/// no `paths`), or its first failing dimension.
fn check<'a>(r: &'a Compiled, ev: &Eval<'a>) -> Result<Option<&'a str>, Miss> {
    let req = &ev.req;
    let prefix = if r.paths.is_empty() {
        None
    } else {
        let longest = r
            .paths
            .iter()
            .filter(|p| req.path.starts_with(p.as_bytes()))
            .max_by_key(|p| p.len());
        Some(longest.ok_or(Miss::Paths)?.as_str())
    };
    if !r.methods.is_empty() && !r.methods.iter().any(|m| m == req.method) {
        return Err(Miss::Methods);
    }
    if !r.api_versions.is_empty() {
        let ok = ev
            .version()
            .is_some_and(|v| r.api_versions.iter().any(|a| a.as_bytes() == &*v.value));
        if !ok {
            return Err(Miss::ApiVersions);
        }
    }
    if !r.accounts.is_empty() && !r.accounts.contains(req.account_id) {
        return Err(Miss::Accounts);
    }
    for (i, (lookup, allowed)) in r.account_match.iter().enumerate() {
        let ok = lookup
            .get(req.account)
            .and_then(scalar_text)
            .is_some_and(|t| allowed.contains(t.as_ref()));
        if !ok {
            return Err(Miss::AccountMatch(i));
        }
    }
    if !r.flags.is_empty() {
        let flags = ev.flags();
        if let Some(i) = r.flags.iter().position(|f| !flag_on(flags, f)) {
            return Err(Miss::Flags(i));
        }
    }
    if r.limit < f64::from(BUCKETS) {
        let b = bucket(&r.name, req.account_id);
        if f64::from(b) >= r.limit {
            return Err(Miss::Percentage(b));
        }
    }
    Ok(prefix)
}

/// `"a", "b", "c"`, eliding past [`EXPLAIN_MAX_LISTED`] values.
fn listed<'s>(values: impl IntoIterator<Item = &'s str>) -> String {
    let values: Vec<&str> = values.into_iter().collect();
    let mut out = values
        .iter()
        .take(EXPLAIN_MAX_LISTED)
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > EXPLAIN_MAX_LISTED {
        out.push_str(&format!(" and {} more", values.len() - EXPLAIN_MAX_LISTED));
    }
    out
}

fn sorted(set: &HashSet<String>) -> Vec<&str> {
    let mut v: Vec<&str> = set.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The values behind a [`Miss`], for [`Router::explain`].
fn describe(r: &Compiled, miss: Miss, ev: &Eval<'_>) -> Mismatch {
    let req = &ev.req;
    let (dimension, detail) = match miss {
        Miss::Paths => (
            Dimension::Paths,
            format!(
                "{:?} starts with none of {}",
                String::from_utf8_lossy(req.path),
                listed(r.paths.iter().map(String::as_str))
            ),
        ),
        Miss::Methods => (
            Dimension::Methods,
            format!(
                "{:?} is not one of {}",
                req.method,
                listed(r.methods.iter().map(String::as_str))
            ),
        ),
        Miss::ApiVersions => {
            let wanted = listed(r.api_versions.iter().map(String::as_str));
            let detail = match ev.version() {
                Some(v) => format!("{:?} (from {}) is not one of {wanted}", v.text(), v.source),
                None => format!(
                    "no API version (no header, path match, account field or default); \
                     the route needs one of {wanted}"
                ),
            };
            (Dimension::ApiVersions, detail)
        }
        Miss::Accounts => (
            Dimension::Accounts,
            format!(
                "account {:?} is not among the {} allowed",
                req.account_id,
                r.accounts.len()
            ),
        ),
        Miss::AccountMatch(i) => {
            let detail = match r.account_match.get(i) {
                Some((lookup, allowed)) => {
                    let allowed = listed(sorted(allowed));
                    let p = lookup.as_str();
                    match lookup.get(req.account) {
                        None => format!("the account has no {p:?}; allowed: {allowed}"),
                        Some(v) => match scalar_text(v) {
                            Some(t) => format!("{p:?} is {t:?}, not one of {allowed}"),
                            None => format!(
                                "{p:?} is {}, not a string or number; allowed: {allowed}",
                                kind(v)
                            ),
                        },
                    }
                }
                None => String::new(),
            };
            (Dimension::AccountMatch, detail)
        }
        Miss::Flags(i) => {
            let flag = r.flags.get(i).map(String::as_str).unwrap_or_default();
            let p = ev.router.flags.as_str();
            let detail = match ev.flags() {
                None => format!("flag {flag:?} is off: the account has no {p:?}"),
                Some(v @ (Value::Array(_) | Value::Object(_))) => {
                    let mut shown = v.to_string();
                    if shown.len() > 200 {
                        let cut = (0..=200).rev().find(|&n| shown.is_char_boundary(n));
                        shown.truncate(cut.unwrap_or(0));
                        shown.push_str("...");
                    }
                    format!("flag {flag:?} is off in {p:?} = {shown}")
                }
                Some(v) => format!(
                    "flag {flag:?} is off: {p:?} is {}, not an array or object",
                    kind(v)
                ),
            };
            (Dimension::Flags, detail)
        }
        Miss::Percentage(b) => (
            Dimension::Percentage,
            format!(
                "bucket {b} of {:?} is not below {} ({}%)",
                format!("{}:{}", r.name, req.account_id),
                r.limit,
                r.percentage
            ),
        ),
    };
    Mismatch { dimension, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, HostPort};
    use proptest::prelude::*;
    use serde_json::json;

    fn router_with(routes: Value, extra: Value) -> Router {
        let mut c = json!({"auth": {"url": "http://127.0.0.1:9000/auth"}, "routes": routes});
        if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
            c.extend(extra);
        }
        Router::new(&config::compile(c).expect("valid config"))
    }

    fn router(routes: Value) -> Router {
        router_with(routes, json!({}))
    }

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        header: Option<&'a str>,
        account: &'a Value,
    ) -> Request<'a> {
        Request {
            method,
            path: path.as_bytes(),
            api_version_header: header.map(str::as_bytes),
            account,
            account_id: account["id"].as_str().unwrap_or(""),
        }
    }

    /// The account most single-dimension cases start from.
    fn base_account() -> Value {
        json!({"id": "acc_1", "plan": "pro", "flags": ["beta"], "api_version": "v3"})
    }

    /// Merges `changes` into the base account; a `null` removes the field.
    fn account(changes: Value) -> Value {
        let mut a = base_account();
        if let (Some(obj), Value::Object(changes)) = (a.as_object_mut(), changes) {
            for (k, v) in changes {
                if v.is_null() {
                    obj.remove(&k);
                } else {
                    obj.insert(k, v);
                }
            }
        }
        a
    }

    /// Bucket of `r:acc_1` (the single-route cases), pinned below.
    const R_ACC_1: u32 = 4799;

    /// (what, route fields, method, path, header, account changes, config extras, matches)
    type DimensionCase = (
        &'static str,
        Value,
        &'static str,
        &'static str,
        Option<&'static str>,
        Value,
        Value,
        bool,
    );

    #[rustfmt::skip]
    fn dimension_cases() -> Vec<DimensionCase> {
        let pattern = json!({"api_version": {"path_prefix_pattern": "^/(v\\d+)/"}});
        let all = json!({"paths": ["/send"], "methods": ["POST"], "api_versions": ["v3"], "accounts": ["acc_1"],
                         "account_match": {"/plan": ["pro"]}, "flags": ["beta"], "percentage": 48});
        let mut all_but_pct = all.clone();
        all_but_pct["percentage"] = json!(47.99);
        let none = || json!({});
        vec![
            // paths
            ("no paths match any path", json!({}), "GET", "/anything", None, none(), none(), true),
            ("exact prefix", json!({"paths": ["/send"]}), "GET", "/send", None, none(), none(), true),
            ("prefix of a longer path", json!({"paths": ["/send"]}), "GET", "/send/x", None, none(), none(), true),
            ("no segment boundary, like Kong", json!({"paths": ["/send"]}), "GET", "/sendmail", None, none(), none(), true),
            ("shorter path", json!({"paths": ["/send"]}), "GET", "/sen", None, none(), none(), false),
            ("prefix elsewhere in the path", json!({"paths": ["/send"]}), "GET", "/x/send", None, none(), none(), false),
            ("trailing slash requires it", json!({"paths": ["/send/"]}), "GET", "/send", None, none(), none(), false),
            ("any of several prefixes", json!({"paths": ["/a", "/b"]}), "GET", "/b/c", None, none(), none(), true),
            ("prefix is case-sensitive", json!({"paths": ["/send"]}), "GET", "/SEND", None, none(), none(), false),
            ("non-ASCII prefix", json!({"paths": ["/caf\u{e9}"]}), "GET", "/caf\u{e9}/x", None, none(), none(), true),
            // methods
            ("method listed", json!({"methods": ["POST", "PUT"]}), "PUT", "/", None, none(), none(), true),
            ("method not listed", json!({"methods": ["POST"]}), "GET", "/", None, none(), none(), false),
            ("request method is case-sensitive", json!({"methods": ["POST"]}), "post", "/", None, none(), none(), false),
            ("configured methods are uppercased", json!({"methods": ["post"]}), "POST", "/", None, none(), none(), true),
            // api_versions
            ("version from header", json!({"api_versions": ["v4"]}), "GET", "/", Some("v4"), none(), none(), true),
            ("header beats account", json!({"api_versions": ["v3"]}), "GET", "/", Some("v2"), none(), none(), false),
            ("empty header falls through to account", json!({"api_versions": ["v3"]}), "GET", "/", Some(""), none(), none(), true),
            ("version from account", json!({"api_versions": ["v2", "v3"]}), "GET", "/", None, none(), none(), true),
            ("account version as a number", json!({"api_versions": ["3"]}), "GET", "/", None, json!({"api_version": 3}), none(), true),
            ("account version of another type", json!({"api_versions": ["true"]}), "GET", "/", None, json!({"api_version": true}), none(), false),
            ("no version at all", json!({"api_versions": ["v3"]}), "GET", "/", None, json!({"api_version": null}), none(), false),
            ("version from default", json!({"api_versions": ["v9"]}), "GET", "/", None, json!({"api_version": null}), json!({"api_version": {"default": "v9"}}), true),
            ("account beats default", json!({"api_versions": ["v9"]}), "GET", "/", None, none(), json!({"api_version": {"default": "v9"}}), false),
            ("version from path", json!({"api_versions": ["v7"]}), "GET", "/v7/send", None, none(), pattern.clone(), true),
            ("header beats path", json!({"api_versions": ["v7"]}), "GET", "/v7/send", Some("v1"), none(), pattern.clone(), false),
            ("path beats account", json!({"api_versions": ["v3"]}), "GET", "/v7/send", None, none(), pattern.clone(), false),
            ("unmatched pattern falls through", json!({"api_versions": ["v3"]}), "GET", "/send", None, none(), pattern, true),
            ("custom account pointer", json!({"api_versions": ["v5"]}), "GET", "/", None, json!({"meta": {"v": "v5"}}), json!({"api_version": {"account_pointer": "/meta/v"}}), true),
            // accounts
            ("account allowed", json!({"accounts": ["acc_0", "acc_1"]}), "GET", "/", None, none(), none(), true),
            ("account not allowed", json!({"accounts": ["acc_0"]}), "GET", "/", None, none(), none(), false),
            // account_match
            ("account field allowed", json!({"account_match": {"/plan": ["pro", "enterprise"]}}), "GET", "/", None, none(), none(), true),
            ("account field not allowed", json!({"account_match": {"/plan": ["enterprise"]}}), "GET", "/", None, none(), none(), false),
            ("account field missing", json!({"account_match": {"/tier": ["gold"]}}), "GET", "/", None, none(), none(), false),
            ("account field as a number", json!({"account_match": {"/seats": ["7"]}}), "GET", "/", None, json!({"seats": 7}), none(), true),
            ("account field of another type", json!({"account_match": {"/trial": ["true"]}}), "GET", "/", None, json!({"trial": true}), none(), false),
            ("nested account field", json!({"account_match": {"/org/region": ["eu"]}}), "GET", "/", None, json!({"org": {"region": "eu"}}), none(), true),
            ("array element of the account", json!({"account_match": {"/regions/1": ["us"]}}), "GET", "/", None, json!({"regions": ["eu", "us"]}), none(), true),
            ("escaped pointer token", json!({"account_match": {"/a~1b": ["x"]}}), "GET", "/", None, json!({"a/b": "x"}), none(), true),
            ("every account field must match", json!({"account_match": {"/plan": ["pro"], "/org/region": ["us"]}}), "GET", "/", None, json!({"org": {"region": "eu"}}), none(), false),
            // flags
            ("flag on in an array", json!({"flags": ["beta"]}), "GET", "/", None, none(), none(), true),
            ("flag absent from the array", json!({"flags": ["gamma"]}), "GET", "/", None, none(), none(), false),
            ("every flag must be on", json!({"flags": ["beta", "gamma"]}), "GET", "/", None, none(), none(), false),
            ("flag on in an object", json!({"flags": ["beta"]}), "GET", "/", None, json!({"flags": {"beta": true}}), none(), true),
            ("flag false in an object", json!({"flags": ["beta"]}), "GET", "/", None, json!({"flags": {"beta": false}}), none(), false),
            ("flag truthy but not true", json!({"flags": ["beta"]}), "GET", "/", None, json!({"flags": {"beta": "true"}}), none(), false),
            ("no flags field", json!({"flags": ["beta"]}), "GET", "/", None, json!({"flags": null}), none(), false),
            ("flags field of another type", json!({"flags": ["beta"]}), "GET", "/", None, json!({"flags": "beta"}), none(), false),
            ("custom flags pointer", json!({"flags": ["x"]}), "GET", "/", None, json!({"features": {"x": true}}), json!({"flags_pointer": "/features"}), true),
            // percentage (bucket of "r:acc_1" is R_ACC_1 = 4799)
            ("bucket below the percentage", json!({"percentage": 48}), "GET", "/", None, none(), none(), true),
            ("bucket equal to the limit", json!({"percentage": 47.99}), "GET", "/", None, none(), none(), false),
            ("percentage 0", json!({"percentage": 0}), "GET", "/", None, none(), none(), false),
            ("percentage 100 with no account id", json!({"percentage": 100}), "GET", "/", None, json!({"id": ""}), none(), true),
            // combinations
            ("all dimensions match", all.clone(), "POST", "/send/1", None, none(), none(), true),
            ("all but the method", all.clone(), "GET", "/send/1", None, none(), none(), false),
            ("all but the version", all.clone(), "POST", "/send/1", Some("v2"), none(), none(), false),
            ("all but the allowlist", all.clone(), "POST", "/send/1", None, json!({"id": "acc_2"}), none(), false),
            ("all but the account field", all.clone(), "POST", "/send/1", None, json!({"plan": "free"}), none(), false),
            ("all but the flag", all.clone(), "POST", "/send/1", None, json!({"flags": {}}), none(), false),
            ("all but the path", all, "POST", "/mail", None, none(), none(), false),
            ("all but the percentage", all_but_pct, "POST", "/send/1", None, none(), none(), false),
        ]
    }

    #[test]
    fn each_dimension_matches_or_not_as_configured() {
        assert_eq!(bucket("r", "acc_1"), R_ACC_1);
        for (what, mut route, method, path, header, changes, extra, want) in dimension_cases() {
            route["name"] = json!("r");
            route["target"] = json!("svc:80");
            let r = router_with(json!([route]), extra);
            let acc = account(changes);
            let req = request(method, path, header, &acc);
            let got = r.decide(&req);
            assert_eq!(got.is_some(), want, "{what}");
            // explain runs the same matcher over every route.
            let ex = r.explain(&req);
            assert_eq!(ex.decision, got, "{what}: explain disagrees");
            assert_eq!(ex.steps.len(), 1, "{what}");
            assert_eq!(ex.steps[0].mismatch.is_none(), want, "{what}");
        }
    }

    /// The motivating deployment of the routing issue.
    fn deployment() -> Router {
        router_with(
            json!([
                {"name": "legacy-old-versions", "api_versions": ["v1", "v2"], "upstream": "legacy"},
                {"name": "email", "paths": ["/send"], "methods": ["POST"], "target": "email:8080", "strip_prefix": true},
                {"name": "calendar-allowlist", "paths": ["/events", "/calendars"], "accounts": ["acc_vip"], "target": "calendar-v2:8080"},
                {"name": "calendar-v2", "paths": ["/events", "/calendars"], "flags": ["new-calendar"], "percentage": 25, "target": "calendar-v2:8080"},
                {"name": "calendar", "paths": ["/events", "/calendars"], "target": "calendar:8080"},
                {"name": "pro-reports", "paths": ["/reports"], "account_match": {"/plan": ["pro", "enterprise"]}, "upstream": "reports"},
            ]),
            json!({"api_version": {"path_prefix_pattern": "^/(v\\d+)/", "default": "v3"}}),
        )
    }

    /// (what, method, path, header, account, route, upstream path)
    type DeploymentCase = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Value,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[rustfmt::skip]
    fn deployment_cases() -> Vec<DeploymentCase> {
        // calendar-v2 buckets (25% = below 2500): acc_1 4345, acc_2 519, acc_3 26.
        let on = json!(["new-calendar"]);
        vec![
            ("email, prefix stripped to /", "POST", "/send", None, json!({"id": "acc_1"}), Some("email"), Some("/")),
            ("email, rest kept", "POST", "/send/batch", None, json!({"id": "acc_1"}), Some("email"), Some("/batch")),
            ("email takes POST only", "GET", "/send", None, json!({"id": "acc_1"}), None, None),
            ("old version header goes to legacy", "POST", "/send", Some("v2"), json!({"id": "acc_1"}), Some("legacy-old-versions"), None),
            ("old account version goes to legacy", "POST", "/send", None, json!({"id": "acc_1", "api_version": "v1"}), Some("legacy-old-versions"), None),
            ("old path version goes to legacy", "GET", "/v2/events", None, json!({"id": "acc_1"}), Some("legacy-old-versions"), None),
            ("header beats an old account version", "POST", "/send", Some("v3"), json!({"id": "acc_1", "api_version": "v1"}), Some("email"), Some("/")),
            ("allowlisted account gets the new calendar", "GET", "/events", None, json!({"id": "acc_vip"}), Some("calendar-allowlist"), None),
            ("flagged account in the 25%", "GET", "/events/1", None, json!({"id": "acc_3", "flags": on}), Some("calendar-v2"), None),
            ("flagged account outside the 25%", "GET", "/events/1", None, json!({"id": "acc_1", "flags": on}), Some("calendar"), None),
            ("unflagged account in the 25%", "GET", "/events", None, json!({"id": "acc_3"}), Some("calendar"), None),
            ("object flags, second prefix", "GET", "/calendars/x", None, json!({"id": "acc_2", "flags": {"new-calendar": true}}), Some("calendar-v2"), None),
            ("pro plan gets reports", "GET", "/reports/q", None, json!({"id": "acc_1", "plan": "pro"}), Some("pro-reports"), None),
            ("free plan gets Kong's service", "GET", "/reports/q", None, json!({"id": "acc_1", "plan": "free"}), None, None),
            ("unknown path gets Kong's service", "GET", "/other", None, json!({"id": "acc_1"}), None, None),
        ]
    }

    #[test]
    fn deployment_routes_each_request_to_its_service() {
        let r = deployment();
        for (what, method, path, header, acc, want, want_path) in deployment_cases() {
            let req = request(method, path, header, &acc);
            let got = r.decide(&req);
            assert_eq!(got.as_ref().map(|d| d.name), want, "{what}");
            let got_path = got.as_ref().and_then(|d| d.path.as_deref());
            assert_eq!(got_path, want_path.map(str::as_bytes), "{what}");
            assert_eq!(r.explain(&req).decision, got, "{what}: explain disagrees");
        }
    }

    #[test]
    fn decision_carries_index_destination_and_prefix() {
        let r = deployment();
        let acc = json!({"id": "acc_1"});
        let d = r
            .decide(&request("POST", "/send/x", None, &acc))
            .expect("email");
        assert_eq!(d.index, 1);
        let email = Destination::Target(HostPort {
            host: "email".into(),
            port: 8080,
        });
        assert_eq!(d.destination, &email);
        assert_eq!(d.prefix, Some("/send"));
        let d = r
            .decide(&request("GET", "/", Some("v1"), &acc))
            .expect("legacy");
        assert_eq!(d.destination, &Destination::Upstream("legacy".into()));
        assert_eq!(d.prefix, None);
    }

    #[test]
    fn strip_prefix_removes_the_longest_matching_prefix() {
        let r = router(json!([
            {"name": "api", "paths": ["/api", "/api/v2", "/api/v2/"], "strip_prefix": true, "target": "a:1"},
            {"name": "any", "strip_prefix": true, "target": "b:1"},
        ]));
        let acc = base_account();
        let strip = |path| {
            let d = r.decide(&request("GET", path, None, &acc)).expect("match");
            d.path.map(|p| String::from_utf8_lossy(&p).into_owned())
        };
        assert_eq!(strip("/api/v2/users").as_deref(), Some("/users"));
        assert_eq!(strip("/api/v2").as_deref(), Some("/"));
        assert_eq!(strip("/api/users").as_deref(), Some("/users"));
        assert_eq!(strip("/apix").as_deref(), Some("/x"));
        assert_eq!(strip("/api").as_deref(), Some("/"));
        // Nothing to strip on a route without paths.
        assert_eq!(strip("/other"), None);
    }

    #[test]
    fn paths_and_versions_that_are_not_utf8_route_on_their_bytes() {
        let r = router_with(
            json!([
                {"name": "v7", "api_versions": ["v7"], "target": "v:1"},
                {"name": "cafe", "paths": ["/caf"], "strip_prefix": true, "target": "c:1"},
            ]),
            json!({"api_version": {"path_prefix_pattern": "^/(v\\d+)/"}}),
        );
        let acc = json!({"id": "acc_1"});
        let req = |path: &'static [u8], header: Option<&'static [u8]>| Request {
            method: "GET",
            path,
            api_version_header: header,
            account: &acc,
            account_id: "acc_1",
        };
        // A raw 0xE9 after the prefix: matched, and stripped byte for byte.
        let d = r.decide(&req(b"/caf\xE9/x", None)).expect("cafe");
        assert_eq!((d.name, d.path.as_deref()), ("cafe", Some(&b"/\xE9/x"[..])));
        // A non-UTF-8 version header is a version, equal to no configured one.
        let d = r.decide(&req(b"/caf", Some(b"v7\xFF"))).expect("cafe");
        assert_eq!(d.name, "cafe");
        assert!(r.decide(&req(b"/x", Some(b"\xFF"))).is_none());
        // The path pattern runs on bytes.
        let d = r.decide(&req(b"/v7/\xE9", None)).expect("v7");
        assert_eq!(d.name, "v7");
        let ex = r.explain(&req(b"/\xFF", Some(b"v\xFF")));
        assert_eq!(
            ex.api_version.map(|v| v.text().into_owned()),
            Some("v\u{FFFD}".into())
        );
    }

    #[test]
    fn first_match_wins_in_config_order_across_prefixes() {
        let r = router(json!([
            {"name": "ab-post", "paths": ["/a/b"], "methods": ["POST"], "target": "t:1"},
            {"name": "any-get", "methods": ["GET"], "target": "t:2"},
            {"name": "a", "paths": ["/a"], "target": "t:3"},
            {"name": "ab", "paths": ["/a/b", "/a"], "target": "t:4"},
            {"name": "any", "target": "t:5"},
        ]));
        let acc = base_account();
        let pick = |method, path| r.decide(&request(method, path, None, &acc)).map(|d| d.name);
        assert_eq!(pick("POST", "/a/b/c"), Some("ab-post"));
        assert_eq!(pick("GET", "/a/b/c"), Some("any-get"));
        assert_eq!(pick("PUT", "/a/b/c"), Some("a"));
        assert_eq!(pick("PUT", "/b"), Some("any"));
    }

    #[test]
    fn empty_router_never_matches() {
        let r = router(json!([]));
        assert!(r.is_empty());
        let acc = base_account();
        assert_eq!(r.decide(&request("GET", "/", None, &acc)), None);
        let ex = r.explain(&request("GET", "/", None, &acc));
        assert!(ex.steps.is_empty());
        assert_eq!(ex.decision, None);
    }

    #[test]
    fn explain_names_the_first_failing_dimension_with_its_values() {
        let r = router_with(
            json!([
                {"name": "p", "paths": ["/send", "/mail"], "target": "t:1"},
                {"name": "m", "methods": ["POST"], "target": "t:1"},
                {"name": "v", "api_versions": ["v1"], "target": "t:1"},
                {"name": "a", "accounts": ["acc_0", "acc_9"], "target": "t:1"},
                {"name": "am", "account_match": {"/plan": ["gold", "silver"]}, "target": "t:1"},
                {"name": "am2", "account_match": {"/org": ["x"]}, "target": "t:1"},
                {"name": "f", "flags": ["beta", "gamma"], "target": "t:1"},
                {"name": "pct", "percentage": 10, "target": "t:1"},
                {"name": "ok", "paths": ["/"], "target": "t:2"},
                {"name": "never-evaluated", "target": "t:3"},
            ]),
            json!({"api_version": {"default": "v2"}}),
        );
        let acc = json!({"id": "acc_1", "plan": "pro", "org": {"a": 1}, "flags": ["beta"]});
        let ex = r.explain(&request("GET", "/x", None, &acc));
        let version = ResolvedVersion {
            value: Cow::Borrowed(b"v2"),
            source: VersionSource::Default,
        };
        assert_eq!(ex.api_version, Some(version));
        let reasons: Vec<String> = ex
            .steps
            .iter()
            .map(|s| match &s.mismatch {
                Some(m) => format!("{}: {m}", s.name),
                None => format!("{}: matched", s.name),
            })
            .collect();
        // bucket("pct", "acc_1") == 9179, pinned below.
        assert_eq!(
            reasons,
            vec![
                r#"p: paths: "/x" starts with none of "/send", "/mail""#,
                r#"m: methods: "GET" is not one of "POST""#,
                r#"v: api_versions: "v2" (from default) is not one of "v1""#,
                r#"a: accounts: account "acc_1" is not among the 2 allowed"#,
                r#"am: account_match: "/plan" is "pro", not one of "gold", "silver""#,
                r#"am2: account_match: "/org" is an object, not a string or number; allowed: "x""#,
                r#"f: flags: flag "gamma" is off in "/flags" = ["beta"]"#,
                r#"pct: percentage: bucket 9179 of "pct:acc_1" is not below 1000 (10%)"#,
                "ok: matched",
            ]
        );
        assert_eq!(ex.decision.map(|d| d.index), Some(8));
    }

    #[test]
    fn explain_without_a_match_lists_every_route() {
        let r = deployment();
        let acc = json!({"id": "acc_1", "api_version": "v3"});
        let ex = r.explain(&request("GET", "/other", None, &acc));
        assert_eq!(ex.decision, None);
        assert_eq!(ex.steps.len(), r.len());
        assert!(ex.steps.iter().all(|s| s.mismatch.is_some()));
        let first = ex.steps[0].mismatch.as_ref().map(|m| m.dimension);
        assert_eq!(first, Some(Dimension::ApiVersions));
        let version = ex.api_version.map(|v| (v.value.into_owned(), v.source));
        assert_eq!(version, Some((b"v3".to_vec(), VersionSource::Account)));
    }

    #[test]
    fn explain_reports_a_missing_version_and_missing_fields() {
        let r = router(json!([
            {"name": "v", "api_versions": ["v1"], "target": "t:1"},
            {"name": "am", "account_match": {"/plan": ["pro"]}, "target": "t:1"},
            {"name": "f", "flags": ["beta"], "target": "t:1"},
            {"name": "f2", "flags": ["beta"], "target": "t:1"},
        ]));
        let acc = json!({"id": "acc_1"});
        let ex = r.explain(&request("GET", "/", None, &acc));
        assert_eq!(ex.api_version, None);
        let details: Vec<String> = ex
            .steps
            .iter()
            .filter_map(|s| s.mismatch.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(
            details,
            vec![
                r#"api_versions: no API version (no header, path match, account field or default); the route needs one of "v1""#,
                r#"account_match: the account has no "/plan"; allowed: "pro""#,
                r#"flags: flag "beta" is off: the account has no "/flags""#,
                r#"flags: flag "beta" is off: the account has no "/flags""#,
            ]
        );
    }

    /// MurmurHash3_x86_32 written again from the reference algorithm, over a
    /// slice: a second implementation for the one above to agree with.
    fn reference_murmur3(data: &[u8], seed: u32) -> u32 {
        const C1: u32 = 0xcc9e_2d51;
        const C2: u32 = 0x1b87_3593;
        let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        let mut h = seed;
        let blocks = data.chunks_exact(4);
        let tail = blocks.remainder();
        for b in blocks {
            h ^= mix(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        }
        if !tail.is_empty() {
            let k = tail
                .iter()
                .enumerate()
                .fold(0u32, |k, (i, &b)| k | (u32::from(b) << (8 * i)));
            h ^= mix(k);
        }
        h ^= data.len() as u32;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }

    fn crate_murmur3(data: &[u8], seed: u32) -> u32 {
        let mut bytes = data;
        murmur3::murmur3_32(&mut bytes, seed).expect("in memory")
    }

    #[test]
    fn hash_is_standard_murmur3_x86_32_seed_0() {
        // Published MurmurHash3_x86_32 vectors, seed 0.
        for (input, want) in [
            ("", 0),
            ("hello", 0x248b_fa47),
            ("hello, world", 0x149b_bb7f),
            ("The quick brown fox jumps over the lazy dog", 0x2e4f_f723),
            ("My hovercraft is full of eels.", 2_953_494_853),
        ] {
            assert_eq!(murmur3_x86_32(input.bytes(), 0), want, "{input:?}");
            assert_eq!(reference_murmur3(input.as_bytes(), 0), want, "{input:?}");
            assert_eq!(crate_murmur3(input.as_bytes(), 0), want, "{input:?}");
        }
        // Unleash's cross-client vectors: normalizedValue(id, group) =
        // murmur3("group:id") % 100 + 1: the same hash and key shape as ours.
        assert_eq!(murmur3_x86_32("gr1:123".bytes(), 0) % 100 + 1, 73);
        assert_eq!(murmur3_x86_32("groupX:999".bytes(), 0) % 100 + 1, 25);
    }

    #[test]
    fn percentage_buckets_are_pinned() {
        // The stable contract: changing any of these moves accounts in and
        // out of every deployed rollout.
        for (name, id, want) in [
            ("r", "acc_1", R_ACC_1),
            ("pct", "acc_1", 9179),
            ("calendar-v2", "acc_1", 4345),
            ("calendar-v2", "acc_2", 519),
            ("calendar-v2", "acc_3", 26),
            ("calendar-v2", "acc_123", 4344),
            ("email", "42", 4152),
            ("r", "", 6306),
            ("", "", 7430),
        ] {
            assert_eq!(bucket(name, id), want, "{name}:{id}");
            let full = reference_murmur3(format!("{name}:{id}").as_bytes(), 0);
            assert_eq!(full % BUCKETS, want, "{name}:{id}");
        }
    }

    #[test]
    fn percentage_limit_is_bucket_below_percentage_times_100() {
        // bucket("calendar-v2", "acc_3") == 26.
        let acc = json!({"id": "acc_3"});
        for (pct, want) in [(0.26, false), (0.27, true), (0.261, true), (0.0, false)] {
            let r = router(json!([{"name": "calendar-v2", "percentage": pct, "target": "t:1"}]));
            let got = r.decide(&request("GET", "/", None, &acc)).is_some();
            assert_eq!(got, want, "percentage {pct}");
        }
    }

    #[test]
    fn router_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Router>();
    }

    // ---- property tests ----

    const PATHS: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab", "/b", "/v1/a"];
    const REQ_PATHS: &[&str] = &[
        "/", "/a", "/a/", "/a/b", "/a/b/c", "/ab", "/abc", "/b", "/b/x", "/c", "/v1/a", "/v2/a/b",
    ];
    const VERSIONS: &[&str] = &["v1", "v2", "2"];
    const ACCOUNTS: &[&str] = &["acc1", "acc2", "7"];
    const PLANS: &[&str] = &["free", "pro", "7"];
    const FLAGS: &[&str] = &["f1", "f2"];

    #[derive(Debug, Clone)]
    struct GenRoute {
        name: String,
        paths: Vec<&'static str>,
        methods: Vec<&'static str>,
        versions: Vec<&'static str>,
        accounts: Vec<&'static str>,
        plans: Vec<&'static str>,
        flags: Vec<&'static str>,
        percentage: f64,
        strip: bool,
    }

    impl GenRoute {
        fn to_json(&self) -> Value {
            let mut r = json!({
                "name": self.name, "paths": self.paths, "methods": self.methods,
                "api_versions": self.versions, "accounts": self.accounts, "flags": self.flags,
                "percentage": self.percentage, "strip_prefix": self.strip, "target": "t:1",
            });
            if !self.plans.is_empty() {
                r["account_match"] = json!({"/plan": self.plans});
            }
            r
        }
    }

    #[derive(Debug, Clone)]
    struct GenReq {
        method: &'static str,
        path: &'static str,
        header: Option<&'static str>,
        account: Value,
    }

    #[derive(Debug, Clone)]
    struct GenApi {
        pattern: bool,
        default: Option<&'static str>,
    }

    impl GenApi {
        fn to_json(&self) -> Value {
            let mut v = json!({"default": self.default});
            if self.pattern {
                v["path_prefix_pattern"] = json!("^/(v\\d+)/");
            }
            json!({ "api_version": v })
        }
    }

    /// Mostly empty (so routes do match), else a non-empty subset.
    fn dim(items: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
        prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::sample::subsequence(items, 1..=items.len()),
        ]
    }

    fn gen_route() -> impl Strategy<Value = GenRoute> {
        (
            (
                dim(PATHS),
                dim(&["GET", "POST"]),
                dim(VERSIONS),
                dim(ACCOUNTS),
            ),
            (dim(PLANS), dim(FLAGS)),
            prop_oneof![Just(100.0), Just(0.0), Just(50.0), 0.0..=100.0f64],
            any::<bool>(),
            "[a-z]{0,3}",
        )
            .prop_map(
                |(
                    (paths, methods, versions, accounts),
                    (plans, flags),
                    percentage,
                    strip,
                    name,
                )| {
                    GenRoute {
                        name,
                        paths,
                        methods,
                        versions,
                        accounts,
                        plans,
                        flags,
                        percentage,
                        strip,
                    }
                },
            )
    }

    /// Routes with unique names (the config compiler rejects duplicates).
    fn gen_routes(max: usize) -> impl Strategy<Value = Vec<GenRoute>> {
        proptest::collection::vec(gen_route(), 0..=max).prop_map(|mut rs| {
            for (i, r) in rs.iter_mut().enumerate() {
                r.name = format!("r{i}{}", r.name);
            }
            rs
        })
    }

    fn gen_req() -> impl Strategy<Value = GenReq> {
        let one_of = |xs: Vec<Value>| proptest::sample::select(xs);
        (
            proptest::sample::select(vec!["GET", "POST", "get"]),
            proptest::sample::select(REQ_PATHS.to_vec()),
            proptest::sample::select(vec![None, Some(""), Some("v1"), Some("v2")]),
            proptest::sample::select(ACCOUNTS.to_vec()),
            one_of(vec![
                Value::Null,
                json!("free"),
                json!("pro"),
                json!(7),
                json!(true),
            ]),
            one_of(vec![
                Value::Null,
                json!(["f1"]),
                json!(["f1", "f2"]),
                json!({"f1": true, "f2": false}),
                json!({"f2": true, "f1": true}),
                json!("f1"),
            ]),
            one_of(vec![Value::Null, json!("v1"), json!(2), json!("")]),
        )
            .prop_map(|(method, path, header, id, plan, flags, version)| {
                let mut account = json!({"id": id});
                for (k, v) in [("plan", plan), ("flags", flags), ("api_version", version)] {
                    if !v.is_null() {
                        account[k] = v;
                    }
                }
                GenReq {
                    method,
                    path,
                    header,
                    account,
                }
            })
    }

    fn gen_api() -> impl Strategy<Value = GenApi> {
        (
            any::<bool>(),
            proptest::sample::select(vec![None, Some("v1"), Some("v2")]),
        )
            .prop_map(|(pattern, default)| GenApi { pattern, default })
    }

    /// The naive reference, written from the design text without the index or
    /// any code above: per route, `None` if it does not match, else the
    /// upstream path when stripping (`""` when not).
    fn reference(routes: &[GenRoute], api: &GenApi, req: &GenReq) -> Vec<Option<String>> {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let id = req.account["id"].as_str().unwrap_or("");
        let version = req
            .header
            .filter(|h| !h.is_empty())
            .map(String::from)
            .or_else(|| {
                // ^/(v\d+)/
                let rest = req.path.strip_prefix("/v")?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let after = rest.get(digits.len()..)?;
                (api.pattern && !digits.is_empty() && after.starts_with('/'))
                    .then(|| format!("v{digits}"))
            })
            .or_else(|| text(req.account.get("api_version")).filter(|v| !v.is_empty()))
            .or_else(|| api.default.map(String::from));
        let flag_on = |f: &str| match req.account.get("flags") {
            Some(Value::Array(a)) => a.contains(&json!(f)),
            Some(Value::Object(o)) => o.get(f) == Some(&json!(true)),
            _ => false,
        };
        routes
            .iter()
            .map(|r| {
                let prefix = if r.paths.is_empty() {
                    ""
                } else {
                    let mut matching: Vec<&str> = r
                        .paths
                        .iter()
                        .copied()
                        .filter(|p| req.path.starts_with(p))
                        .collect();
                    matching.sort_by_key(|p| p.len());
                    *matching.last()?
                };
                let bucket = reference_murmur3(format!("{}:{id}", r.name).as_bytes(), 0) % 10_000;
                let ok = (r.methods.is_empty() || r.methods.contains(&req.method))
                    && (r.versions.is_empty()
                        || version.as_deref().is_some_and(|v| r.versions.contains(&v)))
                    && (r.accounts.is_empty() || r.accounts.contains(&id))
                    && (r.plans.is_empty()
                        || text(req.account.get("plan"))
                            .is_some_and(|p| r.plans.contains(&p.as_str())))
                    && r.flags.iter().all(|f| flag_on(f))
                    && f64::from(bucket) < r.percentage * 100.0;
                if !ok {
                    return None;
                }
                if !r.strip || prefix.is_empty() {
                    return Some(String::new());
                }
                let rest = &req.path[prefix.len()..];
                Some(if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                })
            })
            .collect()
    }

    fn gen_router(routes: &[GenRoute], api: &GenApi) -> Router {
        let routes: Vec<Value> = routes.iter().map(GenRoute::to_json).collect();
        router_with(json!(routes), api.to_json())
    }

    /// A JSON value with a few levels of objects and arrays, for pointers.
    fn gen_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,2}".prop_map(Value::String)
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("(a|b|0|1|01|a/b|a~b|)", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// First match in config order, equal to the naive linear scan; this
        /// also proves the path index never drops a candidate.
        #[test]
        fn decision_equals_a_linear_scan(
            routes in gen_routes(12), api in gen_api(), reqs in proptest::collection::vec(gen_req(), 1..8)
        ) {
            let router = gen_router(&routes, &api);
            for req in &reqs {
                let verdicts = reference(&routes, &api, req);
                let want = verdicts.iter().position(Option::is_some);
                let request = request(req.method, req.path, req.header, &req.account);
                let got = router.decide(&request);
                prop_assert_eq!(got.as_ref().map(|d| d.index), want);
                if let (Some(d), Some(i)) = (&got, want) {
                    prop_assert_eq!(d.name, routes[i].name.as_str());
                    let want_path = verdicts[i].as_deref().filter(|p| !p.is_empty());
                    prop_assert_eq!(d.path.as_deref(), want_path.map(str::as_bytes));
                }
                let ex = router.explain(&request);
                prop_assert_eq!(&ex.decision, &got);
                prop_assert_eq!(ex.steps.len(), want.map_or(routes.len(), |i| i + 1));
                for s in &ex.steps {
                    prop_assert_eq!(s.mismatch.is_none(), verdicts[s.index].is_some());
                }
            }
        }
    }

    proptest! {
        /// The streaming hash equals the `murmur3` crate and the slice reference.
        #[test]
        fn hash_equals_the_murmur3_crate(data in proptest::collection::vec(any::<u8>(), 0..64), seed in any::<u32>()) {
            let want = crate_murmur3(&data, seed);
            prop_assert_eq!(murmur3_x86_32(data.iter().copied(), seed), want);
            prop_assert_eq!(reference_murmur3(&data, seed), want);
        }

        /// Precompiled pointers find what `Value::pointer` finds.
        #[test]
        fn lookup_equals_value_pointer(value in gen_json(), tokens in proptest::collection::vec("(a|b|0|1|01|\\+1|a~1b|a~0b|)", 0..4)) {
            let text = tokens.iter().map(|t| format!("/{t}")).collect::<String>();
            let pointer = config::compile(json!({"auth": {"url": "http://a/"}, "flags_pointer": text}))
                .expect("valid pointer")
                .flags_pointer;
            prop_assert_eq!(Lookup::new(&pointer).get(&value), value.pointer(&text));
        }

        /// Same account, same answer: every call, and every worker (an
        /// independently built router).
        #[test]
        fn buckets_are_sticky(name in "[a-z0-9-]{1,20}", id in "\\PC{0,40}", pct in 0.0..=100.0f64) {
            let b = bucket(&name, &id);
            prop_assert!(b < BUCKETS);
            prop_assert_eq!(b, bucket(&name, &id));
            prop_assert_eq!(b, reference_murmur3(format!("{name}:{id}").as_bytes(), 0) % BUCKETS);
            let routes = json!([{"name": name, "percentage": pct, "target": "t:1"}]);
            let (worker1, worker2) = (router(routes.clone()), router(routes));
            let acc = json!({"id": id});
            let req = request("GET", "/", None, &acc);
            let first = worker1.decide(&req).is_some();
            prop_assert_eq!(first, f64::from(b) < pct * 100.0);
            for _ in 0..3 {
                prop_assert_eq!(worker1.decide(&req).is_some(), first);
                prop_assert_eq!(worker2.decide(&req).is_some(), first);
            }
        }

        /// Adding unrelated routes, before or after, never changes whether an
        /// account is in another route's percentage.
        #[test]
        fn unrelated_routes_never_move_a_bucket(
            pct in 0.0..=100.0f64,
            id in "[A-Za-z0-9_]{1,16}",
            others in proptest::collection::vec((0.0..=100.0f64, dim(FLAGS)), 0..6),
            before in 0usize..6,
        ) {
            let target = json!({"name": "rollout", "percentage": pct, "target": "t:1"});
            let alone = router(json!([target.clone()]));
            let mut routes: Vec<Value> = others
                .iter()
                .enumerate()
                .map(|(i, (p, flags))| {
                    // Never matching a GET, so the request reaches "rollout".
                    json!({"name": format!("other{i}"), "methods": ["DELETE"], "percentage": p, "flags": flags, "target": "t:2"})
                })
                .collect();
            routes.insert(before.min(routes.len()), target);
            let crowded = router(json!(routes));
            let acc = json!({"id": id});
            let req = request("GET", "/", None, &acc);
            let got_alone = alone.decide(&req).map(|d| d.name);
            let got_crowded = crowded.decide(&req).map(|d| d.name);
            prop_assert_eq!(got_alone, got_crowded);
            prop_assert_eq!(got_alone.is_some(), f64::from(bucket("rollout", &id)) < pct * 100.0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        /// 10000 random accounts at 25% land within 23-27%.
        #[test]
        fn buckets_are_fair(
            name in "[a-z][a-z0-9-]{0,15}",
            prefix in "[a-z_]{0,8}",
            numbers in proptest::collection::vec(any::<u64>(), 10_000),
        ) {
            // Ids built from random numbers: 10000 regex-generated strings per
            // case take minutes in a debug build.
            let r = router(json!([{"name": name, "percentage": 25, "target": "t:1"}]));
            let hits = numbers
                .iter()
                .filter(|n| {
                    let acc = json!({"id": format!("{prefix}{n:x}")});
                    r.decide(&request("GET", "/", None, &acc)).is_some()
                })
                .count();
            prop_assert!((2300..=2700).contains(&hits), "{hits} of 10000");
        }
    }
}
