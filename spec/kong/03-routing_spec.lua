-- auth-router's routing inside real Kong (DB-less, 2 workers): routes by
-- `target` (an IP or a host name) and by `upstream` (a Kong Upstream with
-- targets), from a Service whose host is an IP and from one whose host is a
-- name, since Kong decides from the Service's host whether the balancer
-- resolves names (Kong/kong#12201; handler.lua sets balancer_data.type, the
-- one Kong internal the plugin touches, and this spec pins it).

local helpers = require "spec.helpers"
local cjson   = require "cjson"

local ROOT  = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")

local PLUGIN_NAME = "auth-router"
local strategy    = "off"
local AUTH        = "Bearer good-acc_route"


describe(PLUGIN_NAME .. ": (routing) [#" .. strategy .. "]", function()
  local m, proxy_client

  lazy_setup(function()
    m = mocks.start()

    local bp = helpers.get_db_utils(strategy, {
      "routes", "services", "plugins", "upstreams", "targets",
    }, { PLUGIN_NAME })

    local calendar_up = bp.upstreams:insert { name = "calendar-up" }
    bp.targets:insert { upstream = calendar_up, target = m.targets.calendar }

    local config = {
      auth = { url = m.auth_url, shared_dict = "auth_router" },
      routes = {
        -- a host name target: Kong's DNS resolves it (spec/fixtures/hosts, or
        -- /etc/hosts under Pongo, both map localhost)
        { name = "email", paths = { "/send" }, target = "localhost:" .. m.ports.email },
        { name = "email-ip", paths = { "/ipsend" }, target = m.targets.email,
          strip_prefix = true },
        { name = "calendar", paths = { "/events", "/calendars" }, upstream = "calendar-up" },
        { name = "ghost", paths = { "/ghost" }, upstream = "no-such-upstream" },
      },
      upstream_headers = { { name = "x-account-id", pointer = "/id" } },
      response_headers = { { name = "x-account-id", pointer = "/id" } },
      route_header = "x-route",
    }

    -- The same plugin config behind a Service whose host is an IP and one
    -- whose host is a name; both Services point at the legacy upstream.
    local services = {
      ["ip.test"]   = bp.services:insert { name = "by-ip", host = "127.0.0.1", port = m.ports.legacy },
      ["name.test"] = bp.services:insert { name = "by-name", host = "localhost", port = m.ports.legacy },
    }
    for host, service in pairs(services) do
      local route = bp.routes:insert { hosts = { host }, service = service }
      bp.plugins:insert { name = PLUGIN_NAME, route = { id = route.id }, config = config }
    end

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

  local function get(host, path, headers)
    headers = headers or {}
    headers.host = host
    headers.authorization = headers.authorization or AUTH
    return assert(proxy_client:send { method = "GET", path = path, headers = headers })
  end

  for _, host in ipairs({ "ip.test", "name.test" }) do
    describe("from a Service whose host is " .. (host == "ip.test" and "an IP" or "a name"), function()

      it("sends a route with a host-name target there, Host naming it", function()
        local res = get(host, "/send/now?x=1")
        local echo = cjson.decode(assert.res_status(200, res))
        assert.equal("email", echo.service)
        assert.equal("/send/now?x=1", echo.uri)
        assert.equal("localhost:" .. m.ports.email, echo.headers.host)
        assert.equal("email", echo.headers["x-route"])
        assert.equal("acc_route", echo.headers["x-account-id"])
        assert.equal("acc_route", res.headers["x-account-id"])
      end)

      it("sends a route with an IP target there, stripping its prefix", function()
        local res = get(host, "/ipsend/inbox?y=2")
        local echo = cjson.decode(assert.res_status(200, res))
        assert.equal("email", echo.service)
        assert.equal("/inbox?y=2", echo.uri)
        assert.equal(m.targets.email, echo.headers.host)
        assert.equal("email-ip", echo.headers["x-route"])
      end)

      it("sends a route with an upstream through Kong's balancer to its target", function()
        for _, path in ipairs({ "/events", "/calendars/1" }) do
          local echo = cjson.decode(assert.res_status(200, get(host, path)))
          assert.equal("calendar", echo.service)
          assert.equal(path, echo.uri)
          assert.equal("calendar", echo.headers["x-route"])
        end
      end)

      it("sends a request no route matches to the Service, without a route header", function()
        local echo = cjson.decode(assert.res_status(200, get(host, "/other", { ["x-route"] = "email" })))
        assert.equal("legacy", echo.service)
        assert.is_nil(echo.headers["x-route"])
      end)

      it("replaces a route header the client sent", function()
        local echo = cjson.decode(assert.res_status(200, get(host, "/send", { ["x-route"] = "spoofed" })))
        assert.equal("email", echo.headers["x-route"])
      end)

      it("answers an unknown upstream with a clear 503, logged, without account headers", function()
        local res = get(host, "/ghost")
        local body = cjson.decode(assert.res_status(503, res))
        assert.same({ message = "No upstream available for this route" }, body)
        assert.is_nil(res.headers["x-account-id"])
        assert.logfile().has.line("route 'ghost' cannot be applied: could not find an Upstream "
                                  .. "named 'no-such-upstream'", true)
      end)
    end)
  end
end)
