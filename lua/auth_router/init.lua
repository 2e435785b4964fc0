-- auth-router core: drives each nginx phase with ngx.* and the native module.
-- Host-agnostic: the Kong handler and the plain OpenResty adapter both call
-- these functions and turn their results into host actions. No kong.* here.
--
-- Rust decides and serializes; Lua does everything that can yield. Every
-- native call is protected: a native error (or caught panic) is userdata, so
-- it is converted with tostring before it is logged, and it never reaches the
-- client.

local native = require "auth_router.native"

local ngx      = ngx
local pcall    = pcall
local tostring = tostring
local concat   = table.concat
local log      = ngx.log
local ERR      = ngx.ERR
local now      = ngx.now

local INTERNAL_ERROR_STATUS  = 500
local INTERNAL_ERROR_MESSAGE = "An unexpected error occurred"

local _M = {
  VERSION = native.version(),
}

-- Compiled configs, keyed by the config table itself. Kong hands out a new
-- table when a plugin's config changes, so a change compiles once per worker
-- and the old entry goes with the garbage collector.
local compiled = setmetatable({}, { __mode = "k" })


local function internal_error(phase, err)
  native.internal_error()
  log(ERR, "[auth-router] internal error in ", phase, ": ", tostring(err))
end


--- Validates a config table (or JSON text).
-- @return the normalized config, or nil and a message naming every bad field
function _M.validate(conf)
  local ok, normalized, errs = pcall(native.validate, conf)
  if not ok then
    return nil, "cannot validate config: " .. tostring(normalized)
  end
  if not normalized then
    return nil, concat(errs, "; ")
  end
  return normalized
end


--- Compiles a config table (or JSON text) into the native plugin state.
-- @return the compiled plugin, or nil and a message naming every bad field
function _M.compile(conf)
  local ok, plugin, errs = pcall(native.compile, conf)
  if not ok then
    return nil, "cannot compile config: " .. tostring(plugin)
  end
  if not plugin then
    return nil, "invalid auth-router config: " .. concat(errs, "; ")
  end
  return plugin
end


--- The compiled plugin for a config table, compiling it on first use only.
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
  local ok, err = pcall(exchange.finish, exchange, now() * 1000)
  if not ok then
    internal_error("log", err)
  end
end


--- This worker's native counters.
function _M.stats()
  return native.stats()
end


return _M
