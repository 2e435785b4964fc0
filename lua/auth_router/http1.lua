-- HTTP/1.1 over an nginx cosocket: Lua owns the socket, the native parser
-- owns the bytes. Lua reads, Rust parses, Lua reads again while the parser
-- needs more, so nothing yields beneath a Rust frame.

local native = require "auth_router.native"

local ngx      = ngx
local pcall    = pcall
local tostring = tostring

local READ_CHUNK = 65536

local _M = {}


local function failure(sock, err)
  sock:close()
  if err == "timeout" then
    return nil, "timeout", err
  end
  return nil, "unreachable", err
end


--- connect(conn) -> sock | nil, kind, detail
-- A connected (and, for conn.tls, encrypted) cosocket to `conn` = { host,
-- port, tls, ssl_verify, server_name, timeout_ms, pool_size, pool }, from
-- the keepalive pool when one is idle. `kind` is "timeout" or "unreachable".
function _M.connect(conn)
  local sock = ngx.socket.tcp()
  local t = conn.timeout_ms
  sock:settimeouts(t, t, t)

  local ok, err = sock:connect(conn.host, conn.port, { pool = conn.pool, pool_size = conn.pool_size })
  if not ok then
    return failure(sock, err)
  end

  -- TLS only on a fresh connection: a pooled one is already encrypted.
  if conn.tls and sock:getreusedtimes() == 0 then
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
-- reads one whole response into a native parser. The connection goes back
-- to the keepalive pool only when the response was read completely and the
-- server allows reuse. `kind` is "timeout", "unreachable" or "bad_response";
-- `detail` never contains request data.
-- Context: rewrite, access, content, timer (cosockets).
function _M.request(conn, bytes, max_bytes)
  local sock, kind, detail = _M.connect(conn)
  if not sock then
    return nil, kind, detail
  end

  local ok, err = sock:send(bytes)
  if not ok then
    return failure(sock, err)
  end

  local parser = native.response_parser(max_bytes)
  while true do
    local data
    data, err = sock:receiveany(READ_CHUNK)
    local pok, done
    if data then
      pok, done = pcall(parser.feed, parser, data)
    elseif err == "closed" then
      pok, done = pcall(parser.eof, parser)
      if pok and not done then
        done, pok = "connection closed before the response was complete", false
      end
    else
      return failure(sock, err)
    end
    if not pok then
      sock:close()
      return nil, "bad_response", tostring(done)
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
