-- The one place that loads the native module (auth_router_native.so), both
-- ways: `require` gives the mlua binding (what runs once per config or per
-- auth call), and ffi.load of the very file `require` found gives the C ABI
-- of the per-request path (src/ffi/ documents each function, its
-- handle and pointer lifetimes). Everything else requires this file, so a
-- missing or broken build fails here with a message that says where we looked.

local ffi = require "ffi"

local ok, native = pcall(require, "auth_router_native")
if not ok then
  error("auth-router: cannot load the native module auth_router_native: "
        .. tostring(native) .. "\npackage.cpath = " .. package.cpath, 2)
end

ffi.cdef [[
typedef struct { const char *ptr; size_t len; } ar_str;
typedef struct {
  double  handle;    /* the request's slot */
  int32_t upstream;  /* allow: account headers for the upstream (ar_header list 0) */
  int32_t repeated;  /* step 5: index of the repeated credential/forwarded header */
  int32_t route;     /* allow from the cache: matched route index, or -1 */
  ar_str  path;      /* the route's upstream path (strip_prefix), or NULL */
  uint32_t spoofed;  /* spoofable headers present: bit j = upstream header rule j, then the route header */
} ar_access_out;

int ar_last_error(ar_str *out);
int ar_access(const void *plugin, const char *method, size_t method_len,
              const char *uri, size_t uri_len, const char *path, size_t path_len,
              double start_ms, double now, const void *headers, uint32_t n,
              ar_access_out *out);
int ar_pending_key(double handle, ar_str *key);
int ar_load_shared(double handle, const char *value, size_t len, double now); /* -> step */
int ar_header_count(double handle, uint32_t which);
int ar_header(double handle, uint32_t which, uint32_t i, ar_str *value); /* -> rule index */
int ar_route(double handle, const char *path, size_t path_len, ar_str *path_out);
int ar_response(double handle, int status);
int ar_refuse(double handle);
int ar_body_chunk(double handle, const char *chunk, size_t len);
int ar_request_body(double handle, const char *data, size_t len, double size);
typedef struct {
  double  now_ms;
  ar_str  client_ip;              /* $remote_addr */
  ar_str  request_id;             /* the request id header's value */
  ar_str  request_length;         /* $request_length */
  ar_str  bytes_sent;             /* $bytes_sent */
  ar_str  upstream_addr;          /* $upstream_addr: NULL or empty if not proxied */
  ar_str  upstream_status;        /* $upstream_status */
  ar_str  upstream_response_time; /* $upstream_response_time */
  ar_str  default_target;         /* where a request no route matched went */
  ar_str  default_upstream;       /* or its Kong Upstream */
  const void *request_headers;    /* ngx_http_lua_ffi_table_elt_t[] */
  uint32_t request_header_count;
  const void *response_headers;   /* the same layout */
  uint32_t response_header_count;
} ar_log_in;
int ar_identity(double handle, ar_str *id);
int ar_log(double handle, const ar_log_in *in); /* 1: the record filled its batch */
int ar_finish(double handle);
int ar_release(double handle);
int ar_live_slots(void);
]]

-- The same file as `require` loaded: the dynamic loader hands back the
-- already-mapped object, so both views share one copy of the native state.
local path = package.searchpath("auth_router_native", package.cpath)
local loaded, C = pcall(ffi.load, path)
if not loaded then
  error("auth-router: cannot load " .. tostring(path) .. " through the FFI: " .. tostring(C), 2)
end

native.C = C
native.NO_ROUTE = -5 -- ar_route: no route matched

-- Out parameters, reused by every call of this worker (never across a yield).
local str2 = ffi.new("ar_str[2]")
native.str_out = str2

--- The message of the error a C call just returned (a negative code).
function native.last_error(code)
  C.ar_last_error(str2)
  local msg = str2[0].ptr ~= nil and ffi.string(str2[0].ptr, str2[0].len) or "unknown"
  return msg .. " (code " .. tostring(code) .. ")"
end

return native
