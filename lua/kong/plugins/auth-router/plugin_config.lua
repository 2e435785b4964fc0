-- The compiled plugin for a Kong plugin config. Shared by handler.lua and
-- api.lua.

local core   = require "auth_router"
local schema = require "kong.plugins.auth-router.schema"

local next         = next
local type         = type
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
-- Kong's config table -> the vault-referenceable values it was compiled
-- with, once its compiled fields have left it (see plugin_for).
local compiled_secrets = setmetatable({}, { __mode = "k" })


-- Fields left in Kong's table once compiled: `cluster` holds the
-- vault-referenceable secrets, which Kong's rotation rewrites in place.
local KEEP_IN_KONG = { cluster = true }
-- Those secrets (schema.lua: referenceable = true).
local SECRETS = { "username", "password", "key_secret" }


local function copy_fields(from)
  local own = {}
  for i = 1, #CONFIG_FIELDS do
    local name = CONFIG_FIELDS[i]
    own[name] = from[name]
  end
  return own
end


local function secrets_of(cluster)
  local values = {}
  for i = 1, #SECRETS do
    values[i] = cluster[SECRETS[i]]
  end
  return values
end


-- Whether Kong rotated a secret of `cluster` since `values` were taken
-- (kong.vault.update writes the new value into the table it walks, which
-- is ours too: `own.cluster` is Kong's table).
local function rotated(cluster, values)
  for i = 1, #SECRETS do
    if cluster[SECRETS[i]] ~= values[i] then
      return true
    end
  end
  return false
end


local _M = {}


--- plugin_for(conf) -> plugin, settings | nil, err
-- The compiled plugin for Kong's `conf`, compiled once per config table, and
-- `settings`, our fields of it, which the handler reads from then on: once
-- compiled, the record and array fields (routes, auth, log, headers, ...)
-- leave Kong's table. Kong walks every collected plugin's config table on
-- every request (kong.vault.update, from kong/runloop/plugins_iterator.lua's
-- get_next_and_collect), pairs() into each nested table: a config with 20
-- routes cost ~5 us per request there, one with 1000 routes ~417 us.
-- `cluster` stays, and a secret Kong's vault rotation changed in it
-- compiles the config again (new Redis credentials, or keys from a new
-- key_secret).
function _M.plugin_for(conf)
  local own = own_config[conf]
  local secrets = compiled_secrets[conf]
  if not own then
    own = copy_fields(conf)
    own_config[conf] = own
  elseif secrets and type(own.cluster) == "table" and own.cluster.enabled == true
         and rotated(own.cluster, secrets) then
    own = copy_fields(own)   -- a new table: the core compiles it afresh
    own_config[conf] = own
    secrets = nil
  end
  local plugin, err = core.plugin_for(own)
  if not plugin then
    return nil, err
  end
  if not secrets then
    for i = 1, #CONFIG_FIELDS do
      local name = CONFIG_FIELDS[i]
      if not KEEP_IN_KONG[name] and type(conf[name]) == "table" then
        conf[name] = nil
      end
    end
    compiled_secrets[conf] = type(own.cluster) == "table" and secrets_of(own.cluster) or {}
  end
  return plugin, own
end


return _M
