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

  -- The per-request path: the C ABI through LuaJIT's FFI (src/ffi), as
  -- lua/auth_router/init.lua calls it.
  describe("per-request C ABI", function()
    local ffi = require "ffi"
    local C = require("auth_router.native").C
    local last_error = require("auth_router.native").last_error
    -- nginx's header list entry (ngx_http_lua_ffi_table_elt_t, declared by
    -- resty.core, which needs nginx): the same layout under another name.
    ffi.cdef [[
      typedef struct { int len; const unsigned char *data; } spec_ngx_str;
      typedef struct { spec_ngx_str key; spec_ngx_str value; } spec_header;
    ]]
    local headers = ffi.new("spec_header[8]")
    local out = ffi.new("ar_access_out")

    -- ar_access on a request with these header (lowercase name, value) pairs.
    local function access_with(plugin, list)
      for i, h in ipairs(list) do
        headers[i - 1].key.data, headers[i - 1].key.len = h[1], #h[1]
        headers[i - 1].value.data, headers[i - 1].value.len = h[2], #h[2]
      end
      local rc = C.ar_access(plugin:ffi_ptr(), "GET", 3, "/send", 5, "/send", 5, 1000, 1.0,
                             headers, #list, out)
      return rc, out.handle
    end

    local function access(plugin, token)
      return access_with(plugin, token and { { "accept", "*/*" }, { "authorization", token } } or {})
    end

    it("counts a request through all four phases and frees its slot", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local s0 = native.stats()
      local rc, h = access(plugin, "Bearer t")
      assert.equal(3, rc) -- miss: nothing cached
      assert.equal(s0.live_slots + 1, native.stats().live_slots)
      assert.equal(0, C.ar_response(h, 200)) -- no account: no response headers
      assert.equal(0, C.ar_body_chunk(h, "hello", 5))
      assert.equal(0, C.ar_body_chunk(h, nil, 0)) -- the eof call may carry no data
      assert.equal(0, C.ar_finish(h))
      local s1 = native.stats()
      assert.equal(s0.requests + 1, s1.requests)
      assert.equal(s0.responses + 1, s1.responses)
      assert.equal(s0.response_bytes + 5, s1.response_bytes)
      assert.equal(s0.completed + 1, s1.completed)
      assert.equal(s0.live_slots, s1.live_slots)
    end)

    it("answers 'none' without a credential", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local rc, h = access(plugin, nil)
      assert.equal(0, rc)
      assert.equal(0, C.ar_finish(h))
    end)

    it("rejects a stale or invented handle with an error code, never a crash", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local _, h = access(plugin, "Bearer t")
      assert.equal(0, C.ar_finish(h))
      for _, bad in ipairs({ h, -1, 0.5, 2 ^ 60, 1 / 0 }) do
        local rc = C.ar_finish(bad)
        assert.equal(-2, rc)
        assert.matches("stale request handle", last_error(rc), 1, true)
        assert.equal(-2, C.ar_response(bad, 200))
        assert.equal(-2, C.ar_header_count(bad, 0))
      end
    end)

    it("answers 'repeated' for a credential header sent twice, naming it", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local rc, h = access_with(plugin, { { "authorization", "Bearer a" }, { "x-other", "1" },
                                          { "authorization", "Bearer b" } })
      assert.equal(5, rc)
      assert.equal(0, out.repeated) -- the first credential header
      assert.equal(0, C.ar_finish(h))
    end)

    it("refuses a NULL plugin with an error code", function()
      local rc = C.ar_access(nil, "GET", 3, "/", 1, "/", 1, 0, 0, headers, 1, out)
      assert.equal(-4, rc)
      assert.matches("NULL argument", last_error(rc), 1, true)
    end)

    it("keeps a request's config alive past the plugin's last Lua reference", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local _, h = access(plugin, "Bearer t")
      plugin = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      assert.equal(0, C.ar_response(h, 204))
      assert.equal(0, C.ar_finish(h))
    end)

    -- The miss path's mlua calls take the failure's kind as a string: one
    -- they do not know raises, never counts or logs as another kind.
    it("raises for a failure kind it does not know, on the miss path's calls", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      local rc, h = access(plugin, "Bearer t")
      assert.equal(3, rc) -- miss
      local x = native.exchange(h)
      local s0 = native.stats()
      local ok, err = pcall(x.auth_response, x, nil, "refused", 1.0, 0)
      assert.is_false(ok)
      assert.matches("unknown failure kind 'refused'", tostring(err), 1, true)
      ok, err = pcall(x.auth_response, x, nil, nil, 1.0, 0)
      assert.is_false(ok)
      assert.matches("pass the parser or the failure kind", tostring(err), 1, true)
      ok, err = pcall(x.fail, x, "timeout", 1.0) -- a call's kind, not a waiter's
      assert.is_false(ok)
      assert.matches("unknown failure kind 'timeout'", tostring(err), 1, true)
      local s1 = native.stats()
      assert.equal(s0.auth_errors_unreachable, s1.auth_errors_unreachable)
      assert.equal(s0.auth_errors_timeout, s1.auth_errors_timeout)
      -- a known kind still decides the request
      assert.equal("failed", (x:auth_response(nil, "timeout", 1.0, 0)))
      assert.equal(s0.auth_errors_timeout + 1, native.stats().auth_errors_timeout)
      assert.equal(0, C.ar_finish(h))
    end)

    it("turns a panic into an error code with its message; the next call works", function()
      local plugin = assert(native.compile(minimal(), SECRET))
      native._arm_panic()
      local rc = access(plugin, "Bearer t")
      assert.equal(-1, rc)
      assert.matches("injected fault: panic in access", last_error(rc), 1, true)
      local rc2, h = access(plugin, "Bearer t")
      assert.equal(3, rc2)
      assert.equal(0, C.ar_finish(h))
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
