-- Node-wide metrics (require("auth_router.openresty").metrics(), the
-- gateway's /metrics): a known traffic mix through two workers, then a
-- scrape parsed as the Prometheus text exposition format (a small parser
-- below, not pattern greps), whose values must equal the mix summed over
-- both workers. Without the shared dict, the metrics are the answering
-- worker's and say so.

local helpers = require "spec.openresty.helpers"
local socket  = require "socket"

local WORKERS = 2

-- Failed auth calls are logged (rate-limited) at error level: expected here.
local ALLOWED_LOG = { "auth service 127%.0%.0%.1:%d+ failed %(answer%): auth service answered status 500" }


-- The exposition format parser shared with spec/kong (parse, value).
local prom = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
                    .. "/../fixtures/prometheus.lua")
local parse, value = prom.parse, prom.value


local function scrape(gw)
  local status, headers, body = helpers.request("GET", gw.gw_url .. "/metrics")
  assert.equal(200, status)
  assert.equal("text/plain; version=0.0.4; charset=utf-8", headers["content-type"])
  return parse(body), body
end


-- Scrapes until `pred(m)` holds (other workers flush every second).
local function scrape_until(gw, pred)
  local m, text
  local deadline = socket.gettime() + 5
  repeat
    m, text = scrape(gw)
    if pred(m) then
      return m, text
    end
    socket.sleep(0.1)
  until socket.gettime() > deadline
  return m, text
end


describe("metrics()", function()
  describe("parser (of this spec)", function()
    it("reads labels with escapes, histograms and comments", function()
      local m = parse(table.concat({
        "# a comment",
        "# HELP x_total Things.",
        "# TYPE x_total counter",
        'x_total{route="a\\"b\\\\c\\nd",tier="l1"} 3',
        "# HELP h_seconds A histogram.",
        "# TYPE h_seconds histogram",
        'h_seconds_bucket{le="0.5"} 1',
        'h_seconds_bucket{le="+Inf"} 2',
        "h_seconds_sum 0.75",
        "h_seconds_count 2",
      }, "\n") .. "\n")
      assert.same({ "a comment" }, m.comments)
      assert.equal(3, value(m, "x_total", { route = 'a"b\\c\nd', tier = "l1" }))
      assert.is_nil(value(m, "x_total", { route = 'a"b\\c\nd' }))
      assert.equal(2, value(m, "h_seconds_bucket", { le = "+Inf" }))
      assert.equal(0.75, value(m, "h_seconds_sum"))
    end)

    it("refuses a sample without a TYPE and a line without a value", function()
      assert.has_error(function() parse("x_total 1\n") end)
      assert.has_error(function() parse("# TYPE x_total counter\nx_total\n") end)
      assert.has_error(function() parse('# TYPE x_total counter\nx_total{a="1} 1\n') end)
    end)
  end)


  describe("with the shared dict (" .. WORKERS .. " workers)", function()
    local mocks, gw

    lazy_setup(function()
      mocks = helpers.start_mocks()
      gw = helpers.start({
        mocks = mocks,
        workers = WORKERS,
        listen_options = "reuseport",
        config = helpers.config(mocks, {
          routes = {
            { name = "email", paths = { "/send" }, target = mocks.targets.email },
            { name = "calendar", paths = { "/events" }, target = mocks.targets.calendar },
          },
        }),
      })
    end)

    lazy_teardown(function()
      helpers.stop_all()
    end)

    it("sums a known traffic mix over both workers", function()
      local tag = tostring(math.random(1e9))
      local function bearer(t) return { Authorization = "Bearer " .. t } end
      local expect = { requests = 0 }
      local function send(path, headers, status)
        local got = helpers.request("GET", gw.gw_url .. path, headers)
        assert.equal(status, got, path)
        expect.requests = expect.requests + 1
      end
      -- 5 accounts, 4 requests each to the email route: 5 auth calls, 15 cache hits
      for i = 1, 5 do
        for _ = 1, 4 do
          send("/send", bearer("good-m" .. i .. "-" .. tag), 200)
        end
      end
      -- 2 accounts, 3 requests each to the calendar route: 2 calls, 4 hits
      for i = 6, 7 do
        for _ = 1, 3 do
          send("/events", bearer("good-m" .. i .. "-" .. tag), 200)
        end
      end
      -- routed nowhere (the default target): 2 hits of account 1
      send("/other", bearer("good-m1-" .. tag), 200)
      send("/other", bearer("good-m1-" .. tag), 200)
      -- no credential: 3, no auth call
      for _ = 1, 3 do
        send("/send", nil, 401)
      end
      -- a denied credential 4 times: 1 call, then 3 cached denials
      for _ = 1, 4 do
        send("/send", bearer("deny-" .. tag), 401)
      end
      -- the auth service failing twice: 2 calls, nothing stale, 503
      send("/send", bearer("error"), 503)
      send("/send", bearer("error"), 503)

      local by_worker = select(2, helpers.all_stats(gw))
      local served = 0
      for _, s in pairs(by_worker) do
        assert.is_true(s.requests > 0, "each worker served part of the mix")
        served = served + s.requests
      end
      assert.equal(expect.requests, served)

      local m, text = scrape_until(gw, function(m)
        return value(m, "auth_router_requests_total") == expect.requests
      end)
      local function v(name, labels)
        local x = value(m, name, labels)
        assert(x, "no sample " .. name .. " in:\n" .. text)
        return x
      end

      assert.equal(37, expect.requests)
      assert.equal(37, v("auth_router_requests_total"))
      assert.equal(28, v("auth_router_verdicts_total", { verdict = "allow" }))
      assert.equal(4, v("auth_router_verdicts_total", { verdict = "deny" }))
      assert.equal(3, v("auth_router_verdicts_total", { verdict = "no_credential" }))
      assert.equal(2, v("auth_router_verdicts_total", { verdict = "failed" }))

      assert.equal(7, v("auth_router_auth_calls_total", { outcome = "ok" }))
      assert.equal(1, v("auth_router_auth_calls_total", { outcome = "denied" }))
      assert.equal(2, v("auth_router_auth_calls_total", { outcome = "status" }))
      for _, outcome in ipairs({ "unreachable", "timeout", "invalid" }) do
        assert.equal(0, v("auth_router_auth_calls_total", { outcome = outcome }))
      end

      -- Which tier answered depends on which worker took each request;
      -- the sums do not.
      local function lookups(tier, result)
        return v("auth_router_cache_lookups_total", { tier = tier, result = result })
      end
      assert.equal(21, lookups("l1", "hit") + lookups("l2", "hit"))
      assert.equal(3, lookups("l1", "negative") + lookups("l2", "negative"))
      assert.equal(34, lookups("l1", "hit") + lookups("l1", "negative") + lookups("l1", "miss"))
      assert.equal(lookups("l1", "miss"),
                   lookups("l2", "hit") + lookups("l2", "negative") + lookups("l2", "miss"))
      assert.equal(10, lookups("l2", "miss"))
      assert.is_true(lookups("l2", "hit") > 0, "the second worker found some accounts in L2")

      -- histogram: one observation per auth call, cumulative buckets
      local h = "auth_router_auth_call_duration_seconds"
      assert.equal(10, v(h .. "_count"))
      assert.equal(10, v(h .. "_bucket", { le = "+Inf" }))
      assert.is_true(v(h .. "_sum") > 0)
      local fam = m.families[h]
      assert.equal("histogram", fam.type)
      local prev = 0
      for _, s in ipairs(fam.samples) do
        if s.name == h .. "_bucket" then
          assert.is_true(s.value >= prev, "buckets are cumulative")
          prev = s.value
        end
      end

      assert.equal(20, v("auth_router_routed_total", { route = "email" }))
      assert.equal(6, v("auth_router_routed_total", { route = "calendar" }))
      assert.equal(0, v("auth_router_live_slots"))
      assert.equal(0, v("auth_router_internal_errors_total"))
      assert.equal("gauge", m.families.auth_router_live_slots.type)
      assert.equal("counter", m.families.auth_router_requests_total.type)
      for name, f in pairs(m.families) do
        assert.is_truthy(f.help, "HELP for " .. name)
        assert.is_truthy(name:match("^auth_router_"), name)
        if f.type == "counter" then
          assert.is_truthy(name:match("_total$"), "a counter's name ends in _total: " .. name)
        end
      end
      assert.is_truthy(m.comments[1]:match("node%-wide %(workers: 2,"), m.comments[1])

      -- a second scrape adds nothing (the scrape is not a request)
      local again = scrape(gw)
      assert.equal(37, value(again, "auth_router_requests_total"))
      assert.equal(20, value(again, "auth_router_routed_total", { route = "email" }))

      helpers.assert_clean_log(gw:error_log(), ALLOWED_LOG)
    end)
  end)


  -- The cache dict is LRU: full, it evicts what was used least, which is
  -- where the route list sits once registered. A gateway with a 64 KiB
  -- cache dict (a few hundred verdicts) gets 1500 credentials.
  describe("a full cache dict (2 workers)", function()
    local mocks, small, dedicated
    local SMALL_DICT = "lua_shared_dict ar_small 64k;"

    local function gateway(http)
      return helpers.start({
        mocks = mocks,
        workers = WORKERS,
        listen_options = "reuseport",
        http = http,
        config = helpers.config(mocks, {
          auth = { shared_dict = "ar_small" },
          routes = { { name = "email", paths = { "/send" }, target = mocks.targets.email } },
        }),
      })
    end

    lazy_setup(function()
      mocks = helpers.start_mocks()
      small = gateway(SMALL_DICT)
      dedicated = gateway(SMALL_DICT .. " lua_shared_dict auth_router_metrics 1m;")
    end)

    lazy_teardown(function()
      helpers.stop_all()
    end)

    -- 3 routed requests, their flush, 1500 new credentials (not routed),
    -- then 2 routed requests more; returns the scrape once `wanted` routed
    -- decisions and, when given, `requests` requests show (the other
    -- worker's counts arrive with its next flush, up to 1 s later).
    local function storm(gw, wanted, requests)
      local tag = tostring(math.random(1e9))
      local function send(path, token)
        assert.equal(200, (helpers.request("GET", gw.gw_url .. path,
                                           { Authorization = "Bearer " .. token })))
      end
      for _ = 1, 3 do
        send("/send", "good-full-" .. tag)
      end
      scrape_until(gw, function(m)
        return value(m, "auth_router_routed_total", { route = "email" }) == 3
      end)
      local list = {}
      for i = 1, 1500 do
        list[i] = { url = gw.gw_url .. "/other", headers = { Authorization = "Bearer good-fill" .. i .. "-" .. tag } }
      end
      for i, r in ipairs(helpers.request_many(list, 8)) do
        assert.equal(200, r.status, "request " .. i .. ": " .. tostring(r.err))
      end
      send("/send", "good-full-" .. tag)
      send("/send", "good-full-" .. tag)
      return scrape_until(gw, function(m)
        return (value(m, "auth_router_routed_total", { route = "email" }) or 0) >= wanted
           and (not requests or (value(m, "auth_router_requests_total") or 0) >= requests)
      end)
    end

    it("keeps listing a route after its registration was evicted", function()
      local m, text = storm(small, 2)
      local routed = value(m, "auth_router_routed_total", { route = "email" })
      assert.is_number(routed, text)
      assert.is_true(routed >= 2 and routed <= 5, "routed " .. tostring(routed))
      assert.is_truthy(m.comments[1]:match("shared dict 'ar_small'"), m.comments[1])
    end)

    it("counts exactly in lua_shared_dict auth_router_metrics", function()
      local m = storm(dedicated, 5, 1505)
      assert.is_truthy(m.comments[1]:match("shared dict 'auth_router_metrics'"), m.comments[1])
      assert.equal(5, value(m, "auth_router_routed_total", { route = "email" }))
      assert.equal(1505, value(m, "auth_router_requests_total"))
      helpers.assert_clean_log(dedicated:error_log())
    end)
  end)


  describe("without the shared dict (1 worker)", function()
    local mocks, gw

    lazy_setup(function()
      mocks = helpers.start_mocks()
      gw = helpers.start({
        mocks = mocks,
        workers = 1,
        config = helpers.config(mocks, {
          auth = { shared_dict = "no_such_dict" },
          routes = { { name = "email", paths = { "/send" }, target = mocks.targets.email } },
        }),
      })
    end)

    lazy_teardown(function()
      helpers.stop_all()
    end)

    it("reports the answering worker's counters and says so", function()
      for _ = 1, 3 do
        assert.equal(200, (helpers.request("GET", gw.gw_url .. "/send",
                                           { Authorization = "Bearer good-solo" })))
      end
      local m = scrape(gw)
      assert.is_truthy(m.comments[1]:match("no lua_shared_dict 'no_such_dict'"), m.comments[1])
      assert.is_truthy(m.comments[1]:match("only"), m.comments[1])
      assert.equal(3, value(m, "auth_router_requests_total"))
      assert.equal(3, value(m, "auth_router_routed_total", { route = "email" }))
      assert.equal(2, value(m, "auth_router_cache_lookups_total", { tier = "l1", result = "hit" }))
      assert.is_nil(value(m, "auth_router_cache_lookups_total", { tier = "l2", result = "hit" }))
      helpers.assert_clean_log(gw:error_log(), { "lua_shared_dict 'no_such_dict' not found" })
    end)
  end)
end)
