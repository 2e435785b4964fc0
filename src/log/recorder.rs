//! Recorder: turns a finished exchange into one redacted log record in the
//! worker's queue, and hands the Lua sink ready-to-send payloads.
//!
//! Secrets are masked here, before a record leaves Rust: listed headers
//! (credential headers always), and listed body fields at any depth in JSON
//! and form bodies, also when a body was cut at `max_body_bytes`.

use crate::config::{HttpUrl, Log, Route, Sink};
use crate::exchange::Exchange;
use crate::http1;
use crate::log::body::{self, Capture};
use crate::log::queue::{Framing, Queue, QueueCounters};
use crate::log::record::{self, BodyView, Record, Side};
use crate::log::redact::{self, BodyKind, Redactor, MASK};
use crate::stats;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;

/// What nginx knows about a request at log time, beyond the exchange.
#[derive(Debug, Clone, Default)]
pub struct LogMeta<'a> {
    /// Log phase time, epoch milliseconds.
    pub now_ms: u64,
    /// The client address.
    pub client_ip: &'a str,
    /// The value of `log.request_id_header`, if sent.
    pub request_id: Option<&'a str>,
    /// The request method.
    pub method: &'a str,
    /// The request URI as the client sent it.
    pub uri: &'a str,
    /// Request headers, names lowercase, repeated names repeated, in
    /// nginx's order.
    pub request_headers: Vec<Header<'a>>,
    /// Response headers, likewise.
    pub response_headers: Vec<Header<'a>>,
    /// Request size in bytes (request line, headers, body).
    pub request_size: u64,
    /// Bytes sent to the client.
    pub response_size: u64,
    /// Time waiting on the upstream, milliseconds, if proxied.
    pub proxy_ms: Option<f64>,
    /// `$upstream_addr` as nginx gives it, `None` when not proxied.
    pub upstream_addr: Option<&'a str>,
    /// `$upstream_status` as nginx gives it.
    pub upstream_status: Option<&'a str>,
    /// Where the host sent a request no route matched, as `host:port`
    /// (OpenResty: `$auth_router_target`; Kong: the Service's), if it knows.
    pub default_target: Option<&'a str>,
    /// Or the Kong Upstream it sent it to.
    pub default_upstream: Option<&'a str>,
    /// The config's routes (the exchange names the matched one by index).
    pub routes: &'a [Route],
}

/// A header as the record gets it: (lowercase name, value), borrowed from
/// the host where they are UTF-8 already.
pub type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The log pipeline of one compiled config, per worker.
#[derive(Debug)]
pub struct Recorder {
    cfg: Log,
    redactor: Redactor,
    redact_headers: HashSet<String, foldhash::fast::RandomState>,
    queue: RefCell<Queue>,
    scratch: RefCell<Vec<u8>>,
}

/// Why a record could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Serialization failed.
    #[error(transparent)]
    Serialize(#[from] record::LogrecError),
    /// The recorder was already borrowed (a re-entrant call; not expected).
    #[error("log recorder busy")]
    Busy,
}

/// A payload to send: batch id, wire bytes, record count.
pub type Payload = (u64, Vec<u8>, usize);

impl Recorder {
    /// A recorder for an enabled `log` config.
    pub fn new(cfg: &Log) -> Self {
        let framing = match cfg.sink {
            Sink::Tcp(_) => Framing::Ndjson,
            Sink::Http(_) => Framing::JsonArray,
        };
        Recorder {
            redactor: Redactor::new(&cfg.redact_body_fields),
            redact_headers: cfg
                .redact_headers
                .iter()
                .map(|h| h.as_str().to_string())
                .collect(),
            queue: RefCell::new(Queue::new(
                framing,
                cfg.batch_max_entries as usize,
                cfg.queue_max_bytes,
            )),
            scratch: RefCell::new(Vec::with_capacity(4096)),
            cfg: cfg.clone(),
        }
    }

    /// Fresh body captures for a new exchange: (request, response).
    pub fn captures(&self) -> (Option<Capture>, Option<Capture>) {
        let new = |on: bool| on.then(|| Capture::new(self.cfg.max_body_bytes));
        (new(self.cfg.request_body), new(self.cfg.response_body))
    }

    fn redact_header_list<'a>(&self, headers: &'a [Header<'_>]) -> Vec<(&'a str, &'a str)> {
        headers
            .iter()
            .map(|(n, v)| {
                let v = if self.redact_headers.contains(n.as_ref()) {
                    MASK
                } else {
                    v.as_ref()
                };
                (n.as_ref(), v)
            })
            .collect()
    }

    /// The body as record text, redacted; `None` when it cannot be made safe
    /// (a body announced as JSON that is not JSON, with fields to redact).
    fn body_text<'a>(
        &self,
        capture: &'a Capture,
        content_type: Option<&str>,
    ) -> Option<(Cow<'a, str>, body::Encoding)> {
        let data = capture.data();
        let truncated = capture.truncated();
        if self.redactor.is_empty() {
            return Some(body::encode(data, truncated));
        }
        let mut out = Vec::with_capacity(data.len() + 16);
        match redact::body_kind(content_type.map(str::as_bytes), data) {
            BodyKind::Json => self.redactor.json(data, truncated, &mut out).ok()?,
            BodyKind::Form => self.redactor.form(data, truncated, &mut out),
            BodyKind::Other => return Some(body::encode(data, truncated)),
        }
        // Valid UTF-8 (the usual case) is the text as is, without the copy
        // body::encode's borrowed answer would need.
        match String::from_utf8(out) {
            Ok(text) => Some((Cow::Owned(text), body::Encoding::Utf8)),
            Err(e) => {
                let (text, enc) = body::encode(e.as_bytes(), truncated);
                Some((Cow::Owned(text.into_owned()), enc))
            }
        }
    }

    /// Serializes the record of `ex` and queues it. `Ok(true)`: it filled
    /// its batch, which is ready to send.
    pub fn record(&self, ex: &Exchange, meta: &LogMeta<'_>) -> Result<bool, RecordError> {
        fn content_type<'h>(h: &'h [Header<'_>]) -> Option<&'h str> {
            h.iter()
                .find(|(n, _)| n == "content-type")
                .map(|(_, v)| v.as_ref())
        }
        let req_body: TextBody<'_> = ex.request_capture().and_then(|c| {
            self.body_text(c, content_type(&meta.request_headers))
                .map(|t| (c, t))
        });
        let resp_body: TextBody<'_> = ex.response_capture().and_then(|c| {
            self.body_text(c, content_type(&meta.response_headers))
                .map(|t| (c, t))
        });
        let req_headers = self.redact_header_list(&meta.request_headers);
        let resp_headers = self.redact_header_list(&meta.response_headers);
        let (route_name, matched_target, matched_upstream) = ex.route_parts(meta.routes);
        let (route_target, route_upstream) = match route_name {
            Some(_) => (matched_target.as_deref(), matched_upstream),
            None => (meta.default_target, meta.default_upstream),
        };
        let auth_ms = ex.auth_latency_ms();
        let started = ex.started_at_ms();
        let rec = Record {
            started_at_ms: started,
            client_ip: meta.client_ip,
            request_id: meta.request_id,
            method: meta.method,
            uri: meta.uri,
            request: Side {
                headers: &req_headers,
                size: meta.request_size,
                body: view(&req_body),
            },
            status: ex.status(),
            response: Side {
                headers: &resp_headers,
                size: meta.response_size,
                body: view(&resp_body),
            },
            account_id: ex.account().map(|a| &*a.id),
            cache: ex.cache_status().as_str(),
            auth_latency_ms: auth_ms,
            route_name,
            route_target,
            route_upstream,
            upstream_addr: meta.upstream_addr,
            upstream_status: meta.upstream_status,
            latency_request_ms: meta.now_ms.saturating_sub(started),
            latency_auth_ms: auth_ms.max(0.0).round() as u64,
            latency_proxy_ms: meta.proxy_ms.map(|p| p.max(0.0).round() as u64),
        };
        let mut buf = self
            .scratch
            .try_borrow_mut()
            .map_err(|_| RecordError::Busy)?;
        buf.clear();
        record::write(&rec, &mut buf)?;
        self.with_queue(|q| q.push(&buf)).ok_or(RecordError::Busy)
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> Option<T> {
        let mut q = self.queue.try_borrow_mut().ok()?;
        let before = q.counters();
        let out = f(&mut q);
        publish(&before, &q.counters());
        Some(out)
    }

    /// The next batch to send, as wire bytes (NDJSON for tcp; a whole HTTP/1.1
    /// POST for http), unless one is in flight or backing off. `draining`
    /// (worker exit) ignores the backoff.
    pub fn take(&self, now: f64, draining: bool) -> Option<Payload> {
        let sink = self.cfg.sink.clone();
        self.with_queue(|q| {
            if draining {
                q.clear_backoff();
            }
            let (id, framed, n) = q.take(now)?;
            let wire = match &sink {
                Sink::Tcp(_) => framed.to_vec(),
                Sink::Http(url) => http_post(url, framed)?,
            };
            Some((id, wire, n))
        })
        .flatten()
    }

    /// The batch `id` was delivered.
    pub fn ack(&self, id: u64) {
        self.with_queue(|q| q.ack(id));
    }

    /// Delivering batch `id` failed at `now`.
    pub fn fail(&self, id: u64, now: f64) {
        let retry_max_s = self.cfg.retry_max_s;
        self.with_queue(|q| q.fail(id, now, retry_max_s));
    }

    /// When the batch in front may be retried, if it is backing off.
    pub fn next_attempt_at(&self) -> Option<f64> {
        self.queue
            .try_borrow()
            .ok()?
            .next_attempt_at()
            .filter(|t| *t > 0.0)
    }

    /// Records waiting (the batch in flight included).
    pub fn pending(&self) -> usize {
        self.queue
            .try_borrow()
            .map(|q| q.len_records())
            .unwrap_or(0)
    }

    /// The queue's counters.
    pub fn counters(&self) -> Option<QueueCounters> {
        self.queue.try_borrow().ok().map(|q| q.counters())
    }
}

type TextBody<'a> = Option<(&'a Capture, (Cow<'a, str>, body::Encoding))>;

fn view<'a>(b: &'a TextBody<'a>) -> Option<BodyView<'a>> {
    b.as_ref().map(|(c, (text, enc))| BodyView {
        text,
        encoding: enc.as_str(),
        size: c.size(),
        truncated: c.truncated(),
    })
}

/// Adds the change between two counter snapshots to the worker's stats.
fn publish(before: &QueueCounters, after: &QueueCounters) {
    stats::LOG_QUEUED.add(after.queued.saturating_sub(before.queued));
    stats::LOG_SENT.add(after.sent.saturating_sub(before.sent));
    stats::LOG_RETRIED.add(after.retried.saturating_sub(before.retried));
    stats::LOG_DROPPED.add(after.dropped.saturating_sub(before.dropped));
    stats::LOG_QUEUE_BYTES.add(after.bytes.saturating_sub(before.bytes));
    stats::LOG_QUEUE_BYTES.sub(before.bytes.saturating_sub(after.bytes));
}

fn http_post(url: &HttpUrl, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 256);
    http1::encode_request(
        &http1::Request {
            method: "POST",
            host: &url.host,
            port: url.port,
            tls: url.tls,
            path: &url.path,
            headers: &[("content-type", b"application/json")],
            body,
        },
        &mut out,
    )
    .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;
    use serde_json::{json, Value};

    fn recorder(extra: Value) -> Recorder {
        let mut log = json!({"enabled": true, "host": "127.0.0.1", "port": 9,
                             "request_body": true, "response_body": true, "max_body_bytes": 16});
        if let (Some(l), Some(e)) = (log.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                l.insert(k.clone(), v.clone());
            }
        }
        let c =
            compile(json!({"auth": {"url": "http://127.0.0.1:9/a"}, "log": log})).expect("valid");
        Recorder::new(c.log.as_ref().expect("enabled"))
    }

    fn exchange(r: &Recorder, req: &[u8], resp: &[u8]) -> Exchange {
        let mut ex = Exchange::begin(b"POST", Some(b"/send"), 1000);
        let (q, s) = r.captures();
        ex.set_captures(q, s);
        ex.request_body(req, req.len() as u64);
        ex.response(200);
        ex.body_chunk(resp);
        ex
    }

    fn meta() -> LogMeta<'static> {
        LogMeta {
            now_ms: 1010,
            client_ip: "203.0.113.9",
            method: "POST",
            uri: "/send?x=1",
            request_headers: vec![
                ("authorization".into(), "Bearer secret".into()),
                ("content-type".into(), "application/json".into()),
            ],
            ..LogMeta::default()
        }
    }

    fn sent(r: &Recorder) -> Value {
        let (id, wire, n) = r.take(0.0, false).expect("a batch");
        assert_eq!(n, 1);
        r.ack(id);
        serde_json::from_slice(wire.strip_suffix(b"\n").expect("ndjson")).expect("json")
    }

    #[test]
    fn record_masks_credentials_and_truncates_bodies() {
        let r = recorder(json!({}));
        let ex = exchange(&r, br#"{"to": "bob", "text": "hello world"}"#, b"ok");
        r.record(&ex, &meta()).expect("record");
        let rec = sent(&r);
        assert_eq!(rec["request"]["headers"]["authorization"], MASK);
        assert_eq!(rec["request"]["body"], r#"{"to": "bob", "t"#); // 16 bytes
        assert_eq!(rec["request"]["body_truncated"], true);
        assert_eq!(rec["request"]["body_size"], 36);
        assert_eq!(rec["response"]["body"], "ok");
        assert_eq!(rec["latencies"]["request"], 10);
    }

    #[test]
    fn record_names_the_default_destination_only_without_a_matched_route() {
        let c = compile(json!({"auth": {"url": "http://127.0.0.1:9/a"},
                               "routes": [{"name": "email", "paths": ["/send"], "target": "10.0.0.2:80"}],
                               "log": {"enabled": true, "host": "127.0.0.1", "port": 9}}))
        .expect("valid");
        let r = Recorder::new(c.log.as_ref().expect("enabled"));
        let proxied = LogMeta {
            upstream_addr: Some("10.0.0.9:8004"),
            upstream_status: Some("200"),
            default_target: Some("legacy:8004"),
            routes: &c.routes,
            ..meta()
        };
        let mut ex = exchange(&r, b"", b"");
        r.record(&ex, &proxied).expect("record");
        let rec = sent(&r);
        assert_eq!(rec["route"], json!({"name": null, "target": "legacy:8004"}));
        assert_eq!(
            rec["upstream"],
            json!({"addr": "10.0.0.9:8004", "status": "200"})
        );

        ex.set_route(0);
        r.record(&ex, &proxied).expect("record");
        assert_eq!(
            sent(&r)["route"],
            json!({"name": "email", "target": "10.0.0.2:80"})
        );

        let denied = LogMeta {
            default_target: Some("legacy:8004"),
            ..meta()
        };
        r.record(&exchange(&r, b"", b""), &denied).expect("record");
        let rec = sent(&r);
        assert_eq!(rec["route"], Value::Null);
        assert_eq!(rec["upstream"], Value::Null);
    }

    #[test]
    fn truncated_json_never_leaks_a_redacted_field() {
        let r = recorder(json!({"redact_body_fields": ["password"]}));
        let ex = exchange(&r, br#"{"password": "hunter2hunter2"}"#, b"");
        r.record(&ex, &meta()).expect("record");
        let rec = sent(&r);
        let body = rec["request"]["body"].as_str().expect("text");
        assert!(!body.contains("hunt"), "{body}");
    }

    #[test]
    fn http_sink_payload_is_a_post_with_a_json_array() {
        let c = compile(json!({"auth": {"url": "http://127.0.0.1:9/a"},
                               "log": {"enabled": true, "sink": "http", "url": "http://127.0.0.1:9/logs"}}))
        .expect("valid");
        let r = Recorder::new(c.log.as_ref().expect("enabled"));
        let ex = exchange(&r, b"", b"");
        r.record(&ex, &meta()).expect("record");
        let (_, wire, _) = r.take(0.0, false).expect("a batch");
        let text = String::from_utf8(wire).expect("utf8");
        assert!(text.starts_with("POST /logs HTTP/1.1\r\n"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).expect("body");
        let arr: Value = serde_json::from_str(body).expect("json array");
        assert_eq!(arr.as_array().map(Vec::len), Some(1));
    }
}
