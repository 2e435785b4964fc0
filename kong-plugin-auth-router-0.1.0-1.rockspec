package = "kong-plugin-auth-router"
version = "0.1.0-1"

source = {
  url = "git+https://example.invalid/kong-plugin-auth-router.git",
  tag = "0.1.0",
}

description = {
  summary = "Kong / OpenResty gateway plugin: authenticate, route, enrich and log bodies, with a Rust native core",
  detailed = [[
    auth-router authenticates each request against your auth service (with an
    in-process auth cache), routes it by path, API version, account and feature
    flags, adds account headers upstream and downstream, and ships redacted
    request/response bodies to a TCP or HTTP collector. The hot logic is a Rust
    native Lua module (auth_router_native) built with mlua.
  ]],
  license = "Apache-2.0",
}

dependencies = {
  "lua >= 5.1",
}

build = {
  type = "command",
  -- cargo needs no network when ~/.cargo already holds the locked crates.
  -- luarocks installs a .so under its own file name, hence the copy; cp to a
  -- temporary name then mv, because overwriting a loaded .so in place crashes
  -- the process that has it mapped.
  build_command = [[
    cargo build --release --locked &&
    cp target/release/libauth_router_native.so auth_router_native.so.tmp &&
    mv -f auth_router_native.so.tmp auth_router_native.so
  ]],
  install = {
    lib = {
      ["auth_router_native"] = "auth_router_native.so",
    },
    lua = {
      ["auth_router"]            = "lua/auth_router/init.lua",
      ["auth_router.native"]     = "lua/auth_router/native.lua",
      ["auth_router.config"]     = "lua/auth_router/config.lua",
      ["auth_router.http1"]      = "lua/auth_router/http1.lua",
      ["auth_router.flow"]       = "lua/auth_router/flow.lua",
      ["auth_router.redis"]      = "lua/auth_router/redis.lua",
      ["auth_router.throttle"]   = "lua/auth_router/throttle.lua",
      ["auth_router.sink"]       = "lua/auth_router/sink.lua",
      ["auth_router.metrics"]    = "lua/auth_router/metrics.lua",
      ["auth_router.openresty"]  = "lua/auth_router/openresty.lua",
      ["kong.plugins.auth-router.handler"] = "lua/kong/plugins/auth-router/handler.lua",
      ["kong.plugins.auth-router.schema"]  = "lua/kong/plugins/auth-router/schema.lua",
      ["kong.plugins.auth-router.plugin_config"] = "lua/kong/plugins/auth-router/plugin_config.lua",
      ["kong.plugins.auth-router.api"]     = "lua/kong/plugins/auth-router/api.lua",
      ["kong.plugins.auth-router.metrics_api"] = "lua/kong/plugins/auth-router/metrics_api.lua",
      ["kong.plugins.auth-router.status_api"]  = "lua/kong/plugins/auth-router/status_api.lua",
    },
  },
}
