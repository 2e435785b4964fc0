-- GET /auth-router/metrics: the node's auth-router metrics in the Prometheus
-- text format, shared by the Admin API (api.lua) and the Status API
-- (status_api.lua). Every worker adds its counters to the shared dict named
-- by the plugins' `auth.shared_dict` each second (handler init_worker); the
-- worker answering adds its own first. In hybrid mode the Admin API runs on
-- the control plane, which proxies nothing: scrape each data plane's Status
-- API instead.

-- luacheck: globals kong

local metrics = require "auth_router.metrics"

local kong  = kong
local pcall = pcall

local PLUGIN_NAME = "auth-router"


local _M = {}


--- The `auth.shared_dict` of every enabled auth-router plugin, or nil, err.
local function dict_names()
  local names = {}
  for row, err in kong.db.plugins:each() do
    if err then
      return nil, err
    end
    if row.name == PLUGIN_NAME and row.enabled then
      local auth = row.config and row.config.auth
      names[#names + 1] = auth and auth.shared_dict or "auth_router"
    end
  end
  return names
end


function _M.GET()
  local names, err = dict_names()
  if not names then
    kong.log.err("cannot list plugins: ", err)
    return kong.response.exit(500, { message = "An unexpected error occurred" })
  end
  local ok, text = pcall(metrics.render, names)
  if not ok then
    kong.log.err("cannot render auth-router metrics: ", text)
    return kong.response.exit(500, { message = "An unexpected error occurred" })
  end
  return kong.response.exit(200, text, { ["Content-Type"] = metrics.CONTENT_TYPE })
end


return _M
