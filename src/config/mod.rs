//! Config: the plugin configuration (design §2), validated once and compiled into
//! types the request path uses without checking again.
//!
//! `compile` is the single source of truth for defaults and checks; Kong's
//! `schema.lua` declares the same fields and delegates these semantic checks here.

pub mod fields;

use fields::{
    array_of, boolean, integer, nonempty_string, number, one_of, string, strings, Check,
    FieldError, Fields,
};
use serde_json::{json, Value};
use std::fmt;

/// Longest header value we will ever add (account fields, constants).
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 128;
const MAX_TIMEOUT_MS: i64 = 2_147_483_646; // Kong's typedefs.timeout bound
const MAX_TTL_S: f64 = 31_536_000.0; // one year
/// A denial is remembered at most an hour: anyone can mint new bad
/// credentials, so their entries must not outlive a short window.
const MAX_NEGATIVE_TTL_S: f64 = 3600.0;
const MAX_BODY_BYTES: i64 = 64 * 1024 * 1024;

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text given as config is not JSON.
    #[error("config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// One or more fields are invalid; each names its field path.
    #[error("invalid config: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errs: &[FieldError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A lowercase HTTP header name (RFC 9110 token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderName(String);

impl HeaderName {
    /// The lowercase name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A JSON pointer (RFC 6901): `""` or `/a/b`, with `~0`/`~1` escapes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    /// The pointer text, usable with `serde_json::Value::pointer`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `host:port` of a proxy target or collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port, 1-65535.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An http(s) URL, split for the cosocket client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `true` for https.
    pub tls: bool,
    /// Host name or IP address.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// The URL as configured.
    pub raw: String,
}

/// HTTP method used for the auth call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// GET (the default): credentials in headers, no body.
    Get,
    /// POST with an empty body.
    Post,
}

/// `auth`: how to call the auth service and cache its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// The auth service.
    pub url: HttpUrl,
    /// GET or POST.
    pub method: AuthMethod,
    /// Headers whose values form the credential (lowercase).
    pub credential_headers: Vec<HeaderName>,
    /// Extra request headers sent to the auth service.
    pub forward_headers: Vec<HeaderName>,
    /// Budget of one whole auth call (connect, send, response), milliseconds.
    pub timeout_ms: u32,
    /// Idle keepalive time in milliseconds.
    pub keepalive_ms: u32,
    /// Keepalive pool size per worker.
    pub pool_size: u32,
    /// Auth calls in flight per worker (to this auth service) at most.
    pub max_in_flight: u32,
    /// Verify the auth service's TLS certificate.
    pub ssl_verify: bool,
    /// Where the account object sits in a 2xx body.
    pub account_pointer: Pointer,
    /// Where the account id sits in the account object.
    pub account_id_pointer: Pointer,
    /// Where an `exp` epoch sits in the account object.
    pub exp_pointer: Pointer,
    /// Positive TTL, seconds.
    pub ttl_s: f64,
    /// TTL of a 401/403 verdict, seconds.
    pub negative_ttl_s: f64,
    /// How long past expiry an entry may be served when the auth service fails.
    pub stale_ttl_s: f64,
    /// Max L1 entries per worker.
    pub cache_size: u32,
    /// Name of the `lua_shared_dict` for L2 and locks.
    pub shared_dict: String,
    /// Status when the auth service is unavailable and nothing stale exists.
    pub failure_status: u16,
}

/// `api_version`: where the request's API version comes from.
#[derive(Debug, Clone)]
pub struct ApiVersion {
    /// Request header carrying the version.
    pub header: HeaderName,
    /// Regex on the path whose first capture group is the version. On
    /// bytes: a request path need not be UTF-8 (`.` still matches one UTF-8
    /// character, never part of one).
    pub path_prefix_pattern: Option<regex::bytes::Regex>,
    /// Account field holding the version.
    pub account_pointer: Pointer,
    /// Version when nothing else gives one.
    pub default: Option<String>,
}

/// Where a matched route sends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A Kong Upstream, by name.
    Upstream(String),
    /// A fixed `host:port`.
    Target(HostPort),
}

/// One entry of `routes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique route name.
    pub name: String,
    /// Path prefixes; empty matches any path.
    pub paths: Vec<String>,
    /// Uppercase methods; empty matches any.
    pub methods: Vec<String>,
    /// API versions; empty matches any.
    pub api_versions: Vec<String>,
    /// Account id allowlist; empty matches any.
    pub accounts: Vec<String>,
    /// Account fields and their allowed string values.
    pub account_match: Vec<(Pointer, Vec<String>)>,
    /// Flags that must all be on.
    pub flags: Vec<String>,
    /// Share of accounts (0-100) that get this route, sticky per account.
    pub percentage: f64,
    /// Where the request goes.
    pub destination: Destination,
    /// Remove the matched prefix from the upstream path.
    pub strip_prefix: bool,
}

/// Where a header rule's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// An account field.
    Pointer(Pointer),
    /// A constant.
    Value(String),
}

/// One entry of `upstream_headers` / `response_headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// Header to set.
    pub name: HeaderName,
    /// Its value's source.
    pub source: HeaderSource,
}

/// Where log records are shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Newline-delimited JSON over TCP.
    Tcp(HostPort),
    /// A JSON array per batch, POSTed.
    Http(HttpUrl),
}

/// `log`: body capture and record shipping; `None` in [`Config::log`] when disabled.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// Collector.
    pub sink: Sink,
    /// TLS to the collector.
    pub tls: bool,
    /// Capture request bodies.
    pub request_body: bool,
    /// Capture response bodies.
    pub response_body: bool,
    /// Cap per captured body.
    pub max_body_bytes: usize,
    /// Headers whose values are masked (lowercase, credential headers included).
    pub redact_headers: Vec<HeaderName>,
    /// Body fields masked at any depth.
    pub redact_body_fields: Vec<String>,
    /// Records per batch.
    pub batch_max_entries: u32,
    /// Flush period, milliseconds.
    pub flush_interval_ms: u32,
    /// Queue bound per worker, bytes.
    pub queue_max_bytes: usize,
    /// Give up retrying a batch after this many seconds.
    pub retry_max_s: f64,
    /// Collector timeout, milliseconds.
    pub timeout_ms: u32,
    /// Collector keepalive, milliseconds.
    pub keepalive_ms: u32,
    /// Header whose value becomes the record's `request_id`.
    pub request_id_header: HeaderName,
}

/// `cluster`: the Redis tier shared by every node of a fleet (issue #10);
/// `None` in [`Config::cluster`] when disabled. Field names follow Kong's
/// Redis conventions (rate-limiting's `redis` record), with our `_ms` units.
#[derive(Clone, PartialEq)]
pub struct Cluster {
    /// Redis host name or IP address.
    pub host: String,
    /// Redis port.
    pub port: u16,
    /// ACL user (Redis 6+); none: AUTH with the password alone.
    pub username: Option<String>,
    /// Password; none: no AUTH.
    pub password: Option<String>,
    /// Database index (SELECT).
    pub database: u32,
    /// TLS to Redis.
    pub ssl: bool,
    /// Verify Redis's certificate.
    pub ssl_verify: bool,
    /// SNI and the name verified; none: `host`.
    pub server_name: Option<String>,
    /// Budget of one Redis exchange, milliseconds.
    pub timeout_ms: u32,
    /// Idle connection lifetime in the keepalive pool, milliseconds.
    pub keepalive_ms: u32,
    /// Keepalive pool size per worker.
    pub pool_size: u32,
    /// The secret every node derives cache keys from, so that nodes agree
    /// on keys (the node-local secret would not).
    pub key_secret: String,
    /// How often a node reads the fleet's purges, milliseconds.
    pub poll_ms: u32,
}

// The secrets never reach a log line through Debug.
impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("server_name", &self.server_name)
            .field("timeout_ms", &self.timeout_ms)
            .field("keepalive_ms", &self.keepalive_ms)
            .field("pool_size", &self.pool_size)
            .field("key_secret", &"<redacted>")
            .field("poll_ms", &self.poll_ms)
            .finish()
    }
}

/// The shortest `cluster.key_secret` accepted: 128 bits of hex, or a
/// 16-character passphrase, so a guessable one is refused at config time.
pub const MIN_KEY_SECRET_LEN: usize = 16;

/// A validated, compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The auth service and cache.
    pub auth: Auth,
    /// API version resolution.
    pub api_version: ApiVersion,
    /// Where the account's feature flags are.
    pub flags_pointer: Pointer,
    /// Routes, in order.
    pub routes: Vec<Route>,
    /// Headers added upstream (and always stripped from the client request).
    pub upstream_headers: Vec<HeaderRule>,
    /// Headers added to the client response.
    pub response_headers: Vec<HeaderRule>,
    /// Header carrying the matched route's name upstream.
    pub route_header: Option<HeaderName>,
    /// Strip credential headers before proxying.
    pub hide_credentials: bool,
    /// The Kong consumer an account maps to, when mapping is on (Kong only).
    pub consumer: Option<ConsumerMapping>,
    /// Logging, when enabled.
    pub log: Option<Log>,
    /// The fleet-wide Redis tier, when enabled.
    pub cluster: Option<Cluster>,
    /// The normalized config: the input with every default filled in.
    pub normalized: Value,
}

/// Which Kong consumer field an account value is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerBy {
    /// The consumer's `username`.
    Username,
    /// The consumer's `custom_id`.
    CustomId,
}

impl ConsumerBy {
    /// The config spelling (`username`, `custom_id`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerBy::Username => "username",
            ConsumerBy::CustomId => "custom_id",
        }
    }
}

/// How an allowed account becomes a Kong consumer (`consumer.by` set).
/// Plain OpenResty has no consumers and ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMapping {
    /// The consumer field matched.
    pub by: ConsumerBy,
    /// The account field whose value is matched (a string or a number).
    pub pointer: Pointer,
    /// The consumer (id or username) used when none matches; none: 403.
    pub anonymous: Option<String>,
}

/// Parses a JSON text and compiles it; see [`compile`].
pub fn compile_json(text: &str) -> Result<Config, ConfigError> {
    compile(serde_json::from_str(text)?)
}

/// Validates `input` and compiles it, or returns every field error found.
pub fn compile(input: Value) -> Result<Config, ConfigError> {
    let mut errs = Vec::new();
    let compiled = {
        match Fields::new(String::new(), input, &mut errs) {
            Some(mut root) => {
                let c = read_config(&mut root);
                let out = root.finish();
                c.map(|mut c| {
                    c.normalized = Value::Object(out);
                    c
                })
            }
            None => None,
        }
    };
    match compiled {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid(errs)),
    }
}

fn read_config(f: &mut Fields<'_>) -> Option<Config> {
    let auth = f.record("auth", true, read_auth).flatten();
    let api_version = f.record("api_version", false, read_api_version).flatten();
    let flags_pointer = f.with_default("flags_pointer", json!("/flags"), None, |v| {
        pointer(v).map(Some)
    });
    // Each record also yields its raw name, so duplicates are reported even
    // when a record has other errors.
    let routes = f.records("routes", |r| (r.peek_str("name"), read_route(r)));
    let upstream_headers = f.records("upstream_headers", |r| {
        (r.peek_str("name"), read_header_rule(r))
    });
    let response_headers = f.records("response_headers", |r| {
        (r.peek_str("name"), read_header_rule(r))
    });
    let route_header = f.optional("route_header", header_name);
    let hide_credentials = f.with_default("hide_credentials", json!(false), false, boolean);
    let consumer = f.record("consumer", false, read_consumer).flatten();
    let log = f
        .record("log", false, |l| read_log(l, auth.as_ref()))
        .flatten();
    let cluster = f.record("cluster", false, read_cluster).flatten();

    check_unique(
        f,
        "routes",
        routes.iter().filter_map(|(n, _)| n.clone()),
        "route name",
    );
    for (key, rules) in [
        ("upstream_headers", &upstream_headers),
        ("response_headers", &response_headers),
    ] {
        // Header names are case-insensitive.
        let names = rules
            .iter()
            .filter_map(|(n, _)| n.as_ref().map(|n| n.to_ascii_lowercase()));
        check_unique(f, key, names, "header name");
    }

    Some(Config {
        auth: auth?,
        api_version: api_version?,
        flags_pointer: flags_pointer?,
        routes: routes.into_iter().map(|(_, r)| r).collect::<Option<_>>()?,
        upstream_headers: upstream_headers
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Option<_>>()?,
        response_headers: response_headers
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Option<_>>()?,
        route_header,
        hide_credentials,
        consumer: consumer?,
        log: log?,
        cluster: cluster?,
        normalized: Value::Null,
    })
}

fn check_unique(f: &mut Fields<'_>, key: &str, names: impl Iterator<Item = String>, what: &str) {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.clone()) {
            f.error(key, format!("duplicate {what} '{name}'"));
        }
    }
}

fn read_auth(f: &mut Fields<'_>) -> Option<Auth> {
    let url = f.required("url", http_url);
    let method = f.with_default("method", json!("GET"), None, |v| {
        one_of(&["GET", "POST"])(v).map(|m| {
            Some(if m == "GET" {
                AuthMethod::Get
            } else {
                AuthMethod::Post
            })
        })
    });
    let credential_headers = f.with_default(
        "credential_headers",
        strings(&["authorization"]),
        None,
        |v| {
            let names = array_of(forwardable_header)(v)?;
            if names.is_empty() {
                return Err("must name at least one header".into());
            }
            Ok(Some(names))
        },
    );
    let forward_headers = f.with_default("forward_headers", json!([]), None, |v| {
        array_of(forwardable_header)(v).map(Some)
    });
    // Each header goes to the auth service once: a name listed twice, or as
    // both credential and forwarded header, would repeat a singleton field
    // (two Authorization lines) in the auth request.
    let creds = credential_headers.as_deref().unwrap_or_default();
    let names = |hs: &[HeaderName]| hs.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
    check_unique(
        f,
        "credential_headers",
        names(creds).into_iter(),
        "header name",
    );
    if let Some(fwd) = &forward_headers {
        check_unique(f, "forward_headers", names(fwd).into_iter(), "header name");
        for h in fwd.iter().filter(|h| creds.contains(h)) {
            f.error(
                "forward_headers",
                format!("'{}' is already a credential header", h.0),
            );
        }
    }
    let timeout_ms = f.with_default("timeout_ms", json!(1000), 0, integer(1, MAX_TIMEOUT_MS));
    let keepalive_ms = f.with_default("keepalive_ms", json!(60000), 0, integer(1, MAX_TIMEOUT_MS));
    let pool_size = f.with_default("pool_size", json!(64), 0, integer(1, 65535));
    let max_in_flight = f.with_default("max_in_flight", json!(64), 0, integer(1, 65535));
    let ssl_verify = f.with_default("ssl_verify", json!(true), true, boolean);
    let account_pointer =
        f.with_default("account_pointer", json!(""), None, |v| pointer(v).map(Some));
    let account_id_pointer = f.with_default("account_id_pointer", json!("/id"), None, |v| {
        pointer(v).map(Some)
    });
    let exp_pointer = f.with_default("exp_pointer", json!("/exp"), None, |v| pointer(v).map(Some));
    let ttl_s = f.with_default("ttl_s", json!(60), 0.0, number(0.0, MAX_TTL_S));
    let negative_ttl_s = f.with_default(
        "negative_ttl_s",
        json!(10),
        0.0,
        number(0.0, MAX_NEGATIVE_TTL_S),
    );
    let stale_ttl_s = f.with_default("stale_ttl_s", json!(30), 0.0, number(0.0, MAX_TTL_S));
    let cache_size = f.with_default("cache_size", json!(100000), 0, integer(1, 100_000_000));
    let shared_dict = f.with_default("shared_dict", json!("auth_router"), None, |v| {
        dict_name(v).map(Some)
    });
    let failure_status = f.with_default("failure_status", json!(503), 0, integer(500, 599));

    Some(Auth {
        url: url?,
        method: method?,
        credential_headers: credential_headers?,
        forward_headers: forward_headers?,
        timeout_ms: timeout_ms as u32,
        keepalive_ms: keepalive_ms as u32,
        pool_size: pool_size as u32,
        max_in_flight: max_in_flight as u32,
        ssl_verify,
        account_pointer: account_pointer?,
        account_id_pointer: account_id_pointer?,
        exp_pointer: exp_pointer?,
        ttl_s,
        negative_ttl_s,
        stale_ttl_s,
        cache_size: cache_size as u32,
        shared_dict: shared_dict?,
        failure_status: failure_status as u16,
    })
}

fn read_api_version(f: &mut Fields<'_>) -> Option<ApiVersion> {
    let header = f.with_default("header", json!("x-api-version"), None, |v| {
        header_name(v).map(Some)
    });
    let path_prefix_pattern = f.optional("path_prefix_pattern", version_regex);
    let account_pointer = f.with_default("account_pointer", json!("/api_version"), None, |v| {
        pointer(v).map(Some)
    });
    let default = f.optional("default", nonempty_string);
    Some(ApiVersion {
        header: header?,
        path_prefix_pattern,
        account_pointer: account_pointer?,
        default,
    })
}

/// `Some(None)`: valid and off (`by` is null).
fn read_consumer(f: &mut Fields<'_>) -> Option<Option<ConsumerMapping>> {
    let by = f.optional("by", |v| {
        one_of(&["username", "custom_id"])(v).map(|b| {
            if b == "username" {
                ConsumerBy::Username
            } else {
                ConsumerBy::CustomId
            }
        })
    });
    let pointer = f.with_default("pointer", json!("/id"), None, |v| pointer(v).map(Some));
    let anonymous = f.optional("anonymous", nonempty_string);
    let pointer = pointer?;
    Some(by.map(|by| ConsumerMapping {
        by,
        pointer,
        anonymous,
    }))
}

fn read_route(f: &mut Fields<'_>) -> Option<Route> {
    let name = f.required("name", route_name);
    let paths = f.with_default("paths", json!([]), None, |v| {
        array_of(path_prefix)(v).map(Some)
    });
    let methods = f.with_default("methods", json!([]), None, |v| {
        array_of(http_method)(v).map(Some)
    });
    let api_versions = f.with_default("api_versions", json!([]), None, |v| {
        array_of(nonempty_string)(v).map(Some)
    });
    let accounts = f.with_default("accounts", json!([]), None, |v| {
        array_of(nonempty_string)(v).map(Some)
    });
    let account_match = f.with_default("account_match", json!({}), None, |v| {
        account_match(v).map(Some)
    });
    let flags = f.with_default("flags", json!([]), None, |v| {
        array_of(nonempty_string)(v).map(Some)
    });
    let percentage = f.with_default("percentage", json!(100), 0.0, number(0.0, 100.0));
    let given = (f.present("upstream"), f.present("target"));
    let upstream = f.optional("upstream", upstream_name);
    let target = f.optional("target", host_port);
    let strip_prefix = f.with_default("strip_prefix", json!(false), false, boolean);

    let destination = match given {
        (true, true) => {
            f.error("target", "only one of upstream or target may be set");
            None
        }
        (false, false) => {
            f.error("target", "exactly one of upstream or target is required");
            None
        }
        _ => upstream
            .map(Destination::Upstream)
            .or(target.map(Destination::Target)),
    };
    Some(Route {
        name: name?,
        paths: paths?,
        methods: methods?,
        api_versions: api_versions?,
        accounts: accounts?,
        account_match: account_match?,
        flags: flags?,
        percentage,
        destination: destination?,
        strip_prefix,
    })
}

fn read_header_rule(f: &mut Fields<'_>) -> Option<HeaderRule> {
    let name = f.required("name", header_name);
    let given = (f.present("pointer"), f.present("value"));
    let pointer = f.optional("pointer", pointer);
    let value = f.optional("value", header_value);
    let source = match given {
        (true, true) => {
            f.error("value", "only one of pointer or value may be set");
            None
        }
        (false, false) => {
            f.error("pointer", "exactly one of pointer or value is required");
            None
        }
        _ => pointer
            .map(HeaderSource::Pointer)
            .or(value.map(HeaderSource::Value)),
    };
    Some(HeaderRule {
        name: name?,
        source: source?,
    })
}

/// Headers masked in log records unless configured otherwise.
pub const DEFAULT_REDACT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

fn read_cluster(f: &mut Fields<'_>) -> Option<Option<Cluster>> {
    let enabled = f.with_default("enabled", json!(false), false, boolean);
    // Given but invalid is reported by its check, not as missing too.
    let host_given = f.present("host");
    let secret_given = f.present("key_secret");
    let redis_host = f.optional("host", host);
    let port = f.with_default("port", json!(6379), 0, integer(1, 65535));
    let username = f.optional("username", nonempty_string);
    // Kong's Redis password may be empty (len_min = 0): no AUTH then.
    let password = f.optional("password", string);
    let database = f.with_default("database", json!(0), 0, integer(0, i64::from(i32::MAX)));
    let ssl = f.with_default("ssl", json!(false), false, boolean);
    let ssl_verify = f.with_default("ssl_verify", json!(true), true, boolean);
    let server_name = f.optional("server_name", host);
    let timeout_ms = f.with_default("timeout_ms", json!(200), 0, integer(1, MAX_TIMEOUT_MS));
    let keepalive_ms = f.with_default("keepalive_ms", json!(60000), 0, integer(1, MAX_TIMEOUT_MS));
    let pool_size = f.with_default("pool_size", json!(64), 0, integer(1, 65535));
    let key_secret = f.optional("key_secret", |v| {
        let s = string(v)?;
        if s.len() < MIN_KEY_SECRET_LEN {
            return Err(format!("must be at least {MIN_KEY_SECRET_LEN} characters"));
        }
        Ok(s)
    });
    let poll_ms = f.with_default("poll_ms", json!(1000), 0, integer(10, 3_600_000));
    if !enabled {
        return Some(None);
    }
    if !host_given {
        f.error("host", "required when cluster is enabled");
    }
    if !secret_given {
        f.error("key_secret", "required when cluster is enabled");
    }
    Some(Some(Cluster {
        host: redis_host?,
        port: port as u16,
        username,
        password: password.filter(|p| !p.is_empty()),
        database: database as u32,
        ssl,
        ssl_verify,
        server_name,
        timeout_ms: timeout_ms as u32,
        keepalive_ms: keepalive_ms as u32,
        pool_size: pool_size as u32,
        key_secret: key_secret?,
        poll_ms: poll_ms as u32,
    }))
}

fn read_log(f: &mut Fields<'_>, auth: Option<&Auth>) -> Option<Option<Log>> {
    let enabled = f.with_default("enabled", json!(false), false, boolean);
    let sink = f.with_default("sink", json!("tcp"), None, |v| {
        one_of(&["tcp", "http"])(v).map(Some)
    });
    let host = f.optional("host", host);
    let port = f.optional("port", integer(1, 65535));
    let url = f.optional("url", http_url);
    let tls = f.with_default("tls", json!(false), false, boolean);
    let request_body = f.with_default("request_body", json!(false), false, boolean);
    let response_body = f.with_default("response_body", json!(false), false, boolean);
    let max_body_bytes = f.with_default(
        "max_body_bytes",
        json!(65536),
        0,
        integer(0, MAX_BODY_BYTES),
    );
    let redact_headers = f.with_default(
        "redact_headers",
        strings(DEFAULT_REDACT_HEADERS),
        None,
        |v| array_of(header_name)(v).map(Some),
    );
    let redact_body_fields = f.with_default("redact_body_fields", json!([]), None, |v| {
        array_of(nonempty_string)(v).map(Some)
    });
    let batch_max_entries = f.with_default("batch_max_entries", json!(100), 0, integer(1, 100_000));
    let flush_interval_ms =
        f.with_default("flush_interval_ms", json!(1000), 0, integer(1, 3_600_000));
    let queue_max_bytes =
        f.with_default("queue_max_bytes", json!(8388608), 0, integer(1024, 1 << 30));
    let retry_max_s = f.with_default("retry_max_s", json!(60), 0.0, number(0.0, 86_400.0));
    let timeout_ms = f.with_default("timeout_ms", json!(10000), 0, integer(1, MAX_TIMEOUT_MS));
    let keepalive_ms = f.with_default("keepalive_ms", json!(60000), 0, integer(1, MAX_TIMEOUT_MS));
    let request_id_header = f.with_default("request_id_header", json!("x-request-id"), None, |v| {
        header_name(v).map(Some)
    });

    let sink = match sink.as_deref() {
        Some("tcp") => match (host, port) {
            (Some(h), Some(p)) => Some(Sink::Tcp(HostPort {
                host: h,
                port: p as u16,
            })),
            (h, p) => {
                if enabled && h.is_none() {
                    f.error("host", "required when sink is tcp");
                }
                if enabled && p.is_none() {
                    f.error("port", "required when sink is tcp");
                }
                None
            }
        },
        Some(_) => match url {
            Some(u) => Some(Sink::Http(u)),
            None => {
                if enabled {
                    f.error("url", "required when sink is http");
                }
                None
            }
        },
        None => None,
    };
    if !enabled {
        return Some(None);
    }
    // Credential headers are always masked, whatever redact_headers says.
    let mut redact_headers = redact_headers?;
    for h in auth.map(|a| a.credential_headers.as_slice()).unwrap_or(&[]) {
        if !redact_headers.contains(h) {
            redact_headers.push(h.clone());
        }
    }
    Some(Some(Log {
        sink: sink?,
        tls,
        request_body,
        response_body,
        max_body_bytes: max_body_bytes as usize,
        redact_headers,
        redact_body_fields: redact_body_fields?,
        batch_max_entries: batch_max_entries as u32,
        flush_interval_ms: flush_interval_ms as u32,
        queue_max_bytes: queue_max_bytes as usize,
        retry_max_s,
        timeout_ms: timeout_ms as u32,
        keepalive_ms: keepalive_ms as u32,
        request_id_header: request_id_header?,
    }))
}

// ---- semantic checks ----

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(v: &Value) -> Check<HeaderName> {
    let s = string(v)?;
    if s.is_empty() || s.len() > 256 || !s.bytes().all(is_tchar) {
        return Err(format!("'{s}' is not a valid header name"));
    }
    Ok(HeaderName(s.to_ascii_lowercase()))
}

/// Headers that frame the auth call itself; the HTTP/1.1 encoder owns them.
const RESERVED_AUTH_HEADERS: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection"];

fn forwardable_header(v: &Value) -> Check<HeaderName> {
    let h = header_name(v)?;
    if RESERVED_AUTH_HEADERS.contains(&h.as_str()) {
        return Err(format!(
            "'{}' cannot be sent to the auth service (it frames the request)",
            h.0
        ));
    }
    Ok(h)
}

fn header_value(v: &Value) -> Check<String> {
    let s = string(v)?;
    if s.len() > MAX_HEADER_VALUE_BYTES {
        return Err(format!("longer than {MAX_HEADER_VALUE_BYTES} bytes"));
    }
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("must not contain CR, LF or NUL".into());
    }
    Ok(s)
}

fn pointer(v: &Value) -> Check<Pointer> {
    let s = string(v)?;
    if !s.is_empty() && !s.starts_with('/') {
        return Err(format!(
            "'{s}' is not a JSON pointer (must be empty or start with '/')"
        ));
    }
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0') | Some(b'1')) {
            return Err(format!(
                "'{s}' is not a JSON pointer ('~' must be followed by 0 or 1)"
            ));
        }
    }
    Ok(Pointer(s))
}

fn http_url(v: &Value) -> Check<HttpUrl> {
    let raw = string(v)?;
    let u = url::Url::parse(&raw).map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    let tls = match u.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("scheme must be http or https, got '{other}'")),
    };
    let host = match u.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        // The URL standard allows bytes in a domain (`"`, `{`, `` ` ``, ...)
        // that no host name has and the HTTP/1.1 encoder refuses.
        Some(url::Host::Domain(d)) if is_hostname(d) => d.to_string(),
        Some(url::Host::Domain(d)) => {
            return Err(format!("'{raw}' has an invalid host name '{d}'"))
        }
        None => return Err(format!("'{raw}' has no host")),
    };
    if u.fragment().is_some() {
        return Err(format!("'{raw}' must not have a fragment"));
    }
    let port = u
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(HttpUrl {
        tls,
        host,
        port,
        path,
        raw,
    })
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn host(v: &Value) -> Check<String> {
    let s = string(v)?;
    if is_hostname(&s) || s.parse::<std::net::IpAddr>().is_ok() {
        Ok(s)
    } else {
        Err(format!("'{s}' is not a host name or IP address"))
    }
}

fn host_port(v: &Value) -> Check<HostPort> {
    let s = string(v)?;
    let bad = || format!("expected host:port, got '{s}'");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        if !is_hostname(h) {
            return Err(bad());
        }
        (h, p)
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

fn upstream_name(v: &Value) -> Check<String> {
    let s = string(v)?;
    if is_hostname(&s) {
        Ok(s)
    } else {
        Err(format!("'{s}' is not a valid upstream name"))
    }
}

fn route_name(v: &Value) -> Check<String> {
    let s = string(v)?;
    // Route names travel in headers (route_header) and log records: keep them plain.
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "'{s}' is not a valid route name (1-{MAX_NAME_BYTES} of A-Z a-z 0-9 - _ . ~)"
        ))
    }
}

fn path_prefix(v: &Value) -> Check<String> {
    let s = string(v)?;
    if !s.starts_with('/') {
        return Err(format!("path '{s}' must start with '/'"));
    }
    if s.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err(format!(
            "path '{s}' must not contain spaces, control characters, '?' or '#'"
        ));
    }
    Ok(s)
}

fn http_method(v: &Value) -> Check<String> {
    let s = string(v)?;
    if s.is_empty() || !s.bytes().all(is_tchar) {
        return Err(format!("'{s}' is not an HTTP method"));
    }
    Ok(s.to_ascii_uppercase())
}

fn dict_name(v: &Value) -> Check<String> {
    let s = nonempty_string(v)?;
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(s)
    } else {
        Err(format!("'{s}' is not a valid lua_shared_dict name"))
    }
}

fn version_regex(v: &Value) -> Check<regex::bytes::Regex> {
    let s = nonempty_string(v)?;
    let re = regex::bytes::Regex::new(&s).map_err(|e| format!("invalid regex: {e}"))?;
    if re.captures_len() < 2 {
        return Err("must have a capture group for the version".into());
    }
    Ok(re)
}

fn account_match(v: &Value) -> Check<Vec<(Pointer, Vec<String>)>> {
    let map = match v {
        Value::Object(m) => m,
        Value::Array(a) if a.is_empty() => return Ok(Vec::new()),
        _ => return Err("expected a map of JSON pointer to allowed values".into()),
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, values) in map {
        let p = pointer(&Value::String(k.clone()))?;
        let values = array_of(string)(values).map_err(|e| format!("'{k}': {e}"))?;
        if values.is_empty() {
            return Err(format!("'{k}': needs at least one allowed value"));
        }
        out.push((p, values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Value {
        json!({"auth": {"url": "http://127.0.0.1:9000/auth"}})
    }

    fn errors(v: Value) -> Vec<String> {
        match compile(v) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid(e)) => e.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn consumer_mapping_is_off_by_default_and_checked_when_on() {
        let c = compile(minimal()).expect("valid");
        assert_eq!(c.consumer, None);
        assert_eq!(
            c.normalized["consumer"],
            json!({"by": null, "pointer": "/id", "anonymous": null})
        );
        let mut on = minimal();
        on["consumer"] = json!({"by": "custom_id", "pointer": "/login", "anonymous": "guest"});
        let c = compile(on).expect("valid");
        assert_eq!(
            c.consumer,
            Some(ConsumerMapping {
                by: ConsumerBy::CustomId,
                pointer: Pointer("/login".into()),
                anonymous: Some("guest".into()),
            })
        );
        let mut bad = minimal();
        bad["consumer"] = json!({"by": "id", "pointer": "login", "anonymous": ""});
        assert_eq!(
            errors(bad),
            vec![
                "consumer.by: expected one of: username, custom_id",
                "consumer.pointer: 'login' is not a JSON pointer (must be empty or start with '/')",
                "consumer.anonymous: must not be empty",
            ]
        );
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = compile(minimal()).expect("valid");
        assert_eq!(c.auth.url.host, "127.0.0.1");
        assert_eq!(c.auth.url.port, 9000);
        assert_eq!(c.auth.url.path, "/auth");
        assert_eq!(c.auth.method, AuthMethod::Get);
        assert_eq!(
            c.auth.credential_headers,
            vec![HeaderName("authorization".into())]
        );
        assert_eq!(c.auth.ttl_s, 60.0);
        assert_eq!(c.auth.failure_status, 503);
        assert!(c.log.is_none());
        let n = &c.normalized;
        assert_eq!(n["auth"]["timeout_ms"], json!(1000));
        assert_eq!(n["auth"]["shared_dict"], json!("auth_router"));
        assert_eq!(n["api_version"]["header"], json!("x-api-version"));
        assert_eq!(n["api_version"]["default"], Value::Null);
        assert_eq!(n["log"]["redact_headers"], strings(DEFAULT_REDACT_HEADERS));
        assert_eq!(n["log"]["queue_max_bytes"], json!(8388608));
        assert_eq!(n["routes"], json!([]));
        assert_eq!(n["route_header"], Value::Null);
    }

    #[test]
    fn missing_auth_is_an_error() {
        assert_eq!(errors(json!({})), vec!["auth: required field missing"]);
    }

    #[test]
    fn route_errors_name_the_route_index() {
        let mut c = minimal();
        c["routes"] = json!([
            {"name": "email", "paths": ["/send"], "target": "email:8080"},
            {"name": "bad", "target": "no-port"},
            {"name": "both", "target": "a:1", "upstream": "u"},
            {"name": "email", "upstream": "legacy"}
        ]);
        assert_eq!(
            errors(c),
            vec![
                "routes[2].target: expected host:port, got 'no-port'",
                "routes[3].target: only one of upstream or target may be set",
                "routes: duplicate route name 'email'",
            ]
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let c = json!({
            "auth": {"url": "ftp://x", "ttl_s": -1, "typo": 1},
            "api_version": {"path_prefix_pattern": "^/v\\d+/"},
            "flags_pointer": "flags",
        });
        assert_eq!(
            errors(c),
            vec![
                "auth.url: scheme must be http or https, got 'ftp'",
                "auth.ttl_s: value should be between 0 and 31536000",
                "auth.typo: unknown field",
                "api_version.path_prefix_pattern: must have a capture group for the version",
                "flags_pointer: 'flags' is not a JSON pointer (must be empty or start with '/')",
            ]
        );
    }

    #[test]
    fn header_rules_need_exactly_one_source_and_safe_values() {
        let mut c = minimal();
        c["upstream_headers"] = json!([
            {"name": "x-account-id", "pointer": "/id"},
            {"name": "x-bad", "value": "a\r\nInjected: 1"},
            {"name": "x-none"},
            {"name": "X-Account-Id", "value": "dup"}
        ]);
        assert_eq!(
            errors(c),
            vec![
                "upstream_headers[2].value: must not contain CR, LF or NUL",
                "upstream_headers[3].pointer: exactly one of pointer or value is required",
                "upstream_headers: duplicate header name 'x-account-id'",
            ]
        );
    }

    #[test]
    fn enabled_log_needs_its_sink_address() {
        let mut c = minimal();
        c["log"] = json!({"enabled": true});
        assert_eq!(
            errors(c.clone()),
            vec![
                "log.host: required when sink is tcp",
                "log.port: required when sink is tcp"
            ]
        );
        c["log"] = json!({"enabled": true, "sink": "http"});
        assert_eq!(errors(c), vec!["log.url: required when sink is http"]);
    }

    #[test]
    fn cluster_is_off_by_default_with_kong_redis_defaults() {
        let c = compile(minimal()).expect("valid");
        assert!(c.cluster.is_none());
        let n = &c.normalized["cluster"];
        assert_eq!(n["enabled"], json!(false));
        assert_eq!(n["port"], json!(6379));
        assert_eq!(n["database"], json!(0));
        assert_eq!(n["ssl"], json!(false));
        assert_eq!(n["ssl_verify"], json!(true));
        assert_eq!(n["timeout_ms"], json!(200));
        assert_eq!(n["keepalive_ms"], json!(60000));
        assert_eq!(n["pool_size"], json!(64));
        assert_eq!(n["poll_ms"], json!(1000));
        assert_eq!(n["key_secret"], Value::Null);
    }

    #[test]
    fn enabled_cluster_needs_a_host_and_a_strong_key_secret() {
        let mut c = minimal();
        c["cluster"] = json!({"enabled": true});
        assert_eq!(
            errors(c.clone()),
            vec![
                "cluster.host: required when cluster is enabled",
                "cluster.key_secret: required when cluster is enabled"
            ]
        );
        c["cluster"] = json!({"enabled": true, "host": "redis x", "key_secret": "short",
                              "port": 0, "poll_ms": 5, "database": -1});
        assert_eq!(
            errors(c.clone()),
            vec![
                "cluster.host: 'redis x' is not a host name or IP address",
                "cluster.port: value should be between 1 and 65535",
                "cluster.database: value should be between 0 and 2147483647",
                "cluster.key_secret: must be at least 16 characters",
                "cluster.poll_ms: value should be between 10 and 3600000"
            ]
        );
        // disabled: nothing required, but what is given is still checked
        c["cluster"] = json!({"enabled": false, "key_secret": "short"});
        assert_eq!(
            errors(c),
            vec!["cluster.key_secret: must be at least 16 characters"]
        );
    }

    #[test]
    fn enabled_cluster_compiles_and_keeps_its_secrets_out_of_debug() {
        let mut c = minimal();
        c["cluster"] = json!({"enabled": true, "host": "10.0.0.7", "password": "pw-123",
                              "key_secret": "0123456789abcdef-fleet", "database": 3});
        let cluster = compile(c).expect("valid").cluster.expect("enabled");
        assert_eq!(
            (cluster.host.as_str(), cluster.port, cluster.database),
            ("10.0.0.7", 6379, 3)
        );
        assert_eq!(cluster.password.as_deref(), Some("pw-123"));
        let shown = format!("{cluster:?}");
        assert!(
            !shown.contains("pw-123") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
        // Kong's empty password means no AUTH
        let mut c = minimal();
        c["cluster"] = json!({"enabled": true, "host": "r", "password": "",
                              "key_secret": "0123456789abcdef"});
        assert_eq!(
            compile(c).expect("valid").cluster.expect("on").password,
            None
        );
    }

    #[test]
    fn enabled_log_always_redacts_credential_headers() {
        let mut c = minimal();
        c["auth"]["credential_headers"] = json!(["X-Api-Key"]);
        c["log"] =
            json!({"enabled": true, "host": "127.0.0.1", "port": 9999, "redact_headers": []});
        let log = compile(c).expect("valid").log.expect("enabled");
        assert_eq!(log.redact_headers, vec![HeaderName("x-api-key".into())]);
        assert_eq!(
            log.sink,
            Sink::Tcp(HostPort {
                host: "127.0.0.1".into(),
                port: 9999
            })
        );
    }

    #[test]
    fn targets_accept_ipv6_and_reject_port_zero() {
        assert_eq!(
            host_port(&json!("[::1]:8080")).map(|h| h.to_string()),
            Ok("[::1]:8080".into())
        );
        assert!(host_port(&json!("host:0")).is_err());
        assert!(host_port(&json!("host:99999")).is_err());
    }

    #[test]
    fn lua_shaped_input_is_accepted() {
        // Kong hands over Lua tables: numbers are doubles, empty arrays are {}.
        let c = json!({
            "auth": {"url": "https://auth.internal/v1/me", "timeout_ms": 250.0, "forward_headers": {}},
            "routes": {},
        });
        let c = compile(c).expect("valid");
        assert_eq!(c.auth.timeout_ms, 250);
        assert!(c.auth.url.tls);
        assert_eq!(c.auth.url.port, 443);
    }

    #[test]
    fn duplicate_names_are_reported_even_on_invalid_records() {
        let mut c = minimal();
        c["routes"] = json!([
            {"name": "email", "target": "no-port"},
            {"name": "email", "target": "a:1"}
        ]);
        assert_eq!(
            errors(c),
            vec![
                "routes[1].target: expected host:port, got 'no-port'",
                "routes: duplicate route name 'email'",
            ]
        );
    }

    #[test]
    fn framing_headers_cannot_be_forwarded() {
        let mut c = minimal();
        c["auth"]["forward_headers"] = json!(["x-tenant", "Host"]);
        assert_eq!(
            errors(c),
            vec!["auth.forward_headers: item 2: 'host' cannot be sent to the auth service (it frames the request)"]
        );
    }

    #[test]
    fn auth_headers_are_sent_once() {
        // Found by the fuzzing oracle (config_compile: every header of a
        // compiled config's auth request carries its own value): a header
        // listed twice went to the auth service twice.
        let mut c = minimal();
        c["auth"]["credential_headers"] = json!(["authorization", "X-Api-Key", "Authorization"]);
        c["auth"]["forward_headers"] = json!(["x-tenant", "x-api-key", "X-Tenant"]);
        assert_eq!(
            errors(c),
            vec![
                "auth.credential_headers: duplicate header name 'authorization'",
                "auth.forward_headers: duplicate header name 'x-tenant'",
                "auth.forward_headers: 'x-api-key' is already a credential header",
            ]
        );
    }

    #[test]
    fn url_hosts_must_be_host_names() {
        // Found by fuzzing (config_compile): the URL standard accepts
        // "http://a`b/", whose host the HTTP/1.1 encoder then refuses, so
        // every auth call (or log batch) of an accepted config failed.
        for url in [
            "http://a`b/auth",
            "http://a{b}/",
            "https://a\"b/",
            "http://a!b/",
        ] {
            let mut c = minimal();
            c["auth"]["url"] = json!(url);
            let errs = errors(c);
            assert_eq!(errs.len(), 1, "{url}: {errs:?}");
            assert!(errs[0].starts_with("auth.url: "), "{url}: {errs:?}");
            assert!(errs[0].contains("invalid host name"), "{url}: {errs:?}");
        }
        let mut c = minimal();
        c["log"] = json!({"enabled": true, "sink": "http", "url": "http://logs{1}:9/x"});
        let errs = errors(c);
        assert!(errs.iter().any(|e| e.starts_with("log.url: ")), "{errs:?}");
        for url in [
            "http://Auth.Example_1-a:81/x",
            "http://[::1]/",
            "http://10.0.0.1/",
            "https://b\u{fc}cher.de/",
        ] {
            let mut c = minimal();
            c["auth"]["url"] = json!(url);
            let got = compile(c).map(|c| c.auth.url.host);
            assert!(got.is_ok(), "{url}: {got:?}");
        }
    }

    #[test]
    fn invalid_json_text_is_a_clear_error() {
        let e = compile_json("{").expect_err("invalid");
        assert!(e.to_string().starts_with("config is not valid JSON"), "{e}");
    }
}
