//! Fuzzes the auth service's answer: raw HTTP/1.1 response bytes, parsed as
//! the plugin parses them, then turned into a verdict, a cache lifetime, an
//! account with its header values, and a shared-dict (L2) entry.
//!
//! Input: one byte picking a config, the time `now` (u32 seconds and u16
//! milliseconds, little endian), then the response bytes.
//!
//! Oracles: the verdict follows the status; the TTL is finite, never negative
//! and never above the configured one; an account has a non-empty id and
//! only safe header values, named by the config; an L2 entry decodes to what
//! was encoded; the plugin's steps agree with `verdict::interpret` and a cached
//! verdict is served from L1 and from L2; any decodable L2 value (here the
//! body) holds the same invariants and re-encodes to itself.
#![no_main]

use auth_router_native::auth::cache::Entry;
use auth_router_native::auth::flow::{Plugin, Step, MAX_AUTH_RESPONSE_BYTES};
use auth_router_native::auth::verdict::{self, Verdict};
use auth_router_native::auth::{shared, AuthError};
use auth_router_native::config::{self, Config, HeaderSource};
use auth_router_native::http1::ResponseParser;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::sync::OnceLock;

fn configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let rules = json!([
            {"name": "x-account-id", "pointer": "/id"},
            {"name": "x-account-plan", "pointer": "/plan"},
            {"name": "x-account-role", "pointer": "/roles/0"},
            {"name": "x-slash", "pointer": "/a~1b"},
            {"name": "x-gateway", "value": "auth-router"}
        ]);
        [
            json!({"auth": {"url": "http://127.0.0.1:9000/auth"},
                   "upstream_headers": rules, "response_headers": [{"name": "x-plan", "pointer": "/plan"}]}),
            json!({"auth": {"url": "https://auth.internal/v1/me", "account_pointer": "/data/account",
                            "account_id_pointer": "/uid", "exp_pointer": "/exp",
                            "ttl_s": 300, "negative_ttl_s": 0, "stale_ttl_s": 0},
                   "upstream_headers": rules}),
            json!({"auth": {"url": "http://auth/", "exp_pointer": "/meta/exp", "ttl_s": 0.5,
                            "negative_ttl_s": 31536000, "stale_ttl_s": 86400}}),
        ]
        .into_iter()
        .filter_map(|c| config::compile(c).ok())
        .collect()
    })
}

fn check_entry(c: &Config, e: &Entry) {
    match &e.verdict {
        Verdict::Allow(a) => {
            assert!(!a.id.is_empty(), "allow without an account id");
            assert!(
                a.object.is_object() || a.object.is_null(),
                "kept fields are not an object"
            );
            let rules = |list: &[(u16, Box<str>)], cfg: &[config::HeaderRule]| {
                for (i, value) in list {
                    assert!(
                        verdict::is_safe_header_value(value),
                        "rule {i}: unsafe value"
                    );
                    assert!(usize::from(*i) < cfg.len(), "rule {i}: not configured");
                }
                // Constants always render.
                for (i, r) in cfg.iter().enumerate() {
                    if let HeaderSource::Value(v) = &r.source {
                        assert!(list.iter().any(|(n, x)| usize::from(*n) == i && &**x == v));
                    }
                }
            };
            rules(&a.upstream_headers, &c.upstream_headers);
            rules(&a.response_headers, &c.response_headers);
            let rendered = a.upstream_headers.len() + a.response_headers.len();
            let configured = c.upstream_headers.len() + c.response_headers.len();
            assert!(rendered + a.dropped_headers as usize <= configured);
        }
        Verdict::Deny(d) => {
            assert!(
                d.status == 401 || d.status == 403,
                "deny status {}",
                d.status
            );
            if let Some(w) = &d.www_authenticate {
                assert!(verdict::is_safe_header_value(w), "unsafe WWW-Authenticate");
            }
        }
    }
}

fn step_of(v: &Verdict) -> Step {
    match v {
        Verdict::Allow(_) => Step::Allow,
        Verdict::Deny(_) => Step::Deny,
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, s0, s1, s2, s3, m0, m1, raw @ ..] = data else {
        return;
    };
    let configs = configs();
    let Some(c) = configs.get(usize::from(*pick) % configs.len()) else {
        return;
    };
    let now = f64::from(u32::from_le_bytes([*s0, *s1, *s2, *s3]))
        + f64::from(u16::from_le_bytes([*m0, *m1]) % 1000) / 1000.0;

    // Any bytes that happen to be an L2 value.
    if let Some(e) = shared::decode_entry(raw, c) {
        check_entry(c, &e);
        assert_eq!(
            shared::decode_entry(&shared::encode_entry(&e), c),
            Some(e)
        );
    }

    let mut parser = ResponseParser::new(MAX_AUTH_RESPONSE_BYTES, false);
    if parser.feed(raw).and_then(|_| parser.eof()).is_err() {
        return;
    }
    let Some(resp) = parser.into_response() else {
        return;
    };

    let answer = verdict::interpret(c, &resp, now);
    let a = &c.auth;
    match &answer {
        Ok(ans) => {
            let (max, want) = match resp.status {
                200..=299 => (a.ttl_s, Step::Allow),
                _ => (a.negative_ttl_s, Step::Deny),
            };
            assert_eq!(step_of(&ans.verdict), want, "status {}", resp.status);
            assert!(
                ans.ttl.is_finite() && ans.ttl >= 0.0 && ans.ttl <= max,
                "ttl {}",
                ans.ttl
            );
            check_entry(
                c,
                &Entry::new(ans.verdict.clone(), now, ans.ttl, a.stale_ttl_s),
            );
            let e = Entry::new(ans.verdict.clone(), now, ans.ttl, a.stale_ttl_s);
            let decoded = shared::decode_entry(&shared::encode_entry(&e), c);
            assert_eq!(decoded, Some(e), "L2 round trip");
        }
        Err(AuthError::Status(s)) => {
            assert!(
                !matches!(s, 200..=299 | 401 | 403),
                "status {s} is an error"
            );
        }
        Err(_) => assert!((200..=299).contains(&resp.status)),
    }

    // The same answer through the plugin's steps.
    let p = Plugin::new(c.clone(), auth_router_fuzz::SECRET);
    let cred = || [Some(&b"Bearer fuzz"[..])];
    let mut ex = p.begin(b"GET", b"/", 0);
    assert_eq!(p.lookup(&mut ex, &cred(), now), Step::Miss);
    let (step, write) = p.auth_response(&mut ex, Ok(&resp), now);
    match &answer {
        Ok(ans) => {
            assert_eq!(step, step_of(&ans.verdict));
            assert_eq!(write.is_some(), ans.ttl > 0.0);
            let mut again = p.begin(b"GET", b"/", 0);
            let cached = p.lookup(&mut again, &cred(), now);
            assert_eq!(cached == step, ans.ttl > 0.0, "L1 after a fill");
        }
        Err(_) => {
            assert_eq!(step, Step::Failed);
            assert!(write.is_none());
        }
    }
    if let Some(w) = write {
        assert!(w.ttl.is_finite() && w.ttl > 0.0);
        // Another worker reads the shared dict.
        let other = Plugin::new(c.clone(), auth_router_fuzz::SECRET);
        let mut ex2 = other.begin(b"GET", b"/", 0);
        assert_eq!(other.lookup(&mut ex2, &cred(), now), Step::Miss);
        assert_eq!(other.load_shared(&mut ex2, &w.value, now), step);
        assert_eq!(ex.account().map(|a| &a.id), ex2.account().map(|a| &a.id));
        assert_eq!(
            ex.account()
                .map(|a| (&a.upstream_headers, &a.response_headers)),
            ex2.account()
                .map(|a| (&a.upstream_headers, &a.response_headers)),
        );
    }
});
