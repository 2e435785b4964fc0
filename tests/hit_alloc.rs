//! Issue #11, item 4: a cache hit allocates nothing in Rust after warm-up.
//!
//! A counting global allocator (this test binary only) counts the
//! allocations made on this thread while a request crosses the C ABI the
//! way lua/auth_router/init.lua drives it on a hit: ar_access (header scan,
//! key derivation, L1 lookup, routing), ar_header for each account header,
//! ar_response, ar_finish. Configs as the benchmark's `hit` and
//! `hit-routed` variants (bench/configs.py).

use auth_router_native::auth::flow::{Plugin, Step};
use auth_router_native::config::compile;
use auth_router_native::ffi::access::{ar_access, ArAccess, NgxHeader, NgxStr};
use auth_router_native::ffi::finish::ar_finish;
use auth_router_native::ffi::headers::ar_header;
use auth_router_native::ffi::response::ar_response;
use auth_router_native::ffi::ArStr;
use auth_router_native::http1::Response;
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // try_with: the thread's locals may be gone while it exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn ngx_str(s: &[u8]) -> NgxStr {
    NgxStr {
        len: s.len() as i32,
        data: s.as_ptr(),
    }
}

fn header(name: &'static [u8], value: &'static [u8]) -> NgxHeader {
    NgxHeader {
        key: ngx_str(name),
        value: ngx_str(value),
    }
}

const TOKEN: &[u8] = b"Bearer good-u1";

fn headers() -> Vec<NgxHeader> {
    vec![
        header(b"host", b"127.0.0.1:8000"),
        header(b"user-agent", b"wrk"),
        header(b"authorization", TOKEN),
        header(b"x-account-id", b"spoofed"),
    ]
}

fn plugin(routes: Value, api_version: Value) -> Rc<Plugin> {
    let config = compile(json!({
        "auth": {"url": "http://127.0.0.1:9/auth", "ttl_s": 3600},
        "upstream_headers": [{"name": "x-account-id", "pointer": "/id"},
                             {"name": "x-account-plan", "pointer": "/plan"}],
        "response_headers": [{"name": "x-account-plan", "pointer": "/plan"}],
        "api_version": api_version,
        "routes": routes,
    }))
    .expect("valid config");
    let plugin = Rc::new(Plugin::new(config, b"0123456789abcdef0123456789abcdef"));
    // One auth call fills L1.
    let mut ex = plugin.begin(b"GET", b"/send", 0);
    assert_eq!(plugin.lookup(&mut ex, &[Some(TOKEN)], 1.0), Step::Miss);
    let answer = Response {
        status: 200,
        headers: vec![],
        body: br#"{"id": "u1", "plan": "pro", "flags": {"calendar_v2": false}}"#.to_vec(),
        keepalive: true,
    };
    let (step, _) = plugin.auth_response(&mut ex, Ok(&answer), 1.0);
    assert_eq!(step, Step::Allow);
    plugin
}

/// One request through the C ABI as the Lua core makes it on a hit;
/// returns the route index ar_access answered.
fn hit(plugin: &Rc<Plugin>, headers: &[NgxHeader]) -> i32 {
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
    let mut pair = [ArStr {
        ptr: std::ptr::null(),
        len: 0,
    }; 2];
    let path = b"/send";
    unsafe {
        let rc = ar_access(
            Rc::as_ptr(plugin) as *const c_void,
            b"GET".as_ptr(),
            3,
            std::ptr::null(), // not logged: no request URI
            0,
            path.as_ptr(),
            path.len(),
            1000.0,
            2.0,
            headers.as_ptr(),
            headers.len() as u32,
            &mut out,
        );
        assert_eq!(rc, 1, "an L1 hit");
        assert_eq!(out.upstream, 2);
        for i in 0..out.upstream as u32 {
            assert_eq!(ar_header(out.handle, 0, i, pair.as_mut_ptr()), i as i32);
            // rule index
        }
        let n = ar_response(out.handle, 200);
        assert_eq!(n, 1);
        assert_eq!(ar_header(out.handle, 1, 0, pair.as_mut_ptr()), 0);
        assert_eq!(std::slice::from_raw_parts(pair[0].ptr, pair[0].len), b"pro");
        assert_eq!(ar_finish(out.handle), 0);
    }
    out.route
}

fn unmatched(n: usize) -> Value {
    (1..=n)
        .map(|i| json!({"name": format!("r{i:04}"), "paths": [format!("/r{i:04}/")], "target": format!("127.0.0.1:{}", 10000 + i)}))
        .collect()
}

#[test]
fn a_hit_with_twenty_unmatched_routes_allocates_nothing() {
    let p = plugin(unmatched(20), json!({}));
    let h = headers();
    for _ in 0..10 {
        assert_eq!(hit(&p, &h), -1); // warm-up: the slot table grows once
    }
    assert_eq!(
        allocations(|| {
            for _ in 0..100 {
                hit(&p, &h);
            }
        }),
        0
    );
}

#[test]
fn a_routed_hit_allocates_nothing() {
    // bench/configs.py's hit-routed table: /send is `email`, after a version
    // route, a flag route with a percentage and two path routes.
    let routes = json!([
        {"name": "legacy-v0", "api_versions": ["v0"], "target": "127.0.0.1:9001"},
        {"name": "calendar-v2", "paths": ["/events", "/calendars"], "flags": ["calendar_v2"],
         "percentage": 25, "target": "127.0.0.1:9002"},
        {"name": "calendar", "paths": ["/events", "/calendars"], "target": "127.0.0.1:9002"},
        {"name": "email", "paths": ["/send"], "target": "127.0.0.1:9003", "strip_prefix": true},
    ]);
    let p = plugin(routes, json!({"default": "v2"}));
    let h = headers();
    for _ in 0..10 {
        assert_eq!(hit(&p, &h), 3);
    }
    assert_eq!(
        allocations(|| {
            for _ in 0..100 {
                hit(&p, &h);
            }
        }),
        0
    );
}

#[test]
fn the_counter_sees_allocations() {
    // The harness itself: an allocation made under `allocations` is counted.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 32]))) >= 1);
}
