-- auth-router's later phases in real Kong (DB-less, 1 worker, so that the
-- worker's native counters are the node's): Kong runs header_filter,
-- body_filter and log only when a config in force needs them, as worked out
-- by the handler's configure() on every config change. A config that needs
-- none still authenticates and routes, and keeps no native slot past
-- access; a new config posted to /config that adds response headers, then
-- logging with response bodies, gets them on the next request.

local helpers = require "spec.helpers"
local cjson   = require "cjson"

local ROOT  = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")

local PLUGIN_NAME = "auth-router"
local strategy    = "off"
local HOST        = "phases.test"


describe(PLUGIN_NAME .. ": (phases Kong runs) [#" .. strategy .. "]", function()
  local m, collector, admin

  -- One Service and Route with the plugin, and a route answering this
  -- worker's native counters.
  local function declarative(extra)
    local plugin_config = { auth = { url = m.auth_url, shared_dict = "auth_router" } }
    for k, v in pairs(extra or {}) do
      plugin_config[k] = v
    end
    return cjson.encode({
      _format_version = "3.0",
      services = { {
        name = "phases", host = "127.0.0.1", port = m.ports.legacy,
        routes = {
          { name = "phases", hosts = { HOST },
            plugins = { { name = PLUGIN_NAME, config = plugin_config } } },
          { name = "stats", hosts = { "stats.test" },
            plugins = { { name = "pre-function", config = { access = { [[
              local stats = require("auth_router").stats()
              -- the phases the handler offers Kong now (see configure)
              local handler = require("kong.plugins.auth-router.handler")
              stats.offered = {
                header_filter = handler.header_filter ~= nil,
                body_filter = handler.body_filter ~= nil,
                log = handler.log ~= nil,
              }
              return kong.response.exit(200, stats)
            ]] } } } } },
        },
      } },
    })
  end

  -- Posts a config tagged `tag` (a constant response header) and waits
  -- until the worker answers with it: /config returns before the worker
  -- has switched.
  local function post_config(tag, extra)
    extra.response_headers = extra.response_headers or {}
    table.insert(extra.response_headers, { name = "x-config", value = tag })
    local res = assert(admin:send {
      method = "POST", path = "/config",
      headers = { ["Content-Type"] = "application/json" },
      body = { config = declarative(extra) },
    })
    assert.res_status(201, res)
    helpers.wait_until(function()
      local client = helpers.proxy_client()
      local r = client:send { method = "GET", path = "/",
                              headers = { host = HOST, authorization = "Bearer good-phases" } }
      local tagged = r and r.headers["x-config"] == tag
      client:close()
      return tagged
    end, 10)
  end

  local function stats()
    local client = helpers.proxy_client()
    local res = assert(client:send { method = "GET", path = "/", headers = { host = "stats.test" } })
    local body = assert.res_status(200, res)
    client:close()
    return cjson.decode(body)
  end

  -- n requests through the plugin; returns the last response and its body.
  local function requests(n, token)
    local res, body
    for _ = 1, n do
      local client = helpers.proxy_client()
      res = assert(client:send {
        method = "GET", path = "/phases",
        headers = { host = HOST, authorization = token and "Bearer " .. token },
      })
      body = res:read_body()
      client:close()
    end
    return res, body
  end

  lazy_setup(function()
    m = mocks.start()
    collector = mocks.collector()
    helpers.get_db_utils(strategy, nil, { PLUGIN_NAME })
    assert(mocks.start_kong({
      declarative_config_string   = declarative(),
      nginx_main_worker_processes = 1,
      untrusted_lua               = "on",
    }))
  end)

  lazy_teardown(function()
    helpers.stop_kong()
    if collector then
      collector:stop()
    end
    if m then
      m:stop()
    end
  end)

  before_each(function()
    admin = helpers.admin_client()
  end)

  after_each(function()
    if admin then
      admin:close()
    end
  end)

  it("runs no later phase for a config that needs none, and still authenticates", function()
    local s0 = stats()
    assert.same({ header_filter = false, body_filter = false, log = false }, s0.offered)
    local res, body = requests(5, "good-phases")
    assert.equal(200, res.status, body)
    assert.is_nil(res.headers["x-account-id"])
    res = requests(1, nil)
    assert.equal(401, res.status)
    local s1 = stats()
    assert.equal(6, s1.requests - s0.requests)
    assert.equal(6, s1.completed - s0.completed)  -- closed in access
    assert.equal(0, s1.live_slots)                -- none waits for a log phase
    assert.equal(0, s1.responses - s0.responses)  -- header_filter never ran
  end)

  it("offers header_filter again once a new config has response headers", function()
    post_config("2", { response_headers = { { name = "x-account-id", pointer = "/id" } } })
    local s0 = stats()
    assert.same({ header_filter = true, body_filter = false, log = false }, s0.offered)
    local res, body = requests(3, "good-phases")
    assert.equal(200, res.status, body)
    assert.equal("phases", res.headers["x-account-id"])
    local s1 = stats()
    assert.equal(0, s1.live_slots)
    -- logging off: the values were taken in access, no native call here
    assert.equal(0, s1.responses - s0.responses)
  end)

  it("offers body_filter once a config logs response bodies", function()
    post_config("3", { log = {
      enabled = true, sink = "tcp", host = "127.0.0.1", port = collector.port,
      flush_interval_ms = 50, response_body = true,
    } })
    assert.same({ header_filter = true, body_filter = true, log = true }, stats().offered)
    local res, body = requests(1, "good-phases")
    assert.equal(200, res.status, body)
    local rec
    helpers.wait_until(function()
      for _, r in ipairs(collector:records()) do
        if r.request.uri == "/phases" then
          rec = r
        end
      end
      return rec ~= nil
    end, 10)
    assert.is_table(rec, "no record for /phases")
    assert.equal(200, rec.response.status)
    -- the upstream mock echoes the request as JSON: captured in the record
    assert.matches('"service":', rec.response.body, 1, true)
    assert.equal("phases", rec.account.id)
  end)
end)
