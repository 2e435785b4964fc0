#!/usr/bin/env bash
# The whole benchmark suite of issue #11 item 6: `make bench` runs this.
#
#   make bench                                  # fresh tree (.tree), then this
#   AUTH_ROUTER_TREE=.tree bash bench/suite.sh
#
# 1. bench/run.sh    plain nginx: nolua, emptylua, emptylua-log1k, hit, hit-1000, hit-routed,
#                    l2, miss, l3, log1k, log16k, lua-hit, lua-log1k
# 2. bench/kong.sh   real Kong 3.9.3 (when ../shared/kong/ensure.sh exists):
#                    kong-none, kong-key-auth, kong-key-auth-full, kong-auth-router(-1000)
# 3. bench/micro.sh  criterion: L1 lookup at 1k/100k/1M entries, routing at
#                    10/100/1000 routes, log record + redaction at 1/64 KiB
#                    (+ the Lua-cjson peer); bytes per L1 entry at 1M entries;
#                    ns per call of each FFI entry point (bench/ffi_calls.lua)
# then one report, $BENCH_OUT/suite.md, ending with the targets (met / not met).
#
# Environment: every BENCH_* knob of bench/lib.sh and bench/run.sh, plus
#   BENCH_KONG    0: skip the Kong variants (1; skipped anyway without ../shared/kong)
#   BENCH_MICRO   0: skip the criterion part (1)
#   MICRO_WARMUP_SECONDS / MICRO_MEASURE_SECONDS: criterion times here (1 / 2)
#   BENCH_CARGO_TARGET_DIR  cargo target dir of the criterion benches (target/bench-core)
# With the defaults the suite takes about 7 minutes once both builds are cached.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${BENCH_OUT:-$ROOT/.tmp/bench}
KONG=${BENCH_KONG:-1}
MICRO=${BENCH_MICRO:-1}
SHARED=${KONG_SHARED:-$ROOT/../shared/kong}
export BENCH_OUT=$OUT

log() { echo "suite: $*" >&2; }
mkdir -p "$OUT"
rm -f "$OUT"/runs.csv "$OUT"/kong-runs.csv "$OUT"/*.md
started=$(date +%s)

log "1/3 nginx variants (bench/run.sh)"
bash "$HERE/run.sh"

if [ "$KONG" = 1 ] && [ -x "$SHARED/ensure.sh" ]; then
  log "2/3 Kong variants (bench/kong.sh)"
  bash "$HERE/kong.sh"
else
  log "2/3 Kong variants: skipped (BENCH_KONG=$KONG, $SHARED/ensure.sh $([ -x "$SHARED/ensure.sh" ] && echo present || echo absent))"
fi

MICRO_OUT=$OUT/micro
# The criterion benches build the crate without its default `ffi` feature.
# A cdylib's outputs are not feature-hashed, so building both feature sets in
# one target dir rebuilds the crate at every switch (make tree, micro, make
# tree ...): the benches get their own target dir.
export CARGO_TARGET_DIR=${BENCH_CARGO_TARGET_DIR:-$ROOT/target/bench-core}
if [ "$MICRO" = 1 ]; then
  log "3/3 criterion (bench/micro.sh)"
  MICRO_OUT=$MICRO_OUT MICRO_WARMUP_SECONDS=${MICRO_WARMUP_SECONDS:-1} \
    MICRO_MEASURE_SECONDS=${MICRO_MEASURE_SECONDS:-2} bash "$HERE/micro.sh" >/dev/null
else
  log "3/3 criterion: skipped (BENCH_MICRO=0)"
fi

TARGET=$CARGO_TARGET_DIR
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
{
  echo "# auth-router benchmark suite, $(date -u +%Y-%m-%dT%H:%MZ) ($(( $(date +%s) - started )) s)"
  echo
  echo "## nginx (worker CPU us/request; adds = paired differences vs emptylua)"
  echo
  cat "$OUT/machine.md" 2>/dev/null || true
  echo
  cat "$OUT/results.md"
  echo
  echo "## Kong 3.9.3 (adds = paired differences vs kong-none)"
  echo
  if [ -f "$OUT/kong-results.md" ]; then cat "$OUT/kong-machine.md"; echo; cat "$OUT/kong-results.md"; else echo "not run"; fi
  echo
  echo "## criterion"
  echo
  if [ -f "$MICRO_OUT/results.md" ]; then cat "$MICRO_OUT/results.md"; else echo "not run"; fi
  echo
  echo "## targets"
  echo
  crit=-
  [ "$MICRO" = 1 ] && crit=$TARGET/criterion
  luajit "$HERE/report.lua" targets "$OUT/runs.csv" \
    "$([ -f "$OUT/kong-runs.csv" ] && echo "$OUT/kong-runs.csv" || echo -)" "$crit" \
    "$([ -f "$MICRO_OUT/l1_memory.txt" ] && echo "$MICRO_OUT/l1_memory.txt" || echo -)"
} >"$OUT/suite.md"
cat "$OUT/suite.md"
log "report in $OUT/suite.md ($(( $(date +%s) - started )) s)"
