-- Stand-in for lua-reqwest, one of Kong's dev rocks (Kong's Makefile,
-- DEV_ROCKS), which Kong's spec/internal/client.lua requires at load time but
-- uses only for HTTP/2 test clients. No luarocks registry is reachable here
-- and our specs speak HTTP/1.1 only; scripts/kong-test.sh puts this directory
-- on LUA_PATH (Pongo's image has the real rock, so this is never loaded there).
return {
  request = function()
    error("lua-reqwest is not installed: HTTP/2 test clients are unavailable", 2)
  end,
}
