-- auth-router's metrics in real Kong (DB-less, 2 workers): GET
-- /auth-router/metrics on the Admin API and on the Status API answers the
-- Prometheus text format, parsed here (spec/fixtures/prometheus.lua), with
-- the node's counters: a known traffic mix through the proxy, whichever
-- worker took each request, equals the scrape. Each worker's flush timer
-- starts in the handler's init_worker.

local helpers = require "spec.helpers"

local ROOT  = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")
local prom  = dofile(ROOT .. "/spec/fixtures/prometheus.lua")

local PLUGIN_NAME  = "auth-router"
local strategy     = "off"
local HOST         = "metrics.test"
local CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


describe(PLUGIN_NAME .. ": (metrics API) [#" .. strategy .. "]", function()
  local m, status_port

  lazy_setup(function()
    m = mocks.start()
    local bp = helpers.get_db_utils(strategy, { "routes", "services", "plugins" }, { PLUGIN_NAME })
    local service = bp.services:insert { name = "metrics", host = "127.0.0.1", port = m.ports.legacy }
    local route = bp.routes:insert { hosts = { HOST }, service = service }
    bp.plugins:insert {
      name = PLUGIN_NAME,
      route = { id = route.id },
      config = {
        auth = { url = m.auth_url, shared_dict = "auth_router" },
        routes = { { name = "email", paths = { "/send" }, target = m.targets.email } },
      },
    }
    status_port = mocks.free_ports(1)[1]
    -- the metrics in their own dict, as docs/kong.md shows: Kong injects
    -- the property's value after `lua_shared_dict`, so a second one fits
    assert(mocks.start_kong({
      status_listen = "127.0.0.1:" .. status_port,
      nginx_http_lua_shared_dict = "auth_router 4m; lua_shared_dict auth_router_metrics 1m",
    }))
  end)

  lazy_teardown(function()
    helpers.stop_kong()
    if m then
      m:stop()
    end
  end)

  local function get(path, token)
    local client = helpers.proxy_client()
    local res = assert(client:send {
      method = "GET", path = path,
      headers = { host = HOST, authorization = token and "Bearer " .. token },
    })
    res:read_body()
    client:close()
    return res.status
  end

  local function scrape(client)
    local res = assert(client:send { method = "GET", path = "/auth-router/metrics" })
    -- read_body, not assert.res_status: that one strips the text's last line feed
    local body = assert(res:read_body())
    assert.equal(200, res.status, body)
    assert.equal(CONTENT_TYPE, res.headers["Content-Type"])
    return prom.parse(body), body
  end

  local function scrape_admin()
    local admin = helpers.admin_client()
    local m_, text = scrape(admin)
    admin:close()
    return m_, text
  end

  it("GET /auth-router/metrics sums a known mix over the node's workers", function()
    local tag = tostring(math.random(1e9))
    -- 3 accounts x 3 requests to the email route: 3 auth calls
    for i = 1, 3 do
      for _ = 1, 3 do
        assert.equal(200, get("/send", "good-k" .. i .. "-" .. tag))
      end
    end
    -- 2 without a credential, 2 denied (1 auth call, then cached)
    assert.equal(401, get("/send"))
    assert.equal(401, get("/send"))
    assert.equal(401, get("/send", "deny-" .. tag))
    assert.equal(401, get("/send", "deny-" .. tag))

    local metrics, text
    helpers.wait_until(function()
      metrics, text = scrape_admin()
      -- every worker compiled the config (configure): a sum of 2 or more
      -- needs the other worker's flush timer, not only the scraped worker
      return prom.value(metrics, "auth_router_requests_total") == 13
             and prom.value(metrics, "auth_router_configs_compiled_total") >= 2
    end, 10)
    local function v(name, labels)
      local x = prom.value(metrics, name, labels)
      assert(x, "no sample " .. name .. " in:\n" .. text)
      return x
    end
    assert.equal(13, v("auth_router_requests_total"))
    assert.equal(9, v("auth_router_verdicts_total", { verdict = "allow" }))
    assert.equal(2, v("auth_router_verdicts_total", { verdict = "deny" }))
    assert.equal(2, v("auth_router_verdicts_total", { verdict = "no_credential" }))
    assert.equal(3, v("auth_router_auth_calls_total", { outcome = "ok" }))
    assert.equal(1, v("auth_router_auth_calls_total", { outcome = "denied" }))
    assert.equal(4, v("auth_router_auth_call_duration_seconds_count"))
    assert.equal(9, v("auth_router_routed_total", { route = "email" }))
    local hits = v("auth_router_cache_lookups_total", { tier = "l1", result = "hit" })
               + v("auth_router_cache_lookups_total", { tier = "l2", result = "hit" })
    assert.equal(6, hits)
    assert.equal(4, v("auth_router_cache_lookups_total", { tier = "l2", result = "miss" }))
    assert.equal(0, v("auth_router_live_slots"))
    assert.equal(0, v("auth_router_internal_errors_total"))
    assert.is_truthy(metrics.comments[1]:match("node%-wide %(workers: 2, shared dict 'auth_router_metrics'"),
                     metrics.comments[1])
  end)

  it("answers the same on the Status API", function()
    local admin_metrics = scrape_admin()
    local client = helpers.http_client("127.0.0.1", status_port, 5000)
    local status_metrics = scrape(client)
    client:close()
    for _, name in ipairs({ "auth_router_requests_total", "auth_router_routed_total" }) do
      local labels = name == "auth_router_routed_total" and { route = "email" } or nil
      assert.equal(prom.value(admin_metrics, name, labels), prom.value(status_metrics, name, labels))
    end
    assert.equal(13, prom.value(status_metrics, "auth_router_requests_total"))
  end)
end)
