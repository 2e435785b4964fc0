-- Status API (status_listen): GET /auth-router/metrics, as on the Admin API
-- (metrics_api.lua). The Status API runs on every node, data planes included.

local metrics_api = require "kong.plugins.auth-router.metrics_api"

return {
  ["/auth-router/metrics"] = {
    GET = function()
      return metrics_api.GET()
    end,
  },
}
