-- A real redis-server (Debian's package) for the specs: started on a free
-- loopback port in its own temporary directory (no persistence), stopped on
-- :stop() and, as a safety net, when the Lua state closes (peer.track).
--
--   local redis_server = require "spec.openresty.redis_server"   -- or dofile
--   local r = redis_server.start{ password = "pw" }   -- r.port
--   r:cli("SET", "k", "v"); r:kill(); r:restart(); r:stop()

-- dofile, not require: spec/kong loads this file from Kong's tree too
local HERE   = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local peer   = dofile(HERE .. "/peer.lua")
local socket = require "socket"

local quote = peer.shell_quote

local _M = {}
local running = peer.track(_M)

local Server = {}
Server.__index = Server


function Server:_launch()
  local args = {
    "redis-server", "--port", self.port, "--bind", "127.0.0.1",
    "--save", "''", "--appendonly", "no", "--daemonize", "no",
    "--dir", quote(self.dir), "--enable-debug-command", "local",
  }
  if self.password then
    args[#args + 1] = "--requirepass " .. quote(self.password)
  end
  local code, out = peer.run(table.concat(args, " ") .. " >>" .. quote(self.dir .. "/redis.log")
                             .. " 2>&1 </dev/null & echo $!")
  self.pid = tonumber(out:match("(%d+)%s*$"))
  assert(code == 0 and self.pid, "cannot start redis-server: " .. out)
  local ok = peer.wait_until(5, function()
    local c = socket.connect("127.0.0.1", self.port)
    if c then
      c:close()
      return true
    end
    return not peer.alive(self.pid)
  end)
  assert(ok and peer.alive(self.pid), "redis-server did not start:\n"
         .. (peer.read_file(self.dir .. "/redis.log") or ""))
  running[self] = true
end


--- start(opts) -> server. opts.password: requirepass.
function _M.start(opts)
  opts = opts or {}
  local code = peer.run("command -v redis-server")
  assert(code == 0, "redis-server is not installed (scripts/install-deps.sh installs it)")
  local dir = os.tmpname()
  os.remove(dir)
  assert(peer.run("mkdir -p " .. quote(dir)) == 0)
  local self = setmetatable({ dir = dir, port = opts.port or peer.free_ports(1)[1],
                              password = opts.password }, Server)
  self:_launch()
  return self
end


--- cli(...) -> the output of redis-cli with these arguments, trimmed.
function Server:cli(...)
  local args = {}
  for i, a in ipairs({ ... }) do
    args[i] = quote(a)
  end
  local auth = self.password and (" --no-auth-warning -a " .. quote(self.password)) or ""
  local _, out = peer.run("redis-cli -p " .. self.port .. auth .. " " .. table.concat(args, " "))
  return (out:gsub("%s+$", ""))
end


--- Kills it at once (SIGKILL), as a crash would.
function Server:kill()
  if self.pid then
    peer.run("kill -KILL " .. self.pid)
    peer.wait_until(5, function() return not peer.alive(self.pid) end)
  end
  running[self] = nil
end


--- Starts it again on the same port, empty.
function Server:restart()
  self:kill()
  self:_launch()
end


function Server:stop()
  peer.kill_and_wait(self.pid)
  running[self] = nil
  peer.run("rm -rf " .. quote(self.dir))
end


return _M
