#!/usr/bin/env bash
# make soak: a long mixed load on the demo-like gateway (issue #9), checking
# that worker memory and descriptors stay flat and the error log stays clean.
#
#   make soak                                              # builds a fresh tree first
#   AUTH_ROUTER_TREE=/tmp/ngxtree bash scripts/soak.sh
#
# Starts, each a child of this script and stopped by pid at the end:
#   mocks      spec/fixtures/mocks.conf (auth service + email, calendar,
#              legacy echo upstreams), 1 worker
#   gateway    spec/fixtures/gateway.conf (as `make demo`), 2 workers with
#              reuseport, config: routes, account headers, hide_credentials,
#              body logging (requests and responses, `password` redacted) to
#              a tcp sink; short TTLs, cache_size 2000 and a 2 MiB shared dict
#              (auth.shared_dict soak_cache) so that L1 and L2 are full, their
#              steady size, before the warm-up ends (the demo's 32 MiB dict
#              would still be filling: its pages count in each worker's RSS
#              as they are first touched)
#   sink       bench/sink.py (reads and counts records, keeps nothing), flapped
#              by a loop: up SOAK_FLAP_UP s, down (killed: port refused)
#              SOAK_FLAP_DOWN s, again and again
# and drives wrk (bench/soak_wrk.lua: cache hits, POSTs with bodies logged,
# misses with a new credential each, 401s and 403s from the auth service and
# cached, 401s without credentials), paced to about SOAK_RATE requests/s, for
# SOAK_WARMUP_SECONDS, then SOAK_SECONDS more (defaults: about 90k + 225k
# requests, 4 minutes in all). The warm-up spans two sink outages: the log
# queue's memory, like the caches', reaches its steady size in it.
#
# Each worker's VmRSS, RssAnon, RssShmem and open descriptors
# (/proc/<pid>/status, /proc/<pid>/fd) are sampled every SOAK_SAMPLE_S during
# the load, and at two quiet points (sink up, log queues empty, idle keepalive
# connections expired, a full Lua GC in each worker): after the warm-up (base)
# and at the end (end); then again at each after glibc's malloc_trim(0)
# (base_trimmed, end_trimmed), which hands free heap pages back: glibc keeps
# the pages of the last burst of log records (a sink outage fills the queue)
# and that noise, about 1 MiB either way, would otherwise dwarf 5 % of a
# 16 MiB worker. Memory in use, a leak included, is unchanged by the trim.
#
# Fails (exit 1) when, per worker, trimmed end VmRSS > trimmed base VmRSS *
# (1 + SOAK_RSS_GROWTH_PCT / 100), or end descriptors > base descriptors;
# when wrk saw a socket error or a status other than 200, 401, 403; when a
# worker is gone or a counter says internal error or auth failure; when the
# log books do not balance (queued != sent + dropped); or when the error log
# has a line at warn or worse other than the expected ones while the sink is
# down (our "[auth-router] log collector ... failed" line, and nginx's own
# reset/broken-pipe line of the log timer or of a pooled idle connection).
# Exit 2: the run itself failed.
# Results go to SOAK_OUT (default .tmp/soak): summary.txt, samples.csv and
# the gateway's error.log.
#
# Environment (defaults): AUTH_ROUTER_TREE (required), AUTH_ROUTER_NGINX
# (nginx), SOAK_SECONDS (150), SOAK_WARMUP_SECONDS (60), SOAK_RATE (1800;
# 0: unpaced), SOAK_CONNECTIONS (32), SOAK_FLAP_UP (20), SOAK_FLAP_DOWN (5),
# SOAK_SAMPLE_S (5), SOAK_RSS_GROWTH_PCT (5), SOAK_OUT (.tmp/soak).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=$ROOT/spec/fixtures
: "${AUTH_ROUTER_TREE:?AUTH_ROUTER_TREE must name the luarocks tree holding the plugin (make soak builds one)}"
TREE=$(cd "$AUTH_ROUTER_TREE" && pwd)
NGINX=${AUTH_ROUTER_NGINX:-nginx}
SOAK_S=${SOAK_SECONDS:-150}
WARMUP_S=${SOAK_WARMUP_SECONDS:-60}
CONNS=${SOAK_CONNECTIONS:-32}
RATE=${SOAK_RATE:-1800}
FLAP_UP=${SOAK_FLAP_UP:-20}
FLAP_DOWN=${SOAK_FLAP_DOWN:-5}
SAMPLE_S=${SOAK_SAMPLE_S:-5}
RSS_PCT=${SOAK_RSS_GROWTH_PCT:-5}
OUT=${SOAK_OUT:-$ROOT/.tmp/soak}

die() { echo "soak: $*" >&2; exit 2; }
say() { echo "soak: $*" >&2; }

for n in "$SOAK_S" "$WARMUP_S" "$RATE" "$CONNS" "$FLAP_UP" "$FLAP_DOWN" "$SAMPLE_S" "$RSS_PCT"; do
  [[ $n =~ ^[0-9]+$ ]] || die "SOAK_* settings must be integers"
done
for cmd in "$NGINX" wrk curl luajit python3 timeout; do
  command -v "$cmd" >/dev/null || die "'$cmd' is required"
done
[ -f "$TREE/lib/lua/5.1/auth_router_native.so" ] || die "no auth_router_native.so in $TREE/lib/lua/5.1"
[ "$CONNS" -ge 1 ] || die "SOAK_CONNECTIONS must be >= 1"
# each connection waits DELAY_MS before each request: CONNS * 1000 / DELAY_MS
# requests/s at most (less by the answers' own latency)
DELAY_MS=0
[ "$RATE" = 0 ] || DELAY_MS=$((CONNS * 1000 / RATE))

WORK=$(mktemp -d /tmp/auth-router-soak.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$OUT"

# --- processes: every one we start is stopped by pid -------------------------
MASTERS=()        # nginx prefixes
FLAPPER_PID=""
WRK_PID=""
SAMPLER_PID=""
SINK_PID=""

stop_master() { # prefix
  local pid i
  pid=$(cat "$1/logs/nginx.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_all() {
  trap - EXIT INT TERM
  local pid prefix
  for pid in $WRK_PID $SAMPLER_PID $FLAPPER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  sink_down
  for prefix in "${MASTERS[@]}"; do stop_master "$prefix"; done
  rm -rf "$WORK"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# --- ports --------------------------------------------------------------------
read -r GW_PORT AUTH_PORT EMAIL_PORT CALENDAR_PORT LEGACY_PORT SINK_PORT CONTROL_PORT < <(luajit -e '
  local socket = require "socket"
  local s, p = {}, {}
  for i = 1, 7 do s[i] = assert(socket.bind("127.0.0.1", 0)); p[i] = select(2, s[i]:getsockname()) end
  for i = 1, 7 do s[i]:close() end
  print(table.concat(p, " "))')

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port what
  local i
  for i in $(seq 100); do
    port_answers "$1" && return 0
    sleep 0.05
  done
  die "$2 does not answer on port $1"
}

# --- the log sink, flapped ------------------------------------------------------
# Records and bytes the sink counted, summed over its lives (read before each kill).
SINK_TOTALS=$WORK/sink_totals
echo "0 0" > "$SINK_TOTALS"

sink_up() {
  python3 "$ROOT/bench/sink.py" "$SINK_PORT" "$CONTROL_PORT" "$$" 2>>"$WORK/sink.log" &
  SINK_PID=$!
  echo "$SINK_PID" > "$WORK/sink.pid"
  wait_port "$CONTROL_PORT" "the log sink"
}

sink_down() {
  local pid line
  pid=$(cat "$WORK/sink.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  line=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$CONTROL_PORT && cat <&3" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$WORK/sink.pid"
  if [ -n "$line" ]; then
    read -r r b < "$SINK_TOTALS"
    echo "$((r + ${line% *})) $((b + ${line#* }))" > "$SINK_TOTALS"
  fi
}

FLAPS=$WORK/flaps
: > "$FLAPS"
flapper() {
  trap 'sink_down; exit 0' TERM
  while true; do
    sleep "$FLAP_UP" & wait $!
    sink_down
    echo down >> "$FLAPS"
    sleep "$FLAP_DOWN" & wait $!
    sink_up
  done
}

# --- config and nginx instances ---------------------------------------------------
CONFIG=$WORK/auth-router.json
cat > "$CONFIG" <<EOF
{
  "auth": { "url": "http://127.0.0.1:$AUTH_PORT/auth", "timeout_ms": 1000, "keepalive_ms": 2000,
            "ttl_s": 5, "negative_ttl_s": 5, "stale_ttl_s": 5, "cache_size": 2000,
            "shared_dict": "soak_cache" },
  "api_version": { "header": "x-api-version", "default": "v1" },
  "routes": [
    { "name": "email", "paths": ["/send"], "target": "127.0.0.1:$EMAIL_PORT" },
    { "name": "calendar", "paths": ["/events", "/calendars"], "target": "127.0.0.1:$CALENDAR_PORT" }
  ],
  "upstream_headers": [ { "name": "x-account-id", "pointer": "/id" },
                        { "name": "x-account-plan", "pointer": "/plan" } ],
  "response_headers": [ { "name": "x-account-id", "pointer": "/id" } ],
  "route_header": "x-route",
  "hide_credentials": true,
  "log": { "enabled": true, "sink": "tcp", "host": "127.0.0.1", "port": $SINK_PORT,
           "request_body": true, "response_body": true, "max_body_bytes": 4096,
           "redact_body_fields": ["password"], "flush_interval_ms": 200,
           "keepalive_ms": 2000, "timeout_ms": 2000, "retry_max_s": 30, "queue_max_bytes": 1048576 }
}
EOF

# OpenResty's nginx has the lua module built in: no Debian load_module lines
MODULES=()
if "$NGINX" -V 2>&1 | grep -q openresty; then MODULES=(modules=); fi

for d in mocks gateway; do
  mkdir -p "$WORK/$d/conf" "$WORK/$d/logs" "$WORK/$d/tmp"
  chmod 0755 "$WORK/$d" "$WORK/$d/tmp"
done
luajit "$FIXTURES/render_conf.lua" mocks log_level=notice access_log=off "${MODULES[@]}" \
  auth_port="$AUTH_PORT" email_port="$EMAIL_PORT" calendar_port="$CALENDAR_PORT" legacy_port="$LEGACY_PORT" \
  > "$WORK/mocks/conf/nginx.conf"
luajit "$FIXTURES/render_conf.lua" gateway log_level=notice access_log=off workers=2 listen_options=reuseport \
  "${MODULES[@]}" \
  port="$GW_PORT" default_target="127.0.0.1:$LEGACY_PORT" tree="$TREE" config_path="$CONFIG" fault_location=0 \
  http='    lua_socket_log_errors off;   # as Kong does: our own line says what failed
    lua_shared_dict soak_cache 2m;' \
  locations='        # soak only: a full Lua GC in the answering worker; its pid and Lua heap.
        # ?trim=1: also glibc malloc_trim(0) (free heap pages back to the kernel)
        location = /__gc {
            content_by_lua_block {
                collectgarbage("collect")
                if ngx.var.arg_trim == "1" then
                    local ffi = require "ffi"
                    pcall(ffi.cdef, "int malloc_trim(size_t pad);")
                    ffi.C.malloc_trim(0)
                end
                ngx.say(ngx.worker.pid(), " ", math.floor(collectgarbage("count")))
            }
        }' \
  > "$WORK/gateway/conf/nginx.conf"

start_nginx() { # name port
  "$NGINX" -p "$WORK/$1/" -c conf/nginx.conf -e "$WORK/$1/logs/error.log" \
    || die "$1 nginx did not start: $(tail -n 5 "$WORK/$1/logs/error.log")"
  MASTERS+=("$WORK/$1")
  wait_port "$2" "$1"
}

sink_up
start_nginx mocks "$AUTH_PORT"
start_nginx gateway "$GW_PORT"
GW_LOG=$WORK/gateway/logs/error.log
MASTER=$(cat "$WORK/gateway/logs/nginx.pid")
mapfile -t WORKERS < <(pgrep -P "$MASTER" | sort -n)
[ "${#WORKERS[@]}" = 2 ] || die "expected 2 gateway workers, got: ${WORKERS[*]}"
say "gateway 127.0.0.1:$GW_PORT (workers ${WORKERS[*]}), mocks :$AUTH_PORT, sink :$SINK_PORT; work dir $WORK"

# --- measurements ---------------------------------------------------------------------
# "<VmRSS kB> <RssAnon kB> <RssShmem kB> <open fds>" of a pid
measure() {
  local fds
  fds=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l)
  awk -v fds="$fds" '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssShmem:/ {s = $2}
                     END {print r, a, s, fds}' "/proc/$1/status"
}

SAMPLES=$OUT/samples.csv
LUA_HEAP=$WORK/lua_heap
: > "$LUA_HEAP"
echo "t_s,phase,pid,vmrss_kb,rssanon_kb,rssshmem_kb,fds" > "$SAMPLES"
T0=$(date +%s)
sample() { # phase
  local pid
  for pid in "${WORKERS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "gateway worker $pid is gone"
    read -r rss anon shm fds < <(measure "$pid")
    echo "$(( $(date +%s) - T0 )),$1,$pid,$rss,$anon,$shm,$fds" >> "$SAMPLES"
  done
}

sampler() { # phase
  trap 'exit 0' TERM
  while true; do
    sample "$1"
    sleep "$SAMPLE_S" & wait $!
  done
}

# Sums of every worker's counters: reuseport spreads fresh connections, so
# ask until both pids answered.
STATS_PY='
import json, sys
seen = {}
for line in sys.stdin:
    line = line.strip()
    if line:
        s = json.loads(line)
        seen[s["worker_pid"]] = s
if len(seen) != int(sys.argv[1]):
    sys.exit("saw %d workers" % len(seen))
tot = {}
for s in seen.values():
    for k, v in s.items():
        if k != "worker_pid" and isinstance(v, (int, float)):
            tot[k] = tot.get(k, 0) + v
print(json.dumps(tot, sort_keys=True))
'
stats_all() {
  local i
  for i in $(seq 40); do curl -s --max-time 2 "http://127.0.0.1:$GW_PORT/__stats"; echo; done \
    | python3 -c "$STATS_PY" 2>/dev/null "${#WORKERS[@]}"
}
stat_of() { # json name
  python3 -c 'import json,sys; print(int(json.loads(sys.argv[1]).get(sys.argv[2], 0)))' "$1" "$2"
}

# A quiet point (phase): the sink up, every worker's queue empty, idle
# keepalive connections (auth, sink: keepalive_ms 2000) closed, a full Lua GC
# done in each worker.
quiesce() {
  local i st q
  [ -f "$WORK/sink.pid" ] || sink_up
  for i in $(seq 120); do
    st=$(stats_all) || { sleep 0.5; continue; }
    q=$(stat_of "$st" log_queue_bytes)
    [ "$q" = 0 ] && break
    sleep 0.5
  done
  [ "${q:-1}" = 0 ] || die "the log queues did not drain (log_queue_bytes $q)"
  sleep 3
  # a full Lua GC in each worker: compare live memory, not garbage waiting
  # for the collector's next cycle
  gc_all "$1"
}

gc_all() { # phase [query]: /__gc in every worker, records the Lua heap
  local seen=" " line i
  for i in $(seq 40); do
    line=$(curl -s --max-time 2 "http://127.0.0.1:$GW_PORT/__gc${2:-}") || continue
    case "$seen" in *" ${line% *} "*) ;; *) seen="$seen${line% *} "; echo "$1,$line" >> "$LUA_HEAP" ;; esac
    [ "$(echo $seen | wc -w)" -ge "${#WORKERS[@]}" ] && break
  done
  [ "$(echo $seen | wc -w)" -ge "${#WORKERS[@]}" ] || die "could not reach every worker's /__gc"
}

run_wrk() { # seconds base -> prints the SOAK_RESULT fields
  local out=$WORK/wrk-$2.out rc=0
  SOAK_THREAD_BASE=$2 SOAK_DELAY_MS=$DELAY_MS timeout $(($1 + 30)) wrk -t2 -c"$CONNS" -d"${1}s" --timeout 5s \
    -s "$ROOT/bench/soak_wrk.lua" "http://127.0.0.1:$GW_PORT" > "$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  [ "$rc" = 0 ] || die "wrk failed (exit $rc): $(cat "$out")"
  grep -h '^SOAK_UNEXPECTED' "$out" >&2 || true
  sed -n 's/^SOAK_RESULT //p' "$out"
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# --- the run ---------------------------------------------------------------------------
flapper &
FLAPPER_PID=$!

say "warm-up: ${WARMUP_S} s of mixed load at about $RATE requests/s (the sink flaps: up ${FLAP_UP} s, down ${FLAP_DOWN} s)"
sampler warmup &
SAMPLER_PID=$!
WARM=$(run_wrk "$WARMUP_S" w)
kill -TERM "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
# the flapper pauses for the quiet point (it would take the sink down again)
kill -TERM "$FLAPPER_PID"; wait "$FLAPPER_PID" 2>/dev/null || true; FLAPPER_PID=""
quiesce base
sample base
gc_all trim "?trim=1"
sample base_trimmed
STATS0=$(stats_all) || die "cannot read /__stats of both workers"
LOG_MARK=$(stat -c %s "$GW_LOG")

say "soak: ${SOAK_S} s of mixed load"
flapper &
FLAPPER_PID=$!
sampler soak &
SAMPLER_PID=$!
SOAK=$(run_wrk "$SOAK_S" s)
kill -TERM "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
kill -TERM "$FLAPPER_PID"; wait "$FLAPPER_PID" 2>/dev/null || true; FLAPPER_PID=""
quiesce end
sample end
gc_all trim "?trim=1"
sample end_trimmed
STATS1=$(stats_all) || die "cannot read /__stats of both workers"
cp "$GW_LOG" "$OUT/error.log"

# --- checks and report -------------------------------------------------------------------
export SOAK_WARM="$WARM" SOAK_SOAK="$SOAK" SOAK_STATS0="$STATS0" SOAK_STATS1="$STATS1" \
       SOAK_SAMPLES="$SAMPLES" SOAK_LOG="$GW_LOG" SOAK_LOG_MARK="$LOG_MARK" SOAK_RSS_PCT="$RSS_PCT" \
       SOAK_WORKERS="${WORKERS[*]}" SOAK_SINK="$(cat "$SINK_TOTALS")" SOAK_LUA_HEAP="$LUA_HEAP" SOAK_FLAPS="$(wc -l < "$FLAPS")" \
       SOAK_SECONDS_RUN="$SOAK_S" SOAK_WARMUP_RUN="$WARMUP_S" SOAK_CONNS="$CONNS" SOAK_RATE="$RATE"
sink_down   # its count belongs in the report
export SOAK_SINK="$(cat "$SINK_TOTALS")"
set +e
python3 "$ROOT/scripts/soak_report.py" | tee "$OUT/summary.txt"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
