//! Fault: test-only fault injection, so the real-nginx specs can prove that a
//! native panic in the request path becomes a 500 and the worker survives.
//!
//! Why not the `fail` crate: its fail points exist only in builds with its
//! `failpoints` feature, and our specs must exercise the build that ships.
//! Arming needs Lua code running inside the worker, which already has full
//! control of it, so this adds no attack surface.

use std::sync::atomic::{AtomicBool, Ordering};

static PANIC_NEXT_ACCESS: AtomicBool = AtomicBool::new(false);
static PANIC_NEXT_LOG: AtomicBool = AtomicBool::new(false);

/// Makes the next `access` call in this worker panic.
pub fn arm_panic_next_access() {
    PANIC_NEXT_ACCESS.store(true, Ordering::Relaxed);
}

/// Makes the next logged record (`ar_log`) in this worker panic.
pub fn arm_panic_next_log() {
    PANIC_NEXT_LOG.store(true, Ordering::Relaxed);
}

/// Panics once if armed. Called at the start of the access path.
#[allow(clippy::panic)] // the whole point: a real panic for the containment specs
pub fn maybe_panic_in_access() {
    if PANIC_NEXT_ACCESS.swap(false, Ordering::Relaxed) {
        panic!("injected fault: panic in access");
    }
}

/// Panics once if armed. Called by `ar_log` before it writes the record.
#[allow(clippy::panic)]
pub fn maybe_panic_in_log() {
    if PANIC_NEXT_LOG.swap(false, Ordering::Relaxed) {
        panic!("injected fault: panic in log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_fault_panics_once() {
        arm_panic_next_access();
        assert!(std::panic::catch_unwind(maybe_panic_in_access).is_err());
        maybe_panic_in_access(); // disarmed: no panic
        arm_panic_next_log();
        assert!(std::panic::catch_unwind(maybe_panic_in_log).is_err());
        maybe_panic_in_log();
    }
}
