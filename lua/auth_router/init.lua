-- auth-router core: drives each nginx phase with ngx.* and the native module.
-- Host-agnostic: the Kong handler and the plain OpenResty adapter both call
-- these functions and turn their results into host actions. No kong.* here.
--
-- Rust decides and serializes; Lua does everything that can yield. Every
-- native call is protected: a native error (or caught panic) is userdata, so
-- it is converted with tostring before it is logged, and it never reaches the
-- client.

local native = require "auth_router.native"
local config = require "auth_router.config"

-- Loadable without nginx (no ngx.* read at load time), so Kong's schema
-- validator and the unit specs can require this module anywhere.
local ngx      = ngx
local pcall    = pcall
local tostring = tostring

local INTERNAL_ERROR_STATUS  = 500
local INTERNAL_ERROR_MESSAGE = "An unexpected error occurred"

local _M = {
  VERSION    = native.version(),
  validate   = config.validate,
  compile    = config.compile,
  plugin_for = config.plugin_for,
}


local function internal_error(phase, err)
  native.internal_error()
  ngx.log(ngx.ERR, "[auth-router] internal error in ", phase, ": ", tostring(err))
end


--- access phase.
-- @param plugin the compiled plugin
-- @param ctx    a per-request table private to this plugin
-- @return nil to let the request through, or status, body, headers to end it
function _M.access(plugin, ctx)
  local var = ngx.var
  local ok, exchange = pcall(plugin.access, plugin, ngx.req.get_method(),
                             var.request_uri, ngx.req.start_time() * 1000)
  if not ok then
    internal_error("access", exchange)
    return INTERNAL_ERROR_STATUS, { message = INTERNAL_ERROR_MESSAGE }
  end
  ctx.exchange = exchange
end


--- header_filter phase: records the response status. Never fails the response.
function _M.header_filter(ctx)
  local exchange = ctx.exchange
  if not exchange then
    return
  end
  local ok, err = pcall(exchange.response, exchange, ngx.status)
  if not ok then
    internal_error("header_filter", err)
  end
end


--- body_filter phase: shows each chunk to the native side, which may copy it
-- (bounded); the chunk itself passes through untouched.
function _M.body_filter(ctx)
  local exchange = ctx.exchange
  if not exchange then
    return
  end
  local ok, err = pcall(exchange.body_chunk, exchange, ngx.arg[1])
  if not ok then
    internal_error("body_filter", err)
  end
end


--- log phase: closes the exchange.
function _M.log(ctx)
  local exchange = ctx.exchange
  if not exchange then
    return
  end
  ctx.exchange = nil
  local ok, err = pcall(exchange.finish, exchange, ngx.now() * 1000)
  if not ok then
    internal_error("log", err)
  end
end


--- This worker's native counters.
function _M.stats()
  return native.stats()
end


return _M
