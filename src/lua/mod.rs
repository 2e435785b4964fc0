//! The Lua binding (`auth_router_native`, feature `lua`): what runs once per
//! config or once per auth call, on mlua. The per-request path is the C ABI
//! in [`crate::ffi`].
//!
//! This file builds the module table (`luaopen_auth_router_native`) and holds
//! its functions (`validate`, `compile`, `stats`, ...); the userdata types
//! live in [`plugin`] (a compiled config), [`exchange`] (a live request's
//! slot) and [`parser`] (an auth response being read).

mod exchange;
mod parser;
mod plugin;

use crate::auth::flow::Plugin;
use crate::config::fields::FieldError;
use crate::config::{self, ConfigError};
use crate::http1::ResponseParser;
use crate::{fault, metrics, resp, stats, VERSION};
use exchange::Ctx;
use mlua::prelude::*;
use parser::Parser;
use plugin::PluginUd;
use std::rc::Rc;

/// Shortest accepted cache-key secret.
const MIN_SECRET_BYTES: usize = 16;

/// Reads a config given as a Lua table or a JSON string.
fn config_input(lua: &Lua, conf: LuaValue) -> Result<config::Config, ConfigError> {
    match conf {
        LuaValue::String(s) => config::compile_json(&s.to_string_lossy()),
        other => match lua.from_value::<serde_json::Value>(other) {
            Ok(v) => config::compile(v),
            Err(e) => Err(ConfigError::Invalid(vec![FieldError {
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
        Ok(c) => Ok((lua.to_value(&c.normalized)?, LuaValue::Nil)),
        Err(e) => Ok((LuaValue::Nil, LuaValue::Table(error_list(lua, e)?))),
    }
}

/// compile(conf, secret) -> plugin | nil, errors
///
/// Like `validate`, but returns the compiled config as userdata with the
/// per-request methods. `secret` (at least 16 bytes) keys the cache-key
/// digests; every worker of a node must pass the same one.
/// Errors: raises when `secret` is missing or short (a programming error).
fn compile(lua: &Lua, (conf, secret): (LuaValue, LuaString)) -> LuaResult<(LuaValue, LuaValue)> {
    let secret = secret.as_bytes();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(LuaError::runtime(format!(
            "compile: secret must be at least {MIN_SECRET_BYTES} bytes"
        )));
    }
    match config_input(lua, conf) {
        Ok(c) => {
            stats::CONFIGS_COMPILED.incr();
            let ud = lua.create_userdata(PluginUd(Rc::new(Plugin::new(c, &secret))))?;
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

/// `redis_command(arg, ...)`: strings (or numbers, as Lua prints them).
fn redis_command(lua: &Lua, args: LuaMultiValue) -> LuaResult<LuaString> {
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(args.len());
    for (i, a) in args.into_iter().enumerate() {
        match a {
            LuaValue::String(s) => owned.push(s.as_bytes().to_vec()),
            LuaValue::Integer(n) => owned.push(n.to_string().into_bytes()),
            LuaValue::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                owned.push(format!("{n:.0}").into_bytes())
            }
            other => {
                return Err(LuaError::runtime(format!(
                    "redis_command: argument {} is a {}, not a string or an integer",
                    i + 1,
                    other.type_name()
                )))
            }
        }
    }
    if owned.is_empty() {
        return Err(LuaError::runtime("redis_command: no command"));
    }
    let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let mut out = Vec::with_capacity(64);
    resp::encode(&args, &mut out);
    lua.create_string(&out)
}

/// A reply as Lua sees it, in lua-resty-redis's shapes: a status or bulk
/// string is a string, an integer a number, a null `ngx.null` (the NULL
/// light userdata), an array a table, an error reply `{ err = message }`.
fn reply_value(lua: &Lua, reply: resp::Reply) -> LuaResult<LuaValue> {
    use resp::Reply;
    let null = LuaValue::LightUserData(LuaLightUserData(std::ptr::null_mut()));
    Ok(match reply {
        Reply::Simple(s) => LuaValue::String(lua.create_string(&s)?),
        Reply::Error(e) => {
            let t = lua.create_table()?;
            t.set("err", e)?;
            LuaValue::Table(t)
        }
        Reply::Integer(i) => LuaValue::Number(i as f64),
        Reply::Bulk(None) | Reply::Array(None) => null,
        Reply::Bulk(Some(b)) => LuaValue::String(lua.create_string(&b)?),
        Reply::Array(Some(items)) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, reply_value(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
    })
}

fn redis_reply(lua: &Lua, buf: LuaString) -> LuaResult<LuaMultiValue> {
    match resp::decode(&buf.as_bytes()) {
        Ok(Some((reply, used))) => (reply_value(lua, reply)?, used).into_lua_multi(lua),
        Ok(None) => false.into_lua_multi(lua),
        Err(e) => (LuaNil, e.to_string()).into_lua_multi(lua),
    }
}

/// render_metrics(values, routes, shared_tier, comments) -> text
///
/// Arguments: `values`, node-wide sums by `stats()` name; `routes`, an
/// array of `{name, count}` in the order to print; `shared_tier`, whether
/// the node has a shared dict (the `l2` tier); `comments`, an array of
/// strings printed first as `# ` lines.
/// Returns: the Prometheus text exposition (format 0.0.4).
fn render_metrics(
    _: &Lua,
    (values, routes, shared_tier, comments): (LuaTable, LuaTable, bool, Option<LuaTable>),
) -> LuaResult<String> {
    let mut sums = std::collections::HashMap::new();
    for pair in values.pairs::<String, f64>() {
        let (k, v) = pair?;
        sums.insert(k, v.max(0.0) as u64);
    }
    let mut route_list = Vec::new();
    for r in routes.sequence_values::<LuaTable>() {
        let r = r?;
        route_list.push((r.get::<String>(1)?, r.get::<f64>(2)?.max(0.0) as u64));
    }
    let mut comment_list = Vec::new();
    if let Some(c) = comments {
        for line in c.sequence_values::<String>() {
            comment_list.push(line?);
        }
    }
    let get = |name: &str| sums.get(name).copied().unwrap_or(0);
    Ok(metrics::render(
        &get,
        &route_list,
        &metrics::Scope {
            shared_tier,
            comments: &comment_list,
        },
    ))
}

/// The module table. `skip_memory_check`: mlua's per-call allocator check
/// costs several hundred ns per call and LuaJIT has no memory limit to enforce.
#[mlua::lua_module(name = "auth_router_native", skip_memory_check)]
fn auth_router_native(lua: &Lua) -> LuaResult<LuaTable> {
    // A panic reaches Lua as an error carrying its message, which the core
    // logs with context. The default hook would also print raw lines into
    // nginx's error log (its stderr). The hook is this library's own: each
    // Rust cdylib links its own std, so other native modules keep theirs.
    std::panic::set_hook(Box::new(|_| {}));
    let exports = lua.create_table()?;
    exports.set("version", lua.create_function(|_, ()| Ok(VERSION))?)?;
    exports.set("validate", lua.create_function(validate)?)?;
    exports.set("compile", lua.create_function(compile)?)?;
    exports.set("stats", lua.create_function(stats)?)?;
    exports.set("render_metrics", lua.create_function(render_metrics)?)?;
    // exchange(handle) -> a view of that request's slot (mlua calls)
    exports.set(
        "exchange",
        lua.create_function(|_, handle: f64| Ok(Ctx(handle)))?,
    )?;
    // response_parser(max_bytes) -> parser
    exports.set(
        "response_parser",
        lua.create_function(|_, max_bytes: usize| {
            Ok(Parser(ResponseParser::new(max_bytes, false)))
        })?,
    )?;
    // redis_command(arg, ...) -> the RESP2 bytes of one command
    exports.set("redis_command", lua.create_function(redis_command)?)?;
    // redis_reply(buf) -> reply, bytes used | false (need more) | nil, err
    exports.set("redis_reply", lua.create_function(redis_reply)?)?;
    exports.set(
        "redis_failed",
        lua.create_function(|_, ()| {
            stats::REDIS_ERRORS.incr();
            Ok(())
        })?,
    )?;
    exports.set(
        "internal_error",
        lua.create_function(|_, ()| {
            stats::INTERNAL_ERRORS.incr();
            Ok(())
        })?,
    )?;
    // Test hook, see fault.rs: _arm_panic() or _arm_panic("access") for the
    // next access, _arm_panic("log") for the next logged record.
    exports.set(
        "_arm_panic",
        lua.create_function(|_, phase: Option<LuaString>| {
            match phase.as_ref().map(|p| p.as_bytes().to_vec()).as_deref() {
                None | Some(b"access") => fault::arm_panic_next_access(),
                Some(b"log") => fault::arm_panic_next_log(),
                Some(other) => {
                    return Err(LuaError::runtime(format!(
                        "_arm_panic: no fault point '{}'",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
            Ok(())
        })?,
    )?;
    Ok(exports)
}
