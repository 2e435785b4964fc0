#!/usr/bin/env bash
# spec/kong against real Kong 3.9.3, the way Pongo runs it: Kong's own
# spec/helpers.lua and fixtures (from Kong's source tarball), Kong's bin/busted
# on Kong's OpenResty, cwd = the Kong source tree, our rock installed into
# Kong's Lua tree. Kong is started and stopped by the specs (helpers.start_kong
# / stop_kong) on free loopback ports, DB-less, with 2 workers.
#
#   scripts/kong-test.sh [busted args...]      (default: spec/kong)
#
# Needs ../shared/kong (this workplace's offline Kong build). Without it the
# suite is skipped with one line; in your own CI run the same spec files with
# Pongo: https://github.com/Kong/kong-pongo (`pongo run`).
#
# Env: KONG_PREFIX (default /var/cache/kong-3.9.3), KONG_SHARED (default
# ../shared/kong), KONG_TEST_WORKDIR (default: a temp dir, removed at exit).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${KONG_SHARED:-$ROOT/../shared/kong}
PREFIX=${KONG_PREFIX:-/var/cache/kong-3.9.3}

if [ ! -x "$SHARED/ensure.sh" ]; then
  echo "spec/kong: skipped: no Kong build kit at $SHARED; run spec/kong with Pongo" \
       "(https://github.com/Kong/kong-pongo: pongo run)"
  echo "0 successes / 0 failures / 0 errors / 0 pending"
  exit 0
fi

env_sh=$("$SHARED/ensure.sh" "$PREFIX") || { echo "spec/kong: cannot build Kong" >&2; exit 1; }
# shellcheck disable=SC1090
. "$env_sh"

WORK=${KONG_TEST_WORKDIR:-}
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/auth-router-kong.XXXXXX")
  # Kong's workers run as an unprivileged user (nobody when started as root)
  # and must reach their prefix (LMDB, sockets) inside this directory.
  chmod 755 "$WORK"
  trap 'stop_kong; rm -rf "$WORK"' EXIT
else
  mkdir -p "$WORK"
  trap 'stop_kong' EXIT
fi

# Whatever happens to the specs, no Kong or mock nginx outlives the run.
stop_kong() {
  local pidfile
  for pidfile in "$WORK"/kong/servroot*/pids/nginx.pid; do
    [ -f "$pidfile" ] || continue
    kill -QUIT "$(cat "$pidfile")" 2>/dev/null
    sleep 0.5
    kill -KILL "$(cat "$pidfile")" 2>/dev/null
  done
  return 0
}

# Kong's source tree, for spec/helpers.lua, spec/fixtures and bin/busted.
src=$(ls "$SHARED"/src/kong-3.9.3.tar.gz)
mkdir -p "$WORK/kong"
tar -xzf "$src" -C "$WORK/kong" --strip-components=1 \
    kong-3.9.3/spec kong-3.9.3/bin kong-3.9.3/.busted kong-3.9.3/kong.conf.default \
    kong-3.9.3/kong/include \
  || { echo "spec/kong: cannot unpack $src" >&2; exit 1; }

# Our rock, into Kong's tree, as a user installs it (never over a running Kong:
# the rockspec copies the .so to a temporary name and renames it).
(cd "$ROOT" && luarocks --lua-version=5.1 --tree "$PREFIX" make \
    kong-plugin-auth-router-0.1.0-1.rockspec >"$WORK/luarocks.log" 2>&1) \
  || { cat "$WORK/luarocks.log"; echo "spec/kong: cannot install the rock into $PREFIX" >&2; exit 1; }

# Kong's test config with free loopback ports, 2 workers, DB-less and our plugin.
read -r proxy proxy_ssl admin < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
conf="$WORK/kong/spec/auth_router_tests.conf"
sed -e "s|^admin_listen = .*|admin_listen = 127.0.0.1:$admin|" \
    -e "s|^proxy_listen = .*|proxy_listen = 127.0.0.1:$proxy, 127.0.0.1:$proxy_ssl http2 ssl|" \
    -e "s|^database = .*|database = off|" \
    -e "s|^nginx_main_worker_processes = .*|nginx_main_worker_processes = 2|" \
    -e "s|^plugins = .*|plugins = bundled,auth-router|" \
    "$WORK/kong/spec/kong_tests.conf" > "$conf"
export KONG_SPEC_TEST_CONF_PATH=$conf
# Pongo's convention: specs find the plugin's repository here.
export AUTH_ROUTER_ROOT=$ROOT

# Busted itself comes from Debian (lua-busted), as Kong's dev rocks are not
# installed here. Only busted and its own dependencies are linked in: the rest
# of /usr/share/lua/5.1 (Debian's lua-resty-core, penlight, ...) would shadow
# Kong's, also inside the Kong nginx, which inherits LUA_PATH.
bl="$WORK/busted/lua" bc="$WORK/busted/lib"
mkdir -p "$bl" "$bc"
for m in busted busted.lua luassert say cliargs cliargs.lua mediator.lua dkjson.lua term system; do
  [ -e "/usr/share/lua/5.1/$m" ] && ln -sfn "/usr/share/lua/5.1/$m" "$bl/$m"
done
for m in term system; do
  ln -sfn "/usr/lib/x86_64-linux-gnu/lua/5.1/$m" "$bc/$m"
done
export LUA_PATH="${LUA_PATH%;;};$ROOT/spec/kong/support/?.lua;$bl/?.lua;$bl/?/init.lua;;"
export LUA_CPATH="${LUA_CPATH%;;};$bc/?.so;;"

# busted runs from Kong's tree: spec paths given relative to ours are made absolute.
args=()
for a in "$@"; do
  if [ "${a#/}" = "$a" ] && [ -e "$ROOT/$a" ]; then a="$ROOT/$a"; fi
  args+=("$a")
done
[ ${#args[@]} -eq 0 ] && args=("$ROOT/spec/kong")
set -- "${args[@]}"
cd "$WORK/kong" || exit 1
# A hung spec must not hang CI: the whole suite gets 10 minutes.
timeout -k 10 600 bin/busted -o utfTerminal "$@"
