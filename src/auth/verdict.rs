//! Verdict: turns the auth service's HTTP answer into a verdict and a cache
//! lifetime, and builds the account's header values once per cache fill.

use crate::auth::AuthError;
use crate::config::{Config, HeaderRule, HeaderSource, MAX_HEADER_VALUE_BYTES};
use crate::http1::Response;
use serde_json::Value;
use std::sync::Arc;

/// A header value rendered for an account: the index of its rule in the
/// config's `upstream_headers` / `response_headers` (the name lives there,
/// once), and the value.
pub type HeaderValue = (u16, Box<str>);

/// An authenticated account, as compact as the config allows: an L1 entry
/// keeps only what a request reads (the id, the rendered header values, the
/// fields routes look at, the consumer value), never the whole object the
/// auth service sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The account id.
    pub id: Box<str>,
    /// The account's fields that routes read (`account_match` pointers,
    /// `flags_pointer`, `api_version.account_pointer` when routes use
    /// them), at their places; `Null` when routes read none.
    pub object: Value,
    /// Values for `upstream_headers`, bad values already dropped.
    pub upstream_headers: Box<[HeaderValue]>,
    /// Values for `response_headers`, bad values already dropped.
    pub response_headers: Box<[HeaderValue]>,
    /// How many header values were dropped (CR/LF/NUL, too long, not scalar).
    pub dropped_headers: u32,
    /// The value matched against a Kong consumer (`consumer.pointer`), when
    /// consumer mapping is on and the account holds a string or number there.
    pub consumer: Option<Box<str>>,
}

/// A 401/403 verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 401 or 403.
    pub status: u16,
    /// The auth service's `WWW-Authenticate`, passed to the client.
    pub www_authenticate: Option<String>,
}

/// What the auth service said about a credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Authenticated: the account.
    Allow(Arc<Account>),
    /// Rejected with 401 or 403.
    Deny(Arc<Denial>),
}

/// A verdict with the time it may be cached, in seconds (0: do not cache).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Cache lifetime before the stale window.
    pub ttl: f64,
}

impl Account {
    /// The account with id `id` from the auth service's `object`: renders
    /// the configured headers and the consumer value, and keeps only the
    /// fields routes read.
    pub fn new(id: String, object: &Value, config: &Config) -> Self {
        let mut dropped = 0;
        let upstream_headers = render_headers(&config.upstream_headers, object, &mut dropped);
        let response_headers = render_headers(&config.response_headers, object, &mut dropped);
        let consumer =
            config
                .consumer
                .as_ref()
                .and_then(|c| match object.pointer(c.pointer.as_str()) {
                    Some(v @ (Value::String(_) | Value::Number(_))) => scalar(v),
                    _ => None,
                });
        Account {
            id: id.into(),
            object: prune(object, &routed_pointers(config)),
            upstream_headers,
            response_headers,
            dropped_headers: dropped,
            consumer: consumer.map(String::into_boxed_str),
        }
    }
}

/// The account pointers routing reads under `config`: `account_match`
/// pointers, `flags_pointer` when a route has `flags`, and
/// `api_version.account_pointer` when a route has `api_versions`.
pub fn routed_pointers(config: &Config) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in &config.routes {
        out.extend(r.account_match.iter().map(|(p, _)| p.as_str()));
    }
    if config.routes.iter().any(|r| !r.flags.is_empty()) {
        out.push(config.flags_pointer.as_str());
    }
    if config.routes.iter().any(|r| !r.api_versions.is_empty()) {
        out.push(config.api_version.account_pointer.as_str());
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A copy of `object` with only the values at `pointers`, at the same
/// places (objects keep those members, arrays keep their length with `null`
/// elsewhere), so that each pointer resolves as it did: `Null` for none.
pub fn prune(object: &Value, pointers: &[&str]) -> Value {
    let mut out = Value::Null;
    for p in pointers {
        if let Some(found) = object.pointer(p) {
            place(&mut out, object, p, found);
        }
    }
    out
}

fn place(out: &mut Value, mut from: &Value, pointer: &str, found: &Value) {
    if pointer.is_empty() {
        *out = found.clone();
        return;
    }
    let mut at = out;
    for token in pointer[1..].split('/') {
        let key = token.replace("~1", "/").replace("~0", "~");
        match from {
            Value::Object(m) => {
                if !at.is_object() {
                    *at = Value::Object(serde_json::Map::new());
                }
                from = &m[&key];
                let Value::Object(dst) = at else { return };
                at = dst.entry(key).or_insert(Value::Null);
            }
            Value::Array(a) => {
                let Ok(i) = key.parse::<usize>() else { return };
                if !at.is_array() {
                    *at = Value::Array(vec![Value::Null; a.len()]);
                }
                from = &a[i];
                let Value::Array(dst) = at else { return };
                at = &mut dst[i];
            }
            _ => return,
        }
    }
    *at = found.clone();
}

fn render_headers(rules: &[HeaderRule], account: &Value, dropped: &mut u32) -> Box<[HeaderValue]> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let value = match &rule.source {
            HeaderSource::Value(v) => Some(v.clone()),
            HeaderSource::Pointer(p) => match account.pointer(p.as_str()) {
                None | Some(Value::Null) => None, // absent field: no header, nothing wrong
                Some(v) => match scalar(v) {
                    Some(s) if is_safe_header_value(&s) => Some(s),
                    _ => {
                        *dropped += 1;
                        None
                    }
                },
            },
        };
        if let (Some(v), Ok(i)) = (value, u16::try_from(i)) {
            out.push((i, v.into_boxed_str()));
        }
    }
    out.into_boxed_slice()
}

/// A string, number or boolean as text; objects and arrays are not header values.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// No CR, LF or NUL (header injection) and within the length cap.
pub fn is_safe_header_value(s: &str) -> bool {
    s.len() <= MAX_HEADER_VALUE_BYTES && !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Cache-Control directives that matter to us: `None` = not stated.
fn cache_control_limit(value: Option<&[u8]>) -> Option<f64> {
    let text = std::str::from_utf8(value?).ok()?;
    let mut limit: Option<f64> = None;
    for d in text.split(',') {
        let d = d.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(0.0);
        }
        if let Some(n) = d.strip_prefix("max-age=") {
            // An unparsable max-age means "stale" per RFC 9111 §4.2.1: do not cache.
            let secs = n.trim_matches('"').parse::<u64>().map_or(0.0, |s| s as f64);
            limit = Some(limit.map_or(secs, |l| l.min(secs)));
        }
    }
    limit
}

/// Interprets the auth service's response at time `now` (epoch seconds).
///
/// Returns the verdict and how long it may be cached: `ttl_s` (or
/// `negative_ttl_s`), lowered by `Cache-Control` (`max-age`, `no-store`,
/// `no-cache`) and, for an allow, by the body's `exp` epoch at `exp_pointer`
/// (RFC 7662: never cache past `exp`). `exp_pointer` is read from the whole
/// body, like `account_pointer`.
pub fn interpret(config: &Config, resp: &Response, now: f64) -> Result<Answer, AuthError> {
    let auth = &config.auth;
    let cc = cache_control_limit(resp.header("cache-control"));
    let limit = |ttl: f64| cc.map_or(ttl, |l| ttl.min(l)).max(0.0);
    match resp.status {
        200..=299 => {
            let body: Value =
                serde_json::from_slice(&resp.body).map_err(|_| AuthError::InvalidJson)?;
            let object = body
                .pointer(auth.account_pointer.as_str())
                .filter(|v| v.is_object())
                .ok_or(AuthError::MissingAccount)?;
            let id = object
                .pointer(auth.account_id_pointer.as_str())
                .and_then(|v| match v {
                    Value::String(_) | Value::Number(_) => scalar(v),
                    _ => None,
                })
                .filter(|id| !id.is_empty())
                .ok_or(AuthError::MissingAccountId)?;
            let mut ttl = limit(auth.ttl_s);
            if let Some(exp) = body
                .pointer(auth.exp_pointer.as_str())
                .and_then(Value::as_f64)
            {
                ttl = ttl.min(exp - now).max(0.0);
            }
            let account = Account::new(id, object, config);
            Ok(Answer {
                verdict: Verdict::Allow(Arc::new(account)),
                ttl,
            })
        }
        401 | 403 => {
            let www_authenticate = resp
                .header("www-authenticate")
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|v| is_safe_header_value(v))
                .map(str::to_string);
            Ok(Answer {
                verdict: Verdict::Deny(Arc::new(Denial {
                    status: resp.status,
                    www_authenticate,
                })),
                ttl: limit(auth.negative_ttl_s),
            })
        }
        other => Err(AuthError::Status(other)),
    }
}

/// Test helpers shared by the auth modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::compile;
    use serde_json::json;

    /// A config with a local auth URL and `extra`'s top-level fields.
    pub(crate) fn config(extra: Value) -> Config {
        let mut c = json!({"auth": {"url": "http://127.0.0.1:9/auth"}});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        compile(c).expect("valid config")
    }

    /// An auth service answer.
    pub(crate) fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
            keepalive: true,
        }
    }

    /// The account of an allow answer.
    pub(crate) fn allow(a: &Answer) -> &Account {
        match &a.verdict {
            Verdict::Allow(a) => a,
            Verdict::Deny(_) => unreachable!("expected allow"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{allow, config, response};
    use super::*;
    use serde_json::json;

    #[test]
    fn allow_uses_configured_ttl() {
        let c = config(json!({}));
        let a = interpret(
            &c,
            &response(200, &[], r#"{"id": "acc_1", "plan": "pro"}"#),
            0.0,
        )
        .expect("ok");
        assert_eq!(&*allow(&a).id, "acc_1");
        assert_eq!(a.ttl, 60.0);
    }

    #[test]
    fn max_age_and_exp_shorten_ttl() {
        let c = config(json!({}));
        let r = response(
            200,
            &[("cache-control", "private, max-age=5")],
            r#"{"id": 7}"#,
        );
        assert_eq!(interpret(&c, &r, 0.0).expect("ok").ttl, 5.0);
        let r = response(200, &[], r#"{"id": "a", "exp": 1000.5}"#);
        assert_eq!(interpret(&c, &r, 990.0).expect("ok").ttl, 10.5);
        let r = response(200, &[], r#"{"id": "a", "exp": 10}"#);
        assert_eq!(interpret(&c, &r, 990.0).expect("ok").ttl, 0.0);
    }

    #[test]
    fn no_store_and_no_cache_are_not_cached() {
        let c = config(json!({}));
        for cc in ["no-store", "No-Cache", "max-age=60, no-store"] {
            let r = response(200, &[("cache-control", cc)], r#"{"id": "a"}"#);
            assert_eq!(interpret(&c, &r, 0.0).expect("ok").ttl, 0.0, "{cc}");
        }
    }

    #[test]
    fn deny_keeps_status_and_www_authenticate() {
        let c = config(json!({}));
        let r = response(401, &[("www-authenticate", "Bearer realm=\"api\"")], "");
        let a = interpret(&c, &r, 0.0).expect("ok");
        assert_eq!(a.ttl, 10.0);
        assert_eq!(
            a.verdict,
            Verdict::Deny(Arc::new(Denial {
                status: 401,
                www_authenticate: Some("Bearer realm=\"api\"".into())
            }))
        );
    }

    #[test]
    fn unusable_answers_are_errors() {
        let c = config(json!({}));
        let cases = [
            (response(500, &[], ""), AuthError::Status(500)),
            (response(404, &[], ""), AuthError::Status(404)),
            (response(200, &[], "not json"), AuthError::InvalidJson),
            (response(200, &[], "[1]"), AuthError::MissingAccount),
            (
                response(200, &[], r#"{"name": "x"}"#),
                AuthError::MissingAccountId,
            ),
            (
                response(200, &[], r#"{"id": ""}"#),
                AuthError::MissingAccountId,
            ),
            (
                response(200, &[], r#"{"id": {"x": 1}}"#),
                AuthError::MissingAccountId,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(interpret(&c, &r, 0.0), Err(want));
        }
    }

    #[test]
    fn account_pointer_selects_the_account() {
        let c = config(json!({"auth": {"url": "http://a/", "account_pointer": "/data/account"}}));
        let r = response(
            200,
            &[],
            r#"{"data": {"account": {"id": "n1"}}, "exp": 100}"#,
        );
        let a = interpret(&c, &r, 40.0).expect("ok");
        assert_eq!(&*allow(&a).id, "n1");
        assert_eq!(a.ttl, 60.0); // exp is read from the whole body
    }

    #[test]
    fn unsafe_header_values_are_dropped_and_counted() {
        let c = config(json!({
            "upstream_headers": [
                {"name": "x-account-id", "pointer": "/id"},
                {"name": "x-plan", "pointer": "/plan"},
                {"name": "x-nested", "pointer": "/nested"},
                {"name": "x-missing", "pointer": "/missing"},
                {"name": "x-gateway", "value": "auth-router"}
            ],
            "response_headers": [{"name": "x-account-plan", "pointer": "/plan"}]
        }));
        let r = response(
            200,
            &[],
            r#"{"id": "a1", "plan": "pro\r\nX-Evil: 1", "nested": {"a": 1}}"#,
        );
        let a = interpret(&c, &r, 0.0).expect("ok");
        let acc = allow(&a);
        // by rule index: x-account-id (0) and x-gateway (4)
        assert_eq!(
            &acc.upstream_headers[..],
            &[(0, "a1".into()), (4, "auth-router".into())]
        );
        assert!(acc.response_headers.is_empty());
        assert_eq!(acc.dropped_headers, 3);
    }

    #[test]
    fn an_account_keeps_only_the_fields_routes_read() {
        let object = json!({"id": "a1", "name": "Ann", "plan": "pro", "flags": ["beta"],
                            "org": {"region": "eu", "size": 9}, "regions": ["eu", "us", "ap"],
                            "a/b": 1, "m~n": 2});
        // header-only config: nothing kept
        let c = config(json!({"upstream_headers": [{"name": "x-plan", "pointer": "/plan"}]}));
        let a = Account::new("a1".into(), &object, &c);
        assert_eq!(a.object, Value::Null);
        assert_eq!(&a.upstream_headers[..], &[(0, "pro".into())]);
        // routes reading fields: each pointer resolves as in the full object
        let pointers = [
            "/org/region",
            "/regions/1",
            "/a~1b",
            "/m~0n",
            "/flags",
            "/missing",
        ];
        let pruned = prune(&object, &pointers);
        for p in pointers {
            assert_eq!(pruned.pointer(p), object.pointer(p), "{p}");
        }
        assert_eq!(pruned.pointer("/name"), None);
        assert_eq!(pruned.pointer("/org/size"), None);
        assert_eq!(pruned.pointer("/regions/2"), Some(&Value::Null));
        let c = config(json!({"routes": [
            {"name": "eu", "account_match": {"/org/region": ["eu"]}, "target": "a:1"},
            {"name": "beta", "flags": ["beta"], "target": "b:1"}]}));
        let a = Account::new("a1".into(), &object, &c);
        assert_eq!(
            a.object,
            json!({"org": {"region": "eu"}, "flags": ["beta"]})
        );
    }

    #[test]
    fn consumer_value_is_a_string_or_number_at_the_pointer_when_mapping_is_on() {
        let off = config(json!({}));
        let r = response(200, &[], r#"{"id": "a1", "login": "ann", "n": 7, "o": {}}"#);
        assert_eq!(allow(&interpret(&off, &r, 0.0).expect("ok")).consumer, None);
        for (pointer, want) in [
            ("/id", Some("a1")),
            ("/login", Some("ann")),
            ("/n", Some("7")),
            ("/o", None),
            ("/missing", None),
        ] {
            let c = config(json!({"consumer": {"by": "username", "pointer": pointer}}));
            let a = interpret(&c, &r, 0.0).expect("ok");
            assert_eq!(allow(&a).consumer.as_deref(), want, "{pointer}");
        }
    }
}
