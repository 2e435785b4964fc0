//! Native core of the `auth-router` Kong / OpenResty plugin.
//!
//! The core modules are pure and synchronous: they do no I/O, read no clock
//! (time is passed in) and never call back into Lua, so nothing beneath a Rust
//! frame can yield. See `docs/ARCHITECTURE.md` for the layout.
//!
//! Cargo features:
//! - `lua` (default): the Lua module entry point and its conversions, built with
//!   `mlua` (`luajit`, `module`): what runs once per config or per auth call.
//!   Without it the crate is the pure core plus the C ABI of the per-request
//!   path (`ffi`, always built), as used by `cargo test`, the benches and the
//!   command-line tool.
#![deny(missing_docs, missing_debug_implementations)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
pub mod config;
pub mod exchange;
pub mod fault;
pub mod ffi;
pub mod http1;
pub mod log;
pub mod metrics;
pub mod resp;
pub mod routing;
pub mod stats;

/// The Lua module entry point, `luaopen_auth_router_native`.
#[cfg(feature = "lua")]
mod lua;

/// The plugin version; the rockspec and the Kong handler carry the same one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
