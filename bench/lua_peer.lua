-- Bench-only: the job auth-router does on a cache hit, written the way a
-- typical pure-Lua gateway plugin would write it. It is the "peer" variant (c)
-- of bench/run.sh and is never installed or used outside the benchmark.
--
-- Per request (access): strip the spoofable upstream header, read the
-- Authorization value, key = ngx.md5(value), look the decoded account up in a
-- per-worker lua-resty-lrucache; on a hit set `x-account-id` upstream from
-- account.id. (header_filter): set `x-account-plan` from account.plan.
-- A miss calls the auth service once over a cosocket (HTTP/1.1, Connection:
-- close), cjson-decodes the account and caches it; the benchmark warms every
-- credential first, so the measured runs never miss.
--
--   init_by_lua_block          { require("lua_peer").init{ host = "127.0.0.1", port = 9000, ttl_s = 3600 } }
--   access_by_lua_block        { require("lua_peer").access() }
--   header_filter_by_lua_block { require("lua_peer").header_filter() }

local lrucache = require "resty.lrucache"
local cjson    = require "cjson.safe"

local ngx          = ngx
local md5          = ngx.md5
local decode       = cjson.decode
local encode       = cjson.encode
local tostring     = tostring
local tonumber     = tonumber
local type         = type
local error        = error

local UPSTREAM_HEADER = "x-account-id"
local RESPONSE_HEADER = "x-account-plan"
local CACHE_SIZE      = 100000   -- auth-router's default auth.cache_size
local CTX_KEY         = "lua_peer"

local _M = {}

local cache
local conf


local function respond(status, message)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json; charset=utf-8"
  ngx.print(encode({ message = message }))
  return ngx.exit(status)
end


-- The miss path: GET the auth service with the credential; nil on anything
-- but a 200 with a JSON object carrying an id.
local function fetch(authorization)
  local sock = ngx.socket.tcp()
  sock:settimeout(1000)
  local ok, err = sock:connect(conf.host, conf.port)
  if not ok then
    ngx.log(ngx.ERR, "[lua_peer] connect: ", err)
    return nil
  end
  ok, err = sock:send("GET " .. conf.path .. " HTTP/1.1\r\nHost: " .. conf.host
                      .. "\r\nAuthorization: " .. authorization
                      .. "\r\nConnection: close\r\n\r\n")
  if not ok then
    sock:close()
    ngx.log(ngx.ERR, "[lua_peer] send: ", err)
    return nil
  end
  local raw
  raw, err = sock:receive("*a")
  sock:close()
  if not raw then
    ngx.log(ngx.ERR, "[lua_peer] receive: ", err)
    return nil
  end
  local status = tonumber(raw:match("^HTTP/1%.%d (%d%d%d)"))
  local body = raw:match("\r\n\r\n(.*)$")
  if status ~= 200 or not body then
    return nil
  end
  local account = decode(body)
  if type(account) ~= "table" or account.id == nil then
    return nil
  end
  return account
end


--- init{ host, port, path ("/auth"), ttl_s }. Context: init_by_lua*.
function _M.init(opts)
  conf = {
    host  = opts.host,
    port  = opts.port,
    path  = opts.path or "/auth",
    ttl_s = opts.ttl_s or 60,
  }
  local err
  cache, err = lrucache.new(CACHE_SIZE)
  if not cache then
    error("lua_peer: lrucache.new: " .. tostring(err))
  end
end


--- Context: access_by_lua*.
function _M.access()
  ngx.req.clear_header(UPSTREAM_HEADER) -- the client must not spoof it
  local authorization = ngx.var.http_authorization
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
  ngx.req.set_header(UPSTREAM_HEADER, tostring(account.id))
  ngx.ctx[CTX_KEY] = account
end


--- Context: header_filter_by_lua*.
function _M.header_filter()
  local account = ngx.ctx[CTX_KEY]
  if account and account.plan ~= nil then
    ngx.header[RESPONSE_HEADER] = tostring(account.plan)
  end
end


return _M
