-- A flood of new credentials (issue #9): 10000 requests, each with its own
-- random credential, against a slow auth service and 2 gateway workers. The
-- auth service never sees more than workers x max_in_flight calls at once,
-- every answer is the account's 200 or the plugin's fast 503, worker memory
-- stays bounded, and a cached credential is still answered at once during
-- and after the flood.

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson"

local WORKERS       = 2
local MAX_IN_FLIGHT = 4
local SLOW_MS       = 200
local FLOOD         = 10000
local CONCURRENCY   = 100
local RSS_GROWTH_KB = 16 * 1024 -- per worker, after warm-up (measured: about 300 KiB)

local UNAVAILABLE = { message = "Authentication service unavailable" }


local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status", "rb")
  local text = f and f:read("*a") or ""
  if f then
    f:close()
  end
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end


describe("a flood of new credentials (" .. WORKERS .. " workers)", function()
  local mocks, gw

  lazy_setup(function()
    math.randomseed(os.time())
    mocks = helpers.start_mocks()
    gw = helpers.start({
      mocks = mocks,
      workers = WORKERS,
      listen_options = "reuseport",
      config = helpers.config(mocks, {
        auth = { timeout_ms = 2000, max_in_flight = MAX_IN_FLIGHT },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
      }),
    })
  end)

  lazy_teardown(function()
    helpers.stop_all()
  end)

  it("bounds auth calls in flight and worker memory; a cached credential stays fast", function()
    -- a credential cached in both workers before the flood
    local cached = "Bearer good-flood-cached"
    for _ = 1, 20 do
      assert.equal(200, (helpers.request("GET", gw.gw_url .. "/warm", { Authorization = cached })))
    end
    -- a first, small flood warms both workers (LuaJIT traces, pools, caches)
    local function flood(n, tag)
      local list = {}
      for i = 1, n do
        local token = ("slow-%d-%s%d-%d"):format(SLOW_MS, tag, i, math.random(1e9))
        list[i] = { url = gw.gw_url .. "/flood?i=" .. i, headers = { Authorization = "Bearer " .. token } }
        -- every 50th request is the cached credential: answered during the flood
        if i % 50 == 0 then
          list[i] = { url = gw.gw_url .. "/cached?i=" .. i, headers = { Authorization = cached } }
        end
      end
      return helpers.request_many(list, CONCURRENCY, 300)
    end
    flood(1000, "w")
    local before = helpers.all_stats(gw)
    local pids = {}
    local _, by_pid = helpers.all_stats(gw)
    for pid in pairs(by_pid) do
      pids[#pids + 1] = pid
    end
    assert.equal(WORKERS, #pids)
    local rss0 = {}
    for _, pid in ipairs(pids) do
      rss0[pid] = rss_kb(pid)
    end
    mocks:reset()

    local results = flood(FLOOD, "f")

    local passed, rejected, cached_slow = 0, 0, 0
    for i, r in ipairs(results) do
      assert(not r.err, "request " .. i .. ": " .. tostring(r.err))
      if i % 50 == 0 then
        assert.equal(200, r.status, "the cached credential, request " .. i)
        if r.elapsed > SLOW_MS / 1000 then
          cached_slow = cached_slow + 1
        end
      elseif r.status == 200 then
        passed = passed + 1
        assert.matches("^f%d+%-", cjson.decode(r.body).headers["x-account-id"])
      else
        rejected = rejected + 1
        assert.equal(503, r.status, tostring(r.body))
        assert.same(UNAVAILABLE, cjson.decode(r.body))
      end
    end
    -- the cached credential never waited for an auth call (a few may queue
    -- behind the flood's own connections on a 2-CPU machine)
    assert.is_true(cached_slow <= FLOOD / 50 / 20, cached_slow .. " cached requests were slow")

    local now, max = mocks:inflight()
    assert.equal(0, now)
    assert.is_true(max <= WORKERS * MAX_IN_FLIGHT, "the auth service saw " .. max .. " calls at once")
    local after = helpers.all_stats(gw)
    assert.equal(passed, helpers.delta(before, after, "auth_calls"))
    assert.equal(rejected, helpers.delta(before, after, "auth_calls_rejected"))
    assert.equal(passed, mocks:calls())
    assert.equal(0, after.live_slots or 0)

    for _, pid in ipairs(pids) do
      local growth = rss_kb(pid) - rss0[pid]
      assert.is_true(growth < RSS_GROWTH_KB, "worker " .. pid .. " grew by " .. growth .. " KiB")
    end

    -- and after the flood, at once
    local status, _, body = helpers.request("GET", gw.gw_url .. "/after", { Authorization = cached })
    assert.equal(200, status, body)
  end)
end)
