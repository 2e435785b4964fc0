//! `PluginUd`: a compiled config as Lua userdata (`native.compile`'s
//! result): its normalized config, the auth and log targets, cache keys and
//! purges, and the log queue's calls for the Lua sink.

use crate::auth::flow::Plugin;
use crate::auth::key::CacheKey;
use crate::config::Sink;
use mlua::prelude::*;
use mlua::{UserData, UserDataMethods, Variadic};
use std::rc::Rc;

fn bytes(v: Option<LuaString>) -> Option<Vec<u8>> {
    v.map(|s| s.as_bytes().to_vec())
}

/// A compiled config, shared by every request that uses it.
#[derive(Debug)]
pub(super) struct PluginUd(pub(super) Rc<Plugin>);

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
        // plugin:route_counts() -> { {name, count}, ... } in config order:
        // this worker's routing decisions by route (for the metrics)
        methods.add_method("route_counts", |lua, this, ()| {
            let t = lua.create_table()?;
            for (i, (name, n)) in this.0.route_counts().enumerate() {
                let pair = lua.create_table()?;
                pair.set(1, name)?;
                pair.set(2, n as f64)?;
                t.set(i + 1, pair)?;
            }
            Ok(t)
        });
        // plugin:purge_all()
        methods.add_method("purge_all", |_, this, ()| {
            this.0.purge_all();
            Ok(())
        });
    }
}
