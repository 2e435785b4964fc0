//! Native core of the `auth-router` Kong / OpenResty plugin.
//!
//! The core modules are pure and synchronous: they do no I/O, read no clock
//! (time is passed in) and never call back into Lua, so nothing beneath a Rust
//! frame can yield. This file is only the Lua binding (`auth_router_native`).
//!
//! Cargo features:
//! - `ffi` (default): the Lua module entry point and its conversions, built with
//!   `mlua` (`luajit`, `module`). Without it the crate is the pure core, as used
//!   by `cargo test`, the benches and the command-line tool.
#![deny(missing_docs, missing_debug_implementations)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod config;
pub mod exchange;
pub mod fault;
pub mod schema;
pub mod stats;

/// The plugin version; the rockspec and the Kong handler carry the same one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(feature = "ffi")]
mod ffi {
    use crate::config::{self, Config, ConfigError};
    use crate::exchange::Exchange;
    use crate::{fault, stats, VERSION};
    use mlua::prelude::*;
    use mlua::{UserData, UserDataMethods};
    use std::sync::Arc;

    /// A compiled config, shared by every request that uses it.
    #[derive(Debug)]
    struct Plugin(Arc<Config>);

    impl UserData for Plugin {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // plugin:access(method, uri, now_ms) -> exchange
            methods.add_method(
                "access",
                |_, _this, (method, uri, now_ms): (LuaString, LuaString, f64)| {
                    fault::maybe_panic_in_access();
                    let method = method.to_str()?;
                    let uri = uri.to_str()?;
                    Ok(Ctx(Exchange::begin(&method, &uri, now_ms as u64)))
                },
            );
            // plugin:config() -> normalized config table
            methods.add_method("config", |lua, this, ()| to_lua(lua, &this.0.normalized));
        }
    }

    /// One request's native state, kept in `ngx.ctx` between phases.
    #[derive(Debug)]
    struct Ctx(Exchange);

    impl UserData for Ctx {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // ctx:response(status)
            methods.add_method_mut("response", |_, this, status: u16| {
                this.0.response(status);
                Ok(())
            });
            // ctx:body_chunk(chunk_or_nil)
            methods.add_method_mut("body_chunk", |_, this, chunk: Option<LuaString>| {
                if let Some(chunk) = chunk {
                    this.0.body_chunk(chunk.as_bytes().len());
                }
                Ok(())
            });
            // ctx:finish(now_ms): the log phase closes the exchange.
            methods.add_method("finish", |_, this, _now_ms: f64| {
                this.0.finish();
                Ok(())
            });
        }
    }

    fn to_lua(lua: &Lua, value: &serde_json::Value) -> LuaResult<LuaValue> {
        lua.to_value(value)
    }

    /// Reads a config given as a Lua table or a JSON string.
    fn config_input(lua: &Lua, conf: LuaValue) -> Result<config::Config, ConfigError> {
        match conf {
            LuaValue::String(s) => config::compile_json(&s.to_string_lossy()),
            other => match lua.from_value::<serde_json::Value>(other) {
                Ok(v) => config::compile(v),
                Err(e) => Err(ConfigError::Invalid(vec![crate::schema::FieldError {
                    path: "config".into(),
                    message: format!("cannot be read: {e}"),
                }])),
            },
        }
    }

    /// The error list as a Lua array of "path: message" strings.
    fn error_list(lua: &Lua, err: ConfigError) -> LuaResult<LuaTable> {
        let list: Vec<String> = match err {
            ConfigError::Invalid(errs) => errs.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        };
        lua.create_sequence_from(list)
    }

    /// validate(conf) -> normalized | nil, errors
    ///
    /// Arguments: `conf`, a config table (Kong's `config`) or JSON text.
    /// Returns: the normalized config (every default filled in), or `nil` and
    /// an array of `"field.path: message"` strings.
    fn validate(lua: &Lua, conf: LuaValue) -> LuaResult<(LuaValue, LuaValue)> {
        match config_input(lua, conf) {
            Ok(c) => Ok((to_lua(lua, &c.normalized)?, LuaValue::Nil)),
            Err(e) => Ok((LuaValue::Nil, LuaValue::Table(error_list(lua, e)?))),
        }
    }

    /// compile(conf) -> plugin | nil, errors
    ///
    /// Like `validate`, but returns the compiled config as userdata with the
    /// per-request methods. Compile once per config, never per request.
    fn compile(lua: &Lua, conf: LuaValue) -> LuaResult<(LuaValue, LuaValue)> {
        match config_input(lua, conf) {
            Ok(c) => {
                stats::CONFIGS_COMPILED.incr();
                let ud = lua.create_userdata(Plugin(Arc::new(c)))?;
                Ok((LuaValue::UserData(ud), LuaValue::Nil))
            }
            Err(e) => Ok((LuaValue::Nil, LuaValue::Table(error_list(lua, e)?))),
        }
    }

    /// stats() -> { name = count, ... } for this worker.
    fn stats(lua: &Lua, _: ()) -> LuaResult<LuaTable> {
        let t = lua.create_table()?;
        for (name, value) in stats::snapshot() {
            t.set(name, value)?;
        }
        Ok(t)
    }

    /// The module table. `skip_memory_check`: mlua's per-call allocator check
    /// costs several hundred ns per call and LuaJIT has no memory limit to enforce.
    #[mlua::lua_module(name = "auth_router_native", skip_memory_check)]
    fn auth_router_native(lua: &Lua) -> LuaResult<LuaTable> {
        let exports = lua.create_table()?;
        exports.set("version", lua.create_function(|_, ()| Ok(VERSION))?)?;
        exports.set("validate", lua.create_function(validate)?)?;
        exports.set("compile", lua.create_function(compile)?)?;
        exports.set("stats", lua.create_function(stats)?)?;
        exports.set(
            "internal_error",
            lua.create_function(|_, ()| {
                stats::INTERNAL_ERRORS.incr();
                Ok(())
            })?,
        )?;
        // Test hook, see fault.rs.
        exports.set(
            "_arm_panic",
            lua.create_function(|_, ()| {
                fault::arm_panic_next_access();
                Ok(())
            })?,
        )?;
        Ok(exports)
    }
}
