-- The native module and the nginx-free Lua config layer, under plain LuaJIT.
-- Loads what `luarocks make` installed (scripts/test.sh points LUA_PATH and
-- LUA_CPATH at a fresh tree), so a broken install fails here.

local cjson  = require "cjson"
local native = require "auth_router_native"
local config = require "auth_router.config"

local AUTH_URL = "http://127.0.0.1:9000/auth"
local SECRET   = string.rep("s", 32)

local function minimal()
  return { auth = { url = AUTH_URL } }
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end


describe("auth_router_native", function()

  describe("version()", function()
    it("matches the rockspec and Cargo.toml versions", function()
      local v = native.version()
      assert.matches("^%d+%.%d+%.%d+$", v)
      assert.matches('\nversion = "' .. v:gsub("%.", "%%.") .. '"\n', read("Cargo.toml"))
      assert.truthy(io.open("kong-plugin-auth-router-" .. v .. "-1.rockspec"))
    end)
  end)

  describe("validate()", function()
    it("fills every default of a minimal config", function()
      local c = assert(native.validate(minimal()))
      assert.equal(AUTH_URL, c.auth.url)
      assert.equal("GET", c.auth.method)
      assert.same({ "authorization" }, c.auth.credential_headers)
      assert.equal(1000, c.auth.timeout_ms)
      assert.equal(60, c.auth.ttl_s)
      assert.equal(503, c.auth.failure_status)
      assert.equal("x-api-version", c.api_version.header)
      assert.equal("/flags", c.flags_pointer)
      assert.equal(false, c.log.enabled)
      assert.equal(65536, c.log.max_body_bytes)
      assert.equal(0, #c.routes)
    end)

    it("returns absent optional fields as null (cjson.null, like ngx.null)", function()
      local c = assert(native.validate(minimal()))
      assert.equal(cjson.null, c.route_header)
      assert.equal(cjson.null, c.api_version.default)
    end)

    it("reads null fields as absent, as Kong passes them", function()
      local conf = minimal()
      conf.route_header = cjson.null
      conf.api_version = { default = cjson.null, header = cjson.null }
      local c = assert(native.validate(conf))
      assert.equal("x-api-version", c.api_version.header)
    end)

    it("accepts JSON text", function()
      local c = assert(native.validate(cjson.encode(minimal())))
      assert.equal(AUTH_URL, c.auth.url)
    end)

    it("names the field path of every error at once", function()
      local conf = minimal()
      conf.auth.ttl_s = -1
      conf.routes = {
        { name = "email", paths = { "/send" }, target = "email:8080" },
        { name = "calendar", target = "no-port" },
      }
      local c, errs = native.validate(conf)
      assert.is_nil(c)
      assert.same({
        "auth.ttl_s: value should be between 0 and 31536000",
        "routes[2].target: expected host:port, got 'no-port'",
      }, errs)
    end)

    it("rejects unknown fields so typos never fall back to defaults", function()
      local conf = minimal()
      conf.auth.ttl = 5
      local _, errs = native.validate(conf)
      assert.same({ "auth.ttl: unknown field" }, errs)
    end)

    it("rejects a config that is not a table or JSON", function()
      local c, errs = native.validate("{not json")
      assert.is_nil(c)
      assert.matches("config is not valid JSON", errs[1], 1, true)
      c, errs = native.validate(42)
      assert.is_nil(c)
      assert.equal("config: expected a record (JSON object)", errs[1])
    end)
  end)

  describe("compile()", function()
    it("returns a plugin whose config() is the normalized config", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      assert.same(native.validate(minimal()), plugin:config())
    end)

    it("counts one compile per call", function()
      local before = native.stats().configs_compiled
      assert(native.compile(minimal(), SECRET))
      assert.equal(before + 1, native.stats().configs_compiled)
    end)
  end)

  describe("exchange", function()
    it("counts a request through all four phases", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local s0 = native.stats()
      local x, step = plugin:access("GET", "/send", 1000, 1.0, "Bearer t")
      assert.equal("miss", step)
      x:response(200)
      x:body_chunk("hello")
      x:body_chunk(nil) -- the eof call of body_filter may carry no data
      x:finish(1010)
      local s1 = native.stats()
      assert.equal(s0.requests + 1, s1.requests)
      assert.equal(s0.responses + 1, s1.responses)
      assert.equal(s0.response_bytes + 5, s1.response_bytes)
      assert.equal(s0.completed + 1, s1.completed)
    end)

    it("raises a Lua error, not a crash, on bad arguments", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local ok, err = pcall(plugin.access, plugin, "GET", nil, 1)
      assert.is_false(ok)
      assert.matches("bad argument", tostring(err))
    end)
  end)

  describe("panics", function()
    it("surface as a Lua error carrying the panic message, and the module keeps working", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      native._arm_panic()
      local ok, err = pcall(plugin.access, plugin, "GET", "/", 1, 1)
      assert.is_false(ok)
      assert.matches("injected fault: panic in access", tostring(err), 1, true)
      assert.truthy(pcall(plugin.access, plugin, "GET", "/", 1, 1))
    end)
  end)
end)


describe("auth_router.config", function()
  it("validate() joins every error into one message", function()
    local conf = minimal()
    conf.auth.method = "PUT"
    conf.flags_pointer = "flags"
    local c, err = config.validate(conf)
    assert.is_nil(c)
    assert.equal("auth.method: expected one of: GET, POST; "
      .. "flags_pointer: 'flags' is not a JSON pointer (must be empty or start with '/')", err)
  end)

  it("compile() reports an invalid config naming the field", function()
    local p, err = config.compile({ auth = {} }, SECRET)
    assert.is_nil(p)
    assert.equal("invalid auth-router config: auth.url: required field missing", err)
  end)

  it("compile() refuses a short secret with a clear error", function()
    local p, err = config.compile(minimal(), "short")
    assert.is_nil(p)
    assert.matches("secret must be at least 16 bytes", err, 1, true)
  end)

end)
