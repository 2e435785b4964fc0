-- The process side of the spec peers that run as their own luajit process
-- (spec/fixtures/collector.lua, spec/fixtures/fault_auth.lua): start one on
-- a port and wait for its ready file, tell whether it lives, stop it, and
-- stop every one still running when the Lua state closes. No dependency on
-- the spec helpers: Kong's specs load the collector too (spec/kong/mocks.lua).
--
--   local peer = dofile(<this file>)
--   local pid, port = peer.launch{ luajit = "luajit", script = path, dir = dir,
--                                  port = 0, log = "x.log", what = "the x", args = " lifetime=300" }

local socket = require "socket"

local _M = {}

local START_TIMEOUT = 5
local STOP_TIMEOUT  = 5


function _M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local quote = _M.shell_quote


function _M.run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("__rc=(%d+)%s*$"))
  return code, (out:gsub("__rc=%d+%s*$", ""))
end
local run = _M.run


--- free_ports(n) -> `n` distinct free loopback ports, bound to port 0 and
-- released: the kernel's ephemeral range, which keeps clear of every fixed
-- port a spec's nginx binds (Kong's test template listens on 15555-15558).
function _M.free_ports(n)
  local socks, ports = {}, {}
  for i = 1, n do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    socks[i], ports[i] = s, tonumber(port)
  end
  for _, s in ipairs(socks) do
    s:close()
  end
  return ports
end


function _M.read_file(path, offset)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  if offset then
    f:seek("set", offset)
  end
  local text = f:read("*a")
  f:close()
  return text
end
local read_file = _M.read_file


-- The pid of this (the test runner's) process, which the peers watch: they
-- exit when it is gone.
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    pcall(ffi.cdef, "int getpid(void);")
    local okp, pid = pcall(function() return ffi.C.getpid() end)
    if okp then
      _M.my_pid = tonumber(pid)
    end
  end
  if not _M.my_pid then
    local stat = read_file("/proc/self/stat")
    -- without FFI /proc/self is the reading process itself: still us
    _M.my_pid = stat and tonumber(stat:match("^%d+"))
  end
end


-- Reaps a zombie child (a peer is re-parented to us when the helpers'
-- subreaper is active); alive() calls it.
local reap = function() end
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    pcall(ffi.cdef, "int waitpid(int pid, int *status, int options);")
    reap = function(pid) pcall(ffi.C.waitpid, pid, nil, 1) end
  end
end


function _M.alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then
    return false
  end
  local state = stat:match("^%d+ %b() (%a)")
  if state == "Z" then
    reap(pid)
  end
  return state ~= nil and state ~= "Z" and state ~= "X"
end
local alive = _M.alive


function _M.wait_until(timeout, pred)
  local deadline = socket.gettime() + timeout
  repeat
    if pred() then
      return true
    end
    socket.sleep(0.01)
  until socket.gettime() > deadline
  return pred()
end
local wait_until = _M.wait_until


--- kill_and_wait(pid): TERM, then KILL if it outlives STOP_TIMEOUT.
function _M.kill_and_wait(pid)
  if not pid or not alive(pid) then
    return
  end
  run("kill -TERM " .. pid)
  if not wait_until(STOP_TIMEOUT, function() return not alive(pid) end) then
    run("kill -KILL " .. pid)
    wait_until(STOP_TIMEOUT, function() return not alive(pid) end)
  end
end


--- launch(o) -> pid, port: runs `o.luajit o.script dir= host=127.0.0.1
-- port= watch= <o.args>` in the background, output appended to
-- o.dir/o.log, and waits for the peer's ready file ("<pid> <port>").
-- Raises (at the caller's caller) with the peer's log if it does not start.
function _M.launch(o)
  os.remove(o.dir .. "/ready")
  local cmd = o.luajit .. " " .. quote(o.script)
              .. " dir=" .. quote(o.dir)
              .. " host=127.0.0.1 port=" .. tostring(o.port)
              .. (o.args or "")
              .. (_M.my_pid and (" watch=" .. _M.my_pid) or "")
              .. " </dev/null >>" .. quote(o.dir .. "/" .. o.log) .. " 2>&1 & echo $!"
  local code, out = run(cmd)
  local pid = tonumber(out:match("(%d+)%s*$"))
  if code ~= 0 or not pid then
    error("cannot start " .. o.what .. ": " .. out, 3)
  end
  local ok = wait_until(START_TIMEOUT, function()
    return read_file(o.dir .. "/ready") ~= nil or not alive(pid)
  end)
  local ready = read_file(o.dir .. "/ready")
  if not ok or not ready then
    if alive(pid) then
      run("kill -KILL " .. pid)
    end
    error(o.what .. " did not start:\n" .. (read_file(o.dir .. "/" .. o.log) or ""), 3)
  end
  return pid, tonumber(ready:match("^%d+ (%d+)"))
end


--- track(module) -> running: a set for the module's started peers (each
-- with a :stop()); adds module.stop_all(), and stops them all when the Lua
-- state closes (a safety net: specs still stop theirs).
function _M.track(module)
  local running = {}
  function module.stop_all()
    -- next(), not a generic for: this also runs in the sentinel's __gc while
    -- the Lua state closes, where a `for ... in pairs` loop was seen spinning
    -- forever (LuaJIT, JIT turned off by lua_close) and busted never exited
    local p = next(running)
    while p do
      p:stop()
      running[p] = nil
      p = next(running)
    end
  end
  module._sentinel = newproxy and newproxy(true)
  if module._sentinel then
    getmetatable(module._sentinel).__gc = function() module.stop_all() end
  end
  return running
end


return _M
