-- A misbehaving auth service for the fault matrix: spec/fixtures/fault_auth.lua
-- run by `luajit` as a separate OS process on a raw socket, one per start().
-- The fixture's header lists the tokens and the fault each one produces.
--
--   local fault_auth = require "spec.openresty.fault_auth"
--   local a = fault_auth.start()        -- listens on a free loopback port
--   -- auth = { url = a.url }
--   a:calls("hang")                     -- requests that carried that token so far
--   a:closes("huge-length")             -- {why=, wrote=} of each of its connections
--   a:down(); a:up()                    -- process stopped (port refused), then back
--   a:stop()
--
-- Environment: AUTH_ROUTER_LUAJIT (default luajit), AUTH_ROUTER_KEEP=1 keeps
-- the directory after stop().

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson.safe"

local _M = {}

local LUAJIT = os.getenv("AUTH_ROUTER_LUAJIT") or "luajit"
local KEEP   = os.getenv("AUTH_ROUTER_KEEP") == "1"
local SCRIPT = helpers.FIXTURES .. "/fault_auth.lua"
local peer = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/peer.lua")
local run, quote, read_file = peer.run, peer.shell_quote, peer.read_file

local running = peer.track(_M)

local FaultAuth = {}
FaultAuth.__index = FaultAuth


function FaultAuth:_launch(port)
  self.pid, self.port = peer.launch{
    luajit = LUAJIT, script = SCRIPT, dir = self.dir, port = port,
    log = "fault_auth.log", what = "the fault auth service",
  }
end


--- Starts one; returns an object with port, url (http://127.0.0.1:port/auth)
-- and the methods below.
function _M.start()
  local code, out = run("mktemp -d /tmp/auth-router-fault-auth.XXXXXX")
  assert(code == 0, "mktemp failed: " .. out)
  local self = setmetatable({ dir = out:match("[^\n]+") }, FaultAuth)
  running[self] = true
  local ok, err = pcall(self._launch, self, 0)
  if not ok then
    self:stop()
    error(err, 2)
  end
  self.url = "http://127.0.0.1:" .. self.port .. "/auth"
  return self
end


--- Every event so far (see the fixture), or those of kind `ev`.
function FaultAuth:events(ev)
  local list = {}
  for line in (read_file(self.dir .. "/events.ndjson") or ""):gmatch("[^\n]+") do
    local e = cjson.decode(line)
    if e and (not ev or e.ev == ev) then
      list[#list + 1] = e
    end
  end
  return list
end


--- The number of requests that carried `token` (all requests without one).
function FaultAuth:calls(token)
  local n = 0
  for _, e in ipairs(self:events("call")) do
    if not token or e.token == token then
      n = n + 1
    end
  end
  return n
end


--- How the connections of the requests with `token` ended: a list of
-- { why = "peer closed" | "reset" | "answered" | "send: ...", wrote = bytes }.
function FaultAuth:closes(token)
  local conns = {}
  for _, e in ipairs(self:events("call")) do
    if e.token == token then
      conns[e.conn] = true
    end
  end
  local list = {}
  for _, e in ipairs(self:events("close")) do
    if conns[e.conn] then
      list[#list + 1] = { why = e.why, wrote = e.wrote }
    end
  end
  return list
end


local kill_and_wait = peer.kill_and_wait


--- The process ends: its port refuses connections. Events stay readable.
function FaultAuth:down()
  kill_and_wait(self.pid)
end


--- Starts it again on the same port (forgets the once- tokens it saw).
function FaultAuth:up()
  if not peer.alive(self.pid) then
    self:_launch(self.port)
  end
end


--- Stops it and removes its directory (unless AUTH_ROUTER_KEEP=1). Idempotent.
function FaultAuth:stop()
  if self.stopped then
    return
  end
  self.stopped = true
  running[self] = nil
  kill_and_wait(self.pid)
  if not KEEP and self.dir and self.dir:match("^/tmp/auth%-router%-fault%-auth%.") then
    run("rm -rf " .. quote(self.dir))
  end
end


return _M
