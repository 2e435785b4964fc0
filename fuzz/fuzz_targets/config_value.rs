//! Fuzzes the config compiler on generated JSON values that follow the
//! schema (field names, nesting, plausible and implausible values), as Kong
//! hands the plugin its config, so inputs get past JSON parsing and field
//! names and reach the semantic checks.
//!
//! Oracles: those of `auth_router_fuzz::check_compiled`, and compiling the
//! value or its JSON text gives the same result.
#![no_main]

use auth_router_fuzz::{check_compiled, gen_record, CONFIG};
use auth_router_native::config::{self, ConfigError};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(value) = gen_record(&mut u, CONFIG, 4) else {
        return;
    };
    let text = value.to_string();
    let from_value = config::compile(value);
    let from_text = config::compile_json(&text);
    match (&from_value, &from_text) {
        (Ok(a), Ok(b)) => assert_eq!(a.normalized, b.normalized),
        (Err(ConfigError::Invalid(a)), Err(ConfigError::Invalid(b))) => assert_eq!(a, b),
        (a, b) => panic!("value and text compile differently: {a:?} / {b:?}"),
    }
    check_compiled(from_value);
});
