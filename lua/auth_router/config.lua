-- Config: validates and compiles plugin configs through the native compiler,
-- which is the single source of truth for defaults and checks. Needs no nginx,
-- so Kong's schema validator and the unit specs can use it anywhere.

local native = require "auth_router.native"

local pcall        = pcall
local tostring     = tostring
local concat       = table.concat
local setmetatable = setmetatable

local _M = {}

-- Compiled configs, keyed by the config table itself. Kong hands out a new
-- table when a plugin's config changes, so a change compiles once per worker
-- and the old entry goes with the garbage collector.
local compiled = setmetatable({}, { __mode = "k" })


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


--- compile(conf) -> plugin | nil, err
-- The native plugin state for `conf`. Compile once per config, never per request.
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


--- plugin_for(conf) -> plugin | nil, err
-- Like compile, but remembers the result for this config table.
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


return _M
