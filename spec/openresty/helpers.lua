-- Shared harness for the real-nginx specs (spec/openresty): starts the mock
-- services and an auth-router gateway, each a separate nginx with its own
-- temporary prefix and error log, and offers a small HTTP client.
--
--   AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/
--
-- The plugin is loaded from the luarocks tree named by AUTH_ROUTER_TREE, so
-- the specs exercise a real install. Needs LuaJIT (or Lua 5.1), luasocket and
-- lua-cjson on the busted side; nginx with the ndk and lua modules.
--
--   local helpers = require "spec.openresty.helpers"
--   local mocks = helpers.start_mocks()
--   local gw = helpers.start{ mocks = mocks, config = helpers.config(mocks) }
--   local status, headers, body = helpers.request("GET", gw.gw_url .. "/x")
--   helpers.assert_clean_log(gw:error_log())
--   gw:stop(); mocks:stop()
--
-- Environment:
--   AUTH_ROUTER_TREE   luarocks tree holding the plugin (required)
--   AUTH_ROUTER_NGINX  nginx binary (default "nginx")
--   AUTH_ROUTER_KEEP   "1": keep each nginx prefix (conf, logs) after stop

local socket = require "socket"
local cjson  = require "cjson"
local mime   = require "mime"
local peer   = require "spec.openresty.peer"

local render = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
                      .. "/../fixtures/render_conf.lua")

local helpers = {}

local NGINX         = os.getenv("AUTH_ROUTER_NGINX") or "nginx"
-- OpenResty's nginx (e.g. Kong's build) has lua-nginx-module built in.
local MODULES do
  local p = io.popen(NGINX .. " -V 2>&1")
  local version = p and p:read("*a") or ""
  if p then
    p:close()
  end
  MODULES = version:find("openresty", 1, true) and "" or nil
  -- only a --with-debug build writes debug-level lines
  helpers.NGINX_DEBUG = version:find("--with-debug", 1, true) ~= nil
end
local KEEP_PREFIX   = os.getenv("AUTH_ROUTER_KEEP") == "1"
local START_TIMEOUT = 5    -- seconds until a started nginx must answer
local STOP_TIMEOUT  = 5    -- seconds for a graceful stop before SIGKILL
local HTTP_TIMEOUT  = 5    -- seconds per helpers.request socket operation

local LOG_LEVELS = { "emerg", "alert", "crit", "error", "warn" }

helpers.FIXTURES = render.FIXTURES


local function check_tree()
  local tree = os.getenv("AUTH_ROUTER_TREE")
  if not tree or tree == "" then
    error("AUTH_ROUTER_TREE is not set: build the plugin into a luarocks tree, e.g.\n"
          .. "  luarocks --lua-version=5.1 make --tree /tmp/ngxtree kong-plugin-auth-router-0.1.0-1.rockspec\n"
          .. "and run  AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/", 0)
  end
  tree = tree:gsub("/+$", "")
  for _, file in ipairs({ "/lib/lua/5.1/auth_router_native.so",
                          "/share/lua/5.1/auth_router/openresty.lua" }) do
    local f = io.open(tree .. file, "rb")
    if not f then
      error("AUTH_ROUTER_TREE=" .. tree .. " does not hold the plugin: missing "
            .. tree .. file, 0)
    end
    f:close()
  end
  return tree
end

helpers.TREE = check_tree()


------------------------------------------------------------------------
-- small process and file utilities

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.shell_quote = shell_quote


--- Runs a shell command; returns exit code and combined stdout+stderr.
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("__rc=(%d+)%s*$"))
  return code, (out:gsub("__rc=%d+%s*$", ""))
end
helpers.run = run


local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("*a")
  f:close()
  return text
end
helpers.read_file = read_file


local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end
helpers.write_file = write_file


-- A daemonized nginx master is orphaned at once; here PID 1 may never reap
-- it, which would leave a zombie per stopped nginx. So this process becomes a
-- child subreaper (Linux prctl, through LuaJIT's FFI): orphaned masters are
-- re-parented to us and stop() reaps them. Without FFI they become zombies.
local reap = function() end
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    pcall(ffi.cdef, [[
      int prctl(int option, unsigned long arg2, unsigned long arg3,
                unsigned long arg4, unsigned long arg5);
      int waitpid(int pid, int *status, int options);
    ]])
    local PR_SET_CHILD_SUBREAPER, WNOHANG = 36, 1
    if pcall(ffi.C.prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) then
      reap = function(pid) ffi.C.waitpid(pid, nil, WNOHANG) end
    end
  end
end


--- true while `pid` is a live (not zombie) process; reaps it once it is a
-- zombie child of ours.
local function alive(pid)
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
helpers.alive = alive


local function children(pid)
  local _, out = run("ps -o pid= --ppid " .. pid)
  local list = {}
  for p in out:gmatch("%d+") do
    list[#list + 1] = tonumber(p)
  end
  return list
end


local function wait_until(timeout, pred)
  local deadline = socket.gettime() + timeout
  repeat
    if pred() then
      return true
    end
    socket.sleep(0.01)
  until socket.gettime() > deadline
  return pred()
end
helpers.wait_until = wait_until


local function make_prefix(kind)
  local code, out = run("mktemp -d /tmp/auth-router-" .. kind .. ".XXXXXX")
  assert(code == 0, "mktemp failed: " .. out)
  local prefix = out:match("[^\n]+")
  -- 0755: when nginx starts as root its workers run as `nobody` and must be
  -- able to reach tmp/ (proxy buffers) below the prefix.
  code, out = run("mkdir -p " .. shell_quote(prefix) .. "/conf " .. shell_quote(prefix)
                  .. "/logs " .. shell_quote(prefix) .. "/tmp && chmod 0755 "
                  .. shell_quote(prefix) .. " " .. shell_quote(prefix) .. "/tmp")
  assert(code == 0, "cannot prepare " .. prefix .. ": " .. out)
  return prefix
end


--- `n` distinct free loopback ports (bound to port 0, then released).
helpers.free_ports = peer.free_ports


local function port_answers(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end


------------------------------------------------------------------------
-- nginx instances

-- Every started instance not yet stopped; helpers.stop_all() stops them,
-- also when the Lua state closes (peer.track's safety net: busted exits
-- with os.exit(code, true)). Specs still stop theirs in lazy_teardown.
local running = peer.track(helpers)

local Instance = {}
Instance.__index = Instance


--- The whole error log, or the part written since `mark` (see log_mark).
function Instance:error_log(mark)
  if mark then
    -- read only the tail: a debug-level log grows by megabytes
    local f = io.open(self.log_path, "rb")
    if not f then
      return ""
    end
    f:seek("set", mark)
    local text = f:read("*a") or ""
    f:close()
    return text
  end
  return read_file(self.log_path) or ""
end


--- Current size of the error log, for error_log(mark).
function Instance:log_mark()
  local f = io.open(self.log_path, "rb")
  if not f then
    return 0
  end
  local size = f:seek("end")
  f:close()
  return size or 0
end


--- The master's pid (from the pid file), or nil.
function Instance:master_pid()
  local text = read_file(self.prefix .. "/logs/nginx.pid")
  return text and tonumber(text:match("%d+")) or self.pid
end


--- Stops nginx (SIGTERM, then SIGKILL after STOP_TIMEOUT) and waits until
-- the master and its workers are gone; removes the prefix unless
-- AUTH_ROUTER_KEEP=1. Idempotent.
function Instance:stop()
  if self.stopped then
    return
  end
  self.stopped = true
  running[self] = nil
  local pid = self:master_pid()
  if pid and alive(pid) then
    local workers = children(pid)
    run("kill -TERM " .. pid)
    if not wait_until(STOP_TIMEOUT, function() return not alive(pid) end) then
      run("kill -KILL " .. pid)
      wait_until(STOP_TIMEOUT, function() return not alive(pid) end)
    end
    for _, w in ipairs(workers) do
      if alive(w) then
        run("kill -KILL " .. w)
      end
    end
    for _, w in ipairs(workers) do
      wait_until(STOP_TIMEOUT, function() return not alive(w) end)
    end
  end
  if not KEEP_PREFIX and self.prefix:match("^/tmp/auth%-router%-") then
    run("rm -rf " .. shell_quote(self.prefix))
  end
end


--- Starts an nginx in a new prefix and waits for `port`. `build(prefix)`
-- returns the nginx.conf text and optionally a table of extra files
-- (path relative to the prefix -> text).
-- Returns the instance, or nil, a message with the startup output and the
-- error log, the output, the error log (the prefix is then already removed).
local function launch(kind, port, build)
  local prefix = make_prefix(kind)
  local inst = setmetatable({
    kind = kind,
    prefix = prefix,
    port = port,
    conf_path = prefix .. "/conf/nginx.conf",
    log_path = prefix .. "/logs/error.log",
  }, Instance)
  local conf_text, files = build(prefix)
  for name, text in pairs(files or {}) do
    write_file(prefix .. "/" .. name, text)
  end
  write_file(inst.conf_path, conf_text)

  -- -e: messages from before the config's own error_log opens (for example
  -- an init_by_lua failure) go to the same file.
  local code, out = run(NGINX .. " -p " .. shell_quote(prefix .. "/") .. " -c conf/nginx.conf -e "
                        .. shell_quote(inst.log_path))
  local ok = code == 0 and wait_until(START_TIMEOUT, function()
    local pid = inst:master_pid()
    return pid and alive(pid) and port_answers(port)
  end)
  inst.pid = inst:master_pid()
  if not ok then
    local log = inst:error_log()
    inst:stop()
    return nil, string.format("%s nginx did not start (exit code %s)\n-- output:\n%s-- error log:\n%s",
                              kind, tostring(code), out, log), out, log
  end
  running[inst] = true
  return inst
end


------------------------------------------------------------------------
-- mocks

local Mocks = setmetatable({}, { __index = Instance })
Mocks.__index = Mocks


--- URL of `path` on mock `name` ("auth", "email", "calendar", "legacy").
function Mocks:url(name, path)
  return "http://127.0.0.1:" .. assert(self.ports[name], "no mock " .. tostring(name))
         .. (path or "/")
end


--- Auth calls so far (all, or only those with `token`).
function Mocks:calls(token)
  local url = self:url("auth", "/__calls")
  if token then
    url = url .. "?token=" .. helpers.escape_uri(token)
  end
  local status, _, body = helpers.request("GET", url)
  assert(status == 200, "mock /__calls answered " .. tostring(status))
  return cjson.decode(body).calls
end


--- Slow auth calls (slow-, drip- tokens) in progress at the mock now, and
-- the most there were at once since the last reset.
function Mocks:inflight()
  local status, _, body = helpers.request("GET", self:url("auth", "/__inflight"))
  assert(status == 200, "mock /__inflight answered " .. tostring(status))
  local t = cjson.decode(body)
  return t.now, t.max
end


--- The last auth request as {method, uri, headers, body}, or nil.
function Mocks:last_auth_request()
  local _, _, body = helpers.request("GET", self:url("auth", "/__last"))
  local v = cjson.decode(body)
  return v ~= cjson.null and v or nil
end


--- From now on the mock auth service answers `token` as if it were token
-- `as` (see spec/fixtures/mocks.lua); `as` nil: `token` answers as itself.
-- Calls still count under `token`.
function Mocks:behave(token, as)
  local url = self:url("auth", "/__behave?token=" .. helpers.escape_uri(token))
  if as then
    url = url .. "&as=" .. helpers.escape_uri(as)
  end
  local status, _, body = helpers.request("GET", url)
  assert(status == 200, "mock /__behave answered " .. tostring(status) .. ": " .. tostring(body))
end


--- Zeroes the auth call counters.
function Mocks:reset()
  local status = helpers.request("GET", self:url("auth", "/__reset"))
  assert(status == 200, "mock /__reset answered " .. tostring(status))
end


--- Starts the mock auth service and the upstreams email, calendar and legacy
-- (spec/fixtures/mocks.lua documents their behaviour) in one nginx.
-- opts (all optional): ports = {auth=, email=, calendar=, legacy=},
-- workers (1), log_level ("info").
-- Returns an object with ports, auth_url, targets (name -> "127.0.0.1:port"),
-- url(name, path), calls([token]), last_auth_request(), reset(),
-- error_log([mark]), log_mark(), stop().
function helpers.start_mocks(opts)
  opts = opts or {}
  local ports = opts.ports
  if not ports then
    local p = helpers.free_ports(4)
    ports = { auth = p[1], email = p[2], calendar = p[3], legacy = p[4] }
  end
  local conf = render.mocks({
    auth_port = ports.auth,
    email_port = ports.email,
    calendar_port = ports.calendar,
    legacy_port = ports.legacy,
    workers = opts.workers or 1,
    log_level = opts.log_level or "info",
    modules = MODULES,
  })
  local inst, err = launch("mocks", ports.auth, function() return conf end)
  if not inst then
    error(err, 2)
  end
  for _, name in ipairs({ "email", "calendar", "legacy" }) do
    assert(wait_until(START_TIMEOUT, function() return port_answers(ports[name]) end),
           "mock " .. name .. " does not answer on port " .. ports[name])
  end
  inst.ports = ports
  inst.auth_url = "http://127.0.0.1:" .. ports.auth .. "/auth"
  inst.targets = {
    email = "127.0.0.1:" .. ports.email,
    calendar = "127.0.0.1:" .. ports.calendar,
    legacy = "127.0.0.1:" .. ports.legacy,
  }
  helpers.mocks = inst
  return setmetatable(inst, Mocks)
end


------------------------------------------------------------------------
-- gateway

local Gateway = setmetatable({}, { __index = Instance })
Gateway.__index = Gateway


--- GET /__stats decoded: this worker's native counters plus worker_pid.
function Gateway:stats()
  local status, _, body = helpers.request("GET", self.gw_url .. "/__stats")
  assert(status == 200, "/__stats answered " .. tostring(status) .. ": " .. tostring(body))
  return cjson.decode(body)
end


--- Makes the next native access() call of the answering worker panic
-- (`phase` "log": its next logged record). Returns that worker's pid.
function Gateway:arm_panic(phase)
  local status, _, body = helpers.request("GET", self.gw_url .. "/__arm_panic"
                                          .. (phase and "?phase=" .. phase or ""))
  assert(status == 200, "/__arm_panic answered " .. tostring(status) .. ": " .. tostring(body))
  return cjson.decode(body).worker_pid
end


--- /__stats of every worker: keeps opening fresh connections (the gateway
-- should listen with reuseport so the kernel spreads them) until `self.workers`
-- distinct worker pids answered, or `tries` requests (default 200) were made.
-- Returns sum (counter -> total over the workers seen; worker_pid left out),
-- by_pid (pid -> that worker's counters) and the number of workers seen.
-- Only meaningful while no other traffic changes the counters.
function Gateway:stats_all(tries)
  local by_pid, seen = {}, 0
  for _ = 1, tries or 200 do
    local s = self:stats()
    if not by_pid[s.worker_pid] then
      seen = seen + 1
    end
    by_pid[s.worker_pid] = s
    if seen >= (self.workers or 1) then
      break
    end
  end
  local sum = {}
  for _, s in pairs(by_pid) do
    for k, v in pairs(s) do
      if k ~= "worker_pid" and type(v) == "number" then
        sum[k] = (sum[k] or 0) + v
      end
    end
  end
  return sum, by_pid, seen
end


--- A plugin config table for `mocks`: auth pointing at the mock auth service,
-- deep-merged with `overrides`.
function helpers.config(mocks, overrides)
  mocks = mocks or helpers.mocks
  local conf = { auth = { url = mocks.auth_url } }
  local function merge(dst, src)
    for k, v in pairs(src) do
      if type(v) == "table" and type(dst[k]) == "table" and getmetatable(v) == nil then
        merge(dst[k], v)
      else
        dst[k] = v
      end
    end
  end
  merge(conf, overrides or {})
  return conf
end


-- A table is a JSON array when it has a [1] or went through helpers.array()
-- (an empty table is an object otherwise, as with cjson).
local ARRAY_MT = {}
function helpers.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end


local function encode_json(v)
  if type(v) == "table" then
    if getmetatable(v) == ARRAY_MT or #v > 0 then
      local parts = {}
      for i = 1, #v do
        parts[i] = encode_json(v[i])
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      keys[#keys + 1] = tostring(k)
    end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
      parts[i] = cjson.encode(k) .. ":" .. encode_json(v[k])
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return cjson.encode(v)
end
helpers.encode_json = encode_json


--- Starts an auth-router gateway (design §4b) and returns it, or raises with
-- the startup output and the error log.
-- opts (all optional):
--   config          plugin config: a table (encoded to JSON) or raw JSON text;
--                   default helpers.config(mocks)
--   mocks           mocks object for defaults (default: last start_mocks())
--   default_target  "host:port" when no route matches (default: mock legacy)
--   workers         1 or 2 (default 1)
--   log_level       error_log level (default "info")
--   http            extra snippet for the http block
--   init_worker     Lua code for init_worker_by_lua (after the adapter's init_worker())
--   locations       extra snippet for the server block
--   stats_location / fault_location   false to leave out /__stats, /__arm_panic
--   listen_options  extra `listen` parameters, e.g. "reuseport" (default none)
--   port            listen port (default: a free one)
-- The object has gw_url, port, prefix, conf_path, config_path, log_path,
-- workers, error_log([mark]), log_mark(), stats(), stats_all(), arm_panic(),
-- master_pid(), stop().
function helpers.start(opts)
  local gw, err = helpers.try_start(opts)
  if not gw then
    error(err, 2)
  end
  return gw
end


--- Like start(), but returns nil, message, startup output, error log text
-- when nginx does not start (for specs that expect it to refuse).
function helpers.try_start(opts)
  opts = opts or {}
  local mocks = opts.mocks or helpers.mocks
  local default_target = opts.default_target or (mocks and mocks.targets.legacy)
  if not default_target then
    error("helpers.start: give `mocks` (or start_mocks() first) or `default_target`", 3)
  end
  local config = opts.config
  if config == nil then
    if not mocks then
      error("helpers.start: give `config` (or start_mocks() first)", 3)
    end
    config = helpers.config(mocks)
  end
  local config_text = type(config) == "string" and config or encode_json(config)
  local port = opts.port or helpers.free_ports(1)[1]

  local inst, err, out, log = launch("gateway", port, function(prefix)
    local conf = render.gateway({
      port = port,
      default_target = default_target,
      tree = helpers.TREE,
      config_path = prefix .. "/conf/auth-router.json",
      workers = opts.workers or 1,
      log_level = opts.log_level or "info",
      http = opts.http,
      init_worker = opts.init_worker,
      locations = opts.locations,
      stats_location = opts.stats_location,
      fault_location = opts.fault_location,
      listen_options = opts.listen_options,
      modules = MODULES,
    })
    return conf, { ["conf/auth-router.json"] = config_text }
  end)
  if not inst then
    return nil, err, out, log
  end
  inst.gw_url = "http://127.0.0.1:" .. port
  inst.workers = opts.workers or 1
  inst.config_path = inst.prefix .. "/conf/auth-router.json"
  return setmetatable(inst, Gateway)
end


------------------------------------------------------------------------
-- HTTP client (luasocket; lua-resty-http is not available here)

function helpers.escape_uri(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end


--- A "json-<base64>" token: the mock auth service answers 200 with `account`.
function helpers.json_token(account)
  return "json-" .. mime.b64(type(account) == "string" and account or encode_json(account))
end


--- The body of a chunked HTTP/1.1 message body `raw`, or nil and an error.
function helpers.decode_chunked(raw)
  local out, pos = {}, 1
  while true do
    local line_end = raw:find("\r\n", pos, true)
    if not line_end then
      return nil, "truncated chunk size"
    end
    local size = tonumber(raw:sub(pos, line_end - 1):match("^%x+"), 16)
    if not size then
      return nil, "bad chunk size"
    end
    pos = line_end + 2
    if size == 0 then
      return table.concat(out)
    end
    out[#out + 1] = raw:sub(pos, pos + size - 1)
    pos = pos + size + 2
  end
end


local function split_url(url, level)
  local host, port, path = url:match("^http://([^:/]+):?(%d*)(.*)$")
  if not host then
    error("helpers.request: only http://host[:port]/path URLs, got " .. tostring(url), level + 1)
  end
  port = tonumber(port) or 80
  if path == "" then
    path = "/"
  end
  return host, port, path
end


-- The raw bytes of a request (Connection: close unless a header says otherwise).
local function build_request(method, host, port, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1" }
  local has = {}
  for name, value in pairs(headers or {}) do
    has[name:lower()] = true
    if type(value) == "table" then
      for _, v in ipairs(value) do
        lines[#lines + 1] = name .. ": " .. v
      end
    else
      lines[#lines + 1] = name .. ": " .. tostring(value)
    end
  end
  if not has.host then
    lines[#lines + 1] = "Host: " .. host .. ":" .. port
  end
  if not has.connection then
    lines[#lines + 1] = "Connection: close"
  end
  if body and not has["content-length"] and not has["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end


-- status, headers, body of a whole raw response, or nil, error message.
local function parse_response(raw)
  local head_end = raw:find("\r\n\r\n", 1, true)
  if not head_end then
    return nil, "incomplete response head: " .. raw
  end
  local head, rest = raw:sub(1, head_end - 1), raw:sub(head_end + 4)
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then
    return nil, "bad status line: " .. head:match("^[^\r\n]*")
  end
  local resp_headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    name = name:lower()
    local prev = resp_headers[name]
    if prev == nil then
      resp_headers[name] = value
    elseif type(prev) == "table" then
      prev[#prev + 1] = value
    else
      resp_headers[name] = { prev, value }
    end
  end

  local resp_body = rest
  local te = resp_headers["transfer-encoding"]
  if type(te) == "string" and te:lower():find("chunked", 1, true) then
    local decoded, derr = helpers.decode_chunked(rest)
    if not decoded then
      return nil, "bad chunked body: " .. derr
    end
    resp_body = decoded
  else
    local len = tonumber(resp_headers["content-length"])
    if len then
      if #rest < len then
        return nil, "body shorter than Content-Length: " .. #rest .. " < " .. len
      end
      resp_body = rest:sub(1, len)
    end
  end
  return status, resp_headers, resp_body
end


-- Sends `bytes` to host:port on a fresh connection, reads until the server
-- closes, and parses the answer; or nil and an error message.
local function exchange(host, port, bytes, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or HTTP_TIMEOUT)
  local ok, err = sock:connect(host, port)
  if not ok then
    sock:close()
    return nil, "connect to " .. host .. ":" .. port .. " failed: " .. tostring(err)
  end
  ok, err = sock:send(bytes)
  if not ok then
    sock:close()
    return nil, "send failed: " .. tostring(err)
  end
  local raw, rerr, partial = sock:receive("*a")
  sock:close()
  raw = raw or partial
  if not raw or raw == "" then
    return nil, "no response: " .. tostring(rerr)
  end
  return parse_response(raw)
end


--- One HTTP/1.1 request on a fresh connection (Connection: close).
-- headers: name -> value (or array of values, sent as repeated headers).
-- Returns status, headers (lowercase names; a repeated header is an array),
-- body; or nil and an error message.
function helpers.request(method, url, headers, body, timeout)
  local host, port, path = split_url(url, 2)
  return exchange(host, port, build_request(method, host, port, path, headers, body), timeout)
end


--- Sends `bytes` as they are (any request line, headers, bytes) to
-- 127.0.0.1:`port` on a fresh connection and reads until the server closes.
-- Returns status, headers, body like request(); or nil and an error message.
function helpers.raw_request(port, bytes, timeout)
  return exchange("127.0.0.1", port, bytes, timeout)
end


local Connection = {}
Connection.__index = Connection

--- A keepalive connection to 127.0.0.1:`port`; conn:request(bytes) sends one
-- raw request and reads exactly one response (Content-Length or chunked),
-- returning status, headers, body (or nil, err); conn:close().
function helpers.connection(port, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or HTTP_TIMEOUT)
  assert(sock:connect("127.0.0.1", port))
  return setmetatable({ sock = sock }, Connection)
end

function Connection:request(bytes)
  local sock = self.sock
  local ok, err = sock:send(bytes)
  if not ok then
    return nil, "send failed: " .. tostring(err)
  end
  local lines = {}
  while true do
    local line, lerr = sock:receive("*l")
    if not line then
      return nil, "head: " .. tostring(lerr)
    end
    if line == "" then
      break
    end
    lines[#lines + 1] = line
  end
  local head = table.concat(lines, "\r\n")
  local length = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)"))
  local body
  if length then
    body = length > 0 and assert(sock:receive(length)) or ""
  elseif head:lower():find("\r\ntransfer%-encoding:%s*chunked") then
    local parts = {}
    while true do
      local size = tonumber(assert(sock:receive("*l")):match("^%x+"), 16)
      if size == 0 then
        assert(sock:receive("*l"))
        break
      end
      parts[#parts + 1] = assert(sock:receive(size))
      assert(sock:receive("*l"))
    end
    body = table.concat(parts)
  else
    return nil, "response without length: " .. head
  end
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    headers[name:lower()] = value
  end
  return status, headers, body
end

function Connection:close()
  self.sock:close()
end


--- Many requests at once: at most `concurrency` (default 50) connections
-- open together, each request on its own fresh connection (so with a
-- reuseport gateway they spread over the workers), driven by socket.select.
-- `list` holds {method=, url=, headers=, body=} (method defaults to GET).
-- Gives up on whatever is unfinished after `timeout` seconds (default 10).
-- Returns an array in the order of `list`: {status=, headers=, body=,
-- elapsed=} or {err=}; and the elapsed seconds. `elapsed` is the seconds
-- from that request's connect to its end (at select's resolution).
function helpers.request_many(list, concurrency, timeout)
  concurrency = concurrency or 50
  local started = socket.gettime()
  local deadline = started + (timeout or 10)
  local results = {}
  local active = {}   -- sock -> state
  local n_active = 0
  local next_i = 1

  local function finish(sock, st, err)
    sock:close()
    active[sock] = nil
    n_active = n_active - 1
    if err then
      results[st.i] = { err = err }
      return
    end
    local raw = table.concat(st.chunks)
    local status, headers, body = parse_response(raw)
    if status then
      results[st.i] = { status = status, headers = headers, body = body,
                        elapsed = socket.gettime() - st.started }
    else
      results[st.i] = { err = headers }
    end
  end

  local function open(i)
    local r = list[i]
    local host, port, path = split_url(r.url, 3)
    local sock = socket.tcp()
    sock:settimeout(0)
    local ok, err = sock:connect(host, port)
    if not ok and err ~= "timeout" and err ~= "Operation already in progress" then
      sock:close()
      results[i] = { err = "connect failed: " .. tostring(err) }
      return
    end
    active[sock] = {
      i = i,
      data = build_request(r.method or "GET", host, port, path, r.headers, r.body),
      sent = 0,
      chunks = {},
      sending = true,
      started = socket.gettime(),
    }
    n_active = n_active + 1
  end

  while true do
    while n_active < concurrency and next_i <= #list do
      open(next_i)
      next_i = next_i + 1
    end
    if n_active == 0 then
      break
    end
    local now = socket.gettime()
    if now > deadline then
      for sock, st in pairs(active) do
        finish(sock, st, "timed out")
      end
      break
    end
    local rset, wset = {}, {}
    for sock, st in pairs(active) do
      if st.sending then
        wset[#wset + 1] = sock
      else
        rset[#rset + 1] = sock
      end
    end
    local readable, writable = socket.select(rset, wset, math.min(0.1, deadline - now))
    for _, sock in ipairs(writable) do
      local st = active[sock]
      if st then
        local last, err, partial_last = sock:send(st.data, st.sent + 1)
        if last then
          st.sent = last
        elseif err == "timeout" then
          st.sent = partial_last or st.sent
        else
          finish(sock, st, "send failed: " .. tostring(err))
        end
        if active[sock] and st.sent >= #st.data then
          st.sending = false
        end
      end
    end
    for _, sock in ipairs(readable) do
      local st = active[sock]
      if st then
        local data, err, partial = sock:receive(65536)
        local got = data or partial
        if got and got ~= "" then
          st.chunks[#st.chunks + 1] = got
        end
        if err == "closed" then
          if #st.chunks == 0 then
            finish(sock, st, "no response: closed")
          else
            finish(sock, st)
          end
        elseif err and err ~= "timeout" then
          finish(sock, st, "receive failed: " .. tostring(err))
        end
      end
    end
  end
  return results, socket.gettime() - started
end


--- request() that raises on a transport error; decodes a JSON body.
-- Returns status, decoded body (or the raw text when not JSON), headers.
function helpers.request_json(method, url, headers, body)
  local status, resp_headers, resp_body = helpers.request(method, url, headers, body)
  if not status then
    error(resp_headers, 2)
  end
  local ok, decoded = pcall(cjson.decode, resp_body)
  return status, ok and decoded or resp_body, resp_headers
end


------------------------------------------------------------------------
-- logs

--- Escapes Lua pattern magic characters, for a literal allowed pattern.
function helpers.literal(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end


--- The lines of `text` at level warn or worse (emerg, alert, crit, error,
-- warn) that match none of `allowed` (Lua patterns).
function helpers.bad_log_lines(text, allowed)
  local bad = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local level
    for _, l in ipairs(LOG_LEVELS) do
      if line:find("[" .. l .. "]", 1, true) then
        level = l
        break
      end
    end
    if level then
      local ok = false
      for _, pat in ipairs(allowed or {}) do
        if line:find(pat) then
          ok = true
          break
        end
      end
      if not ok then
        bad[#bad + 1] = line
      end
    end
  end
  return bad
end


--- Fails (raises) if `text` has an [error], [warn], [crit], [alert] or
-- [emerg] line not matching one of the `allowed` Lua patterns.
function helpers.assert_clean_log(text, allowed)
  local bad = helpers.bad_log_lines(text, allowed)
  if #bad > 0 then
    error("error log has " .. #bad .. " unexpected line(s):\n" .. table.concat(bad, "\n"), 2)
  end
  return true
end


--- The number of lines in `text` that contain the literal `needle`.
function helpers.count_lines(text, needle)
  local n = 0
  for line in (text or ""):gmatch("[^\n]+") do
    if line:find(needle, 1, true) then
      n = n + 1
    end
  end
  return n
end


--- The counters summed over every worker of `gw` (asserts all answered),
-- and the counters per worker pid.
function helpers.all_stats(gw)
  local sum, by_pid, seen = gw:stats_all()
  assert(seen == gw.workers, "could not reach every worker for /__stats")
  return sum, by_pid
end


--- How much counter `name` grew from `before` to `after`.
function helpers.delta(before, after, name)
  return (after[name] or 0) - (before[name] or 0)
end


return helpers
