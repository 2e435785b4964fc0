//! Native core of the `auth-router` Kong / OpenResty plugin.
//!
//! The core modules are pure and synchronous: they do no I/O, read no clock
//! (time is passed in) and never call back into Lua, so nothing beneath a Rust
//! frame can yield. This file is only the Lua binding (`auth_router_native`).
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
pub mod routing;
pub mod stats;

/// The plugin version; the rockspec and the Kong handler carry the same one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(feature = "lua")]
mod lua {
    use crate::auth::flow::{Plugin, Step};
    use crate::auth::key::CacheKey;
    use crate::auth::AuthError;
    use crate::config::fields::FieldError;
    use crate::config::{self, ConfigError, Sink};
    use crate::exchange::Exchange;
    use crate::ffi::slots::{self, Live};
    use crate::http1::{Progress, ResponseParser};
    use crate::log::recorder::LogMeta;
    use crate::{fault, stats, VERSION};
    use mlua::prelude::*;
    use mlua::{UserData, UserDataMethods, Variadic};
    use std::rc::Rc;

    /// Shortest accepted cache-key secret.
    const MIN_SECRET_BYTES: usize = 16;

    fn step_name(step: Step) -> &'static str {
        match step {
            Step::NoCredential => "none",
            Step::Allow => "allow",
            Step::Deny => "deny",
            Step::Miss => "miss",
            Step::Failed => "failed",
        }
    }

    fn bytes(v: Option<LuaString>) -> Option<Vec<u8>> {
        v.map(|s| s.as_bytes().to_vec())
    }

    /// A compiled config, shared by every request that uses it.
    #[derive(Debug)]
    struct PluginUd(Rc<Plugin>);

    impl UserData for PluginUd {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // plugin:ffi_ptr() -> the compiled config for crate::ffi's calls;
            // valid while Lua references this plugin
            methods.add_method("ffi_ptr", |_, this, ()| {
                Ok(LuaLightUserData(
                    Rc::as_ptr(&this.0) as *mut std::ffi::c_void
                ))
            });
            // plugin:config() -> normalized config table
            methods.add_method("config", |lua, this, ()| {
                lua.to_value(&this.0.config.normalized)
            });
            // plugin:auth_target() -> { host, port, tls }
            methods.add_method("auth_target", |lua, this, ()| {
                let u = &this.0.config.auth.url;
                let t = lua.create_table()?;
                t.set("host", u.host.as_str())?;
                t.set("port", u.port)?;
                t.set("tls", u.tls)?;
                Ok(t)
            });
            // plugin:cache_key(cred..., fwd...) -> hex | nil
            methods.add_method(
                "cache_key",
                |_, this, values: Variadic<Option<LuaString>>| {
                    let values: Vec<Option<Vec<u8>>> = values.into_iter().map(bytes).collect();
                    let values: Vec<Option<&[u8]>> = values.iter().map(Option::as_deref).collect();
                    Ok(this.0.key_of(&values).map(|k| k.hex()))
                },
            );
            // plugin:purge_key(hex)
            methods.add_method("purge_key", |_, this, hex: LuaString| {
                if let Some(k) = CacheKey::from_hex(&hex.as_bytes()) {
                    this.0.purge(&k);
                }
                Ok(())
            });
            // plugin:log_target() -> { host, port, tls, path } of the collector
            methods.add_method("log_target", |lua, this, ()| {
                let Some(log) = &this.0.config.log else {
                    return Ok(LuaValue::Nil);
                };
                let t = lua.create_table()?;
                match &log.sink {
                    Sink::Tcp(hp) => {
                        t.set("host", hp.host.as_str())?;
                        t.set("port", hp.port)?;
                        t.set("tls", log.tls)?;
                    }
                    Sink::Http(u) => {
                        t.set("host", u.host.as_str())?;
                        t.set("port", u.port)?;
                        t.set("tls", u.tls)?;
                        t.set("path", u.path.as_str())?;
                    }
                }
                Ok(LuaValue::Table(t))
            });
            // plugin:log_take(now, draining) -> id, payload, count | nil
            methods.add_method(
                "log_take",
                |lua, this, (now, draining): (f64, Option<bool>)| {
                    let taken = this
                        .0
                        .recorder
                        .as_ref()
                        .and_then(|r| r.take(now, draining.unwrap_or(false)));
                    let mut out = LuaMultiValue::new();
                    if let Some((id, wire, n)) = taken {
                        out.push_back(LuaValue::Number(id as f64));
                        out.push_back(LuaValue::String(lua.create_string(&wire)?));
                        out.push_back(LuaValue::Integer(n as i64));
                    }
                    Ok(out)
                },
            );
            // plugin:log_ack(id)
            methods.add_method("log_ack", |_, this, id: f64| {
                if let Some(r) = &this.0.recorder {
                    r.ack(id as u64);
                }
                Ok(())
            });
            // plugin:log_fail(id, now)
            methods.add_method("log_fail", |_, this, (id, now): (f64, f64)| {
                if let Some(r) = &this.0.recorder {
                    r.fail(id as u64, now);
                }
                Ok(())
            });
            // plugin:log_next_at() -> time | nil (the batch in front is backing off)
            methods.add_method("log_next_at", |_, this, ()| {
                Ok(this.0.recorder.as_ref().and_then(|r| r.next_attempt_at()))
            });
            // plugin:log_pending() -> records waiting
            methods.add_method("log_pending", |_, this, ()| {
                Ok(this.0.recorder.as_ref().map_or(0, |r| r.pending()))
            });
            // plugin:purge_all()
            methods.add_method("purge_all", |_, this, ()| {
                this.0.purge_all();
                Ok(())
            });
        }
    }

    /// A view of one live request's slot (crate::ffi::slots), for the calls
    /// that stay on mlua (the miss path, denials, the logged finish). The
    /// per-request hot path goes through crate::ffi instead.
    #[derive(Debug)]
    struct Ctx(f64);

    /// `x:finish_logged`'s arguments, in order (see the method).
    type FinishLoggedArgs = (
        f64,
        LuaString,
        Option<LuaString>,
        LuaTable,
        LuaTable,
        f64,
        f64,
        Option<f64>,
        Option<LuaString>,
        Option<LuaString>,
        Option<LuaString>,
        Option<LuaString>,
    );

    /// Runs `f` on the live request a handle names.
    fn with_live<T>(handle: f64, f: impl FnOnce(&mut Live) -> LuaResult<T>) -> LuaResult<T> {
        slots::with(|s| match s.get(handle) {
            Ok(live) => f(live),
            Err(_) => Err(LuaError::runtime("stale request handle")),
        })
    }

    fn pending_hex(ex: &Exchange) -> LuaResult<String> {
        ex.pending_key()
            .map(|k| k.hex())
            .ok_or_else(|| LuaError::runtime("no credential is being fetched"))
    }

    impl UserData for Ctx {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // x:pending_key() -> hex (the shared dict key)
            methods.add_method("pending_key", |_, this, ()| {
                with_live(this.0, |live| pending_hex(&live.ex))
            });
            // x:load_shared(value, now) -> step
            methods.add_method("load_shared", |_, this, (value, now): (LuaString, f64)| {
                with_live(this.0, |live| {
                    Ok(step_name(live.plugin.load_shared(
                        &mut live.ex,
                        &value.as_bytes(),
                        now,
                    )))
                })
            });
            // x:recheck(now) -> step (L1 only)
            methods.add_method("recheck", |_, this, now: f64| {
                with_live(this.0, |live| {
                    Ok(step_name(live.plugin.recheck(&mut live.ex, now)))
                })
            });
            // x:auth_request() -> bytes
            methods.add_method("auth_request", |lua, this, ()| {
                with_live(this.0, |live| {
                    let req = live
                        .plugin
                        .auth_request(&live.ex)
                        .map_err(LuaError::external)?;
                    lua.create_string(&req)
                })
            });
            // x:auth_response(parser|nil, kind|nil, now, latency_ms) -> step, value, ttl, problem
            methods.add_method(
                "auth_response",
                |_,
                 this,
                 (parser, kind, now, latency_ms): (
                    Option<LuaAnyUserData>,
                    Option<LuaString>,
                    f64,
                    f64,
                )| {
                    let parser = match &parser {
                        Some(ud) => Some(ud.borrow::<Parser>()?),
                        None => None,
                    };
                    with_live(this.0, |live| {
                        stats::AUTH_LATENCY_US.add((latency_ms.max(0.0) * 1000.0) as u64);
                        live.ex.set_auth_latency(latency_ms);
                        let response = match (&parser, kind) {
                            (Some(p), _) => p.0.response().ok_or(AuthError::BadResponse),
                            (None, Some(k)) if &*k.as_bytes() == b"timeout" => {
                                Err(AuthError::Timeout)
                            }
                            (None, Some(k)) if &*k.as_bytes() == b"bad_response" => {
                                Err(AuthError::BadResponse)
                            }
                            (None, _) => Err(AuthError::Unreachable),
                        };
                        let (step, write) = live.plugin.auth_response(&mut live.ex, response, now);
                        let problem = live.ex.auth_error().map(ToString::to_string);
                        let (value, ttl) = match write {
                            Some(w) => (Some(w.value), Some(w.ttl)),
                            None => (None, None),
                        };
                        Ok((step_name(step), value, ttl, problem))
                    })
                },
            );
            // x:fail(kind, now) -> step: "lock_timeout" (gave up waiting for a
            // concurrent call), "flight_failed" (that call failed) or
            // "rejected" (too many calls in flight in this worker)
            methods.add_method("fail", |_, this, (kind, now): (LuaString, f64)| {
                let err = match &*kind.as_bytes() {
                    b"flight_failed" => AuthError::FlightFailed,
                    b"rejected" => AuthError::Rejected,
                    b"lock_timeout" => AuthError::LockTimeout,
                    other => {
                        return Err(LuaError::runtime(format!(
                            "unknown failure kind '{}'",
                            String::from_utf8_lossy(other)
                        )))
                    }
                };
                with_live(this.0, |live| {
                    Ok(step_name(live.plugin.fail(&mut live.ex, &err, now)))
                })
            });
            // x:denial() -> status, www_authenticate|nil
            methods.add_method("denial", |_, this, ()| {
                with_live(this.0, |live| match live.ex.denial() {
                    Some(d) => Ok((d.status, d.www_authenticate.clone())),
                    None => Err(LuaError::runtime("the request was not denied")),
                })
            });
            // x:consumer_value() -> the account value matched against a Kong
            // consumer (consumer.pointer) | nil
            methods.add_method("consumer_value", |_, this, ()| {
                with_live(this.0, |live| {
                    Ok(live
                        .ex
                        .account()
                        .and_then(|a| a.consumer.as_deref().map(str::to_owned)))
                })
            });
            // x:request_body(data, size): the captured request body and its full size
            methods.add_method("request_body", |_, this, (data, size): (LuaString, f64)| {
                with_live(this.0, |live| {
                    live.ex.request_body(&data.as_bytes(), size.max(0.0) as u64);
                    Ok(())
                })
            });
            // x:finish_logged(now_ms, client_ip, request_id, req_headers, resp_headers,
            //                 request_size, response_size, proxy_ms, upstream_addr,
            //                 upstream_status, default_target, default_upstream):
            // closes the exchange and queues its record (the slot is released
            // by the caller). upstream_addr/status: nginx's variables, nil when
            // not proxied; default_*: where the host sent a request no route
            // matched, if it knows.
            methods.add_method(
                "finish_logged",
                |_,
                 this,
                 (
                    now_ms,
                    client_ip,
                    request_id,
                    req_h,
                    resp_h,
                    req_size,
                    resp_size,
                    proxy_ms,
                    upstream_addr,
                    upstream_status,
                    default_target,
                    default_upstream,
                ): FinishLoggedArgs| {
                    let request_headers = header_list(req_h)?;
                    let response_headers = header_list(resp_h)?;
                    with_live(this.0, |live| {
                        live.ex.finish();
                        let Some(rec) = &live.plugin.recorder else {
                            return Ok(());
                        };
                        // Lossy: a client can put any byte in its request id header.
                        let client_ip = client_ip.to_string_lossy();
                        let request_id = request_id.as_ref().map(LuaString::to_string_lossy);
                        let text =
                            |s: &Option<LuaString>| s.as_ref().map(LuaString::to_string_lossy);
                        let (upstream_addr, upstream_status) =
                            (text(&upstream_addr), text(&upstream_status));
                        let (default_target, default_upstream) =
                            (text(&default_target), text(&default_upstream));
                        let meta = LogMeta {
                            now_ms: now_ms.max(0.0) as u64,
                            client_ip: &client_ip,
                            request_id: request_id.as_deref(),
                            method: live.ex.method(),
                            uri: live.ex.uri(),
                            request_headers,
                            response_headers,
                            request_size: req_size.max(0.0) as u64,
                            response_size: resp_size.max(0.0) as u64,
                            proxy_ms,
                            upstream_addr: upstream_addr.as_deref(),
                            upstream_status: upstream_status.as_deref(),
                            default_target: default_target.as_deref(),
                            default_upstream: default_upstream.as_deref(),
                            routes: &live.plugin.config.routes,
                        };
                        if let Err(e) = rec.record(&live.ex, &meta) {
                            stats::LOG_FAILED.incr();
                            return Err(LuaError::external(e));
                        }
                        Ok(())
                    })
                },
            );
        }
    }

    /// `complete` or `nil, message` for Lua.
    fn progress(p: Result<Progress, crate::http1::Http1Error>) -> (Option<bool>, Option<String>) {
        match p {
            Ok(p) => (Some(matches!(p, Progress::Complete)), None),
            Err(e) => (None, Some(e.to_string())),
        }
    }

    /// An HTTP/1.1 response being read from a cosocket.
    #[derive(Debug)]
    struct Parser(ResponseParser);

    impl UserData for Parser {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // A malformed response is an expected failure, not a misuse: it
            // comes back as `nil, message` (a raised mlua error would carry a
            // traceback into the error log on every bad answer).
            // parser:feed(bytes) -> complete (bool) | nil, err
            methods.add_method_mut("feed", |_, this, data: LuaString| {
                Ok(progress(this.0.feed(&data.as_bytes())))
            });
            // parser:eof() -> complete (bool) | nil, err: the peer closed the connection
            methods.add_method_mut("eof", |_, this, ()| Ok(progress(this.0.eof())));
            // parser:status() -> the response status (0 before the head is read)
            methods.add_method("status", |_, this, ()| {
                Ok(this.0.response().map_or(0, |r| r.status))
            });
            // parser:keepalive() -> whether the connection may be reused
            methods.add_method("keepalive", |_, this, ()| {
                Ok(this.0.response().is_some_and(|r| r.keepalive))
            });
        }
    }

    /// A Lua header table (`ngx.req.get_headers()`: name -> value, or an
    /// array of values for a repeated header) as lowercase (name, value) pairs.
    fn header_list(t: LuaTable) -> LuaResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for pair in t.pairs::<LuaString, LuaValue>() {
            let (name, value) = pair?;
            let name = name.to_string_lossy().to_ascii_lowercase();
            match value {
                LuaValue::String(v) => out.push((name, v.to_string_lossy())),
                LuaValue::Table(vs) => {
                    for v in vs.sequence_values::<LuaString>() {
                        out.push((name.clone(), v?.to_string_lossy()));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

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
    fn compile(
        lua: &Lua,
        (conf, secret): (LuaValue, LuaString),
    ) -> LuaResult<(LuaValue, LuaValue)> {
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
