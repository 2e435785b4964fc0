-- A real log collector for the real-nginx specs: spec/fixtures/collector.lua
-- run by `luajit` as a separate OS process, one per start(). It speaks both
-- sinks on one port (tcp: newline-delimited JSON; http: POST of a JSON array)
-- and writes what it accepts to files in its own temporary directory, which
-- this module reads.
--
--   local collector = require "spec.openresty.collector"
--   local c = collector.start()             -- listens on a free loopback port
--   -- log = { enabled = true, sink = "tcp", host = "127.0.0.1", port = c.port }
--   -- log = { enabled = true, sink = "http", url = c.url }
--   c:wait_count(1000, 10)                 -- until 1000 records arrived (or 10 s)
--   local records, bad = c:records()       -- decoded records, lines that did not decode
--   c:set_status(500)                      -- http answers from now on (default 200)
--   c:stall(true); c:stall(false)          -- accepts but never reads nor answers, then normal
--   c:reset(true); c:reset(false)          -- resets (RST) every connection unread, then normal
--   c:freeze(true); c:freeze(false)        -- process stopped (SIGSTOP), then reads what was buffered
--   c:down(); c:up()                       -- process stopped, then back on the same port
--   c:stop()                               -- stops it and removes its directory
--
-- Environment: AUTH_ROUTER_KEEP=1 keeps the directory after stop().

local socket = require "socket"
local cjson  = require "cjson.safe"

local _M = {}

local LUAJIT   = os.getenv("AUTH_ROUTER_LUAJIT") or "luajit"
local KEEP     = os.getenv("AUTH_ROUTER_KEEP") == "1"
local SCRIPT   = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
                 .. "/../fixtures/collector.lua"
local LIFETIME      = 300  -- seconds: the collector exits by itself after this


local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local peer = dofile(HERE .. "/peer.lua")
local shell_quote, run, read_file = peer.shell_quote, peer.run, peer.read_file
local alive, wait_until = peer.alive, peer.wait_until
_M.wait_until = wait_until


local running = peer.track(_M)  -- collectors started and not stopped

local Collector = {}
Collector.__index = Collector


-- Starts the process; waits for its ready file. `port` 0: a free one.
function Collector:_launch(port)
  self.pid, self.port = peer.launch{
    luajit = self.luajit, script = SCRIPT, dir = self.dir, port = port,
    log = "collector.log", what = "the collector", args = " lifetime=" .. tostring(self.lifetime),
  }
  self.is_up = true
end


--- Starts a collector. opts (all optional):
--   port      listen port (default: a free one, chosen by the kernel)
--   status    http answer status (default 200; see set_status)
--   lifetime  seconds before it exits by itself (default 300)
--   luajit    the command that runs the collector script (default
--             $AUTH_ROUTER_LUAJIT or luajit); it needs luasocket and lua-cjson
-- Returns an object with port, host, url, dir, pid and the methods below.
function _M.start(opts)
  opts = opts or {}
  local code, out = run("mktemp -d /tmp/auth-router-collector.XXXXXX")
  assert(code == 0, "mktemp failed: " .. out)
  local self = setmetatable({
    dir = out:match("[^\n]+"),
    host = "127.0.0.1",
    lifetime = opts.lifetime or LIFETIME,
    luajit = opts.luajit or LUAJIT,
    offset = 0,        -- records.ndjson bytes parsed so far
    _parsed = {},      -- records decoded so far
    _texts = {},       -- their lines
    _bad = {},         -- lines that did not decode
  }, Collector)
  if opts.status then
    self:set_status(opts.status)
  end
  running[self] = true
  local ok, err = pcall(self._launch, self, opts.port or 0)
  if not ok then
    self:stop()
    error(err, 2)
  end
  self.url = "http://127.0.0.1:" .. self.port .. "/collect"
  return self
end


--- Makes the http side answer `status` (e.g. 500) from the next request on.
function Collector:set_status(status)
  local tmp = self.dir .. "/status.tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(tostring(status), "\n")
  f:close()
  assert(os.rename(tmp, self.dir .. "/status"))
end


-- Writes the mode control file (see spec/fixtures/collector.lua) and waits
-- for the collector to read it.
local function set_mode(self, mode)
  local tmp = self.dir .. "/mode.tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(mode, "\n")
  f:close()
  assert(os.rename(tmp, self.dir .. "/mode"))
  socket.sleep(0.15)
end


--- stall(true): the collector keeps accepting connections but reads and
-- answers nothing (a hung collector); stall(false): back to normal, closing
-- every open connection unread (what was sent meanwhile is never stored, so
-- a batch the sender timed out on and retries is not stored twice).
-- Takes effect within about 0.1 s.
function Collector:stall(on)
  set_mode(self, on and "stall" or "normal")
end


--- freeze(true): the collector process is stopped (SIGSTOP): the kernel
-- still completes connections and buffers what is sent, nothing is read
-- until freeze(false) (SIGCONT), after which it reads everything buffered.
function Collector:freeze(on)
  run("kill -" .. (on and "STOP" or "CONT") .. " " .. self.pid)
end


--- reset(true): every open connection and every new one is reset (RST)
-- without a byte read (a crashing collector, a middlebox killing flows);
-- reset(false): back to normal. Takes effect within about 0.1 s.
function Collector:reset(on)
  set_mode(self, on and "reset" or "normal")
end


-- Reads new complete lines of records.ndjson.
function Collector:_refresh()
  local text = read_file(self.dir .. "/records.ndjson", self.offset)
  if not text or text == "" then
    return
  end
  local consumed = 0
  for line, stop in text:gmatch("([^\n]*)\n()") do
    consumed = stop - 1
    if line ~= "" then
      local v = cjson.decode(line)
      if type(v) == "table" then
        self._parsed[#self._parsed + 1] = v
        self._texts[#self._texts + 1] = line
      else
        self._bad[#self._bad + 1] = line
      end
    end
  end
  self.offset = self.offset + consumed
end


--- All records accepted so far (decoded, in arrival order), and the lines
-- that were not a JSON object.
function Collector:records()
  self:_refresh()
  return self._parsed, self._bad
end


--- The text of every record accepted so far, one per element (as received).
function Collector:texts()
  self:_refresh()
  return self._texts
end


--- The number of records accepted so far (including any that did not decode).
function Collector:count()
  self:_refresh()
  return #self._parsed + #self._bad
end


--- Every byte of every accepted payload, as received (tcp lines, http bodies).
function Collector:raw()
  return read_file(self.dir .. "/raw.bin") or ""
end


--- The collector's events (accepts, closes, http requests, protocol errors).
function Collector:events(kind)
  local list = {}
  for line in (read_file(self.dir .. "/events.ndjson") or ""):gmatch("[^\n]+") do
    local e = cjson.decode(line)
    if e and (not kind or e.ev == kind) then
      list[#list + 1] = e
    end
  end
  return list
end


--- The collector's own output (startup, exit reasons).
function Collector:log()
  return read_file(self.dir .. "/collector.log") or ""
end


--- Waits until at least `n` records arrived or `timeout` seconds passed.
-- Returns the count.
function Collector:wait_count(n, timeout)
  wait_until(timeout or 10, function() return self:count() >= n end)
  return self:count()
end


--- Waits until no record arrived for `quiet` seconds (at most `timeout`).
-- Returns the count.
function Collector:wait_quiet(quiet, timeout)
  local deadline = socket.gettime() + (timeout or 10)
  local last_n, last_change = self:count(), socket.gettime()
  while socket.gettime() < deadline do
    socket.sleep(0.05)
    local n = self:count()
    if n ~= last_n then
      last_n, last_change = n, socket.gettime()
    elseif socket.gettime() - last_change >= quiet then
      break
    end
  end
  return self:count()
end


local kill_and_wait = peer.kill_and_wait


--- Makes the collector unavailable: the process ends (its connections are
-- closed; new ones are refused). What it accepted stays readable.
function Collector:down()
  kill_and_wait(self.pid)
  self.is_up = false
end


--- Starts the collector again on the same port, appending to the same files.
function Collector:up()
  if self.is_up and alive(self.pid) then
    return
  end
  self:_launch(self.port)
end


--- Stops the collector and removes its directory (unless AUTH_ROUTER_KEEP=1).
-- Idempotent.
function Collector:stop()
  if self.stopped then
    return
  end
  self.stopped = true
  running[self] = nil
  kill_and_wait(self.pid)
  self.is_up = false
  if not KEEP and self.dir and self.dir:match("^/tmp/auth%-router%-collector%.") then
    run("rm -rf " .. shell_quote(self.dir))
  end
end


return _M
