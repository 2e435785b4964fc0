//! Auth: everything between a request's credential and its verdict.
//!
//! - [`verdict`]: the auth service's answer to a verdict (an account or a
//!   denial) and a cache lifetime; the account's header values.
//! - [`key`]: the cache key, a keyed digest of what the auth service is sent.
//! - [`cache`]: the per-worker (L1) cache of verdicts.
//! - [`shared`]: the form of a cached verdict in the shared dict (L2).
//! - [`flow`]: one compiled config's runtime ([`flow::Plugin`]) and the steps
//!   of the access phase over the modules above.

pub mod cache;
pub mod flow;
pub mod key;
pub mod shared;
pub mod verdict;

/// Why the auth service gave no usable answer. Never cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Connecting, the TLS handshake, sending or receiving failed.
    #[error("auth service unreachable")]
    Unreachable,
    /// A connect, send or read timed out.
    #[error("auth service timed out")]
    Timeout,
    /// The response was not valid HTTP/1.1 or exceeded the size cap.
    #[error("invalid HTTP response from auth service")]
    BadResponse,
    /// A status other than 2xx, 401 or 403.
    #[error("auth service answered status {0}")]
    Status(u16),
    /// A 2xx whose body is not JSON.
    #[error("auth service body is not JSON")]
    InvalidJson,
    /// The body has no object at `account_pointer`.
    #[error("no account object at auth.account_pointer")]
    MissingAccount,
    /// The account has no string or number at `account_id_pointer`.
    #[error("no account id at auth.account_id_pointer")]
    MissingAccountId,
    /// Another request was fetching the same credential and did not finish in time.
    #[error("timed out waiting for a concurrent auth call")]
    LockTimeout,
    /// Another request's auth call for the same credential failed; its
    /// waiters share the outcome instead of retrying one by one.
    #[error("a concurrent auth call for the same credential failed")]
    FlightFailed,
    /// This worker already had `auth.max_in_flight` auth calls in flight:
    /// the request failed fast instead of queueing another call.
    #[error("too many auth calls in flight (auth.max_in_flight)")]
    Rejected,
}

impl AuthError {
    /// The failure of the auth call itself, as `lua/auth_router/http1.lua`
    /// names it: `unreachable`, `timeout` or `bad_response`. `None` for any
    /// other name: the caller raises it as the Lua core's bug, never maps it
    /// to some other failure.
    pub fn from_call_kind(kind: &[u8]) -> Option<AuthError> {
        match kind {
            b"unreachable" => Some(AuthError::Unreachable),
            b"timeout" => Some(AuthError::Timeout),
            b"bad_response" => Some(AuthError::BadResponse),
            _ => None,
        }
    }

    /// Why a request got no answer without making the call itself, as
    /// `lua/auth_router/init.lua` names it: `lock_timeout` (gave up waiting
    /// for a concurrent call), `flight_failed` (that call failed) or
    /// `rejected` (too many calls in flight in this worker). `None` for any
    /// other name, as in [`AuthError::from_call_kind`].
    pub fn from_flight_kind(kind: &[u8]) -> Option<AuthError> {
        match kind {
            b"lock_timeout" => Some(AuthError::LockTimeout),
            b"flight_failed" => Some(AuthError::FlightFailed),
            b"rejected" => Some(AuthError::Rejected),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_from_lua_are_known_names_or_none() {
        for (kind, want) in [
            ("unreachable", AuthError::Unreachable),
            ("timeout", AuthError::Timeout),
            ("bad_response", AuthError::BadResponse),
        ] {
            assert_eq!(AuthError::from_call_kind(kind.as_bytes()), Some(want));
            assert_eq!(AuthError::from_flight_kind(kind.as_bytes()), None, "{kind}");
        }
        for (kind, want) in [
            ("lock_timeout", AuthError::LockTimeout),
            ("flight_failed", AuthError::FlightFailed),
            ("rejected", AuthError::Rejected),
        ] {
            assert_eq!(AuthError::from_flight_kind(kind.as_bytes()), Some(want));
            assert_eq!(AuthError::from_call_kind(kind.as_bytes()), None, "{kind}");
        }
        // Unknown, misspelled or differently cased: never another kind.
        for kind in [
            "", "Timeout", "timeout ", "closed", "refused", "status", "x",
        ] {
            assert_eq!(AuthError::from_call_kind(kind.as_bytes()), None, "{kind:?}");
            assert_eq!(
                AuthError::from_flight_kind(kind.as_bytes()),
                None,
                "{kind:?}"
            );
        }
    }
}
