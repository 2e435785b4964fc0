-- auth-router's consumer mapping inside real Kong (DB-less, 2 workers): the
-- account becomes a Kong consumer (by username or custom_id, else the
-- anonymous consumer, else 403), so acl and consumer-scoped plugin configs
-- apply to it.

local helpers = require "spec.helpers"
local cjson   = require "cjson"

local ROOT  = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")

local PLUGIN_NAME = "auth-router"
local strategy    = "off"


describe(PLUGIN_NAME .. ": (consumer mapping) [#" .. strategy .. "]", function()
  local m, proxy_client

  lazy_setup(function()
    m = mocks.start()

    local bp = helpers.get_db_utils(strategy, {
      "routes", "services", "plugins", "consumers", "acls",
    }, { PLUGIN_NAME })

    local gold   = bp.consumers:insert { username = "acc_gold" }
    local silver = bp.consumers:insert { username = "acc_silver" }
    local by_cid = bp.consumers:insert { username = "someone", custom_id = "cid_1" }
    local guest  = bp.consumers:insert { username = "guest" }
    bp.acls:insert { consumer = { id = gold.id }, group = "gold" }
    bp.acls:insert { consumer = { id = by_cid.id }, group = "gold" }
    bp.acls:insert { consumer = { id = silver.id }, group = "silver" }
    bp.acls:insert { consumer = { id = guest.id }, group = "guests" }

    local service = bp.services:insert { host = "127.0.0.1", port = m.ports.legacy }

    local function route(host, consumer, allow)
      local r = bp.routes:insert { hosts = { host }, service = service }
      bp.plugins:insert { name = PLUGIN_NAME, route = { id = r.id }, config = {
        auth = { url = m.auth_url, shared_dict = "auth_router" },
        response_headers = { { name = "x-account-id", pointer = "/id" } },
        consumer = consumer,
      } }
      bp.plugins:insert { name = "acl", route = { id = r.id }, config = { allow = allow } }
      return r
    end

    route("username.test", { by = "username" }, { "gold" })
    local anon = route("anonymous.test", { by = "custom_id", anonymous = "guest" }, { "gold", "guests" })

    -- A consumer-scoped plugin config: only acc_gold's requests get it.
    bp.plugins:insert {
      name = "request-transformer", consumer = { id = gold.id },
      config = { add = { headers = { "x-gold:yes" } } },
    }
    -- a route-and-consumer-scoped one on the anonymous route, for the guest
    bp.plugins:insert {
      name = "request-transformer", consumer = { id = guest.id }, route = { id = anon.id },
      config = { add = { headers = { "x-guest:yes" } } },
    }

    assert(mocks.start_kong())
  end)

  lazy_teardown(function()
    helpers.stop_kong()
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

  local function get(host, token, headers)
    headers = headers or {}
    headers.host = host
    headers.authorization = "Bearer " .. token
    return assert(proxy_client:send { method = "GET", path = "/c", headers = headers })
  end

  describe("by username, no anonymous", function()
    it("authenticates the matching consumer: acl allows it, its scoped plugin runs", function()
      local res = get("username.test", "good-acc_gold", {
        ["x-consumer-id"] = "spoofed", ["x-consumer-username"] = "spoofed",
        ["x-consumer-custom-id"] = "spoofed", ["x-anonymous-consumer"] = "true",
      })
      local echo = cjson.decode(assert.res_status(200, res))
      assert.equal("acc_gold", echo.headers["x-consumer-username"])
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", echo.headers["x-consumer-id"])
      assert.is_nil(echo.headers["x-anonymous-consumer"])
      -- Kong's declarative blueprints give every consumer a custom_id
      assert.matches("^consumer%-id%-%d+$", echo.headers["x-consumer-custom-id"])
      assert.equal("yes", echo.headers["x-gold"])
      assert.equal("acc_gold", res.headers["x-account-id"])
    end)

    it("lets acl deny a consumer outside the allowed groups", function()
      local res = get("username.test", "good-acc_silver")
      assert.res_status(403, res)
      assert.matches("You cannot consume this service", res:read_body(), 1, true)
    end)

    it("answers 403 for an account with no consumer, without account headers", function()
      local res = get("username.test", "good-acc_nobody")
      assert.same({ message = "Forbidden" }, cjson.decode(assert.res_status(403, res)))
      assert.is_nil(res.headers["x-account-id"])
    end)

    it("answers 403 for an account without the mapped field", function()
      local token = "json-" .. ngx.encode_base64(cjson.encode({ id = 17 }))
      -- a number is matched as its text: no consumer is named "17"
      assert.res_status(403, get("username.test", token))
    end)

    it("serves the mapping from Kong's cache", function()
      for _ = 1, 3 do
        assert.res_status(200, get("username.test", "good-acc_gold"))
      end
      assert.equal(1, m:calls("good-acc_gold"))
    end)
  end)

  describe("by custom_id, anonymous guest", function()
    it("authenticates the consumer with that custom_id", function()
      local echo = cjson.decode(assert.res_status(200, get("anonymous.test", "good-cid_1")))
      assert.equal("cid_1", echo.headers["x-consumer-custom-id"])
      assert.equal("someone", echo.headers["x-consumer-username"])
      assert.is_nil(echo.headers["x-anonymous-consumer"])
    end)

    it("falls back to the anonymous consumer, which acl and scoped configs see", function()
      local echo = cjson.decode(assert.res_status(200, get("anonymous.test", "good-acc_unknown")))
      assert.equal("guest", echo.headers["x-consumer-username"])
      assert.equal("true", echo.headers["x-anonymous-consumer"])
      assert.equal("yes", echo.headers["x-guest"])
      assert.is_nil(echo.headers["x-gold"])
    end)

    it("still denies what the auth service denies", function()
      assert.res_status(401, get("anonymous.test", "deny"))
    end)
  end)
end)
