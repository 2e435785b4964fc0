-- auth_router.openresty in real nginx: the bounds of the auth call (issue #9).
--
--  * auth.timeout_ms is the budget of the whole call: an auth service that
--    drips its answer is cut off, its waiters never start a second call, and
--    the client gets failure_status (or a stale answer) within the budget.
--  * auth.max_in_flight bounds the calls in flight per worker: many new
--    credentials against a slow auth service never put more than
--    workers x max_in_flight calls on it, and the excess fails fast.
--  * an auth outage writes one plain line per failure, at most one per
--    interval per worker, never a stack trace.
--
-- Gateways run with 2 workers listening with reuseport; the mock counts its
-- calls and the slow calls it holds at once (/__inflight).
--
--   AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/06-auth_limits_spec.lua

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson"
local socket  = require "socket"

local WORKERS = 2

local UNAVAILABLE = { message = "Authentication service unavailable" }

-- error log lines allowed while the auth service fails
local AUTH_FAILED    = "%[auth%-router%] auth service 127%.0%.0%.1:%d+ failed %("
local SOCKET_TIMEOUT = "lua tcp socket read timed out"

local mocks
local n_tokens = 0

--- A unique token the mock answers as its canned token `behaviour`.
local function token_as(behaviour)
  n_tokens = n_tokens + 1
  local t = "lim-" .. n_tokens .. "-" .. math.random(1e9)
  mocks:behave(t, behaviour)
  return t
end

local function bearer(token)
  return { Authorization = "Bearer " .. token }
end

local function decode(body)
  local ok, v = pcall(cjson.decode, body or "")
  return ok and v or body
end

local function start_gateway(config, init_worker)
  return helpers.start({
    mocks = mocks,
    workers = WORKERS,
    listen_options = "reuseport",
    config = config,
    init_worker = init_worker,
  })
end

local function many(gw, n, headers_for, concurrency)
  local list = {}
  for i = 1, n do
    list[i] = { url = gw.gw_url .. "/limits?i=" .. i, headers = headers_for(i) }
  end
  return helpers.request_many(list, concurrency or n, 30)
end

--- Every result failed closed with the plugin's 503.
local function assert_all_unavailable(results)
  for i, r in ipairs(results) do
    assert(not r.err, "request " .. i .. ": " .. tostring(r.err))
    assert.equal(503, r.status, "request " .. i .. ": " .. tostring(r.body))
    assert.same(UNAVAILABLE, decode(r.body))
    assert.is_nil(r.headers["x-upstream"])
  end
end

local function no_trace(log)
  assert.is_nil(log:find("stack traceback", 1, true), log)
end


describe("auth_router.openresty auth call bounds (" .. WORKERS .. " workers)", function()

  lazy_setup(function()
    math.randomseed(os.time())
    mocks = helpers.start_mocks()
  end)

  lazy_teardown(function()
    if mocks then
      mocks:stop()
    end
  end)


  ----------------------------------------------------------------------
  describe("auth.timeout_ms is one deadline for the whole call", function()
    local TIMEOUT_S = 0.5
    -- The budget plus what waiters allow past it (0.25 s) plus scheduling
    -- slack on a busy machine. A dripping answer would take ~30 s.
    local BOUND_S = TIMEOUT_S + 0.25 + 0.75
    local TTL = 0.5
    local gw, mark

    lazy_setup(function()
      gw = start_gateway(helpers.config(mocks, {
        auth = { timeout_ms = TIMEOUT_S * 1000, ttl_s = TTL, stale_ttl_s = 30 },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }))
    end)

    lazy_teardown(function()
      gw:stop()
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    after_each(function()
      local log = gw:error_log(mark)
      no_trace(log)
      helpers.assert_clean_log(log, { AUTH_FAILED, SOCKET_TIMEOUT })
    end)

    it("cuts a dripping auth service off: 20 concurrent requests share 1 call and get 503 within "
       .. "the budget", function()
      local t = token_as("drip-200-dripper")
      local s0 = helpers.all_stats(gw)
      local results, elapsed = many(gw, 20, function() return bearer(t) end)
      assert_all_unavailable(results)
      assert.is_true(elapsed < BOUND_S, "took " .. elapsed .. " s")
      assert.equal(1, mocks:calls(t))
      local s1 = helpers.all_stats(gw)
      assert.equal(1, helpers.delta(s0, s1, "auth_calls"))
      assert.equal(1, helpers.delta(s0, s1, "auth_errors_timeout"))
      assert.equal(19, helpers.delta(s0, s1, "auth_errors_flight_failed")
                       + helpers.delta(s0, s1, "auth_errors_lock_timeout"))
    end)

    it("requests arriving in the middle of the call wait for it and never start a second one", function()
      local t = token_as("drip-200-dripper")
      -- The first request starts the call...
      local first = socket.tcp()
      first:settimeout(5)
      assert(first:connect("127.0.0.1", gw.port))
      local started = socket.gettime()
      assert(first:send("GET /first HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                        .. "Authorization: Bearer " .. t .. "\r\n\r\n"))
      -- ...and more arrive when most of its budget is spent.
      socket.sleep(TIMEOUT_S * 0.6)
      local results = many(gw, 10, function() return bearer(t) end)
      assert_all_unavailable(results)
      local raw = first:receive("*a")
      first:close()
      assert.matches("^HTTP/1%.1 503", raw)
      assert.is_true(socket.gettime() - started < BOUND_S)
      assert.equal(1, mocks:calls(t))
    end)

    it("serves a cached account as stale within the budget when the auth service starts dripping", function()
      local t = token_as("good-stale-dripper")
      local status, echo = helpers.request_json("GET", gw.gw_url .. "/stale", bearer(t))
      assert.equal(200, status)
      assert.equal("stale-dripper", echo.headers["x-account-id"])
      mocks:behave(t, "drip-200-dripper")
      socket.sleep(TTL + 0.1)
      local s0 = helpers.all_stats(gw)
      local started = socket.gettime()
      status, echo = helpers.request_json("GET", gw.gw_url .. "/stale", bearer(t))
      assert.is_true(socket.gettime() - started < BOUND_S)
      assert.equal(200, status)
      assert.equal("stale-dripper", echo.headers["x-account-id"])
      local s1 = helpers.all_stats(gw)
      assert.equal(1, helpers.delta(s0, s1, "stale_served"))
      assert.equal(1, helpers.delta(s0, s1, "auth_errors_timeout"))
    end)
  end)


  ----------------------------------------------------------------------
  describe("auth.max_in_flight bounds the calls in flight per worker", function()
    local MAX_IN_FLIGHT = 3
    local SLOW_MS = 800
    local gw, mark

    lazy_setup(function()
      gw = start_gateway(helpers.config(mocks, {
        auth = { timeout_ms = 5000, max_in_flight = MAX_IN_FLIGHT },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }))
    end)

    lazy_teardown(function()
      gw:stop()
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    it("200 new credentials, 50 at a time, against a slow auth service: at most workers x max_in_flight "
       .. "calls reach it, the rest get 503 at once", function()
      mocks:reset() -- zeroes the mock's high-water mark
      local s0 = helpers.all_stats(gw)
      local prefix = "slow-" .. SLOW_MS .. "-cap" .. math.random(1e9) .. "-"
      local results = many(gw, 200, function(i) return bearer(prefix .. i) end, 50)
      local passed, rejected = 0, 0
      for i, r in ipairs(results) do
        assert(not r.err, "request " .. i .. ": " .. tostring(r.err))
        if r.status == 200 then
          passed = passed + 1
          assert.equal("cap", cjson.decode(r.body).headers["x-account-id"]:match("^(cap)%d+%-"))
        else
          rejected = rejected + 1
          assert.equal(503, r.status, tostring(r.body))
          assert.same(UNAVAILABLE, decode(r.body))
          assert.is_nil(r.headers["x-upstream"])
          -- failed fast: no waiting for a slow call
          assert.is_true(r.elapsed < SLOW_MS / 1000, "a rejected request took " .. r.elapsed .. " s")
        end
      end
      local now, max = mocks:inflight()
      assert.equal(0, now)
      assert.is_true(max <= WORKERS * MAX_IN_FLIGHT, "the auth service saw " .. max .. " calls at once")
      assert.is_true(max >= 1)
      assert.is_true(passed >= MAX_IN_FLIGHT and rejected >= 1, passed .. " passed, " .. rejected .. " rejected")
      assert.equal(passed, mocks:calls())
      local s1 = helpers.all_stats(gw)
      assert.equal(rejected, helpers.delta(s0, s1, "auth_calls_rejected"))
      assert.equal(passed, helpers.delta(s0, s1, "auth_calls"))
      local log = gw:error_log(mark)
      no_trace(log)
      helpers.assert_clean_log(log, { AUTH_FAILED })
      -- rate-limited: at most one line per worker in this short burst
      assert.is_true(helpers.count_lines(log, "[auth-router] auth service") <= WORKERS)
    end)
  end)


  ----------------------------------------------------------------------
  describe("auth failures in the error log", function()
    local INTERVAL_S = 1
    local gw, mark

    lazy_setup(function()
      gw = start_gateway(helpers.config(mocks),
                         [[require("auth_router.flow").FAILURE_LOG_INTERVAL_S = ]] .. INTERVAL_S)
    end)

    lazy_teardown(function()
      gw:stop()
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    it("an outage writes one plain line per failure (kind, address, reason), at most one per interval "
       .. "per worker, and then counts the lines it held back", function()
      local list = {}
      for i = 1, 30 do
        list[i] = token_as(({ "badhttp", "error", "garbage" })[i % 3 + 1])
      end
      local results = many(gw, 30, function(i) return bearer(list[i]) end, 1)
      assert_all_unavailable(results)
      local log = gw:error_log(mark)
      no_trace(log)
      helpers.assert_clean_log(log, { AUTH_FAILED })
      local lines = helpers.count_lines(log, "[auth-router] auth service")
      assert.is_true(lines >= 1 and lines <= WORKERS, lines .. " lines")
      -- every line of the window is a whole log entry: nothing continues it
      for line in log:gmatch("[^\n]+") do
        assert.matches("^%d+/%d+/%d+ %d+:%d+:%d+ %[", line)
      end
      assert.matches("failed %((%a+)%): ", log)

      socket.sleep(INTERVAL_S + 0.1)
      local mark2 = gw:log_mark()
      results = many(gw, 10, function() return bearer(token_as("error")) end, 1)
      assert_all_unavailable(results)
      log = gw:error_log(mark2)
      no_trace(log)
      assert.matches("failed %(answer%): auth service answered status 500 %(%d+ more failures since "
                     .. "the last such line%)", log)
      assert.is_true(helpers.count_lines(log, "[auth-router] auth service") <= WORKERS)
    end)
  end)
end)
