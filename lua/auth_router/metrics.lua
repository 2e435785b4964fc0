-- Node-wide metrics in the Prometheus text format (0.0.4).
--
-- Each worker's native counters (stats()) and its compiled plugins'
-- routing decisions by route are summed across the node's workers through
-- the shared dict, as Kong's prometheus plugin (lua-resty-counter) does: a
-- per-worker timer adds what grew since its last flush with dict:incr;
-- gauges (live_slots, log_queue_bytes) are set per worker id and summed at
-- scrape. The per-request path makes no dict call and builds no table for
-- this: it only increments native counters.
--
-- The dict is `auth_router_metrics` when nginx has one (recommended: the
-- cache dict is LRU, and a full one evicts whatever was used least, metrics
-- keys included), else the config's `auth.shared_dict` (default
-- "auth_router"). Counters survive an eviction as a counter reset (the next
-- flush adds its delta to a fresh key; Prometheus's rate() and increase()
-- read it as a restart); each worker checks its route registrations every
-- flush and registers again what was evicted. A scrape flushes its own
-- worker first; other workers' counts are at most FLUSH_INTERVAL_S old.
-- Without a dict, render() reports this worker only and says so in a `# `
-- comment line.
--
-- The text itself is rendered natively (src/metrics.rs: the names, labels
-- and HELP lines sit next to the counters, and a unit test keeps them in step).

local native = require "auth_router.native"

local ngx          = ngx
local pairs        = pairs
local ipairs       = ipairs
local pcall        = pcall
local tostring     = tostring
local sort         = table.sort
local setmetatable = setmetatable

local FLUSH_INTERVAL_S = 1
local DEFAULT_DICT     = "auth_router"
local METRICS_DICT     = "auth_router_metrics"
local PREFIX           = "auth-router:m:"
local COUNTER_PREFIX   = PREFIX .. "c:"     -- .. stats name: node-wide sum
local GAUGE_PREFIX     = PREFIX .. "g:"     -- .. stats name .. ":" .. worker id
local ROUTE_PREFIX     = PREFIX .. "r:"     -- .. route name: node-wide sum
local ROUTE_COUNT      = PREFIX .. "rn"     -- route names registered so far
local ROUTE_NAME       = PREFIX .. "rn:"    -- .. n: the n-th route name (1-based)
local ROUTE_KNOWN      = PREFIX .. "rk:"    -- .. route name: its registration
local GAUGES           = { live_slots = true, log_queue_bytes = true }
local CONTENT_TYPE     = "text/plain; version=0.0.4; charset=utf-8"

local _M = {
  FLUSH_INTERVAL_S = FLUSH_INTERVAL_S,
  CONTENT_TYPE     = CONTENT_TYPE,
}

-- What this worker has added to the dict so far: stats counter by name,
-- and each plugin's route counts by route index (a plugin that goes with
-- the garbage collector takes at most one interval of decisions with it).
local flushed        = {}
local flushed_routes = setmetatable({}, { __mode = "k" })
local registered     = {}   -- route names this worker registered (checked every flush)
local started        = false
local flush_failed_logged = false


local function worker_id()
  local id = ngx.worker.id()
  if id then
    return tostring(id)
  end
  return "pid" .. ngx.worker.pid()
end


--- dict_name() -> name of the dict the metrics go through, or nil
-- "auth_router_metrics" when that dict exists. Else, `names`: the
-- `auth.shared_dict` of the configs in force (default: those of this
-- worker's compiled configs). The one of them that exists ("auth_router"
-- first when several do, else the first by name); nil when none does. With
-- no config at all (a Kong worker that has not compiled one yet),
-- "auth_router" if that dict exists. Every worker and the Admin API pick by
-- the same rule.
function _M.dict_name(names)
  if ngx.shared[METRICS_DICT] then
    return METRICS_DICT
  end
  if not names then
    names = {}
    for _, plan in require("auth_router").plans() do
      names[#names + 1] = plan.dict_name
    end
  end
  if #names == 0 then
    return ngx.shared[DEFAULT_DICT] and DEFAULT_DICT or nil
  end
  local best
  for _, name in ipairs(names) do
    if ngx.shared[name] and (name == DEFAULT_DICT or not best
                             or (best ~= DEFAULT_DICT and name < best)) then
      best = name
    end
  end
  return best
end


-- The route list in the dict: ROUTE_COUNT names, ROUTE_NAME .. i each, and
-- ROUTE_KNOWN .. name -> i for each name listed.
local function register_route(dict, name)
  if registered[name] then
    return true
  end
  -- Claim the name first: of several workers registering it at once, one
  -- appends it to the list.
  local ok, err = dict:add(ROUTE_KNOWN .. name, 0)
  if ok then
    local n
    n, err = dict:incr(ROUTE_COUNT, 1, 0)
    if not n then
      dict:delete(ROUTE_KNOWN .. name)
      return nil, err
    end
    ok, err = dict:set(ROUTE_NAME .. n, name)
    if ok then
      ok, err = dict:set(ROUTE_KNOWN .. name, n)
    end
    if not ok then
      dict:delete(ROUTE_KNOWN .. name)
      return nil, err
    end
  elseif err ~= "exists" then
    return nil, err
  end
  registered[name] = true
  return true
end


-- A dict that evicts (the cache dict, when full) may have dropped part of
-- the route list: a name whose entries no longer agree is registered again
-- on this flush. Nothing is lost but the counts already evicted.
local function check_registrations(dict)
  for name in pairs(registered) do
    local i = dict:get(ROUTE_KNOWN .. name)
    -- 0: another worker is between its claim and its append
    if type(i) ~= "number" or (i ~= 0 and dict:get(ROUTE_NAME .. i) ~= name) then
      if i ~= nil then
        dict:delete(ROUTE_KNOWN .. name)
      end
      registered[name] = nil
    end
  end
end


--- flush(dict) -> true | nil, err
-- Adds this worker's counts since its last flush to the dict and sets its
-- gauges. Context: any where ngx.shared works (timers, request phases).
function _M.flush(dict)
  local wid = worker_id()
  local err
  check_registrations(dict)
  for name, value in pairs(native.stats()) do
    if GAUGES[name] then
      local ok, serr = dict:set(GAUGE_PREFIX .. name .. ":" .. wid, value)
      if not ok then
        err = serr
      end
    else
      local delta = value - (flushed[name] or 0)
      if delta ~= 0 then
        local ok, ierr = dict:incr(COUNTER_PREFIX .. name, delta, 0)
        if ok then
          flushed[name] = value
        else
          err = ierr -- kept in `flushed` as is: added on a later flush
        end
      end
    end
  end
  for plugin in require("auth_router").plans() do
    local seen = flushed_routes[plugin]
    if not seen then
      seen = {}
      flushed_routes[plugin] = seen
    end
    for i, pair in ipairs(plugin:route_counts()) do
      local name, value = pair[1], pair[2]
      local delta = value - (seen[i] or 0)
      local ok, rerr = true, nil
      if value > 0 then   -- listed once it has decisions, again if evicted
        ok, rerr = register_route(dict, name)
      end
      if ok and delta ~= 0 then
        ok, rerr = dict:incr(ROUTE_PREFIX .. name, delta, 0)
        if ok then
          seen[i] = value
        end
      end
      if not ok then
        err = rerr
      end
    end
  end
  if err then
    return nil, "cannot flush auth-router metrics to the shared dict: " .. tostring(err)
  end
  return true
end


-- The timer's callback: also runs once more when the worker exits
-- (premature), so a reload or shutdown loses nothing since the last flush.
local function flush_now()
  local name = _M.dict_name()
  local dict = name and ngx.shared[name]
  if not dict then
    return
  end
  local ok, res, err = pcall(_M.flush, dict)
  if not ok then
    err = tostring(res)
  end
  if err and not flush_failed_logged then
    flush_failed_logged = true -- once per worker: a full dict fails every second
    ngx.log(ngx.WARN, "[auth-router] ", err)
  end
end


--- start() -> true | nil, err
-- Starts this worker's flush timer (every FLUSH_INTERVAL_S; a last flush
-- when the worker exits). Idempotent. Context: init_worker.
function _M.start()
  if started then
    return true
  end
  local ok, err = ngx.timer.every(FLUSH_INTERVAL_S, flush_now)
  if not ok then
    return nil, "cannot start the auth-router metrics timer: " .. tostring(err)
  end
  started = true
  return true
end


-- This worker's routing decisions summed by route name.
local function local_routes()
  local by_name = {}
  for plugin in require("auth_router").plans() do
    for _, pair in ipairs(plugin:route_counts()) do
      by_name[pair[1]] = (by_name[pair[1]] or 0) + pair[2]
    end
  end
  return by_name
end


local function sorted_pairs(by_name)
  local list = {}
  for name, n in pairs(by_name) do
    list[#list + 1] = { name, n }
  end
  sort(list, function(a, b) return a[1] < b[1] end)
  return list
end


--- render([names]) -> text
-- The node's metrics (this worker's only when there is no dict). `names`:
-- the `auth.shared_dict` of the configs in force, when the caller knows
-- them better than this worker (the Admin API reads them from Kong's
-- plugins); see dict_name(). Context: request phases, timers.
function _M.render(names)
  local name = _M.dict_name(names)
  local dict = name and ngx.shared[name]
  if not dict then
    local configured = names and names[1]
    if not configured then
      local iter, state = require("auth_router").plans()
      local _, plan = iter(state)
      configured = plan and plan.dict_name
    end
    local comments = {
      "auth-router: no lua_shared_dict '" .. (configured or DEFAULT_DICT) .. "': these are the counters of "
        .. "the worker that answered (pid " .. ngx.worker.pid() .. ") only, not of the node",
    }
    return native.render_metrics(native.stats(), sorted_pairs(local_routes()), false, comments)
  end

  local ok, err = _M.flush(dict)
  local comments = {
    "auth-router: node-wide (workers: " .. ngx.worker.count() .. ", shared dict '" .. name
      .. "'); each worker adds its counts every " .. FLUSH_INTERVAL_S .. " s",
  }
  if not ok then
    comments[#comments + 1] = err
  end

  local values = {}
  local nworkers = ngx.worker.count()
  for stat in pairs(native.stats()) do
    if GAUGES[stat] then
      local sum = 0
      for id = 0, nworkers - 1 do
        sum = sum + (dict:get(GAUGE_PREFIX .. stat .. ":" .. id) or 0)
      end
      values[stat] = sum
    else
      values[stat] = dict:get(COUNTER_PREFIX .. stat) or 0
    end
  end

  local routes = {}
  for i = 1, dict:get(ROUTE_COUNT) or 0 do
    local route = dict:get(ROUTE_NAME .. i)
    if route then
      routes[route] = dict:get(ROUTE_PREFIX .. route) or 0
    end
  end
  return native.render_metrics(values, sorted_pairs(routes), true, comments)
end


--- serve() -- answers the current request with the metrics.
-- Context: content_by_lua*.
function _M.serve()
  local ok, text = pcall(_M.render)
  if not ok then
    ngx.log(ngx.ERR, "[auth-router] cannot render metrics: ", tostring(text))
    ngx.status = 500
    ngx.header["Content-Type"] = "text/plain; charset=utf-8"
    ngx.print("cannot render metrics\n")
    return ngx.exit(500)
  end
  ngx.status = 200
  ngx.header["Content-Type"] = CONTENT_TYPE
  ngx.print(text)
  return ngx.exit(200)
end


return _M
