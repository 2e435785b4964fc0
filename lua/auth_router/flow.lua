-- The miss path of a request and the node-wide purges (the Lua side of
-- src/auth/flow.rs): the shared dict (L2), single flight across workers
-- (a dict lock) or within a worker, the auth call over http1.lua under a
-- per-worker in-flight bound, the L2 write; purges recorded in the dict
-- for every worker. Everything here may yield; init.lua calls it from
-- access on an L1 miss (fetch) and before each lookup (apply_purges).

local http1    = require "auth_router.http1"
local throttle = require "auth_router.throttle"

local ngx      = ngx
local type     = type
local pcall    = pcall
local tostring = tostring
local error    = error
local ipairs   = ipairs
local min      = math.min
local ceil     = math.ceil

local MAX_AUTH_RESPONSE_BYTES = 1024 * 1024
-- Redis keys of the cluster tier: verdicts (the L2 serialization under the
-- same keyed digest) and the fleet-wide single-flight locks.
local CLUSTER_PREFIX      = "auth-router:v:"
local CLUSTER_LOCK_PREFIX = "auth-router:lock:"
-- The fleet's purge log: a stream of cache keys ("*": everything), and
-- per node (in the shared dict) the last entry applied and a poll lock.
local PURGE_STREAM        = "auth-router:purges"
local PURGE_STREAM_MAXLEN = 10000
local PURGE_STREAM_SEEN   = "auth-router:purges:seen:"
local PURGE_POLL_LOCK     = "auth-router:purges:poll:"
local CLUSTER_WAIT_MIN_S  = 0.005
local CLUSTER_WAIT_MAX_S  = 0.05
local PURGE_SEQ   = "auth-router:purge:seq"
local PURGE_ENTRY = "auth-router:purge:"
local LOCK_PREFIX = "lock:"
local UNCACHEABLE_PREFIX = "nc:"
local WAIT_MIN_S  = 0.001
local WAIT_MAX_S  = 0.02

local _M = {
  -- Waiters allow the call this much past its deadline (the caller still
  -- has to parse and store the answer, and they poll every WAIT_MAX_S at
  -- most).
  WAIT_MARGIN_S = 0.25,
  -- The lock outlives any call by this much: a call never holds it past
  -- its deadline, so no second call can start while one is in flight.
  LOCK_MARGIN_S = 1,
  -- At most one auth-failure line per auth service per worker this often;
  -- the next line says how many were held back. A field so that specs can
  -- shorten it.
  FAILURE_LOG_INTERVAL_S = 10,
}

-- Per-worker single flight when there is no shared dict.
local inflight = {}
-- Auth calls in flight in this worker, by auth service (connection pool name).
local calls_in_flight = {}
-- Per auth service: its throttle.due state (see log_failure).
local failure_log = {}


--- purge_seq(dict) -> the number of purges recorded in `dict` so far (a new
-- plugin has seen them all: its L1 starts empty).
function _M.purge_seq(dict)
  return dict and dict:get(PURGE_SEQ) or 0
end


-- Applies purges recorded in the dict (by any worker) to this plugin's L1.
function _M.apply_purges(plugin, plan, dict)
  local seq = dict:get(PURGE_SEQ)
  if not seq then
    return
  end
  local seen = plan.purge_seen
  if seq == seen then
    return
  end
  for i = seen + 1, seq do
    local key = dict:get(PURGE_ENTRY .. i)
    if key == "*" or not key then -- an evicted entry: purge everything to be safe
      plugin:purge_all()
    else
      plugin:purge_key(key)
    end
  end
  plan.purge_seen = seq
end


-- Verdicts that may not be cached are flagged briefly, so that waiters can
-- tell "the call answered but nothing may be reused" from "the call failed".
local uncacheable = {} -- per worker, when there is no shared dict

local function mark_uncacheable(plan, key)
  if plan.dict then
    plan.dict:set(UNCACHEABLE_PREFIX .. key, true, plan.node_wait_s)
  else
    uncacheable[key] = ngx.now() + plan.node_wait_s
  end
end

local function was_uncacheable(plan, key)
  if plan.dict then
    return plan.dict:get(UNCACHEABLE_PREFIX .. key) ~= nil
  end
  local until_ = uncacheable[key]
  if until_ and until_ < ngx.now() then
    uncacheable[key] = nil
    return false
  end
  return until_ ~= nil
end


-- One error-log line per auth failure (kind, address, short reason), at
-- most one per FAILURE_LOG_INTERVAL_S per auth service in this worker: an
-- outage must not flood the log. The next line written counts the others.
local function log_failure(addr, kind, reason)
  local state = failure_log[addr]
  if not state then
    state = {}
    failure_log[addr] = state
  end
  local held = throttle.due(state, _M.FAILURE_LOG_INTERVAL_S)
  if not held then
    return
  end
  if held > 0 then
    ngx.log(ngx.ERR, "[auth-router] auth service ", addr, " failed (", kind, "): ", reason,
            " (", held, " more failures since the last such line)")
  else
    ngx.log(ngx.ERR, "[auth-router] auth service ", addr, " failed (", kind, "): ", reason)
  end
end


-- The auth call itself; records the answer in L1 (native) and L2 (dict).
local function exchange_with_auth(plan, exchange)
  local req = exchange:auth_request()
  local started = ngx.now()
  local parser, kind, detail = http1.request(plan.conn, req, MAX_AUTH_RESPONSE_BYTES)
  ngx.update_time()
  local latency_ms = (ngx.now() - started) * 1000
  local step, value, ttl, problem = exchange:auth_response(parser, kind, ngx.now(), latency_ms)
  if not parser then
    if kind == "timeout" then
      detail = "no complete answer within auth.timeout_ms (" .. plan.conn.timeout_ms .. " ms)"
    end
    log_failure(plan.auth_addr, kind, detail)
  elseif problem then
    log_failure(plan.auth_addr, "answer", problem)
  end
  if value and plan.dict then
    local ok, err = plan.dict:set(exchange:pending_key(), value, ttl)
    if not ok then
      ngx.log(ngx.WARN, "[auth-router] cannot store auth verdict in shared dict: ", err)
    end
  end
  if value and plan.cluster then
    -- every node reads it before calling auth itself; a failure is logged
    -- and counted by the client, the request is not concerned
    plan.cluster:pipeline({ { "SET", CLUSTER_PREFIX .. exchange:pending_key(), value,
                              "PX", ceil(ttl * 1000) } })
  end
  if value then
    return step
  elseif not value and (step == "allow" or step == "deny") then
    -- A verdict the auth service forbade caching (no-store, ttl 0, exp
    -- passed): requests waiting on this call must ask for themselves.
    mark_uncacheable(plan, exchange:pending_key())
  end
  return step
end


-- The auth call, unless this worker already has max_in_flight calls in
-- flight to the auth service: then fail fast (stale if there is one)
-- rather than pile more calls on a slow auth service. The check and the
-- count happen without a yield in between.
local function call_auth(plan, exchange)
  local pool = plan.conn.pool
  local flying = calls_in_flight[pool] or 0
  if flying >= plan.max_in_flight then
    log_failure(plan.auth_addr, "overloaded", flying .. " auth calls in flight in this worker (auth.max_in_flight)")
    return exchange:fail("rejected", ngx.now())
  end
  calls_in_flight[pool] = flying + 1
  local ok, step = pcall(exchange_with_auth, plan, exchange)
  calls_in_flight[pool] = calls_in_flight[pool] - 1
  if not ok then
    error(step, 0)
  end
  return step
end


-- Waits for a concurrent auth call for the same key; fails closed at the deadline.
local function wait_for_flight(plan, exchange, in_flight)
  local dict = plan.dict
  local key = exchange:pending_key()
  local deadline = ngx.now() + plan.node_wait_s
  local delay = WAIT_MIN_S
  while ngx.now() < deadline do
    ngx.sleep(delay)
    delay = min(delay * 2, WAIT_MAX_S)
    -- Read the lock before looking for the answer: the caller stores the
    -- answer before it releases the lock, so "released" then "no answer"
    -- really means the call produced nothing reusable.
    local flying = in_flight()
    local step = exchange:recheck(ngx.now())
    if step ~= "miss" then
      return step
    end
    if dict then
      local value = dict:get(key)
      if value then
        step = exchange:load_shared(value, ngx.now())
        if step ~= "miss" then
          return step
        end
      end
    end
    if not flying then
      if was_uncacheable(plan, key) then
        -- It answered, but its answer may not be reused: ask ourselves.
        return call_auth(plan, exchange)
      end
      -- It failed: do not retry it N times over; serve stale or fail like it did.
      return exchange:fail("flight_failed", ngx.now())
    end
  end
  return exchange:fail("lock_timeout", ngx.now())
end


-- A verdict read from Redis: into L1 (load_shared) and this node's L2 for
-- what is left of its lifetime. Returns the step, or nil when it is no
-- use (expired, another version).
local function load_cluster(plan, exchange, key, value, pttl)
  if type(value) ~= "string" then
    return nil
  end
  local step = exchange:load_cluster(value, ngx.now())
  if step == "miss" then
    return nil
  end
  if type(pttl) == "number" and pttl > 0 then
    plan.dict:set(key, value, pttl / 1000)
  end
  return step
end


-- The cluster tier (L3), for the one request of this node that holds the
-- node's lock: the verdict from Redis when another node stored it, else
-- the fleet-wide lock (SET NX PX) so that one node of the fleet calls auth
-- while the others wait for its answer in Redis. Returns the step, or nil
-- and whether this request holds the fleet lock (it then calls auth and
-- releases it). Redis failing is never the request's failure: nil, false
-- (this node calls auth as if alone). A waiter whose bounded wait
-- (auth.timeout_ms + margin) runs out calls auth itself: a slow node must
-- not turn into failed requests fleet-wide, and max_in_flight still bounds
-- what each worker sends.
local function from_cluster(plan, exchange, key)
  local client = plan.cluster
  local vkey, lkey = CLUSTER_PREFIX .. key, CLUSTER_LOCK_PREFIX .. key
  local replies = client:pipeline({ { "GET", vkey }, { "PTTL", vkey } })
  if not replies then
    return nil, false
  end
  local step = load_cluster(plan, exchange, key, replies[1], replies[2])
  if step then
    return step
  end
  replies = client:pipeline({ { "SET", lkey, ngx.worker.pid(), "NX", "PX", ceil(plan.lock_ttl * 1000) } })
  if not replies then
    return nil, false
  end
  if replies[1] == "OK" then
    return nil, true
  end
  local deadline = ngx.now() + plan.wait_s
  local delay = CLUSTER_WAIT_MIN_S
  while ngx.now() < deadline do
    ngx.sleep(delay)
    delay = min(delay * 2, CLUSTER_WAIT_MAX_S)
    replies = client:pipeline({ { "EXISTS", lkey }, { "GET", vkey }, { "PTTL", vkey } })
    if not replies then
      return nil, false
    end
    step = load_cluster(plan, exchange, key, replies[2], replies[3])
    if step then
      return step
    end
    if replies[1] == 0 then
      -- the other node's call ended with nothing reusable: ask ourselves
      return nil, false
    end
  end
  return nil, false
end


--- fetch(plan, exchange [, key]) -> step
-- A miss in this worker's L1: L2, then single flight across workers (dict
-- lock) or within the worker, then the auth call. `key`: the pending key,
-- when the caller already read L2 for it and found nothing fresh (init.lua
-- does, through the C ABI). Yields.
function _M.fetch(plan, exchange, key)
  local dict = plan.dict
  local l2_read = key ~= nil
  key = key or exchange:pending_key()
  if not dict then
    if inflight[key] then
      return wait_for_flight(plan, exchange, function() return inflight[key] end)
    end
    inflight[key] = true
    local ok, step = pcall(call_auth, plan, exchange)
    inflight[key] = nil
    if not ok then
      error(step, 0)
    end
    return step
  end

  local value
  if not l2_read then
    value = dict:get(key)
    if value then
      local step = exchange:load_shared(value, ngx.now())
      if step ~= "miss" then
        return step
      end
    end
  end

  local lock = LOCK_PREFIX .. key
  local won, err = dict:add(lock, true, plan.node_lock_ttl)
  if not won and err == "exists" then
    return wait_for_flight(plan, exchange, function() return dict:get(lock) ~= nil end)
  end
  if not won then
    ngx.log(ngx.WARN, "[auth-router] cannot take auth lock (", err, "): calling without single flight")
  else
    -- Another worker may have stored the answer and released the lock
    -- between our read and our add: look once more before calling.
    value = dict:get(key)
    if value then
      local step = exchange:load_shared(value, ngx.now())
      if step ~= "miss" then
        dict:delete(lock)
        return step
      end
    end
  end
  local fleet_lock = false
  if plan.cluster then
    local ok, step, held = pcall(from_cluster, plan, exchange, key)
    if ok and step then
      if won then
        dict:delete(lock)
      end
      return step
    end
    if not ok then
      ngx.log(ngx.ERR, "[auth-router] cluster tier failed: ", tostring(step))
    end
    fleet_lock = ok and held
  end
  local ok, step = pcall(call_auth, plan, exchange)
  if fleet_lock then
    plan.cluster:pipeline({ { "DEL", CLUSTER_LOCK_PREFIX .. key } })
  end
  if won then
    dict:delete(lock)
  end
  if not ok then
    error(step, 0)
  end
  return step
end


-- This node's part of a purge: this worker's L1 now, the shared dict's
-- copy, and the node's purge log, which the other workers apply on their
-- next request (see apply_purges).
local function purge_node(plugin, dict, key)
  if key == "*" then
    plugin:purge_all()
  else
    plugin:purge_key(key)
  end
  if not dict then
    return true
  end
  if key ~= "*" then
    dict:delete(key)
  end
  local seq, err = dict:incr(PURGE_SEQ, 1, 0)
  if not seq then
    return nil, "cannot record purge: " .. tostring(err)
  end
  dict:set(PURGE_ENTRY .. seq, key, 3600)
  -- plan.purge_seen is not advanced here: other workers may have recorded
  -- purges this one has not applied yet; the next request applies them all
  -- (ours again too, which is harmless).
  if key == "*" then
    -- Entries written by any worker are gone too. flush_all would also drop
    -- the secret and locks; the shared entries are keyed by 32 hex digits.
    for _, k in ipairs(dict:get_keys(0)) do
      if #k == 32 and k:match("^%x+$") then
        dict:delete(k)
      end
    end
  end
  return true
end


-- Every verdict in Redis (purge-all), by SCAN, a batch at a time.
local function delete_cluster_verdicts(cluster)
  local cursor = "0"
  repeat
    local r, kind, detail = cluster:pipeline({ { "SCAN", cursor, "MATCH", CLUSTER_PREFIX .. "*",
                                                 "COUNT", 1000 } })
    if not r then
      return nil, kind .. ": " .. tostring(detail)
    end
    cursor = r[1][1]
    local keys = r[1][2]
    if #keys > 0 then
      local command = { "DEL" }
      for i = 1, #keys do
        command[i + 1] = keys[i]
      end
      r, kind, detail = cluster:pipeline({ command })
      if not r then
        return nil, kind .. ": " .. tostring(detail)
      end
    end
  until cursor == "0"
  return true
end


--- purge(plugin, dict, key, cluster) -> true | nil, err
-- Forgets cache key `key` ("*": everything) on this node and, with
-- `cluster`, in Redis and on every node of the fleet: the key goes into the
-- fleet's purge log, which each node applies within its `poll_ms` (see
-- poll_purges). Redis copies are deleted before the log entry is written,
-- so no node reads the purged verdict back. An error says when the fleet
-- could not be told (this node is purged all the same).
function _M.purge(plugin, dict, key, cluster)
  local ok, err = purge_node(plugin, dict, key)
  if not ok or not cluster then
    return ok, err
  end
  if key == "*" then
    ok, err = delete_cluster_verdicts(cluster)
    if not ok then
      return nil, "purged on this node only, not in the fleet (redis " .. err .. ")"
    end
  end
  local commands = { { "XADD", PURGE_STREAM, "MAXLEN", "~", PURGE_STREAM_MAXLEN, "*", "k", key } }
  if key ~= "*" then
    table.insert(commands, 1, { "DEL", CLUSTER_PREFIX .. key })
  end
  local replies, kind, detail = cluster:pipeline(commands)
  if not replies then
    return nil, "purged on this node only, not in the fleet (redis " .. kind .. ": " .. tostring(detail) .. ")"
  end
  return true
end


--- poll_purges(plugin, plan): applies the fleet's purge log to this node,
-- from one worker of the node per `poll_ms` (a dict lock), remembering the
-- last entry applied in the dict. A node whose dict has no such mark (it
-- just started) begins at the log's end: its caches are empty.
-- Context: a timer (cosockets).
function _M.poll_purges(plugin, plan)
  local dict, cluster = plan.dict, plan.cluster
  if not (dict and cluster) then
    return
  end
  local id = plan.cluster_id
  if not dict:add(PURGE_POLL_LOCK .. id, true, plan.poll_s * 0.9) then
    return
  end
  local seen = dict:get(PURGE_STREAM_SEEN .. id)
  if not seen then
    local r = cluster:pipeline({ { "XREVRANGE", PURGE_STREAM, "+", "-", "COUNT", 1 } })
    if r and type(r[1]) == "table" and not r[1].err then
      dict:set(PURGE_STREAM_SEEN .. id, r[1][1] and r[1][1][1] or "0-0")
    end
    return
  end
  local r = cluster:pipeline({ { "XRANGE", PURGE_STREAM, "(" .. seen, "+", "COUNT", 1000 } })
  if not (r and type(r[1]) == "table" and not r[1].err) then
    return
  end
  for _, entry in ipairs(r[1]) do
    local fields = entry[2]
    if type(fields) == "table" and fields[1] == "k" and type(fields[2]) == "string" then
      local ok, err = purge_node(plugin, dict, fields[2])
      if not ok then
        ngx.log(ngx.ERR, "[auth-router] cannot apply the fleet's purge: ", err)
        return
      end
    end
    dict:set(PURGE_STREAM_SEEN .. id, entry[1])
  end
end


return _M
