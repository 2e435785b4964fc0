-- auth-router configs through real Kong's Admin API (DB-less, 2 workers):
-- validation with field errors, and a new declarative config posted to
-- /config while requests are running, which must not fail a single one.

local helpers = require "spec.helpers"
local cjson   = require "cjson"

local ROOT  = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")

local PLUGIN_NAME = "auth-router"
local strategy    = "off"
local HOST        = "config.test"


describe(PLUGIN_NAME .. ": (config through the Admin API) [#" .. strategy .. "]", function()
  local m, admin

  -- The whole declarative config: one Service, one Route, the plugin with a
  -- constant response header telling which config version answered.
  local function declarative(version, plugin_config)
    plugin_config = plugin_config or {
      auth = { url = m.auth_url, shared_dict = "auth_router" },
      response_headers = { { name = "x-config-version", value = version } },
    }
    return cjson.encode({
      _format_version = "3.0",
      services = { {
        name = "config", host = "127.0.0.1", port = m.ports.legacy,
        routes = { { name = "config", hosts = { HOST } } },
        plugins = { { name = PLUGIN_NAME, config = plugin_config } },
      } },
    })
  end

  local function post_config(text)
    local res = assert(admin:send {
      method = "POST", path = "/config",
      headers = { ["Content-Type"] = "application/json" },
      body = { config = text },
    })
    return res.status, cjson.decode((res:read_body()))
  end

  lazy_setup(function()
    m = mocks.start()
    helpers.get_db_utils(strategy, nil, { PLUGIN_NAME })
    assert(mocks.start_kong({
      declarative_config_string   = declarative("1"),
    }))
  end)

  lazy_teardown(function()
    helpers.stop_kong()
    if m then
      m:stop()
    end
  end)

  before_each(function()
    admin = helpers.admin_client()
  end)

  after_each(function()
    if admin then
      admin:close()
    end
  end)

  describe("POST /schemas/plugins/validate", function()
    local function validate(config)
      local res = assert(admin:send {
        method = "POST", path = "/schemas/plugins/validate",
        headers = { ["Content-Type"] = "application/json" },
        body = { name = PLUGIN_NAME, config = config },
      })
      return res.status, cjson.decode((res:read_body()))
    end

    it("accepts a good config", function()
      local status, body = validate({
        auth = { url = "http://auth.test/v1/me", credential_headers = { "authorization", "x-api-key" } },
        routes = { { name = "email", paths = { "/send" }, target = "email.test:8080" } },
      })
      assert.equal(200, status, cjson.encode(body))
    end)

    it("rejects a bad config with the field's path, from Kong's DSL", function()
      local status, body = validate({ auth = { url = "http://auth.test/", timeout_ms = 0 } })
      assert.equal(400, status)
      assert.same({ auth = { timeout_ms = "value should be between 1 and 2147483646" } },
                  body.fields.config)
    end)

    it("rejects a bad config with the field's path, from the native validator", function()
      local status, body = validate({
        auth = { url = "http://auth.test/" },
        routes = { { name = "email", paths = { "/send" }, target = "email.test" } },
      })
      assert.equal(400, status)
      assert.matches("routes[1].target:", cjson.encode(body.fields.config), 1, true)
    end)
  end)

  describe("POST /config", function()
    it("refuses a declarative config with a bad plugin config, naming the field", function()
      local status, body = post_config(declarative("bad", {
        auth = { url = m.auth_url, ttl_s = -1 },
      }))
      assert.equal(400, status)
      local text = cjson.encode(body)
      assert.matches("ttl_s", text, 1, true)
      assert.matches("value should be between", text, 1, true)
    end)

    it("takes a new config while requests run, failing none of them", function()
      local statuses, versions = {}, {}
      local running = true
      local function load()
        local client = helpers.proxy_client()
        while running do
          local res, err = client:send { method = "GET", path = "/load", headers = {
            host = HOST, authorization = "Bearer good-acc_reload" } }
          if not res then
            statuses[err] = (statuses[err] or 0) + 1
            client = helpers.proxy_client()
          else
            res:read_body()
            statuses[res.status] = (statuses[res.status] or 0) + 1
            local v = res.headers["x-config-version"] or "none"
            versions[v] = (versions[v] or 0) + 1
          end
        end
        client:close()
      end
      local threads = {}
      for i = 1, 4 do
        threads[i] = ngx.thread.spawn(load)
      end
      ngx.sleep(0.5)
      local status, body = post_config(declarative("2"))
      assert.equal(201, status, cjson.encode(body))
      -- every worker runs the new config soon; then let the load run on it
      helpers.wait_until(function()
        return (versions["2"] or 0) > 50
      end, 10)
      ngx.sleep(0.3)
      running = false
      for i = 1, #threads do
        assert(ngx.thread.wait(threads[i]))
      end

      local total = 0
      for _, n in pairs(statuses) do
        total = total + n
      end
      assert.same({ [200] = total }, statuses)
      assert.truthy(versions["1"] > 0, cjson.encode(versions))
      assert.is_nil(versions.none, cjson.encode(versions))
      -- both configs authenticated the same credential: one auth call for it
      -- per plugin config (a new config starts with an empty worker cache,
      -- the shared dict still holds the verdict)
      assert.is_true(m:calls("good-acc_reload") <= 2)
      assert.logfile().has.no.line("[error]", true)
    end)

    it("loads examples/kong.yml, the documented decK / DB-less example", function()
      local f = assert(io.open(ROOT .. "/examples/kong.yml", "rb"))
      local yaml = f:read("*a")
      f:close()
      local status, body = post_config(yaml)
      assert.equal(201, status, cjson.encode(body))
      local res = assert(admin:send { method = "GET", path = "/plugins" })
      local names = {}
      for _, p in ipairs(cjson.decode(assert.res_status(200, res)).data) do
        names[p.name] = true
      end
      assert.is_true(names[PLUGIN_NAME])
    end)
  end)
end)


-- Kong walks every collected plugin's config table on every request
-- (kong.vault.update, pairs into each nested table): once compiled, the
-- plugin takes its fields out of Kong's table, keeping `cluster` (its
-- vault-referenceable secrets are rewritten there by Kong's rotation).
describe(PLUGIN_NAME .. ": (Kong's config table once compiled)", function()
  local plugin_config = require("kong.plugins." .. PLUGIN_NAME .. ".plugin_config")
  local schema        = require("kong.plugins." .. PLUGIN_NAME .. ".schema")

  -- The config as Kong hands it to the handler: through Kong's schema.
  local function processed(config)
    local entity, err = helpers.validate_plugin_config_schema(config, schema)
    assert.is_nil(err)
    return entity.config
  end

  -- Tables reachable from `t`: what kong.vault.update walks.
  local function tables(t)
    local n = 1
    for _, v in pairs(t) do
      if type(v) == "table" then
        n = n + tables(v)
      end
    end
    return n
  end

  it("keeps only cluster and the scalar fields in Kong's table", function()
    local routes = {}
    for i = 1, 20 do
      routes[i] = { name = "r" .. i, paths = { "/r" .. i .. "/" }, target = "127.0.0.1:" .. (10000 + i) }
    end
    local conf = processed({
      auth = { url = "http://auth.test/v1/me" },
      routes = routes,
      upstream_headers = { { name = "x-account-id", pointer = "/id" } },
      route_header = "x-route",
    })
    assert.is_true(tables(conf) > 60, "a 20-route config is " .. tables(conf) .. " tables")

    local plugin, settings = plugin_config.plugin_for(conf)
    assert.truthy(plugin, settings)
    for _, name in ipairs({ "auth", "api_version", "routes", "upstream_headers",
                            "response_headers", "log", "consumer" }) do
      assert.is_nil(conf[name], name .. " is still in Kong's table")
      assert.is_table(settings[name], name .. " is not in the settings")
    end
    assert.equal(20, #settings.routes)
    assert.is_table(conf.cluster)
    assert.equal("x-route", conf.route_header)
    assert.equal(2, tables(conf))   -- conf and conf.cluster

    -- later phases and requests get the same compiled plugin from it
    local again, settings_again = plugin_config.plugin_for(conf)
    assert.equal(plugin, again)
    assert.equal(settings, settings_again)
  end)

  it("compiles again when Kong's vault rotation changes a cluster secret", function()
    local conf = processed({
      auth = { url = "http://auth.test/v1/me" },
      cluster = { enabled = true, host = "127.0.0.1", password = "first-password",
                  key_secret = "first-key-secret-0123456789" },
    })
    local plugin = assert(plugin_config.plugin_for(conf))
    assert.equal(plugin, (plugin_config.plugin_for(conf)))
    -- what kong.vault.update does when a referenced secret was rotated
    conf.cluster.password = "second-password"
    local rotated, settings = plugin_config.plugin_for(conf)
    assert.truthy(rotated, settings)
    assert.not_equal(plugin, rotated)
    assert.equal("second-password", rotated:config().cluster.password)
    assert.equal("second-password", settings.cluster.password)
    assert.is_nil(conf.auth)
    assert.equal(rotated, (plugin_config.plugin_for(conf)))
    conf.cluster.key_secret = "second-key-secret-0123456789"
    local again = assert(plugin_config.plugin_for(conf))
    assert.not_equal(rotated, again)
    assert.equal("second-key-secret-0123456789", again:config().cluster.key_secret)
  end)

  it("leaves a config that does not compile as it is", function()
    local conf = { auth = { url = "not a url" }, routes = {} }
    local plugin, err = plugin_config.plugin_for(conf)
    assert.is_nil(plugin)
    assert.matches("auth.url", err, 1, true)
    assert.is_table(conf.auth)
    assert.is_table(conf.routes)
  end)
end)
