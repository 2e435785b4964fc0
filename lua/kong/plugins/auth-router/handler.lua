-- Kong adapter for auth-router: thin, in the style of Kong's key-auth handler.
-- Each phase method hands the request to the host-agnostic core
-- (lua/auth_router) with kong.ctx.plugin as the per-request table, and only
-- turns the core's answer into a Kong action. kong.* is used in this
-- directory and nowhere else.

-- luacheck: globals kong, no unused args

local core          = require "auth_router"
local plugin_config = require "kong.plugins.auth-router.plugin_config"


local kong       = kong
local pcall      = pcall
local plugin_for = plugin_config.plugin_for


local INTERNAL_ERROR_STATUS  = 500
local INTERNAL_ERROR_MESSAGE = "An unexpected error occurred"
local ROUTE_ERROR_STATUS     = 503
local ROUTE_ERROR_MESSAGE    = "No upstream available for this route"
local BAD_PATH_MESSAGE       = "Invalid request path"


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


-- Sends the request where the matched route says. A decision that cannot be
-- applied (an unknown Upstream) is a 5xx with the reason logged, never a
-- silent fallback to the configured service.
local function apply_route(route)
  local ok, err
  if route.port then
    ok, err = kong.service.set_target(route.host, route.port)
    if ok then
      local default_port = route.port == 80 or route.port == 443
      kong.service.request.set_header("Host", default_port and route.host
                                              or route.host .. ":" .. route.port)
    end
  else
    ok, err = kong.service.set_upstream(route.host)
  end
  if not ok then
    kong.log.err("route '", route.name, "' cannot be applied: ", err)
    return kong.response.exit(ROUTE_ERROR_STATUS, { message = ROUTE_ERROR_MESSAGE })
  end
  if route.path then
    -- a decoded client path may hold bytes a request line cannot carry
    ok, err = pcall(kong.service.request.set_path, route.path)
    if not ok then
      kong.log.info("route '", route.name, "' cannot rewrite the path: ", err)
      return kong.response.exit(400, { message = BAD_PATH_MESSAGE })
    end
  end
end


function AuthRouterHandler:access(conf)
  local plugin, err = plugin_for(conf)
  if not plugin then
    kong.log.err(err)
    return kong.response.exit(INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE })
  end

  local status, body, headers = core.access(plugin, kong.ctx.plugin)
  if status then
    return kong.response.exit(status, body, headers)
  end

  -- Authenticated: tell Kong who it is, so rate-limiting (limit_by =
  -- credential) and loggers see the identity, and later plugins can read
  -- the account id and cache status.
  local account_id, cache_status = core.identity(kong.ctx.plugin)
  kong.client.authenticate(nil, { id = account_id })
  local route = core.route(kong.ctx.plugin)
  kong.ctx.shared.auth_router = {
    account_id = account_id,
    cache      = cache_status,
    route      = route and route.name,
  }
  if route then
    return apply_route(route)
  end
end


function AuthRouterHandler:header_filter(_)
  core.header_filter(kong.ctx.plugin)
end


function AuthRouterHandler:body_filter(_)
  core.body_filter(kong.ctx.plugin)
end


function AuthRouterHandler:log(_)
  core.log(kong.ctx.plugin)
end


return AuthRouterHandler
