-- auth_router.openresty in real nginx: authentication against a real (mock)
-- auth service that counts its calls. Issue 3 "Prove it": L1/L2 cache and TTL,
-- single flight across workers, verdicts, fail-closed on every kind of auth
-- failure, stale-while-error, Cache-Control / exp, spoofing and header
-- injection, purge, L1-only mode, and no credential in the error log.
--
-- Every gateway runs with 2 workers listening with reuseport (the kernel
-- spreads our fresh connections over both) and with error_log at debug level
-- for the whole file; each case checks the error log of its own window.
--
--   AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/02-auth_spec.lua

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson"
local socket  = require "socket"

local ROUNDS    = 2
local WORKERS   = 2
local LOG_LEVEL = "debug"

local UNAUTHORIZED  = { message = "Unauthorized" }
local FORBIDDEN     = { message = "Forbidden" }
local NO_CREDENTIAL = { message = "No credentials found in request" }
local UNAVAILABLE   = { message = "Authentication service unavailable" }
local MOCK_DENY_REALM = 'Bearer realm="mock", error="invalid_token"'

-- error log lines the plugin may write when the auth service fails
local AUTH_FAILED    = "%[auth%-router%] auth service 127%.0%.0%.1:%d+"
local SOCKET_TIMEOUT = "lua tcp socket read timed out"
local SOCKET_REFUSED = "connect%(%) failed %(111: Connection refused%)"

-- Every credential token contains MARK (or is a json- token), so the final
-- scan of the error logs can prefilter lines cheaply.
local MARK = "crd"
local TOKENS = {}  -- every credential token sent to a gateway
local LOGS   = {}  -- error log text of every gateway, taken when it stops

local mocks


------------------------------------------------------------------------
-- small helpers

local function remember(token)
  TOKENS[#TOKENS + 1] = token
  return token
end

--- good-<id>: the mock answers 200 with account id "crd-<name>".
local function good(name)
  return remember("good-" .. MARK .. "-" .. name)
end

--- A unique token the mock answers as its canned token `behaviour`.
local function token_as(name, behaviour)
  local t = remember("tk-" .. MARK .. "-" .. name)
  mocks:behave(t, behaviour)
  return t
end

--- A json-<base64> token: the mock answers 200 with `account`.
local function json_token(account)
  return remember(helpers.json_token(account))
end

local function bearer(token, extra)
  local h = { Authorization = "Bearer " .. token }
  for k, v in pairs(extra or {}) do
    h[k] = v
  end
  return h
end

local function get(gw, path, headers)
  return helpers.request_json("GET", gw.gw_url .. path, headers)
end

--- `n` requests to `path` with `headers`, `concurrency` at a time (default all).
local function many(gw, n, path, headers, concurrency)
  local list = {}
  for i = 1, n do
    list[i] = { url = gw.gw_url .. path .. "?i=" .. i, headers = headers }
  end
  return helpers.request_many(list, concurrency or n)
end

--- Asserts every result has `status` (and passes `check`); returns the
-- number of distinct workers that answered.
local function assert_all(results, status, check)
  local pids, n = {}, 0
  for i, r in ipairs(results) do
    assert(not r.err, "request " .. i .. " failed: " .. tostring(r.err))
    assert.equal(status, r.status, "request " .. i .. ": " .. tostring(r.body))
    if check then
      check(r)
    end
    local pid = r.headers["x-worker-pid"]
    if pid and not pids[pid] then
      pids[pid] = true
      n = n + 1
    end
  end
  return n
end

local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  return ok and v or body
end

local all_stats = helpers.all_stats

local delta = helpers.delta

local function sleep_until(t)
  local d = t - socket.gettime()
  if d > 0 then
    socket.sleep(d)
  end
end

local function start_gateway(name, config, opts)
  opts = opts or {}
  local gw = helpers.start({
    mocks = mocks,
    workers = opts.workers or WORKERS,
    listen_options = "reuseport",
    log_level = LOG_LEVEL,
    config = config,
    locations = opts.locations,
  })
  gw.name = name
  return gw
end

local function stop_gateway(gw)
  if gw then
    LOGS[#LOGS + 1] = { name = gw.name, text = gw:error_log() }
    gw:stop()
  end
end

--- A denied or failed answer: the plugin's JSON, never the upstream's echo.
local function assert_plugin_answer(status, expected_status, body, headers, expected_body)
  assert.equal(expected_status, status, cjson.encode(body))
  assert.same(expected_body, body)
  assert.matches("application/json", headers["content-type"], 1, true)
  assert.is_nil(headers["x-upstream"])
end


describe("auth_router.openresty authentication (" .. WORKERS .. " workers, debug log)", function()

  lazy_setup(function()
    mocks = helpers.start_mocks()
  end)

  lazy_teardown(function()
    if mocks then
      mocks:stop()
    end
  end)


  ----------------------------------------------------------------------
  describe("cache and verdicts", function()
    local TTL, NEG_TTL = 3, 0.5
    local gw, mark

    lazy_setup(function()
      gw = start_gateway("cache", helpers.config(mocks, {
        auth = { ttl_s = TTL, negative_ttl_s = NEG_TTL },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }))
    end)

    lazy_teardown(function()
      stop_gateway(gw)
    end)

    before_each(function()
      mark = gw:log_mark()
    end)


    it("1000 concurrent requests over 10 credentials make exactly 10 auth calls; after ttl_s "
       .. "one more per credential", function()
      local creds = {}
      for i = 1, 10 do
        creds[i] = good("load" .. i)
      end
      local function batch(n)
        local list = {}
        for i = 1, n do
          local c = creds[(i - 1) % 10 + 1]
          list[i] = { url = gw.gw_url .. "/load?i=" .. i, headers = bearer(c) }
        end
        return helpers.request_many(list, 50)
      end
      local function check_echo(r)
        local echo = cjson.decode(r.body)
        assert.equal("legacy", echo.service)
        local token = echo.headers.authorization:match("^Bearer (.*)$")
        assert.equal(token:gsub("^good%-", ""), echo.headers["x-account-id"])
      end

      local s0 = all_stats(gw)
      local calls0 = mocks:calls()
      local t0 = socket.gettime()
      local results, elapsed = batch(1000)
      assert.equal(WORKERS, assert_all(results, 200, check_echo), "not every worker served")
      -- the count below is only meaningful if the batch fits in the TTL
      assert(elapsed < TTL - 0.5, "the 1000 requests took " .. elapsed .. " s, too slow for ttl_s = " .. TTL)
      assert.equal(10, mocks:calls() - calls0)
      for _, c in ipairs(creds) do
        assert.equal(1, mocks:calls(c), c)
      end
      local s1 = all_stats(gw)
      assert.equal(1000, delta(s0, s1, "requests"))
      assert.equal(10, delta(s0, s1, "misses"))
      assert.equal(10, delta(s0, s1, "auth_calls"))
      assert.equal(990, delta(s0, s1, "l1_hits") + delta(s0, s1, "l2_hits"))
      assert.is_true(delta(s0, s1, "l2_hits") >= 1, "no worker used another worker's answer (L2)")
      assert.equal(0, delta(s0, s1, "auth_errors_lock_timeout"))

      -- every credential was fetched within the first window of 50; after
      -- its TTL each is fetched once more, whichever worker asks first
      sleep_until(t0 + TTL + 0.3)
      results = batch(200)
      assert.equal(WORKERS, assert_all(results, 200, check_echo))
      assert.equal(20, mocks:calls() - calls0)
      for _, c in ipairs(creds) do
        assert.equal(2, mocks:calls(c), c)
      end
      local s2 = all_stats(gw)
      assert.equal(10, delta(s1, s2, "misses"))
      assert.equal(0, delta(s1, s2, "stale_served"))

      helpers.assert_clean_log(gw:error_log(mark))
    end)


    it("single flight has no gap: 100 new credentials, 20 concurrent requests each over both workers, "
       .. "all 200 with exactly one auth call each", function()
      -- A fast auth answer makes the hand-over from the caller to the waiters
      -- (value stored, lock released) race with the waiters' polling; a
      -- waiter that misses the value must not fail the request, and a late
      -- request must not call the auth service again.
      local FLIGHTS, PER_FLIGHT, AT_ONCE = 100, 20, 5
      local s0 = all_stats(gw)
      local calls0 = mocks:calls()
      local tokens, failed = {}, {}
      for k = 1, FLIGHTS, AT_ONCE do
        local list = {}
        for j = k, math.min(FLIGHTS, k + AT_ONCE - 1) do
          tokens[j] = good("churn" .. j)
          for i = 1, PER_FLIGHT do
            list[#list + 1] = { url = gw.gw_url .. "/churn?i=" .. i, headers = bearer(tokens[j]) }
          end
        end
        for _, r in ipairs(helpers.request_many(list, #list)) do
          if r.status ~= 200 then
            failed[#failed + 1] = tostring(r.status or r.err) .. " " .. tostring(r.body)
          end
        end
      end
      local s1 = all_stats(gw)
      local extra = {}
      local calls = mocks:calls() - calls0
      if calls ~= FLIGHTS then
        for _, t in ipairs(tokens) do
          local n = mocks:calls(t)
          if n ~= 1 then
            extra[#extra + 1] = t .. ": " .. n .. " calls"
          end
        end
      end
      assert.same({}, failed, #failed .. " of " .. FLIGHTS * PER_FLIGHT .. " requests failed")
      assert.same({}, extra, "credentials with more than one auth call")
      assert.equal(FLIGHTS, calls)
      assert.equal(0, delta(s0, s1, "auth_errors_lock_timeout"))
      helpers.assert_clean_log(gw:error_log(mark))
    end)


    for round = 1, ROUNDS do
      it("50 concurrent requests with one new credential make exactly 1 auth call, across both "
         .. "workers (round " .. round .. ")", function()
        local t = remember("slow-300-" .. MARK .. "-sf" .. round)
        local s0 = all_stats(gw)
        local results = many(gw, 50, "/single-flight", bearer(t))
        local workers = assert_all(results, 200, function(r)
          assert.equal(MARK .. "-sf" .. round, cjson.decode(r.body).headers["x-account-id"])
        end)
        assert.equal(WORKERS, workers, "the 50 requests did not reach both workers")
        assert.equal(1, mocks:calls(t))
        local s1 = all_stats(gw)
        assert.equal(50, delta(s0, s1, "requests"))
        assert.equal(1, delta(s0, s1, "misses"))
        assert.equal(1, delta(s0, s1, "auth_calls"))
        assert.equal(0, delta(s0, s1, "auth_errors_lock_timeout"))
        assert.equal(0, delta(s0, s1, "internal_errors"))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("a 401 verdict reaches the client with WWW-Authenticate and is cached for negative_ttl_s "
         .. "(round " .. round .. ")", function()
        local t = token_as("deny" .. round, "deny")
        local s0 = all_stats(gw)
        local status, body, headers = get(gw, "/denied", bearer(t))
        assert_plugin_answer(status, 401, body, headers, UNAUTHORIZED)
        assert.equal(MOCK_DENY_REALM, headers["www-authenticate"])
        local t_fetch = socket.gettime()
        assert.equal(1, mocks:calls(t))

        local results = many(gw, 10, "/denied", bearer(t), 5)
        assert_all(results, 401, function(r)
          assert.same(UNAUTHORIZED, decode(r.body))
          assert.equal(MOCK_DENY_REALM, r.headers["www-authenticate"])
        end)
        assert(socket.gettime() - t_fetch < NEG_TTL, "repeats took longer than negative_ttl_s")
        assert.equal(1, mocks:calls(t))
        local s1 = all_stats(gw)
        assert.equal(11, delta(s0, s1, "denied"))
        assert.equal(10, delta(s0, s1, "negative_hits"))

        sleep_until(t_fetch + NEG_TTL + 0.1)
        status, body, headers = get(gw, "/denied", bearer(t))
        assert_plugin_answer(status, 401, body, headers, UNAUTHORIZED)
        assert.equal(2, mocks:calls(t))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("a 403 verdict reaches the client and is cached for negative_ttl_s (round " .. round .. ")", function()
        local t = token_as("forbid" .. round, "forbid")
        local status, body, headers = get(gw, "/forbidden", bearer(t))
        assert_plugin_answer(status, 403, body, headers, FORBIDDEN)
        assert.is_nil(headers["www-authenticate"]) -- the auth service sent none
        local t_fetch = socket.gettime()

        local results = many(gw, 10, "/forbidden", bearer(t), 5)
        assert_all(results, 403, function(r)
          assert.same(FORBIDDEN, decode(r.body))
        end)
        assert(socket.gettime() - t_fetch < NEG_TTL, "repeats took longer than negative_ttl_s")
        assert.equal(1, mocks:calls(t))

        sleep_until(t_fetch + NEG_TTL + 0.1)
        status, body, headers = get(gw, "/forbidden", bearer(t))
        assert_plugin_answer(status, 403, body, headers, FORBIDDEN)
        assert.equal(2, mocks:calls(t))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("a request without credential gets 401 without any auth call (round " .. round .. ")", function()
        local s0 = all_stats(gw)
        local calls0 = mocks:calls()
        local status, body, headers = get(gw, "/no-credential")
        assert_plugin_answer(status, 401, body, headers, NO_CREDENTIAL)
        -- X-Api-Key is not a credential header in this config
        status, body, headers = get(gw, "/no-credential", { ["X-Api-Key"] = "crd-not-a-credential" })
        assert_plugin_answer(status, 401, body, headers, NO_CREDENTIAL)
        local results = many(gw, 10, "/no-credential", nil, 5)
        assert_all(results, 401, function(r)
          assert.same(NO_CREDENTIAL, decode(r.body))
        end)
        assert.equal(calls0, mocks:calls())
        local s1 = all_stats(gw)
        assert.equal(12, delta(s0, s1, "no_credential"))
        assert.equal(0, delta(s0, s1, "auth_calls"))
        helpers.assert_clean_log(gw:error_log(mark))
      end)
    end

    it("an empty Authorization header counts as no credential: 401 without any auth call", function()
      local calls0 = mocks:calls()
      local status, body, headers = get(gw, "/empty-credential", { Authorization = "" })
      assert_plugin_answer(status, 401, body, headers, NO_CREDENTIAL)
      assert.equal(calls0, mocks:calls())
      helpers.assert_clean_log(gw:error_log(mark))
    end)

    it("without hide_credentials the upstream receives the credential", function()
      local t = good("shown")
      local status, echo = get(gw, "/shown", bearer(t))
      assert.equal(200, status)
      assert.equal("Bearer " .. t, echo.headers.authorization)
      helpers.assert_clean_log(gw:error_log(mark))
    end)
  end)


  ----------------------------------------------------------------------
  describe("auth service failures", function()
    local TIMEOUT_MS, TTL, STALE = 300, 0.5, 1
    local gw, mark

    lazy_setup(function()
      gw = start_gateway("failures", helpers.config(mocks, {
        auth = { timeout_ms = TIMEOUT_MS, ttl_s = TTL, stale_ttl_s = STALE },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }))
    end)

    lazy_teardown(function()
      stop_gateway(gw)
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    local ERRORS = { "auth_errors_unreachable", "auth_errors_timeout", "auth_errors_status",
                     "auth_errors_invalid", "auth_errors_lock_timeout", "auth_errors_flight_failed" }

    local FAILURES = {
      { what = "the auth service hanging past timeout_ms", as = "slow-1000-hang",
        counter = "auth_errors_timeout", allowed = { SOCKET_TIMEOUT } },
      { what = "a 500 from the auth service", as = "error", counter = "auth_errors_status" },
      { what = "a 503 from the auth service", as = "unavailable", counter = "auth_errors_status" },
      { what = "an answer that is not JSON", as = "garbage", counter = "auth_errors_invalid" },
      { what = "an oversized answer (> 1 MiB)", as = "oversized-1100", counter = "auth_errors_invalid" },
      { what = "an account without id", as = "noid", counter = "auth_errors_invalid" },
      { what = "a connection closed without an answer", as = "close" },
    }

    for round = 1, ROUNDS do
      for i, case in ipairs(FAILURES) do
        it("fails closed with 503 on " .. case.what .. ", and does not cache the error (round "
           .. round .. ")", function()
          local t = token_as("fail" .. i .. "-" .. round, case.as)
          local s0 = all_stats(gw)
          for n = 1, 2 do
            local status, body, headers = get(gw, "/fail", bearer(t))
            assert_plugin_answer(status, 503, body, headers, UNAVAILABLE)
            assert.equal(n, mocks:calls(t), "errors must not be cached")
          end
          local s1 = all_stats(gw)
          if case.counter then
            assert.equal(2, delta(s0, s1, case.counter))
          end
          local errors = 0
          for _, name in ipairs(ERRORS) do
            errors = errors + delta(s0, s1, name)
          end
          assert.equal(2, errors)
          assert.equal(0, delta(s0, s1, "stale_served"))
          assert.equal(0, delta(s0, s1, "misses"))
          assert.equal(0, delta(s0, s1, "internal_errors"))
          local allowed = { AUTH_FAILED }
          for _, a in ipairs(case.allowed or {}) do
            allowed[#allowed + 1] = a
          end
          helpers.assert_clean_log(gw:error_log(mark), allowed)
        end)
      end

      it("20 concurrent requests while the auth service hangs share its one call and all fail closed "
         .. "(round " .. round .. ")", function()
        local t = token_as("hang-many" .. round, "slow-1000-hang")
        local s0 = all_stats(gw)
        local results = many(gw, 20, "/fail", bearer(t))
        assert.equal(WORKERS, assert_all(results, 503, function(r)
          assert.same(UNAVAILABLE, decode(r.body))
        end))
        assert.equal(1, mocks:calls(t))
        local s1 = all_stats(gw)
        assert.equal(1, delta(s0, s1, "auth_calls"))
        assert.equal(1, delta(s0, s1, "auth_errors_timeout"))
        -- the waiters are counted as sharing a failed call, not as timing out
        assert.equal(19, delta(s0, s1, "auth_errors_flight_failed"))
        local errors = 0
        for _, name in ipairs(ERRORS) do
          errors = errors + delta(s0, s1, name)
        end
        assert.equal(20, errors)
        helpers.assert_clean_log(gw:error_log(mark), { AUTH_FAILED, SOCKET_TIMEOUT })
      end)

      it("accepts a chunked auth answer (round " .. round .. ")", function()
        local id = MARK .. "-chunked" .. round
        local t = token_as("chunked" .. round, "chunked-" .. id)
        local status, echo = get(gw, "/chunked", bearer(t))
        assert.equal(200, status, cjson.encode(echo))
        assert.equal(id, echo.headers["x-account-id"])
        status, echo = get(gw, "/chunked", bearer(t))
        assert.equal(200, status, cjson.encode(echo))
        assert.equal(id, echo.headers["x-account-id"])
        assert.equal(1, mocks:calls(t))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("accepts a big auth answer under the 1 MiB cap (round " .. round .. ")", function()
        local t = token_as("big" .. round, "oversized-900")
        local status, echo = get(gw, "/big", bearer(t))
        assert.equal(200, status, type(echo) == "table" and cjson.encode(echo) or echo)
        assert.equal("big", echo.headers["x-account-id"])
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("serves a cached account as stale while the auth service fails, within stale_ttl_s only "
         .. "(round " .. round .. ")", function()
        local id = MARK .. "-stale" .. round
        local t = token_as("stale" .. round, "good-" .. id)
        local status, echo = get(gw, "/stale", bearer(t))
        assert.equal(200, status)
        assert.equal(id, echo.headers["x-account-id"])
        local t_fetch = socket.gettime()
        assert.equal(1, mocks:calls(t))

        mocks:behave(t, "error") -- the auth service now fails for this credential
        sleep_until(t_fetch + TTL + 0.1)
        local s0 = all_stats(gw)
        local results = many(gw, 16, "/stale", bearer(t), 1)
        assert.equal(WORKERS, assert_all(results, 200, function(r)
          assert.equal(id, cjson.decode(r.body).headers["x-account-id"])
        end), "stale entries were not served by both workers")
        assert(socket.gettime() < t_fetch + TTL + STALE, "too slow: left the stale window")
        local s1 = all_stats(gw)
        assert.equal(16, delta(s0, s1, "stale_served"))
        local calls = mocks:calls(t) - 1
        assert.is_true(calls >= 1 and calls <= 16, "auth calls during the failure: " .. calls)

        sleep_until(t_fetch + TTL + STALE + 0.1)
        local status2, body2, headers2 = get(gw, "/stale", bearer(t))
        assert_plugin_answer(status2, 503, body2, headers2, UNAVAILABLE)
        local s2 = all_stats(gw)
        assert.equal(0, delta(s1, s2, "stale_served"))
        helpers.assert_clean_log(gw:error_log(mark), { AUTH_FAILED })
      end)
    end
  end)


  ----------------------------------------------------------------------
  describe("auth service refusing connections", function()
    local gw, gw502, mark, mark502

    lazy_setup(function()
      local closed = helpers.free_ports(1)[1]
      local url = "http://127.0.0.1:" .. closed .. "/auth"
      gw = start_gateway("refused", helpers.config(mocks, { auth = { url = url } }))
      gw502 = start_gateway("refused-502", helpers.config(mocks, { auth = { url = url, failure_status = 502 } }))
    end)

    lazy_teardown(function()
      stop_gateway(gw)
      stop_gateway(gw502)
    end)

    before_each(function()
      mark, mark502 = gw:log_mark(), gw502:log_mark()
    end)

    for round = 1, ROUNDS do
      it("fails closed with 503 when the auth service refuses connections (round " .. round .. ")", function()
        local t = good("refused" .. round)
        local s0 = all_stats(gw)
        local results = many(gw, 4, "/refused", bearer(t), 1)
        assert_all(results, 503, function(r)
          assert.same(UNAVAILABLE, decode(r.body))
        end)
        local s1 = all_stats(gw)
        assert.equal(4, delta(s0, s1, "auth_errors_unreachable"))
        helpers.assert_clean_log(gw:error_log(mark), { AUTH_FAILED, SOCKET_REFUSED })
      end)

      it("answers failure_status (502) when configured (round " .. round .. ")", function()
        local t = good("refused502-" .. round)
        local status, body, headers = get(gw502, "/refused", bearer(t))
        assert_plugin_answer(status, 502, body, headers, UNAVAILABLE)
        helpers.assert_clean_log(gw502:error_log(mark502), { AUTH_FAILED, SOCKET_REFUSED })
      end)
    end
  end)


  ----------------------------------------------------------------------
  describe("account headers and TTL hints", function()
    local gw, mark

    lazy_setup(function()
      gw = start_gateway("headers", helpers.config(mocks, {
        auth = { ttl_s = 60 },
        upstream_headers = {
          { name = "X-Account-Id", pointer = "/id" },
          { name = "X-Plan", pointer = "/plan" },
          { name = "X-Gateway", value = "auth-router" },
        },
        response_headers = {
          { name = "X-Account-Name", pointer = "/name" },
          { name = "X-Account-Plan", pointer = "/plan" },
        },
        hide_credentials = true,
      }))
    end)

    lazy_teardown(function()
      stop_gateway(gw)
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    for round = 1, ROUNDS do
      it("strips spoofed upstream headers and sends the account's; response headers reach the client; "
         .. "hide_credentials strips Authorization (round " .. round .. ")", function()
        local id = MARK .. "-hdr" .. round
        local t = good("hdr" .. round)
        local spoof = bearer(t, {
          ["X-Account-Id"] = { "admin", "root" },
          ["x-plan"] = "enterprise",
          ["X-Gateway"] = "spoofed",
        })
        for _ = 1, 2 do -- a miss, then a hit
          local status, echo, headers = get(gw, "/headers", spoof)
          assert.equal(200, status)
          assert.equal(id, echo.headers["x-account-id"])
          assert.equal("pro", echo.headers["x-plan"])
          assert.equal("auth-router", echo.headers["x-gateway"])
          assert.is_nil(echo.headers.authorization)
          assert.equal("Account " .. id, headers["x-account-name"])
          assert.equal("pro", headers["x-account-plan"])
        end
        assert.equal(1, mocks:calls(t))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("strips a spoofed header even when the account has no such field (round " .. round .. ")", function()
        local id = MARK .. "-noplan" .. round
        local t = json_token({ id = id })
        local status, echo, headers = get(gw, "/headers", bearer(t, { ["X-Plan"] = "enterprise" }))
        assert.equal(200, status)
        assert.equal(id, echo.headers["x-account-id"])
        assert.is_nil(echo.headers["x-plan"])
        assert.is_nil(headers["x-account-plan"])
        assert.is_nil(headers["x-account-name"])
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("drops and counts account values with CR/LF instead of injecting headers (round "
         .. round .. ")", function()
        local id = MARK .. "-crlf" .. round
        local t = json_token({ id = id, plan = "pro\r\nX-Evil: 1", name = "Evil\r\nSet-Cookie: evil=1" })
        local s0 = all_stats(gw)
        local status, echo, headers = get(gw, "/headers", bearer(t))
        assert.equal(200, status)
        assert.equal(id, echo.headers["x-account-id"])
        assert.is_nil(echo.headers["x-plan"])
        assert.is_nil(echo.headers["x-evil"])
        assert.is_nil(headers["x-account-plan"])
        assert.is_nil(headers["x-account-name"])
        assert.is_nil(headers["x-evil"])
        assert.is_nil(headers["set-cookie"])
        local s1 = all_stats(gw)
        -- plan (upstream and response rule) and name (response rule)
        assert.equal(3, delta(s0, s1, "header_values_dropped"))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("drops and counts account values with NUL or over the length cap (round " .. round .. ")", function()
        local id = MARK .. "-nul" .. round
        local t = json_token({ id = id, plan = "pro\0x", name = string.rep("n", 5000) })
        local s0 = all_stats(gw)
        local status, echo, headers = get(gw, "/headers", bearer(t))
        assert.equal(200, status)
        assert.equal(id, echo.headers["x-account-id"])
        assert.is_nil(echo.headers["x-plan"])
        assert.is_nil(headers["x-account-plan"])
        assert.is_nil(headers["x-account-name"])
        local s1 = all_stats(gw)
        assert.equal(3, delta(s0, s1, "header_values_dropped"))
        helpers.assert_clean_log(gw:error_log(mark))
      end)
    end

    it("Cache-Control: max-age shortens ttl_s", function()
      local t = token_as("maxage", "maxage-1-" .. MARK .. "-maxage")
      local status = get(gw, "/maxage", bearer(t))
      local t_fetch = socket.gettime()
      assert.equal(200, status)
      assert_all(many(gw, 6, "/maxage", bearer(t), 3), 200)
      assert.equal(1, mocks:calls(t))
      sleep_until(t_fetch + 1.1)
      status = get(gw, "/maxage", bearer(t))
      assert.equal(200, status)
      assert.equal(2, mocks:calls(t))
      helpers.assert_clean_log(gw:error_log(mark))
    end)

    it("Cache-Control: max-age=0 and no-store are not cached", function()
      for _, as in ipairs({ "maxage-0-" .. MARK .. "-m0", "nostore-" .. MARK .. "-ns" }) do
        local t = token_as(as, as)
        for n = 1, 3 do
          local status, echo = get(gw, "/nostore", bearer(t))
          assert.equal(200, status)
          assert.is_string(echo.headers["x-account-id"])
          assert.equal(n, mocks:calls(t), as)
        end
      end
      helpers.assert_clean_log(gw:error_log(mark))
    end)

    it("an exp in the account shortens ttl_s (never cached past exp)", function()
      -- whole epoch seconds: at least 0.3 s of TTL left for the repeats below
      local exp = math.ceil(socket.gettime() + 0.3)
      local t = token_as("exp", "exp-" .. exp .. "-" .. MARK .. "-exp")
      local status = get(gw, "/exp", bearer(t))
      assert.equal(200, status)
      assert_all(many(gw, 6, "/exp", bearer(t), 3), 200)
      assert.equal(1, mocks:calls(t))
      -- exp is whole seconds: wait until the epoch second `exp` has begun
      while os.time() < exp do
        socket.sleep(0.05)
      end
      socket.sleep(0.05)
      status = get(gw, "/exp", bearer(t))
      assert.equal(200, status)
      assert.equal(2, mocks:calls(t))

      -- an exp already past: not cached at all
      local t2 = token_as("exp-past", "exp-" .. (exp - 100) .. "-" .. MARK .. "-exp-past")
      for n = 1, 2 do
        status = get(gw, "/exp", bearer(t2))
        assert.equal(200, status)
        assert.equal(n, mocks:calls(t2))
      end
      helpers.assert_clean_log(gw:error_log(mark))
    end)
  end)


  ----------------------------------------------------------------------
  describe("purge", function()
    -- purge(credential from the X-Purge header) or purge() without it
    local PURGE_LOCATION = [[
        location = /__purge {
            content_by_lua_block {
                local ok, err = require("auth_router.openresty").purge(ngx.var.http_x_purge)
                ngx.header["Content-Type"] = "application/json"
                ngx.say(require("cjson.safe").encode({ ok = ok or false, err = err,
                                                       worker_pid = ngx.worker.pid() }))
            }
        }]]
    local gw, mark

    lazy_setup(function()
      gw = start_gateway("purge", helpers.config(mocks, {
        auth = { ttl_s = 60 },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }), { locations = PURGE_LOCATION })
    end)

    lazy_teardown(function()
      stop_gateway(gw)
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    local function purge(credential)
      local status, body = get(gw, "/__purge", credential and { ["X-Purge"] = credential } or nil)
      assert.equal(200, status, tostring(body))
      assert.is_true(body.ok, tostring(body.err))
      return body.worker_pid
    end

    -- Caches `tokens` in both workers (one auth call each).
    local function warm(tokens)
      for _, t in ipairs(tokens) do
        assert.equal(WORKERS, assert_all(many(gw, 20, "/purge", bearer(t)), 200), "warm-up missed a worker")
        assert.equal(1, mocks:calls(t), "warm-up: 20 concurrent requests with a new credential must make "
                     .. "exactly 1 auth call (single flight)")
      end
    end

    -- Sends `token` on fresh connections until a worker other than `pid`
    -- answers; returns that worker's pid.
    local function request_on_other_worker(pid, token)
      for _ = 1, 100 do
        local status, _, headers = get(gw, "/purge", bearer(token))
        assert.equal(200, status)
        local answered = tonumber(headers["x-worker-pid"])
        if answered ~= pid then
          return answered
        end
      end
      error("no request reached a worker other than " .. pid)
    end

    for round = 1, ROUNDS do
      it("purge(credential) makes the next request call the auth service again, in both workers "
         .. "(round " .. round .. ")", function()
        local t = good("purge" .. round)
        warm({ t })
        local purger = purge("Bearer " .. t)
        local _, b0 = all_stats(gw)
        local other = request_on_other_worker(purger, t)
        local _, b1 = all_stats(gw)
        -- the other worker applied the purge: its cached entry was not used
        assert.equal(0, delta(b0[other], b1[other], "l1_hits"),
                     "worker " .. other .. " served the purged credential from its L1")
        assert.equal(1, delta(b0[other], b1[other], "misses") + delta(b0[other], b1[other], "l2_hits"))
        -- exactly one new auth call, whichever worker asked first
        assert_all(many(gw, 20, "/purge", bearer(t)), 200)
        assert.equal(2, mocks:calls(t))
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("purge() without argument purges every credential in both workers (round " .. round .. ")", function()
        local tokens = { good("all-a" .. round), good("all-b" .. round), good("all-c" .. round) }
        warm(tokens)
        local purger = purge(nil)
        local _, b0 = all_stats(gw)
        local others = {}
        for i, t in ipairs(tokens) do
          others[i] = request_on_other_worker(purger, t)
        end
        local _, b1 = all_stats(gw)
        local other = others[1]
        assert.equal(0, delta(b0[other], b1[other], "l1_hits"),
                     "worker " .. other .. " served a purged credential from its L1")
        for _, t in ipairs(tokens) do
          assert_all(many(gw, 10, "/purge", bearer(t)), 200)
          assert.equal(2, mocks:calls(t), t)
        end
        helpers.assert_clean_log(gw:error_log(mark))
      end)

      it("purges made in both workers are all applied (a worker's own purge does not skip "
         .. "another's) (round " .. round .. ")", function()
        local a, b = good("inter-a" .. round), good("inter-b" .. round)
        warm({ a, b })
        local p = purge("Bearer " .. a)
        -- purge b from the other worker, before that worker serves any request
        local q
        for _ = 1, 100 do
          local pid = purge("Bearer " .. b)
          if pid ~= p then
            q = pid
            break
          end
        end
        assert(q, "no purge reached the second worker")
        local _, b0 = all_stats(gw)
        local answered = request_on_other_worker(p, a)
        assert.equal(q, answered)
        local _, b1 = all_stats(gw)
        assert.equal(0, delta(b0[q], b1[q], "l1_hits"),
                     "worker " .. q .. " served credential a from its L1 although worker " .. p .. " purged it")
        helpers.assert_clean_log(gw:error_log(mark))
      end)
    end
  end)


  ----------------------------------------------------------------------
  -- Shared-dict entries are read into a 1 KiB per-worker buffer; a larger
  -- one comes back in a copy nginx mallocs (and Lua frees).
  describe("shared-dict entries larger than the read buffer (L1 of one entry)", function()
    local gw

    lazy_setup(function()
      gw = start_gateway("big-l2", helpers.config(mocks, {
        auth = { ttl_s = 60, cache_size = 1 },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" },
                             { name = "X-Note-A", pointer = "/a" },
                             { name = "X-Note-B", pointer = "/b" } },
      }), { workers = 1 })
    end)

    lazy_teardown(function()
      stop_gateway(gw)
    end)

    -- ~3 KiB entries (the token carries the account: nginx takes 8 KiB headers)
    it("serves them from L2 with every byte", function()
      local tokens, accounts = {}, {}
      for i = 1, 2 do
        accounts[i] = { id = MARK .. "-big" .. i, a = string.rep(tostring(i), 1500),
                        b = string.rep("b", 1500) .. i }
        tokens[i] = json_token(accounts[i])
      end
      local s0 = all_stats(gw)
      for round = 1, 5 do
        for i = 1, 2 do -- the other credential evicted this one from L1
          local status, echo = get(gw, "/big?r=" .. round, bearer(tokens[i]))
          assert.equal(200, status)
          assert.equal(accounts[i].id, echo.headers["x-account-id"])
          assert.equal(accounts[i].a, echo.headers["x-note-a"])
          assert.equal(accounts[i].b, echo.headers["x-note-b"])
        end
      end
      local s1 = all_stats(gw)
      assert.equal(2, delta(s0, s1, "misses"))
      assert.equal(8, delta(s0, s1, "l2_hits"))
      assert.equal(0, delta(s0, s1, "l1_hits"))
      helpers.assert_clean_log(gw:error_log())
    end)
  end)


  describe("without the shared dict (L1 only)", function()
    local MISSING = "[auth-router] lua_shared_dict 'no_such_dict' not found"
    local gw, mark

    lazy_setup(function()
      gw = start_gateway("l1-only", helpers.config(mocks, {
        auth = { shared_dict = "no_such_dict", ttl_s = 60 },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }))
    end)

    lazy_teardown(function()
      stop_gateway(gw)
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    for round = 1, ROUNDS do
      it("authenticates and caches per worker: one auth call per worker (round " .. round .. ")", function()
        local t = good("l1only" .. round)
        local id = MARK .. "-l1only" .. round
        local s0 = all_stats(gw)
        local workers = assert_all(many(gw, 40, "/l1", bearer(t)), 200, function(r)
          assert.equal(id, cjson.decode(r.body).headers["x-account-id"])
        end)
        assert.equal(WORKERS, workers)
        assert.equal(WORKERS, mocks:calls(t)) -- single flight within each worker
        assert_all(many(gw, 40, "/l1", bearer(t)), 200)
        assert.equal(WORKERS, mocks:calls(t))
        local s1 = all_stats(gw)
        assert.equal(WORKERS, delta(s0, s1, "misses"))
        assert.equal(0, delta(s0, s1, "l2_hits"))

        local t2 = token_as("l1deny" .. round, "deny")
        local status, body, headers = get(gw, "/l1", bearer(t2))
        assert_plugin_answer(status, 401, body, headers, UNAUTHORIZED)
        helpers.assert_clean_log(gw:error_log(mark))
      end)
    end

    it("says once in the error log that it runs L1 only", function()
      local log = gw:error_log()
      assert.equal(1, helpers.count_lines(log, MISSING), log:sub(1, 2000))
      helpers.assert_clean_log(log, { helpers.literal(MISSING) })
    end)
  end)


  ----------------------------------------------------------------------
  describe("error logs", function()
    -- nginx's own --with-debug request tracing prints every request header
    -- (and the request it proxies) whatever the modules do; everything else
    -- must never contain a credential.
    local NGINX_HEADER_TRACE = {
      "^%d+/%d+/%d+ [%d:]+ %[debug%] %d+#%d+: %*%d+ http header: \"",
      "^%d+/%d+/%d+ [%d:]+ %[debug%] %d+#%d+: %*%d+ http proxy header:",
    }
    local ENTRY_START = "^%d%d%d%d/%d%d/%d%d %d%d:%d%d:%d%d %["

    it("never contain a credential, even at debug level, in any case above", function()
      assert.is_true(#TOKENS > 50)
      assert.is_true(#LOGS >= 6)
      local leaks, traced = {}, 0
      for _, log in ipairs(LOGS) do
        local entry -- first line of the current log entry
        for line in log.text:gmatch("[^\n]+") do
          if line:find(ENTRY_START) then
            entry = line
          end
          if line:find(MARK, 1, true) or line:find("json-", 1, true) then
            local nginx_trace = false
            for _, pat in ipairs(NGINX_HEADER_TRACE) do
              if entry and entry:find(pat) then
                nginx_trace = true
              end
            end
            if nginx_trace then
              traced = traced + 1
            else
              for _, t in ipairs(TOKENS) do
                if line:find(t, 1, true) then
                  leaks[#leaks + 1] = log.name .. ": " .. line
                  break
                end
              end
            end
          end
        end
      end
      if helpers.NGINX_DEBUG then
        assert.is_true(traced > 0, "the logs are not at debug level")
      end
      assert.same({}, leaks)
    end)
  end)
end)
