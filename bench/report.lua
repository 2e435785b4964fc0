-- Tables of the bench suite (bench/run.sh, bench/kong.sh, bench/suite.sh).
--
--   luajit bench/report.lua table RUNS.csv BASELINE "v1 v2 ..."
--       per variant: worker CPU us/request (median over rounds, min - max),
--       what it adds over BASELINE as the median and min - max of the paired
--       differences (variant - baseline within each round), req/s and p99
--   luajit bench/report.lua targets NGINX.csv KONG.csv|- CRITERION_DIR|- MEMORY.txt|-
--       the issue #11 targets (and issue #10's l3 vs miss), each met / not met, from the same run
--
-- RUNS.csv: round,variant,requests,duration_us,cpu_ns,utime_ticks,stime_ticks,p50_us,p99_us

local function load(path)
  local runs, rounds, seen = {}, {}, {}
  local f = assert(io.open(path, "rb"))
  local header = true
  for line in f:lines() do
    if header then
      header = false
    else
      local r, v, req, dur, ns, _, _, p50, p99 = line:match(
        "^(%d+),([%w%-]+),(%d+),(%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%d+),(%d+)$")
      assert(r, "bad line in " .. path .. ": " .. line)
      r = tonumber(r)
      runs[v] = runs[v] or {}
      runs[v][r] = {
        cpu_us = tonumber(ns) / 1000 / tonumber(req),
        rps    = tonumber(req) / (tonumber(dur) / 1e6),
        p50_us = tonumber(p50),
        p99_us = tonumber(p99),
      }
      if not seen[r] then
        seen[r] = true
        rounds[#rounds + 1] = r
      end
    end
  end
  f:close()
  table.sort(rounds)
  return { runs = runs, rounds = rounds }
end

local function median(t)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

local function minmax(t)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(t) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return lo, hi
end

local function column(d, v, field)
  local out = {}
  for _, r in ipairs(d.rounds) do
    local run = d.runs[v] and d.runs[v][r]
    if run then out[#out + 1] = run[field] end
  end
  return out
end

-- Paired differences a - b of worker CPU us/request, one per round with both.
local function paired(d, a, b)
  local out = {}
  for _, r in ipairs(d.rounds) do
    local x, y = d.runs[a] and d.runs[a][r], d.runs[b] and d.runs[b][r]
    if x and y then out[#out + 1] = x.cpu_us - y.cpu_us end
  end
  return out
end

local function diff(d, a, b) -- median, min, max of the paired differences a - b
  local p = paired(d, a, b)
  if #p == 0 then return nil end
  local lo, hi = minmax(p)
  return median(p), lo, hi, #p
end

local mode = arg[1]

if mode == "table" then
  local d, baseline, order = load(arg[2]), arg[3], arg[4]
  print(string.format("| variant | worker CPU us/req (median) | min - max | adds vs %s: median of paired differences"
    .. " | min - max of paired differences | req/s | p99 ms |", baseline))
  print("|---|---:|---:|---:|---:|---:|---:|")
  for v in order:gmatch("%S+") do
    local cpu = column(d, v, "cpu_us")
    if #cpu > 0 then
      local lo, hi = minmax(cpu)
      local dm, dlo, dhi = diff(d, v, baseline)
      local adds, range = "-", "-"
      if v ~= baseline and dm then
        adds = string.format("%+.2f", dm)
        range = string.format("%+.2f .. %+.2f", dlo, dhi)
      end
      print(string.format("| %s | %.2f | %.2f - %.2f | %s | %s | %.0f | %.2f |", v, median(cpu), lo, hi,
        adds, range, median(column(d, v, "rps")), median(column(d, v, "p99_us")) / 1000))
    end
  end
  return
end

assert(mode == "targets", "usage: report.lua table ... | targets ...")
local nginx = load(arg[2])
local kong = arg[3] ~= "-" and io.open(arg[3]) and load(arg[3]) or nil
local crit_dir = arg[4] ~= "-" and arg[4] or nil
local mem_path = arg[5] ~= "-" and arg[5] or nil

local rows = {}
local function row(target, measured, met)
  local verdict = "n/a (not measured)"
  if met ~= nil then verdict = met and "**met**" or "**not met**" end
  rows[#rows + 1] = string.format("| %s | %s | %s |", target, measured, verdict)
end
local function fmt_diff(m, lo, hi)
  return string.format("%+.2f us (%+.2f .. %+.2f)", m, lo, hi)
end

local hit, hlo, hhi = diff(nginx, "hit", "emptylua")
local peer = diff(nginx, "lua-hit", "emptylua")
if hit then
  row("`hit` adds <= 3 us over `emptylua`", fmt_diff(hit, hlo, hhi), hit <= 3)
end
if hit and peer then
  row("`hit` adds <= 0.8x what `lua-hit` adds", string.format("%.2f / %.2f = %.2fx", hit, peer, hit / peer),
      peer > 0 and hit / peer <= 0.8)
end
local h1k, h1lo, h1hi = diff(nginx, "hit-1000", "hit")
if h1k then
  row("`hit-1000` costs <= 1 us more than `hit` (20 routes)", fmt_diff(h1k, h1lo, h1hi), h1k <= 1)
end
local log1k, llo, lhi = diff(nginx, "log1k", "emptylua")
local lpeer = diff(nginx, "lua-log1k", "emptylua")
if log1k then
  row("`log1k` adds <= 10 us over `emptylua`", fmt_diff(log1k, llo, lhi), log1k <= 10)
end
if log1k and lpeer then
  row("`log1k` adds <= 0.5x what `lua-log1k` adds",
      string.format("%.2f / %.2f = %.2fx", log1k, lpeer, log1k / lpeer), lpeer > 0 and log1k / lpeer <= 0.5)
end
-- The same two targets over `emptylua-log1k` (the emptylua server sent the
-- same POSTs): what the plugin adds, without what nginx itself spends
-- reading, proxying and sending the 1 KiB bodies, which `emptylua` (a GET
-- with no body) does not pay.
local body_floor = diff(nginx, "emptylua-log1k", "emptylua")
local lb, lblo, lbhi = diff(nginx, "log1k", "emptylua-log1k")
local pb = diff(nginx, "lua-log1k", "emptylua-log1k")
if lb and body_floor then
  row(string.format("`log1k` adds <= 10 us over `emptylua-log1k` (the same requests, no plugin; "
                    .. "itself %+.2f us over `emptylua`)", body_floor), fmt_diff(lb, lblo, lbhi), lb <= 10)
end
if lb and pb then
  row("`log1k` adds <= 0.5x what `lua-log1k` adds, both over `emptylua-log1k`",
      string.format("%.2f / %.2f = %.2fx", lb, pb, lb / pb), pb > 0 and lb / pb <= 0.5)
end
local l2 = diff(nginx, "l2", "emptylua")
if l2 and hit then
  row("`l2` adds <= 2x what `hit` adds", string.format("%.2f / %.2f = %.2fx", l2, hit, l2 / hit),
      hit > 0 and l2 / hit <= 2)
end
local l3, l3lo, l3hi = diff(nginx, "l3", "miss")
if l3 then
  local miss = diff(nginx, "miss", "emptylua")
  row("issue #10: an `l3` miss (Redis answers) costs the gateway less than a `miss` (auth call)",
      string.format("%s against `miss`%s", fmt_diff(l3, l3lo, l3hi),
                    miss and miss > 0 and string.format(" (%.2fx its cost over `emptylua`)",
                                                        (miss + l3) / miss) or ""), l3 < 0)
end

local function criterion_median_ns(id)
  if not crit_dir then return nil end
  local f = io.open(crit_dir .. "/" .. id .. "/new/estimates.json", "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local ok, doc = pcall(require("cjson").decode, text)
  return ok and doc.median and doc.median.point_estimate or nil
end
local c1k, c1m = criterion_median_ns("l1_lookup/hit/1000"), criterion_median_ns("l1_lookup/hit/1000000")
if c1k and c1m then
  row("L1 lookup at 1M entries <= 1.5x at 1k (criterion medians)",
      string.format("%.0f ns / %.0f ns = %.2fx", c1m, c1k, c1m / c1k), c1m / c1k <= 1.5)
else
  row("L1 lookup at 1M entries <= 1.5x at 1k", "no criterion estimates", nil)
end

local mem = mem_path and io.open(mem_path) and io.open(mem_path):read("*a") or ""
local overhead, total, fields = mem:match("overhead_per_entry=([%d%.]+)"), mem:match("bytes_per_entry=([%d%.]+)"),
                                mem:match("field_bytes_per_entry=([%d%.]+)")
if overhead then
  row("<= 300 bytes per L1 entry beyond the account's field data (1M entries)",
      string.format("%s B/entry = %s B field data + **%s B** overhead", total, fields, overhead),
      tonumber(overhead) <= 300)
else
  row("<= 300 bytes per L1 entry beyond field data", "no measurement", nil)
end

if kong then
  local ar, alo, ahi = diff(kong, "kong-auth-router", "kong-none")
  local ka, klo, khi = diff(kong, "kong-key-auth", "kong-none")
  if ar and ka then
    row("Kong: `kong-auth-router` adds less than `kong-key-auth` (both over `kong-none`)",
        string.format("%s vs %s", fmt_diff(ar, alo, ahi), fmt_diff(ka, klo, khi)), ar < ka)
  end
  local a1k, a1lo, a1hi = diff(kong, "kong-auth-router-1000", "kong-auth-router")
  if a1k then
    row("Kong: `kong-auth-router-1000` costs <= 1 us more than `kong-auth-router` (20 routes)",
        fmt_diff(a1k, a1lo, a1hi), a1k <= 1)
  end
else
  row("Kong: auth-router's hit adds less than key-auth alone", "Kong variants not run", nil)
end

print("| target | measured (median of paired differences, min .. max) | result |")
print("|---|---|---|")
for _, r in ipairs(rows) do print(r) end
