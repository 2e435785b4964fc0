-- Bench-only: the Lua peer of benches/redact.rs and benches/logrec.rs. It does
-- the log-record work the way a pure-Lua plugin with lua-cjson would, on the
-- same bodies, and prints nanoseconds per operation. bench/micro.sh runs it
-- next to the criterion benches; it is never installed or used elsewhere.
--
--   luajit bench/serialize_peer.lua [RESULTS.tsv]
--
-- Cases (the Rust bench each one mirrors in brackets):
--   redact/1KiB, redact/64KiB   [redact_json/streaming/*]
--     cjson.decode the body, replace the value of every key named like one of
--     FIELDS (ASCII case-insensitive, at any depth) with "[REDACTED]",
--     cjson.encode the result.
--   logrec/1KiB, logrec/64KiB, logrec/100_headers_no_body   [logrec_write/*]
--     build a design §3 record table (headers grouped as ngx.req.get_headers
--     groups them, both bodies as strings, account, auth, route, upstream,
--     latencies)
--     and cjson.encode it.
--
-- Timing: os.clock (process CPU time). Per case: PEER_WARMUP_SECONDS of
-- unmeasured calls, then PEER_SAMPLES samples that together take about
-- PEER_SECONDS; each sample starts after a full GC and is a plain loop of N
-- calls, so the garbage a call makes is collected (and paid for) inside the
-- samples. Reported: the median sample's ns per call, and min - max.
--
-- Environment (defaults): PEER_WARMUP_SECONDS (1), PEER_SECONDS (3),
-- PEER_SAMPLES (15).
-- With RESULTS.tsv, also writes "id<TAB>median_ns<TAB>min_ns<TAB>max_ns<TAB>calls"
-- per case, for bench/micro.sh's summary.

local cjson = require "cjson"

local clock   = os.clock
local concat  = table.concat
local sort    = table.sort
local lower   = string.lower
local find    = string.find
local pairs   = pairs
local type    = type
local decode  = cjson.decode
local encode  = cjson.encode

local WARMUP_S = tonumber(os.getenv("PEER_WARMUP_SECONDS") or "") or 1
local TOTAL_S  = tonumber(os.getenv("PEER_SECONDS") or "") or 3
local SAMPLES  = tonumber(os.getenv("PEER_SAMPLES") or "") or 15

local SIZES  = { { 1024, "1KiB" }, { 64 * 1024, "64KiB" } }
local MASK   = "[REDACTED]"
local SECRET = "s3cr3t-Value"
-- benches/redact.rs FIELDS, as a set of lowercase names.
local FIELDS = { password = true, api_key = true, token = true }


local function count(haystack, needle)
  local n, at = 0, 1
  while true do
    local s, e = find(haystack, needle, at, true)
    if not s then
      return n
    end
    n, at = n + 1, e + 1
  end
end


---------------------------------------------------------------------------
-- Bodies: byte for byte the ones the Rust benches build.

-- benches/redact.rs item(): raw Rust string, so \" and \u00e9 are JSON
-- escapes in the text, and the line breaks and indentation are part of it.
local function redact_item(i, secret)
  local credentials = "null"
  if secret then
    credentials = '{"password": "' .. SECRET .. '", "token": {"value": "' .. SECRET
      .. '", "exp": 1732230000}}'
  end
  return '{"id": ' .. i .. ', "name": "user ' .. i .. ' \\"quoted\\" caf\\u00e9 \226\156\147", "active": '
    .. tostring(i % 2 == 0) .. ', "score": ' .. (i * 7) .. '.5e-1,\n'
    .. '  "profile": {"email": "user' .. i .. '@example.com", "tags": ["a", "b", "c"],\n'
    .. '    "settings": {"theme": "dark", "credentials": ' .. credentials .. '}}}'
end

-- benches/redact.rs body(): about `size` bytes, secrets in the first, middle
-- and last item and one near the top. Returns the text and its secret count.
local function redact_body(size)
  local head = '{"request_id": "8c1d0f2a", "auth": {"api_key": "' .. SECRET .. '"}, "items": ['
  local n, plain = 1, #redact_item(0, false) + 2
  while #head + plain < size do
    plain = plain + #redact_item(n, false) + 2
    n = n + 1
  end
  local items, mid = {}, math.floor(n / 2)
  for i = 0, n - 1 do
    items[i + 1] = redact_item(i, i == 0 or i == mid or i == n - 1)
  end
  local text = head .. concat(items, ", ") .. "]}"
  return text, count(text, SECRET)
end

-- benches/logrec.rs json_body(): a JSON text body of exactly `len` bytes.
local function logrec_body(len)
  local item = '{"id":12345,"to":"someone@example.com","subject":"Hello","tags":["a","b"]},'
  local parts, n = { "[" }, 1
  while n + #item < len do
    parts[#parts + 1] = item
    n = n + #item
  end
  parts[#parts + 1] = "null"
  n = n + 4
  if n < len - 1 then
    parts[#parts + 1] = string.rep(" ", len - 1 - n)
  end
  parts[#parts + 1] = "]"
  return concat(parts)
end

-- benches/logrec.rs REQ_HEADERS / RESP_HEADERS, as flat name, value lists.
local REQ_HEADERS = {
  "host", "api.example.com",
  "user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
  "accept", "application/json",
  "accept-encoding", "gzip, deflate, br",
  "accept-language", "en-US,en;q=0.9",
  "authorization", "REDACTED",
  "content-type", "application/json",
  "content-length", "1024",
  "x-request-id", "8c1d0f2a-1b2c-4d5e-8f90-0a1b2c3d4e5f",
  "x-forwarded-for", "203.0.113.9",
  "x-api-version", "v3",
  "cookie", "REDACTED",
}

local RESP_HEADERS = {
  "content-type", "application/json; charset=utf-8",
  "content-length", "1024",
  "date", "Fri, 22 Nov 2024 00:00:00 GMT",
  "server", "upstream",
  "cache-control", "no-store",
  "set-cookie", "REDACTED",
  "set-cookie", "REDACTED",
  "x-account-id", "acc_123",
}

local MANY_HEADERS = {}
for i = 0, 99 do
  MANY_HEADERS[#MANY_HEADERS + 1] = string.format("x-header-%03d", i)
  MANY_HEADERS[#MANY_HEADERS + 1] = "value"
end


---------------------------------------------------------------------------
-- The work.

-- Mask in place: objects by key (ASCII case-insensitive), arrays by index.
-- cjson.decode gives objects no array part, so #t > 0 means an array.
local function mask(t)
  local n = #t
  if n > 0 then
    for i = 1, n do
      local v = t[i]
      if type(v) == "table" then
        mask(v)
      end
    end
    return
  end
  for k, v in pairs(t) do
    if FIELDS[lower(k)] then
      t[k] = MASK
    elseif type(v) == "table" then
      mask(v)
    end
  end
end

local function redact(body)
  local doc = decode(body)
  mask(doc)
  return encode(doc)
end

-- Headers as ngx.req.get_headers() / ngx.resp.get_headers() hand them over:
-- a name sent once maps to its value, several times to an array of values.
local function group_headers(list)
  local h = {}
  for i = 1, #list, 2 do
    local name, value = list[i], list[i + 1]
    local seen = h[name]
    if seen == nil then
      h[name] = value
    elseif type(seen) == "table" then
      seen[#seen + 1] = value
    else
      h[name] = { seen, value }
    end
  end
  return h
end

-- The same exchange benches/logrec.rs record() describes. `body` may be nil
-- (no body captured: the four body keys are left out).
local function record(body, req_headers, resp_headers)
  local size = body and #body or 0
  local req = {
    method = "POST",
    uri = "/v3/messages/send?priority=high",
    size = size + 600,
    headers = group_headers(req_headers),
  }
  local resp = {
    status = 200,
    size = size + 300,
    headers = group_headers(resp_headers),
  }
  if body then
    req.body, req.body_encoding, req.body_size, req.body_truncated = body, "utf8", size, false
    resp.body, resp.body_encoding, resp.body_size, resp.body_truncated = body, "utf8", size, false
  end
  return encode({
    started_at = 1732230000123,
    client_ip = "203.0.113.9",
    request_id = "8c1d0f2a-1b2c-4d5e-8f90-0a1b2c3d4e5f",
    request = req,
    response = resp,
    account = { id = "acc_123" },
    auth = { cache = "hit", latency_ms = 0.012 },
    route = { name = "email", target = "email:8080" },
    upstream = { addr = "10.0.0.7:8080", status = "200" },
    latencies = { request = 12, auth = 0, proxy = 11 },
  })
end


---------------------------------------------------------------------------
-- Timing.

local function loop(n, fn, a, b, c, min_len)
  local t0 = clock()
  for _ = 1, n do
    local out = fn(a, b, c)
    -- As the Rust benches do: check, inside the timed loop, that the call
    -- did its work.
    if #out < min_len then
      error("short output: " .. #out)
    end
  end
  return clock() - t0
end

local function measure(fn, a, b, c, min_len)
  -- Warm-up, which also finds how many calls take about one sample's time.
  local n, spent, calls = 1, 0, 0
  while spent < WARMUP_S do
    local dt = loop(n, fn, a, b, c, min_len)
    spent, calls = spent + dt, calls + n
    if dt < 0.05 then
      n = n * 2
    end
  end
  local per_sample = math.max(1, math.floor(TOTAL_S / SAMPLES / (spent / calls)))
  local ns = {}
  for s = 1, SAMPLES do
    collectgarbage("collect")
    ns[s] = loop(per_sample, fn, a, b, c, min_len) / per_sample * 1e9
  end
  sort(ns)
  local median = SAMPLES % 2 == 1 and ns[(SAMPLES + 1) / 2]
    or (ns[SAMPLES / 2] + ns[SAMPLES / 2 + 1]) / 2
  return median, ns[1], ns[SAMPLES], per_sample * SAMPLES
end


---------------------------------------------------------------------------
-- Main.

local tsv = arg[1] and assert(io.open(arg[1], "wb"))

print(string.format("%s, lua-cjson %s; os.clock; warm-up %gs, %d samples over ~%gs per case",
  jit and jit.version or _VERSION, cjson._VERSION or "?", WARMUP_S, SAMPLES, TOTAL_S))
print(string.format("%-32s %8s %12s %25s %10s", "case", "bytes", "ns/op (med)", "min - max", "calls"))

local function report(id, bytes, fn, a, b, c, min_len)
  local med, lo, hi, calls = measure(fn, a, b, c, min_len)
  print(string.format("%-32s %8d %12.0f %25s %10d", id, bytes, med,
    string.format("%.0f - %.0f", lo, hi), calls))
  if tsv then
    tsv:write(string.format("%s\t%.1f\t%.1f\t%.1f\t%d\n", id, med, lo, hi, calls))
    tsv:flush()
  end
end

local cut_note
for _, sz in ipairs(SIZES) do
  local size, label = sz[1], sz[2]
  local body, secrets = redact_body(size)
  -- Check once, outside the loop, that the peer masks what Rust masks.
  local out = redact(body)
  assert(secrets >= 5, "too few secrets in the body")
  assert(not find(out, SECRET, 1, true), "a secret survived")
  assert(count(out, MASK) == secrets, "masked " .. count(out, MASK) .. " of " .. secrets)
  report("redact/" .. label, #body, redact, body, nil, nil, #out)

  if not cut_note then
    -- The functional difference: a body cut by max_body_bytes is not JSON,
    -- and cjson refuses it, so this peer cannot mask it at all. Cut just
    -- after the last secret starts.
    local last = 1
    for at in body:gmatch("()" .. SECRET:gsub("%-", "%%-")) do
      last = at
    end
    local ok, err = pcall(decode, body:sub(1, last + 3))
    cut_note = string.format("note: the %d-byte body cut at %d bytes (inside the last secret): cjson.decode %s",
      #body, last + 3, ok and "succeeded" or ("fails: " .. tostring(err)))
  end
end

for _, sz in ipairs(SIZES) do
  local len, label = sz[1], sz[2]
  local body = logrec_body(len)
  assert(#body == len)
  local out = record(body, REQ_HEADERS, RESP_HEADERS)
  local back = decode(out)
  assert(back.request.body == body and back.response.body == body, "body did not round-trip")
  assert(type(back.response.headers["set-cookie"]) == "table", "repeated header not grouped")
  report("logrec/" .. label, 2 * len, record, body, REQ_HEADERS, RESP_HEADERS, 2 * len)
end

do
  local out = record(nil, MANY_HEADERS, RESP_HEADERS)
  assert(decode(out).request.headers["x-header-099"] == "value")
  report("logrec/100_headers_no_body", 0, record, nil, MANY_HEADERS, RESP_HEADERS, 100 * 20)
end

print(cut_note)
if tsv then
  tsv:close()
end
