//! Routing of a request allowed after a cache miss (a hit is routed by
//! [`ar_access`]).

#[cfg(doc)]
use super::access::ar_access;
use super::{fail, guard, input, with_live, ArStr, ERR_ARG};
use std::borrow::Cow;

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
        with_live(handle, |live| {
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
