//! `Parser`: an HTTP/1.1 response being read from a cosocket
//! (`native.response_parser`), fed by `lua/auth_router/http1.lua`.

use crate::http1::{Http1Error, Progress, ResponseParser};
use mlua::prelude::*;
use mlua::{UserData, UserDataMethods};

/// `complete` or `nil, message` for Lua.
fn progress(p: Result<Progress, Http1Error>) -> (Option<bool>, Option<String>) {
    match p {
        Ok(p) => (Some(matches!(p, Progress::Complete)), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// An HTTP/1.1 response being read from a cosocket.
#[derive(Debug)]
pub(super) struct Parser(pub(super) ResponseParser);

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
