-- Admin API: purge the auth cache, read the metrics.
--
--   GET /auth-router/metrics                           the node's metrics,
--        Prometheus text format (metrics_api.lua)
--
--   DELETE /auth-router/cache                          every entry
--   DELETE /auth-router/cache  {"credential": "..."}   one credential (the
--        first credential header's value, e.g. "Bearer abc"; in the body so
--        it never lands in an access log)
--
-- Purges the L1 caches of every worker of this node (workers apply purges
-- recorded in the shared dict on their next request) and the shared dict.
-- With `cluster` on, the purge also deletes the Redis copy and goes into the
-- fleet's purge log, which every node applies within cluster.poll_ms. In
-- hybrid mode the Admin API runs on the control plane, whose dict the data
-- planes do not share: without `cluster` (or when the control plane cannot
-- reach that Redis) purge there does not reach them.

-- luacheck: globals kong

local core          = require "auth_router"
local plugin_config = require "kong.plugins.auth-router.plugin_config"
local metrics_api   = require "kong.plugins.auth-router.metrics_api"

local kong = kong
local type = type

local PLUGIN_NAME = "auth-router"


return {
  ["/auth-router/metrics"] = {
    GET = function()
      return metrics_api.GET()
    end,
  },

  ["/auth-router/cache"] = {
    DELETE = function(self)
      local credential = self.params.credential
      if credential ~= nil and (type(credential) ~= "string" or credential == "") then
        return kong.response.exit(400, { message = "credential must be a non-empty string" })
      end

      local purged = 0
      for row, err in kong.db.plugins:each() do
        if err then
          kong.log.err("cannot list plugins: ", err)
          return kong.response.exit(500, { message = "An unexpected error occurred" })
        end
        if row.name == PLUGIN_NAME and row.enabled then
          local plugin, perr = plugin_config.plugin_for(row.config)
          local ok
          if plugin then
            ok, perr = core.purge(plugin, credential)
          end
          if not ok then
            kong.log.err("cannot purge auth-router plugin ", row.id, ": ", perr)
            return kong.response.exit(500, { message = "An unexpected error occurred" })
          end
          purged = purged + 1
        end
      end
      return kong.response.exit(200, { purged = purged })
    end,
  },
}
