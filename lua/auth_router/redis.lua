-- Redis over an nginx cosocket, for the cluster tier (issue #10): Lua owns
-- the socket, the native RESP2 framing (src/resp.rs) owns the bytes, as
-- http1.lua does for the auth call. One exchange sends a pipeline of
-- commands and reads their replies under one deadline (`timeout_ms`), so a
-- hanging Redis costs a request at most that. A per-worker circuit breaker
-- per Redis stops trying for COOLDOWN_S after FAILURES_TO_OPEN consecutive
-- failed exchanges: a Redis that is down then costs a request nothing.
--
--   local redis = require "auth_router.redis"
--   local client = redis.new(config.cluster)
--   local replies, kind, detail = client:pipeline({ { "GET", key }, { "PTTL", key } })

local native = require "auth_router.native"
local http1    = require "auth_router.http1"
local throttle = require "auth_router.throttle"

local ngx      = ngx
local type     = type
local concat   = table.concat
local left_ms  = http1.left_ms

local READ_CHUNK = 65536

local _M = {
  -- consecutive failed exchanges that open the breaker
  FAILURES_TO_OPEN = 3,
  -- how long an open breaker refuses before one exchange may try again
  COOLDOWN_S = 5,
  -- at most one error-log line per Redis per this many seconds
  LOG_INTERVAL_S = 10,
}

local Client = {}
Client.__index = Client

-- Pooled connections are authenticated: their pool must differ for every
-- user and password, or a client configured with a wrong password would
-- borrow another's authenticated connection. The pool name carries a
-- per-worker number for the pair instead of the secret itself (pool names
-- may reach debug logs); pools are per worker too.
local credential_ids, next_credential_id = {}, 0
local function credential_id(user, password)
  local k = (user or "") .. "\0" .. (password or "")
  local id = credential_ids[k]
  if not id then
    next_credential_id = next_credential_id + 1
    id = next_credential_id
    credential_ids[k] = id
  end
  return id
end


--- new(cluster) -> client
-- `cluster`: the config's `cluster` record (host, port, username,
-- password, database, ssl, ssl_verify, server_name, timeout_ms,
-- keepalive_ms, pool_size). A client holds the connection settings and the
-- breaker; keep one per config and worker.
function _M.new(cluster)
  local null = ngx.null
  local function opt(v)
    if v == null then
      return nil
    end
    return v
  end
  local password = opt(cluster.password)
  if password == "" then
    password = nil
  end
  local conn = {
    host         = cluster.host,
    port         = cluster.port,
    tls          = cluster.ssl,
    ssl_verify   = cluster.ssl_verify,
    server_name  = opt(cluster.server_name) or cluster.host,
    timeout_ms   = cluster.timeout_ms,
    keepalive_ms = cluster.keepalive_ms,
    pool_size    = cluster.pool_size,
    -- the credentials and the database are a pooled connection's state
    pool = "auth-router-redis:" .. cluster.host .. ":" .. cluster.port .. ":"
           .. (cluster.database or 0) .. ":" .. credential_id(opt(cluster.username), password)
           .. (cluster.ssl and ":tls" or ""),
  }
  -- Sent first on a fresh connection only (a pooled one has done it).
  local hello = {}
  if password then
    local user = opt(cluster.username)
    hello[#hello + 1] = user and { "AUTH", user, password } or { "AUTH", password }
  end
  if (cluster.database or 0) ~= 0 then
    hello[#hello + 1] = { "SELECT", cluster.database }
  end
  return setmetatable({
    conn     = conn,
    hello    = hello,
    addr     = cluster.host .. ":" .. cluster.port,
    failures = 0,     -- consecutive failed exchanges
    open_until = 0,   -- ngx.now() before which the breaker refuses
    log_state = {},   -- throttle.due's, for the failure lines
  }, Client)
end


-- Reads `n` replies from `sock` before `deadline`. Returns the replies, or
-- nil, kind, detail.
local function read_replies(sock, n, deadline)
  local replies, buf = {}, ""
  while #replies < n do
    local reply, used = native.redis_reply(buf)
    if reply == nil then
      return nil, "bad_reply", used
    end
    if reply ~= false then
      replies[#replies + 1] = reply
      buf = buf:sub(used + 1)
    else
      local t = left_ms(deadline)
      if not t then
        return nil, "timeout", "timeout"
      end
      sock:settimeout(t)
      local data, err = sock:receiveany(READ_CHUNK)
      if not data then
        return nil, err == "timeout" and "timeout" or "unreachable", err
      end
      buf = buf .. data
    end
  end
  if buf ~= "" then
    return nil, "bad_reply", "more bytes than replies"
  end
  return replies
end


-- One exchange: connect, the hello commands on a fresh connection, the
-- pipeline. Returns the pipeline's replies or nil, kind, detail.
local function exchange(self, commands)
  ngx.update_time()
  local deadline = ngx.now() + self.conn.timeout_ms / 1000
  local sock, kind, detail = http1.connect(self.conn, deadline)
  if not sock then
    return nil, kind, detail
  end
  local hello = sock:getreusedtimes() == 0 and self.hello or {}
  local bytes = {}
  for i = 1, #hello do
    bytes[#bytes + 1] = native.redis_command(unpack(hello[i]))
  end
  for i = 1, #commands do
    bytes[#bytes + 1] = native.redis_command(unpack(commands[i]))
  end
  local t = left_ms(deadline)
  if not t then
    sock:close()
    return nil, "timeout", "timeout"
  end
  sock:settimeout(t)
  local ok, err = sock:send(concat(bytes))
  if not ok then
    sock:close()
    return nil, err == "timeout" and "timeout" or "unreachable", err
  end
  local replies
  replies, kind, detail = read_replies(sock, #hello + #commands, deadline)
  if not replies then
    sock:close()
    return nil, kind, detail
  end
  for i = 1, #hello do
    local r = replies[i]
    if type(r) == "table" and r.err then
      sock:close()
      -- a refused AUTH or SELECT: the config, not the network
      return nil, "refused", hello[i][1] .. ": " .. r.err
    end
  end
  sock:setkeepalive(self.conn.keepalive_ms, self.conn.pool_size)
  if #hello == 0 then
    return replies
  end
  local out = {}
  for i = #hello + 1, #replies do
    out[#out + 1] = replies[i]
  end
  return out
end


function Client:log_failure(kind, detail)
  local held = throttle.due(self.log_state, _M.LOG_INTERVAL_S)
  if not held then
    return
  end
  ngx.log(ngx.ERR, "[auth-router] redis ", self.addr, " failed (", kind, "): ", detail,
          held > 0 and (" (" .. held .. " more since the last line)") or "",
          self.failures >= _M.FAILURES_TO_OPEN
            and ("; not tried for " .. _M.COOLDOWN_S .. " s") or "")
end


--- client:pipeline(commands) -> replies | nil, kind, detail
-- Sends `commands` (each an array: name and arguments, strings or
-- integers) in one exchange and answers their replies in order, in
-- lua-resty-redis's shapes: a string, a number, ngx.null, a table, or
-- `{ err = message }` for a command Redis refused (not a failure). A
-- failure is nil and its kind: "open" (the breaker refuses: no I/O at
-- all), "timeout", "unreachable", "bad_reply" (not RESP: the connection is
-- closed) or "refused" (AUTH or SELECT refused: a config error). Failures
-- count towards the breaker and are logged at most once per interval.
-- Context: rewrite, access, content, timer (cosockets).
function Client:pipeline(commands)
  ngx.update_time()
  if ngx.now() < self.open_until then
    return nil, "open", "circuit open after " .. self.failures .. " failures"
  end
  local replies, kind, detail = exchange(self, commands)
  if replies then
    self.failures = 0
    return replies
  end
  native.redis_failed()
  self.failures = self.failures + 1
  if self.failures >= _M.FAILURES_TO_OPEN then
    self.open_until = ngx.now() + _M.COOLDOWN_S
  end
  self:log_failure(kind, detail)
  return nil, kind, detail
end


--- client:state() -> "closed" | "open", consecutive failures
function Client:state()
  return ngx.now() < self.open_until and "open" or "closed", self.failures
end


return _M
