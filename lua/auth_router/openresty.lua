-- Plain OpenResty / nginx+lua adapter (design §4b). Thin: it loads the config,
-- calls the core in each phase and turns results into nginx actions.
--
--   init_by_lua_block { require("auth_router.openresty").init("/etc/auth-router/config.json") }
--   init_worker_by_lua_block   { require("auth_router.openresty").init_worker() } -- metrics()
--   access_by_lua_block        { require("auth_router.openresty").access() }
--   header_filter_by_lua_block { require("auth_router.openresty").header_filter() }
--   body_filter_by_lua_block   { require("auth_router.openresty").body_filter() } -- log.response_body
--   log_by_lua_block           { require("auth_router.openresty").log() }         -- log.enabled
--
-- header_filter is needed for response_headers only; body_filter when
-- response bodies are logged; log when the config logs. A handler that is
-- not needed may stay: it does nothing.

local core     = require "auth_router"
local metrics  = require "auth_router.metrics"
local cjson    = require "cjson.safe"
local balancer = require "ngx.balancer"

local ngx      = ngx
local type     = type
local pairs    = pairs
local ipairs   = ipairs
local pcall    = pcall
local tostring = tostring
local tonumber = tonumber
local error    = error
local encode   = cjson.encode
local ffi      = require "ffi"
local get_request = require("resty.core.base").get_request

local BAD_PATH_MESSAGE = "Invalid request path"
-- ngx.ctx fields (no table of our own per request): the core's state of the
-- request (a native slot handle when the config logs), and the matched
-- route for the balancer.
local HANDLE_KEY       = "auth_router"
local ROUTE_KEY        = "auth_router_route"
local TARGET_VAR       = "auth_router_target"

local _M = {
  VERSION = core.VERSION,
}

local plugin -- compiled in init, inherited by every worker
local logs   -- whether it logs (else access() keeps no native slot)
-- This worker's live requests' slot handles (logging configs) by nginx
-- request address (see access).
-- An entry whose log phase never ran is overwritten or freed by the next
-- request nginx allocates at the same address.
local slot_of = {}


-- The nginx request's address: get_request() answers a new cdata each
-- call, which is no use as a table key.
local function request_id()
  return tonumber(ffi.cast("uintptr_t", get_request()))
end


local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text = f:read("*a")
  f:close()
  return text
end


local function respond(status, body, headers)
  ngx.status = status
  if headers then
    for name, value in pairs(headers) do
      ngx.header[name] = value
    end
  end
  ngx.header["Content-Type"] = "application/json; charset=utf-8"
  ngx.print(encode(body))
  return ngx.exit(status)
end


--- init(config): compiles the config, a path to a JSON file or a table.
-- Context: init_by_lua*. Raises on an invalid config, so nginx refuses to start.
function _M.init(config)
  local conf = config
  if type(config) == "string" then
    local err
    conf, err = read_file(config)
    if not conf then
      error("auth-router: cannot read config file " .. config .. ": " .. err, 2)
    end
  elseif type(config) ~= "table" then
    error("auth-router: init() expects a config table or a JSON file path", 2)
  end
  local compiled, err = core.compile(conf)
  if not compiled then
    error(err, 2)
  end
  -- Kong Upstreams do not exist here: a route must name a host:port target.
  for i, route in ipairs(compiled:config().routes) do
    if type(route.upstream) == "string" then
      error("invalid auth-router config: routes[" .. i .. "].upstream: Kong upstreams are not "
            .. "available in plain OpenResty, use target (host:port)", 2)
    end
  end
  plugin = compiled
  logs = compiled:config().log.enabled
  return true
end


local function host_port(host, port)
  if host:find(":", 1, true) then
    return "[" .. host .. "]:" .. port
  end
  return host .. ":" .. port
end


-- No closure in access: creating one (or closing over a local) keeps
-- LuaJIT from compiling the phase.
local function set_target_var(value)
  ngx.var[TARGET_VAR] = value
end


--- Context: access_by_lua*.
function _M.access()
  if not plugin then
    ngx.log(ngx.ERR, "[auth-router] access() called before init()")
    return respond(500, { message = "An unexpected error occurred" })
  end
  -- An internal redirect (error_page, ngx.exec, try_files) drops ngx.ctx but
  -- keeps the nginx request: the request's native slot is also filed under
  -- it, so the final location's log() finds it, and a redirect that comes
  -- back through access() frees the earlier one.
  -- (A config that does not log keeps no slot past access.)
  local r
  if logs then
    r = request_id()
    local previous = slot_of[r]
    if previous then
      core.release(previous)
    end
  end
  local state, status, a, b = core.access(plugin)
  local ctx = ngx.ctx
  ctx[HANDLE_KEY] = state
  if r then
    slot_of[r] = state
  end
  if status then
    return respond(status, a, b)
  end
  local route, path = a, b
  if route then
    ctx[ROUTE_KEY] = route
    -- The variable form (proxy_pass http://$auth_router_target) reads this;
    -- the balancer form reads the route and may not declare the variable.
    pcall(set_target_var, host_port(route.host, route.port))
    if path then
      -- set_uri refuses control bytes that a client can send %-encoded
      -- (/x%0Ay): that is the client's error, not ours.
      local ok, err = pcall(ngx.req.set_uri, path)
      if not ok then
        ngx.log(ngx.INFO, "[auth-router] cannot rewrite path for route '", route.name, "': ", err)
        ctx[HANDLE_KEY] = core.refuse(state)
        return respond(400, { message = BAD_PATH_MESSAGE })
      end
    end
  end
end


--- Context: balancer_by_lua*. Sends the request to the matched route's
-- target, else to $auth_router_target. Targets must be IP addresses here
-- (no DNS in the balancer phase).
function _M.balancer()
  local route = ngx.ctx[ROUTE_KEY]
  local host, port
  if route then
    host, port = route.host, route.port
  else
    local default = ngx.var[TARGET_VAR]
    if not default then
      ngx.log(ngx.ERR, "[auth-router] no route matched and $", TARGET_VAR, " is not set")
      return ngx.exit(500)
    end
    host, port = default:match("^%[?(.-)%]?:(%d+)$")
    port = tonumber(port)
  end
  local ok, err = balancer.set_current_peer(host, port)
  if not ok then
    ngx.log(ngx.ERR, "[auth-router] cannot set upstream peer ", tostring(host), ":", tostring(port), ": ", err)
    return ngx.exit(500)
  end
end


--- Context: header_filter_by_lua*.
function _M.header_filter()
  core.header_filter(plugin, ngx.ctx[HANDLE_KEY])
end


--- Context: body_filter_by_lua*.
function _M.body_filter()
  core.body_filter(plugin, ngx.ctx[HANDLE_KEY])
end


-- Where a proxied request that no route matched went, for its log record:
-- $auth_router_target, the default that proxy_pass (variable form) or
-- balancer() (balancer form) used. nginx's own $proxy_host is not readable
-- from Lua. A location that does not set the variable logs no target.
local function destination()
  local target = ngx.var[TARGET_VAR]
  if target ~= "" then
    return target
  end
end


--- Context: log_by_lua*. Needed when the config logs.
function _M.log()
  if not logs then
    return
  end
  local r = request_id()
  -- nil after an internal redirect dropped ngx.ctx (see access)
  local handle = ngx.ctx[HANDLE_KEY] or slot_of[r]
  slot_of[r] = nil
  core.log(plugin, handle, destination)
end


--- purge([credential]) -> true | nil, err
-- Forgets one credential in every worker of this node, or everything when
-- called without argument. `credential` is the first credential header's
-- value (e.g. "Bearer abc"), or an array of the credential header values
-- then the forwarded header values, in config order.
-- Context: any phase where ngx.shared works, except init.
function _M.purge(credential)
  if not plugin then
    return nil, "auth-router is not initialized"
  end
  return core.purge(plugin, credential)
end


--- init_worker(): starts this worker's timers: the metrics flush, which
-- adds its counters to the shared dict every second for metrics(), and
-- the cluster tier's purge poll (cluster.poll_ms).
-- Context: init_worker_by_lua*. Raises when the timer cannot be created.
function _M.init_worker()
  local ok, err = metrics.start()
  if ok then
    ok, err = core.init_worker()
  end
  if not ok then
    error(err, 2)
  end
  return true
end


--- metrics(): answers the request with the node's metrics in the
-- Prometheus text format (Content-Type text/plain; version=0.0.4): every
-- worker's counters summed through the shared dict (auth.shared_dict);
-- without that dict, this worker's only (a `# ` line says so).
-- Context: content_by_lua*. Workers that ran init_worker() are counted.
function _M.metrics()
  return metrics.serve()
end


--- stats() -> this worker's native counters. Context: any.
function _M.stats()
  return core.stats()
end


--- The normalized config in force (defaults filled). Context: any after init.
function _M.config()
  return plugin and plugin:config()
end


return _M
