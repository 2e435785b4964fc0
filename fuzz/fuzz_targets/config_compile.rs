//! Fuzzes the config compiler on arbitrary text, as the OpenResty adapter
//! reads a config file and `auth-router check` reads its argument.
//!
//! Oracles (see `auth_router_fuzz::check_compiled`): the text is rejected as
//! JSON exactly when serde_json rejects it; an invalid config names its
//! fields; a compiled config normalizes to a fixpoint and is usable as is
//! (auth request, routing, log shipping).
#![no_main]

use auth_router_native::config::{self, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = config::compile_json(text);
    let is_json = serde_json::from_str::<serde_json::Value>(text).is_ok();
    assert_eq!(matches!(result, Err(ConfigError::Json(_))), !is_json);
    auth_router_fuzz::check_compiled(result);
});
