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
/// Cached 401/403 verdicts served (L1 or L2).
pub static NEGATIVE_HITS: Counter = Counter::new("negative_hits");
/// Verdicts that needed an auth call.
pub static MISSES: Counter = Counter::new("misses");
/// Expired entries served because the auth service failed.
pub static STALE_SERVED: Counter = Counter::new("stale_served");
/// Requests denied with the auth service's 401/403 (fresh or cached).
pub static DENIED: Counter = Counter::new("denied");
/// Auth service calls answered or failed.
pub static AUTH_CALLS: Counter = Counter::new("auth_calls");
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
pub static ALL: [&Counter; 32] = [
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
    &MISSES,
    &STALE_SERVED,
    &DENIED,
    &AUTH_CALLS,
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

/// `(name, value)` of every counter.
pub fn snapshot() -> impl Iterator<Item = (&'static str, u64)> {
    ALL.iter().map(|c| (c.name, c.get()))
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
    fn counters_add() {
        let c = Counter::new("t");
        c.incr();
        c.add(41);
        assert_eq!(c.get(), 42);
    }
}
