#!/usr/bin/env bash
# make demo: the auth-router gateway on plain nginx, in front of the spec mocks.
#
#   AUTH_ROUTER_TREE=/tmp/ngxtree bash scripts/demo.sh      # runs until Ctrl-C
#   DEMO_EXIT=1 AUTH_ROUTER_TREE=... bash scripts/demo.sh   # stops after the examples
#
# Starts two nginx instances in the foreground (children of this script), both
# configured by spec/fixtures/render_conf.lua, the generator the specs use:
#   mocks    spec/fixtures/mocks.conf + mocks.lua: auth 127.0.0.1:8001,
#            upstreams email :8002, calendar :8003, legacy :8004
#   gateway  spec/fixtures/gateway.conf (design §4b) on 127.0.0.1:8000, with
#            the plugin config examples/demo-config.json
# If one of ports 8000-8004 is taken, all five move to free ports and the
# config copy gets the new ones. Everything is written under .tmp/demo
# (DEMO_DIR to change). Ctrl-C (or the end, with DEMO_EXIT=1) stops both.
#
# Environment: AUTH_ROUTER_TREE (required, luarocks tree with the plugin),
# AUTH_ROUTER_NGINX (nginx binary, default nginx), LUAJIT (default luajit),
# DEMO_DIR, DEMO_EXIT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=$ROOT/spec/fixtures
: "${AUTH_ROUTER_TREE:?AUTH_ROUTER_TREE must name the luarocks tree holding the plugin (make demo builds one)}"
TREE=${AUTH_ROUTER_TREE%/}
NGINX=${AUTH_ROUTER_NGINX:-nginx}
LUAJIT=${LUAJIT:-luajit}
DEMO_DIR=${DEMO_DIR:-$ROOT/.tmp/demo}
DEMO_EXIT=${DEMO_EXIT:-0}

for f in "$TREE/lib/lua/5.1/auth_router_native.so" "$TREE/share/lua/5.1/auth_router/openresty.lua"; do
  [[ -f $f ]] || { echo "demo: $TREE does not hold the plugin (missing $f)" >&2; exit 1; }
done
command -v "$NGINX" >/dev/null || { echo "demo: nginx not found ($NGINX)" >&2; exit 1; }
command -v curl >/dev/null || { echo "demo: curl not found" >&2; exit 1; }

# --- ports -----------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

GW_PORT=8000 AUTH_PORT=8001 EMAIL_PORT=8002 CALENDAR_PORT=8003 LEGACY_PORT=8004 COLLECTOR_PORT=8005
busy=""
for p in 8000 8001 8002 8003 8004 8005; do
  if port_busy "$p"; then busy="$busy $p"; fi
done
if [[ -n $busy ]]; then
  read -r GW_PORT AUTH_PORT EMAIL_PORT CALENDAR_PORT LEGACY_PORT COLLECTOR_PORT < <("$LUAJIT" -e '
    local socket = require "socket"
    local s, p = {}, {}
    for i = 1, 6 do s[i] = assert(socket.bind("127.0.0.1", 0)); p[i] = select(2, s[i]:getsockname()) end
    for i = 1, 6 do s[i]:close() end
    print(table.concat(p, " "))')
  echo "note: port(s)$busy in use; using gateway $GW_PORT, auth $AUTH_PORT, email $EMAIL_PORT, calendar $CALENDAR_PORT, legacy $LEGACY_PORT, collector $COLLECTOR_PORT"
fi

# --- files -------------------------------------------------------------------
rm -rf "$DEMO_DIR/gateway" "$DEMO_DIR/mocks" "$DEMO_DIR/collector"
mkdir -p "$DEMO_DIR/collector"
for d in gateway mocks; do
  mkdir -p "$DEMO_DIR/$d/conf" "$DEMO_DIR/$d/logs" "$DEMO_DIR/$d/tmp"
  chmod 0755 "$DEMO_DIR/$d" "$DEMO_DIR/$d/tmp"   # workers run as nobody when started as root
done
CONFIG=$DEMO_DIR/gateway/conf/auth-router.json
sed -e "s/127\.0\.0\.1:8001/127.0.0.1:$AUTH_PORT/g" \
    -e "s/127\.0\.0\.1:8002/127.0.0.1:$EMAIL_PORT/g" \
    -e "s/127\.0\.0\.1:8003/127.0.0.1:$CALENDAR_PORT/g" \
    -e "s/\"port\": 8005/\"port\": $COLLECTOR_PORT/" \
    "$ROOT/examples/demo-config.json" > "$CONFIG"

"$LUAJIT" "$FIXTURES/render_conf.lua" mocks daemon=off log_level=notice \
  auth_port="$AUTH_PORT" email_port="$EMAIL_PORT" \
  calendar_port="$CALENDAR_PORT" legacy_port="$LEGACY_PORT" \
  > "$DEMO_DIR/mocks/conf/nginx.conf"
"$LUAJIT" "$FIXTURES/render_conf.lua" gateway daemon=off log_level=notice \
  port="$GW_PORT" default_target="127.0.0.1:$LEGACY_PORT" tree="$TREE" \
  config_path="$CONFIG" fault_location=0 \
  > "$DEMO_DIR/gateway/conf/nginx.conf"

# --- processes ---------------------------------------------------------------
MOCKS_PID="" GW_PID="" COLLECTOR_PID=""
stop_all() {
  trap - EXIT INT TERM
  for pid in $GW_PID $MOCKS_PID $COLLECTOR_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $GW_PID $MOCKS_PID $COLLECTOR_PID; do
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_all' EXIT
trap 'echo; echo "stopping..."; stop_all; exit 130' INT TERM

# start NAME PORT: nginx in the foreground as our child; waits until PORT answers
start() {
  local name=$1 port=$2 prefix=$DEMO_DIR/$1 pid i
  "$NGINX" -p "$prefix/" -c conf/nginx.conf -e "$prefix/logs/error.log" &
  pid=$!
  if [[ $name == mocks ]]; then MOCKS_PID=$pid; else GW_PID=$pid; fi   # stop_all stops it
  for ((i = 0; i < 250; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: $name nginx did not start; $prefix/logs/error.log says:" >&2
      cat "$prefix/logs/error.log" >&2
      return 1
    fi
    port_busy "$port" && break
    sleep 0.02
  done
  port_busy "$port" || { echo "demo: $name does not answer on port $port" >&2; return 1; }
}

# the log collector (spec/fixtures/collector.lua): one record per line in records.ndjson
"$LUAJIT" "$FIXTURES/collector.lua" dir="$DEMO_DIR/collector" port="$COLLECTOR_PORT" \
  watch=$$ lifetime=86400 &
COLLECTOR_PID=$!
for ((i = 0; i < 250; i++)); do [[ -s $DEMO_DIR/collector/ready ]] && break; sleep 0.02; done
[[ -s $DEMO_DIR/collector/ready ]] || { echo "demo: the log collector did not start" >&2; exit 1; }

start mocks "$AUTH_PORT"
for p in $EMAIL_PORT $CALENDAR_PORT $LEGACY_PORT; do
  for ((i = 0; i < 100; i++)); do port_busy "$p" && break; sleep 0.02; done
done
start gateway "$GW_PORT"

GW=http://127.0.0.1:$GW_PORT
cat <<EOF

auth-router demo: plain nginx + lua-nginx-module, plugin from $TREE
  gateway   $GW   (config: $CONFIG)
  mocks     auth 127.0.0.1:$AUTH_PORT, email :$EMAIL_PORT, calendar :$CALENDAR_PORT, legacy :$LEGACY_PORT (default target)
  collector 127.0.0.1:$COLLECTOR_PORT (records: $DEMO_DIR/collector/records.ndjson)
  logs      $DEMO_DIR/gateway/logs/error.log, $DEMO_DIR/mocks/logs/error.log

EOF

# show TITLE CURL-ARGS...: one request, its status, auth-router headers and (shortened) body
show() {
  local title=$1 out status body
  shift
  out=$(curl -sS -D "$DEMO_DIR/headers" -o - -w '\n%{http_code}' "$@") || out=$'\n000'
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  echo "# $title"
  printf '$ curl'
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then printf ' %s' "$a"; else printf " '%s'" "$a"; fi
  done
  echo
  echo "  -> $status  ${body:0:240}"
  grep -iE '^(www-authenticate|x-account-id):' "$DEMO_DIR/headers" | sed 's/^/     /' || true
  echo
}

calls() { curl -sS "http://127.0.0.1:$AUTH_PORT/__calls" | grep -o '[0-9]\+' || echo "?"; }

show "send an email: authenticated, routed to the email service, account headers added" \
  -H 'Authorization: Bearer good-alice' "$GW/send?to=bob"
show "list events: routed to the calendar service" \
  -H 'Authorization: Bearer good-bob' "$GW/events?from=today"
show "anything else: the default target (legacy); a spoofed x-account-id never gets through" \
  -H 'Authorization: Bearer good-carol' -H 'X-Account-Id: admin' "$GW/legacy/report"
before=$(calls)
for _ in 1 2 3 4 5; do curl -sS -o /dev/null -H 'Authorization: Bearer good-alice' "$GW/send"; done
echo "# 5 more requests as alice: served from the auth cache"
echo "  -> auth service calls: $before before, $(calls) after"
echo
show "no credential: 401 at the edge, no auth call" "$GW/send"
show "rejected credential: the auth service's 401 and WWW-Authenticate" \
  -H 'Authorization: Bearer deny' "$GW/send"
show "a form post: its password field is redacted in the log record" \
  -H 'Authorization: Bearer good-alice' --data 'user=alice&password=hunter2' "$GW/send"
sleep 0.5   # the log timer flushes every 200 ms
RECORDS=$DEMO_DIR/collector/records.ndjson
echo "# the log collector received $(wc -l < "$RECORDS") records; the last one:"
tail -n 1 "$RECORDS" | cut -c1-600
echo
echo
show "native counters of the worker that answers" "$GW/__stats"
sleep 1.1   # each worker adds its counters to the shared dict every second
echo "# node-wide metrics, Prometheus text format (every worker): a few lines"
echo '$ curl -s '"$GW"'/metrics'
curl -sS "$GW/metrics" | grep -E '^# auth-router|^auth_router_(requests_total|verdicts_total|auth_calls_total\{outcome="(ok|denied)"|cache_lookups_total|routed_total|auth_call_duration_seconds_count)' \
  | sed 's/^/  /'
echo

bad=$(grep -cE '\[(emerg|alert|crit|error|warn)\]' "$DEMO_DIR/gateway/logs/error.log" || true)
echo "gateway error log: $bad line(s) at warn or worse"
echo

if [[ $DEMO_EXIT == 1 ]]; then
  echo "DEMO_EXIT=1: stopping."
  exit 0
fi

echo "Try: curl -i -H 'Authorization: Bearer good-alice' $GW/send"
echo "     (mock tokens: good-<id>, deny, forbid, slow-<ms>-<id>, ... see spec/fixtures/mocks.lua)"
echo "Press Ctrl-C to stop."
# Returns when a trapped signal arrives or when either nginx exits.
while kill -0 "$GW_PID" 2>/dev/null && kill -0 "$MOCKS_PID" 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
echo "demo: an nginx exited unexpectedly; see the logs above" >&2
exit 1
