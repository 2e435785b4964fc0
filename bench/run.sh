#!/usr/bin/env bash
# auth-router end-to-end benchmark: the auth cache HIT path.
#
#   make bench                                       # builds a fresh tree, then runs this
#   AUTH_ROUTER_TREE=/tmp/benchtree bash bench/run.sh
#
# One gateway nginx (1 worker, loopback) with one server per variant, all
# proxying with `proxy_pass http://backend;` to the same keepalive upstream
# block (a `return 200` nginx):
#   a  baseline: plain proxy, no Lua
#   b  auth-router (4 phases), every request an L1 hit, upstream_headers
#      (x-account-id from /id) and response_headers (x-account-plan from /plan)
#   c  the pure-Lua peer (bench/lua_peer.lua): lrucache keyed by
#      ngx.md5(Authorization) holding the cjson-decoded account, same headers
#   diagnostics, only when named in BENCH_VARIANTS:
#   d  auth-router with only access + header_filter (the peer's two phases)
#   e  four empty Lua phase handlers     f  two empty Lua phase handlers
# Each credential is warmed (its one miss) and each variant warmed with wrk
# before measuring; runs are interleaved a,b,c,a,b,c,... for BENCH_ROUNDS
# rounds. Metric: gateway worker CPU time (/proc/<pid>/schedstat, on-CPU ns;
# utime+stime from /proc/<pid>/stat is recorded as a cross-check) divided by
# the requests wrk completed; wrk req/s and latency p50/p99 for context.
# The script checks every answer was 2xx, that (b) and (c) really set both
# headers, and that the auth service saw exactly one call per credential per
# auth cache (so every measured request was a hit).
#
# Environment (defaults):
#   AUTH_ROUTER_TREE     luarocks tree with the plugin installed (required)
#   BENCH_SECONDS        seconds per measured wrk run (8)
#   BENCH_ROUNDS         interleaved rounds (5)
#   BENCH_WARMUP_SECONDS wrk warm-up per variant, not measured (3)
#   BENCH_CONNECTIONS    wrk connections (16), one wrk thread
#   BENCH_CREDENTIALS    distinct credentials cycled by wrk (8)
#   BENCH_VARIANTS       variants in run order ("a b c"; any of a b c d e f)
#   BENCH_PIN            1: pin the gateway worker to CPU 0 and wrk + backend
#                        to CPU 1 (needs >= 2 CPUs); 0: let the kernel place them (1)
#   BENCH_OUT            where results.md and runs.csv go (.tmp/bench)
#   BENCH_KEEP           1: keep the nginx prefixes (configs, logs)
# Default total: ~ (3 variants x (5 rounds x 8 s + 3 s)) + startup = ~2.5 min.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

TREE=${AUTH_ROUTER_TREE:-}
RUN_S=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-5}
WARMUP_S=${BENCH_WARMUP_SECONDS:-3}
CONNS=${BENCH_CONNECTIONS:-16}
CREDS=${BENCH_CREDENTIALS:-8}
VARIANTS=${BENCH_VARIANTS:-"a b c"}
PIN=${BENCH_PIN:-1}
OUT=${BENCH_OUT:-$ROOT/.tmp/bench}
KEEP=${BENCH_KEEP:-0}

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[ -n "$TREE" ] || die "AUTH_ROUTER_TREE must name a luarocks tree with the plugin (make bench sets it)"
TREE=$(cd "$TREE" && pwd)
[ -f "$TREE/lib/lua/5.1/auth_router_native.so" ] || die "no auth_router_native.so in $TREE/lib/lua/5.1"
for cmd in nginx wrk curl luajit timeout ss; do
  command -v "$cmd" >/dev/null || die "'$cmd' is required"
done
for n in "$RUN_S" "$ROUNDS" "$WARMUP_S" "$CONNS" "$CREDS"; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS/ROUNDS/WARMUP_SECONDS/CONNECTIONS/CREDENTIALS must be integers"
done
[ "$RUN_S" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$CREDS" -ge 1 ] && [ "$CONNS" -ge 1 ] \
  || die "BENCH_SECONDS, BENCH_ROUNDS, BENCH_CREDENTIALS, BENCH_CONNECTIONS must be >= 1"
for v in $VARIANTS; do
  [[ "$v" =~ ^[a-f]$ ]] || die "unknown variant '$v' in BENCH_VARIANTS (a b c d e f)"
done
if [ "$PIN" = 1 ] && { [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; }; then
  log "BENCH_PIN=1 needs 2 CPUs and taskset: not pinning"
  PIN=0
fi

WORK=$(mktemp -d /tmp/auth-router-bench.XXXXXX)
STARTED=()   # nginx prefixes whose master we started

WRK_PID=""
stop_all() {
  local prefix pid i children
  if [ -n "$WRK_PID" ]; then
    kill -TERM "$WRK_PID" 2>/dev/null || true
    wait "$WRK_PID" 2>/dev/null || true
  fi
  for prefix in "${STARTED[@]}"; do
    pid=$(cat "$prefix/logs/nginx.pid" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    children=$(pgrep -P "$pid" 2>/dev/null || true)   # this master's workers
    kill -TERM "$pid" 2>/dev/null || continue
    for i in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    # Still there after 5 s: kill the master and its workers, by pid.
    kill -KILL "$pid" $children 2>/dev/null || true
  done
  STARTED=()
  if [ "$KEEP" = 1 ]; then
    log "kept nginx prefixes in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# A free loopback port, distinct from the ones already handed out, below the
# kernel's ephemeral range (so no outgoing connection can be holding it).
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
TAKEN=" "
free_port() {
  local p i lo=10000 span
  span=$((EPHEMERAL_LOW - lo))
  [ "$span" -gt 1000 ] || { lo=20000; span=10000; }
  for i in $(seq 200); do
    p=$((lo + (RANDOM * 32768 + RANDOM) % span))
    case "$TAKEN" in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then
      TAKEN="$TAKEN$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

render() { # template out key=value...
  luajit "$HERE/render.lua" "$ROOT/spec/fixtures/render_conf.lua" "$@"
}

start_nginx() { # prefix
  local prefix=$1
  mkdir -p "$prefix/logs" "$prefix/tmp"
  nginx -p "$prefix" -c "$prefix/conf/nginx.conf" -e "$prefix/logs/error.log" \
    || die "nginx did not start; see $prefix/logs/error.log: $(tail -n 5 "$prefix/logs/error.log" 2>/dev/null)"
  STARTED+=("$prefix")
}

wait_port() { # port [path]  (the mock auth counts every other path as a call)
  local i
  for i in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1${2:-/__none}" && return 0
    sleep 0.1
  done
  die "nothing answers on 127.0.0.1:$1"
}

worker_of() { # master pid -> its single worker pid
  local master=$1 workers
  workers=$(pgrep -P "$master" || true)
  [ "$(echo "$workers" | wc -w)" = 1 ] || die "expected one worker under nginx master $master, got: $workers"
  echo "$workers"
}

# On-CPU nanoseconds of a pid (schedstat), and "utime stime" in clock ticks (stat).
cpu_ns()    { awk '{print $1}' "/proc/$1/schedstat"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

declare -A PORT NAME
NAME[a]="baseline: plain proxy"
NAME[b]="auth-router (L1 hit)"
NAME[c]="pure-Lua peer (lrucache)"
NAME[d]="auth-router, access+header_filter only"
NAME[e]="4 empty Lua phases"
NAME[f]="2 empty Lua phases"
for v in a b c d e f; do PORT[$v]=$(free_port); done
UPSTREAM_PORT=$(free_port)
AUTH_PORT=$(free_port)

# --- backend: upstream + mock auth --------------------------------------------
BACKEND=$WORK/backend
mkdir -p "$BACKEND/conf"
render "$HERE/backend.conf" "$BACKEND/conf/nginx.conf" \
  upstream_port="$UPSTREAM_PORT" auth_port="$AUTH_PORT" fixtures="$ROOT/spec/fixtures"
start_nginx "$BACKEND"
wait_port "$UPSTREAM_PORT"
wait_port "$AUTH_PORT" /__calls

# --- gateway -------------------------------------------------------------------
GATEWAY=$WORK/gateway
mkdir -p "$GATEWAY/conf"
cat >"$GATEWAY/conf/auth-router.json" <<EOF
{
  "auth": { "url": "http://127.0.0.1:$AUTH_PORT/auth", "ttl_s": 3600 },
  "upstream_headers": [ { "name": "x-account-id", "pointer": "/id" } ],
  "response_headers": [ { "name": "x-account-plan", "pointer": "/plan" } ]
}
EOF
render "$HERE/gateway.conf" "$GATEWAY/conf/nginx.conf" \
  bench_dir="$HERE" tree="$TREE" config_path="$GATEWAY/conf/auth-router.json" \
  auth_port="$AUTH_PORT" upstream_port="$UPSTREAM_PORT" \
  port_a="${PORT[a]}" port_b="${PORT[b]}" port_c="${PORT[c]}" \
  port_d="${PORT[d]}" port_e="${PORT[e]}" port_f="${PORT[f]}"
start_nginx "$GATEWAY"
for v in a b c d e f; do wait_port "${PORT[$v]}"; done

GW_WORKER=$(worker_of "$(cat "$GATEWAY/logs/nginx.pid")")
BE_WORKER=$(worker_of "$(cat "$BACKEND/logs/nginx.pid")")
WRK=(wrk)
if [ "$PIN" = 1 ]; then
  taskset -pc 0 "$GW_WORKER" >/dev/null
  taskset -pc 1 "$BE_WORKER" >/dev/null
  WRK=(taskset -c 1 wrk)
fi
[ -r "/proc/$GW_WORKER/schedstat" ] && CPU_SOURCE=schedstat || CPU_SOURCE=stat
log "gateway worker pid $GW_WORKER, backend worker pid $BE_WORKER, pinning $PIN, cpu source $CPU_SOURCE"

# --- correctness and warm-up ---------------------------------------------------
check_variant() { # variant: every credential answers 200 (misses happen here), headers set
  local v=$1 k headers status seen plan
  for k in $(seq "$CREDS"); do
    headers=$(curl -s -D - -o /dev/null --max-time 5 -H "Authorization: Bearer good-u$k" \
              -H "X-Account-Id: spoofed" "http://127.0.0.1:${PORT[$v]}/send" | tr -d '\r')
    status=$(echo "$headers" | awk 'NR==1{print $2}')
    [ "$status" = 200 ] || die "variant $v: credential u$k answered '$status', expected 200"
    seen=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-seen-account-id"{print $2}')
    plan=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-account-plan"{print $2}')
    case $v in
      b|c|d)
        [ "$seen" = "u$k" ] || die "variant $v: upstream saw x-account-id '$seen', expected u$k"
        [ "$plan" = pro ] || die "variant $v: x-account-plan '$plan', expected pro" ;;
    esac
  done
}

WRK_LAST=""
run_wrk() { # variant seconds -> sets WRK_LAST to the BENCH_RESULT fields
  local v=$1 s=$2 out rc=0
  # In the background so that a signal to this script is handled at once.
  BENCH_CREDENTIALS=$CREDS timeout $((s + 20)) "${WRK[@]}" -t1 -c"$CONNS" -d"${s}s" \
    --timeout 2s -s "$HERE/hit.lua" "http://127.0.0.1:${PORT[$v]}/send" >"$WORK/wrk.out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  out=$(cat "$WORK/wrk.out")
  [ "$rc" = 0 ] || die "wrk failed on variant $v (exit $rc): $out"
  WRK_LAST=$(echo "$out" | sed -n 's/^BENCH_RESULT //p')
  [ -n "$WRK_LAST" ] || die "wrk printed no result on variant $v: $out"
  local errors non2xx
  errors=$(echo "$WRK_LAST" | sed 's/.*errors=\([0-9]*\).*/\1/')
  non2xx=$(echo "$WRK_LAST" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
  [ "$errors" = 0 ] && [ "$non2xx" = 0 ] \
    || die "variant $v: $errors socket errors, $non2xx non-2xx answers: $WRK_LAST"
}

for v in $VARIANTS; do check_variant "$v"; done
for v in $VARIANTS; do
  log "warm-up $v (${WARMUP_S}s): ${NAME[$v]}"
  if [ "$WARMUP_S" -gt 0 ]; then run_wrk "$v" "$WARMUP_S"; fi
done
for v in $VARIANTS; do check_variant "$v"; done   # still right after the warm-up

# --- measured, interleaved -----------------------------------------------------
mkdir -p "$OUT"
CSV=$OUT/runs.csv
echo "round,variant,requests,duration_us,cpu_ns,utime_ticks,stime_ticks,p50_us,p99_us" >"$CSV"
TICK_HZ=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    if [ "$CPU_SOURCE" = schedstat ]; then ns0=$(cpu_ns "$GW_WORKER"); else ns0=0; fi
    read -r u0 s0 < <(cpu_ticks "$GW_WORKER")
    run_wrk "$v" "$RUN_S"
    if [ "$CPU_SOURCE" = schedstat ]; then ns1=$(cpu_ns "$GW_WORKER"); else ns1=0; fi
    read -r u1 s1 < <(cpu_ticks "$GW_WORKER")
    eval "$(echo "$WRK_LAST" | tr ' ' '\n' | sed -n 's/^\(requests\|duration_us\|p50_us\|p99_us\)=\([0-9]*\)$/\1=\2/p')"
    [ "${requests:-0}" -gt 0 ] || die "variant $v: wrk completed no request"
    ns=$((ns1 - ns0))
    utime=$((u1 - u0))
    stime=$((s1 - s0))
    [ "$CPU_SOURCE" = schedstat ] || ns=$(((utime + stime) * 1000000000 / TICK_HZ))
    echo "$r,$v,$requests,$duration_us,$ns,$utime,$stime,$p50_us,$p99_us" >>"$CSV"
    log "round $r/$ROUNDS $v: $requests req, $(awk -v n="$ns" -v q="$requests" 'BEGIN{printf "%.2f", n/1000/q}') us CPU/req"
  done
done

# --- every measured request was a hit? -----------------------------------------
expected_calls=0
case " $VARIANTS " in *" b "*|*" d "*) expected_calls=$((expected_calls + CREDS)) ;; esac
case " $VARIANTS " in *" c "*) expected_calls=$((expected_calls + CREDS)) ;; esac
calls=$(curl -s --max-time 5 "http://127.0.0.1:$AUTH_PORT/__calls" | sed 's/.*"calls":\([0-9]*\).*/\1/')
[ "$calls" = "$expected_calls" ] \
  || die "the auth service saw $calls calls, expected $expected_calls (one per credential per cache): not every request was a hit"
STATS=$(curl -s --max-time 5 "http://127.0.0.1:${PORT[b]}/__stats")
INFO=$(curl -s --max-time 5 "http://127.0.0.1:${PORT[b]}/__info")
if grep -E '\[(error|crit|alert|emerg)\]' "$GATEWAY/logs/error.log" >/dev/null; then
  grep -E '\[(error|crit|alert|emerg)\]' "$GATEWAY/logs/error.log" | tail -n 5 >&2
  die "errors in the gateway log"
fi

# --- summary -------------------------------------------------------------------
RESULTS=$OUT/results.md
{
  echo "# auth-router hit-path benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r), load average before summary: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $INFO"
  echo "- plugin: tree $TREE, native module installed $(date -u -r "$TREE/lib/lua/5.1/auth_router_native.so" +%Y-%m-%dT%H:%MZ); repo HEAD at run time $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" status --porcelain -- src lua Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' (src/ or lua/ modified)')"
  echo "- $ROUNDS interleaved rounds of ${RUN_S}s per variant ($VARIANTS), wrk -t1 -c$CONNS, $CREDS credentials, 1 gateway worker, pinning=$PIN, CPU from $CPU_SOURCE"
  echo "- auth service calls: $calls (one per credential per cache: every measured request was a cache hit)"
  echo "- auth-router counters (worker): $(echo "$STATS" | luajit -e '
      local s = io.read("*a")
      local out = {}
      for _, k in ipairs{ "requests", "l1_hits", "l2_hits", "misses", "auth_calls" } do
        out[#out + 1] = k .. "=" .. (s:match("\"" .. k .. "\":(%d+)") or "?")
      end
      io.write(table.concat(out, " "))')"
  echo
  luajit "$HERE/summary.lua" "$CSV" "$VARIANTS" "$TICK_HZ" \
    "$(for v in $VARIANTS; do printf '%s=%s;' "$v" "${NAME[$v]}"; done)"
} >"$RESULTS"
cat "$RESULTS"
log "results in $RESULTS, raw runs in $CSV"
