//! JSON body redaction time for 1 KiB and 64 KiB bodies (the default
//! `max_body_bytes`), against the same work done on a `serde_json::Value`
//! tree (decode, mask, encode), which is what the streaming tokenizer avoids.
//!
//! Run: cargo bench --no-default-features --bench redact
//!
//! The body is an API-style object: a list of user items with nested
//! profiles, numbers, booleans, escapes and non-ASCII text. A few secret
//! fields sit at depth 4 in the first, middle and last item, plus one near
//! the top, so the tokenizer checks every key and masks a handful of values.
//! The output buffer is reused across iterations, as the log phase does.

use auth_router_native::log::redact::{Redactor, MASK};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

const FIELDS: [&str; 3] = ["password", "api_key", "token"];

const SECRET: &str = "s3cr3t-Value";

fn item(i: usize, secret: bool) -> String {
    let credentials = if secret {
        format!(
            r#"{{"password": "{SECRET}", "token": {{"value": "{SECRET}", "exp": 1732230000}}}}"#
        )
    } else {
        "null".to_string()
    };
    format!(
        r#"{{"id": {i}, "name": "user {i} \"quoted\" caf\u00e9 ✓", "active": {}, "score": {}.5e-1,
  "profile": {{"email": "user{i}@example.com", "tags": ["a", "b", "c"],
    "settings": {{"theme": "dark", "credentials": {credentials}}}}}}}"#,
        i.is_multiple_of(2),
        i * 7,
    )
}

/// A body of about `size` bytes (at most one item over) and its secret count.
fn body(size: usize) -> (Vec<u8>, usize) {
    let head =
        format!(r#"{{"request_id": "8c1d0f2a", "auth": {{"api_key": "{SECRET}"}}, "items": ["#);
    let mut n = 1;
    while head.len() + (0..n).map(|i| item(i, false).len() + 2).sum::<usize>() < size {
        n += 1;
    }
    let items: Vec<String> = (0..n)
        .map(|i| item(i, i == 0 || i == n / 2 || i == n - 1))
        .collect();
    let text = format!("{head}{}]}}", items.join(", "));
    let secrets = text.matches(SECRET).count();
    (text.into_bytes(), secrets)
}

fn mask_value(v: &mut Value, fields: &[&str]) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if fields.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                    *v = Value::String(MASK.to_string());
                } else {
                    mask_value(v, fields);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| mask_value(v, fields)),
        _ => {}
    }
}

fn redact(c: &mut Criterion) {
    let redactor = Redactor::new(&FIELDS.map(String::from));
    let mut group = c.benchmark_group("redact_json");
    for (size, label) in SIZES {
        let (body, secrets) = body(size);
        let mut out = Vec::with_capacity(body.len() * 2);
        redactor
            .json(&body, false, &mut out)
            .expect("bench body is JSON");
        let text = String::from_utf8(out.clone()).expect("utf-8");
        assert!(secrets >= 5);
        assert!(!text.contains(SECRET), "a secret survived");
        assert_eq!(text.matches(MASK).count(), secrets);
        let want_len = out.len();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("streaming", label), &body, |b, body| {
            b.iter(|| {
                out.clear();
                let r = redactor.json(black_box(body), false, &mut out);
                assert!(r.is_ok() && out.len() == want_len);
            })
        });
        group.bench_with_input(BenchmarkId::new("serde_value", label), &body, |b, body| {
            b.iter(|| {
                let mut v: Value = serde_json::from_slice(black_box(body)).expect("json");
                mask_value(&mut v, &FIELDS);
                let s = serde_json::to_vec(&v).expect("encode");
                assert!(s.len() > body.len() / 2);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, redact);
criterion_main!(benches);
