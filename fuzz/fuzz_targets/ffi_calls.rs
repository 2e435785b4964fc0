//! Fuzzes the per-request C ABI (`src/ffi`) the way Lua drives it, with
//! arbitrary bytes everywhere the plugin passes request data: method, URI,
//! `$uri`, the header list (names and values), body chunks, statuses,
//! shared-dict values, and arbitrary handles (stale, invented, non-integer,
//! infinite).
//!
//! Two compiled configs (one logging request and response bodies), with a
//! cached credential (`Bearer hit`) so that hits, routes and header lists
//! are reached, not only misses.
//!
//! Oracles: no export ever answers -1 (a caught panic); every answer is in
//! its documented range; a request's handle is stale (-2) after its slot
//! is freed, and never before; every slot taken is freed by the end (the
//! live-slot count comes back).
#![no_main]

use auth_router_native::auth::flow::{Plugin, Step};
use auth_router_native::config::compile;
use auth_router_native::ffi::access::{
    ar_access, ar_request_body, ArAccess, NgxHeader, NgxStr, STEP_REPEATED,
};
use auth_router_native::ffi::finish::{ar_finish, ar_identity, ar_log, ar_release, ArLogIn};
use auth_router_native::ffi::headers::{ar_header, ar_header_count};
use auth_router_native::ffi::response::{ar_body_chunk, ar_refuse, ar_response};
use auth_router_native::ffi::route::{ar_route, NO_ROUTE};
use auth_router_native::ffi::shared::{ar_load_shared, ar_pending_key};
use auth_router_native::ffi::{ar_live_slots, ArStr, ERR_ARG, ERR_PANIC, ERR_STALE};
use auth_router_native::http1::Response;
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::ffi::c_void;
use std::rc::Rc;

const NAMES: [&[u8]; 6] = [
    b"authorization",
    b"x-tenant",
    b"x-api-version",
    b"host",
    b"x-account-id",
    b"cookie",
];

fn plugin(logged: bool) -> Rc<Plugin> {
    let mut c = json!({
        "auth": {"url": "http://127.0.0.1:9/auth", "forward_headers": ["x-tenant"]},
        "upstream_headers": [{"name": "x-account-id", "pointer": "/id"},
                             {"name": "x-account-plan", "pointer": "/plan"}],
        "response_headers": [{"name": "x-account-plan", "pointer": "/plan"}],
        "api_version": {"header": "x-api-version", "path_prefix_pattern": "^/(v\\d+)/", "default": "v2"},
        "routes": [
            {"name": "email", "paths": ["/send"], "target": "127.0.0.1:9001", "strip_prefix": true},
            {"name": "beta", "paths": ["/api/"], "flags": ["beta"], "percentage": 50, "target": "127.0.0.1:9002"},
            {"name": "old", "api_versions": ["v1"], "target": "127.0.0.1:9003"},
            {"name": "pro", "account_match": {"/plan": ["pro"]}, "target": "127.0.0.1:9004", "strip_prefix": true}
        ]
    });
    if logged {
        c["log"] = json!({"enabled": true, "sink": "tcp", "host": "127.0.0.1", "port": 9,
                          "request_body": true, "response_body": true, "max_body_bytes": 64});
    }
    let p = Rc::new(Plugin::new(
        compile(c).expect("valid config"),
        b"0123456789abcdef0123456789abcdef",
    ));
    // fill L1 for `Bearer hit` (no x-tenant)
    let mut ex = p.begin(b"GET", b"/", 0);
    assert_eq!(
        p.lookup(&mut ex, &[Some(b"Bearer hit"), None], 0.0),
        Step::Miss
    );
    let answer = Response {
        status: 200,
        headers: vec![],
        body: br#"{"id": "u1", "plan": "pro", "flags": ["beta"]}"#.to_vec(),
        keepalive: true,
    };
    assert_eq!(p.auth_response(&mut ex, Ok(&answer), 0.0).0, Step::Allow);
    p
}

thread_local! {
    static PLUGINS: [Rc<Plugin>; 2] = [plugin(false), plugin(true)];
}

const NULL_STR: ArStr = ArStr {
    ptr: std::ptr::null(),
    len: 0,
};

fn ngx(s: &[u8]) -> NgxStr {
    NgxStr {
        len: s.len() as i32,
        data: s.as_ptr(),
    }
}

fn check(rc: i32, what: &str) -> i32 {
    assert_ne!(rc, ERR_PANIC, "{what}: a panic was caught");
    rc
}

/// A handle: the request's own, or one it must refuse.
fn some_handle(u: &mut Unstructured<'_>, own: f64) -> ArbResult<(f64, bool)> {
    Ok(match u.int_in_range(0..=7)? {
        0 => (-1.0, false),
        1 => (f64::INFINITY, false),
        2 => (own + 0.5, false),
        3 => {
            let h = f64::from(u.arbitrary::<u32>()?) * 1048576.0
                + f64::from(u.int_in_range(0..=70000u32)?);
            (h, h == own) // an invented handle may name the live request
        }
        _ => (own, true),
    })
}

fn one_request(u: &mut Unstructured<'_>, p: &Rc<Plugin>) -> ArbResult<()> {
    let method: Vec<u8> = if u.arbitrary()? {
        b"GET".to_vec()
    } else {
        u.arbitrary()?
    };
    let uri: Vec<u8> = u.arbitrary()?;
    let path: Vec<u8> = if u.arbitrary()? {
        b"/send/x".to_vec()
    } else {
        u.arbitrary()?
    };
    let n = u.int_in_range(0..=12)?;
    let mut owned: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(n);
    for _ in 0..n {
        let name = if u.ratio(3, 4)? {
            NAMES[u.choose_index(NAMES.len())?].to_vec()
        } else {
            u.arbitrary()?
        };
        let value = if u.arbitrary()? {
            b"Bearer hit".to_vec()
        } else {
            u.arbitrary()?
        };
        owned.push((name, value));
    }
    let headers: Vec<NgxHeader> = owned
        .iter()
        .map(|(k, v)| NgxHeader {
            key: ngx(k),
            value: ngx(v),
        })
        .collect();
    let mut out = ArAccess {
        handle: 0.0,
        upstream: 0,
        repeated: 0,
        route: 0,
        path: ArStr {
            ptr: std::ptr::null(),
            len: 0,
        },
        spoofed: 0,
    };
    let step = check(
        unsafe {
            ar_access(
                Rc::as_ptr(p) as *const c_void,
                method.as_ptr(),
                method.len(),
                uri.as_ptr(),
                uri.len(),
                path.as_ptr(),
                path.len(),
                f64::from(u.arbitrary::<u32>()?),
                f64::from(u.int_in_range(0..=1000u32)?),
                headers.as_ptr(),
                headers.len() as u32,
                &mut out,
            )
        },
        "ar_access",
    );
    assert!((0..=STEP_REPEATED).contains(&step), "ar_access step {step}");
    if step == STEP_REPEATED {
        assert!(
            out.repeated >= 0 && out.repeated < 2,
            "repeated index {}",
            out.repeated
        );
    }
    if step == 1 {
        assert!(out.route >= -1 && out.route < 4);
        if !out.path.ptr.is_null() {
            let p = unsafe { std::slice::from_raw_parts(out.path.ptr, out.path.len) };
            assert!(p.starts_with(b"/"), "upstream path {p:?}");
        }
    }
    let own = out.handle;
    let mut value = [ArStr {
        ptr: std::ptr::null(),
        len: 0,
    }; 2];
    let mut freed = false;
    for _ in 0..u.int_in_range(0..=8)? {
        let (h, is_own) = some_handle(u, own)?;
        let live = is_own && !freed;
        let rc = match u.int_in_range(0..=12)? {
            0 => check(
                ar_header_count(h, u.int_in_range(0..=2)?),
                "ar_header_count",
            ),
            1 => check(
                unsafe {
                    ar_header(
                        h,
                        u.int_in_range(0..=2)?,
                        u.int_in_range(0..=3)?,
                        value.as_mut_ptr(),
                    )
                },
                "ar_header",
            ),
            2 => {
                let path: Vec<u8> = u.arbitrary()?;
                let rc = check(
                    unsafe { ar_route(h, path.as_ptr(), path.len(), value.as_mut_ptr()) },
                    "ar_route",
                );
                assert!(rc == NO_ROUTE || rc < 0 || rc < 4, "ar_route {rc}");
                rc
            }
            3 => check(ar_response(h, u.arbitrary()?), "ar_response"),
            4 => {
                let chunk: Vec<u8> = u.arbitrary()?;
                check(
                    unsafe { ar_body_chunk(h, chunk.as_ptr(), chunk.len()) },
                    "ar_body_chunk",
                )
            }
            5 => check(unsafe { ar_identity(h, value.as_mut_ptr()) }, "ar_identity"),
            6 => check(ar_refuse(h), "ar_refuse"),
            9 => {
                let rc = check(
                    unsafe { ar_pending_key(h, value.as_mut_ptr()) },
                    "ar_pending_key",
                );
                if rc == 0 {
                    let key = unsafe { std::slice::from_raw_parts(value[0].ptr, value[0].len) };
                    assert!(
                        key.len() == 32 && key.iter().all(u8::is_ascii_hexdigit),
                        "key {key:?}"
                    );
                }
                rc
            }
            10 => {
                let entry: Vec<u8> = u.arbitrary()?;
                let rc = check(
                    unsafe {
                        ar_load_shared(
                            h,
                            entry.as_ptr(),
                            entry.len(),
                            f64::from(u.int_in_range(0..=1000u32)?),
                        )
                    },
                    "ar_load_shared",
                );
                assert!(rc < 0 || (1..=3).contains(&rc), "ar_load_shared step {rc}");
                rc
            }
            11 => {
                let body: Vec<u8> = u.arbitrary()?;
                let size = f64::from(u.arbitrary::<u32>()?) - 1000.0;
                check(
                    unsafe { ar_request_body(h, body.as_ptr(), body.len(), size) },
                    "ar_request_body",
                )
            }
            12 => {
                // the log phase: arbitrary variables (NULL or bytes) and the
                // request's own header list as both lists
                let vars: Vec<Option<Vec<u8>>> = (0..9)
                    .map(|_| u.arbitrary())
                    .collect::<ArbResult<_>>()?;
                let v = |i: usize| vars[i].as_deref().map_or(NULL_STR, |b| ArStr {
                    ptr: b.as_ptr(),
                    len: b.len(),
                });
                let input = ArLogIn {
                    now_ms: f64::from(u.arbitrary::<u32>()?),
                    client_ip: v(0),
                    request_id: v(1),
                    request_length: v(2),
                    bytes_sent: v(3),
                    upstream_addr: v(4),
                    upstream_status: v(5),
                    upstream_response_time: v(6),
                    default_target: v(7),
                    default_upstream: v(8),
                    request_headers: headers.as_ptr(),
                    request_header_count: headers.len() as u32,
                    response_headers: headers.as_ptr(),
                    response_header_count: u.int_in_range(0..=headers.len() as u32)?,
                };
                let rc = check(unsafe { ar_log(h, &input) }, "ar_log");
                if live {
                    // ar_log frees the slot whatever the record's fate
                    freed = true;
                }
                rc
            }
            7 => {
                let rc = check(ar_finish(h), "ar_finish");
                if live && rc == 0 {
                    freed = true;
                }
                rc
            }
            _ => {
                let rc = check(ar_release(h), "ar_release");
                if live && rc == 0 {
                    freed = true;
                }
                rc
            }
        };
        if !live {
            assert_eq!(
                rc, ERR_STALE,
                "a stale or invented handle ({h}) was accepted"
            );
        } else {
            assert_ne!(rc, ERR_STALE, "the request's own live handle was refused");
            assert!(
                rc >= 0 || rc == ERR_ARG || rc == NO_ROUTE,
                "error {rc} on a live handle"
            );
        }
    }
    if !freed {
        assert_eq!(check(ar_finish(own), "ar_finish"), 0);
    }
    assert_eq!(check(ar_finish(own), "ar_finish"), ERR_STALE, "freed twice");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let before = ar_live_slots();
    PLUGINS.with(|ps| {
        while !u.is_empty() {
            let logged = u.arbitrary::<bool>().unwrap_or(false);
            if one_request(&mut u, &ps[usize::from(logged)]).is_err() {
                break;
            }
        }
    });
    assert_eq!(ar_live_slots(), before, "a slot leaked");
});
