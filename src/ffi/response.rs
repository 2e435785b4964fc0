//! header_filter and body_filter: the response status, a refused request,
//! body chunks for the log's capture.

use super::{guard, input, with_live};

/// header_filter: records the response status; returns the number of
/// response headers to add (read them with [`ar_header`](super::headers::ar_header), list 1): none
/// when the request was not allowed or [`ar_refuse`] was called.
#[no_mangle]
pub extern "C" fn ar_response(handle: f64, status: i32) -> i32 {
    guard(|| {
        with_live(handle, |live| {
            live.ex.response(status.clamp(0, 999) as u16);
            if live.ex.refused() {
                return 0;
            }
            live.ex
                .account()
                .map_or(0, |a| a.response_headers.len() as i32)
        })
    })
}

/// The adapter ends an allowed request with the gateway's own error (a
/// route it cannot apply): its response gets no account headers.
#[no_mangle]
pub extern "C" fn ar_refuse(handle: f64) -> i32 {
    guard(|| {
        with_live(handle, |live| {
            live.ex.refuse();
            0
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
        with_live(handle, |live| {
            if let Some(c) = input(chunk, len) {
                live.ex.body_chunk(c);
            }
            0
        })
    })
}
