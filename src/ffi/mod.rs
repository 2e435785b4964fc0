//! The C ABI of the per-request path, called through LuaJIT's FFI (declared
//! once, in `lua/auth_router/native.lua`). What runs once per config or once
//! per auth call stays on the mlua binding (`crate::lua`).
//!
//! Conventions, for every export:
//! - Strings cross as pointer + length ([`ArStr`]); a NULL pointer is "absent".
//!   Input strings are only read during the call.
//! - A request is named by a slot handle (a double, see [`slots`]); a stale
//!   handle is an error ([`ERR_STALE`]), never dereferenced.
//! - The return value is `>= 0` on success; a negative value is an error
//!   code, and [`ar_last_error`] then gives its message.
//! - Strings handed back ([`ArStr`] out parameters) point into native memory
//!   owned by the request's slot: valid until the next call for that handle
//!   that may change them ([`ar_release`](finish::ar_release),
//!   [`ar_finish`](finish::ar_finish)) and at most until the request's log
//!   phase. Lua copies them at once (`ffi.string`).
//! - The body runs under `catch_unwind`: a panic becomes [`ERR_PANIC`] with
//!   its message, and never unwinds into nginx.
//!
//! One file per concern, in the order of a request's phases: [`access`]
//! (`ar_access`), [`shared`] (the shared-dict step of a miss), [`headers`]
//! (the account's headers), [`route`] (routing after a miss), [`response`] (header and body filters), [`finish`] (the
//! log phase); this file holds the shared conventions' code and the
//! worker-level exports, [`slots`] the table of live requests.

pub mod access;
pub mod finish;
pub mod headers;
pub mod response;
pub mod route;
pub mod shared;
pub mod slots;

use slots::SlotError;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A byte string crossing the boundary.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ArStr {
    /// First byte, or NULL for "absent".
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl ArStr {
    const NULL: ArStr = ArStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    fn of(s: &[u8]) -> ArStr {
        ArStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr` must be NULL or point to `len` readable bytes for the call.
    unsafe fn bytes<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else {
            Some(std::slice::from_raw_parts(self.ptr, self.len))
        }
    }
}

/// An input string: NULL is absent.
///
/// # Safety
/// `ptr` must be NULL or point to `len` bytes readable for the call.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    ArStr { ptr, len }.bytes()
}

/// A Rust panic was caught.
pub const ERR_PANIC: i32 = -1;
/// The handle names no live request.
pub const ERR_STALE: i32 = -2;
/// No free slot (too many requests in flight in this worker).
pub const ERR_FULL: i32 = -3;
/// An argument is out of range.
pub const ERR_ARG: i32 = -4;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the message of an error code (counted as an internal error by the
/// Lua core, which surfaces every one of them).
fn fail(code: i32, message: impl Into<String>) -> i32 {
    LAST_ERROR.with(|e| *e.borrow_mut() = message.into());
    code
}

fn slot_error(e: SlotError) -> i32 {
    match e {
        SlotError::Stale => fail(ERR_STALE, "stale request handle"),
        SlotError::Full => fail(ERR_FULL, "too many requests in flight in this worker"),
    }
}

/// Runs `f` on the live request `handle` names: every export's prologue. A
/// stale handle is [`ERR_STALE`], and `f` does not run.
fn with_live(handle: f64, f: impl FnOnce(&mut slots::Live) -> i32) -> i32 {
    slots::with(|s| match s.get(handle) {
        Ok(live) => f(live),
        Err(e) => slot_error(e),
    })
}

/// Runs an export's body; a panic becomes [`ERR_PANIC`] with its message.
fn guard(body: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            fail(ERR_PANIC, msg)
        }
    }
}

/// The message of the last error on this worker (valid until the next error).
///
/// # Safety
/// `out` must be NULL or point to a writable [`ArStr`].
#[no_mangle]
pub unsafe extern "C" fn ar_last_error(out: *mut ArStr) -> i32 {
    guard(|| {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            if let Some(out) = out.as_mut() {
                // The thread-local String outlives the call; Lua copies it at once.
                *out = ArStr::of(e.as_bytes());
            }
        });
        0
    })
}

/// Requests holding a slot in this worker.
#[no_mangle]
pub extern "C" fn ar_live_slots() -> i32 {
    guard(|| slots::with(|s| s.live() as i32))
}
