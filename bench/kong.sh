#!/usr/bin/env bash
# auth-router in real Kong 3.9.3: the hit path against Kong's own key-auth.
#
#   bash bench/kong.sh        (bench/suite.sh runs it when ../shared/kong exists)
#
# Kong from ../shared/kong (built once at /var/cache/kong-3.9.3 by ensure.sh),
# DB-less, ONE worker pinned to CPU 0, one Service (the bench backend's
# upstream, keepalive) and one Route per variant:
#   kong-none           no plugin
#   kong-key-auth       key-auth (`apikey` header; 8 consumers with one key each)
#   kong-key-auth-full  key-auth + request-transformer (strips, then adds 2
#                       upstream headers)
#                       + response-transformer (1 response header)
#   kong-auth-router    auth-router, L1 hit: bench/configs.py's `hit` config
#                       (20 non-matching routes, 2 upstream headers from the
#                       account, 1 response header)
#   kong-auth-router-1000  the same with 1000 non-matching routes (`hit-1000`):
#                       Kong walks a plugin's whole config table per request
#                       (kong.vault.update) unless the plugin released it
# Every request carries both credentials (`Authorization: Bearer good-u<k>`
# and `apikey: key-u<k>`), so all variants parse the same request.
# Interleaved rounds, worker CPU per request from /proc/<pid>/schedstat, as
# bench/run.sh (shared functions in bench/lib.sh, same BENCH_* knobs).
# Checks: every answer 2xx; the headers arrive (backend echo, response); the
# mock auth service sees no call during the measured runs (every
# auth-router request was a cache hit; Kong exposes no plugin counters here);
# no [error] in Kong's log.
#
# The rock is installed into Kong's tree with luarocks (as scripts/kong-test.sh
# does). Kong is stopped by PID at exit, also on failure.
#
# Environment, besides bench/lib.sh's: KONG_BENCH_VARIANTS (all four, in
# that order), KONG_SHARED (../shared/kong), KONG_BUILD_PREFIX
# (/var/cache/kong-3.9.3), BENCH_OUT (.tmp/bench), BENCH_CREDENTIALS (8).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_TAG=kong-bench
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

ALL="kong-none kong-key-auth kong-key-auth-full kong-auth-router kong-auth-router-1000"
VARIANTS=${KONG_BENCH_VARIANTS:-$ALL}
SHARED=${KONG_SHARED:-$ROOT/../shared/kong}
KPREFIX=${KONG_BUILD_PREFIX:-/var/cache/kong-3.9.3}
OUT=${BENCH_OUT:-$ROOT/.tmp/bench}
CREDS=${BENCH_CREDENTIALS:-8}

[ -x "$SHARED/ensure.sh" ] || die "no Kong build kit at $SHARED"
for v in $VARIANTS; do
  case " $ALL " in *" $v "*) ;; *) die "unknown variant '$v' in KONG_BENCH_VARIANTS ($ALL)" ;; esac
done
bench_settings
start_backend   # before env.sh: the backend is Debian's nginx, env.sh puts Kong's first in PATH

log "Kong build: $SHARED/ensure.sh $KPREFIX"
env_sh=$("$SHARED/ensure.sh" "$KPREFIX") || die "cannot build Kong"
# shellcheck disable=SC1090
. "$env_sh"

log "installing the rock into $KPREFIX"
(cd "$ROOT" && luarocks --lua-version=5.1 --tree "$KPREFIX" make \
    kong-plugin-auth-router-0.1.0-1.rockspec >"$WORK/luarocks.log" 2>&1) \
  || { tail -n 20 "$WORK/luarocks.log" >&2; die "cannot install the rock into $KPREFIX"; }

# --- kong.yml -------------------------------------------------------------------------
CONF_DIR=$WORK/conf
mkdir -p "$CONF_DIR"
python3 "$HERE/configs.py" "$CONF_DIR" "$AUTH_PORT" "$UPSTREAM_PORT" "$UPSTREAM_PORT" "$UPSTREAM_PORT" "$SINK_PORT"
python3 - "$CONF_DIR/hit.json" "$CONF_DIR/hit-1000.json" "$UPSTREAM_PORT" "$CREDS" >"$WORK/kong.yml" <<'PYEOF'
import json, sys
hit, hit1000 = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
upstream, creds = int(sys.argv[3]), int(sys.argv[4])
def route(name, plugins):
    return {"name": name, "paths": [f"/{name}"], "strip_path": False, "plugins": plugins}
key_auth = {"name": "key-auth", "config": {"key_names": ["apikey"]}}
conf = {
    "_format_version": "3.0",
    "services": [{
        "name": "backend", "url": f"http://127.0.0.1:{upstream}",
        "routes": [
            route("kong-none", []),
            route("kong-key-auth", [key_auth]),
            route("kong-key-auth-full", [
                key_auth,
                # remove runs before add: the client cannot spoof them (as auth-router strips)
                {"name": "request-transformer", "config": {
                    "remove": {"headers": ["x-account-id", "x-account-plan"]},
                    "add": {"headers": ["x-account-id:kong-full", "x-account-plan:pro"]}}},
                {"name": "response-transformer", "config": {"add": {"headers": ["x-account-plan:pro"]}}},
            ]),
            route("kong-auth-router", [{"name": "auth-router", "config": hit}]),
            route("kong-auth-router-1000", [{"name": "auth-router", "config": hit1000}]),
        ],
    }],
    "consumers": [{"username": f"u{k}", "keyauth_credentials": [{"key": f"key-u{k}"}]}
                  for k in range(1, creds + 1)],
}
json.dump(conf, sys.stdout, indent=1)   # JSON is YAML
PYEOF

# --- Kong -------------------------------------------------------------------------------
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
export KONG_PREFIX=$WORK/kong KONG_DATABASE=off KONG_DECLARATIVE_CONFIG=$WORK/kong.yml
export KONG_PROXY_LISTEN="127.0.0.1:$PROXY_PORT" KONG_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT"
export KONG_ADMIN_GUI_LISTEN=off KONG_STATUS_LISTEN=off KONG_NGINX_WORKER_PROCESSES=1
export KONG_ANONYMOUS_REPORTS=off KONG_LOG_LEVEL=warn KONG_PLUGINS=bundled,auth-router
export KONG_NGINX_HTTP_LUA_SHARED_DICT="auth_router 32m"
export KONG_PROXY_ACCESS_LOG=off KONG_ADMIN_ACCESS_LOG=off   # as the nginx gateway (access_log off)
[ "$(id -u)" = 0 ] && export KONG_NGINX_USER="root root"
bench_extra_stop() { stop_master "$KONG_PREFIX/pids/nginx.pid"; }

log "starting Kong (prefix $KONG_PREFIX)"
# cwd = the Kong build prefix: Kong finds its .proto files in ./kong/include.
(cd "$KPREFIX" && timeout 120 kong start >"$WORK/kong-start.log" 2>&1) \
  || { cat "$WORK/kong-start.log" >&2; tail -n 20 "$KONG_PREFIX/logs/error.log" >&2 2>/dev/null; die "kong start failed"; }
wait_port "$PROXY_PORT" /kong-none
MASTER=$(cat "$KONG_PREFIX/pids/nginx.pid")
GW_WORKER=""
for pid in $(pgrep -P "$MASTER"); do
  grep -q 'worker process' "/proc/$pid/cmdline" 2>/dev/null && GW_WORKER="$GW_WORKER $pid"
done
GW_WORKER=$(echo $GW_WORKER)
[ -n "$GW_WORKER" ] && [ "$(echo "$GW_WORKER" | wc -w)" = 1 ] || die "expected one Kong worker under $MASTER, got '$GW_WORKER'"
pin "$GW_WORKER" 0
log "Kong worker pid $GW_WORKER, backend worker pid $BE_WORKER, pinning $PIN"

variant_url() { echo "http://127.0.0.1:$PROXY_PORT/$1/send"; }
variant_env() { echo "BENCH_CREDENTIALS=$CREDS BENCH_APIKEY=1 BENCH_PATH=/$1/send"; }

check_variant() {
  local v=$1 k headers status seen plan
  for k in $(seq "$CREDS"); do
    headers=$(curl -s -D - -o /dev/null --max-time 5 -H "Authorization: Bearer good-u$k" \
              -H "apikey: key-u$k" -H "X-Account-Id: spoofed" "$(variant_url "$v")" | tr -d '\r')
    status=$(echo "$headers" | awk 'NR==1{print $2}')
    [ "$status" = 200 ] || die "variant $v: credential $k answered '$status', expected 200"
    seen=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-seen-account-id"{print $2}')
    plan=$(echo "$headers" | awk -F': ' 'tolower($1)=="x-account-plan"{print $2}')
    case $v in
      kong-auth-router|kong-auth-router-1000)
        [ "$seen" = "u$k" ] && [ "$plan" = pro ] || die "variant $v: upstream saw x-account-id '$seen', x-account-plan '$plan'" ;;
      kong-key-auth-full)
        [[ "$seen" == *kong-full* ]] && [ "$plan" = pro ] || die "variant $v: upstream saw x-account-id '$seen', x-account-plan '$plan'" ;;
    esac
  done
  case $v in kong-key-auth|kong-key-auth-full|kong-auth-router|kong-auth-router-1000)
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(variant_url "$v")")
    [ "$status" = 401 ] || die "variant $v: no credential answered $status, expected 401" ;;
  esac
}

CALLS0=0
before_run() { CALLS0=$(auth_calls); }
after_run() {
  local calls
  calls=$(auth_calls)
  [ "$calls" = "$CALLS0" ] || die "variant $1: the auth service saw $((calls - CALLS0)) calls during the run: not every request was a cache hit"
}

for v in $VARIANTS; do check_variant "$v"; done
mkdir -p "$OUT"
CSV=$OUT/kong-runs.csv
measure "$CSV" "$VARIANTS"
for v in $VARIANTS; do check_variant "$v"; done

if grep -E '\[(error|crit|alert|emerg)\]' "$KONG_PREFIX/logs/error.log" >/dev/null; then
  grep -E '\[(error|crit|alert|emerg)\]' "$KONG_PREFIX/logs/error.log" | tail -n 5 >&2
  die "errors in Kong's log"
fi

{
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(machine_line)"
  echo "- Kong $(kong version 2>/dev/null | head -1), $("$KPREFIX/openresty/bin/openresty" -v 2>&1 | sed 's/^nginx version: //'), DB-less, 1 worker, pinning=$PIN, CPU from $CPU_SOURCE"
  echo "- $ROUNDS interleaved rounds of ${RUN_S}s per variant, wrk -t1 -c$CONNS, $CREDS credentials; the auth service saw no call in any measured run"
} >"$OUT/kong-machine.md"
luajit "$HERE/report.lua" table "$CSV" kong-none "$VARIANTS" >"$OUT/kong-results.md"
cat "$OUT/kong-machine.md" "$OUT/kong-results.md"
log "results in $OUT/kong-results.md, raw runs in $CSV"
