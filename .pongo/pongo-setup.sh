#!/bin/sh
# Pongo test-container setup for kong-plugin-auth-router.
#
# Pongo *sources* this file with /bin/sh from its entrypoint (in /kong-plugin,
# as root), before `pongo run` / `pongo shell`. Pongo does not build rocks by
# itself, and this rock's build_command (see the rockspec) runs
# `cargo build --release --locked`, so: get a Rust toolchain and a C linker if
# the image lacks them, then `luarocks make` the rockspec into the system
# tree, where Kong and the specs find auth_router_native.so and the Lua files.
#
# POSIX sh (dash on Ubuntu images), no `set -e`: being sourced, that would
# leak into Pongo's entrypoint. A failed step stops the container loudly,
# since every spec would otherwise fail with a confusing "module not found".

auth_router_setup() {
  rockspec=$(ls /kong-plugin/kong-plugin-auth-router-*.rockspec 2>/dev/null | head -n 1)
  if [ -z "$rockspec" ]; then
    echo "pongo-setup: no kong-plugin-auth-router rockspec in /kong-plugin" >&2
    return 1
  fi

  if ! command -v cc >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          build-essential curl ca-certificates >/dev/null || return 1
    elif command -v apk >/dev/null 2>&1; then
      apk add --no-cache build-base curl ca-certificates >/dev/null || return 1
    else
      echo "pongo-setup: need a C toolchain and curl, and know no package manager here" >&2
      return 1
    fi
  fi

  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
    export PATH
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "pongo-setup: installing Rust (rustup, minimal profile)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
      sh -s -- -y --profile minimal --default-toolchain stable >/dev/null || return 1
    PATH="$HOME/.cargo/bin:$PATH"
    export PATH
  fi

  # A previously installed version of the rock would shadow this checkout.
  if luarocks list --porcelain kong-plugin-auth-router 2>/dev/null | grep -q .; then
    luarocks remove --force kong-plugin-auth-router >/dev/null || return 1
  fi

  echo "pongo-setup: luarocks make $(basename "$rockspec")"
  (cd /kong-plugin && luarocks make "$rockspec") || return 1
}

if ! auth_router_setup; then
  echo "pongo-setup: FAILED to build and install kong-plugin-auth-router" >&2
  exit 1
fi
unset -f auth_router_setup
