-- bench/run.sh's summary: reads runs.csv, prints Markdown tables.
--   luajit bench/summary.lua runs.csv "a b c" <clock ticks per s> "a=name;b=name;..."
-- Per variant: medians over rounds of worker CPU us/request (total, and the
-- user-mode part from utime), req/s, p50, p99.
-- Ratios from the medians, and the median of the same ratio taken within each
-- round (paired: both runs of a round saw the same machine noise).

local csv_path, order, hz, names_arg = arg[1], arg[2], tonumber(arg[3]) or 100, arg[4] or ""

local names = {}
for k, v in names_arg:gmatch("(%w)=([^;]*);") do
  names[k] = v
end

local variants = {}
for v in order:gmatch("%S+") do
  variants[#variants + 1] = v
end

-- runs[v][round] = { cpu_us, user_us, rps, p50_us, p99_us }
local runs = {}
local rounds = {}
local f = assert(io.open(csv_path, "rb"))
local header = true
for line in f:lines() do
  if header then
    header = false
  else
    local r, v, req, dur, ns, utime, _, p50, p99 = line:match(
      "^(%d+),(%w),(%d+),(%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%d+),(%d+)$")
    assert(r, "bad line in " .. csv_path .. ": " .. line)
    r = tonumber(r)
    runs[v] = runs[v] or {}
    runs[v][r] = {
      cpu_us = tonumber(ns) / 1000 / tonumber(req),
      user_us = tonumber(utime) * 1e6 / hz / tonumber(req),
      rps    = tonumber(req) / (tonumber(dur) / 1e6),
      p50_us = tonumber(p50),
      p99_us = tonumber(p99),
    }
    rounds[r] = true
  end
end
f:close()

local round_list = {}
for r in pairs(rounds) do
  round_list[#round_list + 1] = r
end
table.sort(round_list)

local function median(t)
  local s = {}
  for i = 1, #t do
    s[i] = t[i]
  end
  table.sort(s)
  local n = #s
  if n == 0 then
    return nil
  end
  if n % 2 == 1 then
    return s[(n + 1) / 2]
  end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

local function column(v, field)
  local out = {}
  for _, r in ipairs(round_list) do
    local run = runs[v] and runs[v][r]
    if run then
      out[#out + 1] = run[field]
    end
  end
  return out
end

local function minmax(t)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(t) do
    lo, hi = math.min(lo, x), math.max(hi, x)
  end
  return lo, hi
end

local med = {}
local med_user = {}
print("| variant | worker CPU us/req (median) | min - max | of which user mode | req/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|---:|---:|---:|")
for _, v in ipairs(variants) do
  local cpu = column(v, "cpu_us")
  local lo, hi = minmax(cpu)
  med[v] = median(cpu)
  med_user[v] = median(column(v, "user_us"))
  print(string.format("| %s: %s | %.2f | %.2f - %.2f | %.2f | %.0f | %.3f | %.3f |",
    v, names[v] or v, med[v], lo, hi, med_user[v], median(column(v, "rps")),
    median(column(v, "p50_us")) / 1000, median(column(v, "p99_us")) / 1000))
end
print()

-- Paired: the ratio within each round, then the median over rounds.
local function paired(fn, field)
  local out = {}
  for _, r in ipairs(round_list) do
    local ok, x = pcall(fn, function(v) return runs[v][r][field] end)
    if ok and x == x and x ~= math.huge and x ~= -math.huge then
      out[#out + 1] = x
    end
  end
  return median(out)
end

local function both(label, fn, fmt)
  local of_medians = fn(function(v) return med[v] end)
  local p = paired(fn, "cpu_us")
  local user = fn(function(v) return med_user[v] end)
  print(string.format("| %s | " .. fmt .. " | " .. fmt .. " | " .. fmt .. " |",
    label, of_medians, p or 0 / 0, user))
end

local have = {}
for _, v in ipairs(variants) do
  have[v] = true
end

print("| derived (worker CPU) | from the medians | median of per-round values | user mode only, from the medians |")
print("|---|---:|---:|---:|")
if have.a then
  for _, v in ipairs(variants) do
    if v ~= "a" then
      both(string.format("%s - a, us/req (%s overhead)", v, names[v] or v),
           function(x) return x(v) - x("a") end, "%.2f")
    end
  end
  if have.b then
    both("b / a", function(x) return x("b") / x("a") end, "%.3f")
  end
  if have.c then
    both("c / a", function(x) return x("c") / x("a") end, "%.3f")
  end
  if have.b and have.c then
    both("(b - a) / (c - a): auth-router overhead relative to the Lua peer's",
         function(x) return (x("b") - x("a")) / (x("c") - x("a")) end, "%.3f")
  end
end

-- The ratio of overheads divides by c - a, a small number: say when it is
-- within the baseline's own run-to-run spread.
if have.a and have.b and have.c then
  local lo, hi = minmax(column("a", "cpu_us"))
  if med.c - med.a < hi - lo then
    print()
    print(string.format("Note: c - a (%.2f us) is smaller than the baseline's own min-max spread "
      .. "(%.2f us): the (b - a) / (c - a) ratio is noise-dominated in this run; "
      .. "prefer the user-mode column or more rounds (BENCH_ROUNDS).", med.c - med.a, hi - lo))
  end
end
