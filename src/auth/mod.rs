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
