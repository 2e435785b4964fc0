-- The services around Kong in spec/kong: the mock auth service and three
-- upstreams (email, calendar, legacy) of spec/fixtures/mocks.lua, which
-- documents the token conventions, served by Kong's own spec.helpers.http_mock
-- nginx; and the log collector of spec/openresty/collector.lua. The same
-- mocks back spec/openresty, so both suites speak to identical services.
-- Works under scripts/kong-test.sh and under Pongo alike: paths are found
-- from this file's location, never from the working directory (Kong's tree).
--
--   local mocks = dofile(ROOT .. "/spec/kong/mocks.lua")
--   local m = mocks.start()   -- m.auth_url, m.ports.email, ..., m:calls(token), m:stop()

local helpers   = require "spec.helpers"
local http_mock = require "spec.helpers.http_mock"
local cjson     = require "cjson"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/kong/[^/]*$")
assert(ROOT, "spec/kong/mocks.lua: cannot find the repository root")

local peer = dofile(ROOT .. "/spec/openresty/peer.lua")

local UPSTREAMS = { "email", "calendar", "legacy" }

local _M = { root = ROOT }
local mt = { __index = _M }


local function lua(code)
  return { access = code }
end


local function get_json(port, path)
  local client = helpers.http_client("127.0.0.1", port, 5000)
  local res = assert(client:send { method = "GET", path = path })
  local body = assert(res:read_body())
  client:close()
  assert(res.status == 200, "mock " .. path .. ": " .. res.status .. " " .. body)
  return cjson.decode(body)
end


--- start() -> mocks: every mock on free loopback ports.
function _M.start()
  local init = ("package.path = %q .. package.path; require('mocks')")
               :format(ROOT .. "/spec/fixtures/?.lua;")
  local self = setmetatable({ ports = {}, targets = {} }, mt)

  local ports = _M.free_ports(1 + #UPSTREAMS)
  local auth_port = ports[1]
  self.auth = assert(http_mock.new("127.0.0.1:" .. auth_port, {
    ["= /__calls"]  = lua [[require("mocks").calls()]],
    ["= /__last"]   = lua [[require("mocks").last()]],
    ["= /__reset"]  = lua [[require("mocks").reset()]],
    ["= /__behave"] = lua [[require("mocks").behave()]],
    ["/"]           = lua [[require("mocks").auth()]],
  }, {
    prefix   = "servroot_auth_router_auth",
    init     = init,
    dicts    = { mocks = "1m" },
    log_opts = { req = false, err = false },
  }))
  assert(self.auth:start())
  self.ports.auth = auth_port
  self.auth_url = "http://127.0.0.1:" .. auth_port .. "/v1/introspect"

  local listens, names = {}, {}
  for i, name in ipairs(UPSTREAMS) do
    local port = ports[1 + i]
    listens[i] = "127.0.0.1:" .. port
    names[#names + 1] = ("[%q] = %q"):format(tostring(port), name)
    self.ports[name] = port
    self.targets[name] = "127.0.0.1:" .. port
  end
  self.upstreams = assert(http_mock.new(listens, {
    ["/"] = lua(("require('mocks').upstream(({%s})[ngx.var.server_port])")
                :format(table.concat(names, ", "))),
  }, {
    prefix   = "servroot_auth_router_upstreams",
    init     = init,
    log_opts = { req = false, err = false },
  }))
  assert(self.upstreams:start())
  return self
end


--- free_ports(n) -> `n` free loopback ports from the kernel's ephemeral
-- range. Not helpers.get_available_port: it draws from 10000-30000, where
-- Kong's test template binds its own mock upstream (15555-15558) once Kong
-- starts, after the draw (a mock or a listener there fails Kong's start).
_M.free_ports = peer.free_ports


--- start_kong([extra]) -> Kong as every spec here runs it: DB-less (the
-- config from Kong's declarative blueprints, unless `extra` gives one), the
-- plugin enabled, 2 workers, the plugin's shared dict. `extra` adds or
-- overrides Kong properties.
function _M.start_kong(extra)
  local env = {
    database                    = "off",
    plugins                     = "bundled,auth-router",
    nginx_conf                  = "spec/fixtures/custom_nginx.template",
    nginx_main_worker_processes = 2,
    nginx_http_lua_shared_dict  = "auth_router 4m",
  }
  for k, v in pairs(extra or {}) do
    env[k] = v
  end
  return helpers.start_kong(env)
end


--- calls([token]) -> auth calls so far (all, or with that token).
function _M:calls(token)
  local path = "/__calls" .. (token and "?token=" .. ngx.escape_uri(token) or "")
  return get_json(self.ports.auth, path).calls
end


--- reset(): zeroes the auth mock's counters and forgets its aliases.
function _M:reset()
  get_json(self.ports.auth, "/__reset")
end


--- behave(token, as): the auth mock answers `token` as if it were `as`.
function _M:behave(token, as)
  get_json(self.ports.auth, "/__behave?token=" .. ngx.escape_uri(token)
                            .. (as and "&as=" .. ngx.escape_uri(as) or ""))
end


function _M:stop()
  if self.auth then
    self.auth:stop()
  end
  if self.upstreams then
    self.upstreams:stop()
  end
end


-- The collector module, loaded once and kept: it stops its collectors when
-- it is garbage collected (so that an aborted run leaves none behind).
local collector_module = dofile(ROOT .. "/spec/openresty/collector.lua")


--- collector() -> a running log collector (see spec/openresty/collector.lua),
-- a separate luajit process given this process's module paths, where Kong's
-- OpenResty keeps lua-cjson and luasocket.
function _M.collector()
  local luajit = ("LUA_PATH=%q LUA_CPATH=%q luajit"):format(package.path, package.cpath)
  return collector_module.start({ luajit = luajit })
end


return _M
