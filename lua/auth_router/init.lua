-- auth-router core: drives each nginx phase with ngx.* and the native module.
-- Host-agnostic: the Kong handler and the plain OpenResty adapter both call
-- these functions and turn their results into host actions. No kong.* here.
--
-- Rust decides and serializes; Lua does everything that can yield (sockets,
-- sleeps, shared-dict waits). Every native call is protected: a native error
-- (or caught panic) is userdata, so it is converted with tostring before it
-- is logged, and it never reaches the client. Whatever fails, a request is
-- never let through unauthenticated.

local ffi    = require "ffi"
local bit    = require "bit"
local native = require "auth_router.native"
local config = require "auth_router.config"
local flow   = require "auth_router.flow"
local redis  = require "auth_router.redis"
local sink   = require "auth_router.sink"

-- Loadable without nginx (no ngx.* read at load time), so Kong's schema
-- validator and the unit specs can require this module anywhere.
local ngx          = ngx
local pcall        = pcall
local tostring     = tostring
local tonumber     = tonumber
local type         = type
local error        = error
local ipairs       = ipairs
local pairs        = pairs
local unpack       = unpack
local floor        = math.floor
local setmetatable = setmetatable

local INTERNAL_ERROR_STATUS  = 500
local INTERNAL_ERROR_MESSAGE = "An unexpected error occurred"
local NO_CREDENTIAL_MESSAGE  = "No credentials found in request"
local DUPLICATE_CREDENTIAL_MESSAGE = "Duplicate credential header found"
local DUPLICATE_HEADER_MESSAGE     = "Duplicate header found: "
local DENY_MESSAGES          = { [401] = "Unauthorized", [403] = "Forbidden" }
local UNAVAILABLE_MESSAGE    = "Authentication service unavailable"

local SECRET_KEY  = "auth-router:secret"  -- shared dict key of the node's cache-key secret

local _M = {
  VERSION  = native.version(),
  validate = config.validate,
}

-- Compiled plugins by config table (weak keys).
local compiled = setmetatable({}, { __mode = "k" })
-- Per compiled plugin: what Lua needs on every request, computed once.
local plans = setmetatable({}, { __mode = "k" })
-- The C ABI (src/ffi) and its reused out parameters (filled and read
-- without yielding in between).
local C          = native.C
local str_out    = native.str_out
local access_out = ffi.new("ar_access_out")
local ffi_string = ffi.string
local NO_ROUTE   = native.NO_ROUTE
local UPSTREAM, RESPONSE = 0, 1
local band, lshift = bit.band, bit.lshift
local SPOOFED_REST = bit.tobit(0x80000000) -- ar_access_out.spoofed: any name from the 32nd on
-- ar_access's step codes (the mlua exchange's wait steps name them), and
-- ar_identity's cache status codes.
local NONE, ALLOW, DENY, MISS, FAILED, REPEATED = 0, 1, 2, 3, 4, 5
local STEP_CODES = { none = NONE, allow = ALLOW, deny = DENY, miss = MISS, failed = FAILED }
local CACHE_STATUS = { [0] = "none", [1] = "hit", [2] = "miss", [3] = "stale", [4] = "negative" }
-- Dict names already reported missing (log once per worker).
local missing_dict_logged = {}
local node_secret


local function internal_error(phase, err)
  native.internal_error()
  ngx.log(ngx.ERR, "[auth-router] internal error in ", phase, ": ", tostring(err))
end


-- 32 random bytes shared by every worker of this node through the dict, so
-- L2 keys agree across workers; per worker when there is no dict.
local function get_secret(dict)
  if node_secret then
    return node_secret
  end
  local f = io.open("/dev/urandom", "rb")
  local fresh = f and f:read(32)
  if f then
    f:close()
  end
  if not fresh or #fresh ~= 32 then
    error("cannot read /dev/urandom for the cache-key secret")
  end
  if dict then
    dict:add(SECRET_KEY, fresh) -- first worker wins; the others read its value
    node_secret = dict:get(SECRET_KEY) or fresh
  else
    node_secret = fresh
  end
  return node_secret
end


local function shared_dict(name)
  local dict = ngx.shared[name]
  if not dict and not missing_dict_logged[name] then
    missing_dict_logged[name] = true
    ngx.log(ngx.WARN, "[auth-router] lua_shared_dict '", name, "' not found: ",
            "running with the per-worker cache only (no cross-worker sharing or single flight)")
  end
  return dict
end


local function header_var(name)
  return "http_" .. name:gsub("-", "_")
end


local function make_plan(plugin)
  local c = plugin:config()
  local auth = c.auth
  local dict = shared_dict(auth.shared_dict)
  local plan = {
    dict         = dict,
    dict_name    = auth.shared_dict,
    -- a new plugin starts with an empty L1: earlier purges do not concern it
    purge_seen   = flow.purge_seq(dict),
    names        = {},   -- credential then forwarded header names (lowercase)
    ncred        = #auth.credential_headers,
    strip        = {},
    hide         = {},
    failure_status = auth.failure_status,
    conn = {
      timeout_ms   = auth.timeout_ms,
      keepalive_ms = auth.keepalive_ms,
      pool_size    = auth.pool_size,
      ssl_verify   = auth.ssl_verify,
    },
  }
  local target = plugin:auth_target()
  plan.conn.host, plan.conn.port, plan.conn.tls = target.host, target.port, target.tls
  plan.conn.server_name = target.host
  plan.conn.pool = "auth-router:" .. target.host .. ":" .. target.port .. (target.tls and ":tls" or "")
  plan.auth_addr = target.host .. ":" .. target.port
  plan.max_in_flight = auth.max_in_flight
  -- timeout_ms is the budget of the whole call (http1.request), so waiters
  -- and the lock are bounded by it too.
  plan.wait_s = auth.timeout_ms / 1000 + flow.WAIT_MARGIN_S
  plan.lock_ttl = auth.timeout_ms / 1000 + flow.LOCK_MARGIN_S
  plan.node_wait_s, plan.node_lock_ttl = plan.wait_s, plan.lock_ttl
  if c.cluster.enabled then
    plan.cluster = redis.new(c.cluster)
    plan.cluster_id = c.cluster.host .. ":" .. c.cluster.port .. ":" .. c.cluster.database
    plan.poll_s = c.cluster.poll_ms / 1000
    plan.next_poll = 0
    -- The node's lock holder may first wait for another node's call
    -- (wait_s) and make a few Redis exchanges: the node's own waiters and
    -- its lock allow for that.
    local extra = plan.wait_s + 5 * c.cluster.timeout_ms / 1000
    plan.node_wait_s = plan.wait_s + extra
    plan.node_lock_ttl = plan.lock_ttl + extra
  end

  for _, h in ipairs(auth.credential_headers) do
    plan.names[#plan.names + 1] = h
  end
  for _, h in ipairs(auth.forward_headers) do
    plan.names[#plan.names + 1] = h
  end
  -- Spoofable headers (in ar_access's `spoofed` order): every upstream
  -- header, then the route header.
  -- Header names by rule index (0-based, as ar_header answers).
  plan.upstream_names, plan.response_names = {}, {}
  for i, rule in ipairs(c.upstream_headers) do
    plan.strip[#plan.strip + 1] = rule.name
    plan.upstream_names[i - 1] = rule.name
  end
  for i, rule in ipairs(c.response_headers) do
    plan.response_names[i - 1] = rule.name
  end
  plan.nresponse = #c.response_headers
  plan.consumer = c.consumer ~= ngx.null and c.consumer ~= nil and c.consumer.by ~= ngx.null
                  and c.consumer.by ~= nil
  if c.route_header ~= ngx.null and c.route_header then
    plan.strip[#plan.strip + 1] = c.route_header
    plan.route_header = c.route_header
  end
  if #c.routes > 0 then
    plan.routed = true
  end
  -- What a route decision names, by the index ar_route answers (0-based):
  -- built once, so applying a route creates no table per request.
  plan.routes = {}
  for i, r in ipairs(c.routes) do
    local host, port = r.upstream, nil
    if r.target ~= ngx.null and r.target then
      host, port = r.target:match("^%[?(.-)%]?:(%d+)$")
      port = tonumber(port)
    end
    plan.routes[i - 1] = { name = r.name, host = host, port = port }
  end
  -- A cdata pointer: LuaJIT cannot compile a lightuserdata argument.
  plan.ptr = ffi.cast("const void *", plugin:ffi_ptr())
  if c.hide_credentials then
    plan.hide = auth.credential_headers
  end

  local log = c.log
  if log.enabled then
    local t = plugin:log_target()
    plan.log = {
      request_body   = log.request_body,
      response_body  = log.response_body,
      max_body_bytes = log.max_body_bytes,
      request_id_var = header_var(log.request_id_header),
    }
    plan.sink = {
      kind         = log.sink,
      host         = t.host,
      port         = t.port,
      tls          = log.tls,
      ssl_verify   = true,
      server_name  = t.host,
      timeout_ms   = log.timeout_ms,
      keepalive_ms = log.keepalive_ms,
      pool_size    = 8,
      pool         = "auth-router-log:" .. t.host .. ":" .. t.port .. (log.tls and ":tls" or ""),
      addr         = t.host .. ":" .. t.port,
      flush_s      = log.flush_interval_ms / 1000,
    }
  end
  return plan
end


-- The fleet's purge log: a timer of this worker ticks while it holds a
-- config with a cluster tier (none otherwise), and each such config polls
-- when its poll_ms is due (flow.poll_purges; one worker per node). Started
-- by init_worker() when such a config is already compiled (OpenResty's
-- init), else by the first one compiled after it (Kong's access).
local PURGE_TICK_S = 0.05
local poll = { allowed = false, started = false, running = false }
local function poll_tick(premature)
  if premature or poll.running then
    return
  end
  poll.running = true
  local now = ngx.now()
  for plugin, plan in pairs(plans) do
    if plan.cluster and now >= plan.next_poll then
      plan.next_poll = now + plan.poll_s
      local ok, err = pcall(flow.poll_purges, plugin, plan)
      if not ok then
        internal_error("purge poll", err)
      end
    end
  end
  poll.running = false
end


-- Starts the tick once init_worker() allowed it; raises when the timer
-- cannot be created (a cluster config without it would never apply the
-- fleet's purges).
local function start_poll()
  if poll.allowed and not poll.started then
    local ok, err = ngx.timer.every(PURGE_TICK_S, poll_tick)
    if not ok then
      error("cannot start the purge poll timer: " .. tostring(err), 0)
    end
    poll.started = true
  end
end


local function plan_for(plugin)
  local plan = plans[plugin]
  if not plan then
    plan = make_plan(plugin)
    plans[plugin] = plan
    if plan.cluster then
      start_poll()
    end
  end
  return plan
end


--- compile(conf) -> plugin | nil, err
-- Compiles a config table or JSON text (not cached; see plugin_for).
-- Context: init, init_worker, and request phases.
function _M.compile(conf)
  -- Validating first tells which dict holds the node secret; it runs once
  -- per config change, never per request.
  local normalized, err = config.validate(conf)
  if not normalized then
    return nil, "invalid auth-router config: " .. err
  end
  local ok, secret = pcall(get_secret, shared_dict(normalized.auth.shared_dict))
  if not ok then
    return nil, tostring(secret)
  end
  if normalized.cluster.enabled then
    -- every node must derive the same keys: the fleet's secret, not this
    -- node's random one
    secret = normalized.cluster.key_secret
  end
  local plugin, cerr = config.compile(normalized, secret)
  if not plugin then
    return nil, cerr
  end
  -- The per-request plan now, not on the first request: it converts the
  -- whole config to Lua tables (deep calls), and a request coroutine whose
  -- stack grew for that keeps paying to clear it each time it is reused.
  local pok, perr = pcall(plan_for, plugin)
  if not pok then
    return nil, "cannot prepare auth-router config: " .. tostring(perr)
  end
  return plugin
end


--- plugin_for(conf) -> plugin | nil, err
-- The compiled plugin for a config table, compiled once per worker. Kong
-- hands out a new table when a plugin's config changes, so a change compiles
-- once and the old plugin goes with the garbage collector.
function _M.plugin_for(conf)
  local plugin = compiled[conf]
  if plugin then
    return plugin
  end
  local err
  plugin, err = _M.compile(conf)
  if not plugin then
    return nil, err
  end
  compiled[conf] = plugin
  return plugin
end




-- nginx's lua module, through the C functions its own ngx.req / ngx.header
-- wrappers call (resty.core declares them; LuaJIT checks every call against
-- those declarations): the request's header list, variables and header
-- writes without making a Lua string for each value. Loaded on first use:
-- resty.core needs nginx, and this module must load anywhere (schema
-- validation, unit specs).
local C_ngx = ffi.C
local get_request, errmsg, header_truncated
local header_buf, header_cap = nil, 0
local resp_buf, resp_cap = nil, 0
local var_value, var_len, var_lowcase, var_lowcase_cap
local log_in
local sd_buf, sd_value, sd_len, sd_type, sd_num, sd_flags, sd_stale
local get_string_buf, chunk_data, chunk_len
local FFI_AGAIN = -2
local SD_BUF_SIZE = 1024   -- most entries fit; a larger one nginx mallocs
local SD_STRING   = 4      -- LUA_TSTRING, the type of a stored string
local FFI_OK, FFI_DECLINED = 0, -5
-- set_resp_header has another entry point on macOS (resty.core.response).
local DIRECT_RESP_HEADERS = jit.os ~= "OSX"

local function load_ngx_ffi()
  get_request = require("resty.core.base").get_request
  require "resty.core.request"  -- ngx_http_lua_ffi_req_get_headers{,_count}, _req_set_header
  require "resty.core.response" -- ngx_http_lua_ffi_set_resp_header
  require "resty.core.var"      -- ngx_http_lua_ffi_var_get
  require "resty.core.shdict"   -- ngx_http_lua_ffi_shdict_get, _udata_to_zone, free
  require "resty.core.param"    -- ngx_http_lua_ffi_{get,copy}_body_filter_param_body
  get_string_buf = require("resty.core.base").get_string_buf
  chunk_data, chunk_len = ffi.new("unsigned char *[1]"), ffi.new("size_t[1]")
  errmsg = ffi.new("char *[1]")
  header_truncated = ffi.new("int[1]")
  var_value, var_len = ffi.new("char *[1]"), ffi.new("size_t[1]")
  var_lowcase_cap = 64 -- var_get lowercases the name into it
  var_lowcase = ffi.new("char[?]", var_lowcase_cap)
  log_in = ffi.new("ar_log_in")
  sd_buf = ffi.new("unsigned char[?]", SD_BUF_SIZE)
  sd_value, sd_len = ffi.new("unsigned char *[1]"), ffi.new("size_t[1]")
  sd_type, sd_num = ffi.new("int[1]"), ffi.new("double[1]")
  sd_flags, sd_stale = ffi.new("int[1]"), ffi.new("int[1]")
end


local function ngx_error(what, rc)
  local msg = errmsg[0] ~= nil and ffi_string(errmsg[0]) or ("code " .. tostring(rc))
  error("cannot " .. what .. ": " .. msg, 0)
end


-- Sets header `name` of list `which` (UPSTREAM: the request, else the
-- response) to the `len` bytes at `value`, a native pointer or a Lua
-- string; nginx copies them.
local function set_header(r, which, name, value, len)
  local rc
  if which == UPSTREAM then
    rc = C_ngx.ngx_http_lua_ffi_req_set_header(r, name, #name, value, len, nil, 0, 1, errmsg)
  elseif DIRECT_RESP_HEADERS then
    rc = C_ngx.ngx_http_lua_ffi_set_resp_header(r, name, #name, 0, value, len, nil, 0, 1, errmsg)
  else
    ngx.header[name] = type(value) == "string" and value or ffi_string(value, len)
    rc = FFI_OK
  end
  if rc ~= FFI_OK and rc ~= FFI_DECLINED then
    ngx_error("set header " .. name, rc)
  end
end


-- Sets the `count` account headers of list `which` on the upstream
-- request (UPSTREAM) or the response (RESPONSE): ar_header names the
-- header's rule (its name is in `names`, made once per config) and points
-- at the value in native memory, which nginx copies.
local function set_headers(handle, which, count, names)
  if count < 0 then
    error(native.last_error(count), 0)
  end
  if not get_request then
    load_ngx_ffi()
  end
  local r = get_request()
  for i = 0, count - 1 do
    local rule = C.ar_header(handle, which, i, str_out)
    if rule < 0 then
      error(native.last_error(rule), 0)
    end
    local value = str_out[0]
    set_header(r, which, names[rule], value.ptr, value.len)
  end
end


-- The request's header list, as nginx holds it: names lowercase, values
-- pointing into the request's memory, repeated headers repeated, read into
-- a per-worker buffer, so that no Lua table or string is made per request;
-- ar_access reads the values it needs and sees a repeated credential
-- header, which $http_* hides (nginx 1.22 gives the first line, later
-- versions join some with commas). Valid until the next call of this
-- worker: used at once, never across a yield.
local function request_headers(r)
  -- 0: no limit, so a repeat after 100 other headers is still seen
  -- (nginx's header buffers bound the list).
  local n = C_ngx.ngx_http_lua_ffi_req_get_headers_count(r, 0, header_truncated)
  if n < 0 then
    error("cannot read the request headers (" .. n .. ")", 0)
  end
  if n > header_cap then
    header_cap = math.max(64, 2 ^ math.ceil(math.log(n) / math.log(2)))
    header_buf = ffi.new("ngx_http_lua_ffi_table_elt_t[?]", header_cap)
  end
  if n > 0 and C_ngx.ngx_http_lua_ffi_req_get_headers(r, header_buf, n, 0) ~= 0 then
    error("cannot read the request headers", 0)
  end
  return header_buf, n
end


-- An nginx variable's value as pointer + length into the request's memory
-- (no Lua string), valid until the next call: nil, 0 when not found.
local function variable(r, name)
  if #name > var_lowcase_cap then
    var_lowcase_cap = #name
    var_lowcase = ffi.new("char[?]", var_lowcase_cap)
  end
  local rc = C_ngx.ngx_http_lua_ffi_var_get(r, name, #name, var_lowcase, 0, var_value, var_len, errmsg)
  if rc ~= FFI_OK then
    return nil, 0
  end
  return var_value[0], tonumber(var_len[0])
end


-- Shows the request body to the native capture: from memory, or at most
-- max_body_bytes read back from the temp file nginx spilled it to.
-- Only authenticated requests get here: an anonymous client cannot make the
-- gateway read its body early.
local function capture_request_body(log_plan, handle)
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  local size = tonumber(ngx.var.content_length)
  if not data then
    local path = ngx.req.get_body_file()
    if not path then
      return
    end
    local f, err = io.open(path, "rb")
    if not f then
      ngx.log(ngx.WARN, "[auth-router] cannot read spilled request body: ", err)
      return
    end
    data = f:read(log_plan.max_body_bytes) or ""
    size = size or f:seek("end")
    f:close()
  end
  local rc = C.ar_request_body(handle, data, #data, size or #data)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
end


-- Clears the spoofable headers ar_access found (its `spoofed` mask: bit
-- j-1 for plan.strip[j], bit 31 for any from the 32nd on). Only a client
-- trying to spoof sends one: clearing a header nginx does not hold costs as
-- much as setting one, so the others are left alone.
local function strip_spoofed(strip, spoofed)
  local clear = ngx.req.clear_header
  for j = 1, #strip do
    if band(spoofed, j <= 31 and lshift(1, j - 1) or SPOOFED_REST) ~= 0 then
      clear(strip[j])
    end
  end
end


-- access, first part (never yields): applies recorded purges, hands the
-- request to ar_access, and strips the spoofable headers it found (it
-- reads the others' values as if those were gone). Returns the handle,
-- the step and what ar_access answered besides (copied out at once:
-- access_out is reused by the next request).
local function begin(plugin, plan)
  if not get_request then
    load_ngx_ffi()
  end
  local req = ngx.req
  if plan.dict then
    flow.apply_purges(plugin, plan, plan.dict)
  end
  local r = get_request()
  local headers, n = request_headers(r)
  local method = req.get_method()
  -- the request URI goes to the log record only; $uri to the router only.
  -- Pointers into nginx's memory, read by ar_access at once.
  local uri, uri_len = nil, 0
  if plan.log then
    uri, uri_len = variable(r, "request_uri")
  end
  local path, path_len = nil, 0
  if plan.routed then
    path, path_len = variable(r, "uri")
  end
  local rc = C.ar_access(plan.ptr, method, #method, uri, uri_len, path, path_len,
                         floor(req.start_time() * 1000), ngx.now(), headers, n, access_out)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
  local out = access_out
  if out.spoofed ~= 0 then
    strip_spoofed(plan.strip, out.spoofed)
  end
  local route_path = out.path.ptr ~= nil and ffi_string(out.path.ptr, out.path.len) or nil
  return out.handle, rc, out.upstream, out.route, route_path, out.repeated
end


-- The shared-dict step of an L1 miss through the C ABI (no mlua call, no
-- exchange view, no Lua string): the pending key in the slot, the dict's
-- value under it copied by the C function resty.core's dict:get calls
-- (into a per-worker buffer, or a copy nginx mallocs for a larger one),
-- L1 filled from a fresh entry. Returns the key (a Lua string, made only
-- for a miss) and the step (MISS: go on to fetch).
local function shared_step(plan, handle)
  local rc = C.ar_pending_key(handle, str_out)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
  local key = str_out[0]
  local zone = plan.dict_zone
  if not zone then
    zone = C_ngx.ngx_http_lua_ffi_shdict_udata_to_zone(plan.dict[1])
    plan.dict_zone = zone
  end
  sd_value[0], sd_len[0] = sd_buf, SD_BUF_SIZE
  rc = C_ngx.ngx_http_lua_ffi_shdict_get(zone, key.ptr, key.len, sd_type, sd_value, sd_len,
                                         sd_num, sd_flags, 0, sd_stale, errmsg)
  if rc ~= 0 then
    ngx_error("read the shared dict", rc)
  end
  local step = MISS -- absent, or not ours
  if sd_type[0] == SD_STRING then
    local value = sd_value[0]
    step = C.ar_load_shared(handle, value, sd_len[0], ngx.now())
    if value ~= sd_buf then
      C_ngx.free(value)
    end
    if step < 0 then
      error(native.last_error(step), 0)
    end
  end
  if step == MISS then
    -- the key again: str_out is shared by every call of this worker, and
    -- a miss is about to cost an auth call anyway
    C.ar_pending_key(handle, str_out)
    return ffi_string(str_out[0].ptr, str_out[0].len), MISS
  end
  return nil, step
end


-- access, second part: the auth call on a miss (yields), then the
-- verdict applied. Returns status, body, headers to end the request, or
-- nil, route, path to let it through.
local function decide(plan, handle, step, upstream, route_index, route_path, repeated)
  if step == MISS then
    local key
    if plan.dict then
      key, step = shared_step(plan, handle)
    end
    if step == MISS then
      step = STEP_CODES[flow.fetch(plan, native.exchange(handle), key)]
    end
    if step == ALLOW then
      upstream = C.ar_header_count(handle, UPSTREAM)
      if plan.routed then
        local path = ngx.var.uri -- read again: the auth call yielded
        route_index = C.ar_route(handle, path, #path, str_out)
        if route_index >= 0 and str_out[0].ptr ~= nil then
          route_path = ffi_string(str_out[0].ptr, str_out[0].len)
        elseif route_index < 0 and route_index ~= NO_ROUTE then
          error(native.last_error(route_index), 0)
        end
      end
    end
  end

  if step == ALLOW then
    local req = ngx.req
    if plan.log and plan.log.request_body then
      capture_request_body(plan.log, handle)
    end
    set_headers(handle, UPSTREAM, upstream, plan.upstream_names)
    for i = 1, #plan.hide do
      req.clear_header(plan.hide[i])
    end
    local route = route_index >= 0 and plan.routes[route_index] or nil
    if route and plan.route_header then
      req.set_header(plan.route_header, route.name)
    end
    return nil, route, route_path
  end
  if step == NONE then
    return 401, { message = NO_CREDENTIAL_MESSAGE }
  end
  if step == REPEATED then
    if repeated < plan.ncred then
      return 401, { message = DUPLICATE_CREDENTIAL_MESSAGE }
    end
    return 400, { message = DUPLICATE_HEADER_MESSAGE .. tostring(plan.names[repeated + 1]) }
  end
  if step == DENY then
    local status, www_authenticate = native.exchange(handle):denial()
    return status, { message = DENY_MESSAGES[status] },
           www_authenticate and { ["WWW-Authenticate"] = www_authenticate } or nil
  end
  if step == FAILED then
    return plan.failure_status, { message = UNAVAILABLE_MESSAGE }
  end
  error("unexpected access step: " .. tostring(step))
end


-- The response header values of an allowed request as Lua strings, for a
-- plan that keeps no slot past access: the value alone when the config has
-- one response header rule, else a table by rule index (0-based); nil
-- when the account has none.
local function response_values(plan, handle)
  local count = C.ar_header_count(handle, RESPONSE)
  if count <= 0 then
    if count < 0 then
      error(native.last_error(count), 0)
    end
    return nil
  end
  local values = plan.nresponse > 1 and {} or nil
  for i = 0, count - 1 do
    local rule = C.ar_header(handle, RESPONSE, i, str_out)
    if rule < 0 then
      error(native.last_error(rule), 0)
    end
    local value = ffi_string(str_out[0].ptr, str_out[0].len)
    if not values then
      return value
    end
    values[rule] = value
  end
  return values
end


-- Fills the caller's identity table for an allowed request (see access).
local function fill_identity(plan, handle, identity)
  local rc = C.ar_identity(handle, str_out)
  if rc < 0 then
    error(native.last_error(rc), 0)
  end
  local id = str_out[0].ptr ~= nil and ffi_string(str_out[0].ptr, str_out[0].len) or nil
  identity.id, identity.account_id, identity.cache = id, id, CACHE_STATUS[rc]
  if plan.consumer then
    identity.consumer_value = native.exchange(handle):consumer_value()
  end
end


-- access, last part for a plan that logs nothing: nothing is left for the
-- later phases but the response header values, so the slot is freed now
-- and the request needs no log phase (nor body_filter). Returns the state
-- to keep.
local function close_unlogged(plan, handle, allowed, identity)
  local ok, state = true, nil
  if allowed then
    ok, state = pcall(response_values, plan, handle)
    if ok and identity then
      local err
      ok, err = pcall(fill_identity, plan, handle, identity)
      if not ok then
        state = err
      end
    end
  end
  local rc = C.ar_finish(handle)
  if rc < 0 then
    return false, native.last_error(rc)
  end
  return ok, state
end


--- access(plugin [, identity]) -> state, status, body, headers
-- Authenticates (and routes) the request. `state` is what the later
-- phases need: hand it to header_filter, body_filter, log and refuse. With
-- logging on it names the request's native slot until log() frees it;
-- with logging off no slot outlives access (the state is nil or the
-- account's response header values, as Lua strings) and the request needs
-- neither a body_filter nor a log phase. To end the request: `status`, a
-- JSON `body` and extra response `headers`. To let it through: `status`
-- is nil and the third and fourth values are the route decision: the
-- matched route (a table shared by every request of the route: read it,
-- never change it; `port` is nil when `host` names a Kong upstream), or
-- nil; and the upstream path when the route strips its prefix, or nil.
-- `identity` (optional table): filled for an allowed request with `id`
-- and `account_id` (the account id), `cache` (hit, miss, stale) and,
-- with `consumer.by` set, `consumer_value` (the account's value at
-- `consumer.pointer`).
-- Context: access.
function _M.access(plugin, identity)
  local ok, plan = pcall(plan_for, plugin)
  local handle, step, upstream, route_index, route_path, repeated
  if ok then
    ok, handle, step, upstream, route_index, route_path, repeated = pcall(begin, plugin, plan)
  end
  if not ok then
    internal_error("access", handle or plan)
    return nil, INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE }
  end
  local status, a, b
  ok, status, a, b = pcall(decide, plan, handle, step, upstream, route_index, route_path, repeated)
  if not ok then
    internal_error("access", status)
    if plan.log then
      -- the slot stays with the request and is freed by log()
      return handle, INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE }
    end
    C.ar_finish(handle)
    return nil, INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE }
  end
  if plan.log then
    if identity and not status then
      local err
      ok, err = pcall(fill_identity, plan, handle, identity)
      if not ok then
        internal_error("access", err)
        return handle, INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE }
      end
    end
    return handle, status, a, b
  end
  local state
  ok, state = close_unlogged(plan, handle, not status, identity)
  if not ok then
    internal_error("access", state)
    return nil, INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE }
  end
  return state, status, a, b
end


--- refuse(state) -> state: the adapter ends an authenticated request with
-- its own error (a route that cannot be applied, a path that cannot be
-- rewritten): that answer is the gateway's, so it gets no account response
-- headers. Keep the state it returns in place of the old one.
-- Context: access, after access() let the request through.
function _M.refuse(state)
  if type(state) == "number" then
    C.ar_refuse(state)
    return state
  end
  return nil
end


-- Sets response header `name` to a Lua string (no native call).
local function set_response_value(name, value)
  if not get_request then
    load_ngx_ffi()
  end
  set_header(get_request(), RESPONSE, name, value, #value)
end


-- The response header values access() kept (logging off): one value, or
-- a table by rule index.
local function set_response_values(plan, values)
  local names = plan.response_names
  if type(values) == "string" then
    return set_response_value(names[0], values)
  end
  for rule = 0, plan.nresponse - 1 do
    local value = values[rule]
    if value then
      set_response_value(names[rule], value)
    end
  end
end


--- header_filter(plugin, state): adds the account's response headers (with
-- logging on, also records the status for the log). Never fails the
-- response.
function _M.header_filter(plugin, state)
  if not state then
    return
  end
  local plan = plans[plugin]
  if not plan then
    return internal_error("header_filter", "no plan for this plugin")
  end
  local ok, err
  if type(state) == "number" then
    local count = C.ar_response(state, ngx.status)
    if count == 0 then
      return
    end
    ok, err = pcall(set_headers, state, RESPONSE, count, plan.response_names)
  else
    ok, err = pcall(set_response_values, plan, state)
  end
  if not ok then
    internal_error("header_filter", err)
  end
end


--- body_filter(plugin, state): shows each chunk to the native side when
-- the response body is logged (no native call otherwise); the chunk itself
-- passes through untouched. Only needed when response bodies are logged.
function _M.body_filter(plugin, state)
  if type(state) ~= "number" then
    return
  end
  local plan = plans[plugin]
  if not (plan and plan.log and plan.log.response_body) then
    return
  end
  if not get_request then
    load_ngx_ffi()
  end
  -- ngx.arg[1] without its Lua string: nginx's buffer when the chunk is
  -- one, else a copy into resty.core's per-worker string buffer (as
  -- ngx.arg[1] makes before its string)
  local r = get_request()
  chunk_data[0] = nil
  local data
  local rc = C_ngx.ngx_http_lua_ffi_get_body_filter_param_body(r, chunk_data, chunk_len)
  local len = chunk_len[0]
  if rc == FFI_AGAIN then
    data = get_string_buf(len)
    if C_ngx.ngx_http_lua_ffi_copy_body_filter_param_body(r, data) ~= FFI_OK then
      return internal_error("body_filter", "cannot read the response chunk")
    end
  elseif len > 0 then
    data = chunk_data[0]
  end
  rc = C.ar_body_chunk(state, data, len)
  if rc < 0 then
    internal_error("body_filter", native.last_error(rc))
  end
end


-- The response header table (ngx.resp.get_headers: name -> value, or a
-- list of values) as a per-worker array in nginx's header layout, pointing
-- into the table's strings: `headers` must stay referenced until ar_log
-- returns. Returns the array and its length.
local function response_headers(headers)
  local n = 0
  for name, value in pairs(headers) do
    local many = type(value) == "table"
    local count = many and #value or 1
    if n + count > resp_cap then
      local cap = math.max(32, resp_cap * 2, n + count)
      local buf = ffi.new("ngx_http_lua_ffi_table_elt_t[?]", cap)
      if n > 0 then
        ffi.copy(buf, resp_buf, n * ffi.sizeof("ngx_http_lua_ffi_table_elt_t"))
      end
      resp_buf, resp_cap = buf, cap
    end
    for j = 1, count do
      local v = many and value[j] or value
      local elt = resp_buf[n]
      elt.key.data, elt.key.len = name, #name
      elt.value.data, elt.value.len = v, #v
      n = n + 1
    end
  end
  return resp_buf, n
end


-- Points field `f` of log_in at nginx variable `name` (NULL when unset).
local function log_var(r, f, name)
  local field = log_in[f]
  field.ptr, field.len = variable(r, name)
end


-- The record's inputs, read where nginx holds them (variables and the
-- request's header list: no Lua string each), then ar_log.
local function finish_logged(handle, plan, destination)
  local r = get_request()
  local input = log_in
  input.now_ms = ngx.now() * 1000
  log_var(r, "client_ip", "remote_addr")
  log_var(r, "request_id", plan.log.request_id_var)
  log_var(r, "request_length", "request_length")
  log_var(r, "bytes_sent", "bytes_sent")
  log_var(r, "upstream_addr", "upstream_addr")
  log_var(r, "upstream_status", "upstream_status")
  log_var(r, "upstream_response_time", "upstream_response_time")
  -- where the host sent a proxied request: the record uses it only when no
  -- route matched
  local target, upstream
  if destination and input.upstream_addr.len > 0 then
    target, upstream = destination()
  end
  input.default_target.ptr, input.default_target.len = target, target and #target or 0
  input.default_upstream.ptr, input.default_upstream.len = upstream, upstream and #upstream or 0
  input.request_headers, input.request_header_count = request_headers(r)
  local resp = ngx.resp.get_headers(0, true)
  input.response_headers, input.response_header_count = response_headers(resp)
  local rc = C.ar_log(handle, input)
  input.default_target.ptr, input.default_upstream.ptr = nil, nil
  input.response_headers = nil
  -- returned, so that the strings log_in pointed at stay referenced (and
  -- out of the collector's reach) until ar_log is done with them
  return rc, resp, target, upstream
end


--- log(plugin, state, destination): writes the log record and frees the
-- request's slot; the state is dead afterwards. Only needed when the
-- plugin logs (does nothing otherwise). `destination` (optional) answers
-- where the host sent a proxied request that no route matched: a
-- "host:port" target, or nil and a Kong Upstream name.
function _M.log(plugin, state, destination)
  if type(state) ~= "number" then
    return
  end
  local handle = state
  local plan = plugin and plans[plugin]
  if plan and plan.log then
    if not get_request then
      load_ngx_ffi()
    end
    local ok, rc = pcall(finish_logged, handle, plan, destination)
    if ok and rc >= 0 then
      sink.queued(plugin, plan.sink, rc == 1) -- 1: the record filled its batch
      return
    end
    internal_error("log", ok and native.last_error(rc) or rc)
    C.ar_release(handle) -- ar_log frees the slot unless it failed early
    return
  end
  local rc = C.ar_finish(handle)
  if rc < 0 then
    internal_error("log", native.last_error(rc))
  end
end


--- release(state): frees a request's native slot without a log record
-- (the adapter saw the request come back through access after an internal
-- redirect; the new exchange is the one logged). A stale handle is ignored.
function _M.release(state)
  if type(state) == "number" then
    C.ar_finish(state)
  end
end




--- purge(plugin, values) -> true | nil, err
-- Forgets one credential (`values`: the credential header values in config
-- order, then forwarded ones; a string is the first credential header's
-- value), or everything when `values` is nil, in every worker of the node.
-- Context: any where ngx.shared works (not init).
function _M.purge(plugin, values)
  local plan = plan_for(plugin)
  local key = "*"
  if values ~= nil then
    if type(values) == "string" then
      values = { values }
    end
    key = plugin:cache_key(unpack(values, 1, #plan.names))
    if not key then
      return nil, "no credential value given"
    end
  end
  return flow.purge(plugin, plan.dict, key, plan.cluster)
end


--- This worker's native counters.
function _M.stats()
  return native.stats()
end


--- init_worker() -> true | nil, err: lets this worker run the timer that
-- applies the fleet's purges, and starts it if a config compiled before
-- (init) has a cluster tier; without one no timer runs. Context: init_worker.
function _M.init_worker()
  poll.allowed = true
  for _, plan in pairs(plans) do
    if plan.cluster then
      local ok, err = pcall(start_poll)
      if not ok then
        return nil, err
      end
      break
    end
  end
  return true
end


--- plans() -> iterator of plugin, plan: every compiled config this worker
-- holds (for the metrics: route counts, dict names).
function _M.plans()
  return pairs(plans)
end


return _M
