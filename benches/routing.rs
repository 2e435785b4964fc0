//! Routing decision time at 10, 100 and 1000 routes: path matching must not
//! grow with the number of routes (src/routing/index.rs indexes prefixes in a
//! trie).
//!
//! Run: cargo bench --no-default-features --bench routing
//!
//! Each config has N routes: first a legacy route without paths (API versions
//! v1/v2; evaluated and rejected on every request, as in the motivating
//! deployment), then N - 1 routes with distinct prefixes `/svc0001/`, ... The
//! request's route is near the end (N - 2) and sets every dimension: method,
//! API version, account allowlist, `account_match`, flags and a 50% rollout
//! (the account is picked inside it), so a hit pays for the whole match.
//! `miss` is a path no route has: Kong's configured service.

use auth_router_native::config;
use auth_router_native::routing::{bucket, Request, Router};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};

const SIZES: [usize; 3] = [10, 100, 1000];

fn routes(n: usize, account_id: &str) -> Vec<Value> {
    let mut routes =
        vec![json!({"name": "legacy", "api_versions": ["v1", "v2"], "upstream": "legacy"})];
    for i in 1..n {
        routes.push(json!({
            "name": format!("svc{i:04}"),
            "paths": [format!("/svc{i:04}/")],
            "methods": ["GET", "POST"],
            "api_versions": ["v3"],
            "accounts": [format!("acc_{i}"), account_id],
            "account_match": {"/plan": ["pro", "enterprise"]},
            "flags": ["beta"],
            "percentage": 50,
            "target": format!("svc{i:04}:8080"),
            "strip_prefix": true,
        }));
    }
    routes
}

fn router(n: usize, account_id: &str) -> Router {
    let c = config::compile(json!({
        "auth": {"url": "http://127.0.0.1:9000/auth"},
        "routes": routes(n, account_id),
    }));
    Router::new(&c.expect("valid bench config"))
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for n in SIZES {
        let want = n - 2;
        let path = format!("/svc{want:04}/items/42");
        // An allowlisted account id inside the route's 50% rollout.
        let id = (0..)
            .map(|k| format!("acc_bench{k}"))
            .find(|id| bucket(&format!("svc{want:04}"), id) < 5000)
            .unwrap_or_default();
        let account = json!({"id": id, "plan": "pro", "flags": ["beta"], "api_version": "v3"});
        let router = router(n, &id);
        let hit = Request {
            method: "GET",
            path: path.as_bytes(),
            api_version_header: None,
            account: &account,
            account_id: &id,
        };
        group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, req| {
            b.iter(|| {
                let d = router.decide(black_box(req));
                assert_eq!(d.map(|d| d.index), Some(want));
            })
        });
        let miss = Request {
            path: b"/nowhere/42",
            ..hit
        };
        group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, req| {
            b.iter(|| {
                let d = router.decide(black_box(req));
                assert!(d.is_none());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
