//! access: the request's first call; reads its credential from nginx's
//! header list, looks it up in L1 and, on a hit, routes it.

use super::slots;
use super::{fail, guard, input, slot_error, with_live, ArStr, ERR_ARG};
use crate::auth::flow::{Plugin, SpoofMask, Step};
use crate::{fault, stats};
use std::borrow::Cow;
use std::ffi::{c_int, c_void};
use std::rc::Rc;

/// Step codes returned by [`ar_access`] (and [`ar_load_shared`](super::shared::ar_load_shared)).
pub(super) fn step_code(step: Step) -> i32 {
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
    pub(super) unsafe fn bytes<'a>(self) -> &'a [u8] {
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
    /// Allow: how many account headers go upstream ([`ar_header`](super::headers::ar_header), list 0).
    pub upstream: i32,
    /// [`STEP_REPEATED`]: which header, as an index into the credential
    /// then forwarded header names of the config.
    pub repeated: i32,
    /// Allow from the cache: the matched route's index, or -1.
    pub route: i32,
    /// With a route that strips its prefix: the upstream path. Points into
    /// `path` or into the slot; copy it before `path` goes away.
    pub path: ArStr,
    /// The spoofable headers the request carries, to strip
    /// ([`SpoofMask`]: bit j for name j of the upstream header rules then
    /// the route header; bit 31 for any from 31 on). Set on every step
    /// that may let the request through (not on a repeated header).
    pub spoofed: u32,
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
            spoofed: 0,
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
        let code = match plugin.read_headers(pairs, |values, version, spoofed: SpoofMask| {
            out.spoofed = spoofed.0;
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

/// The request body of an allowed request whose body is logged: `data`
/// (what nginx holds, or what Lua read back of a spilled body) and the
/// body's full size in bytes; the capture keeps at most `max_body_bytes`.
///
/// # Safety
/// `data` must point to `len` readable bytes (or be NULL with `len` 0).
#[no_mangle]
pub unsafe extern "C" fn ar_request_body(
    handle: f64,
    data: *const u8,
    len: usize,
    size: f64,
) -> i32 {
    guard(|| {
        let data = input(data, len).unwrap_or(&[]);
        with_live(handle, |live| {
            live.ex.request_body(data, size.max(0.0) as u64);
            0
        })
    })
}
