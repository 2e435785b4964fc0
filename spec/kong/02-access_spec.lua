-- auth-router inside real Kong (DB-less, 2 workers): verdicts, the auth
-- cache across workers, account headers both ways, the identity for later
-- plugins, log records, the Admin API purge, config reloads under load and
-- panic containment. Structured as Kong's key-auth access spec; runs
-- unchanged under Pongo and under scripts/kong-test.sh.

local helpers = require "spec.helpers"
local cjson   = require "cjson"

local ROOT  = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")

local PLUGIN_NAME = "auth-router"
local strategy    = "off"


-- Lua for a post-function (priority -1000: after every other plugin) that
-- shows what a later plugin sees.
local SHOW_IDENTITY = [[
  local shared = kong.ctx.shared.auth_router
  local credential = kong.client.get_credential()
  kong.response.set_header("x-seen-account", shared and shared.account_id or "none")
  kong.response.set_header("x-seen-cache", shared and shared.cache or "none")
  kong.response.set_header("x-seen-credential", credential and credential.id or "none")
  kong.response.set_header("x-worker-pid", ngx.worker.pid())
]]


local function json_body(res, status)
  return cjson.decode(assert.res_status(status, res))
end


local function count_keys(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n
end


-- Runs fn(client) on n proxy connections at once (light threads: the spec
-- runs in Kong's resty-based busted); answers each call's returns, in order.
local function concurrently(n, fn)
  local threads = {}
  for i = 1, n do
    threads[i] = ngx.thread.spawn(function()
      local client = helpers.proxy_client()
      local out = { fn(client) }
      client:close()
      return out
    end)
  end
  local results = {}
  for i = 1, n do
    local ok, out = ngx.thread.wait(threads[i])
    assert(ok, out)
    results[i] = out
  end
  return results
end


describe(PLUGIN_NAME .. ": (access) [#" .. strategy .. "]", function()
  local m, collector, proxy_client

  local function request(path, headers, host)
    headers = headers or {}
    headers.host = host or "access.test"
    local res = assert(proxy_client:send { method = "GET", path = path, headers = headers })
    return res
  end

  lazy_setup(function()
    m = mocks.start()
    collector = mocks.collector()

    local bp = helpers.get_db_utils(strategy, {
      "routes", "services", "plugins", "upstreams", "targets",
    }, { PLUGIN_NAME })

    local legacy = bp.services:insert {
      name = "legacy", host = "127.0.0.1", port = m.ports.legacy,
    }
    -- the same backend behind a Kong Upstream
    local pool = bp.upstreams:insert { name = "legacy-pool" }
    bp.targets:insert { upstream = pool, target = "127.0.0.1:" .. m.ports.legacy }
    local pooled = bp.services:insert { name = "pooled", host = "legacy-pool" }

    local function route(host, plugin_config, extra_plugins, service)
      local r = bp.routes:insert { hosts = { host }, service = service or legacy }
      plugin_config.auth = plugin_config.auth or {}
      plugin_config.auth.url = m.auth_url
      plugin_config.auth.shared_dict = "auth_router"
      bp.plugins:insert { name = PLUGIN_NAME, route = { id = r.id }, config = plugin_config }
      bp.plugins:insert {
        name = "post-function", route = { id = r.id },
        config = { header_filter = { SHOW_IDENTITY } },
      }
      for _, p in ipairs(extra_plugins or {}) do
        p.route = { id = r.id }
        bp.plugins:insert(p)
      end
      return r
    end

    local headers = {
      upstream_headers = {
        { name = "x-account-id", pointer = "/id" },
        { name = "x-account-plan", pointer = "/plan" },
      },
      response_headers = { { name = "x-account-id", pointer = "/id" } },
    }
    route("access.test", headers)

    -- Runs after auth-router (910 < 1150): counts per credential, which is
    -- the identity auth-router gave Kong.
    route("limited.test", {}, { {
      name = "rate-limiting",
      config = { minute = 2, limit_by = "credential", policy = "local" },
    } })

    local function logged()
      return {
        response_headers = headers.response_headers,
        log = { enabled = true, sink = "tcp", host = "127.0.0.1", port = collector.port,
                flush_interval_ms = 50 },
      }
    end
    route("logged.test", logged())
    route("logged-pool.test", logged(), nil, pooled)

    -- pre-function runs first (priority 1000000): a request carrying
    -- x-arm-panic arms the native fault hook, so auth-router's access panics.
    route("panic.test", {}, { {
      name = "pre-function",
      config = { access = { [[
        if kong.request.get_header("x-arm-panic") then
          require("auth_router_native")._arm_panic()
        end
      ]] } },
    } })

    assert(mocks.start_kong({
      untrusted_lua              = "on",
      -- reuseport: the kernel spreads new connections over both workers by
      -- hash, so concurrent requests reach both (the cross-worker cases)
      proxy_listen               = helpers.get_proxy_ip(false) .. ":"
                                   .. helpers.get_proxy_port(false) .. " reuseport",
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
    proxy_client = helpers.proxy_client()
  end)

  after_each(function()
    if proxy_client then
      proxy_client:close()
    end
  end)

  describe("verdicts", function()
    it("answers 401 without calling auth when the credential is missing", function()
      local calls = m:calls()
      local res = request("/x")
      assert.same({ message = "No credentials found in request" }, json_body(res, 401))
      assert.equal(calls, m:calls())
    end)

    it("passes the auth service's 401 and WWW-Authenticate on", function()
      local res = request("/x", { authorization = "Bearer deny" })
      assert.same({ message = "Unauthorized" }, json_body(res, 401))
      assert.equal('Bearer realm="mock", error="invalid_token"', res.headers["WWW-Authenticate"])
      assert.is_nil(res.headers["x-account-id"])
    end)

    it("passes the auth service's 403 on", function()
      local res = request("/x", { authorization = "Bearer forbid" })
      assert.same({ message = "Forbidden" }, json_body(res, 403))
    end)

    it("lets an allowed request through to the Service with account headers both ways", function()
      local res = request("/x?q=1", { authorization = "Bearer good-acc_v" })
      local echo = json_body(res, 200)
      assert.equal("legacy", echo.service)
      assert.equal("/x?q=1", echo.uri)
      assert.equal("acc_v", echo.headers["x-account-id"])
      assert.equal("pro", echo.headers["x-account-plan"])
      assert.equal("acc_v", res.headers["x-account-id"])
    end)
  end)
  describe("auth cache", function()
    it("makes one auth call for concurrent requests with one new credential, across workers", function()
      local token = "slow-300-acc_flight"
      local results = concurrently(20, function(client)
        local res = assert(client:send { method = "GET", path = "/flight", headers = {
          host = "access.test", authorization = "Bearer " .. token } })
        res:read_body()
        return res.status, res.headers["x-worker-pid"]
      end)
      local pids = {}
      for _, r in ipairs(results) do
        assert.equal(200, r[1])
        pids[r[2]] = true
      end
      assert.equal(1, m:calls(token))
      -- the kernel spread 20 simultaneous connections over both workers
      assert.equal(2, count_keys(pids), "expected both workers to serve requests")
    end)

    it("answers repeated requests from the cache in every worker", function()
      local token = "good-acc_cached"
      local seen_pids, caches = {}, {}
      for _ = 1, 3 do
        local results = concurrently(10, function(client)
          local res = assert(client:send { method = "GET", path = "/again", headers = {
            host = "access.test", authorization = "Bearer " .. token } })
          res:read_body()
          return res.status, res.headers["x-worker-pid"], res.headers["x-seen-cache"]
        end)
        for _, r in ipairs(results) do
          assert.equal(200, r[1])
          seen_pids[r[2]] = true
          caches[r[3]] = (caches[r[3]] or 0) + 1
        end
      end
      assert.equal(1, m:calls(token))
      assert.equal(2, count_keys(seen_pids))
      assert.equal(29, caches.hit, cjson.encode(caches))
    end)
  end)

  describe("headers", function()
    it("replaces account headers a client sent, also ones the account has no value for", function()
      local token = "json-" .. ngx.encode_base64(cjson.encode({ id = "acc_noplan" }))
      local res = request("/x", {
        authorization  = "Bearer " .. token,
        ["x-account-id"]   = "acc_admin",
        ["x-account-plan"] = "enterprise",
      })
      local echo = json_body(res, 200)
      assert.equal("acc_noplan", echo.headers["x-account-id"])
      assert.is_nil(echo.headers["x-account-plan"])
      assert.equal("acc_noplan", res.headers["x-account-id"])
    end)

    it("keeps account response headers off denials", function()
      local res = request("/x", { authorization = "Bearer forbid", ["x-account-id"] = "acc_admin" })
      assert.res_status(403, res)
      assert.is_nil(res.headers["x-account-id"])
    end)
  end)

  describe("identity for later plugins", function()
    it("shares account id and cache status in kong.ctx.shared.auth_router and sets the credential",
       function()
      local first = request("/x", { authorization = "Bearer good-acc_shared" })
      assert.res_status(200, first)
      assert.equal("acc_shared", first.headers["x-seen-account"])
      assert.equal("miss", first.headers["x-seen-cache"])
      assert.equal("acc_shared", first.headers["x-seen-credential"])

      local second = request("/x", { authorization = "Bearer good-acc_shared" })
      assert.res_status(200, second)
      assert.equal("hit", second.headers["x-seen-cache"])
    end)

    it("lets rate-limiting with limit_by = credential count per account", function()
      local statuses = {}
      for _, token in ipairs({ "good-acc_rl1", "good-acc_rl1", "good-acc_rl1", "good-acc_rl2" }) do
        local res = request("/x", { authorization = "Bearer " .. token }, "limited.test")
        res:read_body()
        statuses[#statuses + 1] = res.status
      end
      assert.same({ 200, 200, 429, 200 }, statuses)
    end)
  end)

  describe("logging", function()
    -- The record of the request to `uri` among `records` (two workers: the
    -- order may differ from the order sent).
    local function record_of(records, uri)
      for _, rec in ipairs(records) do
        if rec.request.uri == uri then
          return rec
        end
      end
      error("no record for " .. uri)
    end

    it("sends one record per request to a TCP collector, denied ones included", function()
      local before = #collector:records()
      local legacy = "127.0.0.1:" .. m.ports.legacy
      local sent = {
        { token = "good-acc_log", status = 200 },
        { token = "forbid", status = 403 },
        { status = 401 },
        { token = "good-acc_log", status = 200 },
        { token = "good-acc_log", status = 200, host = "logged-pool.test" },
      }
      for i, r in ipairs(sent) do
        local res = request("/logged/" .. i, { authorization = r.token and "Bearer " .. r.token },
                            r.host or "logged.test")
        assert.res_status(r.status, res)
      end
      collector:wait_count(before + #sent, 10)
      ngx.sleep(0.3) -- nothing more may arrive
      local records = collector:records()
      assert.equal(before + #sent, #records)
      for i, r in ipairs(sent) do
        local rec = record_of(records, "/logged/" .. i)
        assert.equal(r.status, rec.response.status)
        if r.status == 200 then
          assert.equal("acc_log", rec.account.id)
          -- no route of the plugin matched: where Kong's balancer sent it,
          -- the Service's host:port or the Upstream its host names, and
          -- nginx's own address and status
          if r.host == "logged-pool.test" then
            assert.same({ name = cjson.null, upstream = "legacy-pool" }, rec.route)
          else
            assert.same({ name = cjson.null, target = legacy }, rec.route)
          end
          assert.same({ addr = legacy, status = "200" }, rec.upstream)
        else
          assert.equal(cjson.null, rec.route)
          assert.equal(cjson.null, rec.upstream)
        end
        if r.token then
          assert.equal("[REDACTED]", rec.request.headers.authorization)
        end
      end
    end)
  end)

  describe("Admin API", function()
    it("purges one credential and everything on DELETE /auth-router/cache", function()
      local token = "good-acc_purge"
      assert.res_status(200, request("/x", { authorization = "Bearer " .. token }))
      assert.res_status(200, request("/x", { authorization = "Bearer " .. token }))
      assert.equal(1, m:calls(token))

      local admin = helpers.admin_client()
      local res = assert(admin:send {
        method = "DELETE", path = "/auth-router/cache",
        headers = { ["Content-Type"] = "application/json" },
        body = { credential = "Bearer " .. token },
      })
      local purged = cjson.decode(assert.res_status(200, res))
      assert.equal(5, purged.purged) -- one per auth-router plugin in the config

      -- both workers forget it: each answers once more from a fresh auth call at most
      for _ = 1, 6 do
        assert.res_status(200, request("/x", { authorization = "Bearer " .. token }))
        proxy_client:close()
        proxy_client = helpers.proxy_client()
      end
      assert.equal(2, m:calls(token))

      res = assert(admin:send { method = "DELETE", path = "/auth-router/cache" })
      assert.res_status(200, res)
      assert.res_status(200, request("/x", { authorization = "Bearer " .. token }))
      assert.equal(3, m:calls(token))

      res = assert(admin:send {
        method = "DELETE", path = "/auth-router/cache",
        headers = { ["Content-Type"] = "application/json" }, body = { credential = 42 },
      })
      assert.same({ message = "credential must be a non-empty string" },
                  cjson.decode(assert.res_status(400, res)))
      admin:close()
    end)
  end)

  describe("panic containment", function()
    it("turns a native panic into a 500 and the worker keeps serving", function()
      local res = request("/boom", { authorization = "Bearer good-acc_panic", ["x-arm-panic"] = "1" },
                          "panic.test")
      assert.same({ message = "An unexpected error occurred" }, json_body(res, 500))
      local pid = res.headers["x-worker-pid"]
      assert.is_nil(res.headers["x-account-id"])

      -- same connection, same worker: it is alive and serves
      res = request("/after", { authorization = "Bearer good-acc_panic" }, "panic.test")
      assert.res_status(200, res)
      assert.equal(pid, res.headers["x-worker-pid"])
      assert.logfile().has.line("[auth-router] internal error in access: injected fault: panic in access",
                                true)
      assert.logfile().has.no.line("[alert]", true)
    end)
  end)
end)
