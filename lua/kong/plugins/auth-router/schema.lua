-- Kong schema for auth-router (design §2).
--
-- The native config compiler (src/config/) is the single source of truth:
-- every field below has the same name, type, default, range and one_of set as
-- there, and spec/unit/02-schema_defaults_spec.lua fails when they drift. The
-- DSL gives the Admin API early, Kong-shaped errors; the record-level
-- custom_validator then runs the native validator, which checks everything
-- the DSL cannot (regexes, JSON pointers, host:port, duplicate names, ...)
-- and names the field path in its message.
--
-- Kong fills absent optional fields with ngx.null; the native side reads that
-- as JSON null, which it treats as absent (src/config/fields.rs).

local typedefs = require "kong.db.schema.typedefs"
local config   = require "auth_router.config" -- the nginx-free part of the core


local MAX_TIMEOUT_MS  = 2147483646     -- 2^31 - 2, the bound of Kong's typedefs.timeout
local MAX_TTL_S       = 31536000       -- one year
local MAX_NEGATIVE_TTL_S = 3600       -- denials are remembered at most an hour
local MAX_BODY_BYTES  = 67108864       -- 64 MiB
local MAX_QUEUE_BYTES = 1073741824     -- 1 GiB

local DEFAULT_REDACT_HEADERS = {
  "authorization",
  "proxy-authorization",
  "cookie",
  "set-cookie",
}


-- A JSON pointer (RFC 6901). `""` is a valid pointer (the whole document), so
-- the length check Kong applies to every string by default is lifted.
local function pointer(default, description)
  return {
    type = "string",
    len_min = 0,
    default = default,
    description = description,
  }
end


local function header_names(default, description, len_min)
  return {
    type = "array",
    elements = typedefs.header_name,
    default = default,
    len_min = len_min,
    description = description,
  }
end


local function strings(description)
  return {
    type = "array",
    elements = { type = "string" },
    default = {},
    description = description,
  }
end


-- An array of header rules, for upstream_headers / response_headers. Each
-- call builds fresh tables: Kong compiles and caches a schema per field table.
local function header_rules(description)
  return {
    type = "array",
    default = {},
    description = description,
    elements = {
      type = "record",
      fields = {
        { name = typedefs.header_name {
            required = true,
            description = "Name of the header to set.",
        } },
        { pointer = {
            type = "string",
            description = "JSON pointer into the account whose value becomes the header value.",
        } },
        { value = {
            type = "string",
            description = "Constant header value.",
        } },
      },
      entity_checks = {
        { only_one_of = { "pointer", "value" } },
      },
    },
  }
end


local AUTH = {
  type = "record",
  required = true,
  description = "How to call the auth service and cache its answers.",
  fields = {
    { url = typedefs.url {
        required = true,
        description = "The auth service's http or https URL.",
    } },
    { method = {
        type = "string",
        default = "GET",
        one_of = { "GET", "POST" },
        description = "HTTP method of the auth call.",
    } },
    { credential_headers = header_names({ "authorization" },
        "Request headers forwarded to the auth service whose values form the credential; "
        .. "a request carrying none gets 401 without an auth call.", 1)
    },
    { forward_headers = header_names({},
        "Extra request headers sent to the auth service, which also become part of the cache key.")
    },
    { timeout_ms = typedefs.timeout {
        default = 1000,
        between = { 1, MAX_TIMEOUT_MS },
        description = "Budget of the whole auth call (connect, send and the whole response), in milliseconds.",
    } },
    { keepalive_ms = typedefs.timeout {
        default = 60000,
        between = { 1, MAX_TIMEOUT_MS },
        description = "How long an idle connection to the auth service stays in the keepalive pool, in milliseconds.",
    } },
    { pool_size = {
        type = "integer",
        default = 64,
        between = { 1, 65535 },
        description = "Keepalive pool size per worker for auth service connections.",
    } },
    { max_in_flight = {
        type = "integer",
        default = 64,
        between = { 1, 65535 },
        description = "Most auth calls in flight per worker; beyond it a request fails fast "
                      .. "(stale answer or failure_status) instead of adding a call.",
    } },
    { ssl_verify = {
        type = "boolean",
        default = true,
        description = "Whether to verify the auth service's TLS certificate.",
    } },
    { account_pointer = pointer("",
        "JSON pointer to the account object in a 2xx auth response; empty means the whole body.")
    },
    { account_id_pointer = pointer("/id",
        "JSON pointer, relative to the account, to the account id; an answer without it is an invalid auth response.")
    },
    { exp_pointer = pointer("/exp",
        "JSON pointer, into the whole auth response body (RFC 7662), to an optional expiry epoch "
        .. "past which the answer is never cached.")
    },
    { ttl_s = {
        type = "number",
        default = 60,
        between = { 0, MAX_TTL_S },
        description = "Positive cache TTL in seconds (fractions allowed), lowered by Cache-Control and the exp field.",
    } },
    { negative_ttl_s = {
        type = "number",
        default = 10,
        between = { 0, MAX_NEGATIVE_TTL_S },
        description = "How long a 401/403 verdict is cached, in seconds.",
    } },
    { stale_ttl_s = {
        type = "number",
        default = 30,
        between = { 0, MAX_TTL_S },
        description = "How long past expiry an entry may still be served when the auth service fails, in seconds.",
    } },
    { cache_size = {
        type = "integer",
        default = 100000,
        between = { 1, 100000000 },
        description = "Maximum number of entries in each worker's in-memory auth cache.",
    } },
    { shared_dict = {
        type = "string",
        default = "auth_router",
        description = "Name of the lua_shared_dict for the cross-worker cache and locks; "
                      .. "without it the plugin runs worker-local only.",
    } },
    { failure_status = {
        type = "integer",
        default = 503,
        between = { 500, 599 },
        description = "Status returned when the auth service is unavailable and no stale answer exists.",
    } },
  },
}


-- `required = true` with every subfield defaulted or nullable: that is how
-- Kong materializes an absent record with its defaults (as http-log's queue).
-- Off until `by` is set. Kong only: plain OpenResty has no consumers.
local CONSUMER = {
  type = "record",
  required = true,
  description = "Map the account to a Kong consumer, so acl and consumer-scoped plugin configs apply.",
  fields = {
    { by = {
        type = "string",
        one_of = { "username", "custom_id" },
        description = "The consumer field matched against the account's value; null turns mapping off.",
    } },
    { pointer = pointer("/id", "JSON pointer to the account's value matched against the consumer.") },
    { anonymous = {
        type = "string",
        description = "Consumer id or username used when no consumer matches; null answers 403.",
    } },
  },
}


local API_VERSION = {
  type = "record",
  required = true,
  description = "Where the request's API version comes from: header, then path, then account, then default.",
  fields = {
    { header = typedefs.header_name {
        default = "x-api-version",
        description = "Request header carrying the API version.",
    } },
    { path_prefix_pattern = {
        type = "string",
        description = "Regex on the request path whose first capture group is the API version, e.g. ^/(v\\d+)/.",
    } },
    { account_pointer = pointer("/api_version",
        "JSON pointer to the account field holding the API version.")
    },
    { default = {
        type = "string",
        description = "API version used when no other source gives one.",
    } },
  },
}


local ROUTE = {
  type = "record",
  fields = {
    { name = {
        type = "string",
        required = true,
        description = "Unique route name, sent upstream in route_header and logged.",
    } },
    { paths = strings("Path prefixes this route matches; empty matches any path.") },
    { methods = strings("HTTP methods this route matches; empty matches any method.") },
    { api_versions = strings("API versions this route matches; empty matches any version.") },
    { accounts = strings("Account id allowlist; empty matches any account.") },
    { account_match = {
        type = "map",
        keys = { type = "string", len_min = 0 },
        values = {
          type = "array",
          elements = { type = "string", len_min = 0 },
          len_min = 1,
        },
        default = {},
        description = "Map of JSON pointer into the account to the string values allowed there.",
    } },
    { flags = strings("Feature flags that must all be on for the account.") },
    { percentage = {
        type = "number",
        default = 100,
        between = { 0, 100 },
        description = "Share of accounts, sticky per account, that get this route.",
    } },
    { upstream = {
        type = "string",
        description = "Kong Upstream to send matching requests to.",
    } },
    { target = {
        type = "string",
        description = "The host:port to send matching requests to.",
    } },
    { strip_prefix = {
        type = "boolean",
        default = false,
        description = "Whether to remove the matched path prefix from the upstream path.",
    } },
  },
  entity_checks = {
    { only_one_of = { "upstream", "target" } },
  },
}


local LOG = {
  type = "record",
  required = true,
  description = "Shipping of one redacted record per request, optionally with bodies, to a TCP or HTTP collector.",
  fields = {
    { enabled = {
        type = "boolean",
        default = false,
        description = "Whether to capture and ship log records.",
    } },
    { sink = {
        type = "string",
        default = "tcp",
        one_of = { "tcp", "http" },
        description = "Collector protocol: newline-delimited JSON over TCP, or a JSON array per batch over HTTP.",
    } },
    { host = typedefs.host {
        description = "Collector host, required when the sink is tcp.",
    } },
    { port = typedefs.port {
        between = { 1, 65535 },
        description = "Collector port, required when the sink is tcp.",
    } },
    { url = typedefs.url {
        description = "Collector URL, required when the sink is http.",
    } },
    { tls = {
        type = "boolean",
        default = false,
        description = "Whether to use TLS to the collector.",
    } },
    { request_body = {
        type = "boolean",
        default = false,
        description = "Whether to capture request bodies.",
    } },
    { response_body = {
        type = "boolean",
        default = false,
        description = "Whether to capture response bodies.",
    } },
    { max_body_bytes = {
        type = "integer",
        default = 65536,
        between = { 0, MAX_BODY_BYTES },
        description = "Maximum bytes captured per body; the rest is counted and marked truncated.",
    } },
    { redact_headers = header_names(DEFAULT_REDACT_HEADERS,
        "Headers whose values are masked in records; credential headers are always masked.")
    },
    { redact_body_fields = strings("Field names masked at any depth in JSON and form bodies.") },
    { batch_max_entries = {
        type = "integer",
        default = 100,
        between = { 1, 100000 },
        description = "Maximum records per batch.",
    } },
    { flush_interval_ms = {
        type = "integer",
        default = 1000,
        between = { 1, 3600000 },
        description = "How often a partial batch is shipped, in milliseconds.",
    } },
    { queue_max_bytes = {
        type = "integer",
        default = 8388608,
        between = { 1024, MAX_QUEUE_BYTES },
        description = "Per-worker queue bound in bytes, beyond which the oldest batch is dropped and counted.",
    } },
    { retry_max_s = {
        type = "number",
        default = 60,
        between = { 0, 86400 },
        description = "How long a failing batch is retried with exponential backoff, in seconds.",
    } },
    { timeout_ms = typedefs.timeout {
        default = 10000,
        between = { 1, MAX_TIMEOUT_MS },
        description = "Budget of one delivery to the collector (connect, send and the whole answer), in milliseconds.",
    } },
    { keepalive_ms = typedefs.timeout {
        default = 60000,
        between = { 1, MAX_TIMEOUT_MS },
        description = "How long an idle collector connection stays in the keepalive pool, in milliseconds.",
    } },
    { request_id_header = typedefs.header_name {
        default = "x-request-id",
        description = "Request header whose value is logged as request_id, to join with the correlation-id plugin.",
    } },
  },
  entity_checks = {
    -- Weaker than the native rule on purpose: the exact one (host and port
    -- when an enabled sink is tcp, url when it is http) needs two condition
    -- fields, which `conditional` cannot express; the custom_validator below
    -- enforces it and names the missing field.
    { conditional_at_least_one_of = {
        if_field = "enabled",
        if_match = { eq = true },
        then_at_least_one_of = { "host", "url" },
        then_err = "an enabled log needs a collector: host and port (sink tcp) or url (sink http)",
    } },
  },
}


-- The fleet-wide Redis tier (issue #10): the field names of Kong's Redis
-- records (kong/tools/redis/schema.lua), with our `_ms` units. The secrets
-- are referenceable (vaults) and encrypted at rest like Kong's.
local CLUSTER = {
  type = "record",
  required = true,
  description = "A Redis tier shared by every node: cached verdicts, single flight and purges across the fleet.",
  fields = {
    { enabled = {
        type = "boolean",
        default = false,
        description = "Whether the nodes share verdicts and purges through Redis.",
    } },
    { host = typedefs.host {
        description = "Redis host, required when enabled.",
    } },
    { port = typedefs.port {
        default = 6379,
        between = { 1, 65535 },
        description = "Redis port.",
    } },
    { username = {
        type = "string",
        referenceable = true,
        description = "Redis ACL user (Redis 6+); unset: AUTH with the password alone.",
    } },
    { password = {
        type = "string",
        len_min = 0,
        encrypted = true,
        referenceable = true,
        description = "Redis password; unset or empty: no AUTH.",
    } },
    { database = {
        type = "integer",
        default = 0,
        between = { 0, 2147483647 },
        description = "Redis database index.",
    } },
    { ssl = {
        type = "boolean",
        default = false,
        description = "Whether to use TLS to Redis.",
    } },
    { ssl_verify = {
        type = "boolean",
        default = true,
        description = "Whether to verify Redis's certificate (lua_ssl_trusted_certificate).",
    } },
    { server_name = typedefs.host {
        description = "Name sent as SNI and verified; unset: host.",
    } },
    { timeout_ms = typedefs.timeout {
        default = 200,
        between = { 1, MAX_TIMEOUT_MS },
        description = "Budget of one Redis exchange in milliseconds; a hanging Redis adds at most this to a miss.",
    } },
    { keepalive_ms = typedefs.timeout {
        default = 60000,
        between = { 1, MAX_TIMEOUT_MS },
        description = "How long an idle Redis connection stays in the keepalive pool, in milliseconds.",
    } },
    { pool_size = {
        type = "integer",
        default = 64,
        between = { 1, 65535 },
        description = "Redis keepalive pool size per worker.",
    } },
    { key_secret = {
        type = "string",
        len_min = 16,
        encrypted = true,
        referenceable = true,
        description = "Secret every node derives cache keys from (the same on every node); required when enabled.",
    } },
    { poll_ms = {
        type = "integer",
        default = 1000,
        between = { 10, 3600000 },
        description = "How often a node applies the fleet's purges, in milliseconds.",
    } },
  },
  entity_checks = {
    { conditional = {
        if_field = "enabled", if_match = { eq = true },
        then_field = "host", then_match = { required = true },
    } },
    { conditional = {
        if_field = "enabled", if_match = { eq = true },
        then_field = "key_secret", then_match = { required = true },
    } },
  },
}


-- Semantic checks: the native validator, the same code that compiles the
-- config at run time. Returns true, or nil and "path: message; ...".
local function validate_config(conf)
  local normalized, err = config.validate(conf)
  if not normalized then
    return nil, err
  end
  return true
end


return {
  name = "auth-router",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { auth = AUTH },
          { api_version = API_VERSION },
          { flags_pointer = pointer("/flags",
              "JSON pointer to the account's feature flags: an array of names or an object of name to boolean.")
          },
          { routes = {
              type = "array",
              elements = ROUTE,
              default = {},
              description = "Routes evaluated in order, first match wins; no match keeps the Kong service.",
          } },
          { upstream_headers = header_rules(
              "Headers added to the proxied request; each name is always removed from the client request first.")
          },
          { response_headers = header_rules("Headers added to the client's response.") },
          { route_header = typedefs.header_name {
              description = "Request header carrying the matched route's name upstream.",
          } },
          { hide_credentials = {
              type = "boolean",
              default = false,
              description = "Whether to strip the credential headers before proxying.",
          } },
          { consumer = CONSUMER },
          { log = LOG },
          { cluster = CLUSTER },
        },
        custom_validator = validate_config,
    } },
  },
}
