-- Bench-only: the per-call cost of each per-request FFI entry point (the
-- C ABI of src/ffi, declared in lua/auth_router/native.lua), called the way
-- lua/auth_router/init.lua calls it, under plain LuaJIT with the JIT on.
-- Issue #11 item 6. bench/micro.sh runs it after the serialize peer.
--
--   T=.tree   # a luarocks tree with the plugin (make tree)
--   LUA_PATH="$T/share/lua/5.1/?.lua;$T/share/lua/5.1/?/init.lua;;" \
--   LUA_CPATH="$T/lib/lua/5.1/?.so;;" luajit bench/ffi_calls.lua [RESULTS.tsv]
--
-- Setup as bench/configs.py's `hit`: 2 upstream headers, 1 response header,
-- 20 routes that /send does not match. L1 is filled through the mlua
-- binding, as a miss does (ar_access, then the exchange's auth_request and
-- auth_response on a parsed 200 answer), so every ar_access below is a hit.
-- The request's header list is 6 entries in a struct of the same layout as
-- nginx's ngx_http_lua_ffi_table_elt_t (declared by resty.core, which needs
-- nginx), as spec/unit/01-native_spec.lua does.
--
-- The L2 step (ar_pending_key + ar_load_shared) runs on a plugin whose L1
-- holds one entry, with the entry as the auth answer made it (the binary
-- shared-dict form); the dict read between the two calls needs nginx and is
-- not in the number. The log phase (ar_log) runs on a logging plugin with
-- a 1 KiB request and response body captured, the request's 6 headers and 4
-- response headers, nginx's variables as pointers; the queue is drained
-- (untimed) between batches.
--
-- Each call site is one small function (call_*) copied from init.lua, so a
-- change of the C signatures is a change of that function only. Entry
-- points that need a fresh request (ar_access, ar_finish) run in batches of
-- SLOTS live slots: ar_access is timed while the slots are made, ar_finish
-- while they are freed, each without the other. The rest run on one live
-- request. Timing: this thread's CPU time (CLOCK_THREAD_CPUTIME_ID, so time
-- other processes take on a shared machine is not counted) around each
-- batch of at least ~50 us, minus the measured cost of reading the clock
-- twice (a system call, ~0.5 us here); FFI_SAMPLES samples of about
-- FFI_SECONDS / FFI_SAMPLES each after FFI_WARMUP_SECONDS of warm-up; each
-- sample starts after a full GC. Reported: the median sample's ns per call,
-- and min - max. The loop's own cost is in every number; the no-op row
-- shows it with an FFI call's.
--
-- Environment (defaults): FFI_WARMUP_SECONDS (0.2), FFI_SECONDS (0.5),
-- FFI_SAMPLES (5).
-- With RESULTS.tsv, also writes "id<TAB>median_ns<TAB>min_ns<TAB>max_ns<TAB>calls"
-- per entry point.

local ffi    = require "ffi"
local native = require "auth_router.native"

local C          = native.C
local str_out    = native.str_out
local NO_ROUTE   = native.NO_ROUTE
local ffi_string = ffi.string

local WARMUP_S = tonumber(os.getenv("FFI_WARMUP_SECONDS") or "") or 0.2
local TOTAL_S  = tonumber(os.getenv("FFI_SECONDS") or "") or 0.5
local SAMPLES  = tonumber(os.getenv("FFI_SAMPLES") or "") or 5
local SLOTS    = 1024    -- live slots per ar_access / ar_finish batch
local CALLS    = 16384   -- calls per batch on one live request
local CHUNKS   = 1024    -- ar_body_chunk calls per batch (one request)
local CHUNK    = 1024    -- bytes per ar_body_chunk call

ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
  int abs(int j);
  typedef struct { int len; const unsigned char *data; } bench_ngx_str;
  typedef struct { bench_ngx_str key; bench_ngx_str value; } bench_header;
]]
local libc = ffi.C
local CLOCK_THREAD_CPUTIME_ID = 3
local ts = ffi.new("bench_timespec")

local function now_ns()
  libc.clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

-- What two back-to-back clock reads measure: the median of many pairs.
local CLOCK_NS
do
  local d = {}
  for i = 1, 501 do
    local t0 = now_ns()
    d[i] = now_ns() - t0
  end
  table.sort(d)
  CLOCK_NS = d[251]
end


---------------------------------------------------------------------------
-- The plugin, L1 filled.

local SECRET = string.rep("s", 32)
local TOKEN  = "Bearer good-u1"
local ACCOUNT = '{"id": "u1", "plan": "pro", "flags": {"calendar_v2": false}}'
local NOW, START_MS = 1.7e9, 1.7e12   -- ngx.now() and the request's start, fixed
local METHOD, PATH = "GET", "/send"
local ALLOW, MISS = 1, 3              -- ar_access's steps
local UPSTREAM, RESPONSE = 0, 1       -- ar_header's lists
local CACHE_STATUS = { [0] = "none", [1] = "hit", [2] = "miss", [3] = "stale", [4] = "negative" }

-- bench/configs.py's `hit`: base() with HEADERS, and unmatched(20).
local function hit_config(log, cache_size)
  local routes = {}
  for i = 1, 20 do
    routes[i] = { name = string.format("r%04d", i), paths = { string.format("/r%04d/", i) },
                  target = "127.0.0.1:" .. (10000 + i) }
  end
  return {
    auth = { url = "http://127.0.0.1:9/auth", ttl_s = 3600, cache_size = cache_size },
    upstream_headers = { { name = "x-account-id", pointer = "/id" },
                         { name = "x-account-plan", pointer = "/plan" } },
    response_headers = { { name = "x-account-plan", pointer = "/plan" } },
    routes = routes,
    log = log,
  }
end

-- The request's header list as nginx hands it to ar_access: names
-- lowercase, values pointing into memory that outlives the bench.
local HEADER_LIST = {
  { "host", "127.0.0.1:8000" },
  { "user-agent", "wrk" },
  { "accept", "*/*" },
  { "accept-encoding", "gzip, deflate" },
  { "authorization", TOKEN },
  { "x-request-id", "8c1d0f2a-1b2c-4d5e-8f90-0a1b2c3d4e5f" },
}
local N_HEADERS = #HEADER_LIST
local headers = ffi.new("bench_header[?]", N_HEADERS)
for i, h in ipairs(HEADER_LIST) do
  headers[i - 1].key.data, headers[i - 1].key.len = h[1], #h[1]
  headers[i - 1].value.data, headers[i - 1].value.len = h[2], #h[2]
end

-- The same list with another credential (the L2 case alternates the two).
local TOKEN_B = "Bearer good-u2"
local headers_b = ffi.new("bench_header[?]", N_HEADERS)
ffi.copy(headers_b, headers, ffi.sizeof("bench_header") * N_HEADERS)
headers_b[4].value.data, headers_b[4].value.len = TOKEN_B, #TOKEN_B

-- The response headers the log phase hands to ar_log (init.lua fills the
-- same layout from ngx.resp.get_headers).
local RESP_LIST = {
  { "content-type", "application/json" },
  { "content-length", "1024" },
  { "connection", "keep-alive" },
  { "x-account-plan", "pro" },
}
local resp_headers = ffi.new("bench_header[?]", #RESP_LIST)
for i, h in ipairs(RESP_LIST) do
  resp_headers[i - 1].key.data, resp_headers[i - 1].key.len = h[1], #h[1]
  resp_headers[i - 1].value.data, resp_headers[i - 1].value.len = h[2], #h[2]
end

local access_out = ffi.new("ar_access_out")

local function check(rc, what)
  if rc < 0 then
    error(what .. ": " .. native.last_error(rc), 2)
  end
  return rc
end

-- A compiled plugin and its pointer for the C calls (as init.lua's plan.ptr).
local function compile(conf)
  local plugin = assert(native.compile(conf, SECRET))
  return plugin, ffi.cast("const void *", plugin:ffi_ptr())
end

local hit_plugin, HIT = compile(hit_config(nil))
local log_plugin, LOGGED = compile(hit_config({
  enabled = true, sink = "tcp", host = "127.0.0.1", port = 9,
  request_body = true, response_body = true, max_body_bytes = CHUNKS * CHUNK,
  redact_body_fields = { "password", "token" },
}))
local l2_plugin, L2 = compile(hit_config(nil, 1))


---------------------------------------------------------------------------
-- The call sites, each as init.lua makes it.

-- begin(): the request URI only when logging, the path only with routes.
local function call_access(ptr, uri)
  local rc = C.ar_access(ptr, METHOD, #METHOD, uri, uri and #uri or 0, PATH, #PATH,
                         START_MS, NOW, headers, N_HEADERS, access_out)
  if rc ~= ALLOW then
    error("ar_access: expected a hit (1), got " .. rc .. (rc < 0 and ": " .. native.last_error(rc) or ""))
  end
  local out = access_out
  local route_path = out.path.ptr ~= nil and ffi_string(out.path.ptr, out.path.len) or nil
  return out.handle, out.upstream, out.route, route_path
end

-- set_headers(): one account header: its rule index (the name is the
-- plan's) and a pointer to its value, which init.lua hands to nginx's
-- set_header as is (nginx copies it; no Lua string is made).
local function call_header(handle, which, i)
  local rule = C.ar_header(handle, which, i, str_out)
  if rule < 0 then
    error(native.last_error(rule), 0)
  end
  return rule, str_out[0].ptr, str_out[0].len
end

-- header_filter()
local function call_response(handle)
  local count = C.ar_response(handle, 200)
  if count ~= 1 then
    check(count, "ar_response")
    error("ar_response: expected 1 response header, got " .. count)
  end
  return count
end

-- identity() (the Kong handler calls it on every allowed request)
local function call_identity(handle)
  local rc = C.ar_identity(handle, str_out)
  if rc < 0 then
    error(native.last_error(rc), 2)
  end
  local id = str_out[0].ptr ~= nil and ffi_string(str_out[0].ptr, str_out[0].len) or nil
  return id, CACHE_STATUS[rc]
end

-- refuse()
local function call_refuse(handle)
  C.ar_refuse(handle)
end

-- body_filter(), response bodies logged (otherwise it makes no native call)
local function call_body_chunk(handle, chunk)
  local rc = C.ar_body_chunk(handle, chunk, chunk and #chunk or 0)
  if rc < 0 then
    error(native.last_error(rc))
  end
end

-- decide(), after a miss was allowed
local function call_route(handle, path)
  local route_path
  local route_index = C.ar_route(handle, path, #path, str_out)
  if route_index >= 0 and str_out[0].ptr ~= nil then
    route_path = ffi_string(str_out[0].ptr, str_out[0].len)
  elseif route_index < 0 and route_index ~= NO_ROUTE then
    error(native.last_error(route_index), 0)
  end
  return route_index, route_path
end

-- capture_request_body(), request bodies logged (the body as nginx holds it)
local function call_request_body(handle, data)
  local rc = C.ar_request_body(handle, data, #data, #data)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
end

-- shared_step(), an L1 miss: the key to read the dict under, then the
-- dict's value (here a Lua string; init.lua passes nginx's copy)
local function call_pending_key(handle)
  local rc = C.ar_pending_key(handle, str_out)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
  return str_out[0].ptr, str_out[0].len
end

local function call_load_shared(handle, value)
  local step = C.ar_load_shared(handle, value, #value, NOW)
  if step < 0 then
    error(native.last_error(step), 0)
  end
  return step
end

-- finish_logged(): the record's inputs (init.lua points them at nginx's
-- variables), then ar_log, which also frees the slot
local log_in = ffi.new("ar_log_in")
local LOG_VARS = {
  client_ip = "127.0.0.1", request_length = "1300", bytes_sent = "1250",
  upstream_addr = "127.0.0.1:8080", upstream_status = "200", upstream_response_time = "0.001",
  request_id = "8c1d0f2a-1b2c-4d5e-8f90-0a1b2c3d4e5f",
}
for field, value in pairs(LOG_VARS) do
  log_in[field].ptr, log_in[field].len = value, #value
end
log_in.request_headers, log_in.request_header_count = headers, N_HEADERS
log_in.response_headers, log_in.response_header_count = resp_headers, #RESP_LIST
local function call_log(handle)
  log_in.now_ms = NOW * 1000
  local rc = C.ar_log(handle, log_in)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
end

-- log(), logging off
local function call_finish(handle)
  local rc = C.ar_finish(handle)
  if rc < 0 then
    error(native.last_error(rc))
  end
end

-- the cheapest export: a call through the same wrapper, no request
local function call_live_slots()
  return C.ar_live_slots()
end

-- a no-op FFI call, for the call and loop overhead
local function call_noop()
  return libc.abs(-1)
end


local handles = ffi.new("double[?]", SLOTS)
local CHUNK_DATA = string.rep("c", CHUNK)

-- Fills L1 of `plugin` for TOKEN: a miss, then the auth answer through the
-- mlua binding, as init.lua's fetch() does after the auth call.
local function fill_l1(ptr, uri, list)
  local rc = C.ar_access(ptr, METHOD, #METHOD, uri, uri and #uri or 0, PATH, #PATH,
                         START_MS, NOW, list or headers, N_HEADERS, access_out)
  assert(rc == MISS, "the first request must miss, got " .. rc)
  local handle = access_out.handle
  local x = native.exchange(handle)
  assert(#x:auth_request() > 0)
  local parser = native.response_parser(1024 * 1024)
  local complete, err = parser:feed("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    .. "Content-Length: " .. #ACCOUNT .. "\r\n\r\n" .. ACCOUNT)
  assert(complete, err or "incomplete auth answer")
  local step, value = x:auth_response(parser, nil, NOW, 1.0)
  assert(step == "allow", "auth answer: " .. tostring(step))
  check(C.ar_finish(handle), "ar_finish")
  return value -- the entry's shared-dict form
end

fill_l1(HIT, nil)
fill_l1(LOGGED, "/send?x=1")
-- L1 of one entry: B is filled last, so A misses until the next batch
-- loads it; the batches then alternate (see l2_prepare)
local L2_VALUE = { [headers] = fill_l1(L2, nil, headers), [headers_b] = fill_l1(L2, nil, headers_b) }
local l2_in_l1 = headers_b

-- SLOTS requests of the credential L1 does not hold (each misses); returns
-- its shared-dict value. l2_finish frees them; after loads (`loaded`), L1
-- holds that credential, so the next batch uses the other one.
local l2_list
local function l2_prepare()
  l2_list = l2_in_l1 == headers_b and headers or headers_b
  for i = 0, SLOTS - 1 do
    local rc = C.ar_access(L2, METHOD, #METHOD, nil, 0, PATH, #PATH,
                           START_MS, NOW, l2_list, N_HEADERS, access_out)
    assert(rc == MISS, "L2 case: expected an L1 miss, got " .. rc)
    handles[i] = access_out.handle
  end
  return L2_VALUE[l2_list]
end

local function l2_finish(loaded)
  for i = 0, SLOTS - 1 do
    call_finish(handles[i])
  end
  if loaded then
    l2_in_l1 = l2_list
  end
end

-- SLOTS logged requests, each with its request and response body captured.
local HERE = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
local BODY = dofile(HERE .. "bodies.lua").json(1024) -- log1k's body
local function log_prepare()
  for i = 0, SLOTS - 1 do
    local h = (call_access(LOGGED, "/send?x=1"))
    call_request_body(h, BODY)
    call_body_chunk(h, BODY)
    handles[i] = h
  end
end

-- Empties the logging plugin's queue (what the sink timer does), untimed.
local function drain_log()
  while true do
    local id = log_plugin:log_take(NOW, true)
    if not id then
      return
    end
    log_plugin:log_ack(id)
  end
end

-- Check once, outside the loops, that each call does what it is timed for.
do
  local h, upstream, route = call_access(HIT, nil)
  assert(upstream == 2 and route == -1, "hit: 2 upstream headers, no route")
  local value = function(p, n) return ffi_string(p, n) end
  local r0, p0, l0 = call_header(h, UPSTREAM, 0)
  local r1, p1, l1 = call_header(h, UPSTREAM, 1)
  -- rule 0: x-account-id, rule 1: x-account-plan
  assert(r0 == 0 and value(p0, l0) == "u1" and r1 == 1 and value(p1, l1) == "pro")
  assert(call_response(h) == 1)
  local rr, rp, rl = call_header(h, RESPONSE, 0)
  assert(rr == 0 and value(rp, rl) == "pro")
  local id, cache = call_identity(h)
  assert(id == "u1" and cache == "hit", tostring(id) .. " " .. tostring(cache))
  assert(call_route(h, PATH) == NO_ROUTE)
  call_refuse(h)
  call_finish(h)
  local entry = l2_prepare()
  local kp, kl = call_pending_key(handles[0])
  assert(kp ~= nil and kl == 32, "a 32-character key")
  assert(entry:byte(1) == 3, "the binary entry form")
  assert(call_load_shared(handles[0], entry) == ALLOW, "a fresh entry allows")
  l2_finish(true)
  log_prepare()
  local q0 = native.stats().log_queued or 0
  for i = 0, SLOTS - 1 do
    call_log(handles[i])
  end
  assert((native.stats().log_queued or 0) - q0 == SLOTS, "one record per ar_log")
  drain_log()
  assert(call_live_slots() == 0, "a slot leaked")
end


---------------------------------------------------------------------------
-- Cases. Each: calls per batch; prepare() (untimed) -> state; run(n, state)
-- (timed, n calls); finish(state) (untimed). Each run is its own loop, so
-- LuaJIT compiles one trace per entry point.


local function one_hit()
  return (call_access(HIT, nil))
end

local cases = {
  { id = "noop", what = "no-op FFI call (libc `abs`)", batch = CALLS,
    run = function(n) for _ = 1, n do call_noop() end end },
  { id = "ar_live_slots", what = "`ar_live_slots` (cheapest export: the wrapper alone)", batch = CALLS,
    run = function(n) for _ = 1, n do call_live_slots() end end },
  { id = "ar_access", what = "`ar_access`, L1 hit, 6 headers, 20 routes (+ reading `ar_access_out`)",
    batch = SLOTS,
    run = function(n) for i = 0, n - 1 do handles[i] = call_access(HIT, nil) end end,
    finish = function() for i = 0, SLOTS - 1 do call_finish(handles[i]) end end },
  { id = "ar_header", what = "`ar_header`, upstream list (rule index + value pointer)", batch = CALLS,
    prepare = one_hit,
    run = function(n, h) for i = 1, n do call_header(h, UPSTREAM, i % 2) end end,
    finish = call_finish },
  { id = "ar_response", what = "`ar_response` (status; 1 response header)", batch = CALLS,
    prepare = one_hit,
    run = function(n, h) for _ = 1, n do call_response(h) end end,
    finish = call_finish },
  { id = "ar_identity", what = "`ar_identity` (+ `ffi.string` of the account id)", batch = CALLS,
    prepare = one_hit,
    run = function(n, h) for _ = 1, n do call_identity(h) end end,
    finish = call_finish },
  { id = "ar_refuse", what = "`ar_refuse`", batch = CALLS,
    prepare = one_hit,
    run = function(n, h) for _ = 1, n do call_refuse(h) end end,
    finish = call_finish },
  { id = "ar_route", what = "`ar_route`, 20 routes, none matches /send", batch = CALLS,
    prepare = one_hit,
    run = function(n, h) for _ = 1, n do call_route(h, PATH) end end,
    finish = call_finish },
  { id = "ar_body_chunk", what = "`ar_body_chunk`, 1 KiB chunk copied (response body logged)",
    batch = CHUNKS,
    prepare = function() return (call_access(LOGGED, "/send?x=1")) end,
    run = function(n, h) for _ = 1, n do call_body_chunk(h, CHUNK_DATA) end end,
    finish = call_finish },
  { id = "ar_pending_key", what = "`ar_pending_key` (L1 miss: the shared-dict key's 32 hex characters)",
    batch = SLOTS, prepare = l2_prepare,
    run = function(n) for i = 0, n - 1 do call_pending_key(handles[i]) end end,
    finish = function() l2_finish(false) end },
  { id = "ar_load_shared", what = "`ar_load_shared`, a fresh entry (binary form decoded, L1 filled)",
    batch = SLOTS, prepare = l2_prepare,
    run = function(n, value) for i = 0, n - 1 do call_load_shared(handles[i], value) end end,
    finish = function() l2_finish(true) end },
  { id = "ar_request_body", what = "`ar_request_body`, 1 KiB body copied (request body logged)",
    batch = CHUNKS,
    prepare = function() return (call_access(LOGGED, "/send?x=1")) end,
    run = function(n, h) for _ = 1, n do call_request_body(h, CHUNK_DATA) end end,
    finish = call_finish },
  { id = "ar_log", what = "`ar_log`: a record with 1 KiB JSON bodies both ways, 2 fields redacted, "
                          .. "10 headers, queued; the slot freed",
    batch = SLOTS, prepare = log_prepare,
    run = function(n) for i = 0, n - 1 do call_log(handles[i]) end end,
    finish = drain_log },
  { id = "ar_finish", what = "`ar_finish` (logging off: closes the exchange, frees the slot)",
    batch = SLOTS,
    prepare = function() for i = 0, SLOTS - 1 do handles[i] = call_access(HIT, nil) end end,
    run = function(n) for i = 0, n - 1 do call_finish(handles[i]) end end },
}


---------------------------------------------------------------------------
-- Timing.

-- One batch: the timed nanoseconds of `case.batch` calls.
local function batch(case)
  local state = case.prepare and case.prepare() or nil
  local t0 = now_ns()
  case.run(case.batch, state)
  local dt = math.max(0, now_ns() - t0 - CLOCK_NS)
  if case.finish then
    case.finish(state)
  end
  return dt
end

-- Batches until `seconds` of timed time; returns ns per call and calls.
local function sample(case, seconds)
  local spent, calls = 0, 0
  repeat
    spent = spent + batch(case)
    calls = calls + case.batch
  until spent >= seconds * 1e9
  return spent / calls, calls
end

local function measure(case)
  sample(case, WARMUP_S)
  local ns, total = {}, 0
  for s = 1, SAMPLES do
    collectgarbage("collect")
    local per, calls = sample(case, TOTAL_S / SAMPLES)
    ns[s], total = per, total + calls
  end
  if call_live_slots() ~= 0 then
    error(case.id .. ": slots leaked")
  end
  table.sort(ns)
  local median = SAMPLES % 2 == 1 and ns[(SAMPLES + 1) / 2]
    or (ns[SAMPLES / 2] + ns[SAMPLES / 2 + 1]) / 2
  return median, ns[1], ns[SAMPLES], total
end


---------------------------------------------------------------------------
-- Main.

local tsv = arg[1] and assert(io.open(arg[1], "wb"))

print(string.format("%s (JIT %s); thread CPU time (clock pair %.0f ns, subtracted); warm-up %gs, "
  .. "%d samples over ~%gs per entry point", jit and jit.version or _VERSION,
  jit and jit.status() and "on" or "off", CLOCK_NS, WARMUP_S, SAMPLES, TOTAL_S))
print()
print("| entry point, as lua/auth_router/init.lua calls it | ns/call (median) | min - max | calls |")
print("|---|---:|---:|---:|")
for _, case in ipairs(cases) do
  local med, lo, hi, calls = measure(case)
  print(string.format("| %s | %.1f | %.1f - %.1f | %d |", case.what, med, lo, hi, calls))
  io.stdout:flush()
  if tsv then
    tsv:write(string.format("%s\t%.2f\t%.2f\t%.2f\t%d\n", case.id, med, lo, hi, calls))
    tsv:flush()
  end
end
if tsv then
  tsv:close()
end
-- the plugins stay referenced until here (their pointers are in the calls)
assert(hit_plugin and log_plugin and l2_plugin)
