-- auth_router.openresty in real nginx against hostile clients: repeated and
-- huge headers, repeated credential headers (any case), control and
-- non-UTF-8 bytes in the path, query and headers, strip_prefix edges,
-- HTTP/1.0 and keepalive connections that switch identities.
--
-- Each case asserts the status, that nothing reached an upstream without an
-- account, and that the error log window has no [warn]/[error] line and no
-- stack trace. Requests are written byte for byte (helpers.raw_request) where
-- luasocket's usual client would normalize them.
--
--   AUTH_ROUTER_TREE=/tmp/ngxtree busted --lua=luajit spec/openresty/05-hostile_spec.lua

local helpers = require "spec.openresty.helpers"
local cjson   = require "cjson"

local ROUNDS  = 2
local WORKERS = 2

local NO_CREDENTIAL = { message = "No credentials found in request" }
local UNAUTHORIZED  = { message = "Unauthorized" }
local DUPLICATE     = { message = "Duplicate credential header found" }

local mocks, gw, mark


local function decode(body)
  local ok, v = pcall(cjson.decode, body or "")
  return ok and v or body
end

--- Raw request bytes: request line, then header lines (each given as
-- "Name: value", sent as is), then an empty line.
local function raw_bytes(line, header_lines)
  local out = { line }
  for _, h in ipairs(header_lines or {}) do
    out[#out + 1] = h
  end
  out[#out + 1] = "Host: gw"
  out[#out + 1] = "Connection: close"
  return table.concat(out, "\r\n") .. "\r\n\r\n"
end

local function raw(line, header_lines)
  local status, headers, body = helpers.raw_request(gw.port, raw_bytes(line, header_lines))
  assert(status, headers)
  return status, headers, decode(body)
end

--- The plugin (or nginx) answered: no upstream saw the request.
local function assert_stopped(expected_status, status, headers, body, expected_body)
  assert.equal(expected_status, status, cjson.encode(body))
  assert.is_nil(headers["x-upstream"], "an upstream answered an unauthenticated request")
  if expected_body then
    assert.same(expected_body, body)
  end
end

--- An upstream echo for account `id`.
local function assert_passed(id, status, headers, echo)
  assert.equal(200, status, type(echo) == "table" and cjson.encode(echo) or tostring(echo))
  assert.is_not_nil(headers["x-upstream"])
  assert.equal(id, echo.headers["x-account-id"])
  return echo
end

--- A repeated credential header: the plugin's 401, or nginx's own 400 for
-- headers nginx itself allows once (Authorization, in nginx 1.22 and later).
local function assert_duplicate(status, headers, body, nginx_refuses)
  if nginx_refuses and status == 400 then
    assert_stopped(400, status, headers)
    assert.matches("400 Bad Request", body, 1, true)
  else
    assert_stopped(401, status, headers, body, DUPLICATE)
  end
end

local function good(name)
  return "good-hx-" .. name
end


describe("auth_router.openresty hostile input (" .. WORKERS .. " workers)", function()

  lazy_setup(function()
    mocks = helpers.start_mocks()
    gw = helpers.start({
      mocks = mocks,
      workers = WORKERS,
      listen_options = "reuseport",
      config = helpers.config(mocks, {
        auth = {
          credential_headers = { "authorization", "x-api-key" },
          forward_headers = { "x-tenant" },
        },
        upstream_headers = { { name = "X-Account-Id", pointer = "/id" } },
        routes = {
          { name = "email", paths = { "/send" }, strip_prefix = true, target = mocks.targets.email },
          { name = "v9", api_versions = { "v9" }, target = mocks.targets.calendar },
        },
      }),
    })
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

  after_each(function()
    local log = gw:error_log(mark)
    assert.is_nil(log:find("stack traceback", 1, true), log)
    helpers.assert_clean_log(log)
  end)


  for round = 1, ROUNDS do
    local r = "-" .. round

    --------------------------------------------------------------------
    describe("repeated credential headers (round " .. round .. ")", function()

      it("two Authorization headers with different values: refused, no auth call", function()
        local a, b = good("dup-a" .. r), good("dup-b" .. r)
        local status, headers, body = raw("GET /x HTTP/1.1", {
          "Authorization: Bearer " .. a, "Authorization: Bearer " .. b })
        assert_duplicate(status, headers, body, true)
        assert.equal(0, mocks:calls(a))
        assert.equal(0, mocks:calls(b))
      end)

      it("two X-Api-Key headers, even with equal values: 401, no auth call", function()
        local a = good("dup-key" .. r)
        local status, headers, body = raw("GET /x HTTP/1.1", { "X-Api-Key: " .. a, "X-Api-Key: " .. a })
        assert_stopped(401, status, headers, body, DUPLICATE)
        assert.equal(0, mocks:calls(a))
      end)

      it("the same credential header in two cases counts as repeated", function()
        local a = good("dup-case" .. r)
        local status, headers, body = raw("GET /x HTTP/1.1", {
          "authorization: Bearer " .. a, "AUTHORIZATION: Bearer " .. a })
        assert_duplicate(status, headers, body, true)
        status, headers, body = raw("GET /x HTTP/1.1", { "x-api-key: " .. a, "X-API-KEY: deny" })
        assert_stopped(401, status, headers, body, DUPLICATE)
        assert.equal(0, mocks:calls(a))
      end)

      it("a cached credential repeated is still refused", function()
        local a = good("dup-cached" .. r)
        assert_passed("hx-dup-cached" .. r, raw("GET /x HTTP/1.1", { "X-Api-Key: " .. a }))
        local status, headers, body = raw("GET /x HTTP/1.1", { "X-Api-Key: " .. a, "X-Api-Key: deny" })
        assert_stopped(401, status, headers, body, DUPLICATE)
        assert.equal(1, mocks:calls(a))
      end)

      it("a repeated forwarded header is ambiguous too: 400, no auth call", function()
        local a = good("dup-fwd" .. r)
        local status, headers, body = raw("GET /x HTTP/1.1", {
          "Authorization: Bearer " .. a, "X-Tenant: t1", "x-tenant: t2" })
        assert_stopped(400, status, headers, body, { message = "Duplicate header found: x-tenant" })
        assert.equal(0, mocks:calls(a))
      end)

      it("a repeat hidden behind 300 other headers is found", function()
        local a = good("dup-deep" .. r)
        local lines = {}
        for i = 1, 300 do
          lines[i] = "X-Junk-" .. i .. ": " .. i
        end
        lines[#lines + 1] = "X-Api-Key: " .. a
        lines[#lines + 1] = "X-Api-Key: deny"
        local status, headers, body = raw("GET /x HTTP/1.1", lines)
        assert_stopped(401, status, headers, body, DUPLICATE)
        assert.equal(0, mocks:calls(a))
      end)
    end)


    --------------------------------------------------------------------
    describe("huge and repeated headers (round " .. round .. ")", function()

      it("200 copies of another header do not disturb authentication", function()
        local a = good("many" .. r)
        local lines = { "Authorization: Bearer " .. a }
        for i = 2, 201 do
          lines[i] = "X-Junk: " .. i
        end
        assert_passed("hx-many" .. r, raw("GET /x HTTP/1.1", lines))
      end)

      it("a 7 KiB unknown credential is denied by the auth service", function()
        local status, headers, body = raw("GET /x HTTP/1.1",
                                          { "Authorization: Bearer " .. string.rep("z", 7000) })
        assert_stopped(401, status, headers, body, UNAUTHORIZED)
      end)

      it("a header line over nginx's buffer is refused by nginx (400)", function()
        local status, headers = raw("GET /x HTTP/1.1", { "X-Big: " .. string.rep("b", 9000) })
        assert_stopped(400, status, headers)
      end)

      it("a 6 KiB query string without credential: 401; with one: passed", function()
        local q = "/x?" .. string.rep("q=1&", 1500)
        local status, headers, body = raw("GET " .. q .. " HTTP/1.1")
        assert_stopped(401, status, headers, body, NO_CREDENTIAL)
        local a = good("bigq" .. r)
        assert_passed("hx-bigq" .. r, raw("GET " .. q .. " HTTP/1.1", { "X-Api-Key: " .. a }))
      end)

      it("a request line over nginx's buffer is refused by nginx (414)", function()
        local status, headers = raw("GET /x?" .. string.rep("q", 9000) .. " HTTP/1.1")
        assert_stopped(414, status, headers)
      end)
    end)


    --------------------------------------------------------------------
    describe("bytes that are not UTF-8 (round " .. round .. ")", function()
      local PATHS = { "/caf\xE9", "/files/caf%E9", "/x?q=\xE9\xFF", "/x?q=%E9%FF", "/send\xC3" }

      for _, path in ipairs(PATHS) do
        it("GET " .. path:gsub("[\128-\255]", function(c) return ("\\x%02X"):format(c:byte()) end)
           .. " without credential: 401, with one: passed", function()
          local status, headers, body = raw("GET " .. path .. " HTTP/1.1")
          assert_stopped(401, status, headers, body, NO_CREDENTIAL)
          local a = good("utf" .. r)
          assert_passed("hx-utf" .. r, raw("GET " .. path .. " HTTP/1.1", { "X-Api-Key: " .. a }))
        end)
      end

      it("a raw byte in the API-version header: 401 without credential; routes on bytes", function()
        local status, headers, body = raw("GET /x HTTP/1.1", { "X-Api-Version: v9\xE9" })
        assert_stopped(401, status, headers, body, NO_CREDENTIAL)
        local a = good("ver" .. r)
        local echo = assert_passed("hx-ver" .. r, raw("GET /x HTTP/1.1", {
          "X-Api-Key: " .. a, "X-Api-Version: v9\xE9" }))
        assert.equal("legacy", echo.service) -- "v9\xE9" is not v9
        echo = assert_passed("hx-ver" .. r, raw("GET /x HTTP/1.1", { "X-Api-Key: " .. a, "X-Api-Version: v9" }))
        assert.equal("calendar", echo.service)
      end)

      it("a raw byte in the credential is just an unknown credential", function()
        local status, headers, body = raw("GET /x HTTP/1.1", { "Authorization: Bearer \xE9\xFF\x80" })
        assert_stopped(401, status, headers, body, UNAUTHORIZED)
      end)

      it("a routed, stripped path keeps its raw bytes", function()
        local a = good("strip-utf" .. r)
        local echo = assert_passed("hx-strip-utf" .. r, raw("GET /send%E9 HTTP/1.1", { "X-Api-Key: " .. a }))
        assert.equal("email", echo.service)
      end)
    end)


    --------------------------------------------------------------------
    describe("control bytes (round " .. round .. ")", function()

      it("NUL in a header value is refused by nginx (400)", function()
        local status, headers = raw("GET /x HTTP/1.1", { "X-Api-Key: a\0b" })
        assert_stopped(400, status, headers)
      end)

      it("a bare CR in a header value is refused by nginx (400)", function()
        local status, headers = raw("GET /x HTTP/1.1", { "X-Api-Key: a\rb" })
        assert_stopped(400, status, headers)
      end)

      it("%0D%0A in a stripped path: 400 from the plugin, never a split upstream request", function()
        local a = good("crlf" .. r)
        local status, headers, body = raw("GET /send/x%0D%0AX-Injected:%201 HTTP/1.1", { "X-Api-Key: " .. a })
        assert_stopped(400, status, headers, body, { message = "Invalid request path" })
      end)

      it("%00 in the path is refused by nginx (400)", function()
        local status, headers = raw("GET /x%00y HTTP/1.1")
        assert_stopped(400, status, headers)
      end)

      it("a tab and high bytes in a credential are an unknown credential", function()
        local status, headers, body = raw("GET /x HTTP/1.1", { "X-Api-Key: a\tb\xFF" })
        assert_stopped(401, status, headers, body, UNAUTHORIZED)
      end)
    end)


    --------------------------------------------------------------------
    describe("strip_prefix edges (round " .. round .. ")", function()
      -- nginx's $uri is decoded and merged (merge_slashes on): the route and
      -- the stripped path are computed on that.
      local CASES = {
        { "/send",        "/" },
        { "/send/x",      "/x" },
        { "//send",       "/" },
        { "/%73end/x",    "/x" },
        { "/send%2Fx",    "/x" },
        { "/sendmail",    "/mail" },   -- prefix match, no segment boundary (as Kong)
        { "/./send/../send/y", "/y" },
      }
      for _, case in ipairs(CASES) do
        it(case[1] .. " goes to email as " .. case[2], function()
          local a = good("strip" .. r)
          local echo = assert_passed("hx-strip" .. r, raw("GET " .. case[1] .. " HTTP/1.1", {
            "X-Api-Key: " .. a }))
          assert.equal("email", echo.service)
          assert.equal(case[2], echo.uri)
        end)
        it(case[1] .. " without credential: 401", function()
          local status, headers, body = raw("GET " .. case[1] .. " HTTP/1.1")
          assert_stopped(401, status, headers, body, NO_CREDENTIAL)
        end)
      end

      it("/../send escaping the root is refused by nginx (400)", function()
        local status, headers = raw("GET /../send HTTP/1.1")
        assert_stopped(400, status, headers)
      end)
    end)


    --------------------------------------------------------------------
    describe("connections (round " .. round .. ")", function()

      it("HTTP/1.0: 401 without credential, passed with one", function()
        local bytes = "GET /x HTTP/1.0\r\n\r\n"
        local status, headers, body = helpers.raw_request(gw.port, bytes)
        assert_stopped(401, status, headers, decode(body), NO_CREDENTIAL)
        local a = good("h10" .. r)
        status, headers, body = helpers.raw_request(gw.port, "GET /x HTTP/1.0\r\nX-Api-Key: " .. a .. "\r\n\r\n")
        assert_passed("hx-h10" .. r, status, headers, decode(body))
      end)

      it("one keepalive connection alternating identities never mixes them up", function()
        local conn = helpers.connection(gw.port)
        local ids = { "ka-alice" .. r, "ka-bob" .. r }
        for i = 1, 12 do
          local kind = i % 4
          local lines = { "GET /x?i=" .. i .. " HTTP/1.1", "Host: gw" }
          if kind == 1 or kind == 2 then
            lines[#lines + 1] = "Authorization: Bearer " .. good(ids[kind])
          elseif kind == 3 then
            lines[#lines + 1] = "Authorization: Bearer deny"
          end
          local status, headers, body = conn:request(table.concat(lines, "\r\n") .. "\r\n\r\n")
          assert(status, headers)
          body = decode(body)
          if kind == 1 or kind == 2 then
            assert_passed("hx-" .. ids[kind], status, headers, body)
          elseif kind == 3 then
            assert_stopped(401, status, headers, body, UNAUTHORIZED)
          else
            assert_stopped(401, status, headers, body, NO_CREDENTIAL)
          end
        end
        conn:close()
      end)
    end)
  end
end)
