//! The log phase: who an allowed request was, then its exchange closed,
//! its record queued when the plugin logs, and its slot freed.

use super::access::NgxHeader;
use super::slots::{self, Live};
use super::{fail, guard, slot_error, with_live, ArStr, ERR_ARG};
use crate::exchange::CacheStatus;
use crate::fault;
use crate::log::recorder::{Header, LogMeta};
use crate::stats;
use std::borrow::Cow;

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
        with_live(handle, |live| {
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

/// Frees a slot without a record (an internal redirect's first pass; the
/// cleanup after an [`ar_log`] that failed).
#[no_mangle]
pub extern "C" fn ar_release(handle: f64) -> i32 {
    guard(|| match slots::with(|s| s.release(handle, |_| ())) {
        Ok(()) => 0,
        Err(e) => slot_error(e),
    })
}

/// What nginx knows about a request at log time (`ar_log_in`). Strings
/// point into the request's memory (nginx variables) or into Lua strings
/// the caller holds for the call; NULL is absent. Numbers stay as nginx's
/// variables give them, parsed here.
#[repr(C)]
#[derive(Debug)]
pub struct ArLogIn {
    /// Log phase time, epoch milliseconds.
    pub now_ms: f64,
    /// `$remote_addr`.
    pub client_ip: ArStr,
    /// The request id header's value.
    pub request_id: ArStr,
    /// `$request_length`.
    pub request_length: ArStr,
    /// `$bytes_sent`.
    pub bytes_sent: ArStr,
    /// `$upstream_addr`: NULL or empty when the request was not proxied.
    pub upstream_addr: ArStr,
    /// `$upstream_status`.
    pub upstream_status: ArStr,
    /// `$upstream_response_time` ("0.012", or "0.010, 0.004" after retries).
    pub upstream_response_time: ArStr,
    /// Where the host sent a request no route matched (`host:port`).
    pub default_target: ArStr,
    /// Or the Kong Upstream it sent it to.
    pub default_upstream: ArStr,
    /// Request headers as `ngx_http_lua_ffi_req_get_headers` lists them.
    pub request_headers: *const NgxHeader,
    /// How many.
    pub request_header_count: u32,
    /// Response headers, in the same layout (filled by Lua).
    pub response_headers: *const NgxHeader,
    /// How many.
    pub response_header_count: u32,
}

/// log (logging on): closes the exchange, queues its record and frees the
/// slot. Returns 1 when the record filled its batch (ready to send now),
/// else 0. On an error the slot may still be live: the caller then calls
/// [`ar_release`] (a stale handle there is harmless).
///
/// # Safety
/// `input` must point to an [`ArLogIn`] whose strings and header arrays are
/// readable for the call.
#[no_mangle]
pub unsafe extern "C" fn ar_log(handle: f64, input: *const ArLogIn) -> i32 {
    guard(|| {
        let Some(input) = input.as_ref() else {
            return fail(ERR_ARG, "ar_log: NULL input");
        };
        slots::with(|s| {
            let code = match s.get(handle) {
                Ok(live) => {
                    live.ex.finish();
                    fault::maybe_panic_in_log();
                    record(live, input)
                }
                Err(e) => return slot_error(e),
            };
            let _ = s.release(handle, |_| ());
            code
        })
    })
}

/// Lossy: a client can put any byte in a header or its request id.
fn text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// # Safety
/// As [`ar_log`]'s `input`.
unsafe fn record(live: &mut Live, input: &ArLogIn) -> i32 {
    let Some(rec) = &live.plugin.recorder else {
        return 0;
    };
    let opt = |s: ArStr| s.bytes().map(text);
    let number = |s: ArStr| -> u64 {
        s.bytes()
            .and_then(|b| std::str::from_utf8(b).ok()?.trim().parse().ok())
            .unwrap_or(0)
    };
    let client_ip = opt(input.client_ip).unwrap_or_default();
    let request_id = opt(input.request_id);
    let upstream_addr = opt(input.upstream_addr).filter(|a| !a.is_empty());
    let upstream_status = upstream_addr.as_ref().and(opt(input.upstream_status));
    let default_target = opt(input.default_target);
    let default_upstream = opt(input.default_upstream);
    let meta = LogMeta {
        now_ms: input.now_ms.max(0.0) as u64,
        client_ip: &client_ip,
        request_id: request_id.as_deref(),
        method: live.ex.method(),
        uri: live.ex.uri(),
        request_headers: headers(input.request_headers, input.request_header_count),
        response_headers: headers(input.response_headers, input.response_header_count),
        request_size: number(input.request_length),
        response_size: number(input.bytes_sent),
        proxy_ms: input
            .upstream_response_time
            .bytes()
            .and_then(last_seconds)
            .map(|s| s * 1000.0),
        upstream_addr: upstream_addr.as_deref(),
        upstream_status: upstream_status.as_deref(),
        default_target: default_target.as_deref(),
        default_upstream: default_upstream.as_deref(),
        routes: &live.plugin.config.routes,
    };
    match rec.record(&live.ex, &meta) {
        Ok(full) => i32::from(full),
        Err(e) => {
            stats::LOG_FAILED.incr();
            fail(ERR_ARG, format!("cannot queue the log record: {e}"))
        }
    }
}

/// The (lowercase name, value) pairs of a header array.
///
/// # Safety
/// `list` must be NULL or point to `n` [`NgxHeader`] with readable strings.
unsafe fn headers<'a>(list: *const NgxHeader, n: u32) -> Vec<Header<'a>> {
    if list.is_null() || n == 0 {
        return Vec::new();
    }
    std::slice::from_raw_parts(list, n as usize)
        .iter()
        .map(|h| {
            let name = match text(h.key.bytes()) {
                Cow::Borrowed(n) if n.bytes().any(|b| b.is_ascii_uppercase()) => {
                    Cow::Owned(n.to_ascii_lowercase())
                }
                Cow::Owned(n) => Cow::Owned(n.to_ascii_lowercase()),
                name => name,
            };
            (name, text(h.value.bytes()))
        })
        .collect()
}

/// The last time in an `$upstream_response_time` ("0.012", "0.010, 0.004"
/// after retries, "0.010 : 0.004" across internal redirects; "-" when no
/// answer came), in seconds.
fn last_seconds(v: &[u8]) -> Option<f64> {
    let start = v
        .iter()
        .rposition(|b| !(b.is_ascii_digit() || *b == b'.'))
        .map_or(0, |i| i + 1);
    std::str::from_utf8(&v[start..]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::last_seconds;

    #[test]
    fn the_last_upstream_time_is_the_proxy_time() {
        assert_eq!(last_seconds(b"0.012"), Some(0.012));
        assert_eq!(last_seconds(b"0.010, 0.004"), Some(0.004));
        assert_eq!(last_seconds(b"0.010 : 0.250"), Some(0.25));
        assert_eq!(last_seconds(b"-"), None);
        assert_eq!(last_seconds(b"0.010, -"), None);
        assert_eq!(last_seconds(b""), None);
    }
}
