//! Auth: everything between a request's credential and its verdict.
//!
//! - [`verdict`]: the auth service's answer to a verdict (an account or a
//!   denial) and a cache lifetime; the account's header values.
//! - [`cache`]: the per-worker (L1) cache of verdicts.
//! - [`flow`]: one compiled config's runtime ([`flow::Plugin`]) and the steps
//!   of the access phase over the modules above.

pub mod cache;
pub mod flow;
pub mod verdict;
