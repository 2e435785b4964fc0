-- Bench-only peer `lua-hit`: the job auth-router does on a cache hit in the
-- `hit` variant, written the way a careful pure-Lua gateway plugin would
-- write it (best effort: locals cached, no closures per request, no NYI
-- calls on the hot path). Never installed or used outside the benchmark.
--
-- Per request, access: strip the spoofable upstream headers, read the
-- Authorization value, key = ngx.md5(value), look the cjson-decoded account
-- up in a per-worker lua-resty-lrucache, set `x-account-id` and
-- `x-account-plan` upstream, then scan the 20 route prefixes linearly
-- (plain prefix comparison, first match wins; the bench's path matches none,
-- like the `hit` variant's 20 routes). header_filter: `x-account-plan`
-- downstream. A miss calls the auth service once over a keepalive cosocket
-- and caches the account; the bench warms every credential first, so the
-- measured runs never miss (run.sh checks the auth service's call count).
--
--   init_by_lua_block          { require("peers.lua_hit").init{ host = "127.0.0.1", port = 9000,
--                                                             ttl_s = 3600, routes = 20 } }
--   access_by_lua_block        { require("peers.lua_hit").access() }
--   header_filter_by_lua_block { require("peers.lua_hit").header_filter() }

local lrucache = require "resty.lrucache"
local cjson    = require "cjson.safe"

local ngx          = ngx
local md5          = ngx.md5
local var          = ngx.var
local clear_header = ngx.req.clear_header
local set_header   = ngx.req.set_header
local sub          = string.sub
local decode       = cjson.decode
local encode       = cjson.encode
local tostring     = tostring
local tonumber     = tonumber
local type         = type
local error        = error

local STRIP           = { "x-account-id", "x-account-plan" }   -- upstream headers
local RESPONSE_HEADER = "x-account-plan"
local CACHE_SIZE      = 100000   -- auth-router's default auth.cache_size
local CTX_KEY         = "lua_peer"

local _M = {}

local cache
local conf
local prefixes, prefix_lens, targets = {}, {}, {}


local function respond(status, message)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json; charset=utf-8"
  ngx.print(encode({ message = message }))
  return ngx.exit(status)
end


-- The miss path: GET the auth service with the credential over a keepalive
-- connection; nil on anything but a 200 with a JSON object carrying an id.
local function fetch(authorization)
  local sock = ngx.socket.tcp()
  sock:settimeout(1000)
  local ok, err = sock:connect(conf.host, conf.port)
  if not ok then
    ngx.log(ngx.ERR, "[lua_peer] connect: ", err)
    return nil
  end
  ok, err = sock:send("GET " .. conf.path .. " HTTP/1.1\r\nHost: " .. conf.host
                      .. "\r\nAuthorization: " .. authorization .. "\r\n\r\n")
  if not ok then
    sock:close()
    ngx.log(ngx.ERR, "[lua_peer] send: ", err)
    return nil
  end
  local status_line = sock:receive("*l")
  local status = status_line and tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  local length
  while true do
    local line = sock:receive("*l")
    if not line then
      sock:close()
      return nil
    end
    if line == "" then
      break
    end
    local n = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if n then
      length = tonumber(n)
    end
  end
  if not length then
    sock:close()
    return nil
  end
  local body = sock:receive(length)
  sock:setkeepalive(60000, 64)
  if status ~= 200 or not body then
    return nil
  end
  local account = decode(body)
  if type(account) ~= "table" or account.id == nil then
    return nil
  end
  return account
end


--- init{ host, port, path ("/auth"), ttl_s, routes (20) }. Context: init_by_lua*.
function _M.init(opts)
  conf = {
    host  = opts.host,
    port  = opts.port,
    path  = opts.path or "/auth",
    ttl_s = opts.ttl_s or 60,
  }
  for i = 1, opts.routes or 20 do
    prefixes[i] = ("/r%02d/"):format(i)
    prefix_lens[i] = #prefixes[i]
    targets[i] = "127.0.0.1:" .. (10000 + i)
  end
  local err
  cache, err = lrucache.new(CACHE_SIZE)
  if not cache then
    error("lua_peer: lrucache.new: " .. tostring(err))
  end
end


--- The matched route's target, or nil: a linear scan of plain prefixes.
local function route(uri)
  for i = 1, #prefixes do
    if sub(uri, 1, prefix_lens[i]) == prefixes[i] then
      return targets[i]
    end
  end
  return nil
end


--- Context: access_by_lua*. Returns the account (for lua_log's use).
function _M.access()
  for i = 1, #STRIP do
    clear_header(STRIP[i]) -- the client must not spoof them
  end
  local authorization = var.http_authorization
  if not authorization then
    return respond(401, "No credentials found in request")
  end
  local key = md5(authorization)
  local account = cache:get(key)
  if not account then
    account = fetch(authorization)
    if not account then
      return respond(401, "Unauthorized")
    end
    cache:set(key, account, conf.ttl_s)
  end
  set_header("x-account-id", tostring(account.id))
  if account.plan ~= nil then
    set_header("x-account-plan", tostring(account.plan))
  end
  local target = route(var.uri)
  if target then
    var.peer_target = target
  end
  ngx.ctx[CTX_KEY] = account
  return account
end


--- Context: header_filter_by_lua*.
function _M.header_filter()
  local account = ngx.ctx[CTX_KEY]
  if account and account.plan ~= nil then
    ngx.header[RESPONSE_HEADER] = tostring(account.plan)
  end
end


return _M
