//! The log phase: who an allowed request was, then its exchange closed and
//! its slot freed.

use super::slots;
use super::{fail, guard, slot_error, ArStr, ERR_ARG};
use crate::exchange::CacheStatus;

/// Who an allowed request is: its account id into `*id` (NULL if none);
/// returns the cache status (0 none, 1 hit, 2 miss, 3 stale, 4 negative).
///
/// # Safety
/// `id` must point to a writable [`ArStr`].
#[no_mangle]
pub unsafe extern "C" fn ar_identity(handle: f64, id: *mut ArStr) -> i32 {
    guard(|| {
        if id.is_null() {
            return fail(ERR_ARG, "ar_identity: NULL out");
        }
        slots::with(|s| match s.get(handle) {
            Ok(live) => {
                *id = live
                    .ex
                    .account()
                    .map_or(ArStr::NULL, |a| ArStr::of(a.id.as_bytes()));
                match live.ex.cache_status() {
                    CacheStatus::None => 0,
                    CacheStatus::Hit => 1,
                    CacheStatus::Miss => 2,
                    CacheStatus::Stale => 3,
                    CacheStatus::Negative => 4,
                }
            }
            Err(e) => slot_error(e),
        })
    })
}

/// log (logging off): closes the exchange and frees its slot.
#[no_mangle]
pub extern "C" fn ar_finish(handle: f64) -> i32 {
    guard(
        || match slots::with(|s| s.release(handle, |live| live.ex.finish())) {
            Ok(()) => 0,
            Err(e) => slot_error(e),
        },
    )
}

/// Frees a slot whose exchange was already closed (the logged path closes it
/// through the mlua binding, then releases).
#[no_mangle]
pub extern "C" fn ar_release(handle: f64) -> i32 {
    guard(|| match slots::with(|s| s.release(handle, |_| ())) {
        Ok(()) => 0,
        Err(e) => slot_error(e),
    })
}
