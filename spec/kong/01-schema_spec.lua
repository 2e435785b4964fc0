-- auth-router's schema under Kong's own schema library (the DSL, entity
-- checks, defaults and the native custom_validator together), as Kong's
-- http-log schema spec does. Runs in real Kong: scripts/kong-test.sh, or
-- Pongo.

local helpers = require "spec.helpers"


local PLUGIN_NAME = "auth-router"


local validate do
  local schema = require("kong.plugins." .. PLUGIN_NAME .. ".schema")

  function validate(config)
    return helpers.validate_plugin_config_schema(config, schema)
  end
end


describe(PLUGIN_NAME .. ": (schema)", function()

  it("accepts a minimal config and fills every default", function()
    local entity, err = validate({ auth = { url = "http://auth.test/v1/me" } })
    assert.is_nil(err)
    assert.is_truthy(entity)

    local config = entity.config
    assert.equal("GET", config.auth.method)
    assert.same({ "authorization" }, config.auth.credential_headers)
    assert.equal(1000, config.auth.timeout_ms)
    assert.equal(60, config.auth.ttl_s)
    assert.equal("", config.auth.account_pointer)
    assert.equal("x-api-version", config.api_version.header)
    assert.equal(ngx.null, config.api_version.default)
    assert.equal("/flags", config.flags_pointer)
    assert.same({}, config.routes)
    assert.equal(ngx.null, config.route_header)
    assert.is_false(config.log.enabled)
    assert.equal("tcp", config.log.sink)
    assert.equal(8388608, config.log.queue_max_bytes)
    assert.same({ "authorization", "proxy-authorization", "cookie", "set-cookie" },
                config.log.redact_headers)
  end)

  it("accepts a realistic config", function()
    local _, err = validate({
      auth = {
        url = "https://auth.test/v1/introspect",
        credential_headers = { "authorization", "x-api-key" },
      },
      api_version = { path_prefix_pattern = [[^/(v\d+)/]], default = "v1" },
      routes = {
        { name = "email", paths = { "/send" }, target = "email.test:8080" },
        { name = "calendar", paths = { "/events", "/calendars" }, target = "calendar.test:8080",
          percentage = 50, account_match = { ["/plan"] = { "pro" } } },
      },
      upstream_headers = { { name = "x-account-id", pointer = "/id" } },
      route_header = "x-route",
      log = { enabled = true, sink = "http", url = "http://collector.test/logs" },
    })
    assert.is_nil(err)
  end)

  it("requires auth.url", function()
    local entity, err = validate({ auth = {} })
    assert.is_nil(entity)
    assert.same({ config = { auth = { url = "required field missing" } } }, err)
  end)

  it("rejects a value outside its range", function()
    local entity, err = validate({ auth = { url = "http://auth.test/", timeout_ms = 0 } })
    assert.is_nil(entity)
    assert.same({ config = { auth = { timeout_ms = "value should be between 1 and 2147483646" } } }, err)
  end)

  it("rejects a route with both upstream and target", function()
    local entity, err = validate({
      auth = { url = "http://auth.test/" },
      routes = { { name = "both", upstream = "legacy", target = "legacy.test:8080" } },
    })
    assert.is_nil(entity)
    assert.is_table(err.config.routes[1]["@entity"])
  end)

  it("rejects what only the native validator checks, naming the field", function()
    local entity, err = validate({
      auth = { url = "http://auth.test/" },
      api_version = { path_prefix_pattern = [[^/(v\d+]] },
    })
    assert.is_nil(entity)
    assert.matches("api_version.path_prefix_pattern: invalid regex", err.config, 1, true)
  end)

  it("accepts consumer mapping and rejects an unknown consumer field", function()
    local entity, err = validate({
      auth = { url = "http://auth.test/" },
      consumer = { by = "custom_id", pointer = "/login", anonymous = "guest" },
    })
    assert.is_nil(err)
    assert.same({ by = "custom_id", pointer = "/login", anonymous = "guest" }, entity.config.consumer)
    entity, err = validate({ auth = { url = "http://auth.test/" }, consumer = { by = "id" } })
    assert.is_nil(entity)
    assert.same({ config = { consumer = { by = "expected one of: username, custom_id" } } }, err)
  end)

  it("fills the cluster record's defaults and requires host and key_secret once enabled", function()
    local entity, err = validate({ auth = { url = "http://auth.test/" } })
    assert.is_nil(err)
    local c = entity.config.cluster
    assert.is_false(c.enabled)
    assert.equal(6379, c.port)
    assert.equal(200, c.timeout_ms)
    assert.equal(1000, c.poll_ms)
    assert.is_true(c.ssl_verify)

    entity, err = validate({ auth = { url = "http://auth.test/" }, cluster = { enabled = true } })
    assert.is_nil(entity)
    assert.equal("required field missing", err.config.cluster.host)
    assert.equal("required field missing", err.config.cluster.key_secret)

    entity, err = validate({ auth = { url = "http://auth.test/" },
                             cluster = { enabled = true, host = "redis.test", key_secret = "short" } })
    assert.is_nil(entity)
    assert.equal("length must be at least 16", err.config.cluster.key_secret)

    entity, err = validate({ auth = { url = "http://auth.test/" },
                             cluster = { enabled = true, host = "redis.test", password = "",
                                         key_secret = "0123456789abcdef-fleet" } })
    assert.is_nil(err)
    assert.equal("redis.test", entity.config.cluster.host)
  end)

  it("rejects duplicate route names", function()
    local entity, err = validate({
      auth = { url = "http://auth.test/" },
      routes = {
        { name = "email", target = "email.test:8080" },
        { name = "email", target = "email.test:8081" },
      },
    })
    assert.is_nil(entity)
    assert.matches("routes: duplicate route name 'email'", err.config, 1, true)
  end)
end)
