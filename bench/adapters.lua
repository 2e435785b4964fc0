-- One auth-router instance per bench variant, in one nginx: the shipped
-- OpenResty adapter (lua/auth_router/openresty.lua) keeps its compiled config
-- in a module-level upvalue, so each variant gets its own copy of that module
-- (loaded afresh from the same file), initialized with its own config file.
-- The hot path is the shipped adapter's code, unchanged.
--
--   init_by_lua_block { require("adapters").init{ hit = "/path/hit.json", ... } }
--   access_by_lua_block { require("adapters").hit.access() }

local MODULE = "auth_router.openresty"

local _M = {}


function _M.init(configs)
  for name, path in pairs(configs) do
    package.loaded[MODULE] = nil
    local adapter = require(MODULE)
    adapter.init(path)
    _M[name] = adapter
  end
  package.loaded[MODULE] = nil
end


return _M
