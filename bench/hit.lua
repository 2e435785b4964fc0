-- wrk script for bench/run.sh: GET /send with a handful of credentials in
-- turn (`Authorization: Bearer good-u1` .. `good-u<N>`, N from the
-- BENCH_CREDENTIALS environment variable, default 8), requests prebuilt once.
-- At the end prints one machine-readable line:
--   BENCH_RESULT requests=<n> duration_us=<n> p50_us=<n> p99_us=<n> errors=<n> non2xx=<n>

local N = tonumber(os.getenv("BENCH_CREDENTIALS") or "8") or 8

local requests = {}
local i = 0

function init(args)
  for k = 1, N do
    requests[k] = wrk.format("GET", "/send", {
      ["Host"] = "bench",
      ["Authorization"] = "Bearer good-u" .. k,
    })
  end
end

function request()
  i = i % N + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
