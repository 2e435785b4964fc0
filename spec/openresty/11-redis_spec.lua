-- The Redis client of the cluster tier (lua/auth_router/redis.lua) in real
-- nginx, on real cosockets, against a real redis-server: pipelines, AUTH
-- and SELECT on fresh connections only, keepalive, the one-deadline bound
-- when Redis hangs, the circuit breaker when it is down or refuses, and
-- recovery when it is back.

local helpers      = require "spec.openresty.helpers"
local redis_server = require "spec.openresty.redis_server"
local cjson        = require "cjson"
local socket       = require "socket"

local PASSWORD = "spec-redis-password"

-- POST /redis {name, cluster, commands} runs client:pipeline(commands) on
-- the client `name` of this worker (made from `cluster` on first use).
local LOCATIONS = [[
        location = /redis {
            content_by_lua_block {
                local cjson = require "cjson"
                local redis = require "auth_router.redis"
                redis.COOLDOWN_S = 1     -- short, so recovery fits in a spec
                redis.LOG_INTERVAL_S = 0
                ngx.req.read_body()
                local req = cjson.decode(ngx.req.get_body_data())
                local clients = package.loaded["spec.redis_clients"] or {}
                package.loaded["spec.redis_clients"] = clients
                local client = clients[req.name]
                if not client then
                    client = redis.new(req.cluster)
                    clients[req.name] = client
                end
                ngx.update_time()
                local t0 = ngx.now()
                local replies, kind, detail = client:pipeline(req.commands)
                ngx.update_time()
                local state, failures = client:state()
                ngx.say(cjson.encode({ replies = replies, kind = kind, detail = detail,
                                       ms = (ngx.now() - t0) * 1000, state = state,
                                       failures = failures }))
            }
        }]]


describe("redis client (real nginx, real redis-server)", function()
  local mocks, gw, server

  local function cluster(overrides)
    local c = { host = "127.0.0.1", port = server.port, password = PASSWORD, database = 0,
                ssl = false, ssl_verify = true, timeout_ms = 300, keepalive_ms = 60000,
                pool_size = 8 }
    for k, v in pairs(overrides or {}) do
      c[k] = v
    end
    return c
  end

  local function pipeline(name, commands, overrides)
    local status, _, body = helpers.request("POST", gw.gw_url .. "/redis", nil,
      cjson.encode({ name = name, cluster = cluster(overrides), commands = commands }))
    assert.equal(200, status, body)
    return cjson.decode(body)
  end

  lazy_setup(function()
    server = redis_server.start({ password = PASSWORD })
    mocks = helpers.start_mocks()
    gw = helpers.start({ mocks = mocks, workers = 1, locations = LOCATIONS })
  end)

  lazy_teardown(function()
    helpers.stop_all()
    if server then
      server:stop()
    end
  end)

  it("runs a pipeline and answers every reply in order", function()
    local r = pipeline("good", {
      { "SET", "auth-router:k", "v", "PX", 60000 },
      { "GET", "auth-router:k" },
      { "GET", "auth-router:absent" },
      { "SET", "auth-router:k", "other", "NX", "PX", 1000 },
      { "INCR", "auth-router:k" },
      { "DEL", "auth-router:k" },
    })
    assert.is_nil(r.kind, r.detail)
    assert.same({ "OK", "v", cjson.null, cjson.null,
                  { err = "ERR value is not an integer or out of range" }, 1 }, r.replies)
    assert.equal("v", (server:cli("SET", "check", "v") == "OK") and server:cli("GET", "check"))
  end)

  it("authenticates and selects the database on a fresh connection only", function()
    local r = pipeline("db3", { { "SET", "in-db3", "yes" } }, { database = 3 })
    assert.same({ "OK" }, r.replies)
    assert.equal("yes", server:cli("-n", "3", "GET", "in-db3"))
    assert.equal("", server:cli("GET", "in-db3"))
    -- the pooled connection is reused: the server sees one more client
    -- connection at most over many exchanges
    local before = tonumber(server:cli("INFO", "stats"):match("total_connections_received:(%d+)"))
    for _ = 1, 20 do
      assert.same({ "yes" }, pipeline("db3", { { "GET", "in-db3" } }, { database = 3 }).replies)
    end
    local after = tonumber(server:cli("INFO", "stats"):match("total_connections_received:(%d+)"))
    assert.is_true(after - before <= 2, "connections: " .. before .. " -> " .. after)
  end)

  it("a refused AUTH is a failure of its own kind, and opens the breaker after 3", function()
    for i = 1, 3 do
      local r = pipeline("badpw", { { "GET", "x" } }, { password = "wrong" })
      assert.equal("refused", r.kind)
      assert.matches("^AUTH: WRONGPASS", r.detail)
      assert.equal(i, r.failures)
    end
    local r = pipeline("badpw", { { "GET", "x" } }, { password = "wrong" })
    assert.equal("open", r.kind)
    assert.equal("open", r.state)
    assert.is_true(r.ms < 5, "an open breaker does no I/O: " .. r.ms .. " ms")
    -- LOG_INTERVAL_S is 0 here: one line per failed exchange, none for "open"
    assert.equal(3, helpers.count_lines(gw:error_log(), "[auth-router] redis 127.0.0.1:"
                                        .. server.port .. " failed (refused)"))
  end)

  it("a hanging Redis costs at most timeout_ms", function()
    -- DEBUG SLEEP blocks the whole server for 1.5 s
    local sleeper = io.popen("redis-cli -p " .. server.port .. " --no-auth-warning -a "
                             .. PASSWORD .. " DEBUG SLEEP 1.5")
    socket.sleep(0.1)
    local r = pipeline("hang", { { "GET", "x" } }, { timeout_ms = 200 })
    sleeper:close()
    assert.equal("timeout", r.kind, cjson.encode(r))
    assert.is_true(r.ms >= 150 and r.ms < 400, "took " .. r.ms .. " ms")
  end)

  it("Redis down: unreachable, the breaker opens; back up: the client recovers", function()
    assert.same({ "OK" }, pipeline("flap", { { "SET", "flap", "1" } }).replies)
    server:kill()
    local kinds = {}
    for i = 1, 4 do
      kinds[i] = pipeline("flap", { { "GET", "flap" } }).kind
    end
    -- the pooled connection was reset, then connects are refused
    assert.same({ "unreachable", "unreachable", "unreachable", "open" }, kinds)
    server:restart()
    socket.sleep(1.1) -- COOLDOWN_S in this gateway
    local r = pipeline("flap", { { "SET", "flap", "2" }, { "GET", "flap" } })
    assert.is_nil(r.kind, r.detail)
    assert.same({ "OK", "2" }, r.replies)
    assert.equal("closed", r.state)
    assert.equal(0, r.failures)
  end)
end)
