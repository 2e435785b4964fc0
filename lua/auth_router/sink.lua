-- Log shipping: a per-worker timer drains the native queue of serialized
-- records to the collector over cosockets. The request path only appends to
-- the queue (in the log phase) and never waits on the collector. A batch
-- that fills (batch_max_entries) is sent at once by a one-off timer, as
-- Kong's queues do, rather than at the next flush interval: under load the
-- interval alone let the queue overflow and drop records.
--
-- The queue, batching, backoff and drop accounting live in Rust; this file
-- only schedules and performs the I/O, as Kong's tcp-log and http-log do.

local http1 = require "auth_router.http1"

local ngx          = ngx
local pcall        = pcall
local tostring     = tostring
local setmetatable = setmetatable
local max          = math.max

local MAX_COLLECTOR_RESPONSE_BYTES = 64 * 1024
local IDLE_STOP_S = 60 -- an empty queue unused this long ends its chain

local _M = {}

-- Plugins with a running timer chain -> { last = time of the last record,
-- kicked = a one-off flush for a full batch is pending }.
-- The chain holds its plugin; it ends once the queue is empty and no record
-- came for IDLE_STOP_S, so a replaced config's plugin can be collected after
-- its last records are out.
local running = setmetatable({}, { __mode = "k" })


local function log_failure(sink, err)
  ngx.log(ngx.WARN, "[auth-router] log collector ", sink.addr, " failed: ", tostring(err))
end


-- One delivery attempt of `payload` (already framed: NDJSON for tcp, a full
-- HTTP/1.1 request for http). Returns true or nil, err.
local function deliver(sink, payload)
  if sink.kind == "http" then
    local parser, kind, detail = http1.request(sink, payload, MAX_COLLECTOR_RESPONSE_BYTES)
    if not parser then
      return nil, kind .. ": " .. tostring(detail)
    end
    local status = parser:status()
    if status < 200 or status > 299 then
      return nil, "status " .. status
    end
    return true
  end

  local sock, kind, detail = http1.connect(sink)
  if not sock then
    return nil, kind .. ": " .. tostring(detail)
  end
  local ok, err = sock:send(payload)
  if not ok then
    sock:close()
    return nil, "send: " .. tostring(err)
  end
  sock:setkeepalive(sink.keepalive_ms, sink.pool_size)
  return true
end


-- Sends what is due. With `draining` (the worker is exiting) batches are sent
-- without waiting for a backoff, until one fails.
local function flush(plugin, sink, draining)
  while true do
    local now = ngx.now()
    local id, payload = plugin:log_take(now, draining)
    if not id then
      return
    end
    -- Every taken batch must be acked or failed, even if deliver raises:
    -- the queue keeps one batch in flight and would otherwise stall.
    local pok, ok, err = pcall(deliver, sink, payload)
    if not pok then
      ok, err = nil, ok
    end
    ngx.update_time()
    if ok then
      plugin:log_ack(id)
    else
      log_failure(sink, err)
      plugin:log_fail(id, ngx.now())
      if draining then
        -- The worker is exiting and the collector fails: what is left dies
        -- with the worker. Say how much, never silently.
        ngx.log(ngx.ERR, "[auth-router] worker exiting: ", plugin:log_pending(),
                " log record(s) not delivered to ", sink.addr)
      end
      return -- the next attempt waits for its backoff
    end
  end
end


local tick

-- Schedules the next run of the chain: after the flush interval, or later
-- when the batch in front is backing off after a failed delivery.
local function schedule(plugin, sink)
  local delay = sink.flush_s
  local next_at = plugin:log_next_at()
  if next_at then
    delay = max(delay, next_at - ngx.now())
  end
  local ok, err = ngx.timer.at(delay, tick, plugin, sink)
  if not ok then
    running[plugin] = nil
    ngx.log(ngx.ERR, "[auth-router] cannot schedule log flush: ", err)
  end
end


-- flush, an error in it logged: a timer's callback must not raise.
local function flush_logged(plugin, sink, draining)
  local ok, err = pcall(flush, plugin, sink, draining)
  if not ok then
    ngx.log(ngx.ERR, "[auth-router] log flush failed: ", tostring(err))
  end
end


tick = function(premature, plugin, sink)
  flush_logged(plugin, sink, premature)
  local state = running[plugin]
  if premature or not state then
    running[plugin] = nil
    return
  end
  if plugin:log_pending() == 0 and ngx.now() - state.last > IDLE_STOP_S then
    running[plugin] = nil -- idle: the next record starts a new chain
    return
  end
  schedule(plugin, sink)
end


-- The one-off flush of a full batch. Two flushes at once are safe: the
-- queue hands out one batch at a time, so the second finds none to take.
local function kick(premature, plugin, sink)
  local state = running[plugin]
  if state then
    state.kicked = false
  end
  if premature then
    return -- the worker is exiting: the chain's last tick drains the queue
  end
  flush_logged(plugin, sink, false)
end


--- queued(plugin, sink, full) -- a record was queued (`full`: it filled its
-- batch): makes sure a timer chain ships this plugin's queue, and sends a
-- full batch now. Context: log, timer (not init).
function _M.queued(plugin, sink, full)
  local state = running[plugin]
  if state then
    state.last = ngx.now()
    if full and not state.kicked then
      state.kicked = true
      local ok, err = ngx.timer.at(0, kick, plugin, sink)
      if not ok then
        state.kicked = false -- the chain's next tick sends it
        ngx.log(ngx.WARN, "[auth-router] cannot flush a full log batch now: ", err)
      end
    end
    return
  end
  running[plugin] = { last = ngx.now() }
  local ok, err = ngx.timer.at(0, tick, plugin, sink)
  if not ok then
    running[plugin] = nil
    ngx.log(ngx.ERR, "[auth-router] cannot start log shipping: ", err)
  end
end


return _M
