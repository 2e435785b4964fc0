-- auth-router inside a running Kong: the plugin is enabled on a route and a
-- request goes through all four phases (access, header_filter, body_filter,
-- log) to Kong's mock upstream. Structure as Kong's key-auth access spec.
-- Runs only inside a Kong container (Pongo).

local ok, helpers = pcall(require, "spec.helpers")
if not ok then
  print("spec/kong: skipped, needs Kong (run with Pongo)")
  return
end

local http_mock = require "spec.helpers.http_mock"
local cjson     = require "cjson"


local PLUGIN_NAME = "auth-router"
local ROUTE_HOST  = "auth-router.test"


for _, strategy in helpers.each_strategy() do
  describe(PLUGIN_NAME .. ": (access) [#" .. strategy .. "]", function()
    local proxy_client
    local auth_mock

    lazy_setup(function()
      -- The auth service: "Bearer good" gets an account, anything else 401.
      local auth_port = helpers.get_available_port()
      auth_mock = assert(http_mock.new(auth_port, {
        ["/auth"] = {
          -- The status is set before the body goes out; ngx.exit(200) then
          -- only ends the request.
          access = [[
            local authz = ngx.req.get_headers()["authorization"]
            ngx.header["Content-Type"] = "application/json"
            if authz == "Bearer good" then
              ngx.status = 200
              ngx.print('{"id":"acc_1","flags":["beta"],"api_version":"v2"}')
            else
              ngx.status = 401
              ngx.header["WWW-Authenticate"] = 'Bearer realm="test"'
              ngx.print('{"message":"invalid token"}')
            end
            return ngx.exit(ngx.HTTP_OK)
          ]],
        },
      }, {
        prefix = "servroot_auth_mock",
      }))
      assert(auth_mock:start())

      -- DB-less runs build the fixtures in Postgres and export them as
      -- declarative config (the pattern Kong's spec.helpers documents).
      local bp = helpers.get_db_utils(strategy == "off" and "postgres" or strategy, {
        "routes",
        "services",
        "plugins",
      }, { PLUGIN_NAME })

      local service = bp.services:insert {
        protocol = helpers.mock_upstream_protocol,
        host     = helpers.mock_upstream_host,
        port     = helpers.mock_upstream_port,
      }

      local route = bp.routes:insert {
        hosts   = { ROUTE_HOST },
        service = { id = service.id },
      }

      bp.plugins:insert {
        name   = PLUGIN_NAME,
        route  = { id = route.id },
        config = {
          auth = { url = "http://127.0.0.1:" .. auth_port .. "/auth" },
        },
      }

      assert(helpers.start_kong({
        database           = strategy,
        nginx_conf         = "spec/fixtures/custom_nginx.template",
        plugins            = "bundled," .. PLUGIN_NAME,
        declarative_config = strategy == "off" and helpers.make_yaml_file() or nil,
        nginx_http_lua_shared_dict = "auth_router 1m",
      }))
    end)

    lazy_teardown(function()
      helpers.stop_kong()
      if auth_mock then
        auth_mock:stop()
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

    it("passes a request through all four phases and returns the upstream's answer", function()
      local res = assert(proxy_client:send {
        method  = "GET",
        path    = "/request",
        headers = {
          ["Host"]          = ROUTE_HOST,
          ["Authorization"] = "Bearer good",
        },
      })
      local body = assert.res_status(200, res)
      local json = cjson.decode(body)
      assert.equal("/request", json.vars.request_uri)
      assert.equal(ROUTE_HOST, json.vars.host)

      -- Each phase logs "[auth-router] internal error in <phase>" if the
      -- native side fails; none may appear, nor any other error.
      assert.logfile().has.no.line("[auth-router]", true)
      assert.logfile().has.no.line("[error]", true)
    end)

    it("returns 401 without calling upstream when the request has no credential", function()
      local res = assert(proxy_client:send {
        method  = "GET",
        path    = "/request",
        headers = { ["Host"] = ROUTE_HOST },
      })
      assert.res_status(401, res)
    end)

    it("passes the auth service's 401 and WWW-Authenticate on to the client", function()
      local res = assert(proxy_client:send {
        method  = "GET",
        path    = "/request",
        headers = {
          ["Host"]          = ROUTE_HOST,
          ["Authorization"] = "Bearer bad",
        },
      })
      assert.res_status(401, res)
      assert.equal('Bearer realm="test"', res.headers["WWW-Authenticate"])
    end)

    it("keeps working on the next requests (compiled config reused)", function()
      for _ = 1, 3 do
        local res = assert(proxy_client:send {
          method  = "GET",
          path    = "/request",
          headers = {
            ["Host"]          = ROUTE_HOST,
            ["Authorization"] = "Bearer good",
          },
        })
        assert.res_status(200, res)
      end
      assert.logfile().has.no.line("[auth-router]", true)
    end)
  end)
end
