#!/usr/bin/env bash
# The one test command (`make test`): static checks, Rust tests, a fresh
# luarocks install into a temporary tree, then the busted suites loading the
# plugin from that tree (unit: LuaJIT + native module; openresty: real nginx).
# Ends with one line "N passed, N failed" summing every suite.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/auth-router-test.XXXXXX")
TREE="$LOGDIR/tree"
trap 'rm -rf "$LOGDIR"' EXIT

section() { printf '\n==> %s\n' "$*"; }

# A step that is a single check (fmt, clippy, luacheck, install).
check() {
  local name=$1; shift
  section "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failures+=("$name")
  fi
}

# cargo test: sum every "test result:" line.
cargo_tests() {
  section "cargo test"
  local out="$LOGDIR/cargo.log" rc
  cargo test --no-default-features --locked 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$out" | awk '{s+=$4} END {print s+0}')
  f=$(grep -Eo '[0-9]+ failed' "$out" | awk '{s+=$1} END {print s+0}')
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    failed=$((failed + 1)); failures+=("cargo test (build)")
  elif [ "$f" -ne 0 ]; then
    failures+=("cargo test")
  fi
}

# busted: run a suite, read its "N successes / N failures / N errors" summary.
busted_suite() {
  local name=$1; shift
  local out="$LOGDIR/busted-$name.log" rc
  section "busted $name"
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  local summary s f e
  summary=$(grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' "$out" | tail -n 1)
  s=$(sed -E 's/.*\b([0-9]+) successes?.*/\1/' <<<"$summary")
  f=$(sed -E 's/.* ([0-9]+) failures?.*/\1/' <<<"$summary")
  e=$(sed -E 's/.* ([0-9]+) errors?.*/\1/' <<<"$summary")
  if [ -z "$summary" ]; then s=0; f=0; e=1; fi
  passed=$((passed + s)); failed=$((failed + f + e))
  if [ "$rc" -ne 0 ] || [ $((f + e)) -ne 0 ]; then
    [ $((f + e)) -eq 0 ] && failed=$((failed + 1))
    failures+=("busted $name")
  fi
}

# busted on LuaJIT with the plugin loaded from the fresh tree.
tree_busted() {
  LUA_PATH="$TREE/share/lua/5.1/?.lua;$TREE/share/lua/5.1/?/init.lua;;" \
  LUA_CPATH="$TREE/lib/lua/5.1/?.so;;" \
  AUTH_ROUTER_TREE="$TREE" \
    timeout -k 10 900 busted --lua=luajit -o utfTerminal "$@"   # a hung spec must not hang CI
}

# tree_busted with the nginx of Kong's OpenResty build.
kong_openresty() {
  AUTH_ROUTER_NGINX="$kong_nginx" tree_busted "$@"
}

install_tree() {
  rm -f auth_router_native.so
  luarocks --lua-version=5.1 make --tree "$TREE" kong-plugin-auth-router-0.1.0-1.rockspec >"$LOGDIR/luarocks.log" 2>&1 \
    || { cat "$LOGDIR/luarocks.log"; return 1; }
  echo "installed into $TREE"
}

check "cargo fmt --check" cargo fmt --check
check "cargo clippy" cargo clippy --locked --all-targets -- -D warnings
cargo_tests
# the fuzz targets (fuzz/, own workspace) still build against the core
check "cargo check (fuzz targets)" cargo check --quiet --locked --manifest-path fuzz/Cargo.toml --bins
check "luacheck" luacheck -q lua spec $([ -d bench ] && echo bench)
# The distribution files, with the tools that read them (Debian packages).
if command -v docker-compose >/dev/null; then
  check "docker-compose config -q" docker-compose config -q
fi
if command -v deck >/dev/null; then
  check "deck validate examples/kong.yml" deck validate -s examples/kong.yml
fi
check "luarocks make (fresh tree)" install_tree
if [ -f "$TREE/lib/lua/5.1/auth_router_native.so" ]; then
  busted_suite unit tree_busted spec/unit
  busted_suite openresty tree_busted spec/openresty
  # real Kong 3.9.3 (../shared/kong), Kong's spec.helpers; see the script
  busted_suite kong bash scripts/kong-test.sh
  # spec/openresty again on the OpenResty 1.25.3.2 that Kong's build brings
  # (lua-nginx-module 0.10.26), next to Debian's nginx 1.22 (0.10.23) above
  kong_nginx=${KONG_PREFIX:-/var/cache/kong-3.9.3}/openresty/nginx/sbin/nginx
  if [ -x "$kong_nginx" ]; then
    busted_suite openresty-1.25.3.2 kong_openresty spec/openresty
  else
    section "busted openresty-1.25.3.2"
    echo "skipped: no OpenResty build at $kong_nginx (see spec/kong)"
  fi
else
  failed=$((failed + 1)); failures+=("busted (no installed tree)")
fi

section "summary"
if ((${#failures[@]})); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
