//! Fuzzes the route decision.
//!
//! Input, first byte even: a fixed, realistic route table and a request
//! written as text, one field per line: method, path, API-version header
//! (empty line: none), account id, account JSON (the rest; not JSON: `{}`).
//! First byte odd: a route table and a request both generated from the
//! bytes, with small alphabets so prefixes nest and values collide.
//!
//! Oracles: `decide` (path index) equals `explain` (every route in order);
//! the explanation lists routes in ascending order ending with the chosen one
//! (all routes when none matched) and gives a mismatch for every other step;
//! the chosen prefix is a prefix of the path; a stripped path starts with `/`
//! and is the path's tail; generated routes (always valid) compile.
#![no_main]

use auth_router_native::config::{self, Config};
use auth_router_native::routing::{Request, Router};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn deployment() -> &'static Router {
    static ROUTER: OnceLock<Option<Router>> = OnceLock::new();
    let r = ROUTER.get_or_init(|| {
        let c = config::compile(json!({
            "auth": {"url": "http://127.0.0.1:9000/auth"},
            "api_version": {"path_prefix_pattern": "^/(v\\d+)/", "default": "v3"},
            "routes": [
                {"name": "legacy-old-versions", "api_versions": ["v1", "v2"], "upstream": "legacy"},
                {"name": "email", "paths": ["/send"], "methods": ["POST"], "target": "email:8080", "strip_prefix": true},
                {"name": "calendar-allowlist", "paths": ["/events", "/calendars"], "accounts": ["acc_vip"], "target": "calendar-v2:8080"},
                {"name": "calendar-v2", "paths": ["/events", "/calendars"], "flags": ["new-calendar"], "percentage": 25, "target": "calendar-v2:8080"},
                {"name": "calendar", "paths": ["/events", "/calendars"], "target": "calendar:8080"},
                {"name": "pro-reports", "paths": ["/reports", "/reports/v2/"], "account_match": {"/plan": ["pro", "enterprise"], "/tier": ["1", "2"]}, "upstream": "reports", "strip_prefix": true},
                {"name": "beta-api", "paths": ["/api/"], "methods": ["GET", "PUT"], "flags": ["beta"], "percentage": 50.5, "target": "[::1]:9001", "strip_prefix": true},
                {"name": "catch-all-pro", "account_match": {"/plan": ["pro"]}, "percentage": 0.01, "target": "pro:80"}
            ]
        }));
        c.ok().map(|c: Config| Router::new(&c))
    });
    match r {
        Some(r) => r,
        None => panic!("the fixed route table does not compile"),
    }
}

fn check(router: &Router, req: &Request<'_>) {
    let d = router.decide(req);
    assert_eq!(router.decide(req), d, "decide is not deterministic");
    let ex = router.explain(req);
    assert_eq!(ex.decision, d, "decide and explain disagree");
    let idx: Vec<usize> = ex.steps.iter().map(|s| s.index).collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "steps out of order: {idx:?}"
    );
    match &d {
        Some(d) => {
            assert_eq!(idx.last(), Some(&d.index));
            assert!(d.index < router.len());
            for s in &ex.steps[..ex.steps.len() - 1] {
                assert!(s.mismatch.is_some());
            }
            assert!(ex.steps.last().is_some_and(|s| s.mismatch.is_none()));
            if let Some(p) = d.prefix {
                assert!(
                    req.path.starts_with(p.as_bytes()),
                    "{p:?} is not a prefix of {:?}",
                    req.path
                );
            }
            if let Some(s) = &d.path {
                assert!(d.prefix.is_some(), "stripped without a prefix");
                assert!(s.starts_with(b"/"), "stripped path {s:?}");
                assert!(
                    req.path.ends_with(&s[1..]),
                    "{s:?} is not a tail of {:?}",
                    req.path
                );
                assert!(s.len() <= req.path.len() + 1);
            }
        }
        None => {
            assert_eq!(idx, (0..router.len()).collect::<Vec<_>>());
            assert!(ex.steps.iter().all(|s| s.mismatch.is_some()));
        }
    }
    if let Some(v) = &ex.api_version {
        assert!(!v.value.is_empty());
    }
}

fn fixed(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(5, '\n');
    let method = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("");
    let version = lines.next().filter(|v| !v.is_empty());
    let id = lines.next().unwrap_or("");
    let account: Value = serde_json::from_str(lines.next().unwrap_or("")).unwrap_or(json!({}));
    check(
        deployment(),
        &Request {
            method,
            path: path.as_bytes(),
            api_version_header: version.map(str::as_bytes),
            account: &account,
            account_id: id,
        },
    );
}

const PATH_BITS: &[&str] = &["/", "a", "b", "/a", "/b", "ab", "é"];
const WORDS: &[&str] = &["v1", "v2", "x", "y", "1", "0"];

fn word(u: &mut Unstructured<'_>) -> ArbResult<String> {
    Ok(u.choose(WORDS)?.to_string())
}

fn list(u: &mut Unstructured<'_>, max: usize) -> ArbResult<Vec<String>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| word(u)).collect()
}

fn path(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let n = u.int_in_range(0..=4)?;
    let mut p = String::from("/");
    for _ in 0..n {
        p.push_str(u.choose(PATH_BITS)?);
    }
    Ok(p)
}

fn generated(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let n = u.int_in_range(0..=12)?;
    let mut routes = Vec::new();
    for i in 0..n {
        let mut r = serde_json::Map::new();
        r.insert("name".into(), json!(format!("r{i}")));
        let npaths = u.int_in_range(0..=3)?;
        let paths: Vec<String> = (0..npaths).map(|_| path(u)).collect::<ArbResult<_>>()?;
        r.insert("paths".into(), json!(paths));
        if u.ratio(1u8, 3)? {
            let m: Vec<&str> = (0..u.int_in_range(1..=2)?)
                .map(|_| u.choose(&["GET", "POST", "put"]).copied())
                .collect::<ArbResult<_>>()?;
            r.insert("methods".into(), json!(m));
        }
        for key in ["api_versions", "accounts", "flags"] {
            if u.ratio(1u8, 4)? {
                r.insert(key.into(), json!(list(u, 2)?));
            }
        }
        if u.ratio(1u8, 4)? {
            let ptr = u.choose(&["/plan", "/n", "/a~1b", "/list/0"])?;
            let values = list(u, 2)?;
            if !values.is_empty() {
                let mut m = serde_json::Map::new();
                m.insert(ptr.to_string(), json!(values));
                r.insert("account_match".into(), Value::Object(m));
            }
        }
        if u.ratio(1u8, 4)? {
            r.insert(
                "percentage".into(),
                json!(f64::from(u.int_in_range(0u16..=10_000)?) / 100.0),
            );
        }
        r.insert("target".into(), json!("t:1"));
        r.insert("strip_prefix".into(), json!(u.arbitrary::<bool>()?));
        routes.push(Value::Object(r));
    }
    let mut api = json!({"default": word(u)?});
    if u.arbitrary()? {
        api["path_prefix_pattern"] = json!("^/(v\\d)");
    }
    let c = match config::compile(json!({
        "auth": {"url": "http://a/"},
        "api_version": api,
        "routes": routes,
    })) {
        Ok(c) => c,
        Err(e) => panic!("generated routes do not compile: {e}"),
    };
    let router = Router::new(&c);
    let method = *u.choose(&["GET", "POST", "PUT", "put"])?;
    let mut p = path(u)?;
    if u.ratio(1u8, 4)? {
        p = u.arbitrary()?;
    }
    let version = if u.arbitrary()? { Some(word(u)?) } else { None };
    let id = word(u)?;
    let flags = if u.arbitrary()? {
        json!(list(u, 3)?)
    } else {
        let mut m = serde_json::Map::new();
        for f in list(u, 3)? {
            m.insert(f, json!(u.arbitrary::<bool>()?));
        }
        Value::Object(m)
    };
    let plan = if u.arbitrary()? {
        json!(word(u)?)
    } else {
        json!(u.int_in_range(0..=2)?)
    };
    let account = json!({"id": id, "plan": plan, "n": u.int_in_range(0..=2)?, "a/b": word(u)?,
                          "list": [word(u)?], "flags": flags, "api_version": word(u)?});
    check(
        &router,
        &Request {
            method,
            path: p.as_bytes(),
            api_version_header: version.as_deref().map(str::as_bytes),
            account: &account,
            account_id: &id,
        },
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode % 2 == 0 {
        fixed(rest);
    } else {
        let _ = generated(&mut Unstructured::new(rest));
    }
});
