-- HTTP/1.1 over an nginx cosocket: Lua owns the socket, the native parser
-- owns the bytes. Lua reads, Rust parses, Lua reads again while the parser
-- needs more, so nothing yields beneath a Rust frame.

local native = require "auth_router.native"

local ngx      = ngx
local pcall    = pcall
local tostring = tostring
local floor    = math.floor

local READ_CHUNK = 65536

local _M = {}


local function failure(sock, err)
  sock:close()
  if err == "timeout" then
    return nil, "timeout", err
  end
  return nil, "unreachable", err
end


--- left_ms(deadline) -> the milliseconds left until `deadline` (ngx.now()
-- seconds), or nil when it has passed. The clock is refreshed: the cached
-- time may be a whole event-loop iteration old. (redis.lua uses it too.)
local function left_ms(deadline)
  ngx.update_time()
  local ms = floor((deadline - ngx.now()) * 1000)
  if ms < 1 then
    return nil
  end
  return ms
end


_M.left_ms = left_ms


--- connect(conn[, deadline]) -> sock | nil, kind, detail
-- A connected (and, for conn.tls, encrypted) cosocket to `conn` = { host,
-- port, tls, ssl_verify, server_name, timeout_ms, pool_size, pool }, from
-- the keepalive pool when one is idle. Each step may take timeout_ms, or
-- only what is left until `deadline` when given. `kind` is "timeout" or
-- "unreachable".
function _M.connect(conn, deadline)
  local sock = ngx.socket.tcp()
  local t = conn.timeout_ms
  if deadline then
    t = left_ms(deadline)
    if not t then
      return failure(sock, "timeout")
    end
  end
  sock:settimeouts(t, t, t)

  local ok, err = sock:connect(conn.host, conn.port, { pool = conn.pool, pool_size = conn.pool_size })
  if not ok then
    return failure(sock, err)
  end

  -- TLS only on a fresh connection: a pooled one is already encrypted.
  if conn.tls and sock:getreusedtimes() == 0 then
    if deadline then
      t = left_ms(deadline)
      if not t then
        return failure(sock, "timeout")
      end
      sock:settimeout(t)
    end
    ok, err = sock:sslhandshake(nil, conn.server_name, conn.ssl_verify)
    if not ok then
      return failure(sock, err)
    end
  end
  return sock
end


--- request(conn, bytes, max_bytes) -> parser | nil, kind, detail
-- Sends `bytes` (an encoded request) to `conn` = { host, port, tls,
-- ssl_verify, server_name, timeout_ms, keepalive_ms, pool_size, pool } and
-- reads one whole response into a native parser. `timeout_ms` is the budget
-- of the whole exchange (connect, TLS, send and every read together), not of
-- each step: a peer dripping its answer byte by byte is cut off when it is
-- spent. The connection goes back to the keepalive pool only when the
-- response was read completely and the server allows reuse. `kind` is
-- "timeout", "unreachable" or "bad_response"; `detail` is a short plain
-- message and never contains request data.
-- Context: rewrite, access, content, timer (cosockets).
function _M.request(conn, bytes, max_bytes)
  ngx.update_time()
  local deadline = ngx.now() + conn.timeout_ms / 1000
  local sock, kind, detail = _M.connect(conn, deadline)
  if not sock then
    return nil, kind, detail
  end

  local t = left_ms(deadline)
  if not t then
    return failure(sock, "timeout")
  end
  sock:settimeout(t)
  local ok, err = sock:send(bytes)
  if not ok then
    return failure(sock, err)
  end

  local parser = native.response_parser(max_bytes)
  while true do
    t = left_ms(deadline)
    if not t then
      return failure(sock, "timeout")
    end
    sock:settimeout(t)
    local data, pok, done
    data, err = sock:receiveany(READ_CHUNK)
    if data then
      pok, done, err = pcall(parser.feed, parser, data)
    elseif err == "closed" then
      pok, done, err = pcall(parser.eof, parser)
      if done == false then
        done, err = nil, "connection closed before the response was complete"
      end
    else
      return failure(sock, err)
    end
    if not pok then
      -- a bug (caught panic): its text carries a traceback, keep it out of
      -- the per-failure line
      ngx.log(ngx.ERR, "[auth-router] response parser failed: ", tostring(done))
      done, err = nil, "response parser failed"
    end
    if done == nil then
      sock:close()
      return nil, "bad_response", err
    end
    if done then
      break
    end
  end

  if parser:keepalive() then
    sock:setkeepalive(conn.keepalive_ms, conn.pool_size)
  else
    sock:close()
  end
  return parser
end


return _M
