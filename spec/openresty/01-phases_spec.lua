-- auth_router.openresty in real nginx: the four phases, panic containment,
-- init failures and garbage collection. Each case runs twice (leaked state
-- shows up in the second round) and checks the error log of its own window.
--
--   AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson"

local ROUNDS = 2
local PANIC_LINE = "[auth-router] internal error in access: injected fault: panic in access"
local INTERNAL_ERROR = { message = "An unexpected error occurred" }
local AUTH = { Authorization = "Bearer good-acc_phases" } -- the mock auth service's valid token

-- Compiles the running config `n` times (as a table and as JSON text), runs
-- exchanges on the throwaway plugins, keeps one exchange past its plugin,
-- drops every ref and collects. Answers the Lua heap and RSS after the collect.
local GC_LOCATION = [[
        location = /__gc {
            content_by_lua_block {
                local core      = require "auth_router"
                local openresty = require "auth_router.openresty"
                local cjson     = require "cjson.safe"
                local n = tonumber(ngx.var.arg_n) or 100
                local conf = openresty.config()           -- normalized table
                local text = assert(cjson.encode(conf))
                local ffi = require "ffi"
                local C = require("auth_router.native").C
                require "resty.core.request"
                local out = ffi.new("ar_access_out")
                local hdrs = ffi.new("ngx_http_lua_ffi_table_elt_t[1]")
                hdrs[0].key.data, hdrs[0].key.len = "authorization", 13
                hdrs[0].value.data, hdrs[0].value.len = "Bearer gc", 9
                local h = {}
                local survivor
                for i = 1, n do
                  local plugin = assert(core.compile(i % 2 == 0 and conf or text))
                  local uri = "/gc/" .. i
                  assert(C.ar_access(plugin:ffi_ptr(), "GET", 3, uri, #uri, uri, #uri,
                                     ngx.now() * 1000, ngx.now(), hdrs, 1, out) >= 0)
                  h[0] = out.handle
                  assert(C.ar_response(h[0], 200) >= 0)
                  assert(C.ar_body_chunk(h[0], "chunk", 5) == 0)
                  if i == n then
                    survivor = h[0]                        -- outlives its plugin
                  else
                    assert(C.ar_finish(h[0]) == 0)
                  end
                  assert(core.validate(conf))
                  assert(core.plugin_for(cjson.decode(text)))  -- weak cache entry
                  plugin = nil
                end
                collectgarbage()
                collectgarbage()
                assert(C.ar_body_chunk(survivor, nil, 0) == 0)
                assert(C.ar_finish(survivor) == 0)
                survivor = nil
                collectgarbage()
                collectgarbage()
                local statm = io.open("/proc/self/statm"):read("*l")
                local rss_pages = tonumber(statm:match("^%d+%s+(%d+)"))
                ngx.header["Content-Type"] = "application/json"
                ngx.say(cjson.encode({
                  lua_kb = collectgarbage("count"),
                  rss_kb = rss_pages * 4,
                  worker_pid = ngx.worker.pid(),
                }))
            }
        }]]


describe("auth_router.openresty in nginx (1 worker)", function()
  local mocks, gw
  local mark -- error log size when the current case started

  lazy_setup(function()
    mocks = helpers.start_mocks()
    gw = helpers.start({ mocks = mocks, workers = 1, locations = GC_LOCATION })
  end)

  lazy_teardown(function()
    if gw then
      gw:stop()
    end
    if mocks then
      mocks:stop()
    end
  end)

  before_each(function()
    mark = gw:log_mark()
  end)


  for round = 1, ROUNDS do
    for _, variant in ipairs({ { name = "Content-Length", query = "" },
                               { name = "chunked", query = "&chunked=1" } }) do
      it("access(), header_filter(), body_filter(), log() pass a request to the default "
         .. "target and count it, " .. variant.name .. " response (round " .. round .. ")", function()
        local before = gw:stats()
        local path = "/phases/" .. round .. "?v=" .. variant.name .. variant.query
        local status, headers, body = helpers.request("GET", gw.gw_url .. path,
                                                      { ["X-Test"] = "phases", Authorization = AUTH.Authorization })
        assert.equal(200, status, body)
        local echo = cjson.decode(body)
        assert.equal("legacy", echo.service)
        assert.equal(mocks.ports.legacy, echo.port)
        assert.equal("GET", echo.method)
        assert.equal(path, echo.uri)
        assert.equal("phases", echo.headers["x-test"])
        if variant.query ~= "" then
          assert.equal("chunked", headers["transfer-encoding"])
        else
          assert.equal(tostring(#body), headers["content-length"])
        end

        -- log ran before nginx closed our connection, so the counters are final
        local after = gw:stats()
        assert.equal(before.worker_pid, after.worker_pid)
        assert.equal(tostring(after.worker_pid), headers["x-worker-pid"])
        assert.equal(1, after.requests - before.requests)
        assert.equal(1, after.completed - before.completed)
        -- logging is off: no slot past access, so header_filter and
        -- body_filter make no native call and nothing counts bytes
        assert.equal(0, after.responses - before.responses)
        assert.equal(0, after.live_slots)
        assert.equal(0, after.response_bytes - before.response_bytes)
        assert.equal(before.internal_errors, after.internal_errors)
        assert.equal(before.configs_compiled, after.configs_compiled)

        helpers.assert_clean_log(gw:error_log(mark))
      end)
    end

    it("access() turns a native panic into a 500 and the worker keeps serving (round "
       .. round .. ")", function()
      local before = gw:stats()
      local pid = gw:arm_panic()
      assert.equal(before.worker_pid, pid)

      local status, headers, body = helpers.request("GET", gw.gw_url .. "/boom/" .. round, AUTH)
      assert.equal(500, status, body)
      assert.same(INTERNAL_ERROR, cjson.decode(body))
      assert.matches("application/json", headers["content-type"], 1, true)
      assert.is_nil(body:find("panic", 1, true))
      assert.is_nil(body:find("injected", 1, true))
      assert.equal(tostring(pid), headers["x-worker-pid"])

      local log = gw:error_log(mark)
      assert.equal(1, helpers.count_lines(log, PANIC_LINE), log)
      assert.is_nil(log:find("unknown reason", 1, true), log)

      -- the same worker (no crash, no respawn) serves the next request normally
      local status2, headers2, body2 = helpers.request("GET", gw.gw_url .. "/after-panic/" .. round, AUTH)
      assert.equal(200, status2, body2)
      assert.equal("legacy", cjson.decode(body2).service)
      assert.equal(tostring(pid), headers2["x-worker-pid"])

      local after = gw:stats()
      assert.equal(pid, after.worker_pid)
      assert.equal(1, after.internal_errors - before.internal_errors)
      assert.equal(1, after.completed - before.completed)  -- the 500 carried no exchange
      assert.equal(0, after.live_slots)

      helpers.assert_clean_log(gw:error_log(mark), { helpers.literal(PANIC_LINE) })
    end)

    it("compile() leaves nothing behind once plugins and exchanges are collected (round "
       .. round .. ")", function()
      local before = gw:stats()
      local n = 100
      local samples = {}
      for i = 1, 3 do
        local status, headers, body = helpers.request("GET", gw.gw_url .. "/__gc?n=" .. n)
        assert.equal(200, status, body)
        samples[i] = cjson.decode(body)
        assert.equal(before.worker_pid, samples[i].worker_pid, "worker changed")
        assert.equal(tostring(before.worker_pid), headers["x-worker-pid"])
      end
      -- after warm-up, another batch must not grow the Lua heap or the RSS: a
      -- leaked plugin costs ~300 B of Lua heap and ~19 KiB of RSS (measured),
      -- so a batch of 100 leaks would show 30 KiB and 1.9 MiB
      assert.is_true(samples[3].lua_kb - samples[2].lua_kb < 16,
                     "Lua heap grew: " .. samples[2].lua_kb .. " -> " .. samples[3].lua_kb .. " KiB")
      assert.is_true(samples[3].rss_kb - samples[2].rss_kb < 512,
                     "RSS grew: " .. samples[2].rss_kb .. " -> " .. samples[3].rss_kb .. " KiB")

      local after = gw:stats()
      assert.equal(3 * n * 2, after.configs_compiled - before.configs_compiled) -- compile + plugin_for
      assert.equal(3 * n, after.completed - before.completed)
      assert.equal(before.internal_errors, after.internal_errors)

      local status, headers, body = helpers.request("GET", gw.gw_url .. "/after-gc/" .. round, AUTH)
      assert.equal(200, status, body)
      assert.equal("legacy", cjson.decode(body).service)
      assert.equal(tostring(before.worker_pid), headers["x-worker-pid"])

      helpers.assert_clean_log(gw:error_log(mark))
    end)
  end

  it("error log has no [error]/[warn]/[crit] lines apart from the expected panic lines", function()
    local log = gw:error_log()
    helpers.assert_clean_log(log, { helpers.literal(PANIC_LINE) })
    assert.equal(ROUNDS, helpers.count_lines(log, PANIC_LINE))
    assert.is_nil(log:find("unknown reason", 1, true))
    helpers.assert_clean_log(mocks:error_log())
  end)
end)


describe("auth_router.openresty with an invalid config", function()
  local INVALID = {
    {
      what = "a route target without a port",
      config = {
        auth = { url = "http://127.0.0.1:9/auth" },
        routes = { { name = "email", paths = { "/send" }, target = "no-port" } },
      },
      expect = "routes[1].target: expected host:port, got 'no-port'",
    },
    {
      what = "a config without auth",
      config = { routes = helpers.array() },
      expect = "auth: required field missing",
    },
    {
      what = "a config file that is not JSON",
      config = "{not json",
      expect = "config is not valid JSON",
    },
  }

  for round = 1, ROUNDS do
    for _, case in ipairs(INVALID) do
      it("init() makes nginx refuse to start on " .. case.what
         .. ", naming the problem (round " .. round .. ")", function()
        local gw, err, out, log = helpers.try_start({
          default_target = "127.0.0.1:9",
          config = case.config,
        })
        finally(function()
          if gw then
            gw:stop()
          end
        end)
        assert.is_nil(gw, "nginx started with an invalid config")
        assert.matches(case.expect, out, 1, true)
        assert.matches("init_by_lua error", log, 1, true)
        assert.matches(case.expect, log, 1, true)
        -- the failure is the only complaint
        helpers.assert_clean_log(log, { "init_by_lua error: .*" .. helpers.literal(case.expect) })
        assert.is_string(err)
      end)
    end
  end
end)
