-- auth_router.openresty in real nginx: routing decisions (issue 4 "Prove it"),
-- end to end against upstreams that echo who they are.
--
-- The motivating deployment (docs/configuration.md "Complete example"):
--   /send -> email, /events and /calendars -> calendar, anything else -> legacy
--   (the default target); accounts on API version v1 stay on legacy for every
--   path; a new calendar backend ("calendar-v2") is rolled out to 25 % of the
--   accounts having the flag calendar_v2, sticky per account, and always to an
--   allowlist of pilot accounts. Plus strip_prefix, route_header, methods and
--   the API version resolution order (header > path > account > default).
--
-- The mock nginx serves the auth service and the email, calendar and legacy
-- upstreams; calendar-v2 is a 4th echo server inside the gateway's own nginx
-- (its echo also tells which upstream connection carried the request, to see
-- keepalive). The gateway runs 2 workers with reuseport and serves the plugin
-- twice: the variable form of design §4b (`proxy_pass http://$auth_router_target`,
-- the template's `location /`) and, on a second port, the balancer form
-- (`upstream` block with balancer_by_lua and keepalive). Each case checks the
-- gateway's error log of its own window.
--
-- Percentage expectations are exact, not statistical: the spec computes each
-- account's bucket with its own MurmurHash3_x86_32, pinned to the published
-- vectors and to the Rust known-answer tests.
--
--   AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/03-routing_spec.lua

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson"
local bit     = require "bit"

local WORKERS = 2

local CAL_PATHS = { "/events", "/calendars" }
local PILOTS    = { "acc_pilot_a", "acc_pilot_b" }
local ROLLOUT   = "calendar-v2"   -- the percentage route's name: it seeds the buckets
local PERCENT   = 25


------------------------------------------------------------------------
-- The documented percentage contract, computed independently of the plugin:
--   bucket = murmur3_x86_32(seed 0, route.name .. ":" .. account_id) % 10000
--   match  = bucket < percentage * 100

local bxor, rshift, rol = bit.bxor, bit.rshift, bit.rol
local floor = math.floor
local TWO32 = 4294967296

local function u32(x)
  return x % TWO32
end

-- a * b mod 2^32 without losing bits in a double
local function mul32(a, b)
  a, b = u32(a), u32(b)
  local alo, ahi = a % 65536, floor(a / 65536)
  return (alo * b + ((ahi * (b % 65536)) % 65536) * 65536) % TWO32
end

local function murmur3_32(s, seed)
  local c1, c2 = 0xcc9e2d51, 0x1b873593
  local h = seed or 0
  local len = #s
  local nblocks = floor(len / 4)
  for i = 0, nblocks - 1 do
    local b1, b2, b3, b4 = s:byte(i * 4 + 1, i * 4 + 4)
    local k = b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
    k = mul32(u32(rol(mul32(k, c1), 15)), c2)
    h = u32(rol(u32(bxor(h, k)), 13))
    h = (mul32(h, 5) + 0xe6546b64) % TWO32
  end
  local tail = len % 4
  if tail > 0 then
    local k = 0
    for j = tail, 1, -1 do
      k = k * 256 + s:byte(nblocks * 4 + j)
    end
    h = u32(bxor(h, mul32(u32(rol(mul32(k, c1), 15)), c2)))
  end
  h = u32(bxor(h, len))
  h = mul32(u32(bxor(h, rshift(h, 16))), 0x85ebca6b)
  h = mul32(u32(bxor(h, rshift(h, 13))), 0xc2b2ae35)
  return u32(bxor(h, rshift(h, 16)))
end

local function bucket(route_name, account_id)
  return murmur3_32(route_name .. ":" .. account_id, 0) % 10000
end

local function in_rollout(account_id)
  return bucket(ROLLOUT, account_id) < PERCENT * 100
end


------------------------------------------------------------------------
-- gateway snippets

-- calendar-v2: an echo upstream living in the gateway's nginx. Same echo shape
-- as the mocks (spec/fixtures/mocks.lua), plus the upstream connection's
-- serial number and how many requests it has carried (keepalive shows as > 1).
local CAL2_SERVER = [[
    server {
        listen 127.0.0.1:%d;
        server_name calendar-v2;
        location / {
            content_by_lua_block {
                local body = require("cjson.safe").encode({
                    service = "calendar-v2",
                    port = tonumber(ngx.var.server_port),
                    method = ngx.req.get_method(),
                    uri = ngx.var.request_uri,
                    headers = ngx.req.get_headers(0),
                    connection = tonumber(ngx.var.connection),
                    connection_requests = tonumber(ngx.var.connection_requests),
                })
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.header["X-Upstream"] = "calendar-v2"
                ngx.print(body)
            }
        }
    }
]]

-- The balancer form of design §4b, as examples/nginx.conf recommends it.
local BALANCER_SERVER = [[
    upstream auth_router_balanced {
        server 0.0.0.1;   # placeholder: balancer() picks the peer
        balancer_by_lua_block { require("auth_router.openresty").balancer() }
        keepalive 16;
    }

    server {
        listen 127.0.0.1:%d reuseport;
        server_name auth-router-balanced;
        add_header X-Worker-Pid $pid always;

        location / {
            set $auth_router_target "%s";   # default when no route matches
            access_by_lua_block        { require("auth_router.openresty").access() }
            header_filter_by_lua_block { require("auth_router.openresty").header_filter() }
            body_filter_by_lua_block   { require("auth_router.openresty").body_filter() }
            log_by_lua_block           { require("auth_router.openresty").log() }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://auth_router_balanced;
        }
    }
]]


------------------------------------------------------------------------
-- small helpers

local function account(id, fields)
  local a = { id = id }
  for k, v in pairs(fields or {}) do
    a[k] = v
  end
  return a
end

local function auth_headers(acc, extra)
  local h = { Authorization = "Bearer " .. helpers.json_token(acc) }
  for k, v in pairs(extra or {}) do
    h[k] = v
  end
  return h
end

-- One request through the gateway at `base`; the upstream's echo (decoded)
-- and the response headers. Fails on anything but a 200 from an upstream.
local function go(base, method, path, acc, extra)
  local status, headers, body = helpers.request(method, base .. path, auth_headers(acc, extra))
  assert(status, headers) -- transport error
  assert.equal(200, status, body)
  assert.is_string(headers["x-upstream"], "not an upstream answer: " .. tostring(body))
  local echo = cjson.decode(body)
  return echo, headers
end

local delta = helpers.delta


describe("auth_router.openresty routing: the motivating deployment (" .. WORKERS .. " workers)", function()
  local mocks, gw, mark
  local ports       -- service name -> port
  local targets     -- service name -> "127.0.0.1:port"
  local var_url, bal_url

  -- The echo says `service` and `port`, and the route header tells the route.
  local function assert_landed(echo, service, route, uri, what)
    what = what or ""
    assert.equal(service, echo.service, what)
    assert.equal(ports[service], echo.port, what)
    assert.equal(route, echo.headers["x-route"], what)   -- nil: no route matched, no header
    if uri then
      assert.equal(uri, echo.uri, what)
    end
  end

  local function all_stats()
    local sum, _, seen = gw:stats_all()
    assert.equal(WORKERS, seen, "could not reach every worker for /__stats")
    return sum
  end

  lazy_setup(function()
    mocks = helpers.start_mocks()
    local p = helpers.free_ports(3) -- calendar-v2, balancer form, gateway (one call: distinct)
    ports = {
      email = mocks.ports.email,
      calendar = mocks.ports.calendar,
      legacy = mocks.ports.legacy,
      ["calendar-v2"] = p[1],
    }
    targets = {}
    for name, port in pairs(ports) do
      targets[name] = "127.0.0.1:" .. port
    end
    local config = helpers.config(mocks, {
      api_version = {
        header = "x-api-version",
        path_prefix_pattern = "^/(v\\d+)/",
        account_pointer = "/api_version",
        default = "v2",
      },
      flags_pointer = "/flags",
      route_header = "x-route",
      routes = {
        { name = "legacy-v1", api_versions = { "v1" }, target = targets.legacy },
        { name = "calendar-v2-pilot", paths = CAL_PATHS, accounts = PILOTS,
          target = targets["calendar-v2"] },
        { name = ROLLOUT, paths = CAL_PATHS, flags = { "calendar_v2" }, percentage = PERCENT,
          target = targets["calendar-v2"] },
        { name = "calendar", paths = CAL_PATHS, target = targets.calendar },
        { name = "email", paths = { "/send" }, methods = { "POST", "PUT" }, target = targets.email },
        { name = "email-api", paths = { "/api/email" }, strip_prefix = true, target = targets.email },
        -- an API version probe: only version v2 reaches email
        { name = "probe-v2", paths = { "/probe", "/v2/probe", "/v3/probe" }, api_versions = { "v2" },
          target = targets.email },
      },
    })
    gw = helpers.start({
      mocks = mocks,
      config = config,
      workers = WORKERS,
      listen_options = "reuseport",
      port = p[3],
      default_target = targets.legacy,
      http = CAL2_SERVER:format(p[1]) .. BALANCER_SERVER:format(p[2], targets.legacy),
    })
    var_url = gw.gw_url
    bal_url = "http://127.0.0.1:" .. p[2]
  end)

  lazy_teardown(function()
    if gw then
      gw:stop()
    end
    if mocks then
      mocks:stop()
    end
  end)

  before_each(function()
    mark = gw:log_mark()
  end)


  it("the spec's murmur3_x86_32 matches the published vectors and the Rust known answers", function()
    assert.equal(0x149bbb7f, murmur3_32("hello, world", 0))
    assert.equal(0x2e4ff723, murmur3_32("The quick brown fox jumps over the lazy dog", 0))
    assert.equal(2953494853, murmur3_32("My hovercraft is full of eels.", 0))
    -- Unleash's cross-client vectors: murmur3("group:id") % 100 + 1
    assert.equal(73, murmur3_32("gr1:123", 0) % 100 + 1)
    assert.equal(25, murmur3_32("groupX:999", 0) % 100 + 1)
    -- src/routing/mod.rs percentage_buckets_are_pinned
    assert.equal(4345, bucket("calendar-v2", "acc_1"))
    assert.equal(519, bucket("calendar-v2", "acc_2"))
    assert.equal(26, bucket("calendar-v2", "acc_3"))
    assert.equal(4344, bucket("calendar-v2", "acc_123"))
    assert.equal(4152, bucket("email", "42"))
    assert.equal(4799, bucket("r", "acc_1"))
    assert.equal(6306, bucket("r", ""))
    assert.equal(7430, bucket("", ""))
  end)


  it("each path lands on its service: /send -> email, /events and /calendars -> calendar, "
     .. "anything else -> legacy (the default target, no x-route)", function()
    local acc = account("acc_plain", { api_version = "v2", flags = { "beta" } })
    for _, c in ipairs({
      { "POST", "/send",              "email",    "email" },
      { "POST", "/send/batch?n=2",    "email",    "email" },
      { "POST", "/sender",            "email",    "email" },  -- prefixes have no segment boundary
      { "GET",  "/events",            "calendar", "calendar" },
      { "GET",  "/events/7?expand=1", "calendar", "calendar" },
      { "POST", "/calendars",         "calendar", "calendar" },
      { "GET",  "/calendars/42/acl",  "calendar", "calendar" },
      { "GET",  "/",                  "legacy",   nil },
      { "GET",  "/other/path?q=1",    "legacy",   nil },
      { "POST", "/event",             "legacy",   nil },      -- shorter than any prefix
      { "GET",  "/v2/events",         "legacy",   nil },      -- a versioned path is another path
    }) do
      local method, path, service, route = c[1], c[2], c[3], c[4]
      local echo = go(var_url, method, path, acc)
      assert_landed(echo, service, route, path, method .. " " .. path)
      assert.equal(method, echo.method)
    end
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("methods: /send is routed for POST and PUT only; other methods keep the default target", function()
    local acc = account("acc_methods", { api_version = "v2" })
    for _, c in ipairs({
      { "POST",   "email",  "email" },
      { "PUT",    "email",  "email" },
      { "GET",    "legacy", nil },
      { "DELETE", "legacy", nil },
      { "PATCH",  "legacy", nil },
    }) do
      local echo = go(var_url, c[1], "/send", acc)
      assert_landed(echo, c[2], c[3], "/send", c[1])
      assert.equal(c[1], echo.method)
    end
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("accounts on API version v1 stay on legacy for every path, pilots and flagged ones too", function()
    local in_bucket -- a flagged v1 account that the rollout would otherwise take
    for i = 1, 200 do
      if in_rollout("acc_v1_" .. i) then
        in_bucket = "acc_v1_" .. i
        break
      end
    end
    assert.is_string(in_bucket)
    for _, acc in ipairs({
      account("acc_old", { api_version = "v1" }),
      account(PILOTS[1], { api_version = "v1" }),
      account(in_bucket, { api_version = "v1", flags = { "calendar_v2" } }),
    }) do
      for _, c in ipairs({
        { "POST", "/send" }, { "PUT", "/send/batch" }, { "GET", "/events" },
        { "GET", "/calendars/1?x=y" }, { "GET", "/api/email/send?z=1" }, { "GET", "/" },
        { "DELETE", "/anything/else" },
      }) do
        local echo = go(var_url, c[1], c[2], acc)
        -- legacy-v1 has no strip_prefix: the uri reaches legacy unchanged
        assert_landed(echo, "legacy", "legacy-v1", c[2], acc.id .. " " .. c[1] .. " " .. c[2])
      end
    end
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("API version resolution: x-api-version header, then ^/(v\\d+)/ on the path, then the "
     .. "account's api_version, then the default (v2)", function()
    local V1, V2, V3 = "v1", "v2", "v3"
    local function acc(version)
      return account("acc_version_" .. tostring(version), { api_version = version })
    end
    for _, c in ipairs({
      -- { path, account api_version, header, service, route }
      -- account field alone
      { "/events",    V1,  nil,  "legacy",   "legacy-v1", "account v1" },
      { "/events",    V2,  nil,  "calendar", "calendar",  "account v2" },
      -- header beats account (both ways)
      { "/events",    V1,  V2,   "calendar", "calendar",  "header v2 over account v1" },
      { "/events",    V2,  V1,   "legacy",   "legacy-v1", "header v1 over account v2" },
      -- an empty header counts as not given
      { "/events",    V1,  "",   "legacy",   "legacy-v1", "empty header, account v1" },
      -- path beats account
      { "/v1/events", V2,  nil,  "legacy",   "legacy-v1", "path v1 over account v2" },
      { "/v2/probe",  V3,  nil,  "email",    "probe-v2",  "path v2 over account v3" },
      { "/v3/probe",  V2,  nil,  "legacy",   nil,         "path v3 over account v2" },
      -- header beats path
      { "/v1/events", V2,  V2,   "legacy",   nil,         "header v2 over path v1" },
      { "/v3/probe",  V3,  V2,   "email",    "probe-v2",  "header v2 over path v3" },
      { "/v2/probe",  V2,  V1,   "legacy",   "legacy-v1", "header v1 over path v2" },
      -- the pattern is anchored and needs the trailing slash
      { "/x/v1/events", V2, nil, "legacy",   nil,         "no path match inside the path" },
      { "/v1",        V2,  nil,  "legacy",   nil,         "no path match without the slash" },
      -- default when nothing else gives one
      { "/probe",     nil, nil,  "email",    "probe-v2",  "default v2" },
      { "/probe",     V3,  nil,  "legacy",   nil,         "account v3 over the default" },
      { "/probe",     V3,  V2,   "email",    "probe-v2",  "header v2 over account v3" },
      { "/probe",     nil, V1,   "legacy",   "legacy-v1", "header v1 over the default" },
    }) do
      local path, version, header, service, route, what = c[1], c[2], c[3], c[4], c[5], c[6]
      local extra = header and { ["X-Api-Version"] = header } or nil
      local echo = go(var_url, "GET", path, acc(version), extra)
      assert_landed(echo, service, route, path, what)
    end
    -- the account's version may be a number, compared as its JSON text: 2 is "2", not "v2"
    local echo = go(var_url, "GET", "/probe", account("acc_version_num", { api_version = 2 }))
    assert_landed(echo, "legacy", nil, "/probe", "numeric api_version 2 is \"2\", not v2")
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("calendar_v2 rollout at 25 %: exactly the accounts whose documented bucket is below 2500, "
     .. "flags in array and object form, the same answer on every request and every worker", function()
    local N, REPEAT = 40, 4
    local list, expect, hits = {}, {}, 0
    for i = 1, N do
      local id = string.format("acc_%02d", i)
      -- odd: flags as an array of names; even: as an object of name -> boolean
      local flags = i % 2 == 1 and { "beta", "calendar_v2" } or { calendar_v2 = true, beta = false }
      local acc = account(id, { api_version = "v2", flags = flags })
      expect[id] = in_rollout(id) and "calendar-v2" or "calendar"
      if in_rollout(id) then
        hits = hits + 1
      end
      for r = 1, REPEAT do
        local path = (r % 2 == 0) and "/calendars/" .. i or "/events?i=" .. i
        list[#list + 1] = { method = "GET", url = var_url .. path, headers = auth_headers(acc), id = id }
      end
    end
    -- plausible share: 25 % of 40 is 10 (binomial sd ~2.7); this id set gives 11
    assert.is_true(hits >= 4 and hits <= 18, hits .. " of " .. N)

    local before = all_stats()
    local results = helpers.request_many(list, 20)
    local answers, pids, n_pids = {}, {}, 0
    for i, r in ipairs(results) do
      local id = list[i].id
      assert(not r.err, "request " .. i .. " failed: " .. tostring(r.err))
      assert.equal(200, r.status, r.body)
      local echo = cjson.decode(r.body)
      local want = expect[id]
      assert.equal(want, echo.service, id .. " (bucket " .. bucket(ROLLOUT, id) .. ")")
      assert.equal(ports[want], echo.port, id)
      assert.equal(want == "calendar-v2" and ROLLOUT or "calendar", echo.headers["x-route"], id)
      answers[id] = answers[id] or {}
      answers[id][#answers[id] + 1] = echo.service
      local pid = r.headers["x-worker-pid"]
      if not pids[pid] then
        pids[pid] = true
        n_pids = n_pids + 1
      end
    end
    -- sticky: every account got one answer REPEAT times, from both workers
    for id, got in pairs(answers) do
      assert.equal(REPEAT, #got, id)
      for k = 2, REPEAT do
        assert.equal(got[1], got[k], id)
      end
    end
    assert.equal(WORKERS, n_pids, "the requests did not reach every worker")
    local served = 0
    for _, got in pairs(answers) do
      if got[1] == "calendar-v2" then
        served = served + 1
      end
    end
    assert.equal(hits, served)
    assert.equal(N * REPEAT, delta(before, all_stats(), "routed"))

    -- later, sequentially (L1/L2 cache hits now): still the same answers
    for i = 1, N, 3 do
      local id = string.format("acc_%02d", i)
      local flags = i % 2 == 1 and { "beta", "calendar_v2" } or { calendar_v2 = true, beta = false }
      local echo = go(var_url, "GET", "/events", account(id, { api_version = "v2", flags = flags }))
      assert.equal(expect[id], echo.service, id)
    end
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("the rollout needs the flag on: absent, false, not exactly true, or off-shape flags keep "
     .. "calendar even for in-bucket accounts", function()
    -- in-bucket ids (checked), so only the flag keeps them out
    local ids = {}
    for i = 1, 500 do
      local id = "acc_off_" .. i
      if in_rollout(id) then
        ids[#ids + 1] = id
      end
      if #ids == 7 then
        break
      end
    end
    assert.equal(7, #ids)
    local shapes = {
      { flags = nil,                               what = "no flags" },
      { flags = { "beta" },                        what = "array without the flag" },
      { flags = { calendar_v2 = false },           what = "object, false" },
      { flags = { calendar_v2 = "true" },          what = "object, the string \"true\"" },
      { flags = { calendar_v2 = 1 },               what = "object, 1" },
      { flags = "calendar_v2",                     what = "a string, not an array or object" },
      { flags = { "CALENDAR_V2", "calendar-v2" },  what = "array, other spellings" },
    }
    for k, shape in ipairs(shapes) do
      local acc = account(ids[k], { api_version = "v2", flags = shape.flags })
      local echo = go(var_url, "GET", "/events", acc)
      assert_landed(echo, "calendar", "calendar", "/events", shape.what)
      -- and with the flag on, the same account does get calendar-v2
      local on = account(ids[k], { api_version = "v2", flags = { "calendar_v2" } })
      echo = go(var_url, "GET", "/events", on)
      assert_landed(echo, "calendar-v2", ROLLOUT, "/events", shape.what .. ", then on")
    end
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("the allowlist always gets calendar-v2 on the calendar paths, with or without the flag, "
     .. "whatever its bucket; elsewhere it routes like anyone", function()
    for _, id in ipairs(PILOTS) do
      -- out of the 25 %: only the allowlist can send them to calendar-v2
      assert.is_false(in_rollout(id), id .. " is in the rollout's 25 %")
      for _, flags in ipairs({ { "beta" }, { calendar_v2 = true } }) do
        local acc = account(id, { api_version = "v2", flags = flags })
        for _, path in ipairs({ "/events", "/calendars/9?tz=UTC" }) do
          local echo = go(var_url, "GET", path, acc)
          assert_landed(echo, "calendar-v2", "calendar-v2-pilot", path, id .. " " .. path)
        end
        assert_landed(go(var_url, "POST", "/send", acc), "email", "email", "/send", id)
        assert_landed(go(var_url, "GET", "/home", acc), "legacy", nil, "/home", id)
      end
    end
    -- ids are compared exactly
    local near = account("ACC_PILOT_A", { api_version = "v2" })
    assert_landed(go(var_url, "GET", "/events", near), "calendar", "calendar", "/events", "case differs")
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("strip_prefix: the upstream gets the path without the matched prefix, query kept", function()
    local acc = account("acc_strip", { api_version = "v2" })
    for _, c in ipairs({
      { "/api/email/send?to=a%40b.test&x=1", "/send?to=a%40b.test&x=1" },
      { "/api/email/send/batch",             "/send/batch" },
      { "/api/email?x=1",                    "/?x=1" },
      { "/api/email",                        "/" },
      { "/api/email/",                       "/" },
      { "/api/emailer?y=2",                  "/er?y=2" },          -- no segment boundary
      { "/api/email/a%20b?q=%20",            "/a%20b?q=%20" },     -- decoded, then re-encoded by nginx
    }) do
      local echo = go(var_url, "POST", c[1], acc)
      assert_landed(echo, "email", "email-api", c[2], c[1])
    end
    -- a route without strip_prefix passes the path as is
    assert_landed(go(var_url, "POST", "/send/x?y=1", acc), "email", "email", "/send/x?y=1")
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("strip_prefix with an encoded control byte in the path answers 400 in JSON; "
     .. "the worker keeps serving", function()
    local acc = account("acc_ctl", { api_version = "v2" })
    -- nginx decodes %0A into $uri; the stripped path cannot go on a request line
    local status, headers, body = helpers.request("POST", var_url .. "/api/email/x%0Ay", auth_headers(acc))
    assert.equal(400, status, body)
    assert.same({ message = "Invalid request path" }, cjson.decode(body))
    assert.is_nil(headers["x-upstream"])
    -- the same route still works
    assert_landed(go(var_url, "POST", "/api/email/send", acc), "email", "email-api", "/send")
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("route_header: x-route carries the matched route's name upstream; a client's x-route never "
     .. "gets through", function()
    local acc = account("acc_hdr", { api_version = "v2" })
    -- matched: the client's value is replaced, never added to
    for _, spoof in ipairs({ "email", "calendar-v2-pilot", { "a", "b" } }) do
      local echo = go(var_url, "GET", "/events", acc, { ["X-Route"] = spoof })
      assert.equal("calendar", echo.headers["x-route"])
      echo = go(var_url, "GET", "/events", acc, { ["x-ROUTE"] = spoof })
      assert.equal("calendar", echo.headers["x-route"])
    end
    -- not matched: removed
    for _, spoof in ipairs({ "legacy-v1", { "a", "b" } }) do
      local echo = go(var_url, "GET", "/nowhere", acc, { ["X-Route"] = spoof })
      assert_landed(echo, "legacy", nil, "/nowhere")
    end
    -- other headers pass untouched
    local echo = go(var_url, "GET", "/events", acc, { ["X-Routed-By"] = "client" })
    assert.equal("client", echo.headers["x-routed-by"])
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("an unauthenticated request is never routed (401, no upstream)", function()
    local before = all_stats()
    local status, headers, body = helpers.request("POST", var_url .. "/send",
                                                  { Authorization = "Bearer deny" })
    assert.equal(401, status, body)
    assert.is_nil(headers["x-upstream"])
    assert.equal(0, delta(before, all_stats(), "routed"))
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("the balancer form (upstream block, keepalive) routes exactly like the variable form", function()
    local flagged_in, flagged_out
    for i = 1, 200 do
      local id = "acc_bal_" .. i
      if in_rollout(id) then
        flagged_in = flagged_in or id
      else
        flagged_out = flagged_out or id
      end
    end
    local plain = account("acc_bal", { api_version = "v2" })
    local cases = {
      { "POST", "/send?n=1",           plain, nil,  "email",       "email",             "/send?n=1" },
      { "GET",  "/send",               plain, nil,  "legacy",      nil,                 "/send" },
      { "GET",  "/events",             plain, nil,  "calendar",    "calendar",          "/events" },
      { "GET",  "/events",  account(flagged_in, { flags = { "calendar_v2" } }), nil,
        "calendar-v2", ROLLOUT, "/events" },
      { "GET",  "/calendars", account(flagged_out, { flags = { calendar_v2 = true } }), nil,
        "calendar", "calendar", "/calendars" },
      { "GET",  "/events/1",  account(PILOTS[2]), nil, "calendar-v2", "calendar-v2-pilot", "/events/1" },
      { "POST", "/api/email/send?to=x", plain, nil, "email",       "email-api",         "/send?to=x" },
      { "GET",  "/events",  account("acc_bal_old", { api_version = "v1" }), nil,
        "legacy", "legacy-v1", "/events" },
      { "GET",  "/v1/send",            plain, nil,  "legacy",      "legacy-v1",         "/v1/send" },
      { "GET",  "/probe",   account("acc_bal_nov"), "v2", "email", "probe-v2",         "/probe" },
      { "GET",  "/elsewhere?z=1",      plain, nil,  "legacy",      nil,                 "/elsewhere?z=1" },
    }
    local before = all_stats()
    local routed = 0
    for _, c in ipairs(cases) do
      local method, path, acc, version, service, route, uri = unpack(c, 1, 7)
      local extra = { ["X-Route"] = "spoofed" }
      if version then
        extra["X-Api-Version"] = version
      end
      local what = "balancer " .. method .. " " .. path .. " " .. acc.id
      local echo = go(bal_url, method, path, acc, extra)
      assert_landed(echo, service, route, uri, what)
      local var_echo = go(var_url, method, path, acc, extra)
      assert_landed(var_echo, service, route, uri, "variable " .. what)
      if route then
        routed = routed + 2
      end
    end
    assert.equal(routed, delta(before, all_stats(), "routed"))
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("the balancer form reuses upstream connections; the variable form opens one per request", function()
    local pilot = account(PILOTS[1], { api_version = "v2" })
    local max_bal = 0
    for i = 1, 8 do
      local echo, headers = go(bal_url, "GET", "/events/" .. i, pilot)
      assert_landed(echo, "calendar-v2", "calendar-v2-pilot", "/events/" .. i)
      assert.is_string(headers["x-worker-pid"])
      max_bal = math.max(max_bal, echo.connection_requests)
    end
    -- 8 requests over 2 workers: some worker sent at least 4 over its pool
    assert.is_true(max_bal >= 2, "no upstream connection was reused (max " .. max_bal .. ")")
    for i = 1, 4 do
      local echo = go(var_url, "GET", "/events/" .. i, pilot)
      assert_landed(echo, "calendar-v2", "calendar-v2-pilot", "/events/" .. i)
      assert.equal(1, echo.connection_requests)
    end
    helpers.assert_clean_log(gw:error_log(mark))
  end)


  it("error logs of the whole run are clean (gateway and mocks)", function()
    helpers.assert_clean_log(gw:error_log())
    helpers.assert_clean_log(mocks:error_log())
  end)
end)
