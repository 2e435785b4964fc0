-- The metrics renderer through the Lua binding (native.render_metrics) and
-- plugin:route_counts(), under plain LuaJIT: what Lua hands over becomes the
-- exposition text (parsed with spec/fixtures/prometheus.lua); and the
-- Grafana dashboard in examples/ queries only metrics the renderer emits.

local cjson  = require "cjson"
local native = require "auth_router_native"
local prom   = dofile("spec/fixtures/prometheus.lua")

local SECRET = string.rep("s", 32)

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end


describe("native.render_metrics()", function()
  it("renders node-wide values, routes in the order given, and comments first", function()
    local text = native.render_metrics(
      { requests = 12, l1_hits = 5, l2_misses = 2, auth_calls_ok = 2, live_slots = 3,
        ["auth_latency_le_0.01"] = 2, auth_latency_us = 9000 },
      { { "calendar", 4 }, { 'we"ird', 1 } },
      true,
      { "node-wide (2 workers)" })
    local m = prom.parse(text)
    assert.same({ "node-wide (2 workers)" }, m.comments)
    assert.equal(12, prom.value(m, "auth_router_requests_total"))
    assert.equal(5, prom.value(m, "auth_router_cache_lookups_total", { tier = "l1", result = "hit" }))
    assert.equal(2, prom.value(m, "auth_router_cache_lookups_total", { tier = "l2", result = "miss" }))
    assert.equal(2, prom.value(m, "auth_router_auth_calls_total", { outcome = "ok" }))
    assert.equal(3, prom.value(m, "auth_router_live_slots"))
    assert.equal(4, prom.value(m, "auth_router_routed_total", { route = "calendar" }))
    assert.equal(1, prom.value(m, "auth_router_routed_total", { route = 'we"ird' }))
    assert.equal(0, prom.value(m, "auth_router_auth_call_duration_seconds_bucket", { le = "0.005" }))
    assert.equal(2, prom.value(m, "auth_router_auth_call_duration_seconds_bucket", { le = "0.01" }))
    assert.equal(2, prom.value(m, "auth_router_auth_call_duration_seconds_count"))
    assert.equal(0.009, prom.value(m, "auth_router_auth_call_duration_seconds_sum"))
  end)

  it("reads the names stats() gives: a live worker's counters render", function()
    local m = prom.parse(native.render_metrics(native.stats(), {}, false))
    assert.equal(native.stats().requests, prom.value(m, "auth_router_requests_total"))
    assert.is_nil(prom.value(m, "auth_router_cache_lookups_total", { tier = "l2", result = "hit" }))
  end)

  it("stats() has a counter for every latency bucket the histogram renders", function()
    local s = native.stats()
    local m = prom.parse(native.render_metrics(s, {}, true))
    local buckets = 0
    for _, sample in ipairs(m.families.auth_router_auth_call_duration_seconds.samples) do
      if sample.name:match("_bucket$") then
        buckets = buckets + 1
        local le = sample.labels.le
        local stat = "auth_latency_le_" .. (le == "+Inf" and "inf" or le)
        assert.is_number(s[stat], stat)
      end
    end
    assert.equal(12, buckets)
  end)
end)


describe("plugin:route_counts()", function()
  it("lists every route in config order, with this worker's decisions", function()
    local plugin = assert(native.compile({
      auth = { url = "http://127.0.0.1:9000/auth" },
      routes = {
        { name = "email", paths = { "/send" }, target = "127.0.0.1:1" },
        { name = "calendar", paths = { "/events" }, target = "127.0.0.1:2" },
      },
    }, SECRET))
    assert.same({ { "email", 0 }, { "calendar", 0 } }, plugin:route_counts())
  end)
end)


describe("examples/grafana-dashboard.json", function()
  it("queries only metrics the renderer emits", function()
    local dash = cjson.decode(read("examples/grafana-dashboard.json"))
    local m = prom.parse(native.render_metrics({}, { { "r", 0 } }, true))
    local emitted = {}
    for name, fam in pairs(m.families) do
      emitted[name] = true
      for _, s in ipairs(fam.samples) do
        emitted[s.name] = true
      end
    end
    local used = 0
    for _, panel in ipairs(dash.panels) do
      assert.is_table(panel.targets, panel.title)
      for _, t in ipairs(panel.targets) do
        for name in t.expr:gmatch("auth_router_[%w_]+") do
          assert.is_true(emitted[name] == true, "panel '" .. panel.title .. "' queries " .. name)
          used = used + 1
        end
      end
    end
    assert.is_true(used > 10)
    local titles = {}
    for _, p in ipairs(dash.panels) do
      titles[#titles + 1] = p.title
    end
    titles = table.concat(titles, "|")
    for _, want in ipairs({ "hit ratio", "Auth service calls", "latency", "verdict", "route", "Log", "Redis" }) do
      assert.is_truthy(titles:find(want, 1, true), "a panel about " .. want)
    end
  end)
end)
