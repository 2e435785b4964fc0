//! Oracles and input generators shared by the fuzz targets.
//!
//! Each `check_*` function panics (the fuzzer's crash signal) when a property
//! of the native core does not hold; the targets only turn bytes into inputs.

use auth_router_native::auth::flow::{Plugin, Step};
use auth_router_native::auth::verdict::{Account, Verdict};
use auth_router_native::config::{self, Config, ConfigError, Sink};
use auth_router_native::exchange::CacheStatus;
use auth_router_native::log::recorder::LogMeta;
use serde_json::{json, Value};
use std::sync::Arc;

/// A cache-key secret long enough for every code path.
pub const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef";

/// Checks what a compile result promises, whatever the input was.
///
/// - An invalid config names at least one field.
/// - A compiled config's normalized form compiles again to the same config
///   (defaults are filled once; normalizing is idempotent).
/// - A compiled config is usable as is ("validated once"): its auth request
///   encodes and parses back as HTTP/1.1, its router decides, and an enabled
///   log ships a record to its sink.
pub fn check_compiled(result: Result<Config, ConfigError>) {
    let c = match result {
        Ok(c) => c,
        Err(ConfigError::Invalid(errs)) => {
            assert!(!errs.is_empty(), "rejected without an error");
            for e in &errs {
                assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            return;
        }
        Err(ConfigError::Json(_)) => return,
    };
    check_normalized_is_a_fixpoint(&c);
    check_usable(&c);
}

fn check_normalized_is_a_fixpoint(c: &Config) {
    let again = match config::compile(c.normalized.clone()) {
        Ok(again) => again,
        Err(e) => panic!("normalized config does not compile: {e}\n{}", c.normalized),
    };
    assert_eq!(again.normalized, c.normalized, "normalizing twice differs");
    assert_eq!(again.auth, c.auth);
    assert_eq!(again.routes, c.routes);
    assert_eq!(again.upstream_headers, c.upstream_headers);
    assert_eq!(again.response_headers, c.response_headers);
    assert_eq!(again.route_header, c.route_header);
    assert_eq!(again.hide_credentials, c.hide_credentials);
    assert_eq!(again.flags_pointer, c.flags_pointer);
    assert_eq!(again.log, c.log);
    let (a, b) = (&again.api_version, &c.api_version);
    assert_eq!(a.header, b.header);
    assert_eq!(a.account_pointer, b.account_pointer);
    assert_eq!(a.default, b.default);
    assert_eq!(
        a.path_prefix_pattern.as_ref().map(|r| r.as_str()),
        b.path_prefix_pattern.as_ref().map(|r| r.as_str())
    );
}

fn check_usable(c: &Config) {
    let p = Plugin::new(c.clone(), SECRET);
    let auth = &c.auth;

    // The auth request of a credential that is not cached yet.
    let mut ex = p.begin(b"POST", b"/send?x=1", 1_000);
    let n = auth.credential_headers.len() + auth.forward_headers.len();
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("Bearer t{i}").into_bytes())
        .collect();
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(&v[..])).collect();
    assert_eq!(p.lookup(&mut ex, &values, 0.0), Step::Miss);
    let wire = match p.auth_request(&ex) {
        Ok(w) => w,
        Err(e) => panic!("a compiled config cannot encode its auth request: {e}"),
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&wire) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, wire.len(), "bytes after the head"),
        other => panic!("auth request does not parse: {other:?}"),
    }
    assert_eq!(req.path, Some(auth.url.path.as_str()));
    let names = auth.credential_headers.iter().chain(&auth.forward_headers);
    for (i, name) in names.enumerate() {
        let sent = req.headers.iter().find(|h| h.name == name.as_str());
        assert_eq!(
            sent.map(|h| h.value),
            Some(format!("Bearer t{i}").as_bytes()),
            "{name:?} not forwarded"
        );
    }
    assert_eq!(
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .count(),
        1
    );

    // Route an authenticated request.
    let account = json!({"id": "acc_1", "plan": "pro", "flags": ["beta"], "api_version": "v2"});
    let account = Account::new("acc_1".into(), &account, c);
    for (_, v) in account
        .upstream_headers
        .iter()
        .chain(&account.response_headers)
    {
        assert!(auth_router_native::auth::verdict::is_safe_header_value(v));
    }
    ex.set_verdict(Verdict::Allow(Arc::new(account)), CacheStatus::Miss);
    if let Some(action) = p.route(&mut ex, b"/send/x", Some(b"v1")) {
        assert!(c.routes.iter().any(|r| r.name == action.name));
        if let Some(path) = &action.path {
            assert!(path.starts_with(b"/"), "{path:?}");
        }
    }

    // An enabled log ships a record.
    if let (Some(log), Some(rec)) = (&c.log, &p.recorder) {
        let meta = LogMeta {
            now_ms: 1_010,
            client_ip: "203.0.113.9",
            method: "POST",
            uri: "/send?x=1",
            request_headers: auth
                .credential_headers
                .iter()
                .map(|h| (h.as_str().into(), "Bearer secret".into()))
                .chain([("x-plain".into(), "Bearer secret".into())])
                .collect(),
            ..LogMeta::default()
        };
        ex.response(200);
        if let Err(e) = rec.record(&ex, &meta) {
            panic!("record failed: {e}");
        }
        let Some((_, wire, records)) = rec.take(0.0, false) else {
            panic!("a queued record is not shipped ({:?})", log.sink);
        };
        assert_eq!(records, 1);
        let body = match &log.sink {
            Sink::Tcp(_) => wire.strip_suffix(b"\n").unwrap_or(&wire).to_vec(),
            Sink::Http(url) => {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut req = httparse::Request::new(&mut headers);
                let head = match req.parse(&wire) {
                    Ok(httparse::Status::Complete(n)) => n,
                    other => panic!("log POST does not parse: {other:?}"),
                };
                assert_eq!(req.method, Some("POST"));
                assert_eq!(req.path, Some(url.path.as_str()));
                wire[head..].to_vec()
            }
        };
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => panic!("log payload is not JSON: {e}"),
        };
        let rec_v = match &v {
            Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        // Credential headers are always masked.
        for h in &auth.credential_headers {
            assert_eq!(
                rec_v["request"]["headers"][h.as_str()],
                "[REDACTED]",
                "{h:?}"
            );
        }
        let plain = log.redact_headers.iter().all(|h| h.as_str() != "x-plain");
        assert_eq!(
            rec_v["request"]["headers"]["x-plain"] == "Bearer secret",
            plain
        );
    }
}

/// Reference redaction on a parsed value: every object member whose key is a
/// listed field (ASCII case-insensitive), at any depth, becomes the mask.
pub fn redact_value(v: &mut Value, fields: &[String]) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if fields.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                    *val = Value::String(auth_router_native::log::redact::MASK.into());
                } else {
                    redact_value(val, fields);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, fields)),
        _ => {}
    }
}

// ---- a config generator that knows the schema ----

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};

/// How to generate one config field.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string, usually from the list.
    Str(&'static [&'static str]),
    /// An integer, usually from the list.
    Int(&'static [i64]),
    /// A number, usually from the list.
    Num(&'static [f64]),
    /// A boolean.
    Bool,
    /// An array of strings, usually from the list.
    List(&'static [&'static str]),
    /// An object of pointer to an array of strings.
    Map(&'static [&'static str], &'static [&'static str]),
    /// A record with these fields.
    Rec(&'static [(&'static str, Kind)]),
    /// An array of records with these fields.
    Recs(&'static [(&'static str, Kind)]),
}

const URLS: &[&str] = &[
    "http://127.0.0.1:9000/auth",
    "https://auth.internal/v1/me?scope=a",
    "http://[::1]:8080/",
    "http://auth",
    "https://auth.example.com:8443/p/q",
    "ftp://x",
    "http://:80/",
    "not a url",
];
const HEADERS: &[&str] = &[
    "authorization",
    "X-Api-Key",
    "x-tenant",
    "x-account-id",
    "x-route",
    "cookie",
    "host",
    "Content-Length",
    "bad header",
];
const POINTERS: &[&str] = &[
    "",
    "/id",
    "/plan",
    "/flags",
    "/a~1b",
    "/a~0b",
    "/0",
    "/data/account",
    "/exp",
    "id",
    "/~2",
];
const HOSTS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "collector",
    "logs.example.com",
    "a_b",
    "bad host",
    "1.2.3.4.5",
];
const TARGETS: &[&str] = &[
    "127.0.0.1:8002",
    "email:8080",
    "[::1]:80",
    "[::1]",
    "host:0",
    "no-port",
    "a:65536",
];
const PATHS: &[&str] = &[
    "/", "/send", "/send/", "/events", "/v1/x", "send", "/a b", "/q?x",
];
const WORDS: &[&str] = &["v1", "v2", "acc_1", "pro", "beta", "email", "legacy", ""];
const NAMES: &[&str] = &["email", "calendar", "legacy-v1", "a.b~c", "bad name", ""];
const METHODS: &[&str] = &["GET", "post", "PUT", "BAD METHOD", ""];
const REGEXES: &[&str] = &["^/(v\\d+)/", "^/v\\d+/", "(", "^/(?P<v>[a-z]+)", ""];
const INTS: &[i64] = &[0, 1, 64, 250, 1000, 65535, 65536, 2_147_483_646, -1];
const NUMS: &[f64] = &[0.0, 0.5, 25.0, 60.0, 100.0, 100.5, 31_536_000.0, -1.0];

const AUTH: &[(&str, Kind)] = &[
    ("url", Kind::Str(URLS)),
    ("method", Kind::Str(&["GET", "POST", "get", "PUT"])),
    ("credential_headers", Kind::List(HEADERS)),
    ("forward_headers", Kind::List(HEADERS)),
    ("timeout_ms", Kind::Int(INTS)),
    ("keepalive_ms", Kind::Int(INTS)),
    ("pool_size", Kind::Int(INTS)),
    ("ssl_verify", Kind::Bool),
    ("account_pointer", Kind::Str(POINTERS)),
    ("account_id_pointer", Kind::Str(POINTERS)),
    ("exp_pointer", Kind::Str(POINTERS)),
    ("ttl_s", Kind::Num(NUMS)),
    ("negative_ttl_s", Kind::Num(NUMS)),
    ("stale_ttl_s", Kind::Num(NUMS)),
    ("cache_size", Kind::Int(INTS)),
    (
        "shared_dict",
        Kind::Str(&["auth_router", "my-dict", "bad dict", ""]),
    ),
    ("failure_status", Kind::Int(&[500, 503, 599, 600, 404])),
];
const API_VERSION: &[(&str, Kind)] = &[
    ("header", Kind::Str(HEADERS)),
    ("path_prefix_pattern", Kind::Str(REGEXES)),
    ("account_pointer", Kind::Str(POINTERS)),
    ("default", Kind::Str(WORDS)),
];
const ROUTE: &[(&str, Kind)] = &[
    ("name", Kind::Str(NAMES)),
    ("paths", Kind::List(PATHS)),
    ("methods", Kind::List(METHODS)),
    ("api_versions", Kind::List(WORDS)),
    ("accounts", Kind::List(WORDS)),
    ("account_match", Kind::Map(POINTERS, WORDS)),
    ("flags", Kind::List(WORDS)),
    ("percentage", Kind::Num(NUMS)),
    (
        "upstream",
        Kind::Str(&["legacy", "reports", "bad upstream"]),
    ),
    ("target", Kind::Str(TARGETS)),
    ("strip_prefix", Kind::Bool),
];
const HEADER_RULE: &[(&str, Kind)] = &[
    ("name", Kind::Str(HEADERS)),
    ("pointer", Kind::Str(POINTERS)),
    ("value", Kind::Str(&["auth-router", "a\r\nb", ""])),
];
const LOG: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    ("sink", Kind::Str(&["tcp", "http", "udp"])),
    ("host", Kind::Str(HOSTS)),
    ("port", Kind::Int(INTS)),
    ("url", Kind::Str(URLS)),
    ("tls", Kind::Bool),
    ("request_body", Kind::Bool),
    ("response_body", Kind::Bool),
    ("max_body_bytes", Kind::Int(INTS)),
    ("redact_headers", Kind::List(HEADERS)),
    ("redact_body_fields", Kind::List(&["password", "token", ""])),
    ("batch_max_entries", Kind::Int(INTS)),
    ("flush_interval_ms", Kind::Int(INTS)),
    (
        "queue_max_bytes",
        Kind::Int(&[1024, 8_388_608, 1 << 30, 100]),
    ),
    ("retry_max_s", Kind::Num(NUMS)),
    ("timeout_ms", Kind::Int(INTS)),
    ("keepalive_ms", Kind::Int(INTS)),
    ("request_id_header", Kind::Str(HEADERS)),
];
/// The whole config.
pub const CONFIG: &[(&str, Kind)] = &[
    ("auth", Kind::Rec(AUTH)),
    ("api_version", Kind::Rec(API_VERSION)),
    ("flags_pointer", Kind::Str(POINTERS)),
    ("routes", Kind::Recs(ROUTE)),
    ("upstream_headers", Kind::Recs(HEADER_RULE)),
    ("response_headers", Kind::Recs(HEADER_RULE)),
    ("route_header", Kind::Str(HEADERS)),
    ("hide_credentials", Kind::Bool),
    ("log", Kind::Rec(LOG)),
];

/// A string: usually one of `vocab`, sometimes one with a byte changed, sometimes any.
pub fn gen_str(u: &mut Unstructured<'_>, vocab: &[&str]) -> ArbResult<String> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.arbitrary::<String>()?,
        1 => {
            let mut s = u.choose(vocab)?.to_string();
            let c: char = u.arbitrary()?;
            let at = u.int_in_range(0..=s.len())?;
            if s.is_char_boundary(at) {
                s.insert(at, c);
            }
            s
        }
        _ => u.choose(vocab)?.to_string(),
    })
}

/// Any JSON value, small.
pub fn gen_any(u: &mut Unstructured<'_>, depth: u32) -> ArbResult<Value> {
    let top = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0u8..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<f64>()?), // a non-finite number becomes null
        4 => Value::String(u.arbitrary()?),
        5 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array(
                (0..n)
                    .map(|_| gen_any(u, depth - 1))
                    .collect::<ArbResult<_>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=3)?;
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                m.insert(u.arbitrary()?, gen_any(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

/// A value for `kind`: usually of the right type, sometimes anything.
pub fn gen_kind(u: &mut Unstructured<'_>, kind: Kind, depth: u32) -> ArbResult<Value> {
    if u.ratio(1u8, 24)? {
        return gen_any(u, 1);
    }
    Ok(match kind {
        Kind::Str(vocab) => Value::String(gen_str(u, vocab)?),
        Kind::Int(vocab) => match u.int_in_range(0u8..=7)? {
            0 => json!(u.arbitrary::<i64>()?),
            1 => json!(*u.choose(vocab)? as f64), // Lua numbers are doubles
            2 => json!(u.arbitrary::<f64>()?),
            _ => json!(*u.choose(vocab)?),
        },
        Kind::Num(vocab) => match u.int_in_range(0u8..=5)? {
            0 => json!(u.arbitrary::<f64>()?),
            1 => json!(u.int_in_range(0u32..=10_000)? as f64 / 100.0),
            _ => json!(*u.choose(vocab)?),
        },
        Kind::Bool => Value::Bool(u.arbitrary()?),
        Kind::List(vocab) => {
            let n = u.int_in_range(0..=3)?;
            if n == 0 && u.arbitrary()? {
                json!({}) // an empty Lua table
            } else {
                Value::Array(
                    (0..n)
                        .map(|_| gen_str(u, vocab).map(Value::String))
                        .collect::<ArbResult<_>>()?,
                )
            }
        }
        Kind::Map(keys, vocab) => {
            let n = u.int_in_range(0..=2)?;
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                let k = gen_str(u, keys)?;
                m.insert(k, gen_kind(u, Kind::List(vocab), depth)?);
            }
            Value::Object(m)
        }
        Kind::Rec(fields) => gen_record(u, fields, depth)?,
        Kind::Recs(fields) => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| gen_record(u, fields, depth))
                    .collect::<ArbResult<_>>()?,
            )
        }
    })
}

/// A record: each field present or not, rarely an unknown one.
pub fn gen_record(
    u: &mut Unstructured<'_>,
    fields: &[(&'static str, Kind)],
    depth: u32,
) -> ArbResult<Value> {
    let mut m = serde_json::Map::new();
    if depth == 0 {
        return Ok(Value::Object(m));
    }
    for (i, (name, kind)) in fields.iter().enumerate() {
        // The first field (auth, url, name) is what a record is least often without.
        let present = if i == 0 {
            !u.ratio(1u8, 16)?
        } else {
            u.ratio(1u8, 3)?
        };
        if present {
            m.insert(name.to_string(), gen_kind(u, *kind, depth - 1)?);
        }
    }
    if u.ratio(1u8, 32)? {
        m.insert(gen_str(u, &["typo"])?, gen_any(u, 1)?);
    }
    Ok(Value::Object(m))
}

// ---- bodies ----

/// Field names a redactor is given, and keys bodies use.
pub const FIELDS: &[&str] = &["password", "token", "secret", "Pass", "a"];
const KEYS: &[&str] = &[
    "password", "PassWord", "token", "user", "to", "text", "a", "secrets",
];
const CHARS: &[char] = &[
    'a', 'Z', ' ', '"', '\\', '/', '\n', '\u{1}', 'é', '€', '😀', '&', '=',
];

/// JSON text for `s` (quotes included), with random escapes.
pub fn json_string(u: &mut Unstructured<'_>, s: &str, out: &mut String) -> ArbResult<()> {
    out.push('"');
    for c in s.chars() {
        let must = c == '"' || c == '\\' || (c as u32) < 0x20;
        match u.int_in_range(0u8..=7)? {
            0 | 1 => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    if u.arbitrary()? {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
            2 if c == '/' => out.push_str("\\/"),
            _ if must => match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                _ => out.push_str(&format!("\\u{:04x}", c as u32)),
            },
            _ => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

fn ws(u: &mut Unstructured<'_>, out: &mut String) -> ArbResult<()> {
    if u.ratio(1u8, 4)? {
        out.push_str(u.choose(&[" ", "\n", "\t", "\r\n  "])?);
    }
    Ok(())
}

fn text(u: &mut Unstructured<'_>, vocab: &[&str]) -> ArbResult<String> {
    let mut s = u.choose(vocab)?.to_string();
    for _ in 0..u.int_in_range(0..=3)? {
        s.push(*u.choose(CHARS)?);
    }
    if u.ratio(1u8, 8)? {
        s = u.arbitrary()?;
    }
    Ok(s)
}

/// A valid JSON text whose keys often are redacted fields (random case and
/// escapes), with whitespace, escapes and number spellings varied.
pub fn gen_json_text(u: &mut Unstructured<'_>, depth: u32, out: &mut String) -> ArbResult<()> {
    ws(u, out)?;
    let top = if depth == 0 { 5 } else { 7 };
    match u.int_in_range(0u8..=top)? {
        0 => out.push_str(u.choose(&["true", "false", "null"])?),
        1 => out.push_str(u.choose(&[
            "0",
            "-1",
            "3.25",
            "1e9",
            "-0.5E-3",
            "12345678901234567890",
        ])?),
        2 => out.push_str(&u.arbitrary::<i32>()?.to_string()),
        3..=5 => {
            let s = text(u, &["hunter2", "bob", "", "x"])?;
            json_string(u, &s, out)?;
        }
        6 => {
            out.push('[');
            let n = u.int_in_range(0..=3)?;
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                gen_json_text(u, depth - 1, out)?;
            }
            ws(u, out)?;
            out.push(']');
        }
        _ => {
            out.push('{');
            let n = u.int_in_range(0..=4)?;
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                ws(u, out)?;
                let mut k = u.choose(KEYS)?.to_string();
                if u.ratio(1u8, 4)? {
                    k = k.to_uppercase();
                }
                if u.ratio(1u8, 8)? {
                    k = text(u, KEYS)?;
                }
                json_string(u, &k, out)?;
                ws(u, out)?;
                out.push(':');
                gen_json_text(u, depth - 1, out)?;
            }
            ws(u, out)?;
            out.push('}');
        }
    }
    ws(u, out)
}

/// A form-urlencoded body whose keys often are redacted fields, plain,
/// percent-encoded or nested (`user[password]`, `user.password`).
pub fn gen_form(u: &mut Unstructured<'_>, out: &mut Vec<u8>) -> ArbResult<()> {
    let n = u.int_in_range(0..=5)?;
    for i in 0..n {
        if i > 0 {
            out.push(*u.choose(b"&&&;")?);
        }
        let key = u.choose(KEYS)?;
        let key = match u.int_in_range(0u8..=5)? {
            0 => format!("user[{key}]"),
            1 => format!("user.{key}"),
            2 => format!("{key}[]"),
            3 => key.bytes().map(|b| format!("%{b:02X}")).collect(),
            _ => key.to_string(),
        };
        out.extend_from_slice(key.as_bytes());
        if !u.ratio(1u8, 8)? {
            out.push(b'=');
            let v = text(u, &["hunter2", "bob", "a+b%20c", "x=y"])?;
            out.extend_from_slice(v.as_bytes());
        }
    }
    Ok(())
}

/// A body: JSON text, a form, or any bytes.
pub fn gen_body(u: &mut Unstructured<'_>) -> ArbResult<Vec<u8>> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 | 1 => {
            let mut s = String::new();
            gen_json_text(u, 4, &mut s)?;
            s.into_bytes()
        }
        2 | 3 => {
            let mut b = Vec::new();
            gen_form(u, &mut b)?;
            b
        }
        _ => u.arbitrary()?,
    })
}
