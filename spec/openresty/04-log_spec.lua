-- auth_router.openresty in real nginx: body capture and log shipping (issue 5
-- "Prove it"), against a real collector process (spec/fixtures/collector.lua,
-- a separate luajit process speaking the tcp and http sinks).
--
--   * 1000 concurrent requests over 2 workers -> exactly 1000 records, each
--     with the right method, uri, status, bodies, account, route, upstream,
--     request id
--   * where a request went without a matched route: the default target of
--     the variable form and of the balancer form; a default naming an nginx
--     upstream block, with both addresses and statuses after a retry
--   * chunked and streamed upstream responses reach the client byte-identical
--     and undelayed, and are logged completely up to the cap; binary bodies
--     are base64; a 10 MiB body is cut at the cap with the right body_size,
--     reaches the client intact, and the workers' peak RSS stays bounded
--   * request bodies nginx spilled to a temp file are captured up to the cap
--   * redaction: default and custom redact_headers (credential headers always),
--     nested JSON fields, form fields, and truncated JSON bodies cut near a
--     secret, in requests and in responses
--   * collector down (connection refused) or hung (accepts, never answers):
--     requests succeed without added latency; the queue stays under
--     queue_max_bytes, drops are counted; back within the retry window the
--     queued records arrive, none duplicated; the http sink retries 5xx answers
--   * pending records are flushed when nginx stops gracefully (nginx -s quit)
--
-- Every gateway runs 2 workers with reuseport; each case checks the error log
-- of its own window. Upstreams: the mocks (email, calendar, legacy echo
-- servers) plus a "local" upstream inside the gateway's own nginx serving
-- /local/stream (timed chunks), /local/binary, /local/mirror (the request
-- body back, same Content-Type) and /local/ok.
--
-- Assumptions on the record beyond design §3 (a failure naming them points
-- at the contract, not necessarily at the code): header names are lowercase
-- keys; a form field is masked as `name=[REDACTED]` (raw or percent-encoded);
-- log_sent and log_dropped count records; log_queue_bytes is 0 once the
-- queue is empty.
--
--   AUTH_ROUTER_TREE=/tmp/logtree busted --lua=luajit spec/openresty/04-log_spec.lua

local helpers   = require "spec.openresty.helpers"
local collector = require "spec.openresty.collector"
local cjson     = require "cjson"
local mime      = require "mime"
local socket    = require "socket"

local WORKERS   = 2
local LOG_LEVEL = "info"
local REDACTED  = "[REDACTED]"
local CAP       = 65536          -- default max_body_bytes
local SMALL_CAP = 4096           -- max_body_bytes of the "caps" gateway
local MIB       = 1024 * 1024

-- error log lines that collector failures may cause
local COLLECTOR_FAILED = "%[auth%-router%] log collector "
local CONNECT_REFUSED  = "connect%(%) failed %(111: Connection refused%)"
local READ_TIMED_OUT   = "lua tcp socket read timed out"
local SEND_FAILED      = "lua tcp socket write failed"
local CONN_RESET       = "Connection reset by peer"
local BROKEN_PIPE      = "Broken pipe"
local COLLECTOR_DOWN   = { COLLECTOR_FAILED, CONNECT_REFUSED, READ_TIMED_OUT, SEND_FAILED,
                           CONN_RESET, BROKEN_PIPE }
-- nginx's own notes about temp files (proof that a body was spilled)
local BODY_SPILLED     = "a client request body is buffered to a temporary file"
local RESPONSE_SPILLED = "an upstream response is buffered to a temporary file"

local mocks
local gateways, collectors = {}, {}


------------------------------------------------------------------------
-- the "local" upstream, inside the gateway's nginx

-- /local/stream?n=&size=&gap_ms=  n pieces of `size` bytes, each flushed, with
--                                  gap_ms between them; X-Accel-Buffering: no
-- /local/binary?n=                 n bytes (i*7+3) % 256, Content-Length
-- /local/mirror                    the request body back, same Content-Type
-- /local/ok                        "ok", Set-Cookie and X-Resp headers
local LOCAL_SERVER = [[
    server {
        listen 127.0.0.1:%d;
        server_name log-local-upstream;
        lua_http10_buffering off;      # proxy_pass speaks HTTP/1.0: let ngx.flush() work
        client_body_buffer_size 1m;
        client_max_body_size 16m;

        location /local/stream {
            content_by_lua_block {
                local n = tonumber(ngx.var.arg_n) or 4
                local size = tonumber(ngx.var.arg_size) or 1000
                local gap = (tonumber(ngx.var.arg_gap_ms) or 0) / 1000
                ngx.header["Content-Type"] = "text/plain"
                ngx.header["X-Accel-Buffering"] = "no"
                for i = 1, n do
                    ngx.print(string.rep(string.char(97 + (i - 1) %% 26), size - 1) .. "\n")
                    ngx.flush(true)
                    if gap > 0 and i < n then
                        ngx.sleep(gap)
                    end
                end
            }
        }
        location /local/binary {
            content_by_lua_block {
                local n = tonumber(ngx.var.arg_n) or 256
                local t = {}
                for i = 0, n - 1 do
                    t[#t + 1] = string.char((i * 7 + 3) %% 256)
                end
                local body = table.concat(t)
                ngx.header["Content-Type"] = "application/octet-stream"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }
        location /local/mirror {
            content_by_lua_block {
                ngx.req.read_body()
                local body = ngx.req.get_body_data()
                if not body then
                    local file = ngx.req.get_body_file()
                    if file then
                        local f = io.open(file, "rb")
                        body = f:read("*a")
                        f:close()
                    end
                end
                body = body or ""
                ngx.header["Content-Type"] = ngx.var.content_type or "application/octet-stream"
                ngx.header["Content-Length"] = #body
                ngx.header["Set-Cookie"] = "sid=mirror-cookie"
                ngx.print(body)
            }
        }
        location /local/ok {
            content_by_lua_block {
                ngx.req.read_body()
                ngx.header["Content-Type"] = "text/plain"
                ngx.header["Set-Cookie"] = "sid=setcookie-value-77"
                ngx.header["X-Resp"] = "visible"
                ngx.print("ok")
            }
        }
    }
]]

-- the pieces /local/stream sends
local function stream_body(n, size)
  local t = {}
  for i = 1, n do
    t[i] = string.rep(string.char(97 + (i - 1) % 26), size - 1) .. "\n"
  end
  return table.concat(t)
end

local function binary_body(n)
  local t = {}
  for i = 0, n - 1 do
    t[#t + 1] = string.char((i * 7 + 3) % 256)
  end
  return table.concat(t)
end


------------------------------------------------------------------------
-- small helpers

local function bearer(token, extra)
  local h = { Authorization = "Bearer " .. token }
  for k, v in pairs(extra or {}) do
    h[k] = v
  end
  return h
end

local function routes(local_port)
  return {
    { name = "email", paths = { "/send" }, target = mocks.targets.email },
    { name = "calendar", paths = { "/events" }, target = mocks.targets.calendar },
    { name = "local", paths = { "/local" }, target = "127.0.0.1:" .. local_port },
  }
end

--- Starts a collector and a gateway logging to it. log: overrides of the
-- `log` record; opts: http (extra http snippet), config (more overrides),
-- collector (an existing collector), port_only (the collector is down).
local function start_pair(name, log, opts)
  opts = opts or {}
  local c = opts.collector or collector.start()
  collectors[#collectors + 1] = c
  local local_port = helpers.free_ports(1)[1]
  local log_conf = { enabled = true, sink = "tcp", host = "127.0.0.1", port = c.port,
                     request_body = true, response_body = true, flush_interval_ms = 50 }
  for k, v in pairs(log or {}) do
    log_conf[k] = v
  end
  if log_conf.sink == "http" then
    log_conf.host, log_conf.port = nil, nil
    log_conf.url = log_conf.url or c.url
  end
  local overrides = { routes = routes(local_port), log = log_conf }
  for k, v in pairs(opts.config or {}) do
    overrides[k] = v
  end
  local gw = helpers.start({
    mocks = mocks,
    workers = opts.workers or WORKERS,
    listen_options = "reuseport",
    log_level = LOG_LEVEL,
    config = helpers.config(mocks, overrides),
    http = (opts.http or "") .. "\n" .. string.format(LOCAL_SERVER, local_port),
  })
  gw.name = name
  gw.rid = log_conf.request_id_header or "X-Request-Id"   -- the header carrying our request ids
  gateways[#gateways + 1] = gw
  return gw, c
end

local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  return ok and v or nil
end

--- A captured body as bytes (base64 decoded), or nil when absent.
local function body_of(part)
  if part == nil or part.body == nil or part.body == cjson.null then
    return nil
  end
  if part.body_encoding == "base64" then
    return (mime.unb64(part.body))
  end
  return part.body
end

--- The value of header `name` in a record's headers (any case).
local function header(headers, name)
  if type(headers) ~= "table" then
    return nil
  end
  name = name:lower()
  for k, v in pairs(headers) do
    if type(k) == "string" and k:lower() == name then
      return v
    end
  end
  return nil
end

--- The records of `c` whose request_id starts with `prefix`: id -> record,
-- the ids seen more than once, the number of matching records.
local function records_by_id(c, prefix)
  local records, bad = c:records()
  assert(#bad == 0, #bad .. " record(s) are not JSON objects, first: " .. tostring(bad[1]))
  local by, dups, n = {}, {}, 0
  for _, r in ipairs(records) do
    local id = r.request_id
    if type(id) == "string" and id:sub(1, #prefix) == prefix then
      n = n + 1
      if by[id] then
        dups[#dups + 1] = id
      end
      by[id] = r
    end
  end
  return by, dups, n
end

--- The record text (as received) of request `id`.
local function record_text(c, id)
  local needle = '"request_id":"' .. id .. '"'
  for _, t in ipairs(c:texts()) do
    if t:find(needle, 1, true) then
      return t
    end
  end
  return nil
end

--- Waits until the records with `prefix` are `n` (or `timeout`), then for a
-- quiet period (duplicates would show up). Returns records_by_id().
local function collect(c, prefix, n, timeout)
  collector.wait_until(timeout or 10, function()
    local _, _, got = records_by_id(c, prefix)
    return got >= n
  end)
  c:wait_quiet(0.3, 3)
  return records_by_id(c, prefix)
end

local all_stats = helpers.all_stats

local delta = helpers.delta

local function median(list)
  local t = {}
  for i, v in ipairs(list) do
    t[i] = v
  end
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

local function maximum(list)
  local m = 0
  for _, v in ipairs(list) do
    m = math.max(m, v)
  end
  return m
end

--- `n` sequential requests (fresh connection each); their durations.
local function timed_sequence(gw, n, prefix, path)
  local times = {}
  for i = 1, n do
    local t0 = socket.gettime()
    local h = bearer("good-lat", { [gw.rid] = prefix .. i })
    if gw.rid:lower() ~= "x-request-id" then
      h["X-Request-Id"] = "decoy"        -- must not be taken for the request id
    end
    local status, headers, body = helpers.request("GET", gw.gw_url .. (path or "/other/t") .. "?i=" .. i, h)
    times[i] = socket.gettime() - t0
    assert(status, headers)
    assert.equal(200, status, body)
  end
  return times
end

--- Peak and current RSS (kB) of `pid` from /proc.
local function memory_kb(pid)
  local text = helpers.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(text:match("VmHWM:%s*(%d+)")), tonumber(text:match("VmRSS:%s*(%d+)"))
end

--- A GET read as it arrives: status, headers, decoded body, the seconds
-- until the first body byte and until the end.
local function timed_get(url, headers)
  local host, port, path = url:match("^http://([^:/]+):(%d+)(.*)$")
  local lines = { "GET " .. path .. " HTTP/1.1", "Host: " .. host .. ":" .. port, "Connection: close" }
  for k, v in pairs(headers or {}) do
    lines[#lines + 1] = k .. ": " .. v
  end
  local s = socket.tcp()
  s:settimeout(5)
  local t0 = socket.gettime()
  assert(s:connect(host, tonumber(port)))
  assert(s:send(table.concat(lines, "\r\n") .. "\r\n\r\n"))
  s:settimeout(0.005)
  local parts, size, head_end, t_first = {}, 0, nil, nil
  local deadline = t0 + 10
  while socket.gettime() < deadline do
    local data, err, partial = s:receive(65536)
    local got = data or partial
    if got and got ~= "" then
      parts[#parts + 1] = got
      size = size + #got
      if not head_end then
        head_end = table.concat(parts):find("\r\n\r\n", 1, true)
      end
      if head_end and not t_first and size > head_end + 3 then
        t_first = socket.gettime() - t0
      end
    end
    if err == "closed" then
      break
    end
    assert(err == nil or err == "timeout", err)
  end
  local t_end = socket.gettime() - t0
  s:close()
  local raw = table.concat(parts)
  assert(head_end, "no response head: " .. raw:sub(1, 200))
  local head, rest = raw:sub(1, head_end - 1), raw:sub(head_end + 4)
  local resp_headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    resp_headers[name:lower()] = value
  end
  local body = rest
  if (resp_headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    body = assert(helpers.decode_chunked(rest))
  end
  return tonumber(head:match("^HTTP/1%.%d (%d+)")), resp_headers, body, t_first, t_end
end

--- Checks the captured `part` (record.request or record.response) against
-- the full body `full` for cap `cap`.
local function assert_capture(part, full, cap, what)
  local got = body_of(part)
  assert(got ~= nil, what .. ": no body captured")
  assert.equal(#full, part.body_size, what .. ": body_size")
  if #full > cap then
    assert.is_true(part.body_truncated, what .. ": body_truncated")
    assert.equal(cap, #got, what .. ": captured bytes")
    assert(got == full:sub(1, cap), what .. ": the captured bytes are not the first " .. cap .. " bytes")
  else
    assert.is_false(part.body_truncated, what .. ": body_truncated")
    assert.equal(#full, #got, what .. ": captured bytes")
    assert(got == full, what .. ": the captured body differs from the one sent")
  end
end

local function clean(gw, mark, allowed)
  helpers.assert_clean_log(gw:error_log(mark), allowed)
end


describe("auth_router.openresty log shipping (" .. WORKERS .. " workers, real collector)", function()

  lazy_setup(function()
    mocks = helpers.start_mocks({ workers = 2 })
  end)

  lazy_teardown(function()
    for _, gw in ipairs(gateways) do
      gw:stop()
    end
    for _, c in ipairs(collectors) do
      c:stop()
    end
    if mocks then
      mocks:stop()
    end
  end)


  ----------------------------------------------------------------------
  describe("tcp sink, default caps and redaction", function()
    local gw, c, mark

    lazy_setup(function()
      gw, c = start_pair("tcp", { batch_max_entries = 100 }, { config = { hide_credentials = true } })
    end)

    before_each(function()
      mark = gw:log_mark()
    end)


    it("1000 concurrent requests -> exactly 1000 records, each matching its request", function()
      local N = 1000
      local before = all_stats(gw)
      local list, expect = {}, {}
      for i = 1, N do
        local kind = i % 10
        local id = "bulk-" .. i
        local acc = "acc" .. (i % 7)
        local r = { method = "GET", headers = bearer("good-" .. acc, { ["X-Request-Id"] = id }) }
        local e = { account = acc, status = 200 }
        if kind == 0 then
          r.headers.Authorization = "Bearer deny"
          r.path = "/denied/" .. i
          e.status, e.account = 401, nil
        elseif kind == 1 then
          r.headers.Authorization = nil
          r.path = "/anonymous/" .. i
          e.status, e.account, e.cache = 401, nil, "none"
        elseif kind == 2 or kind == 3 then
          r.method = "POST"
          r.path = "/send/" .. i .. "?i=" .. i
          r.body = "send body " .. i
          r.headers["Content-Type"] = "text/plain"
          e.route = "email"
        elseif kind == 4 then
          r.path = "/events/" .. i .. "?x=1&y=%20"
          e.route = "calendar"
        elseif kind == 5 then
          r.path = "/other/" .. i .. "?status=404"
          e.status = 404
        elseif kind == 6 then
          r.method = "PUT"
          r.path = "/send/put?i=" .. i
          r.body = '{"n":' .. i .. ',"s":"v"}'
          r.headers["Content-Type"] = "application/json"
          e.route = "email"
        elseif kind == 7 then
          r.method = "POST"
          r.path = "/local/mirror?i=" .. i
          r.body = "mirror " .. string.rep("m", i % 300)
          r.headers["Content-Type"] = "text/plain"
          e.route = "local"
        else
          r.path = "/legacy/" .. i .. "?pad=" .. (i % 500)
        end
        r.url = gw.gw_url .. r.path
        list[i], expect[i] = r, e
      end
      local route_target = {}
      for _, rt in ipairs(routes(0)) do
        route_target[rt.name] = rt.target
      end

      local t0 = socket.gettime()
      local results = helpers.request_many(list, 50, 30)
      local t1 = socket.gettime()
      local pids, n_pids = {}, 0
      for i, res in ipairs(results) do
        assert(not res.err, "request " .. i .. " failed: " .. tostring(res.err))
        assert.equal(expect[i].status, res.status, "request " .. i .. ": " .. tostring(res.body))
        local pid = res.headers["x-worker-pid"]
        if pid and not pids[pid] then
          pids[pid], n_pids = true, n_pids + 1
        end
      end
      assert.equal(WORKERS, n_pids, "the requests did not reach every worker")

      local by, dups, got = collect(c, "bulk-", N, 15)
      assert.same({}, dups, "duplicated records")
      assert.equal(N, got, "records received")

      local route_target_local = nil
      for i = 1, N do
        local r, e, res = list[i], expect[i], results[i]
        local rec = by["bulk-" .. i]
        local what = "record of request " .. i .. " (" .. r.method .. " " .. r.path .. ")"
        assert(rec, what .. " is missing")
        assert.equal(r.method, rec.request.method, what)
        assert.equal(r.path, rec.request.uri, what)
        assert.equal(e.status, rec.response.status, what)
        assert.equal("127.0.0.1", rec.client_ip, what)
        assert(type(rec.started_at) == "number" and rec.started_at >= t0 * 1000 - 1000
               and rec.started_at <= t1 * 1000 + 1000, what .. ": started_at " .. tostring(rec.started_at))
        -- bodies: the request as sent, the response as the client got it
        if r.body then
          assert_capture(rec.request, r.body, CAP, what .. " request")
        else
          local b = body_of(rec.request)
          assert(b == nil or b == "", what .. ": a request body without one sent: " .. tostring(b))
        end
        assert_capture(rec.response, res.body, CAP, what .. " response")
        -- identity, auth, route
        if e.account then
          assert.same({ id = e.account }, rec.account, what)
        else
          assert.equal(cjson.null, rec.account, what)
        end
        assert.is_table(rec.auth, what)
        assert.truthy(({ hit = true, miss = true, stale = true, negative = true, none = true })[rec.auth.cache],
                      what .. ": auth.cache " .. tostring(rec.auth.cache))
        if e.cache then
          assert.equal(e.cache, rec.auth.cache, what)
        end
        if e.route then
          if e.route == "local" then
            route_target_local = route_target_local or rec.route.target
            assert.equal(route_target_local, rec.route.target, what)
            assert.matches("^127%.0%.0%.1:%d+$", rec.route.target, what)
            assert.equal("local", rec.route.name, what)
          else
            assert.same({ name = e.route, target = route_target[e.route] }, rec.route, what)
          end
        elseif e.account then
          -- no route matched: proxied to $auth_router_target
          assert.same({ name = cjson.null, target = mocks.targets.legacy }, rec.route, what)
        else
          assert.equal(cjson.null, rec.route, what)
        end
        -- nginx's own account of the proxying; none for a denial
        if e.account then
          local addr = e.route and (rec.route.target or "?") or mocks.targets.legacy
          assert.same({ addr = addr, status = tostring(e.status) }, rec.upstream, what)
        else
          assert.equal(cjson.null, rec.upstream, what)
        end
        assert.is_number(rec.latencies.request, what)
        assert.is_true(rec.latencies.request >= 0, what)
        assert.equal(r.headers["X-Request-Id"], header(rec.request.headers, "x-request-id"), what)
        assert.equal(REDACTED, header(rec.request.headers, "authorization") or REDACTED, what)
      end
      -- no credential anywhere in what the collector received (hide_credentials
      -- keeps it out of the echoed bodies too)
      assert.falsy(c:raw():find("good-acc", 1, true), "a credential reached the collector")

      local after, by_pid = all_stats(gw)
      assert.equal(N, delta(before, after, "log_queued"), "log_queued")
      assert.equal(N, delta(before, after, "log_sent"), "log_sent (in records)")
      assert.equal(0, delta(before, after, "log_dropped"), "log_dropped")
      for pid, s in pairs(by_pid) do
        assert.equal(0, s.log_queue_bytes, "log_queue_bytes of worker " .. pid .. " once all is sent")
      end
      clean(gw, mark)
    end)


    it("chunked upstream responses reach the client intact and are logged completely up to the cap",
       function()
      for _, case in ipairs({ { pad = 10 }, { pad = 30000 }, { pad = 200000 }, { pad = 5000, delay = 300 } }) do
        local id = "chunked-" .. case.pad
        local path = "/send/chunked?chunked=1&pad=" .. case.pad
                     .. (case.delay and "&delay_ms=" .. case.delay or "")
        local t0 = socket.gettime()
        local status, headers, body = helpers.request("GET", gw.gw_url .. path,
                                                      bearer("good-chunky", { ["X-Request-Id"] = id }))
        local elapsed = socket.gettime() - t0
        assert(status, headers)
        assert.equal(200, status, body)
        assert.matches("chunked", headers["transfer-encoding"] or "", 1, true)
        local echo = assert(decode(body), "the client did not get the whole JSON echo")
        assert.equal(string.rep("x", case.pad), echo.pad, "pad " .. case.pad .. " damaged")
        assert.equal("/send/chunked?chunked=1&pad=" .. case.pad
                     .. (case.delay and "&delay_ms=" .. case.delay or ""), echo.uri)

        local by = collect(c, id, 1)
        local rec = assert(by[id], "no record for " .. id)
        assert_capture(rec.response, body, CAP, id .. " response")
        assert.equal("utf8", rec.response.body_encoding, id)
        assert.is_true(rec.response.size >= #body, id .. ": response.size counts the body")
        if case.delay then
          assert.is_true(elapsed >= case.delay / 1000)
          assert.is_true(rec.latencies.request >= case.delay - 20,
                         id .. ": latencies.request " .. rec.latencies.request)
          assert.is_true(rec.latencies.proxy >= case.delay - 20,
                         id .. ": latencies.proxy " .. rec.latencies.proxy)
        end
      end
      clean(gw, mark)
    end)


    it("a streamed response reaches the client byte-identical as it is produced, and is logged", function()
      -- 6 pieces of 5000 bytes, 150 ms apart: the first must reach the client
      -- long before the last is produced
      local n, size, gap = 6, 5000, 150
      local expected = stream_body(n, size)
      local status, headers, body, t_first, t_end = timed_get(
        gw.gw_url .. "/local/stream?n=" .. n .. "&size=" .. size .. "&gap_ms=" .. gap,
        bearer("good-streamer", { ["X-Request-Id"] = "stream-1" }))
      assert.equal(200, status)
      assert.matches("chunked", headers["transfer-encoding"] or "", 1, true)
      assert(body == expected, "the streamed body differs (" .. #body .. " bytes, expected " .. #expected .. ")")
      assert.is_true(t_end >= (n - 1) * gap / 1000 * 0.9, "the stream ended too early: " .. t_end)
      assert(t_first and t_first < t_end - (n - 1) * gap / 1000 * 0.6,
             string.format("the first piece arrived after %.3f s of %.3f s: the response was held back",
                           t_first or -1, t_end))

      -- beyond the cap, streamed without gaps: 20 x 8 KiB
      local big = stream_body(20, 8192)
      local status2, _, body2 = helpers.request("GET", gw.gw_url .. "/local/stream?n=20&size=8192",
                                                bearer("good-streamer", { ["X-Request-Id"] = "stream-2" }))
      assert.equal(200, status2)
      assert(body2 == big, "the second streamed body differs")

      local by = collect(c, "stream-", 2)
      assert_capture(assert(by["stream-1"], "no record for stream-1").response, expected, CAP, "stream-1")
      assert_capture(assert(by["stream-2"], "no record for stream-2").response, big, CAP, "stream-2")
      clean(gw, mark)
    end)


    it("a binary response is logged base64, a text one as utf8", function()
      local expected = binary_body(3000)
      local status, _, body = helpers.request("GET", gw.gw_url .. "/local/binary?n=3000",
                                              bearer("good-bin", { ["X-Request-Id"] = "binary-1" }))
      assert.equal(200, status)
      assert(body == expected, "the binary body differs")
      local by = collect(c, "binary-", 1)
      local rec = assert(by["binary-1"], "no record for binary-1")
      assert.equal("base64", rec.response.body_encoding)
      assert_capture(rec.response, expected, CAP, "binary-1")
      clean(gw, mark)
    end)


    it("a 10 MiB response reaches the client intact, is cut at the cap with the right body_size, "
       .. "and the workers' peak RSS stays bounded", function()
      local _, by_pid = all_stats(gw)
      local before = {}
      for pid in pairs(by_pid) do
        before[pid] = memory_kb(pid)
      end
      local PAD = 10 * MIB
      local ROUNDS = 4
      local sizes = {}
      for i = 1, ROUNDS do
        local id = "huge-" .. i
        local status, headers, body = helpers.request("GET", gw.gw_url .. "/other/huge?pad=" .. PAD,
                                                      bearer("good-huge", { ["X-Request-Id"] = id }), nil, 20)
        assert(status, headers)
        assert.equal(200, status)
        local echo = assert(decode(body), "the 10 MiB echo is not whole JSON (" .. #body .. " bytes)")
        assert.equal(PAD, #echo.pad)
        assert.falsy(echo.pad:find("[^x]"), "the 10 MiB body was altered")
        sizes[id] = body
      end

      local by = collect(c, "huge-", ROUNDS)
      for id, body in pairs(sizes) do
        local rec = assert(by[id], "no record for " .. id)
        assert_capture(rec.response, body, CAP, id)
        assert.is_true(rec.response.size >= #body, id .. ": response.size")
      end

      local grew = {}
      for pid, hwm in pairs(before) do
        local hwm_after, rss = memory_kb(pid)
        grew[#grew + 1] = string.format("worker %s: peak RSS %d -> %d kB (now %d kB)", pid, hwm, hwm_after, rss)
        -- a worker holding one whole body would grow by >= 10 MiB
        assert(hwm_after - hwm < 6 * 1024, "worker memory not bounded: " .. table.concat(grew, "; "))
      end
      if os.getenv("LOG_SPEC_VERBOSE") then
        print("\n" .. table.concat(grew, "\n"))
      end
      clean(gw, mark, { RESPONSE_SPILLED })
    end)


    it("default redact_headers: proxy-authorization, cookie, set-cookie masked", function()
      local status = helpers.request("GET", gw.gw_url .. "/local/ok", bearer("good-hdr", {
        ["X-Request-Id"] = "hdr-default",
        Cookie = "sid=cookie-value-11",
        ["Proxy-Authorization"] = "Basic proxyauth-value-12",
        ["X-Secret"] = "visible-value-13",
      }))
      assert.equal(200, status)
      local by = collect(c, "hdr-default", 1)
      local rec = assert(by["hdr-default"], "no record")
      local req_h, resp_h = rec.request.headers, rec.response.headers
      -- hide_credentials removed authorization before the log phase: absent or masked
      assert.equal(REDACTED, header(req_h, "authorization") or REDACTED)
      assert.equal(REDACTED, header(req_h, "proxy-authorization"))
      assert.equal(REDACTED, header(req_h, "cookie"))
      assert.equal("visible-value-13", header(req_h, "x-secret"))
      assert.equal(REDACTED, header(resp_h, "set-cookie"))
      assert.equal("visible", header(resp_h, "x-resp"))
      local text = assert(record_text(c, "hdr-default"))
      for _, secret in ipairs({ "good-hdr", "cookie-value-11", "proxyauth-value-12", "setcookie-value-77" }) do
        assert.falsy(text:find(secret, 1, true), secret .. " leaked into the record: " .. text)
      end
      clean(gw, mark)
    end)
  end)


  ----------------------------------------------------------------------
  describe("where a request went (route and upstream)", function()
    local gw, c, mark, balanced_url, retry_url, dead

    -- Two more servers in the gateway's nginx, same plugin and collector:
    -- the balancer form of design §4b with the legacy mock as its default,
    -- and the variable form whose default names an upstream block, whose
    -- first server refuses connections (max_fails=0: tried by every
    -- request), so nginx retries on the backup.
    local SERVERS = [[
    upstream log_balanced {
        server 0.0.0.1;   # placeholder: balancer() picks the peer
        balancer_by_lua_block { require("auth_router.openresty").balancer() }
    }
    upstream log_retry {
        server 127.0.0.1:%d max_fails=0;
        server %s backup;
    }
    server {
        listen 127.0.0.1:%d;
        location / {
            set $auth_router_target "%s";
            access_by_lua_block { require("auth_router.openresty").access() }
            log_by_lua_block    { require("auth_router.openresty").log() }
            proxy_pass http://log_balanced;
        }
    }
    server {
        listen 127.0.0.1:%d;
        location / {
            set $auth_router_target "log_retry";
            access_by_lua_block { require("auth_router.openresty").access() }
            log_by_lua_block    { require("auth_router.openresty").log() }
            proxy_pass http://$auth_router_target;
        }
    }
]]

    lazy_setup(function()
      local ports = helpers.free_ports(3)
      dead = "127.0.0.1:" .. ports[1]
      local legacy = mocks.targets.legacy
      balanced_url, retry_url = "http://127.0.0.1:" .. ports[2], "http://127.0.0.1:" .. ports[3]
      gw, c = start_pair("where", { request_body = false, response_body = false }, {
        http = string.format(SERVERS, ports[1], legacy, ports[2], legacy, ports[3], legacy),
      })
    end)

    before_each(function()
      mark = gw:log_mark()
    end)

    local function logged(url, id, token)
      local status, _, body = helpers.request("GET", url, bearer(token or "good-where",
                                                              { ["X-Request-Id"] = id }))
      local rec = assert(collect(c, id, 1)[id], "no record for " .. id)
      return status, rec, body
    end

    it("variable form: the default target, or the matched route's, and nginx's address and status",
       function()
      local status, rec = logged(gw.gw_url .. "/other/x?status=404", "where-default")
      assert.equal(404, status)
      assert.same({ name = cjson.null, target = mocks.targets.legacy }, rec.route)
      assert.same({ addr = mocks.targets.legacy, status = "404" }, rec.upstream)

      status, rec = logged(gw.gw_url .. "/send/x", "where-routed")
      assert.equal(200, status)
      assert.same({ name = "email", target = mocks.targets.email }, rec.route)
      assert.same({ addr = mocks.targets.email, status = "200" }, rec.upstream)

      status, rec = logged(gw.gw_url .. "/other/x", "where-denied", "deny")
      assert.equal(401, status)
      assert.equal(cjson.null, rec.route)
      assert.equal(cjson.null, rec.upstream)
      clean(gw, mark)
    end)

    it("balancer form: the $auth_router_target balancer() used", function()
      local status, rec = logged(balanced_url .. "/other/y", "where-balanced")
      assert.equal(200, status)
      assert.same({ name = cjson.null, target = mocks.targets.legacy }, rec.route)
      assert.same({ addr = mocks.targets.legacy, status = "200" }, rec.upstream)

      status, rec = logged(balanced_url .. "/events/y", "where-balanced-routed")
      assert.equal(200, status)
      assert.same({ name = "calendar", target = mocks.targets.calendar }, rec.route)
      assert.same({ addr = mocks.targets.calendar, status = "200" }, rec.upstream)
      clean(gw, mark)
    end)

    it("a default naming an upstream block: its name, every address tried and each status",
       function()
      local status, rec, body = logged(retry_url .. "/other/z", "where-retried")
      assert.equal(200, status, body)
      assert.same({ name = cjson.null, target = "log_retry" }, rec.route)
      assert.same({ addr = dead .. ", " .. mocks.targets.legacy, status = "502, 200" }, rec.upstream)
      clean(gw, mark, { CONNECT_REFUSED })
    end)
  end)


  ----------------------------------------------------------------------
  describe("tcp sink, max_body_bytes " .. SMALL_CAP .. ", custom redaction, 1k client body buffer", function()
    local gw, c, mark

    lazy_setup(function()
      gw, c = start_pair("caps", {
        max_body_bytes = SMALL_CAP,
        redact_headers = { "x-secret" },
        redact_body_fields = { "password", "token", "card_number" },
      }, {
        http = "    client_body_buffer_size 1k;\n    client_max_body_size 16m;\n",
        config = { auth = { url = mocks.auth_url, credential_headers = { "authorization", "x-api-key" } } },
      })
    end)

    before_each(function()
      mark = gw:log_mark()
    end)


    it("request bodies spilled to a temp file are captured up to the cap", function()
      local function text(n, tag)
        local t, len = {}, 0
        local i = 0
        while len < n do
          i = i + 1
          local piece = string.format("%s:%06d;", tag, i)
          t[#t + 1] = piece
          len = len + #piece
        end
        return table.concat(t):sub(1, n)
      end
      local bodies = { ["spill-big"] = text(100 * 1024, "big"), ["spill-small"] = text(3000, "small") }
      for id, body in pairs(bodies) do
        local status, _, resp = helpers.request("POST", gw.gw_url .. "/send/upload",
                                                bearer("good-spill", { ["X-Request-Id"] = id,
                                                                       ["Content-Type"] = "text/plain" }),
                                                body)
        assert.equal(200, status, resp)
        local echo = assert(decode(resp))
        assert(echo.body == body, id .. ": the upstream did not get the body intact")
      end
      local log = gw:error_log(mark)
      assert.is_true(helpers.count_lines(log, BODY_SPILLED) >= 2, "nginx did not spill the bodies to a file")

      local by = collect(c, "spill-", 2)
      for id, body in pairs(bodies) do
        local rec = assert(by[id], "no record for " .. id)
        assert_capture(rec.request, body, SMALL_CAP, id .. " request")
      end
      clean(gw, mark, { BODY_SPILLED })
    end)


    it("custom redact_headers replace the defaults; credential headers are always masked", function()
      local status = helpers.request("GET", gw.gw_url .. "/local/ok", bearer("good-hdr2", {
        ["X-Request-Id"] = "hdr-custom",
        ["X-Api-Key"] = "apikey-value-21",
        ["X-Secret"] = "xsecret-value-22",
        Cookie = "sid=cookie-visible-23",
      }))
      assert.equal(200, status)
      local by = collect(c, "hdr-custom", 1)
      local rec = assert(by["hdr-custom"], "no record")
      local req_h, resp_h = rec.request.headers, rec.response.headers
      assert.equal(REDACTED, header(req_h, "authorization"), "credential header")
      assert.equal(REDACTED, header(req_h, "x-api-key"), "credential header")
      assert.equal(REDACTED, header(req_h, "x-secret"), "custom redact_headers")
      assert.equal("sid=cookie-visible-23", header(req_h, "cookie"), "not in the custom list")
      assert.equal("sid=setcookie-value-77", header(resp_h, "set-cookie"), "not in the custom list")
      local text = assert(record_text(c, "hdr-custom"))
      for _, secret in ipairs({ "good-hdr2", "apikey-value-21", "xsecret-value-22" }) do
        assert.falsy(text:find(secret, 1, true), secret .. " leaked into the record: " .. text)
      end
      clean(gw, mark, { BODY_SPILLED })
    end)


    it("JSON fields are masked at any depth, in request and response bodies", function()
      local cases = {
        ["json-nested"] = '{"user":{"name":"ann","password":"pw-SECRET-1","profile":{"token":"tk-SECRET-2",'
                          .. '"tags":["password","x"]}},"items":[{"card_number":"cn-SECRET-3","qty":2},'
                          .. '{"sku":"a"}],"token":"tk-SECRET-4","passwords":"kept"}',
        ["json-array"]  = '[{"password":"pw-SECRET-5"},{"deep":[[{"token":{"a":"tk-SECRET-6"}}]]}]',
      }
      for id, body in pairs(cases) do
        local status, _, resp = helpers.request("POST", gw.gw_url .. "/local/mirror",
                                                bearer("good-json", { ["X-Request-Id"] = id,
                                                                      ["Content-Type"] = "application/json" }),
                                                body)
        assert.equal(200, status)
        assert.equal(body, resp)
      end
      local by = collect(c, "json-", 2)
      for id in pairs(cases) do
        local rec = assert(by[id], "no record for " .. id)
        local text = assert(record_text(c, id))
        assert.falsy(text:find("SECRET", 1, true), id .. ": a masked field leaked: " .. text)
        for _, part in ipairs({ "request", "response" }) do
          local v = decode(body_of(rec[part]) or "")
          assert(v, id .. " " .. part .. ": the masked body is not JSON: " .. tostring(body_of(rec[part])))
          if id == "json-nested" then
            assert.same({
              user = { name = "ann", password = REDACTED,
                       profile = { token = REDACTED, tags = { "password", "x" } } },
              items = { { card_number = REDACTED, qty = 2 }, { sku = "a" } },
              token = REDACTED,
              passwords = "kept",
            }, v, id .. " " .. part)
          else
            assert.same({ { password = REDACTED }, { deep = { { { token = REDACTED } } } } }, v, id .. " " .. part)
          end
        end
      end
      clean(gw, mark, { BODY_SPILLED })
    end)


    it("form fields are masked in form-urlencoded bodies", function()
      local body = "user=ann&password=fSECRET7&token=fSECRET8&card_number=fSECRET9&note=hello+world&x=%41"
      local status = helpers.request("POST", gw.gw_url .. "/local/mirror",
                                     bearer("good-form", { ["X-Request-Id"] = "form-1",
                                                           ["Content-Type"] = "application/x-www-form-urlencoded" }),
                                     body)
      assert.equal(200, status)
      local by = collect(c, "form-", 1)
      local rec = assert(by["form-1"], "no record")
      local text = assert(record_text(c, "form-1"))
      assert.falsy(text:find("fSECRET", 1, true), "a masked form field leaked: " .. text)
      for _, part in ipairs({ "request", "response" }) do
        local got = assert(body_of(rec[part]), part .. ": no body")
        for _, kept in ipairs({ "user=ann", "note=hello+world", "x=%41" }) do
          assert.truthy(got:find(kept, 1, true), part .. ": lost " .. kept .. ": " .. got)
        end
        for _, name in ipairs({ "password", "token", "card_number" }) do
          assert(got:find(name .. "=[REDACTED]", 1, true) or got:find(name .. "=%5BREDACTED%5D", 1, true),
                 part .. ": " .. name .. " not masked: " .. got)
        end
      end
      clean(gw, mark, { BODY_SPILLED })
    end)


    it("a JSON body cut by the cap never leaks a secret near the cut", function()
      -- The secret is made of "Q", which appears nowhere else in the request,
      -- so any "Q" in the record is a leak. The cut (byte SMALL_CAP) falls at
      -- each position around and inside the masked field.
      local SECRET = string.rep("Q", 24)
      local layouts = {
        flat = function(filler)
          return '{"filler":"' .. filler .. '","password":"' .. SECRET .. '","after":1}',
                 '{"filler":"' .. filler .. '","password":"'
        end,
        nested = function(filler)
          return '{"a":{"b":[{"k":"' .. filler .. '"},{"token":"' .. SECRET .. '"}]}}',
                 '{"a":{"b":[{"k":"' .. filler .. '"},{"token":"'
        end,
        escaped = function(filler)
          -- escapes inside the masked value: the cut may fall inside one
          local s = SECRET:sub(1, 8) .. '\\"' .. SECRET:sub(9, 16) .. '\\\\' .. SECRET:sub(17)
          return '{"filler":"' .. filler .. '","card_number":"' .. s .. '"}',
                 '{"filler":"' .. filler .. '","card_number":"'
        end,
      }
      local sent = {}
      for name, layout in pairs(layouts) do
        -- offsets relative to the first byte of the secret value
        for _, off in ipairs({ -14, -4, -3, -2, -1, 0, 1, 2, 9, 10, 23, 24 }) do
          local _, before_value = layout("")
          local filler_len = SMALL_CAP - #before_value - off
          local body = layout(string.rep("x", filler_len))
          local id = "cut-" .. name .. "-" .. off
          local path = (name == "nested") and "/local/mirror" or "/local/ok"
          local status = helpers.request("POST", gw.gw_url .. path,
                                         bearer("good-cut", { ["X-Request-Id"] = id,
                                                              ["Content-Type"] = "application/json" }),
                                         body)
          assert.equal(200, status)
          sent[id] = body
        end
      end
      local n = 0
      for _ in pairs(sent) do
        n = n + 1
      end
      local by = collect(c, "cut-", n)
      for id, body in pairs(sent) do
        local rec = assert(by[id], "no record for " .. id)
        local text = assert(record_text(c, id))
        assert.equal("utf8", rec.request.body_encoding, id .. ": a cut ASCII body is still text")
        local at = text:find("Q", 1, true)
        assert(not at, id .. ": the secret leaked: ..." .. text:sub(math.max(1, (at or 1) - 60), (at or 1) + 30))
        assert.equal(#body, rec.request.body_size, id)
        assert.is_true(rec.request.body_truncated, id)
        local got = assert(body_of(rec.request), id .. ": no request body")
        assert(got:sub(1, 20) == body:sub(1, 20), id .. ": the capture does not start with the body: "
               .. got:sub(1, 40))
        if id:find("^cut%-nested") then
          assert.is_true(rec.response.body_truncated, id .. " response")
          assert.equal(#body, rec.response.body_size, id .. " response")
        end
      end
      assert.falsy(c:raw():find("Q", 1, true), "the secret reached the collector")
      clean(gw, mark, { BODY_SPILLED })
    end)
  end)


  ----------------------------------------------------------------------
  describe("tcp sink, collector down", function()
    local gw, c, mark

    lazy_setup(function()
      gw, c = start_pair("down", { retry_max_s = 30 })
    end)

    before_each(function()
      mark = gw:log_mark()
    end)


    it("requests succeed without added latency; back within the retry window, the queued records "
       .. "arrive, none duplicated", function()
      local N = 100
      timed_sequence(gw, 10, "warm-")      -- opens the collector connections
      collect(c, "warm-", 10)
      local up_times = timed_sequence(gw, N, "up-")
      local _, _, got_up = collect(c, "up-", N)
      assert.equal(N, got_up, "records while the collector is up")
      local before = all_stats(gw)

      c:down()
      local down_times = timed_sequence(gw, N, "dn-")
      local p50_up, p50_down = median(up_times), median(down_times)
      local report = string.format("p50 up %.2f ms, down %.2f ms; max up %.2f ms, down %.2f ms",
                                   p50_up * 1000, p50_down * 1000, maximum(up_times) * 1000,
                                   maximum(down_times) * 1000)
      assert(p50_down <= math.max(2 * p50_up, p50_up + 0.003), "latency added: " .. report)

      socket.sleep(1)                       -- a few failed attempts
      local mid, mid_by_pid = all_stats(gw)
      assert.is_true(delta(before, mid, "log_retried") > 0, "no retry counted while the collector is down")
      assert.equal(0, delta(before, mid, "log_dropped"), "records dropped within the retry window")
      local queued_bytes = 0
      for _, s in pairs(mid_by_pid) do
        queued_bytes = queued_bytes + (s.log_queue_bytes or 0)
      end
      assert.is_true(queued_bytes > 0, "nothing queued while the collector is down")
      assert.equal(0, select(3, records_by_id(c, "dn-")))

      c:up()
      local by, dups, got = collect(c, "dn-", N, 20)
      assert.same({}, dups, "duplicated records")
      assert.equal(N, got, "records of the outage that arrived")
      for i = 1, N do
        assert(by["dn-" .. i], "record dn-" .. i .. " is missing")
      end
      local _, up_dups, up_got = records_by_id(c, "up-")
      assert.same({}, up_dups, "records sent before the outage were sent again")
      assert.equal(N, up_got)

      local after, by_pid = all_stats(gw)
      assert.equal(0, delta(before, after, "log_dropped"))
      for pid, s in pairs(by_pid) do
        assert.equal(0, s.log_queue_bytes, "worker " .. pid .. " still has queued bytes")
      end
      clean(gw, mark, COLLECTOR_DOWN)
    end)
  end)


  ----------------------------------------------------------------------
  describe("a native panic while logging (1 worker)", function()
    local LOG_PANIC_LINE = "[auth-router] internal error in log: injected fault: panic in log"
    local gw, c

    lazy_setup(function()
      gw, c = start_pair("log-panic", nil, { workers = 1 })
    end)

    local function send(id)
      return (helpers.request("GET", gw.gw_url .. "/send/lp?id=" .. id,
                              bearer("good-logpanic", { ["X-Request-Id"] = id })))
    end

    it("is logged and counted, frees the request's slot, and the next record ships", function()
      local mark = gw:log_mark()
      local before = gw:stats()
      assert.equal(before.worker_pid, gw:arm_panic("log"))
      assert.equal(200, send("lp-1")) -- answered before its log phase ran
      assert.equal(200, send("lp-2"))
      local by, dups, got = collect(c, "lp-", 1, 5)
      assert.same({}, dups)
      assert.equal(1, got)
      assert.is_nil(by["lp-1"], "the record whose writing panicked")
      assert.is_truthy(by["lp-2"])
      local after = gw:stats()
      assert.equal(before.worker_pid, after.worker_pid) -- no crash, no respawn
      assert.equal(1, after.internal_errors - before.internal_errors)
      assert.equal(0, after.live_slots)
      local log = gw:error_log(mark)
      assert.equal(1, helpers.count_lines(log, LOG_PANIC_LINE), log)
      helpers.assert_clean_log(log, { helpers.literal(LOG_PANIC_LINE) })
    end)
  end)


  ----------------------------------------------------------------------
  -- One worker, so that every record goes to the same queue.
  describe("tcp sink, a long flush interval (1 worker)", function()
    local gw, c

    lazy_setup(function()
      gw, c = start_pair("full-batch", { flush_interval_ms = 10000, batch_max_entries = 5 },
                         { workers = 1 })
    end)

    local function send(from, to)
      for i = from, to do
        local status = helpers.request("GET", gw.gw_url .. "/send/fb?i=" .. i,
                                       bearer("good-fullbatch", { ["X-Request-Id"] = "fb-" .. i }))
        assert.equal(200, status)
      end
    end

    it("ships a batch as soon as it is full, a partial one at the interval", function()
      send(1, 1) -- starts the worker's shipping (its first tick runs at once)
      collect(c, "fb-", 1, 5)
      local t0 = socket.gettime()
      send(2, 6) -- fills a batch of 5
      local _, dups, got = collect(c, "fb-", 6, 5)
      assert.same({}, dups)
      assert.equal(6, got)
      assert.is_true(socket.gettime() - t0 < 3, "the full batch waited for the 10 s interval")
      send(7, 8) -- a partial batch waits for the next tick
      socket.sleep(1)
      assert.equal(6, select(3, records_by_id(c, "fb-")))
      helpers.assert_clean_log(gw:error_log())
    end)
  end)


  ----------------------------------------------------------------------
  describe("tcp sink, collector down, small queue", function()
    local QUEUE_MAX = 24576
    local gw, c, mark

    lazy_setup(function()
      c = collector.start()
      c:down()                              -- down from the start
      -- Batches of 2 records (~3.2 KiB each here): the batch in flight, which
      -- is never dropped, and the batch holding the newest record leave room
      -- for one more. With batches of 4, or a 16 KiB bound (5 records), they
      -- could fill the bound, and then the queue rightly dropped the newest
      -- record (it cannot fit) instead of an older one (a flaky case: 1 run
      -- in 4 with 16 KiB).
      gw = start_pair("queue", { queue_max_bytes = QUEUE_MAX, batch_max_entries = 2, retry_max_s = 30 },
                      { collector = c })
    end)

    before_each(function()
      mark = gw:log_mark()
    end)


    it("the queue stays under queue_max_bytes, the oldest records are dropped and counted, "
       .. "the rest arrives once the collector is back", function()
      local N, STEP = 200, 50
      local before = all_stats(gw)
      local payload = string.rep("p", 1024)
      local peak = 0
      for from = 1, N, STEP do
        local list = {}
        for i = from, from + STEP - 1 do
          list[#list + 1] = { method = "POST", url = gw.gw_url .. "/send/q?i=" .. i, body = payload,
                              headers = bearer("good-queue", { ["X-Request-Id"] = "q-" .. i,
                                                               ["Content-Type"] = "text/plain" }) }
        end
        for k, res in ipairs(helpers.request_many(list, 10, 10)) do
          assert(not res.err, "request failed: " .. tostring(res.err))
          assert.equal(200, res.status, "request " .. (from + k - 1))
        end
        local _, by_pid = all_stats(gw)
        for pid, s in pairs(by_pid) do
          peak = math.max(peak, s.log_queue_bytes or 0)
          assert(s.log_queue_bytes <= QUEUE_MAX, "worker " .. pid .. " queues " .. tostring(s.log_queue_bytes)
                 .. " bytes > queue_max_bytes " .. QUEUE_MAX)
        end
      end
      assert.is_true(peak > 0, "nothing was ever queued")
      local mid = all_stats(gw)
      local dropped = delta(before, mid, "log_dropped")
      assert.is_true(dropped > 0, "no drop counted although " .. N .. " records of > 1 KiB met a "
                     .. QUEUE_MAX .. " byte queue")
      assert.equal(N, delta(before, mid, "log_queued"))

      c:up()
      collector.wait_until(20, function()
        local _, by_pid = all_stats(gw)
        for _, s in pairs(by_pid) do
          if s.log_queue_bytes ~= 0 then
            return false
          end
        end
        return true
      end)
      local by, dups, got = collect(c, "q-", N - dropped, 5)
      assert.same({}, dups, "duplicated records")
      local after = all_stats(gw)
      dropped = delta(before, after, "log_dropped")
      assert.equal(N, got + dropped, string.format("arrived %d + dropped %d (in records) ~= sent %d",
                                                   got, dropped, N))
      assert(by["q-" .. N], "the newest record was dropped (the oldest ones should go first)")
      clean(gw, mark, COLLECTOR_DOWN)
    end)
  end)


  ----------------------------------------------------------------------
  describe("http sink, request_id_header X-Correlation-Id", function()
    local gw, c, mark

    lazy_setup(function()
      gw, c = start_pair("http", { sink = "http", batch_max_entries = 50, timeout_ms = 2000, retry_max_s = 30,
                                   request_id_header = "X-Correlation-Id" })
    end)

    before_each(function()
      mark = gw:log_mark()
    end)


    it("300 requests -> exactly 300 records, POSTed as JSON arrays of at most batch_max_entries "
       .. "over keepalive connections", function()
      local N = 300
      local list = {}
      for i = 1, N do
        list[i] = { method = (i % 2 == 0) and "POST" or "GET", url = gw.gw_url .. "/events/h?i=" .. i,
                    body = (i % 2 == 0) and ("h" .. i) or nil,
                    headers = bearer("good-http" .. (i % 5), { [gw.rid] = "h-" .. i, ["X-Request-Id"] = "decoy" }) }
      end
      local results = helpers.request_many(list, 50, 20)
      for i, res in ipairs(results) do
        assert(not res.err, "request " .. i .. ": " .. tostring(res.err))
        assert.equal(200, res.status)
      end
      local by, dups, got = collect(c, "h-", N)
      assert.same({}, dups)
      assert.equal(N, got)
      for i = 1, N do
        local rec = assert(by["h-" .. i], "record h-" .. i .. " is missing")
        assert.equal(list[i].method, rec.request.method)
        assert.equal("/events/h?i=" .. i, rec.request.uri)
        assert.equal(200, rec.response.status)
        assert.same({ id = "http" .. (i % 5) }, rec.account)
        assert.equal("calendar", rec.route.name)
        assert_capture(rec.response, results[i].body, CAP, "h-" .. i)
      end
      local posts, records = 0, 0
      for _, e in ipairs(c:events("http")) do
        posts = posts + 1
        records = records + (e.records or 0)
        assert.equal("POST", e.method)
        assert.matches("^application/json", e.headers["content-type"] or "")
        assert.equal(200, e.status)
        assert.is_true(e.records <= 50, "a batch of " .. e.records .. " records > batch_max_entries")
      end
      assert.equal(N, records)
      local accepts = #c:events("accept")
      assert.is_true(accepts < posts, accepts .. " connections for " .. posts .. " POSTs: no keepalive")
      clean(gw, mark)
    end)


    it("5xx answers are retried; the records arrive once it answers 200, none duplicated", function()
      local N = 40
      local before = all_stats(gw)
      c:set_status(500)
      timed_sequence(gw, N, "e5-", "/other/e")
      assert.is_true(collector.wait_until(5, function()
        for _, e in ipairs(c:events("http")) do
          if e.status == 500 and (e.rejected or 0) > 0 then
            return true
          end
        end
        return false
      end), "the collector never answered 500 to a batch")
      socket.sleep(0.5)
      assert.equal(0, select(3, records_by_id(c, "e5-")))
      local mid = all_stats(gw)
      assert.is_true(delta(before, mid, "log_retried") > 0, "no retry counted")

      c:set_status(200)
      local by, dups, got = collect(c, "e5-", N, 20)
      assert.same({}, dups, "duplicated records")
      assert.equal(N, got)
      for i = 1, N do
        assert(by["e5-" .. i], "record e5-" .. i .. " is missing")
      end
      assert.equal(0, delta(before, all_stats(gw), "log_dropped"))
      clean(gw, mark, COLLECTOR_DOWN)
    end)


    it("a hung collector adds no latency to requests; its records arrive once it answers again", function()
      local N = 100
      local up_times = timed_sequence(gw, N, "hu-")
      collect(c, "hu-", N)
      local before = all_stats(gw)
      c:stall(true)
      local stall_times = timed_sequence(gw, N, "hs-")
      local p50_up, p50_stall = median(up_times), median(stall_times)
      local report = string.format("p50 up %.2f ms, hung %.2f ms; max up %.2f ms, hung %.2f ms",
                                   p50_up * 1000, p50_stall * 1000, maximum(up_times) * 1000,
                                   maximum(stall_times) * 1000)
      assert(p50_stall <= math.max(2 * p50_up, p50_up + 0.003), "latency added: " .. report)
      -- a request waiting for the collector would wait timeout_ms (2 s)
      assert(maximum(stall_times) < 0.5, "a request waited for the collector: " .. report)
      assert.equal(0, select(3, records_by_id(c, "hs-")))

      socket.sleep(2.5)                     -- the pending POST times out (timeout_ms 2000)
      assert.is_true(delta(before, all_stats(gw), "log_retried") > 0, "no failed attempt counted")
      c:stall(false)
      local by, dups, got = collect(c, "hs-", N, 20)
      assert.same({}, dups, "duplicated records")
      assert.equal(N, got)
      for i = 1, N do
        assert(by["hs-" .. i], "record hs-" .. i .. " is missing")
      end
      clean(gw, mark, COLLECTOR_DOWN)
    end)
  end)


  ----------------------------------------------------------------------
  describe("graceful stop", function()

    it("pending records are flushed when nginx quits (nginx -s quit)", function()
      local gw, c = start_pair("quit", { flush_interval_ms = 600000, batch_max_entries = 1000 })
      -- one record first: whatever starting the shipping does is over before
      -- the records that must wait for the (10 minute) flush interval
      local warm, pids, n_pids = {}, {}, 0
      for i = 1, 20 do
        warm[i] = { url = gw.gw_url .. "/other/warm?i=" .. i,
                    headers = bearer("good-quit", { ["X-Request-Id"] = "qwarm-" .. i }) }
      end
      for _, res in ipairs(helpers.request_many(warm, 20, 10)) do
        assert(not res.err, tostring(res.err))
        local pid = res.headers["x-worker-pid"]
        if pid and not pids[pid] then
          pids[pid], n_pids = true, n_pids + 1
        end
      end
      assert.equal(WORKERS, n_pids, "the warm-up did not reach every worker")
      socket.sleep(0.3)
      local N = 30
      local list = {}
      for i = 1, N do
        list[i] = { url = gw.gw_url .. "/other/quit?i=" .. i,
                    headers = bearer("good-quit", { ["X-Request-Id"] = "quit-" .. i }) }
      end
      for _, res in ipairs(helpers.request_many(list, 10, 10)) do
        assert(not res.err, tostring(res.err))
        assert.equal(200, res.status)
      end
      socket.sleep(0.3)
      assert.equal(0, select(3, records_by_id(c, "quit-")), "records shipped before the flush interval")
      local _, by_pid = all_stats(gw)
      local queued = 0
      for _, s in pairs(by_pid) do
        queued = queued + (s.log_queue_bytes or 0)
      end
      assert.is_true(queued > 0, "nothing pending before the stop")

      local pid = gw:master_pid()
      helpers.run("kill -QUIT " .. pid)    -- what `nginx -s quit` sends
      assert.is_true(helpers.wait_until(10, function() return not helpers.alive(pid) end),
                     "nginx did not quit")
      local by, dups, got = collect(c, "quit-", N, 5)
      assert.same({}, dups)
      assert.equal(N, got, "records flushed at exit")
      for i = 1, N do
        assert(by["quit-" .. i], "record quit-" .. i .. " was lost at exit")
      end
      clean(gw, 0)
    end)
  end)
end)
