-- Config: validates and compiles plugin configs through the native compiler,
-- which is the single source of truth for defaults and checks. Needs no nginx,
-- so Kong's schema validator and the unit specs can use it anywhere.

local native = require "auth_router.native"

local pcall        = pcall
local tostring     = tostring
local concat       = table.concat

local _M = {}

--- validate(conf) -> normalized | nil, err
-- `conf` is a config table or JSON text. Returns the normalized config (every
-- default filled in) or nil and one message naming every bad field.
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


--- compile(conf, secret) -> plugin | nil, err
-- The native plugin state for `conf`, its cache keys derived with `secret`
-- (the node's secret, at least 16 bytes). Compile once per config, never per
-- request.
function _M.compile(conf, secret)
  local ok, plugin, errs = pcall(native.compile, conf, secret)
  if not ok then
    return nil, "cannot compile config: " .. tostring(plugin)
  end
  if not plugin then
    return nil, "invalid auth-router config: " .. concat(errs, "; ")
  end
  return plugin
end


return _M
