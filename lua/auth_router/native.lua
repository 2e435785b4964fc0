-- The one place that loads the native module (auth_router_native.so).
-- Everything else requires this file, so a missing or broken build fails here
-- with a message that says where we looked.

local ok, native = pcall(require, "auth_router_native")
if not ok then
  error("auth-router: cannot load the native module auth_router_native: "
        .. tostring(native) .. "\npackage.cpath = " .. package.cpath, 2)
end

return native
