-- wrk script for bench/run.sh and bench/kong.sh: one request shape per run,
-- cycling through credentials `Authorization: Bearer <prefix><k>`, k = 1..N,
-- requests prebuilt once. Environment:
--   BENCH_CREDENTIALS   N (8)
--   BENCH_TOKEN_PREFIX  token prefix ("good-u"; "nostore-u": never cached)
--   BENCH_FIRST         the credential k the run starts with (1); bench/run.sh
--                       continues each cache-tier variant where its last run
--                       stopped, so that a run never starts on a credential
--                       the previous one left in a cache
--   BENCH_METHOD        GET or POST (GET)
--   BENCH_PATH          request path ("/send")
--   BENCH_BODY_BYTES    > 0: a JSON body of that many bytes (bench/bodies.lua,
--                       loaded from BENCH_DIR) and Content-Type: application/json
--   BENCH_APIKEY        1: also `apikey: key-u<k>` (Kong key-auth's credential)
-- At the end prints one machine-readable line:
--   BENCH_RESULT requests=<n> duration_us=<n> p50_us=<n> p99_us=<n> errors=<n> non2xx=<n>

local N      = tonumber(os.getenv("BENCH_CREDENTIALS") or "8") or 8
local PREFIX = os.getenv("BENCH_TOKEN_PREFIX") or "good-u"
local METHOD = os.getenv("BENCH_METHOD") or "GET"
local PATH   = os.getenv("BENCH_PATH") or "/send"
local BODY_N = tonumber(os.getenv("BENCH_BODY_BYTES") or "0") or 0
local APIKEY = os.getenv("BENCH_APIKEY") == "1"
local FIRST  = tonumber(os.getenv("BENCH_FIRST") or "1") or 1

local requests = {}
local i = (FIRST - 1) % N

function init()
  local body
  if BODY_N > 0 then
    body = dofile(os.getenv("BENCH_DIR") .. "/bodies.lua").json(BODY_N)
  end
  for k = 1, N do
    local headers = {
      ["Host"] = "bench",
      ["Authorization"] = "Bearer " .. PREFIX .. k,
    }
    if body then
      headers["Content-Type"] = "application/json"
    end
    if APIKEY then
      headers["apikey"] = "key-u" .. k
    end
    requests[k] = wrk.format(METHOD, PATH, headers, body)
  end
end

function request()
  i = i % N + 1
  return requests[i]
end

function done(summary, latency)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end

-- BENCH_DEBUG=1: print the first non-2xx answer (costs wrk a callback per response).
if os.getenv("BENCH_DEBUG") == "1" then
  local shown = false
  function response(status, headers, body)
    if not shown and (status < 200 or status > 299) then
      shown = true
      io.write("BENCH_FIRST_NON2XX status=", status, " body=", tostring(body):sub(1, 300), "\n")
    end
  end
end
