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

    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Requests that entered the access phase.
pub static REQUESTS: Counter = Counter::new("requests");
/// Responses whose headers went through header_filter.
pub static RESPONSES: Counter = Counter::new("responses");
/// Response body bytes seen by body_filter.
pub static RESPONSE_BYTES: Counter = Counter::new("response_bytes");
/// Exchanges closed in the log phase.
pub static COMPLETED: Counter = Counter::new("completed");
/// Native calls that failed with an internal error (including caught panics).
pub static INTERNAL_ERRORS: Counter = Counter::new("internal_errors");
/// Configs compiled (a config change compiles once per worker).
pub static CONFIGS_COMPILED: Counter = Counter::new("configs_compiled");

/// Every counter, in a stable order.
pub static ALL: [&Counter; 6] = [
    &REQUESTS,
    &RESPONSES,
    &RESPONSE_BYTES,
    &COMPLETED,
    &INTERNAL_ERRORS,
    &CONFIGS_COMPILED,
];

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
