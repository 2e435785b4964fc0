-- schema.lua agrees with the native config compiler (src/config/), the
-- single source of truth for fields, defaults, ranges and one_of sets.
--
-- This spec loads schema.lua under plain busted + LuaJIT, without Kong, with
-- a minimal stand-in for `kong.db.schema.typedefs`: only the typedefs
-- schema.lua uses, each a plain field table with the type, default and
-- between of kong/db/schema/typedefs.lua in Kong 3.9.3, callable with
-- overrides like Kong's `Schema.define`. Kong's own validation of the schema
-- (the real typedefs, the DSL, entity checks, the Admin API) runs in real Kong
-- in spec/kong/01-schema_spec.lua, and the handler runs only there.
--
-- Run against the installed tree:
--   LUA_PATH="$T/share/lua/5.1/?.lua;$T/share/lua/5.1/?/init.lua;;" \
--   LUA_CPATH="$T/lib/lua/5.1/?.so;;" busted --lua=luajit spec/unit/02-schema_defaults_spec.lua

local cjson = require "cjson"

local null = cjson.null -- what ngx.null is in OpenResty: a NULL lightuserdata

local AUTH_URL = "http://127.0.0.1/auth"


-- Stub of kong.db.schema.typedefs: only what schema.lua uses.
local typedefs do
  local function define(t)
    return setmetatable(t, {
      __call = function(self, overrides)
        overrides = overrides or {}
        for k, v in pairs(self) do
          if overrides[k] == nil then
            overrides[k] = v
          end
        end
        return overrides
      end,
    })
  end

  local http_protocols = { "grpc", "grpcs", "http", "https" } -- Kong OSS 3.9

  typedefs = setmetatable({
    no_consumer    = define { type = "foreign", reference = "consumers", eq = null },
    protocols_http = define {
      type = "set",
      required = true,
      default = http_protocols,
      elements = { type = "string", one_of = http_protocols },
    },
    header_name    = define { type = "string" },
    url            = define { type = "string" },
    host           = define { type = "string" },
    port           = define { type = "integer", between = { 0, 65535 } },
    timeout        = define { type = "integer", between = { 0, 2 ^ 31 - 2 } },
  }, {
    __index = function(_, name)
      error("typedefs stub: " .. tostring(name) .. " is not stubbed", 2)
    end,
  })
end

package.loaded["kong.db.schema.typedefs"] = typedefs

-- The native side: auth_router.config is the nginx-free part of the core
-- (require("auth_router").validate is the same function).
local config = require "auth_router.config"
local native = require "auth_router.native"
local schema = require "kong.plugins.auth-router.schema"


---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

local function config_field()
  for _, item in ipairs(schema.fields) do
    local name, field = next(item)
    if name == "config" then
      return field
    end
  end
  error("schema.lua has no config field")
end

local CONFIG = config_field()


local function deepcopy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = deepcopy(x)
  end
  return out
end


local function record_fields(record)
  local out = {}
  for _, item in ipairs(record.fields) do
    local name, field = next(item)
    out[#out + 1] = { name = name, field = field }
  end
  return out
end


-- "auth.timeout_ms", "routes[1].percentage": the native error path syntax.
local function path_string(path)
  local s = ""
  for _, k in ipairs(path) do
    if type(k) == "number" then
      s = s .. "[" .. k .. "]"
    elseif s == "" then
      s = k
    else
      s = s .. "." .. k
    end
  end
  return s
end


local function append(path, key)
  local out = { unpack(path) }
  out[#out + 1] = key
  return out
end


-- Calls fn(field, path, parent_record) for every field under the config
-- record; arrays of records are walked through their first element.
local function walk(record, path, fn)
  for _, f in ipairs(record_fields(record)) do
    local p = append(path, f.name)
    fn(f.field, p, record)
    if f.field.type == "record" then
      walk(f.field, p, fn)
    elseif f.field.type == "array" and f.field.elements.type == "record" then
      walk(f.field.elements, append(p, 1), fn)
    end
  end
end


-- What Kong stores for `value` on insert (kong.db.schema, handle_missing_field
-- and process_auto_fields): an absent field gets its default; else ngx.null
-- unless required; an absent required record is expanded to get its nested
-- defaults; records and arrays of records are filled recursively.
local function materialize(field, value)
  if value == nil then
    if field.default ~= nil then
      return deepcopy(field.default)
    end
    if field.required ~= true then
      return null
    end
    if field.type ~= "record" then
      return nil
    end
    value = {}
  end
  if value == null then
    return null
  end
  if field.type == "record" then
    local out = {}
    for _, f in ipairs(record_fields(field)) do
      out[f.name] = materialize(f.field, value[f.name])
    end
    return out
  end
  if (field.type == "array" or field.type == "set") and type(value) == "table" then
    local out = {}
    for i, v in ipairs(value) do
      out[i] = materialize(field.elements, v)
    end
    return out
  end
  return value
end


local function show(v)
  if v == null then
    return "null"
  elseif type(v) == "table" then
    return cjson.encode(v)
  end
  return tostring(v)
end


-- Every difference between two normalized configs, one line per field.
local function diff(from_schema, from_native, path, out)
  if type(from_schema) == "table" and type(from_native) == "table" then
    local keys = {}
    for k in pairs(from_schema) do keys[k] = true end
    for k in pairs(from_native) do keys[k] = true end
    for k in pairs(keys) do
      diff(from_schema[k], from_native[k], append(path, k), out)
    end
  elseif from_schema ~= from_native then
    out[#out + 1] = ("%s: schema.lua gives %s, native gives %s")
                    :format(path_string(path), show(from_schema), show(from_native))
  end
  return out
end


-- A valid config that reaches every field: one route, one header rule of each kind.
local BASE = {
  auth = { url = AUTH_URL },
  routes = { { name = "r1", target = "h:1" } },
  upstream_headers = { { name = "x-a", value = "v" } },
  response_headers = { { name = "x-b", pointer = "/id" } },
}


-- BASE with the value at `path` replaced (nil removes it).
local function with(path, value)
  local cfg = deepcopy(BASE)
  local t = cfg
  for i = 1, #path - 1 do
    local k = path[i]
    if t[k] == nil then
      t[k] = {}
    end
    t = t[k]
  end
  t[path[#path]] = value
  return cfg
end


local function native_errors(cfg)
  local normalized, errs = native.validate(cfg)
  if normalized then
    return {}
  end
  return errs
end


-- The errors about exactly this field (not its children).
local function errors_at(cfg, path)
  local prefix = path_string(path) .. ": "
  local found = {}
  for _, e in ipairs(native_errors(cfg)) do
    if e:sub(1, #prefix) == prefix then
      found[#found + 1] = e
    end
  end
  return found
end


-- A value of the wrong type for a field.
local WRONG_TYPE = {
  string  = 42,
  integer = "1",
  number  = "1",
  boolean = "true",
  array   = "x",
  set     = "x",
  map     = "x",
  record  = "x",
}


-- Valid values for the fields of `only_one_of` checks.
local SAMPLE = {
  upstream = "legacy-upstream",
  target   = "h:1",
  pointer  = "/id",
  value    = "v",
}


-- Fields a user must give (required, no default, and for a record: holding
-- such a field). Kong expands an absent required record whose fields all
-- have defaults, so those need not be given.
local function must_be_given(field)
  if field.required ~= true or field.default ~= nil then
    return false
  end
  if field.type ~= "record" then
    return true
  end
  for _, f in ipairs(record_fields(field)) do
    if must_be_given(f.field) then
      return true
    end
  end
  return false
end


local function only_one_of_fields(record)
  local out = {}
  for _, check in ipairs(record.entity_checks or {}) do
    for _, name in ipairs(check.only_one_of or {}) do
      out[name] = true
    end
  end
  return out
end


---------------------------------------------------------------------------
-- specs
---------------------------------------------------------------------------

describe("auth-router schema.lua vs native config", function()

  describe("defaults", function()
    it("are the same field by field for a minimal config", function()
      local input = { auth = { url = AUTH_URL } }
      local normalized, err = config.validate(input)
      assert.is_nil(err)
      assert.same({}, diff(materialize(CONFIG, input), normalized, {}, {}))
    end)

    it("are the same for route and header rule elements", function()
      local normalized, err = config.validate(BASE)
      assert.is_nil(err)
      assert.same({}, diff(materialize(CONFIG, BASE), normalized, {}, {}))
    end)

    it("leave every field without a default null in both", function()
      local nulls = {}
      walk(CONFIG, {}, function(field, path)
        local given = BASE
        for _, k in ipairs(path) do
          given = type(given) == "table" and given[k] or nil
        end
        if field.default == nil and not field.required and given == nil then
          nulls[#nulls + 1] = path
        end
      end)
      assert.is_true(#nulls > 0)
      local normalized = assert(config.validate(BASE))
      for _, path in ipairs(nulls) do
        local v = normalized
        for _, k in ipairs(path) do
          v = v[k]
        end
        assert.equal(null, v, path_string(path) .. " should be null natively")
      end
    end)
  end)

  describe("between ranges", function()
    local ranged = {}
    walk(CONFIG, {}, function(field, path)
      if field.between then
        ranged[#ranged + 1] = { field = field, path = path }
      end
    end)

    -- src/config/mod.rs reads every number through integer(min, max) or
    -- number(min, max), so a numeric field without a range would be a drift.
    it("exist on every numeric field of schema.lua", function()
      local unranged = {}
      walk(CONFIG, {}, function(field, path)
        if (field.type == "integer" or field.type == "number") and not field.between then
          unranged[#unranged + 1] = path_string(path)
        end
      end)
      assert.same({}, unranged)
      assert.is_true(#ranged > 0)
    end)

    for _, r in ipairs(ranged) do
      local lo, hi = r.field.between[1], r.field.between[2]
      local name = path_string(r.path)
      local delta = r.field.type == "integer" and 1 or 0.001

      it(("%s: %s..%s, rejected just outside, accepted at both ends"):format(name, lo, hi), function()
        for _, v in ipairs({ lo - delta, hi + delta }) do
          local errs = errors_at(with(r.path, v), r.path)
          assert.equal(1, #errs, name .. " = " .. v .. " should be rejected")
          assert.matches("between", errs[1], 1, true)
        end
        for _, v in ipairs({ lo, hi }) do
          assert.same({}, native_errors(with(r.path, v)), name .. " = " .. v)
        end
      end)

      if r.field.type == "integer" and lo + 0.5 < hi then
        it(name .. ": integer natively too", function()
          local errs = errors_at(with(r.path, lo + 0.5), r.path)
          assert.same({ name .. ": expected an integer" }, errs)
        end)
      elseif r.field.type == "number" and lo + 0.5 < hi then
        it(name .. ": fractions accepted natively too", function()
          assert.same({}, native_errors(with(r.path, lo + 0.5)))
        end)
      end
    end
  end)

  describe("one_of sets", function()
    local sets = {}
    walk(CONFIG, {}, function(field, path)
      if field.one_of then
        sets[#sets + 1] = { field = field, path = path }
      end
    end)

    it("exist in schema.lua", function()
      assert.equal(3, #sets) -- auth.method, consumer.by, log.sink
    end)

    for _, s in ipairs(sets) do
      local name = path_string(s.path)
      it(name .. ": same members in both", function()
        for _, v in ipairs(s.field.one_of) do
          assert.same({}, native_errors(with(s.path, v)), name .. " = " .. v)
        end
        local errs = errors_at(with(s.path, "NOT-A-MEMBER"), s.path)
        assert.same({ name .. ": expected one of: " .. table.concat(s.field.one_of, ", ") }, errs)
      end)
    end
  end)

  describe("types", function()
    walk(CONFIG, {}, function(field, path)
      local name = path_string(path)
      it(name .. " is a " .. field.type .. " natively too", function()
        local cfg = with(path, WRONG_TYPE[field.type])
        local typed = false
        for _, e in ipairs(errors_at(cfg, path)) do
          typed = typed or e:find(": expected a", 1, true) ~= nil
        end
        assert.is_true(typed, name .. ": " .. show(native_errors(cfg)))
      end)
    end)
  end)

  describe("length limits", function()
    walk(CONFIG, {}, function(field, path)
      local name = path_string(path)
      if field.type == "array" and (field.len_min or 0) > 0 then
        it(name .. " needs " .. field.len_min .. " element(s) natively too", function()
          assert.equal(1, #errors_at(with(path, {}), path))
        end)
      elseif field.type == "map" and (field.values.len_min or 0) > 0 then
        it(name .. " values need " .. field.values.len_min .. " element(s) natively too", function()
          assert.equal(1, #errors_at(with(path, { ["/plan"] = {} }), path))
          assert.same({}, native_errors(with(path, { ["/plan"] = { "pro" } })))
        end)
      end
    end)
  end)

  describe("required fields", function()
    walk(CONFIG, {}, function(field, path, parent)
      local name = path_string(path)
      if must_be_given(field) then
        it(name .. " is required natively too", function()
          assert.same({ name .. ": required field missing" }, errors_at(with(path, nil), path))
        end)
      elseif not only_one_of_fields(parent)[path[#path]] then
        it(name .. " may be left out natively too", function()
          assert.same({}, native_errors(with(path, nil)))
        end)
      end
    end)

    it("api_version, log and cluster are materialized, not demanded", function()
      for _, name in ipairs({ "api_version", "log", "cluster" }) do
        local field
        for _, f in ipairs(record_fields(CONFIG)) do
          if f.name == name then field = f.field end
        end
        assert.is_true(field.required, name)
        assert.is_false(must_be_given(field), name)
      end
    end)
  end)

  describe("only_one_of checks", function()
    walk(CONFIG, {}, function(field, path)
      if field.type ~= "record" and not (field.type == "array" and field.elements.type == "record") then
        return
      end
      local record = field.type == "record" and field or field.elements
      local rpath = field.type == "record" and path or append(path, 1)
      for _, check in ipairs(record.entity_checks or {}) do
        local names = check.only_one_of
        if names then
          local label = path_string(rpath) .. " " .. table.concat(names, "/")
          it(label .. ": exactly one, natively too", function()
            local cfg = deepcopy(BASE)
            local t = cfg
            for _, k in ipairs(rpath) do t = t[k] end
            for _, n in ipairs(names) do t[n] = nil end
            assert.is_true(#native_errors(cfg) > 0, label .. ": none set")
            for _, n in ipairs(names) do t[n] = SAMPLE[n] end
            assert.is_true(#native_errors(cfg) > 0, label .. ": all set")
            for _, only in ipairs(names) do
              for _, n in ipairs(names) do t[n] = nil end
              t[only] = SAMPLE[only]
              assert.same({}, native_errors(cfg), label .. ": only " .. only)
            end
          end)
        end
      end
    end)
  end)

  describe("descriptions", function()
    it("every field has one sentence", function()
      local missing = {}
      walk(CONFIG, {}, function(field, path)
        local d = field.description
        if type(d) ~= "string" or not d:match("^%u.*%.$") then
          missing[#missing + 1] = path_string(path)
        end
      end)
      assert.same({}, missing)
    end)
  end)

  describe("custom_validator", function()
    local validator = CONFIG.custom_validator

    it("is the config record's", function()
      assert.is_function(validator)
    end)

    it("returns true for a minimal config as Kong stores it (ngx.null in every unset field)", function()
      local cfg = materialize(CONFIG, { auth = { url = AUTH_URL } })
      assert.equal(null, cfg.route_header)
      assert.equal(null, cfg.log.host)
      assert.same({ true }, { validator(cfg) })
    end)

    it("returns true for a realistic config", function()
      local cfg = materialize(CONFIG, {
        auth = {
          url = "https://auth.internal/v1/introspect",
          credential_headers = { "authorization", "x-api-key" },
          ttl_s = 30.5,
        },
        api_version = { path_prefix_pattern = [[^/(v\d+)/]], default = "v1" },
        routes = {
          { name = "email", paths = { "/send" }, target = "email:8080" },
          { name = "calendar", paths = { "/events", "/calendars" }, target = "calendar:8080",
            flags = { "calendar" }, percentage = 50, account_match = { ["/plan"] = { "pro" } } },
          { name = "legacy-v1", api_versions = { "v1" }, upstream = "legacy" },
        },
        upstream_headers = { { name = "x-account-id", pointer = "/id" } },
        response_headers = { { name = "x-served-by", value = "auth-router" } },
        route_header = "x-route",
        log = { enabled = true, sink = "http", url = "http://collector:8080/logs",
                request_body = true, redact_body_fields = { "password" } },
      })
      assert.same({ true }, { validator(cfg) })
    end)

    it("returns true for the auth-router config in examples/kong.yml", function()
      local has_yaml, lyaml = pcall(require, "lyaml")
      if not has_yaml then
        pending("needs lyaml (Debian: lua-yaml)")
        return
      end
      local f = assert(io.open("examples/kong.yml", "rb"))
      local doc = lyaml.load(f:read("*a"))
      f:close()
      local found = 0
      for _, service in ipairs(doc.services) do
        for _, plugin in ipairs(service.plugins or {}) do
          if plugin.name == "auth-router" then
            found = found + 1
            assert.same({ true }, { validator(materialize(CONFIG, plugin.config)) })
          end
        end
      end
      assert.equal(1, found)
    end)

    it("returns nil and a message naming the field for a route with both upstream and target", function()
      local cfg = materialize(CONFIG, {
        auth = { url = AUTH_URL },
        routes = { { name = "both", upstream = "legacy", target = "h:1" } },
      })
      local ok, err = validator(cfg)
      assert.is_nil(ok)
      assert.matches("routes[1].target: only one of upstream or target may be set", err, 1, true)
    end)

    it("returns nil and a message naming the field for a bad regex", function()
      local cfg = materialize(CONFIG, {
        auth = { url = AUTH_URL },
        api_version = { path_prefix_pattern = [[^/(v\d+]] },
      })
      local ok, err = validator(cfg)
      assert.is_nil(ok)
      assert.matches("api_version.path_prefix_pattern: invalid regex", err, 1, true)
    end)

    it("returns nil and a message naming the field for an enabled http log without url", function()
      local cfg = materialize(CONFIG, {
        auth = { url = AUTH_URL },
        log = { enabled = true, sink = "http" },
      })
      local ok, err = validator(cfg)
      assert.is_nil(ok)
      assert.matches("log.url: required when sink is http", err, 1, true)
    end)

    it("returns nil and messages naming the fields for an enabled cluster without host or key_secret, "
       .. "and true once both are given", function()
      local cfg = materialize(CONFIG, {
        auth = { url = AUTH_URL },
        cluster = { enabled = true, key_secret = "too short" },
      })
      local ok, err = validator(cfg)
      assert.is_nil(ok)
      assert.matches("cluster.host: required when cluster is enabled", err, 1, true)
      assert.matches("cluster.key_secret: must be at least 16 characters", err, 1, true)
      cfg = materialize(CONFIG, {
        auth = { url = AUTH_URL },
        cluster = { enabled = true, host = "redis.internal", key_secret = "0123456789abcdef" },
      })
      assert.is_true(validator(cfg))
    end)
  end)
end)
