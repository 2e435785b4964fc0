//! Stats: per-worker native counters, readable from Lua with `stats()`.
//!
//! Each nginx worker is its own process with its own copy of the module, so
//! these are per worker; relaxed atomics because a counter is never used to
//! order other memory.

use std::sync::atomic::{AtomicU64, Ordering};

/// One named counter.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str) -> Self {
        Counter {
            name,
            value: AtomicU64::new(0),
        }
    }

    /// Adds one.
    pub fn incr(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (for gauges such as queued bytes).
    pub fn sub(&self, n: u64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Requests that entered the access phase.
pub static REQUESTS: Counter = Counter::new("requests");
/// Responses whose headers went through header_filter.
pub static RESPONSES: Counter = Counter::new("responses");
/// Response body bytes seen by body_filter (which makes a native call only
/// while response bodies are logged).
pub static RESPONSE_BYTES: Counter = Counter::new("response_bytes");
/// Exchanges closed in the log phase.
pub static COMPLETED: Counter = Counter::new("completed");
/// Native calls that failed with an internal error (including caught panics).
pub static INTERNAL_ERRORS: Counter = Counter::new("internal_errors");
/// Configs compiled (a config change compiles once per worker).
pub static CONFIGS_COMPILED: Counter = Counter::new("configs_compiled");

/// Requests with no credential (401 without an auth call).
pub static NO_CREDENTIAL: Counter = Counter::new("no_credential");
/// Positive verdicts found fresh in this worker's cache.
pub static L1_HITS: Counter = Counter::new("l1_hits");
/// Positive verdicts found fresh in the shared dict (another worker fetched them).
pub static L2_HITS: Counter = Counter::new("l2_hits");
/// Positive verdicts read from Redis (the cluster tier: another node fetched them).
pub static L3_HITS: Counter = Counter::new("l3_hits");
/// Cached 401/403 verdicts read from Redis.
pub static L3_NEGATIVE_HITS: Counter = Counter::new("l3_negative_hits");
/// Redis exchanges of the cluster tier that failed (timeout, unreachable,
/// not RESP, AUTH/SELECT refused); the request went on without Redis.
pub static REDIS_ERRORS: Counter = Counter::new("redis_errors");
/// Cached 401/403 verdicts served (L1, L2 or L3).
pub static NEGATIVE_HITS: Counter = Counter::new("negative_hits");
/// Cached 401/403 verdicts found in this worker's cache (part of `negative_hits`).
pub static L1_NEGATIVE_HITS: Counter = Counter::new("l1_negative_hits");
/// Cached 401/403 verdicts found in the shared dict (part of `negative_hits`).
pub static L2_NEGATIVE_HITS: Counter = Counter::new("l2_negative_hits");
/// Credentials this worker's cache had no fresh verdict for.
pub static L1_MISSES: Counter = Counter::new("l1_misses");
/// Credentials neither cache tier answered: the request went on to the auth
/// service (its own call, a concurrent one's, or a refusal at `max_in_flight`).
pub static L2_MISSES: Counter = Counter::new("l2_misses");
/// Requests allowed (fresh, cached or stale verdict).
pub static ALLOWED: Counter = Counter::new("allowed");
/// Requests that failed closed: the auth service failed and nothing stale
/// was there (`failure_status`).
pub static FAILED_CLOSED: Counter = Counter::new("failed_closed");
/// Verdicts that needed an auth call.
pub static MISSES: Counter = Counter::new("misses");
/// Expired entries served because the auth service failed.
pub static STALE_SERVED: Counter = Counter::new("stale_served");
/// Requests denied with the auth service's 401/403 (fresh or cached).
pub static DENIED: Counter = Counter::new("denied");
/// Auth service calls answered or failed.
pub static AUTH_CALLS: Counter = Counter::new("auth_calls");
/// Auth calls answered with an account (2xx).
pub static AUTH_CALLS_OK: Counter = Counter::new("auth_calls_ok");
/// Auth calls answered with a denial (401/403).
pub static AUTH_CALLS_DENIED: Counter = Counter::new("auth_calls_denied");
/// Sum of auth call latencies, microseconds (divide by auth_calls).
pub static AUTH_LATENCY_US: Counter = Counter::new("auth_latency_us");
/// Auth calls that could not connect, handshake, send or receive.
pub static AUTH_ERRORS_UNREACHABLE: Counter = Counter::new("auth_errors_unreachable");
/// Auth calls that timed out.
pub static AUTH_ERRORS_TIMEOUT: Counter = Counter::new("auth_errors_timeout");
/// Auth calls answered with an unexpected status (5xx, 404, ...).
pub static AUTH_ERRORS_STATUS: Counter = Counter::new("auth_errors_status");
/// Auth answers that were malformed, oversized, not JSON or had no account id.
pub static AUTH_ERRORS_INVALID: Counter = Counter::new("auth_errors_invalid");
/// Requests that gave up waiting for a concurrent auth call.
pub static AUTH_ERRORS_LOCK_TIMEOUT: Counter = Counter::new("auth_errors_lock_timeout");
/// Requests whose concurrent auth call (made by another request) failed.
pub static AUTH_ERRORS_FLIGHT_FAILED: Counter = Counter::new("auth_errors_flight_failed");
/// Requests refused an auth call because this worker already had
/// `auth.max_in_flight` calls in flight (served stale or `failure_status`).
pub static AUTH_CALLS_REJECTED: Counter = Counter::new("auth_calls_rejected");
/// Account header values dropped (CR/LF/NUL, too long, not a scalar).
pub static HEADER_VALUES_DROPPED: Counter = Counter::new("header_values_dropped");

/// Log records queued (every record built, including ones dropped at once).
pub static LOG_QUEUED: Counter = Counter::new("log_queued");
/// Log records delivered to the collector.
pub static LOG_SENT: Counter = Counter::new("log_sent");
/// Failed deliveries of a batch (each retried later, or dropped).
pub static LOG_RETRIED: Counter = Counter::new("log_retried");
/// Log records dropped: queue full, record too large, or retry window over.
pub static LOG_DROPPED: Counter = Counter::new("log_dropped");
/// Bytes of log records queued in this worker now (a gauge).
pub static LOG_QUEUE_BYTES: Counter = Counter::new("log_queue_bytes");
/// Log records that could not be built (internal error).
pub static LOG_FAILED: Counter = Counter::new("log_failed");

/// Authenticated requests that matched a route.
pub static ROUTED: Counter = Counter::new("routed");

/// Requests holding a per-request slot now (a gauge; see ffi::slots).
pub static LIVE_SLOTS: Counter = Counter::new("live_slots");
/// Slots of requests whose log phase never ran, reclaimed by age.
pub static SLOTS_RECLAIMED: Counter = Counter::new("slots_reclaimed");

/// Every counter, in a stable order.
pub static ALL: [&Counter; 43] = [
    &REQUESTS,
    &RESPONSES,
    &RESPONSE_BYTES,
    &COMPLETED,
    &INTERNAL_ERRORS,
    &CONFIGS_COMPILED,
    &NO_CREDENTIAL,
    &L1_HITS,
    &L2_HITS,
    &NEGATIVE_HITS,
    &L1_NEGATIVE_HITS,
    &L2_NEGATIVE_HITS,
    &L3_HITS,
    &L3_NEGATIVE_HITS,
    &REDIS_ERRORS,
    &L1_MISSES,
    &L2_MISSES,
    &ALLOWED,
    &FAILED_CLOSED,
    &MISSES,
    &STALE_SERVED,
    &DENIED,
    &AUTH_CALLS,
    &AUTH_CALLS_OK,
    &AUTH_CALLS_DENIED,
    &AUTH_LATENCY_US,
    &AUTH_ERRORS_UNREACHABLE,
    &AUTH_ERRORS_TIMEOUT,
    &AUTH_ERRORS_STATUS,
    &AUTH_ERRORS_INVALID,
    &AUTH_ERRORS_LOCK_TIMEOUT,
    &AUTH_ERRORS_FLIGHT_FAILED,
    &AUTH_CALLS_REJECTED,
    &HEADER_VALUES_DROPPED,
    &ROUTED,
    &LIVE_SLOTS,
    &SLOTS_RECLAIMED,
    &LOG_QUEUED,
    &LOG_SENT,
    &LOG_RETRIED,
    &LOG_DROPPED,
    &LOG_QUEUE_BYTES,
    &LOG_FAILED,
];

/// Upper bounds (seconds) of the auth call latency histogram's buckets,
/// Prometheus' default buckets; the last bucket (`+Inf`) is implicit.
pub const LATENCY_BOUNDS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Auth calls by latency bucket, not cumulative: `AUTH_LATENCY_BUCKETS[i]`
/// counts calls in `(LATENCY_BOUNDS_S[i-1], LATENCY_BOUNDS_S[i]]`, the last
/// one those above every bound.
pub static AUTH_LATENCY_BUCKETS: [Counter; 12] = [
    Counter::new("auth_latency_le_0.005"),
    Counter::new("auth_latency_le_0.01"),
    Counter::new("auth_latency_le_0.025"),
    Counter::new("auth_latency_le_0.05"),
    Counter::new("auth_latency_le_0.1"),
    Counter::new("auth_latency_le_0.25"),
    Counter::new("auth_latency_le_0.5"),
    Counter::new("auth_latency_le_1"),
    Counter::new("auth_latency_le_2.5"),
    Counter::new("auth_latency_le_5"),
    Counter::new("auth_latency_le_10"),
    Counter::new("auth_latency_le_inf"),
];

/// Records one auth call's latency (sum and bucket).
pub fn record_auth_latency(latency_ms: f64) {
    let ms = latency_ms.max(0.0);
    AUTH_LATENCY_US.add((ms * 1000.0) as u64);
    let s = ms / 1000.0;
    let i = LATENCY_BOUNDS_S
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(LATENCY_BOUNDS_S.len());
    if let Some(c) = AUTH_LATENCY_BUCKETS.get(i) {
        c.incr();
    }
}

/// Counts an auth failure under its kind.
pub fn count_auth_error(err: &crate::auth::AuthError) {
    use crate::auth::AuthError as E;
    match err {
        E::Unreachable => AUTH_ERRORS_UNREACHABLE.incr(),
        E::Timeout => AUTH_ERRORS_TIMEOUT.incr(),
        E::Status(_) => AUTH_ERRORS_STATUS.incr(),
        E::LockTimeout => AUTH_ERRORS_LOCK_TIMEOUT.incr(),
        E::FlightFailed => AUTH_ERRORS_FLIGHT_FAILED.incr(),
        E::Rejected => AUTH_CALLS_REJECTED.incr(),
        E::BadResponse | E::InvalidJson | E::MissingAccount | E::MissingAccountId => {
            AUTH_ERRORS_INVALID.incr()
        }
    }
}

/// `(name, value)` of every counter, then of every latency bucket.
pub fn snapshot() -> impl Iterator<Item = (&'static str, u64)> {
    ALL.iter()
        .copied()
        .chain(AUTH_LATENCY_BUCKETS.iter())
        .map(|c| (c.name, c.get()))
}

/// Whether the counter `name` is a gauge (a value now, summed over workers
/// by the metrics, never accumulated as a delta).
pub fn is_gauge(name: &str) -> bool {
    matches!(name, "live_slots" | "log_queue_bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_counter_once() {
        let names: Vec<&str> = snapshot().map(|(n, _)| n).collect();
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len());
        assert!(names.contains(&"completed"));
    }

    #[test]
    fn latency_lands_in_its_bucket() {
        let before: Vec<u64> = AUTH_LATENCY_BUCKETS.iter().map(Counter::get).collect();
        record_auth_latency(5.0); // 0.005 s: on the first bound
        record_auth_latency(30.0); // 0.03 s: (0.025, 0.05]
        record_auth_latency(60_000.0); // above every bound
        let after: Vec<u64> = AUTH_LATENCY_BUCKETS.iter().map(Counter::get).collect();
        let grew: Vec<usize> = (0..after.len()).filter(|&i| after[i] > before[i]).collect();
        assert_eq!(grew, vec![0, 3, 11]);
    }

    #[test]
    fn counters_add() {
        let c = Counter::new("t");
        c.incr();
        c.add(41);
        assert_eq!(c.get(), 42);
    }
}
