#!/usr/bin/env bash
# Installs what a brand-new Debian 12 machine lacks to build, demo and test
# auth-router. Idempotent: does nothing when everything is there.
set -euo pipefail

PKGS=(nginx libnginx-mod-http-lua libnginx-mod-http-ndk luajit2 libluajit2-5.1-dev
      lua-resty-core lua-resty-lrucache lua-busted luarocks lua-cjson lua-socket
      lua-check lua-yaml curl wrk hyperfine ca-certificates build-essential
      docker-compose deck redis-server)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's nginx package starts a default server on port 80 where an init system
# runs; tests and the demo start their own nginx on loopback ports instead.

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps: cargo is in ~/.cargo/bin; add it to PATH" >&2
  else
    echo "install-deps: a Rust toolchain (>= 1.88) is required: https://rustup.rs" >&2
  fi
  exit 1
fi

for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$c"
    else
      echo "install-deps: cargo $c is missing and rustup is not available" >&2
      exit 1
    fi
  fi
done
