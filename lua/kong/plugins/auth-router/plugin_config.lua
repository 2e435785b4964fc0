-- The compiled plugin for a Kong plugin config. Shared by handler.lua and
-- api.lua.

local core   = require "auth_router"
local schema = require "kong.plugins.auth-router.schema"

local next         = next
local ipairs       = ipairs
local setmetatable = setmetatable


-- Names of the config fields the schema declares. Kong adds its own keys to
-- the config table it hands to a phase (route_id, service_id, consumer_id,
-- ordering, __key__, __seq__, __plugin_id, ...), which the native compiler
-- would reject as unknown fields.
local CONFIG_FIELDS = {}
for _, field in ipairs(schema.fields) do
  local name, def = next(field)
  if name == "config" then
    for i, f in ipairs(def.fields) do
      CONFIG_FIELDS[i] = next(f)
    end
  end
end


-- Kong's config table -> our part of it. Weak keys: Kong builds new config
-- tables when the configuration changes, and the old ones (with their
-- compiled state, cached by the core on the copy) go with the GC.
local own_config = setmetatable({}, { __mode = "k" })


local _M = {}


--- plugin_for(conf) -> plugin | nil, err
-- The compiled plugin for Kong's `conf`, compiled once per config table.
function _M.plugin_for(conf)
  local own = own_config[conf]
  if not own then
    own = {}
    for i = 1, #CONFIG_FIELDS do
      local name = CONFIG_FIELDS[i]
      own[name] = conf[name]
    end
    own_config[conf] = own
  end
  return core.plugin_for(own)
end


return _M
