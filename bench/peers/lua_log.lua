-- Bench-only peer `lua-log1k`: `lua-hit` (bench/peers/lua_hit.lua) plus what
-- the `log1k` variant does, written as a careful pure-Lua logging plugin
-- would (lua-cjson, Kong tcp-log style): read the request body in access,
-- copy response chunks in body_filter (bounded), and in log build one record
-- (request and response headers, both bodies with the JSON fields
-- `password` and `token` masked at any depth by cjson decode + mask +
-- encode, account, status, latency), encode it with cjson, queue it in the
-- worker, and ship batches of up to 100 NDJSON lines over a keepalive TCP
-- cosocket from a zero-delay timer (also every second for a partial batch).
-- Never installed or used outside the benchmark.
--
--   init_by_lua_block       { require("peers.lua_log").init{ host=..., port=..., sink_port=..., ttl_s=3600 } }
--   init_worker_by_lua_block { require("peers.lua_log").init_worker() }
--   access / header_filter / body_filter / log: require("peers.lua_log").<phase>()
--   require("peers.lua_log").counters() -> { queued = n, sent = n, failed = n, pending = n }

local hit   = require "peers.lua_hit"
local cjson = require "cjson.safe"

local ngx      = ngx
local concat   = table.concat
local lower    = string.lower
local pairs    = pairs
local type     = type
local tonumber = tonumber
local decode   = cjson.decode
local encode   = cjson.encode
local timer_at = ngx.timer.at

local MAX_BODY_BYTES = 65536
local BATCH_MAX      = 100
local FLUSH_S        = 1
local MASK           = "[REDACTED]"
local FIELDS         = { password = true, token = true }
local REDACT_HEADERS = { authorization = true, cookie = true, ["set-cookie"] = true }
local CTX_KEY        = "lua_log"

local _M = {}

local conf
local batch, batch_n = {}, 0
local counters = { queued = 0, sent = 0, failed = 0, pending = 0 }


local function mask(t)
  for k, v in pairs(t) do
    if type(k) == "string" and FIELDS[lower(k)] then
      t[k] = MASK
    elseif type(v) == "table" then
      mask(v)
    end
  end
end


-- The body as logged: JSON masked, anything else as is, nil when absent.
local function redact(body)
  if not body or body == "" then
    return nil
  end
  local doc = decode(body)
  if type(doc) ~= "table" then
    return body
  end
  mask(doc)
  return encode(doc)
end


local function headers(h)
  for name in pairs(h) do
    if REDACT_HEADERS[name] then
      h[name] = MASK
    end
  end
  return h
end


local function send(premature, lines, n)
  if premature and n == 0 then
    return
  end
  local sock = ngx.socket.tcp()
  sock:settimeout(10000)
  local ok, err = sock:connect(conf.sink_host, conf.sink_port)
  if ok then
    ok, err = sock:send(lines)
  end
  counters.pending = counters.pending - n
  if not ok then
    counters.failed = counters.failed + n
    ngx.log(ngx.ERR, "[lua_log] send: ", err)
    sock:close()
    return
  end
  counters.sent = counters.sent + n
  sock:setkeepalive(60000, 4)
end


local function flush()
  if batch_n == 0 then
    return
  end
  local lines, n = concat(batch, "", 1, batch_n), batch_n
  batch, batch_n = {}, 0
  local ok, err = timer_at(0, send, lines, n)
  if not ok then
    counters.failed = counters.failed + n
    counters.pending = counters.pending - n
    ngx.log(ngx.ERR, "[lua_log] timer: ", err)
  end
end


local function tick(premature)
  flush()
  if not premature then
    timer_at(FLUSH_S, tick)
  end
end


--- init{ host, port, ttl_s, sink_host ("127.0.0.1"), sink_port }. Context: init_by_lua*.
function _M.init(opts)
  conf = { sink_host = opts.sink_host or "127.0.0.1", sink_port = opts.sink_port }
  hit.init(opts)
end


--- Context: init_worker_by_lua*.
function _M.init_worker()
  timer_at(FLUSH_S, tick)
end


function _M.access()
  local account = hit.access()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body and #body > MAX_BODY_BYTES then
    body = body:sub(1, MAX_BODY_BYTES)
  end
  ngx.ctx[CTX_KEY] = { account = account, req_body = body, chunks = {}, n = 0, bytes = 0 }
end


function _M.header_filter()
  hit.header_filter()
end


function _M.body_filter()
  local c = ngx.ctx[CTX_KEY]
  local chunk = ngx.arg[1]
  if c and chunk ~= "" and c.bytes < MAX_BODY_BYTES then
    c.n = c.n + 1
    c.chunks[c.n] = chunk
    c.bytes = c.bytes + #chunk
  end
end


function _M.log()
  local c = ngx.ctx[CTX_KEY]
  if not c then
    return
  end
  local resp_body = concat(c.chunks, "", 1, c.n)
  if #resp_body > MAX_BODY_BYTES then
    resp_body = resp_body:sub(1, MAX_BODY_BYTES)
  end
  local var = ngx.var
  local record = {
    time = ngx.req.start_time(),
    request = {
      method = ngx.req.get_method(),
      uri = var.request_uri,
      headers = headers(ngx.req.get_headers()),
      body = redact(c.req_body),
    },
    response = {
      status = ngx.status,
      headers = headers(ngx.resp.get_headers()),
      body = redact(resp_body),
    },
    account = c.account and c.account.id,
    latency_ms = (ngx.now() - ngx.req.start_time()) * 1000,
    upstream_ms = tonumber(var.upstream_response_time),
  }
  local line = encode(record)
  if not line then
    counters.failed = counters.failed + 1
    return
  end
  batch_n = batch_n + 1
  batch[batch_n] = line .. "\n"
  counters.queued = counters.queued + 1
  counters.pending = counters.pending + 1
  if batch_n >= BATCH_MAX then
    flush()
  end
end


function _M.counters()
  return counters
end


return _M
