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
//!   that may change them ([`ar_release`], [`ar_finish`]) and at most until
//!   the request's log phase. Lua copies them at once (`ffi.string`).
//! - The body runs under `catch_unwind`: a panic becomes [`ERR_PANIC`] with
//!   its message, and never unwinds into nginx.

pub mod slots;

use crate::auth::flow::{Plugin, Step};
use crate::exchange::CacheStatus;
use crate::{fault, stats};
use slots::SlotError;
use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

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

/// Step codes returned by [`ar_access`].
fn step_code(step: Step) -> i32 {
    match step {
        Step::NoCredential => 0,
        Step::Allow => 1,
        Step::Deny => 2,
        Step::Miss => 3,
        Step::Failed => 4,
    }
}

/// [`ar_access`]'s step when a credential or forwarded header is repeated.
pub const STEP_REPEATED: i32 = 5;

/// A string as nginx's lua module hands it out (`ngx_http_lua_ffi_str_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NgxStr {
    /// Length in bytes.
    pub len: c_int,
    /// First byte.
    pub data: *const u8,
}

impl NgxStr {
    /// # Safety
    /// `data` must point to `len` bytes readable for the call (or len <= 0).
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        match usize::try_from(self.len) {
            Ok(len) if len > 0 && !self.data.is_null() => {
                std::slice::from_raw_parts(self.data, len)
            }
            _ => &[],
        }
    }
}

/// One request header as `ngx_http_lua_ffi_req_get_headers` lists it
/// (`ngx_http_lua_ffi_table_elt_t`): with `raw = 0` the name is nginx's
/// lowercase copy. Both point into the request's memory.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NgxHeader {
    /// Lowercase name.
    pub key: NgxStr,
    /// Value.
    pub value: NgxStr,
}

/// What [`ar_access`] answers besides its step (`ar_access_out`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ArAccess {
    /// The request's slot.
    pub handle: f64,
    /// Allow: how many account headers go upstream ([`ar_header`], list 0).
    pub upstream: i32,
    /// [`STEP_REPEATED`]: which header, as an index into the credential
    /// then forwarded header names of the config.
    pub repeated: i32,
    /// Allow from the cache: the matched route's index, or -1.
    pub route: i32,
    /// With a route that strips its prefix: the upstream path. Points into
    /// `path` or into the slot; copy it before `path` goes away.
    pub path: ArStr,
}

/// access: begins the request's exchange in a new slot, reads the
/// credential (and forwarded, and API-version) header values from nginx's
/// header list, and looks the credential up in this worker's cache. On a
/// hit it also takes the routing decision for `path` (nginx's `$uri`).
/// `plugin` is the pointer that the mlua binding's `plugin:ffi_ptr()` gave
/// (the compiled config; Lua keeps it alive). `headers`: `n` entries
/// from `ngx_http_lua_ffi_req_get_headers(r, headers, n, 0)`. Fills `*out`;
/// returns the step (0 none, 1 allow, 2 deny, 3 miss, 4 failed, 5 repeated
/// header) or an error code. Nothing is allocated on a hit without logging.
///
/// # Safety
/// `plugin` must come from `ffi_ptr()` of a plugin Lua still references;
/// `headers` must point to `n` [`NgxHeader`]; strings must be readable.
#[no_mangle]
pub unsafe extern "C" fn ar_access(
    plugin: *const c_void,
    method: *const u8,
    method_len: usize,
    uri: *const u8,
    uri_len: usize,
    path: *const u8,
    path_len: usize,
    start_ms: f64,
    now: f64,
    headers: *const NgxHeader,
    n: u32,
    out: *mut ArAccess,
) -> i32 {
    guard(|| {
        if plugin.is_null() || out.is_null() || (headers.is_null() && n > 0) {
            return fail(ERR_ARG, "ar_access: NULL argument");
        }
        let out = &mut *out;
        *out = ArAccess {
            handle: -1.0,
            upstream: 0,
            repeated: -1,
            route: -1,
            path: ArStr::NULL,
        };
        let plugin = {
            let ptr = plugin as *const Plugin;
            // A new strong reference for the slot; Lua's stays with Lua.
            Rc::increment_strong_count(ptr);
            Rc::from_raw(ptr)
        };
        let method = input(method, method_len).unwrap_or_default();
        let uri = input(uri, uri_len).unwrap_or_default();
        let path = input(path, path_len).unwrap_or_default();
        let mut ex = plugin.begin(method, uri, start_ms.max(0.0) as u64);
        fault::maybe_panic_in_access();
        let headers: &[NgxHeader] = if n == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(headers, n as usize)
        };
        let pairs = headers.iter().map(|h| (h.key.bytes(), h.value.bytes()));
        let code = match plugin.read_headers(pairs, |values, version| {
            let step = plugin.lookup(&mut ex, values, now);
            if step == Step::Miss {
                ex.set_api_version(version);
            } else if step == Step::Allow {
                if let Some(a) = ex.account() {
                    out.upstream = a.upstream_headers.len() as i32;
                    stats::HEADER_VALUES_DROPPED.add(u64::from(a.dropped_headers));
                }
                if let Some(action) = plugin.route(&mut ex, path, version) {
                    out.route = action.index as i32;
                    out.path = match action.path {
                        Some(Cow::Borrowed(p)) => ArStr::of(p),
                        Some(Cow::Owned(p)) => {
                            ex.set_upstream_path(Some(p)).map_or(ArStr::NULL, ArStr::of)
                        }
                        None => ArStr::NULL,
                    };
                }
            }
            step_code(step)
        }) {
            Ok(code) => code,
            Err(index) => {
                out.repeated = index as i32;
                STEP_REPEATED
            }
        };
        match slots::with(|s| s.insert(plugin, ex, now)) {
            Ok(h) => {
                out.handle = h;
                code
            }
            Err(e) => slot_error(e),
        }
    })
}

/// Which header list [`ar_header`] reads.
const UPSTREAM: u32 = 0;
const RESPONSE: u32 = 1;

/// The number of account headers of a list (0 upstream, 1 response) for an
/// allowed request; 0 when it was not allowed.
#[no_mangle]
pub extern "C" fn ar_header_count(handle: f64, which: u32) -> i32 {
    guard(|| {
        slots::with(|s| match s.get(handle) {
            Ok(live) => match live.ex.account() {
                Some(a) if which == UPSTREAM => {
                    stats::HEADER_VALUES_DROPPED.add(u64::from(a.dropped_headers));
                    a.upstream_headers.len() as i32
                }
                Some(a) if which == RESPONSE => a.response_headers.len() as i32,
                Some(_) => fail(ERR_ARG, "ar_header_count: no such header list"),
                None => 0,
            },
            Err(e) => slot_error(e),
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
        slots::with(|s| {
            let live = match s.get(handle) {
                Ok(l) => l,
                Err(e) => return slot_error(e),
            };
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

/// The routing decision for a request allowed after a cache miss (a hit
/// is routed by [`ar_access`]): `path` is nginx's `$uri`; the API-version
/// header is the one [`ar_access`] read. Returns the matched route's index
/// (0-based, config order) or -5 when none matched; writes the stripped
/// upstream path to `*path_out` (NULL when the route keeps it), pointing
/// into `path` or into the slot.
///
/// # Safety
/// `path_out` must point to a writable [`ArStr`].
#[no_mangle]
pub unsafe extern "C" fn ar_route(
    handle: f64,
    path: *const u8,
    path_len: usize,
    path_out: *mut ArStr,
) -> i32 {
    guard(|| {
        if path_out.is_null() {
            return fail(ERR_ARG, "ar_route: NULL out");
        }
        slots::with(|s| {
            let live = match s.get(handle) {
                Ok(l) => l,
                Err(e) => return slot_error(e),
            };
            let path = input(path, path_len).unwrap_or_default();
            let version = live.ex.api_version().map(<[u8]>::to_vec);
            let Some(action) = live.plugin.route(&mut live.ex, path, version.as_deref()) else {
                *path_out = ArStr::NULL;
                return NO_ROUTE;
            };
            let index = action.index as i32;
            *path_out = match action.path {
                Some(Cow::Borrowed(p)) => ArStr::of(p),
                Some(Cow::Owned(p)) => live
                    .ex
                    .set_upstream_path(Some(p))
                    .map_or(ArStr::NULL, ArStr::of),
                None => ArStr::NULL,
            };
            index
        })
    })
}

/// [`ar_route`]'s answer when no route matched.
pub const NO_ROUTE: i32 = -5;

/// header_filter: records the response status; returns the number of
/// response headers to add (read them with [`ar_header`], list 1): none
/// when the request was not allowed or [`ar_refuse`] was called.
#[no_mangle]
pub extern "C" fn ar_response(handle: f64, status: i32) -> i32 {
    guard(|| {
        slots::with(|s| match s.get(handle) {
            Ok(live) => {
                live.ex.response(status.clamp(0, 999) as u16);
                if live.ex.refused() {
                    return 0;
                }
                live.ex
                    .account()
                    .map_or(0, |a| a.response_headers.len() as i32)
            }
            Err(e) => slot_error(e),
        })
    })
}

/// The adapter ends an allowed request with the gateway's own error (a
/// route it cannot apply): its response gets no account headers.
#[no_mangle]
pub extern "C" fn ar_refuse(handle: f64) -> i32 {
    guard(|| {
        slots::with(|s| match s.get(handle) {
            Ok(live) => {
                live.ex.refuse();
                0
            }
            Err(e) => slot_error(e),
        })
    })
}

/// body_filter: a response chunk went by (copied, bounded, when logged).
///
/// # Safety
/// `chunk` must be readable for the call.
#[no_mangle]
pub unsafe extern "C" fn ar_body_chunk(handle: f64, chunk: *const u8, len: usize) -> i32 {
    guard(|| {
        slots::with(|s| match s.get(handle) {
            Ok(live) => {
                if let Some(c) = input(chunk, len) {
                    live.ex.body_chunk(c);
                }
                0
            }
            Err(e) => slot_error(e),
        })
    })
}

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

/// Requests holding a slot in this worker.
#[no_mangle]
pub extern "C" fn ar_live_slots() -> i32 {
    guard(|| slots::with(|s| s.live() as i32))
}
