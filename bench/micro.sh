#!/usr/bin/env bash
# auth-router micro-benchmarks, in one go:
#   the criterion benches (benches/routing.rs, redact.rs, logrec.rs, cache.rs),
#   bytes per L1 entry at 1M entries (benches/l1_memory.rs), the log
#   record benches' Lua peer (bench/serialize_peer.lua: lua-cjson decode, mask,
#   encode; a design §3 record table through cjson.encode), and the per-call
#   cost of each per-request FFI entry point under LuaJIT (bench/ffi_calls.lua,
#   on the native module of a luarocks tree), then a summary.
#
#   make tree && bash bench/micro.sh
#
# The bench binaries are built first (cargo bench --no-run), so compiling
# never overlaps a measurement. Criterion gets a short, bounded run per
# benchmark (--warm-up-time/--measurement-time; it may stretch a slow one to
# fit its 100 samples) and reports medians; the summary reads them from
# target/criterion/<id>/new/estimates.json, only from files this run wrote.
# The Lua peer runs right after, in the same invocation, so the ratios
# compare numbers taken minutes apart on the same machine state.
#
# Environment (defaults):
#   MICRO_WARMUP_SECONDS   criterion --warm-up-time, and the peer's warm-up (1)
#   MICRO_MEASURE_SECONDS  criterion --measurement-time, and the peer's
#                          measured time per case (3)
#   MICRO_CPU              run every bench pinned to this CPU with taskset
#                          (unset: not pinned)
#   MICRO_OUT              where results.md, peer.tsv, ffi.tsv and the raw logs go (.tmp/micro)
#   AUTH_ROUTER_TREE       luarocks tree with the plugin, for bench/ffi_calls.lua
#                          (.tree, which `make tree` and `make bench` install)
# Total: about 2.5 minutes after the build (16 criterion benchmarks, the 1M-entry
# memory count, 5 peer cases at ~5 s each, 10 FFI entry points at ~1 s each);
# every step runs under `timeout`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

WARMUP_S=${MICRO_WARMUP_SECONDS:-1}
MEASURE_S=${MICRO_MEASURE_SECONDS:-3}
CPU=${MICRO_CPU:-}
OUT=${MICRO_OUT:-$ROOT/.tmp/micro}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TREE=${AUTH_ROUTER_TREE:-$ROOT/.tree}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BENCHES=(routing redact logrec cache)

die() { echo "micro: $*" >&2; exit 1; }
log() { echo "micro: $*" >&2; }

for cmd in cargo luajit timeout; do
  command -v "$cmd" >/dev/null || die "'$cmd' is required"
done
luajit -e 'require "cjson"' 2>/dev/null || die "lua-cjson is required (luajit -e 'require \"cjson\"' failed)"
for n in "$WARMUP_S" "$MEASURE_S"; do
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] || die "MICRO_WARMUP_SECONDS and MICRO_MEASURE_SECONDS must be integers >= 1"
done
# bench/ffi_calls.lua loads the module installed in a tree, as the specs do
# (building one here would rebuild the crate twice: see bench/suite.sh).
[ -f "$TREE/lib/lua/5.1/auth_router_native.so" ] \
  || die "no auth_router_native.so in $TREE/lib/lua/5.1: run 'make tree' or set AUTH_ROUTER_TREE"
TREE=$(cd "$TREE" && pwd)
PIN=()
if [ -n "$CPU" ]; then
  [[ "$CPU" =~ ^[0-9]+$ ]] || die "MICRO_CPU must be a CPU number"
  command -v taskset >/dev/null || die "MICRO_CPU needs taskset"
  PIN=(taskset -c "$CPU")
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"

# Build with the C compiler settings luarocks gives cargo (`make tree` and
# bench/kong.sh build through luarocks): blake3's build script compiles C and
# reruns, rebuilding everything above it, whenever CC or CFLAGS change, so
# without this every `make bench` would rebuild the crate three times.
if command -v luarocks >/dev/null; then
  CC=$(luarocks --lua-version=5.1 config variables.CC 2>/dev/null || echo cc)
  CFLAGS=$(luarocks --lua-version=5.1 config variables.CFLAGS 2>/dev/null || true)
  export CC CFLAGS
fi
log "building the bench binaries"
bench_args=()
for b in "${BENCHES[@]}" l1_memory; do bench_args+=(--bench "$b"); done
timeout 1800 cargo bench --no-default-features "${bench_args[@]}" --no-run 2>&1 | tail -n 4 >&2

MARKER="$OUT/.started"
touch "$MARKER"
sleep 1   # estimates.json files written from now on are strictly newer

STARTED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
  echo "date: $STARTED_UTC"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock 2>/dev/null || echo ' plus uncommitted changes to src/benches/Cargo')"
  echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/\s\+/ /g' || true); kernel $(uname -r)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc: $(rustc --version)"
  echo "luajit: $(luajit -v 2>&1 | cut -d' ' -f1-2); lua-cjson $(luajit -e 'io.write(require("cjson")._VERSION or "?")')"
  echo "criterion: --warm-up-time $WARMUP_S --measurement-time $MEASURE_S; peer: ${WARMUP_S}s warm-up, ${MEASURE_S}s per case"
  echo "ffi: $TREE/lib/lua/5.1/auth_router_native.so, installed $(date -u -r "$TREE/lib/lua/5.1/auth_router_native.so" +%Y-%m-%dT%H:%MZ)"
  echo "pinned: ${CPU:-no}"
} > "$OUT/machine.txt"

for b in "${BENCHES[@]}"; do
  log "criterion: $b"
  timeout 600 "${PIN[@]}" cargo bench --no-default-features --bench "$b" -- \
    --warm-up-time "$WARMUP_S" --measurement-time "$MEASURE_S" --noplot \
    > "$OUT/$b.txt" 2>&1 || { tail -n 20 "$OUT/$b.txt" >&2; die "cargo bench --bench $b failed"; }
  grep -E '^[a-z_]+/|time:' "$OUT/$b.txt" | sed 's/^/  /' >&2 || true
done

log "L1 memory: benches/l1_memory.rs (1M entries)"
timeout 600 cargo bench --no-default-features --bench l1_memory > "$OUT/l1_memory.txt" 2>&1 \
  || { tail -n 20 "$OUT/l1_memory.txt" >&2; die "cargo bench --bench l1_memory failed"; }
grep '^L1_MEMORY' "$OUT/l1_memory.txt" >&2 || die "l1_memory printed no result"

log "lua peer: bench/serialize_peer.lua"
PEER_WARMUP_SECONDS=$WARMUP_S PEER_SECONDS=$MEASURE_S \
  timeout 600 "${PIN[@]}" luajit "$HERE/serialize_peer.lua" "$OUT/peer.tsv" | tee "$OUT/peer.txt" >&2

log "ffi calls: bench/ffi_calls.lua"
LUA_PATH="$TREE/share/lua/5.1/?.lua;$TREE/share/lua/5.1/?/init.lua;;" \
LUA_CPATH="$TREE/lib/lua/5.1/?.so;;" \
  timeout 300 "${PIN[@]}" luajit "$HERE/ffi_calls.lua" "$OUT/ffi.tsv" | tee "$OUT/ffi.txt" >&2

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

# Criterion medians from this run, from the estimates.json files it wrote:
# "<id>\t<path>" per line (a benchmark id's "/" may become "_" in the path).
find "$TARGET/criterion" -path '*/new/estimates.json' -newer "$MARKER" | sort \
  | sed "s|^$TARGET/criterion/\(.*\)/new/estimates.json\$|\1\t&|" > "$OUT/criterion.list"

luajit - "$OUT/criterion.list" "$OUT/peer.tsv" "$OUT/machine.txt" "$OUT/l1_memory.txt" > "$OUT/results.md" <<'LUA'
local function read_tsv(path)
  local t = {}
  for line in io.lines(path) do
    local id, med, lo, hi = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)")
    if id then
      t[id] = { med = tonumber(med), lo = tonumber(lo), hi = tonumber(hi) }
    end
  end
  return t
end
-- Criterion: the median and its 95 % confidence interval, in ns.
local function read_criterion(list)
  local cjson = require "cjson"
  local t = {}
  for line in io.lines(list) do
    local id, path = line:match("^([^\t]+)\t(.+)$")
    if id then
      local f = assert(io.open(path, "rb"))
      local m = cjson.decode(f:read("*a")).median
      f:close()
      t[id] = { med = m.point_estimate, lo = m.confidence_interval.lower_bound,
                hi = m.confidence_interval.upper_bound }
    end
  end
  return t
end
local rust, peer = read_criterion(arg[1]), read_tsv(arg[2])
local missing = {}
local function get(t, id, who)
  local v = t[id]
  if not v then missing[#missing + 1] = who .. " " .. id end
  return v
end
local function ns(v)
  if not v then return "-" end
  local x = v.med
  if x >= 1e6 then return string.format("%.2f ms", x / 1e6) end
  if x >= 1e3 then return string.format("%.2f us", x / 1e3) end
  return string.format("%.0f ns", x)
end
local function range(v)
  if not v then return "-" end
  local function f(x)
    if v.med >= 1e6 then return string.format("%.2f", x / 1e6) end
    if v.med >= 1e3 then return string.format("%.2f", x / 1e3) end
    return string.format("%.0f", x)
  end
  return f(v.lo) .. " - " .. f(v.hi)
end
local function ratio(a, b)
  if not (a and b) then return "-" end
  return string.format("%.1fx", a.med / b.med)
end

for line in io.lines(arg[3]) do print("    " .. line) end
print()
print("Routing decision (criterion median; the median's 95 % CI):")
print()
print("| routes | hit | CI | miss | CI | hit / hit at 10 routes |")
print("|---:|---:|---:|---:|---:|---:|")
local base = get(rust, "decide/hit/10", "criterion")
for _, n in ipairs { 10, 100, 1000 } do
  local h = get(rust, "decide/hit/" .. n, "criterion")
  local m = get(rust, "decide/miss/" .. n, "criterion")
  print(string.format("| %d | %s | %s | %s | %s | %s |", n, ns(h), range(h), ns(m), range(m),
    ratio(h, base)))
end
print()
print("L1 cache (criterion median of a random-order hit; bytes per entry from a counting allocator):")
print()
print("| entries | lookup (hit) | CI | / at 1k |")
print("|---:|---:|---:|---:|")
local l1k = get(rust, "l1_lookup/hit/1000", "criterion")
for _, n in ipairs { 1000, 100000, 1000000 } do
  local h = get(rust, "l1_lookup/hit/" .. n, "criterion")
  print(string.format("| %d | %s | %s | %s |", n, ns(h), range(h), ratio(h, l1k)))
end
local memf = io.open(arg[4])
local mem = memf and memf:read("*a") or ""
if memf then memf:close() end
local total, fields, over, allocs = mem:match(
  "bytes_per_entry=([%d%.]+) field_bytes_per_entry=([%d%.]+) overhead_per_entry=([%d%.]+) allocations_per_entry=([%d%.]+)")
print()
if total then
  print(string.format("Memory at 1M entries: %s bytes per entry = %s bytes of field data + %s bytes overhead"
    .. " (%s heap allocations per entry).", total, fields, over, allocs))
else
  missing[#missing + 1] = "l1_memory result"
end
print()
print("Log record work, Rust (criterion median) vs the Lua-cjson peer (median of its samples):")
print()
print("| work | body | Rust | Rust CI | Lua peer | peer min - max | peer / Rust |")
print("|---|---|---:|---:|---:|---:|---:|")
local rows = {
  { "redact JSON body (streaming tokenizer) vs cjson decode + mask + encode", "1 KiB", "redact_json/streaming/1KiB", "redact/1KiB" },
  { "", "64 KiB", "redact_json/streaming/64KiB", "redact/64KiB" },
  { "write a §3 record, both bodies vs build a record table + cjson.encode", "1 KiB", "logrec_write/1KiB", "logrec/1KiB" },
  { "", "64 KiB", "logrec_write/64KiB", "logrec/64KiB" },
  { "", "100 headers, no body", "logrec_write_100_headers_no_body", "logrec/100_headers_no_body" },
  { "context: Rust decode + mask + encode on serde_json::Value", "1 KiB", "redact_json/serde_value/1KiB", "redact/1KiB" },
  { "", "64 KiB", "redact_json/serde_value/64KiB", "redact/64KiB" },
}
for _, r in ipairs(rows) do
  local a, b = get(rust, r[3], "criterion"), get(peer, r[4], "peer")
  print(string.format("| %s | %s | %s | %s | %s | %s | %s |", r[1], r[2], ns(a), range(a), ns(b), range(b),
    ratio(b, a)))
end
for _, size in ipairs { "1KiB", "64KiB" } do
  local a1, a2 = rust["redact_json/streaming/" .. size], rust["logrec_write/" .. size]
  local b1, b2 = peer["redact/" .. size], peer["logrec/" .. size]
  if a1 and a2 and b1 and b2 then
    local a, b = { med = a1.med + a2.med }, { med = b1.med + b2.med }
    print(string.format("| sum: redact + record | %s | %s | | %s | | %s |",
      (size:gsub("KiB", " KiB")), ns(a), ns(b), ratio(b, a)))
  end
end
if #missing > 0 then
  io.stderr:write("micro: missing results: " .. table.concat(missing, ", ") .. "\n")
  os.exit(1)
end
LUA

{
  echo
  echo "Per-request FFI entry points, as lua/auth_router/init.lua calls them (bench/ffi_calls.lua: LuaJIT,"
  echo "JIT on, thread CPU time; the median of its samples; \`hit\` config, L1 hit):"
  echo
  grep '^|' "$OUT/ffi.txt" || die "bench/ffi_calls.lua printed no table"
} >> "$OUT/results.md"

echo
cat "$OUT/results.md"
echo
grep '^note:' "$OUT/peer.txt" || true
log "raw output and results.md in $OUT"
