-- The cluster tier (issue #10) in real Kong (DB-less, 2 workers) against a
-- real redis-server: Kong stores the verdicts it fetches in Redis under
-- keys every node derives from cluster.key_secret, serves a verdict another
-- node stored there without an auth call, and the Admin API purge deletes
-- the Redis copy and writes the key to the fleet's purge log.

local helpers = require "spec.helpers"
local cjson   = require "cjson"

local ROOT         = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks        = dofile(ROOT .. "/spec/kong/mocks.lua")
local redis_server = dofile(ROOT .. "/spec/openresty/redis_server.lua")

local PLUGIN_NAME = "auth-router"
local strategy    = "off"
local HOST        = "cluster.test"
local KEY_SECRET  = "kong-spec-fleet-secret-0123456789"


describe(PLUGIN_NAME .. ": (cluster tier) [#" .. strategy .. "]", function()
  local m, server, plugin_config

  local function get(token)
    local client = helpers.proxy_client()
    local res = assert(client:send { method = "GET", path = "/c",
                                     headers = { host = HOST, authorization = "Bearer " .. token } })
    local body = res:read_body()
    client:close()
    return res.status, body
  end

  -- The cache key every node derives for `credential` (the native module,
  -- compiled here with the same config: keys depend only on it).
  local function cache_key(credential)
    local plugin = assert(require("auth_router").compile(plugin_config))
    return assert(plugin:cache_key(credential))
  end

  lazy_setup(function()
    server = redis_server.start()
    m = mocks.start()
    plugin_config = {
      auth = { url = m.auth_url, shared_dict = "auth_router" },
      cluster = { enabled = true, host = "127.0.0.1", port = server.port,
                  key_secret = KEY_SECRET, poll_ms = 200 },
    }
    helpers.get_db_utils(strategy, nil, { PLUGIN_NAME })
    assert(mocks.start_kong({
      nginx_main_worker_processes = 2,
      declarative_config_string = cjson.encode({
        _format_version = "3.0",
        services = { {
          name = "cluster", host = "127.0.0.1", port = m.ports.legacy,
          routes = { { name = "cluster", hosts = { HOST },
                       plugins = { { name = PLUGIN_NAME, config = plugin_config } } } },
        } },
      }),
    }))
  end)

  lazy_teardown(function()
    helpers.stop_kong()
    if m then
      m:stop()
    end
    if server then
      server:stop()
    end
  end)

  it("stores the verdict it fetched in Redis, under the fleet's key", function()
    assert.equal(200, (get("good-kong")))
    assert.equal(1, m:calls("good-kong"))
    -- the binary entry (format 3): its first byte, then the account id as is
    local value = server:cli("GET", "auth-router:v:" .. cache_key("Bearer good-kong"))
    assert.equal(3, value:byte(1))
    assert.matches("kong", value, 1, true)
    local pttl = tonumber(server:cli("PTTL", "auth-router:v:" .. cache_key("Bearer good-kong")))
    assert.is_true(pttl > 0, tostring(pttl))
  end)

  it("serves a verdict another node stored in Redis without an auth call", function()
    assert.equal(200, (get("good-kong")))
    -- another node's verdict for another credential: the same entry form
    -- copied inside Redis: the entry is binary, which a command line cannot carry
    assert.equal("1", server:cli("COPY", "auth-router:v:" .. cache_key("Bearer good-kong"),
                                 "auth-router:v:" .. cache_key("Bearer good-elsewhere")))
    assert.equal("1", server:cli("PEXPIRE", "auth-router:v:" .. cache_key("Bearer good-elsewhere"), "60000"))
    for _ = 1, 4 do   -- both workers
      assert.equal(200, (get("good-elsewhere")))
    end
    assert.equal(0, m:calls("good-elsewhere"))
  end)

  it("DELETE /auth-router/cache deletes the Redis copy and tells the fleet", function()
    assert.equal(200, (get("good-purged")))
    local key = cache_key("Bearer good-purged")
    assert.matches("purged", server:cli("GET", "auth-router:v:" .. key), 1, true)
    local before = tonumber(server:cli("XLEN", "auth-router:purges"))

    local admin = helpers.admin_client()
    local res = assert(admin:send {
      method = "DELETE", path = "/auth-router/cache",
      headers = { ["Content-Type"] = "application/json" },
      body = { credential = "Bearer good-purged" },
    })
    assert.res_status(200, res)
    admin:close()

    assert.equal("", server:cli("GET", "auth-router:v:" .. key))
    assert.equal(before + 1, tonumber(server:cli("XLEN", "auth-router:purges")))
    assert.matches(key, server:cli("XREVRANGE", "auth-router:purges", "+", "-", "COUNT", "1"), 1, true)
    -- and this node asks the auth service again
    assert.equal(200, (get("good-purged")))
    assert.equal(2, m:calls("good-purged"))
  end)
end)
