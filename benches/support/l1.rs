//! Shared by benches/cache.rs and benches/l1_memory.rs: L1 entries shaped like
//! the end-to-end `hit` variant's (an account with an id and 5 short fields,
//! 2 upstream headers and 1 response header rendered from it), built with the
//! crate's own `Account::new` and stored with `Cache::put`, as the plugin does.

// Each bench includes this file and uses part of it.
#![allow(dead_code)]

use auth_router_native::auth::cache::{Cache, Entry};
use auth_router_native::auth::key::{CacheKey, KeyDeriver};
use auth_router_native::auth::verdict::{Account, Verdict};
use auth_router_native::config::{self, Config};
use serde_json::{json, Value};
use std::sync::Arc;

/// The config whose header rules render each entry's headers.
pub fn config() -> Config {
    config::compile(json!({
        "auth": {"url": "http://127.0.0.1:9000/auth", "cache_size": 100_000_000},
        "upstream_headers": [
            {"name": "x-account-id", "pointer": "/id"},
            {"name": "x-account-plan", "pointer": "/plan"}
        ],
        "response_headers": [{"name": "x-account-plan", "pointer": "/plan"}]
    }))
    .unwrap_or_else(|e| panic!("bench config: {e}"))
}

/// Account `i`: an id and 5 short fields.
pub fn account(i: usize) -> (String, Value) {
    let id = format!("acc_{i:08}");
    let object = json!({
        "id": id,
        "name": format!("Account {i}"),
        "email": format!("u{i}@example.test"),
        "plan": "pro",
        "api_version": "v1",
        "region": "eu-west"
    });
    (id, object)
}

/// The field data of account `i`: the bytes of its JSON member names and
/// string values (what any representation must hold).
pub fn field_bytes(object: &Value) -> usize {
    object.as_object().map_or(0, |m| {
        m.iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum()
    })
}

/// The cache key of credential `i` (`Bearer good-<i>`), derived as the plugin
/// derives keys: a keyed BLAKE3 digest.
pub fn key(keys: &KeyDeriver, i: usize) -> CacheKey {
    let credential = format!("Bearer good-{i}");
    keys.derive([b"bench-scope".as_slice(), b"\x01", credential.as_bytes()])
}

/// The key deriver (fixed secret).
pub fn deriver() -> KeyDeriver {
    KeyDeriver::new(b"bench secret, 32 bytes or more!!")
}

/// An L1 cache holding `n` fresh entries (ttl one hour from `now`), and their keys.
pub fn filled(n: usize, now: f64) -> (Cache, Vec<CacheKey>) {
    let config = config();
    let keys = deriver();
    let mut cache = Cache::new(n);
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let k = key(&keys, i);
        let (id, object) = account(i);
        let entry = Entry::new(
            Verdict::Allow(Arc::new(Account::new(id, &object, &config))),
            now,
            3600.0,
            30.0,
        );
        cache.put(k, entry, now);
        all.push(k);
    }
    (cache, all)
}
