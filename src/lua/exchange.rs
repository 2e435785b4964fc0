//! `Ctx`: a view of one live request's slot (`native.exchange(handle)`) for
//! the calls that stay on mlua: the miss path (the auth call) and denials.

use super::parser::Parser;
use crate::auth::flow::Step;
use crate::auth::AuthError;
use crate::exchange::Exchange;
use crate::ffi::slots::{self, Live};
use crate::stats;
use mlua::prelude::*;
use mlua::{UserData, UserDataMethods};

fn step_name(step: Step) -> &'static str {
    match step {
        Step::NoCredential => "none",
        Step::Allow => "allow",
        Step::Deny => "deny",
        Step::Miss => "miss",
        Step::Failed => "failed",
    }
}

/// A view of one live request's slot (crate::ffi::slots), for the calls
/// that stay on mlua (the miss path, denials). The
/// per-request hot path goes through crate::ffi instead.
#[derive(Debug)]
pub(super) struct Ctx(pub(super) f64);

/// Runs `f` on the live request a handle names.
fn with_live<T>(handle: f64, f: impl FnOnce(&mut Live) -> LuaResult<T>) -> LuaResult<T> {
    slots::with(|s| match s.get(handle) {
        Ok(live) => f(live),
        Err(_) => Err(LuaError::runtime("stale request handle")),
    })
}

/// The failure `kind` names under `parse`, or a Lua error naming it: a kind
/// this module does not know is a bug in the Lua core, and mapping it to
/// another would log and count the wrong failure.
fn failure_kind(kind: &LuaString, parse: fn(&[u8]) -> Option<AuthError>) -> LuaResult<AuthError> {
    parse(&kind.as_bytes()).ok_or_else(|| {
        LuaError::runtime(format!("unknown failure kind '{}'", kind.to_string_lossy()))
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
        // x:load_cluster(value, now) -> step (a value read from Redis)
        methods.add_method("load_cluster", |_, this, (value, now): (LuaString, f64)| {
            with_live(this.0, |live| {
                Ok(step_name(live.plugin.load_cluster(
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
        // x:auth_response(parser|nil, kind|nil, now, latency_ms) -> step, value, ttl, problem:
        // the parser that read the answer, or the kind of failure that left
        // none (AuthError::from_call_kind); raises for neither, both, or an
        // unknown kind
        methods.add_method(
            "auth_response",
            |lua,
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
                let failure = match (&parser, &kind) {
                    (Some(_), None) => None,
                    (None, Some(k)) => Some(failure_kind(k, AuthError::from_call_kind)?),
                    _ => {
                        return Err(LuaError::runtime(
                            "auth_response: pass the parser or the failure kind",
                        ))
                    }
                };
                with_live(this.0, |live| {
                    stats::record_auth_latency(latency_ms);
                    live.ex.set_auth_latency(latency_ms);
                    let response = match failure {
                        Some(err) => Err(err),
                        None => parser
                            .as_ref()
                            .and_then(|p| p.0.response())
                            .ok_or(AuthError::BadResponse),
                    };
                    let (step, write) = live.plugin.auth_response(&mut live.ex, response, now);
                    let problem = live.ex.auth_error().map(ToString::to_string);
                    let (value, ttl) = match write {
                        Some(w) => (Some(lua.create_string(&w.value)?), Some(w.ttl)),
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
            let err = failure_kind(&kind, AuthError::from_flight_kind)?;
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
    }
}
