# Shared shell functions of bench/run.sh (nginx variants) and bench/kong.sh
# (real Kong variants). Source it after setting BENCH_TAG (log prefix) and
# HERE/ROOT; then call bench_settings, which reads the common BENCH_* knobs:
#   BENCH_SECONDS        seconds per measured wrk run (3)
#   BENCH_ROUNDS         interleaved rounds (4)
#   BENCH_WARMUP_SECONDS wrk warm-up per variant, not measured (2)
#   BENCH_CONNECTIONS    wrk connections (16), one wrk thread
#   BENCH_PIN            1: gateway worker on CPU 0, wrk + backend + sink on CPU 1 (1)
#   BENCH_KEEP           1: keep the temp dirs (configs, logs)
# Every process a script starts is stopped by PID on exit (trap), and every
# wait is bounded.

RUN_S=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-4}
WARMUP_S=${BENCH_WARMUP_SECONDS:-2}
CONNS=${BENCH_CONNECTIONS:-16}
PIN=${BENCH_PIN:-1}
KEEP=${BENCH_KEEP:-0}

die() { echo "$BENCH_TAG: $*" >&2; exit 1; }
log() { echo "$BENCH_TAG: $*" >&2; }

bench_settings() {
  local n
  for n in "$RUN_S" "$ROUNDS" "$WARMUP_S" "$CONNS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS/ROUNDS/WARMUP_SECONDS/CONNECTIONS must be integers"
  done
  [ "$RUN_S" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$CONNS" -ge 1 ] \
    || die "BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS must be >= 1"
  local cmd
  for cmd in nginx wrk curl luajit timeout ss python3; do
    command -v "$cmd" >/dev/null || die "'$cmd' is required"
  done
  if [ "$PIN" = 1 ] && { [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; }; then
    log "BENCH_PIN=1 needs 2 CPUs and taskset: not pinning"
    PIN=0
  fi
  WORK=$(mktemp -d "/tmp/auth-router-$BENCH_TAG.XXXXXX")
  chmod 755 "$WORK"   # Kong's workers (nobody, or root) must reach their prefix in it
  WRK=(wrk)
  [ "$PIN" = 1 ] && WRK=(taskset -c 1 wrk)
  trap bench_stop_all EXIT
  trap 'exit 130' INT TERM
}

# --- processes -------------------------------------------------------------------
STARTED=()     # nginx prefixes whose master we started
PIDS=()        # other processes we started (sink)
WRK_PID=""
bench_extra_stop() { :; }   # kong.sh overrides: stops Kong

stop_master() { # pidfile: TERM the master, wait up to 5 s, then KILL it and its workers
  local pid children i
  pid=$(cat "$1" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  children=$(pgrep -P "$pid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL "$pid" $children 2>/dev/null || true
}

bench_stop_all() {
  local prefix pid
  if [ -n "$WRK_PID" ]; then
    kill -TERM "$WRK_PID" 2>/dev/null || true
    wait "$WRK_PID" 2>/dev/null || true
  fi
  bench_extra_stop
  for prefix in "${STARTED[@]}"; do stop_master "$prefix/logs/nginx.pid"; done
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  STARTED=() PIDS=()
  if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

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
  for i in $(seq 150); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1${2:-/__none}" && return 0
    sleep 0.1
  done
  die "nothing answers on 127.0.0.1:$1"
}

worker_of() { # master pid -> its single worker pid
  local master=$1 workers
  workers=$(pgrep -P "$master" || true)
  [ "$(echo "$workers" | wc -w)" = 1 ] || die "expected one worker under master $master, got: $workers"
  echo "$workers"
}

pin() { # pid cpu
  [ "$PIN" = 1 ] && taskset -pc "$2" "$1" >/dev/null
  return 0
}

# --- backend: upstreams (3 ports), mock auth, log sink -------------------------------
start_backend() {
  UPSTREAM_PORT=$(free_port) EMAIL_PORT=$(free_port) CALENDAR_PORT=$(free_port)
  AUTH_PORT=$(free_port) SINK_PORT=$(free_port) SINK_CONTROL_PORT=$(free_port)
  BACKEND=$WORK/backend
  mkdir -p "$BACKEND/conf"
  render "$HERE/backend.conf" "$BACKEND/conf/nginx.conf" \
    upstream_port="$UPSTREAM_PORT" email_port="$EMAIL_PORT" calendar_port="$CALENDAR_PORT" \
    auth_port="$AUTH_PORT" fixtures="$ROOT/spec/fixtures" bench_dir="$HERE"
  start_nginx "$BACKEND"
  wait_port "$UPSTREAM_PORT"
  wait_port "$AUTH_PORT" /__calls
  BE_WORKER=$(worker_of "$(cat "$BACKEND/logs/nginx.pid")")
  pin "$BE_WORKER" 1
  local sink=(python3 "$HERE/sink.py" "$SINK_PORT" "$SINK_CONTROL_PORT" "$$")
  [ "$PIN" = 1 ] && sink=(taskset -c 1 "${sink[@]}")
  "${sink[@]}" 2>"$WORK/sink.log" &
  PIDS+=($!)
  local i
  for i in $(seq 50); do
    sink_records >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the log sink does not answer: $(cat "$WORK/sink.log")"
}

auth_calls() { curl -s --max-time 5 "http://127.0.0.1:$AUTH_PORT/__calls" | sed 's/.*"calls":\([0-9]*\).*/\1/'; }
sink_records() { # -> "<records> <bytes>"
  local line
  line=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SINK_CONTROL_PORT && cat <&3") || return 1
  [ -n "$line" ] || return 1
  echo "$line"
}

# On-CPU nanoseconds of a pid (schedstat), and "utime stime" in clock ticks (stat).
cpu_ns()    { awk '{print $1}' "/proc/$1/schedstat"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

# --- wrk ------------------------------------------------------------------------------
WRK_LAST=""
after_wrk() { :; }   # variant: run.sh overrides (where the next run of a variant starts)
run_wrk() { # variant seconds url [VAR=value...] -> sets WRK_LAST, checks errors and non-2xx, after_wrk
  local v=$1 s=$2 url=$3 out rc=0
  shift 3
  # In the background so that a signal to this script is handled at once.
  env BENCH_DIR="$HERE" "$@" timeout $((s + 20)) "${WRK[@]}" -t1 -c"$CONNS" -d"${s}s" \
    --timeout 2s -s "$HERE/wrk.lua" "$url" >"$WORK/wrk.out" 2>&1 &
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
    || die "variant $v: $errors socket errors, $non2xx non-2xx answers: $WRK_LAST $(echo "$out" | grep BENCH_FIRST_NON2XX || echo '(BENCH_DEBUG=1 shows the first one)')"
  after_wrk "$v"
}

# Interleaved measurement. The caller defines:
#   variant_url V            the URL wrk loads
#   variant_env V            VAR=value words for wrk.lua (may print nothing)
#   before_run V / after_run V REQUESTS
#                            checks around each measured run; after_run runs
#                            after the CPU reading, before_run before it;
#                            settle V (optional) runs inside the CPU window
#                            after wrk ends (e.g. wait for a log queue to drain)
# and sets GW_WORKER. Writes $CSV (one row per run).
settle() { :; }
measure() { # csv "variants"
  local csv=$1 variants=$2 r v ns0 ns1 u0 s0 u1 s1 ns utime stime env_words
  local requests duration_us p50_us p99_us
  [ -r "/proc/$GW_WORKER/schedstat" ] && CPU_SOURCE=schedstat || CPU_SOURCE=stat
  TICK_HZ=$(getconf CLK_TCK)
  echo "round,variant,requests,duration_us,cpu_ns,utime_ticks,stime_ticks,p50_us,p99_us" >"$csv"
  for v in $variants; do
    log "warm-up $v (${WARMUP_S}s)"
    # shellcheck disable=SC2046
    [ "$WARMUP_S" -gt 0 ] && run_wrk "$v" "$WARMUP_S" "$(variant_url "$v")" $(variant_env "$v")
    settle "$v"
  done
  for r in $(seq "$ROUNDS"); do
    for v in $variants; do
      before_run "$v"
      if [ "$CPU_SOURCE" = schedstat ]; then ns0=$(cpu_ns "$GW_WORKER"); else ns0=0; fi
      read -r u0 s0 < <(cpu_ticks "$GW_WORKER")
      env_words=$(variant_env "$v")
      # shellcheck disable=SC2086
      run_wrk "$v" "$RUN_S" "$(variant_url "$v")" $env_words
      settle "$v"
      if [ "$CPU_SOURCE" = schedstat ]; then ns1=$(cpu_ns "$GW_WORKER"); else ns1=0; fi
      read -r u1 s1 < <(cpu_ticks "$GW_WORKER")
      eval "$(echo "$WRK_LAST" | tr ' ' '\n' | sed -n 's/^\(requests\|duration_us\|p50_us\|p99_us\)=\([0-9]*\)$/\1=\2/p')"
      [ "${requests:-0}" -gt 0 ] || die "variant $v: wrk completed no request"
      ns=$((ns1 - ns0)) utime=$((u1 - u0)) stime=$((s1 - s0))
      [ "$CPU_SOURCE" = schedstat ] || ns=$(((utime + stime) * 1000000000 / TICK_HZ))
      echo "$r,$v,$requests,$duration_us,$ns,$utime,$stime,$p50_us,$p99_us" >>"$csv"
      after_run "$v" "$requests"
      log "round $r/$ROUNDS $v: $requests req, $(awk -v n="$ns" -v q="$requests" 'BEGIN{printf "%.2f", n/1000/q}') us CPU/req"
    done
  done
}

machine_line() {
  echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
