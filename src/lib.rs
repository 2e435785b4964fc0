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

pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod exchange;
pub mod fault;
pub mod http1;
pub mod logrec;
pub mod plugin;
pub mod queue;
pub mod recorder;
pub mod redact;
pub mod routing;
pub mod schema;
pub mod stats;

/// The plugin version; the rockspec and the Kong handler carry the same one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(feature = "ffi")]
mod ffi {
    use crate::auth::AuthError;
    use crate::cache::CacheKey;
    use crate::config::{self, ConfigError, Destination, Sink};
    use crate::exchange::Exchange;
    use crate::http1::{Progress, ResponseParser};
    use crate::plugin::{Plugin, Step};
    use crate::recorder::LogMeta;
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

    /// `(name, value, name, value, ...)` as multiple Lua returns.
    fn pairs(lua: &Lua, list: &[(String, String)]) -> LuaResult<LuaMultiValue> {
        let mut out = LuaMultiValue::with_capacity(list.len() * 2);
        for (n, v) in list {
            out.push_back(LuaValue::String(lua.create_string(n)?));
            out.push_back(LuaValue::String(lua.create_string(v)?));
        }
        Ok(out)
    }

    /// A compiled config, shared by every request that uses it.
    #[derive(Debug)]
    struct PluginUd(Rc<Plugin>);

    impl UserData for PluginUd {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // plugin:access(method, uri, start_ms, now, cred..., fwd...) -> ctx, step
            methods.add_method(
                "access",
                |_,
                 this,
                 (method, uri, start_ms, now, values): (
                    LuaString,
                    LuaString,
                    f64,
                    f64,
                    Variadic<Option<LuaString>>,
                )| {
                    let p = &this.0;
                    // Bytes, not str: a client may send any byte in the URI.
                    let mut ex = p.begin(&method.as_bytes(), &uri.as_bytes(), start_ms as u64);
                    fault::maybe_panic_in_access();
                    let (creds, forwarded) =
                        p.split_values(values.into_iter().map(bytes).collect());
                    let step = p.lookup(&mut ex, creds, forwarded, now);
                    Ok((
                        Ctx {
                            plugin: p.clone(),
                            ex,
                        },
                        step_name(step),
                    ))
                },
            );
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
                    let p = &this.0;
                    let (creds, forwarded) =
                        p.split_values(values.into_iter().map(bytes).collect());
                    Ok(p.key_for(&creds, &forwarded).map(|k| k.hex()))
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

    /// One request's native state, kept in the per-request ctx between phases.
    #[derive(Debug)]
    struct Ctx {
        plugin: Rc<Plugin>,
        ex: Exchange,
    }

    fn pending_hex(ex: &Exchange) -> LuaResult<String> {
        ex.pending_key()
            .map(|k| k.hex())
            .ok_or_else(|| LuaError::runtime("no credential is being fetched"))
    }

    impl UserData for Ctx {
        fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
            // ctx:pending_key() -> hex (the shared dict key)
            methods.add_method("pending_key", |_, this, ()| pending_hex(&this.ex));
            // ctx:load_shared(value, now) -> step
            methods.add_method_mut("load_shared", |_, this, (value, now): (LuaString, f64)| {
                Ok(step_name(this.plugin.load_shared(
                    &mut this.ex,
                    &value.as_bytes(),
                    now,
                )))
            });
            // ctx:recheck(now) -> step (L1 only)
            methods.add_method_mut("recheck", |_, this, now: f64| {
                Ok(step_name(this.plugin.recheck(&mut this.ex, now)))
            });
            // ctx:auth_request() -> bytes
            methods.add_method("auth_request", |lua, this, ()| {
                let req = this
                    .plugin
                    .auth_request(&this.ex)
                    .map_err(LuaError::external)?;
                lua.create_string(&req)
            });
            // ctx:auth_response(parser|nil, kind|nil, now, latency_ms) -> step, value, ttl, problem
            methods.add_method_mut(
                "auth_response",
                |_,
                 this,
                 (parser, kind, now, latency_ms): (
                    Option<LuaAnyUserData>,
                    Option<LuaString>,
                    f64,
                    f64,
                )| {
                    stats::AUTH_LATENCY_US.add((latency_ms.max(0.0) * 1000.0) as u64);
                    this.ex.set_auth_latency(latency_ms);
                    let parser = match &parser {
                        Some(ud) => Some(ud.borrow::<Parser>()?),
                        None => None,
                    };
                    let response = match (&parser, kind) {
                        (Some(p), _) => p.0.response().ok_or(AuthError::BadResponse),
                        (None, Some(k)) if &*k.as_bytes() == b"timeout" => Err(AuthError::Timeout),
                        (None, Some(k)) if &*k.as_bytes() == b"bad_response" => {
                            Err(AuthError::BadResponse)
                        }
                        (None, _) => Err(AuthError::Unreachable),
                    };
                    let (step, write) = this.plugin.auth_response(&mut this.ex, response, now);
                    let problem = this.ex.auth_error().map(ToString::to_string);
                    let (value, ttl) = match write {
                        Some(w) => (Some(w.value), Some(w.ttl)),
                        None => (None, None),
                    };
                    Ok((step_name(step), value, ttl, problem))
                },
            );
            // ctx:fail(kind, now) -> step: "lock_timeout" (gave up waiting for a
            // concurrent call), "flight_failed" (that call failed) or
            // "rejected" (too many calls in flight in this worker)
            methods.add_method_mut("fail", |_, this, (kind, now): (LuaString, f64)| {
                let err = match &*kind.as_bytes() {
                    b"flight_failed" => AuthError::FlightFailed,
                    b"rejected" => AuthError::Rejected,
                    _ => AuthError::LockTimeout,
                };
                Ok(step_name(this.plugin.fail(&mut this.ex, &err, now)))
            });
            // ctx:upstream_headers() -> name, value, ...
            methods.add_method("upstream_headers", |lua, this, ()| {
                match this.ex.account() {
                    Some(a) => {
                        stats::HEADER_VALUES_DROPPED.add(u64::from(a.dropped_headers));
                        pairs(lua, &a.upstream_headers)
                    }
                    None => Ok(LuaMultiValue::new()),
                }
            });
            // ctx:route(path, version_header|nil) -> nil | name, host_or_upstream, port|nil, path|nil
            methods.add_method_mut(
                "route",
                |lua, this, (path, version): (LuaString, Option<LuaString>)| {
                    // Routing is on bytes: neither needs to be UTF-8.
                    let version = version.as_ref().map(LuaString::as_bytes);
                    let Some(a) =
                        this.plugin
                            .route(&mut this.ex, &path.as_bytes(), version.as_deref())
                    else {
                        return Ok(LuaMultiValue::new());
                    };
                    let (dest, port) = match &a.destination {
                        Destination::Target(t) => {
                            (t.host.as_str(), LuaValue::Integer(i64::from(t.port)))
                        }
                        Destination::Upstream(u) => (u.as_str(), LuaValue::Nil),
                    };
                    let mut out = LuaMultiValue::with_capacity(4);
                    out.push_back(LuaValue::String(lua.create_string(&a.name)?));
                    out.push_back(LuaValue::String(lua.create_string(dest)?));
                    out.push_back(port);
                    out.push_back(match &a.path {
                        Some(p) => LuaValue::String(lua.create_string(p)?),
                        None => LuaValue::Nil,
                    });
                    Ok(out)
                },
            );
            // ctx:denial() -> status, www_authenticate|nil
            methods.add_method("denial", |_, this, ()| match this.ex.denial() {
                Some(d) => Ok((d.status, d.www_authenticate.clone())),
                None => Err(LuaError::runtime("the request was not denied")),
            });
            // ctx:account_id() -> id | nil
            methods.add_method("account_id", |_, this, ()| {
                Ok(this.ex.account().map(|a| a.id.clone()))
            });
            // ctx:consumer_value() -> the account value matched against a Kong
            // consumer (consumer.pointer) | nil
            methods.add_method("consumer_value", |_, this, ()| {
                Ok(this.ex.account().and_then(|a| a.consumer.clone()))
            });
            // ctx:cache_status() -> "hit" | "miss" | "stale" | "negative" | "none"
            methods.add_method("cache_status", |_, this, ()| {
                Ok(this.ex.cache_status().as_str())
            });
            // ctx:response(status) -> name, value, ... (response headers to add)
            methods.add_method_mut("response", |lua, this, status: u16| {
                this.ex.response(status);
                match this.ex.account() {
                    Some(a) => pairs(lua, &a.response_headers),
                    None => Ok(LuaMultiValue::new()),
                }
            });
            // ctx:body_chunk(chunk_or_nil)
            methods.add_method_mut("body_chunk", |_, this, chunk: Option<LuaString>| {
                if let Some(chunk) = chunk {
                    this.ex.body_chunk(&chunk.as_bytes());
                }
                Ok(())
            });
            // ctx:request_body(data, size): the captured request body and its full size
            methods.add_method_mut("request_body", |_, this, (data, size): (LuaString, f64)| {
                this.ex.request_body(&data.as_bytes(), size.max(0.0) as u64);
                Ok(())
            });
            // ctx:finish_logged(now_ms, client_ip, request_id, req_headers, resp_headers,
            //                   request_size, response_size, proxy_ms): closes the
            // exchange and queues its record
            methods.add_method(
                "finish_logged",
                |_,
                 this,
                 (now_ms, client_ip, request_id, req_h, resp_h, req_size, resp_size, proxy_ms): (
                    f64,
                    LuaString,
                    Option<LuaString>,
                    LuaTable,
                    LuaTable,
                    f64,
                    f64,
                    Option<f64>,
                )| {
                    this.ex.finish();
                    let Some(rec) = &this.plugin.recorder else {
                        return Ok(());
                    };
                    // Lossy: a client can put any byte in its request id header.
                    let client_ip = client_ip.to_string_lossy();
                    let request_id = request_id.as_ref().map(LuaString::to_string_lossy);
                    let meta = LogMeta {
                        now_ms: now_ms.max(0.0) as u64,
                        client_ip: &client_ip,
                        request_id: request_id.as_deref(),
                        method: this.ex.method(),
                        uri: this.ex.uri(),
                        request_headers: header_list(req_h)?,
                        response_headers: header_list(resp_h)?,
                        request_size: req_size.max(0.0) as u64,
                        response_size: resp_size.max(0.0) as u64,
                        proxy_ms,
                    };
                    if let Err(e) = rec.record(&this.ex, &meta) {
                        stats::LOG_FAILED.incr();
                        return Err(LuaError::external(e));
                    }
                    Ok(())
                },
            );
            // ctx:finish(now_ms): the log phase closes the exchange.
            methods.add_method("finish", |_, this, _now_ms: f64| {
                this.ex.finish();
                Ok(())
            });
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
