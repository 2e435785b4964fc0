//! The account's headers of an allowed request: those that go upstream
//! (access) and those added to the response (header_filter).

use super::{fail, guard, with_live, ArStr, ERR_ARG};
use crate::stats;

/// Which header list [`ar_header`] reads.
const UPSTREAM: u32 = 0;
const RESPONSE: u32 = 1;

/// The number of account headers of a list (0 upstream, 1 response) for an
/// allowed request; 0 when it was not allowed.
#[no_mangle]
pub extern "C" fn ar_header_count(handle: f64, which: u32) -> i32 {
    guard(|| {
        with_live(handle, |live| match live.ex.account() {
            Some(a) if which == UPSTREAM => {
                stats::HEADER_VALUES_DROPPED.add(u64::from(a.dropped_headers));
                a.upstream_headers.len() as i32
            }
            Some(a) if which == RESPONSE => a.response_headers.len() as i32,
            Some(_) => fail(ERR_ARG, "ar_header_count: no such header list"),
            None => 0,
        })
    })
}

/// Header `i` (0-based) of a list: writes its value to `*value` and returns
/// the index of its rule in the config's `upstream_headers` (list 0) or
/// `response_headers` (list 1), whose name Lua holds already.
///
/// # Safety
/// `value` must point to a writable [`ArStr`].
#[no_mangle]
pub unsafe extern "C" fn ar_header(handle: f64, which: u32, i: u32, value: *mut ArStr) -> i32 {
    guard(|| {
        if value.is_null() {
            return fail(ERR_ARG, "ar_header: NULL out");
        }
        with_live(handle, |live| {
            let Some(a) = live.ex.account() else {
                return fail(ERR_ARG, "ar_header: the request was not allowed");
            };
            let list = match which {
                UPSTREAM => &a.upstream_headers,
                RESPONSE => &a.response_headers,
                _ => return fail(ERR_ARG, "ar_header: no such header list"),
            };
            let Some((rule, v)) = list.get(i as usize) else {
                return fail(ERR_ARG, "ar_header: index out of range");
            };
            // Owned by the account, which the slot's exchange holds.
            *value = ArStr::of(v.as_bytes());
            i32::from(*rule)
        })
    })
}
