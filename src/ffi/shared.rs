//! The shared-dict (L2) step of a request that missed L1: the key Lua reads
//! the node's shared dict under, then the value it found. What follows a
//! miss there (single flight, Redis, the auth call) stays on mlua: it runs
//! once per auth call, not per request.

use super::access::step_code;
use super::{fail, guard, input, with_live, ArStr, ERR_ARG};

/// The shared-dict key of the credential a missed request fetches (32 hex
/// characters), written to `*key`; it points into the request's slot.
///
/// # Safety
/// `key` must point to a writable [`ArStr`].
#[no_mangle]
pub unsafe extern "C" fn ar_pending_key(handle: f64, key: *mut ArStr) -> i32 {
    guard(|| {
        if key.is_null() {
            return fail(ERR_ARG, "ar_pending_key: NULL out");
        }
        with_live(handle, |live| {
            let Some(pending) = live.ex.pending_key() else {
                return fail(ERR_ARG, "ar_pending_key: no credential is being fetched");
            };
            live.key_hex = pending.hex_bytes();
            *key = ArStr::of(&live.key_hex);
            0
        })
    })
}

/// A value read from the shared dict under [`ar_pending_key`]'s key, at
/// `now` (seconds): a fresh entry fills L1 and answers allow (1) or deny (2)
/// as [`ar_access`](super::access::ar_access) does; a stale one is kept in L1
/// in case the auth service fails, and anything else (expired, another
/// version, corrupt) is a miss (3).
///
/// # Safety
/// `value` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ar_load_shared(
    handle: f64,
    value: *const u8,
    len: usize,
    now: f64,
) -> i32 {
    guard(|| {
        let Some(value) = input(value, len) else {
            return fail(ERR_ARG, "ar_load_shared: NULL value");
        };
        with_live(handle, |live| {
            step_code(live.plugin.load_shared(&mut live.ex, value, now))
        })
    })
}
