-- The cluster tier (issue #10) with two nodes: two gateways, each its own
-- nginx with its own shared dict (2 workers each), one real redis-server,
-- one mock auth service that counts its calls. Verdicts one node fetched
-- are served by the other from Redis; one new credential hit on both
-- nodes at once makes one auth call; Redis down or hanging never fails a
-- request nor lets one through; a node with another key_secret never reads
-- the fleet's entries.

local helpers      = require "spec.openresty.helpers"
local redis_server = require "spec.openresty.redis_server"
local socket       = require "socket"

local KEY_SECRET = "spec-fleet-key-secret-0123456789"
local POLL_MS    = 200
local COOLDOWN_S = 1   -- the Redis circuit breaker's, shortened for the spec

-- POST /purge: OpenResty's purge() with the body as the credential (no
-- body: everything).
local LOCATIONS = [[
        location = /purge {
            content_by_lua_block {
                ngx.req.read_body()
                local ok, err = require("auth_router.openresty").purge(ngx.req.get_body_data())
                ngx.say(ok and "ok" or err)
            }
        }
        location = /__timers {
            content_by_lua_block { ngx.say(ngx.timer.pending_count()) }
        }]]


describe("cluster tier: two nodes on one Redis", function()
  local mocks, server, a, b

  local function cluster_config(overrides)
    local cluster = { enabled = true, host = "127.0.0.1", port = server.port,
                      key_secret = KEY_SECRET, timeout_ms = 200, poll_ms = POLL_MS }
    for k, v in pairs(overrides or {}) do
      cluster[k] = v
    end
    return helpers.config(mocks, {
      auth = { shared_dict = "auth_router", ttl_s = 60 },
      cluster = cluster,
    })
  end

  local function node(overrides)
    return helpers.start({ mocks = mocks, workers = 2, listen_options = "reuseport",
                           config = cluster_config(overrides), locations = LOCATIONS,
                           init_worker = 'require("auth_router.redis").COOLDOWN_S = ' .. COOLDOWN_S })
  end

  local function get(gw, token)
    local status = helpers.request("GET", gw.gw_url .. "/c", { Authorization = "Bearer " .. token })
    return status
  end

  lazy_setup(function()
    server = redis_server.start()
    mocks = helpers.start_mocks()
    a = node()
    b = node()
  end)

  lazy_teardown(function()
    helpers.stop_all()
    if server then
      server:stop()
    end
  end)

  before_each(function()
    mocks:reset()
  end)

  it("1000 requests over 10 credentials spread over both nodes make exactly 10 auth calls", function()
    -- request i goes to node i % 2 with credential floor(i / 2) % 10: every
    -- credential reaches both nodes
    local function pick(i)
      return (i % 2 == 0) and a or b, "good-spread" .. (math.floor(i / 2) % 10)
    end
    local list = {}
    for i = 1, 1000 do
      local gw, token = pick(i)
      list[i] = { url = gw.gw_url .. "/spread", headers = { Authorization = "Bearer " .. token } }
    end
    -- the first round one by one, so that each credential is first seen by
    -- one node and then read from Redis by the other
    for i = 1, 20 do
      local gw, token = pick(i)
      assert.equal(200, get(gw, token))
    end
    local results = helpers.request_many(list, 20)
    for i, r in ipairs(results) do
      assert.equal(200, r.status, "request " .. i .. ": " .. tostring(r.err))
    end
    assert.equal(10, mocks:calls())
    -- each credential was fetched by one node and read from Redis by the other
    local l3 = helpers.all_stats(a).l3_hits + helpers.all_stats(b).l3_hits
    assert.is_true(l3 >= 10, "l3 hits: " .. l3)
  end)

  it("50 concurrent requests with one new credential, split over both nodes, make one auth call", function()
    local list = {}
    for i = 1, 50 do
      list[i] = { url = (i % 2 == 0 and a or b).gw_url .. "/flight",
                  headers = { Authorization = "Bearer slow-300-flight" } }
    end
    local results = helpers.request_many(list, 50)
    for i, r in ipairs(results) do
      assert.equal(200, r.status, "request " .. i .. ": " .. tostring(r.err))
    end
    assert.equal(1, mocks:calls())
  end)

  it("the purge poll timer runs only on a node whose config has a cluster tier", function()
    local plain = helpers.start({ mocks = mocks, workers = 2, locations = LOCATIONS })
    -- timers pending in whichever worker answers, the least of a few reads
    -- (a one-off timer may be pending for a moment)
    local function timers(gw)
      local least
      for _ = 1, 6 do
        local status, _, body = helpers.request("GET", gw.gw_url .. "/__timers")
        assert.equal(200, status)
        local n = assert(tonumber(body))
        least = math.min(least or n, n)
      end
      return least
    end
    assert.equal(200, get(plain, "good-plain"))
    assert.equal(timers(plain) + 1, timers(a))
  end)

  it("a node with another key_secret never reads the fleet's entries", function()
    assert.equal(200, get(a, "good-secret"))
    assert.equal(1, mocks:calls())
    assert.equal(200, get(b, "good-secret"))
    assert.equal(1, mocks:calls())
    local other = node({ key_secret = "another-fleet-secret-9876543210" })
    assert.equal(200, get(other, "good-secret"))
    assert.equal(2, mocks:calls())
    other:stop()
  end)

  local function purge(gw, credential)
    local status, _, body = helpers.request("POST", gw.gw_url .. "/purge", nil, credential)
    assert.equal(200, status)
    assert.equal("ok\n", body)
  end

  it("a purge on node A stops node B serving the verdict within 2 x poll_ms", function()
    assert.equal(200, get(a, "good-revoke"))
    for _ = 1, 6 do   -- both workers of B, from Redis then their own caches
      assert.equal(200, get(b, "good-revoke"))
    end
    assert.equal(1, mocks:calls())
    mocks:behave("good-revoke", "deny")   -- revoked at the auth service
    purge(a, "Bearer good-revoke")
    socket.sleep(2 * POLL_MS / 1000)
    for _ = 1, 6 do
      assert.equal(401, get(b, "good-revoke"))
      assert.equal(401, get(a, "good-revoke"))
    end
  end)

  it("a purge of everything on node B reaches node A", function()
    assert.equal(200, get(a, "good-all-1"))
    assert.equal(200, get(a, "good-all-2"))
    for _ = 1, 4 do
      assert.equal(200, get(a, "good-all-1"))
    end
    assert.equal(2, mocks:calls())
    mocks:behave("good-all-1", "deny")
    mocks:behave("good-all-2", "deny")
    purge(b, nil)
    socket.sleep(2 * POLL_MS / 1000)
    for _ = 1, 4 do
      assert.equal(401, get(a, "good-all-1"))
      assert.equal(401, get(a, "good-all-2"))
    end
  end)

  it("Redis hanging: a miss costs at most cluster.timeout_ms more, a hit nothing", function()
    assert.equal(200, get(a, "good-hang-known"))
    local sleeper = io.popen("redis-cli -p " .. server.port .. " DEBUG SLEEP 1.5")
    socket.sleep(0.1)
    local t0 = socket.gettime()
    assert.equal(200, get(a, "good-hang-known"))   -- L2 hit, or L1: no Redis
    local hit_s = socket.gettime() - t0
    t0 = socket.gettime()
    assert.equal(200, get(a, "good-hang-new"))     -- L3 read times out, then auth
    local miss_s = socket.gettime() - t0
    sleeper:close()
    -- the purge polls failed while Redis slept: let the breakers close
    socket.sleep(COOLDOWN_S + 0.2)
    assert.is_true(hit_s < 0.1, "hit took " .. hit_s .. " s")
    assert.is_true(miss_s < 0.2 + 0.25, "miss took " .. miss_s .. " s (cluster.timeout_ms 200)")
    assert.equal(2, mocks:calls())
  end)

  it("Redis down: hits stay hits, misses call auth, denials stay denials; back up: shared again", function()
    assert.equal(200, get(a, "good-before"))
    assert.equal(200, get(b, "good-before"))
    assert.equal(1, mocks:calls())
    server:kill()
    for _ = 1, 5 do
      assert.equal(200, get(a, "good-before"))  -- L1/L2 hits on both nodes
      assert.equal(200, get(b, "good-before"))
      assert.equal(401, get(a, "deny"))
      assert.equal(401, get(b, "nothing-valid"))
    end
    -- new credentials: each node calls auth on its own, and nothing fails
    assert.equal(200, get(a, "good-during"))
    assert.equal(200, get(b, "good-during"))
    -- good-before once; deny and nothing-valid once per node that saw them
    -- (cached as denials); good-during once per node
    assert.equal(1 + 2 + 2, mocks:calls())
    assert.equal(0, a:stats().live_slots)
    assert.is_true(helpers.all_stats(a).redis_errors > 0)

    server:restart()
    socket.sleep(COOLDOWN_S + 0.2) -- the breakers that opened let one exchange try again
    mocks:reset()
    for _ = 1, 4 do   -- both workers of each node
      assert.equal(200, get(a, "good-after"))
      assert.equal(200, get(b, "good-after"))
    end
    assert.equal(1, mocks:calls())
  end)
end)
