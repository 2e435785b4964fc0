-- Kong adapter for auth-router: thin, in the style of Kong's key-auth handler.
-- Each phase method hands the request to the host-agnostic core
-- (lua/auth_router) and only turns the core's answer into a Kong action.
-- kong.* is used in this directory and nowhere else.
--
-- Per request, the core's state (a native slot handle when the config logs,
-- else nil or the response header values) is one ngx.ctx field; the only
-- table this handler makes is kong.ctx.shared.auth_router, which is also
-- the credential handed to kong.client.authenticate.

-- luacheck: globals kong, no unused args

local core          = require "auth_router"
local plugin_config = require "kong.plugins.auth-router.plugin_config"
local metrics       = require "auth_router.metrics"
local hostname_type = require("kong.tools.ip").hostname_type
local HEADERS       = require("kong.constants").HEADERS


local kong       = kong
local ngx        = ngx
local pcall      = pcall
local ipairs     = ipairs
local setmetatable = setmetatable
local new_tab    = require "table.new"
local null       = ngx.null
local plugin_for = plugin_config.plugin_for


local INTERNAL_ERROR_STATUS  = 500
local INTERNAL_ERROR_MESSAGE = "An unexpected error occurred"
local ROUTE_ERROR_STATUS     = 503
local ROUTE_ERROR_MESSAGE    = "No upstream available for this route"
local BAD_PATH_MESSAGE       = "Invalid request path"
local NO_CONSUMER_MESSAGE    = "Forbidden"
-- ngx.ctx field holding the request's native handle (a number).
local HANDLE_KEY             = "auth_router_handle"


local AuthRouterHandler = {
  VERSION = "0.1.0",
  -- Kong's authentication band, in a slot no bundled plugin uses: below
  -- key-auth (1250) and ldap-auth (1200), above basic-auth (1100). So it runs
  -- after correlation-id (100001: the request id exists when we log it),
  -- session (1900) and cors (2000: preflights are answered before any auth
  -- call), and before ip-restriction (990), acl (950) and rate-limiting (910),
  -- which must see the identity this plugin sets (limit_by = credential).
  PRIORITY = 1150,
}


-- Kong decides once, from the Service's host, whether the balancer resolves a
-- name (balancer_data.type), and neither set_target nor set_upstream revisits
-- that decision (Kong/kong#12201): a name target or an Upstream reached from a
-- Service whose host is an IP fails with "no host allowed". We record the type
-- of the host we set, as Kong's runloop does for a Service's host. This is the
-- one place the plugin touches Kong internals (ngx.ctx.balancer_data); it is
-- pinned by spec/kong/03-routing_spec.lua against real Kong.
local function set_balancer_host_type(host)
  local balancer_data = ngx.ctx.balancer_data
  if balancer_data then
    balancer_data.type = hostname_type(host)
  end
end


-- Where Kong sent a proxied request that no route matched, for its log
-- record: the host and port its balancer used (the Service's, as resolved
-- for this request, or another plugin's set_target), or the name of the
-- Upstream that host names. Read from ngx.ctx.balancer_data, like the type
-- above (there is no PDK getter for the target); pinned by
-- spec/kong/02-access_spec.lua.
local function destination()
  local balancer_data = ngx.ctx.balancer_data
  if not balancer_data then
    return nil
  end
  local host, port = balancer_data.host, balancer_data.port
  if balancer_data.upstream then
    return nil, host
  end
  if not (host and port) then
    return nil
  end
  if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then
    host = "[" .. host .. "]"
  end
  return host .. ":" .. port
end


-- The gateway answers an allowed request with its own error: no account
-- response headers on it.
local function refuse()
  local ctx = ngx.ctx
  ctx[HANDLE_KEY] = core.refuse(ctx[HANDLE_KEY])
end


-- Sends the request where the matched route says. A decision that cannot be
-- applied (an unknown Upstream) is a 5xx with the reason logged, never a
-- silent fallback to the configured service. kong.service.set_target returns
-- nothing and raises on bad input (kong/pdk/service.lua); set_upstream
-- returns true or nil, err.
local function apply_route(route, path)
  local ok, err
  if route.port then
    ok, err = pcall(kong.service.set_target, route.host, route.port)
    if ok then
      -- set_target sent Host: <host>; a client reaching host:port directly
      -- would send the port too (RFC 9110 7.2), unless it is the default.
      local default_port = route.port == 80 or route.port == 443
      kong.service.request.set_header("Host", default_port and route.host
                                              or route.host .. ":" .. route.port)
    end
  else
    ok, err = kong.service.set_upstream(route.host)
  end
  if not ok then
    kong.log.err("route '", route.name, "' cannot be applied: ", err)
    refuse()
    return kong.response.exit(ROUTE_ERROR_STATUS, { message = ROUTE_ERROR_MESSAGE })
  end
  set_balancer_host_type(route.host)
  if path then
    -- a decoded client path may hold bytes a request line cannot carry
    ok, err = pcall(kong.service.request.set_path, path)
    if not ok then
      kong.log.info("route '", route.name, "' cannot rewrite the path: ", err)
      refuse()
      return kong.response.exit(400, { message = BAD_PATH_MESSAGE })
    end
  end
end


local function select_consumer(by, value)
  local consumers = kong.db.consumers
  if by == "username" then
    return consumers:select_by_username(value)
  end
  return consumers:select_by_custom_id(value)
end


-- The consumer-identifying headers upstream, as Kong's key-auth sets them
-- (kong/plugins/key-auth/handler.lua): each is set or cleared, so a client
-- cannot supply them.
local function set_consumer_headers(consumer, anonymous)
  local request = kong.service.request
  local function set(name, value)
    if value == nil or value == null then
      request.clear_header(name)
    else
      request.set_header(name, value)
    end
  end
  set(HEADERS.CONSUMER_ID, consumer.id)
  set(HEADERS.CONSUMER_CUSTOM_ID, consumer.custom_id)
  set(HEADERS.CONSUMER_USERNAME, consumer.username)
  set(HEADERS.ANONYMOUS, anonymous or nil)
end


-- The Kong consumer for an allowed account (consumer.by set), through Kong's
-- cache: a match by username or custom_id is cached for auth.ttl_s (found or
-- not), so a consumer change shows within that time with a database, and at
-- once in DB-less mode, where a new config empties the cache. With no match,
-- the `anonymous` consumer (id or username, as key-auth's `anonymous`).
-- `settings`: the config's fields (plugin_config.plugin_for).
-- Returns consumer | nil (deny) | nil, err.
local function consumer_for(settings, value)
  local mapping = settings.consumer
  local consumer, err
  if value then
    local key = "auth-router:consumer:" .. mapping.by .. ":" .. value
    local ttl = settings.auth.ttl_s
    consumer, err = kong.cache:get(key, { ttl = ttl, neg_ttl = ttl }, select_consumer,
                                   mapping.by, value)
    if err then
      return nil, "cannot load the consumer with " .. mapping.by .. " '" .. value .. "': " .. err
    end
  end
  if consumer then
    set_consumer_headers(consumer, false)
    return consumer
  end
  local anonymous = mapping.anonymous
  if anonymous == null or anonymous == nil then
    return nil
  end
  consumer, err = kong.cache:get(kong.db.consumers:cache_key(anonymous), nil,
                                 kong.client.load_consumer, anonymous, true)
  if err then
    return nil, "cannot load the anonymous consumer '" .. anonymous .. "': " .. err
  end
  if not consumer then
    return nil, "anonymous consumer '" .. anonymous .. "' is configured but does not exist"
  end
  set_consumer_headers(consumer, true)
  return consumer
end


-- Starts this worker's metrics flush timer: every second it adds the
-- worker's native counters to the shared dict, for GET /auth-router/metrics.
function AuthRouterHandler:init_worker()
  local ok, err = metrics.start()
  if not ok then
    kong.log.err(err)
  end
  ok, err = core.init_worker()
  if not ok then
    kong.log.err(err)
  end
end


function AuthRouterHandler:access(conf)
  -- `conf` keeps only Kong's own fields once compiled: read ours from `settings`
  local plugin, settings = plugin_for(conf)
  if not plugin then
    kong.log.err(settings)
    return kong.response.exit(INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE })
  end

  -- Authenticated: tell Kong who it is, so rate-limiting (limit_by =
  -- credential) and loggers see the identity, and later plugins can read
  -- the account id and cache status. The table is both: Kong reads the
  -- credential's `id` (and nothing else we set); access fills it.
  local shared = new_tab(0, 5) -- id, account_id, cache, route (+ consumer_value)
  local state, status, a, b = core.access(plugin, shared)
  ngx.ctx[HANDLE_KEY] = state
  if status then
    return kong.response.exit(status, a, b)
  end
  local route, path = a, b
  local consumer_value = shared.consumer_value
  shared.consumer_value = nil
  shared.route = route and route.name
  kong.ctx.shared.auth_router = shared
  local mapping = settings.consumer
  if mapping and mapping.by ~= null and mapping.by ~= nil then
    local consumer, cerr = consumer_for(settings, consumer_value)
    if cerr then
      kong.log.err(cerr)
      refuse()
      return kong.response.exit(INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE })
    end
    if not consumer then
      refuse()
      return kong.response.exit(403, { message = NO_CONSUMER_MESSAGE })
    end
    kong.client.authenticate(consumer, shared)
  else
    kong.client.authenticate(nil, shared)
  end
  if route then
    return apply_route(route, path)
  end
end


-- header_filter, body_filter and log are offered to Kong only when a
-- config in force needs them (see configure): Kong runs a plugin's handler
-- for a phase on every request that collects the plugin, at a cost of its
-- own (plugin context, namespaced log, instrumentation), and it asks the
-- handler table for the phase on each request, so a phase no config needs
-- costs nothing. A config that does not log keeps no native state past
-- access, so it needs no log phase.
local later = {
  header_filter = function(_, conf)
    core.header_filter(plugin_for(conf), ngx.ctx[HANDLE_KEY])
  end,
  body_filter = function(_, conf)
    core.body_filter(plugin_for(conf), ngx.ctx[HANDLE_KEY])
  end,
  log = function(_, conf)
    core.log(plugin_for(conf), ngx.ctx[HANDLE_KEY], destination)
  end,
}
-- Until configure has run: every phase.
local offered = { header_filter = true, body_filter = true, log = true }

setmetatable(AuthRouterHandler, {
  __index = function(_, phase)
    if offered[phase] then
      return later[phase]
    end
  end,
})


-- Kong calls configure on every worker with all of this plugin's configs
-- (nil when there are none) whenever they change, before requests use
-- them. It compiles each one now rather than on a request, and works out
-- which later phases they need: header_filter for response headers or the
-- status a log record carries, body_filter for logged response bodies, log
-- for logging. A config that does not compile keeps all three (access
-- answers 500 for it).
function AuthRouterHandler:configure(configs)
  local headers, bodies, logs = false, false, false
  for _, conf in ipairs(configs or {}) do
    local plugin = plugin_for(conf)
    local c = plugin and plugin:config()
    if not c then
      headers, bodies, logs = true, true, true
    else
      local logged = c.log.enabled
      headers = headers or logged or #c.response_headers > 0
      bodies = bodies or (logged and c.log.response_body)
      logs = logs or logged
    end
  end
  offered.header_filter, offered.body_filter, offered.log = headers, bodies, logs
end


return AuthRouterHandler
