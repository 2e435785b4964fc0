//! Log record serialization time for request and response bodies of 1 KiB
//! and 64 KiB (both sides captured), plus a record with 100 request headers
//! (nginx's default `get_headers` limit) to bound the cost of grouping
//! repeated header names.
//!
//! Run: cargo bench --no-default-features --bench logrec
//!
//! Bodies are JSON text, so every quote is escaped on the way out (the
//! common case for API traffic); headers are a typical browser/API set with
//! redacted credentials and a repeated `set-cookie`. The output buffer is
//! reused across iterations, as the log phase does for one record at a time.

use auth_router_native::log::record::{write, BodyView, Record, Side};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

const REQ_HEADERS: &[(&str, &str)] = &[
    ("host", "api.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
    ),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "en-US,en;q=0.9"),
    ("authorization", "REDACTED"),
    ("content-type", "application/json"),
    ("content-length", "1024"),
    ("x-request-id", "8c1d0f2a-1b2c-4d5e-8f90-0a1b2c3d4e5f"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-api-version", "v3"),
    ("cookie", "REDACTED"),
];

const RESP_HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json; charset=utf-8"),
    ("content-length", "1024"),
    ("date", "Fri, 22 Nov 2024 00:00:00 GMT"),
    ("server", "upstream"),
    ("cache-control", "no-store"),
    ("set-cookie", "REDACTED"),
    ("set-cookie", "REDACTED"),
    ("x-account-id", "acc_123"),
];

/// A JSON text body of exactly `len` bytes.
fn json_body(len: usize) -> String {
    let item = r#"{"id":12345,"to":"someone@example.com","subject":"Hello","tags":["a","b"]},"#;
    let mut s = String::with_capacity(len + item.len());
    s.push('[');
    while s.len() + item.len() < len {
        s.push_str(item);
    }
    s.push_str("null");
    while s.len() < len - 1 {
        s.push(' ');
    }
    s.push(']');
    s
}

fn record<'a>(
    body: &'a str,
    req_headers: &'a [(&'a str, &'a str)],
    resp_headers: &'a [(&'a str, &'a str)],
) -> Record<'a> {
    let view = BodyView {
        text: body,
        encoding: "utf8",
        size: body.len() as u64,
        truncated: false,
    };
    Record {
        started_at_ms: 1_732_230_000_123,
        client_ip: "203.0.113.9",
        request_id: Some("8c1d0f2a-1b2c-4d5e-8f90-0a1b2c3d4e5f"),
        method: "POST",
        uri: "/v3/messages/send?priority=high",
        request: Side {
            headers: req_headers,
            size: body.len() as u64 + 600,
            body: (!body.is_empty()).then_some(view),
        },
        status: Some(200),
        response: Side {
            headers: resp_headers,
            size: body.len() as u64 + 300,
            body: (!body.is_empty()).then_some(view),
        },
        account_id: Some("acc_123"),
        cache: "hit",
        auth_latency_ms: 0.012,
        route_name: Some("email"),
        route_target: Some("email:8080"),
        route_upstream: None,
        upstream_addr: Some("10.0.0.7:8080"),
        upstream_status: Some("200"),
        latency_request_ms: 12,
        latency_auth_ms: 0,
        latency_proxy_ms: Some(11),
    }
}

fn serialize(c: &mut Criterion) {
    let mut group = c.benchmark_group("logrec_write");
    for (len, label) in SIZES {
        let body = json_body(len);
        let rec = record(&body, REQ_HEADERS, RESP_HEADERS);
        let mut out = Vec::new();
        // Two bodies plus their escaped quotes.
        let min_len = 2 * len;
        group.throughput(Throughput::Bytes(2 * len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &rec, |b, rec| {
            b.iter(|| {
                out.clear();
                write(black_box(rec), &mut out).expect("record written");
                assert!(out.len() > min_len);
            })
        });
    }
    group.finish();

    let names: Vec<String> = (0..100).map(|i| format!("x-header-{i:03}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "value")).collect();
    let rec = record("", &many, RESP_HEADERS);
    let mut out = Vec::new();
    c.bench_function("logrec_write/100_headers_no_body", |b| {
        b.iter(|| {
            out.clear();
            write(black_box(&rec), &mut out).expect("record written");
            assert!(out.len() > 100 * 20);
        })
    });
}

criterion_group!(benches, serialize);
criterion_main!(benches);
