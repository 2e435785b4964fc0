#!/usr/bin/env bash
# auth-router end-to-end benchmark suite on plain nginx (issue #11 item 6).
#
#   make bench                                       # builds a fresh tree, then bench/suite.sh
#   AUTH_ROUTER_TREE=/tmp/benchtree bash bench/run.sh
#
# One gateway nginx (1 worker, loopback, pinned) with one server per variant
# (bench/gateway.conf), a backend nginx (upstreams, mock auth; its CPU is not
# measured) and a log sink (bench/sink.py). Variants:
#   nolua       plain proxy, no Lua
#   emptylua    four empty Lua phase handlers: the baseline of every "adds"
#   emptylua-log1k  the emptylua server sent log1k's requests (POST 1 KiB,
#               1 KiB answer): what nginx itself spends on those bodies,
#               the second baseline of the log variants
#   hit         auth-router, L1 hit, 20 non-matching routes, 2 upstream
#               headers, 1 response header, no log
#   hit-1000    the same with 1000 non-matching routes
#   hit-routed  L1 hit, the email/calendar/legacy table, a matching route
#               (email) sets $auth_router_target; balancer_by_lua sends it there
#   l2          L1 cache_size 1 and 64 credentials: every request misses L1
#               and hits the shared dict
#   miss        `nostore-` tokens (Cache-Control: no-store), 1024 credentials:
#               every request calls the mock auth service over keepalive
#   l3          the cluster tier: L1 cache_size 1, a 64 KiB shared dict and
#               2048 credentials whose verdicts are in Redis (a redis-server
#               of this run, filled first): every request misses L1 and the
#               shared dict and reads Redis over keepalive; compare with miss
#   log1k       hit + log: POST 1 KiB JSON body, 1 KiB JSON response, both
#               captured, `password` and `token` redacted, tcp sink
#   log16k      the same with 16 KiB bodies
#   lua-hit     pure-Lua peer of hit (bench/peers/lua_hit.lua)
#   lua-log1k   pure-Lua peer of log1k (bench/peers/lua_log.lua)
# Each variant is checked with curl, warmed with wrk, then measured in
# interleaved rounds. Metric: gateway worker CPU time (/proc/<pid>/schedstat)
# per completed request. Checks: every answer 2xx; headers set and route
# taken (the backend echoes them); per run, the plugin's counters
# (l1_hits, l2_hits, l3_hits, misses, routed, log_sent) and the auth mock's
# and sink's counts show every measured request was what the variant claims.
# The cache-tier variants (l2, l3) start each wrk run on the credential after
# the last one the previous run sent (BENCH_FIRST), so that no run begins on
# a credential the previous one left in L1 or the shared dict.
#
# Environment (defaults), besides bench/lib.sh's BENCH_SECONDS (3),
# BENCH_ROUNDS (4), BENCH_WARMUP_SECONDS (2), BENCH_CONNECTIONS (16),
# BENCH_PIN (1), BENCH_KEEP (0):
#   AUTH_ROUTER_TREE     luarocks tree with the plugin installed (required)
#   BENCH_VARIANTS       variants in run order (all of the above)
#   BENCH_CREDENTIALS    credentials cycled by the hit and log variants (8)
#   BENCH_OUT            where results.md and runs.csv go (.tmp/bench)
#   BENCH_CALLGRIND      1: instructions per request under callgrind instead
#                        of timed runs (see callgrind_measure)
# Needs redis-server (Debian's package; scripts/install-deps.sh installs it).
# Default total: 12 variants x (4 rounds x 3 s + 2 s) + checks, about 4 minutes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_TAG=bench
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

ALL="nolua emptylua emptylua-log1k hit hit-1000 hit-routed l2 miss l3 log1k log16k lua-hit lua-log1k"
TREE=${AUTH_ROUTER_TREE:-}
VARIANTS=${BENCH_VARIANTS:-$ALL}
CREDS=${BENCH_CREDENTIALS:-8}
OUT=${BENCH_OUT:-$ROOT/.tmp/bench}
L2_CREDS=64
MISS_CREDS=1024
L3_CREDS=2048

[ -n "$TREE" ] || die "AUTH_ROUTER_TREE must name a luarocks tree with the plugin (make bench sets it)"
TREE=$(cd "$TREE" && pwd)
[ -f "$TREE/lib/lua/5.1/auth_router_native.so" ] || die "no auth_router_native.so in $TREE/lib/lua/5.1"
[[ "$CREDS" =~ ^[0-9]+$ ]] && [ "$CREDS" -ge 1 ] || die "BENCH_CREDENTIALS must be an integer >= 1"
for v in $VARIANTS; do
  case " $ALL " in *" $v "*) ;; *) die "unknown variant '$v' in BENCH_VARIANTS ($ALL)" ;; esac
done
bench_settings

declare -A PORT
for v in $ALL; do PORT[$v]=$(free_port); done
PORT[emptylua-log1k]=${PORT[emptylua]}   # the same server, other requests
CONTROL_PORT=$(free_port)
start_backend

# --- redis-server: the l3 variant's cluster tier (pinned beside the backend) ---------
command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
  || die "redis-server and redis-cli are needed (Debian package redis-server; scripts/install-deps.sh)"
REDIS_PORT=$(free_port)
redis=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK")
[ "$PIN" = 1 ] && redis=(taskset -c 1 "${redis[@]}")
"${redis[@]}" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || die "redis-server does not answer: $(cat "$WORK/redis.log")"

# --- configs ---------------------------------------------------------------------
CONF_DIR=$WORK/conf
mkdir -p "$CONF_DIR"
python3 "$HERE/configs.py" "$CONF_DIR" "$AUTH_PORT" "$UPSTREAM_PORT" "$EMAIL_PORT" "$CALENDAR_PORT" "$SINK_PORT" "$REDIS_PORT"

# --- gateway -----------------------------------------------------------------------
GATEWAY=$WORK/gateway
mkdir -p "$GATEWAY/conf"
render "$HERE/gateway.conf" "$GATEWAY/conf/nginx.conf" \
  bench_dir="$HERE" tree="$TREE" conf_dir="$CONF_DIR" \
  auth_port="$AUTH_PORT" upstream_port="$UPSTREAM_PORT" sink_port="$SINK_PORT" \
  port_nolua="${PORT[nolua]}" port_emptylua="${PORT[emptylua]}" port_hit="${PORT[hit]}" \
  port_hit_1000="${PORT[hit-1000]}" port_hit_routed="${PORT[hit-routed]}" port_l2="${PORT[l2]}" \
  port_miss="${PORT[miss]}" port_l3="${PORT[l3]}" port_log1k="${PORT[log1k]}" port_log16k="${PORT[log16k]}" \
  port_lua_hit="${PORT[lua-hit]}" port_lua_log1k="${PORT[lua-log1k]}" port_control="$CONTROL_PORT"
start_nginx "$GATEWAY"
for v in $ALL; do wait_port "${PORT[$v]}"; done
wait_port "$CONTROL_PORT" /__info
GW_WORKER=$(worker_of "$(cat "$GATEWAY/logs/nginx.pid")")
pin "$GW_WORKER" 0
log "gateway worker pid $GW_WORKER, backend worker pid $BE_WORKER, pinning $PIN"

# --- what each variant sends -----------------------------------------------------------
variant_url() {
  case $1 in
    log1k|lua-log1k|emptylua-log1k) echo "http://127.0.0.1:${PORT[$1]}/log?size=1024" ;;
    log16k)          echo "http://127.0.0.1:${PORT[$1]}/log?size=16384" ;;
    *)               echo "http://127.0.0.1:${PORT[$1]}/send" ;;
  esac
}
# Where the next wrk run of a cache-tier variant starts: past every credential
# the last run sent (completed + at most CONNS in flight when it stopped).
declare -A FIRST=([l2]=1 [l3]=1)
after_wrk() {
  local v=$1 n req
  case $v in l2) n=$L2_CREDS ;; l3) n=$L3_CREDS ;; *) return 0 ;; esac
  req=$(echo "$WRK_LAST" | sed 's/.*requests=\([0-9]*\).*/\1/')
  FIRST[$v]=$(( (FIRST[$v] - 1 + req + CONNS + 1) % n + 1 ))
}
variant_env() {
  case $1 in
    l2)              echo "BENCH_CREDENTIALS=$L2_CREDS BENCH_FIRST=${FIRST[l2]}" ;;
    miss)            echo "BENCH_CREDENTIALS=$MISS_CREDS BENCH_TOKEN_PREFIX=nostore-u" ;;
    l3)              echo "BENCH_CREDENTIALS=$L3_CREDS BENCH_FIRST=${FIRST[l3]}" ;;
    log1k|lua-log1k|emptylua-log1k) echo "BENCH_CREDENTIALS=$CREDS BENCH_METHOD=POST BENCH_PATH=/log?size=1024 BENCH_BODY_BYTES=1024" ;;
    log16k)          echo "BENCH_CREDENTIALS=$CREDS BENCH_METHOD=POST BENCH_PATH=/log?size=16384 BENCH_BODY_BYTES=16384" ;;
    *)               echo "BENCH_CREDENTIALS=$CREDS" ;;
  esac
}

# --- counters ----------------------------------------------------------------------------
STATS_NAMES="requests l1_hits l2_hits l3_hits redis_errors misses auth_calls routed log_sent log_dropped log_failed log_queue_bytes peer_sent peer_pending peer_failed"
declare -A S0 S1 S
read_stats() { # array-name: auth-router worker counters + peer counters + mock calls + sink records
  local -n into=$1
  local json k
  json=$(curl -s --max-time 5 "http://127.0.0.1:$CONTROL_PORT/__stats")
  for k in $STATS_NAMES; do
    into[$k]=$(echo "$json" | sed -n "s/.*\"$k\":\([0-9]*\).*/\1/p")
    into[$k]=${into[$k]:-0}
  done
  into[mock_calls]=$(auth_calls)
  into[sink]=$(sink_records | cut -d' ' -f1)
}
delta() { echo $((S1[$1] - S0[$1])); }
expect_range() { # variant what value requests
  local v=$1 what=$2 value=$3 req=$4
  [ "$value" -ge "$req" ] && [ "$value" -le $((req + CONNS)) ] \
    || die "variant $v: $what = $value for $req completed requests (expected $req..$((req + CONNS))): not every request was what $v claims"
}
expect_zero() { # variant name...
  local v=$1 k
  shift
  for k in "$@"; do
    [ "$(delta "$k")" = 0 ] || die "variant $v: $k changed by $(delta "$k") (expected 0)"
  done
}

before_run() { read_stats S0; MEASURING=1; }
is_log() { case $1 in log1k|log16k|lua-log1k) return 0 ;; esac; return 1; }
posts() { is_log "$1" || [ "$1" = emptylua-log1k ]; }   # sends a JSON request body
settle() { # log variants: wait, inside the CPU window, until the run's records are shipped
  local v=$1 i req sent=log_sent last=-1
  is_log "$v" || return 0
  [ "$v" = lua-log1k ] && sent=peer_sent
  req=$(echo "$WRK_LAST" | sed 's/.*requests=\([0-9]*\).*/\1/')
  for i in $(seq 200); do
    read_stats S
    if [ "${MEASURING:-0}" = 1 ]; then   # every completed request's record reached the sink
      [ $((S[$sent] - S0[$sent])) -ge "$req" ] && [ $((S[sink] - S0[sink])) -ge "$req" ] \
        && [ "${S[log_queue_bytes]}" = 0 ] && [ "${S[peer_pending]}" = 0 ] && return 0
    else                                  # warm-up: until nothing moves for a flush interval
      [ "${S[log_queue_bytes]}" = 0 ] && [ "${S[peer_pending]}" = 0 ] && [ "${S[sink]}" = "$last" ] && return 0
      last=${S[sink]}
      sleep 1.1
    fi
    sleep 0.1
  done
  die "variant $v: the log records did not reach the sink in 20 s"
}
after_run() {
  local v=$1 req=$2
  read_stats S1
  MEASURING=0
  case $v in
    nolua|emptylua|emptylua-log1k)
      expect_zero "$v" requests mock_calls sink peer_sent ;;
    hit|hit-1000|log1k|log16k|hit-routed)
      expect_range "$v" l1_hits "$(delta l1_hits)" "$req"
      expect_zero "$v" l2_hits misses mock_calls peer_sent ;;&
    hit-routed)
      expect_range "$v" routed "$(delta routed)" "$req" ;;
    log1k|log16k)
      expect_range "$v" log_sent "$(delta log_sent)" "$req"
      expect_range "$v" "sink records" "$(delta sink)" "$req"
      expect_zero "$v" log_dropped log_failed ;;
    l2)
      expect_range "$v" l2_hits "$(delta l2_hits)" "$req"
      expect_zero "$v" l1_hits misses mock_calls ;;
    miss)
      expect_range "$v" misses "$(delta misses)" "$req"
      expect_range "$v" "auth service calls" "$(delta mock_calls)" "$req"
      expect_zero "$v" l1_hits l2_hits l3_hits ;;
    l3)
      expect_range "$v" l3_hits "$(delta l3_hits)" "$req"
      expect_zero "$v" l1_hits l2_hits misses mock_calls redis_errors ;;
    lua-hit|lua-log1k)
      expect_zero "$v" requests mock_calls ;;&
    lua-log1k)
      expect_range "$v" "peer records sent" "$(delta peer_sent)" "$req"
      expect_range "$v" "sink records" "$(delta sink)" "$req"
      expect_zero "$v" peer_failed ;;
  esac
  case $v in nolua|emptylua|emptylua-log1k|hit|hit-1000|hit-routed|l2|miss|l3|lua-hit) expect_zero "$v" sink ;; esac
}

check_variant() { # one request per credential with curl: 200, headers set, route taken
  local v=$1 k n headers status seen plan port url token=good-u body=()
  url=$(variant_url "$v")
  n=$CREDS
  case $v in l2) n=$L2_CREDS ;; miss|l3) n=3 ;;& miss) token=nostore-u ;; esac
  posts "$v" && body=(-H 'Content-Type: application/json' --data-binary "@$WORK/body.json")
  for k in $(seq "$n"); do
    headers=$(curl -s -D - -o /dev/null --max-time 5 -H "Authorization: Bearer $token$k" \
              -H "X-Account-Id: spoofed" ${body[@]+"${body[@]}"} "$url" | tr -d '\r')
    status=$(echo "$headers" | awk 'NR==1{print $2}')
    [ "$status" = 200 ] || die "variant $v: credential $token$k answered '$status', expected 200"
    seen=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-seen-account-id"{print $2}')
    plan=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-account-plan"{print $2}')
    port=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-upstream-port"{print $2}')
    case $v in
      nolua|emptylua|emptylua-log1k) ;;
      *)
        [ "$seen" = "u$k" ] || die "variant $v: upstream saw x-account-id '$seen', expected u$k"
        [ "$plan" = pro ] || die "variant $v: x-account-plan '$plan', expected pro" ;;
    esac
    if [ "$v" = hit-routed ]; then
      [ "$port" = "$EMAIL_PORT" ] || die "variant hit-routed: answered by port '$port', expected the email route's $EMAIL_PORT"
    elif [ -n "$port" ] && [ "$port" != "$UPSTREAM_PORT" ]; then
      die "variant $v: answered by port $port, expected the default service's $UPSTREAM_PORT"
    fi
  done
}

luajit -e "io.write(dofile('$HERE/bodies.lua').json(1024))" >"$WORK/body.json"
for v in $VARIANTS; do check_variant "$v"; done

# The l3 variant's verdicts, into Redis through the variant itself (auth calls
# on the first pass over the credentials); its checks then refuse any auth
# call in a measured run.
fill_l3() {
  local i stored=0
  for i in $(seq 30); do
    # shellcheck disable=SC2046
    run_wrk l3 1 "$(variant_url l3)" $(variant_env l3)
    stored=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'auth-router:v:*' | wc -l)
    [ "$stored" -ge "$L3_CREDS" ] && { log "l3: $stored verdicts in Redis"; return 0; }
  done
  die "l3: only $stored of $L3_CREDS verdicts reached Redis"
}
case " $VARIANTS " in *" l3 "*) fill_l3 ;; esac

# --- callgrind: instructions per request ------------------------------------------------
# BENCH_CALLGRIND=1: instead of the timed runs, the same gateway runs again
# under valgrind's callgrind (one process, no master), and each variant gets
# its instructions per request: counters zeroed after a warm-up, one wrk run,
# a dump. Repeatable on a busy machine (no clock involved), and each dump
# (callgrind.out.<variant>) opens in callgrind_annotate to see where they go.
callgrind_measure() {
  local v reqs ir pid file
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
    || die "BENCH_CALLGRIND=1 needs valgrind (Debian package valgrind)"
  stop_master "$GATEWAY/logs/nginx.pid"
  sed -i -e 's/^daemon on;/daemon off;/' -e 's/^master_process on;/master_process off;/' "$GATEWAY/conf/nginx.conf"
  mkdir -p "$OUT/callgrind"
  rm -f "$OUT"/callgrind/callgrind.out.*
  valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$OUT/callgrind/callgrind.out" \
    nginx -p "$GATEWAY" -c "$GATEWAY/conf/nginx.conf" -e "$GATEWAY/logs/error.log" \
    >"$WORK/valgrind.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for v in $ALL; do wait_port "${PORT[$v]}"; done
  wait_port "$CONTROL_PORT" /__info
  echo "| variant | instructions/request | adds (vs emptylua) | requests |" >"$OUT/callgrind.md"
  echo "|---|---:|---:|---:|" >>"$OUT/callgrind.md"
  local base=""
  for v in $VARIANTS; do
    # shellcheck disable=SC2046
    run_wrk "$v" "$WARMUP_S" "$(variant_url "$v")" $(variant_env "$v")
    callgrind_control -z "$pid" >/dev/null
    # shellcheck disable=SC2046
    run_wrk "$v" "$RUN_S" "$(variant_url "$v")" $(variant_env "$v")
    callgrind_control -d "$v" "$pid" >/dev/null
    reqs=$(echo "$WRK_LAST" | sed 's/.*requests=\([0-9]*\).*/\1/')
    file=$(ls -t "$OUT"/callgrind/callgrind.out.* | head -n 1)
    mv "$file" "$OUT/callgrind/callgrind.out.$v"
    ir=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$OUT/callgrind/callgrind.out.$v")
    [ -n "$ir" ] && [ "$reqs" -gt 0 ] || die "callgrind: no totals for $v"
    ir=$((ir / reqs))
    [ "$v" = emptylua ] && base=$ir
    echo "| \`$v\` | $ir | ${base:+$((ir - base))} | $reqs |" >>"$OUT/callgrind.md"
    log "callgrind $v: $ir instructions/request over $reqs requests"
  done
  kill "$pid" 2>/dev/null || true
  cat "$OUT/callgrind.md"
  log "dumps in $OUT/callgrind (callgrind_annotate --inclusive=yes FILE)"
}
if [ "${BENCH_CALLGRIND:-0}" = 1 ]; then
  mkdir -p "$OUT"
  callgrind_measure
  exit 0
fi

# --- measured, interleaved -------------------------------------------------------------
mkdir -p "$OUT"
CSV=$OUT/runs.csv
measure "$CSV" "$VARIANTS"
for v in $VARIANTS; do check_variant "$v"; done   # still right after the runs

if grep -E '\[(error|crit|alert|emerg)\]' "$GATEWAY/logs/error.log" >/dev/null; then
  grep -E '\[(error|crit|alert|emerg)\]' "$GATEWAY/logs/error.log" | tail -n 5 >&2
  die "errors in the gateway log"
fi

# --- summary ---------------------------------------------------------------------------------
INFO=$(curl -s --max-time 5 "http://127.0.0.1:$CONTROL_PORT/__info")
{
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(machine_line)"
  echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $INFO"
  echo "- plugin: tree $TREE, native module installed $(date -u -r "$TREE/lib/lua/5.1/auth_router_native.so" +%Y-%m-%dT%H:%MZ); repo HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" status --porcelain -- src lua Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' (src/, lua/ or Cargo.* modified)')"
  echo "- $ROUNDS interleaved rounds of ${RUN_S}s per variant, wrk -t1 -c$CONNS, 1 gateway worker, pinning=$PIN, CPU from $CPU_SOURCE; every run checked (2xx, counters)"
} >"$OUT/machine.md"
luajit "$HERE/report.lua" table "$CSV" emptylua "$VARIANTS" >"$OUT/results.md"
cat "$OUT/machine.md" "$OUT/results.md"
log "results in $OUT/results.md, raw runs in $CSV"
