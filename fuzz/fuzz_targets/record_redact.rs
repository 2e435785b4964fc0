//! Fuzzes body capture, redaction (JSON and form) and log record
//! serialization on arbitrary bodies, content types, headers and field lists.
//!
//! Oracles:
//! - JSON redaction of a body serde_json accepts succeeds, and its output
//!   parses to the body with every listed member (any depth, any case) masked.
//! - Redacting a body cut anywhere (`truncated`) succeeds whenever the whole
//!   body does, and gives a prefix of the whole body's redacted output: a cut
//!   body never shows a byte the whole one masks. Same for forms.
//! - A form pair whose key is a listed field is masked.
//! - A record is one valid JSON object (serde_json); its strings and headers
//!   (repeated names as arrays, redacted names masked) read back as given;
//!   each logged body decodes to a prefix of the whole body's redacted form,
//!   with its real size and truncation flag; a body is left out only when it
//!   is JSON-like and cannot be redacted.
//! - The record's string escaper writes exactly what serde_json writes, for
//!   the bodies (when UTF-8) and the generated strings.
#![no_main]

use auth_router_fuzz::{gen_body, gen_str, redact_value, FIELDS};
use auth_router_native::config;
use auth_router_native::exchange::Exchange;
use auth_router_native::log::body::Capture;
use auth_router_native::log::record::write_str;
use auth_router_native::log::recorder::{LogMeta, Recorder};
use auth_router_native::log::redact::{body_kind, BodyKind, Redactor, MASK};
use base64::Engine as _;
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn is_prefix(short: &[u8], long: &[u8]) -> bool {
    long.starts_with(short)
}

/// The whole body as redaction would leave it, if it can be redacted.
fn redacted(r: &Redactor, kind: BodyKind, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match kind {
        BodyKind::Json => r.json(body, false, &mut out).ok()?,
        BodyKind::Form => r.form(body, false, &mut out),
        BodyKind::Other => out.extend_from_slice(body),
    }
    Some(out)
}

fn check_redactor(r: &Redactor, fields: &[String], body: &[u8], cut: usize) {
    let pre = &body[..cut];

    let mut full = Vec::new();
    let full_ok = r.json(body, false, &mut full);
    if let Ok(mut want) = serde_json::from_slice::<Value>(body) {
        if let Err(e) = &full_ok {
            panic!("serde_json accepts the body, the redactor does not: {e}");
        }
        let got: Value = match serde_json::from_slice(&full) {
            Ok(v) => v,
            Err(e) => panic!("redacted JSON is not JSON: {e}"),
        };
        redact_value(&mut want, fields);
        assert_eq!(got, want, "redacted JSON differs from the reference");
    }
    if full_ok.is_ok() {
        let mut part = Vec::new();
        if let Err(e) = r.json(pre, true, &mut part) {
            panic!("a cut of a redactable body is refused: {e}");
        }
        assert!(
            is_prefix(&part, &full),
            "cut JSON redaction is not a prefix of the whole one"
        );
    }

    let mut form = Vec::new();
    r.form(body, false, &mut form);
    let mut part = Vec::new();
    r.form(pre, true, &mut part);
    assert!(
        is_prefix(&part, &form),
        "cut form redaction is not a prefix of the whole one"
    );
    for pair in form.split(|&b| b == b'&' || b == b';') {
        if let Some(eq) = pair.iter().position(|&b| b == b'=') {
            let (name, value) = pair.split_at(eq);
            // A key without escapes is its own decoded form.
            let plain = !name.iter().any(|b| matches!(b, b'%' | b'+'));
            if plain
                && fields
                    .iter()
                    .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
            {
                assert_eq!(&value[1..], MASK.as_bytes(), "form field not masked");
            }
        }
    }
}

fn check_escape(s: &str) {
    let mut out = Vec::new();
    write_str(&mut out, s);
    match serde_json::to_string(s) {
        Ok(want) => assert!(
            out == want.as_bytes(),
            "write_str differs from serde_json for {s:?}"
        ),
        Err(e) => panic!("serde_json cannot write a string: {e}"),
    }
}

fn header_list(u: &mut Unstructured<'_>, ct: &str) -> ArbResult<Vec<(String, String)>> {
    let n = u.int_in_range(0..=32)?;
    let mut h = Vec::with_capacity(n + 1);
    if u.ratio(3u8, 4)? {
        h.push(("content-type".to_string(), ct.to_string()));
    }
    for _ in 0..n {
        let name = gen_str(
            u,
            &[
                "authorization",
                "cookie",
                "x-a",
                "x-b",
                "content-type",
                "x-api-key",
            ],
        )?;
        let value = gen_str(u, &["Bearer secret", "v", "", "application/json"])?;
        h.push((name, value));
    }
    Ok(h)
}

fn check_headers(rec: &Value, given: &[(String, String)], masked: &[&str]) {
    let Some(obj) = rec.as_object() else {
        panic!("headers is not an object: {rec}");
    };
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in given {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    assert_eq!(obj.len(), names.len(), "header names");
    for n in names {
        let want: Vec<&str> = given
            .iter()
            .filter(|(m, _)| m == n)
            .map(|(_, v)| {
                if masked.contains(&n) {
                    MASK
                } else {
                    v.as_str()
                }
            })
            .collect();
        let got = match &obj[n] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            other => panic!("header {n:?} is {other}"),
        };
        if want.len() > 1 {
            assert!(obj[n].is_array(), "repeated header {n:?} is not an array");
        }
        assert_eq!(got, want, "header {n:?}");
    }
}

fn check_body(side: &Value, r: &Redactor, ct: Option<&str>, whole: &[u8], capture: &Capture) {
    let kind = body_kind(ct.map(str::as_bytes), capture.data());
    let kind = if r.is_empty() { BodyKind::Other } else { kind };
    match side.get("body") {
        None => {
            let mut out = Vec::new();
            assert!(
                kind == BodyKind::Json
                    && r.json(capture.data(), capture.truncated(), &mut out)
                        .is_err(),
                "a redactable body was left out"
            );
        }
        Some(text) => {
            let Some(text) = text.as_str() else {
                panic!("body is {text}");
            };
            let bytes = match side["body_encoding"].as_str() {
                Some("utf8") => text.as_bytes().to_vec(),
                Some("base64") => match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(b) => b,
                    Err(e) => panic!("bad base64 body: {e}"),
                },
                other => panic!("body_encoding {other:?}"),
            };
            if let Some(want) = redacted(r, kind, whole) {
                assert!(
                    is_prefix(&bytes, &want),
                    "logged body is not a prefix of the redacted body"
                );
            }
            assert_eq!(side["body_size"], json!(capture.size()));
            assert_eq!(side["body_truncated"], json!(capture.truncated()));
            assert_eq!(capture.size(), whole.len() as u64);
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let nfields = u.int_in_range(0..=3)?;
    let fields: Vec<String> = (0..nfields)
        .map(|_| gen_str(u, FIELDS))
        .filter(|f| f.as_ref().map_or(true, |f| !f.is_empty()))
        .collect::<ArbResult<_>>()?;
    let r = Redactor::new(&fields);

    let req_body = gen_body(u)?;
    let cut = u.int_in_range(0..=req_body.len())?;
    check_redactor(&r, &fields, &req_body, cut);

    // The same bodies through the log pipeline.
    let max = u.int_in_range(0..=300usize)?;
    let redact_headers: Vec<&str> = (0..u.int_in_range(0..=2)?)
        .map(|_| u.choose(&["cookie", "x-a", "X-B"]).copied())
        .collect::<ArbResult<_>>()?;
    let c = config::compile(json!({
        "auth": {"url": "http://127.0.0.1:9/auth", "credential_headers": ["authorization", "x-api-key"]},
        "log": {"enabled": true, "host": "127.0.0.1", "port": 9, "request_body": true,
                "response_body": u.arbitrary::<bool>()?, "max_body_bytes": max,
                "redact_body_fields": fields, "redact_headers": redact_headers}
    }));
    let log = match c {
        Ok(c) => c.log,
        Err(e) => panic!("the log config does not compile: {e}"),
    };
    let Some(log) = log else {
        panic!("log is enabled");
    };
    let masked: Vec<&str> = log.redact_headers.iter().map(|h| h.as_str()).collect();
    let rec = Recorder::new(&log);

    let resp_body = gen_body(u)?;
    let ct = gen_str(
        u,
        &[
            "application/json",
            "application/x-www-form-urlencoded; charset=utf-8",
            "application/vnd.api+JSON",
            "text/plain",
            "multipart/form-data",
        ],
    )?;
    let req_headers = header_list(u, &ct)?;
    let ct2 = gen_str(
        u,
        &[
            "application/json",
            "application/x-www-form-urlencoded",
            "text/html",
        ],
    )?;
    let resp_headers = header_list(u, &ct2)?;
    let method: String = gen_str(u, &["POST", "GET"])?;
    let uri: String = gen_str(u, &["/send?x=1", "/"])?;
    let client_ip: String = gen_str(u, &["203.0.113.9", "::1"])?;
    let request_id: Option<String> = if u.arbitrary()? {
        Some(u.arbitrary()?)
    } else {
        None
    };
    for s in [&ct, &ct2, &method, &uri, &client_ip] {
        check_escape(s);
    }
    for body in [&req_body, &resp_body] {
        if let Ok(text) = std::str::from_utf8(body) {
            check_escape(text);
        }
    }
    if let Some(id) = &request_id {
        check_escape(id);
    }

    let mut ex = Exchange::begin(method.as_bytes(), Some(uri.as_bytes()), 1_000);
    let (q, s) = rec.captures();
    ex.set_captures(q, s);
    // nginx hands over the whole body, or its first bytes and the full size.
    let given = u.int_in_range(req_body.len().min(max)..=req_body.len())?;
    ex.request_body(&req_body[..given], req_body.len() as u64);
    ex.set_auth_latency(u.arbitrary()?);
    ex.response(u.arbitrary()?);
    let mut rest = &resp_body[..];
    while !rest.is_empty() {
        let n = u.int_in_range(1..=rest.len())?;
        ex.body_chunk(&rest[..n]);
        rest = &rest[n..];
    }
    let meta = LogMeta {
        now_ms: u.arbitrary()?,
        client_ip: &client_ip,
        request_id: request_id.as_deref(),
        method: &method,
        uri: &uri,
        request_headers: owned(&req_headers),
        response_headers: owned(&resp_headers),
        request_size: u.arbitrary()?,
        response_size: u.arbitrary()?,
        proxy_ms: u.arbitrary()?,
        // not proxied: the record's route stays null (checked below)
        upstream_addr: None,
        upstream_status: None,
        default_target: Some("127.0.0.1:8004"),
        default_upstream: None,
        routes: &[],
    };
    if let Err(e) = rec.record(&ex, &meta) {
        panic!("record failed: {e}");
    }
    let Some((_, wire, 1)) = rec.take(0.0, false) else {
        panic!("the record was not queued alone");
    };
    let Some(line) = wire.strip_suffix(b"\n") else {
        panic!("NDJSON without its newline");
    };
    assert!(!line.contains(&b'\n'), "a raw newline inside a record");
    let v: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => panic!("the record is not JSON: {e}"),
    };
    assert_eq!(v["client_ip"], json!(client_ip));
    assert_eq!(v["request_id"], json!(request_id));
    assert_eq!(v["request"]["method"], json!(method));
    assert_eq!(v["request"]["uri"], json!(uri));
    assert_eq!(v["auth"]["cache"], "none");
    assert!(v["route"].is_null() && v["account"].is_null());
    check_headers(&v["request"]["headers"], &req_headers, &masked);
    check_headers(&v["response"]["headers"], &resp_headers, &masked);
    let ct_of = |h: &[(String, String)]| {
        h.iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.clone())
    };
    if let Some(c) = ex.request_capture() {
        check_body(
            &v["request"],
            &r,
            ct_of(&req_headers).as_deref(),
            &req_body,
            c,
        );
    }
    match ex.response_capture() {
        Some(c) => check_body(
            &v["response"],
            &r,
            ct_of(&resp_headers).as_deref(),
            &resp_body,
            c,
        ),
        None => assert!(v["response"].get("body").is_none()),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn owned(h: &[(String, String)]) -> Vec<auth_router_native::log::recorder::Header<'_>> {
    h.iter().map(|(n, v)| (n.as_str().into(), v.as_str().into())).collect()
}
