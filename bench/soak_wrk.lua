-- wrk script for scripts/soak.sh (`make soak`): a mixed load against the
-- demo-like gateway and the spec mocks (spec/fixtures/mocks.lua tokens).
-- Every 100 requests of a thread:
--   60  GET, cached credential (good-hit<k>, k = 1..64): L1 / L2 hits
--   10  POST of a 1 KiB JSON body with a "password" field, cached credential:
--       request and response bodies logged, the field redacted
--   10  GET, a new credential each time (good-n<thread>x<n>): a miss, an
--       auth call, a new cache entry
--    5  GET, a new unknown credential each time (bad-<thread>x<n>): the auth
--       service's 401, cached as a denial
--    5  GET, `forbid`: 403 (a cached denial)
--    5  GET, `deny`: 401 (a cached denial)
--    5  GET without a credential: 401 at the edge
-- Statuses are counted per thread; done() prints one machine-readable line:
--   SOAK_RESULT requests=<n> s200=<n> s401=<n> s403=<n> other=<n> errors=<n>
--               rps=<n> p99_us=<n>
-- Environment: SOAK_THREAD_BASE: a prefix making new credentials unique
-- across wrk runs of one soak; SOAK_DELAY_MS: each connection waits this long
-- before each request (paces the load; 0: as fast as possible).

local BASE = os.getenv("SOAK_THREAD_BASE") or "r"
local DELAY_MS = tonumber(os.getenv("SOAK_DELAY_MS") or "0") or 0

local threads = {}
local n_threads = 0

function setup(thread)
  n_threads = n_threads + 1
  thread:set("tid", BASE .. n_threads)
  threads[#threads + 1] = thread
end

-- per thread state; the counters are globals so that done() can read them
-- with thread:get(), and `tid` is set by setup() with thread:set()
local i = 0
local fresh = 0
local body
c200, c401, c403, other = 0, 0, 0, 0

function init()
  local pad = string.rep("a", 1024 - 80)
  body = '{"user":"soak","password":"hunter2","note":"' .. pad .. '"}'
end

local function get(path, token)
  local headers = { ["Host"] = "soak" }
  if token then
    headers["Authorization"] = "Bearer " .. token
  end
  return wrk.format("GET", path, headers)
end

function request()
  i = i + 1
  local slot = i % 100
  local k = i % 64 + 1
  if slot < 60 then
    return get((slot % 2 == 0) and "/send?i=" .. i or "/events?i=" .. i, "good-hit" .. k)
  elseif slot < 70 then
    return wrk.format("POST", "/send/post", {
      ["Host"] = "soak",
      ["Authorization"] = "Bearer good-hit" .. k,
      ["Content-Type"] = "application/json",
    }, body)
  elseif slot < 80 then
    fresh = fresh + 1
    return get("/events/new", "good-n" .. tid .. "x" .. fresh)
  elseif slot < 85 then
    fresh = fresh + 1
    return get("/send/bad", "bad-" .. tid .. "x" .. fresh)
  elseif slot < 90 then
    return get("/send/forbid", "forbid")
  elseif slot < 95 then
    return get("/send/deny", "deny")
  end
  return get("/send/anonymous", nil)
end

if DELAY_MS > 0 then
  function delay()
    return DELAY_MS
  end
end

function response(status)
  if status == 200 then
    c200 = c200 + 1
  elseif status == 401 then
    c401 = c401 + 1
  elseif status == 403 then
    c403 = c403 + 1
  else
    other = other + 1
    if other <= 3 then
      io.write("SOAK_UNEXPECTED status=", status, "\n")
    end
  end
end

function done(summary, latency)
  local t = { s200 = 0, s401 = 0, s403 = 0, other = 0 }
  for _, thread in ipairs(threads) do
    t.s200 = t.s200 + thread:get("c200")
    t.s401 = t.s401 + thread:get("c401")
    t.s403 = t.s403 + thread:get("c403")
    t.other = t.other + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    "SOAK_RESULT requests=%d s200=%d s401=%d s403=%d other=%d errors=%d rps=%d p99_us=%d\n",
    summary.requests, t.s200, t.s401, t.s403, t.other,
    e.connect + e.read + e.write + e.timeout, summary.requests / (summary.duration / 1e6),
    latency:percentile(99)))
end
