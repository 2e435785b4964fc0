//! Exchange: the native state of one request/response, created in access and
//! carried through header_filter, body_filter and log.
//!
//! It holds what the log record needs so the record is built straight from
//! native state, without per-request Lua tables.

use crate::stats;
use serde_json::json;

/// One request/response passing through the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    started_at_ms: u64,
    method: String,
    uri: String,
    status: Option<u16>,
    response_bytes: u64,
}

impl Exchange {
    /// Starts an exchange in the access phase; `now_ms` is the request start
    /// (epoch milliseconds, from nginx: the core reads no clock).
    pub fn begin(method: &str, uri: &str, now_ms: u64) -> Self {
        stats::REQUESTS.incr();
        Exchange {
            started_at_ms: now_ms,
            method: method.to_string(),
            uri: uri.to_string(),
            status: None,
            response_bytes: 0,
        }
    }

    /// header_filter: the response status is known.
    pub fn response(&mut self, status: u16) {
        stats::RESPONSES.incr();
        self.status = Some(status);
    }

    /// body_filter: a response chunk of `len` bytes went by.
    pub fn body_chunk(&mut self, len: usize) {
        stats::RESPONSE_BYTES.add(len as u64);
        self.response_bytes += len as u64;
    }

    /// log: the exchange is over.
    pub fn finish(&self) {
        stats::COMPLETED.incr();
    }

    /// The serialized log record for this exchange (design §3, the fields
    /// known so far).
    pub fn record(&self, client_ip: &str, now_ms: u64) -> String {
        json!({
            "started_at": self.started_at_ms,
            "client_ip": client_ip,
            "request": {"method": self.method, "uri": self.uri},
            "response": {"status": self.status, "size": self.response_bytes},
            "latencies": {"request": now_ms.saturating_sub(self.started_at_ms)},
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn record_reflects_every_phase() {
        let mut x = Exchange::begin("POST", "/send?x=1", 1_000);
        x.response(201);
        x.body_chunk(10);
        x.body_chunk(5);
        let rec: Value = serde_json::from_str(&x.record("203.0.113.9", 1_012)).expect("json");
        assert_eq!(rec["request"]["method"], "POST");
        assert_eq!(rec["request"]["uri"], "/send?x=1");
        assert_eq!(rec["response"]["status"], 201);
        assert_eq!(rec["response"]["size"], 15);
        assert_eq!(rec["latencies"]["request"], 12);
        assert_eq!(rec["client_ip"], "203.0.113.9");
    }

    #[test]
    fn record_of_an_unanswered_request_has_null_status() {
        let x = Exchange::begin("GET", "/", 5);
        let rec: Value = serde_json::from_str(&x.record("::1", 4)).expect("json");
        assert_eq!(rec["response"]["status"], Value::Null);
        assert_eq!(rec["latencies"]["request"], 0);
    }
}
