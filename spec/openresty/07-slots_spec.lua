-- Per-request native slots (src/ffi/slots.rs) in real nginx: every request
-- that got one gives it back, however it ends: normally, denied, the client
-- gone mid-response, another handler ending it after auth-router's access,
-- a later filter failing, an internal redirect to another location. The
-- `live_slots` counter must come back to zero after each. With logging on
-- the log phase frees the slot; with logging off no slot outlives access,
-- so a location needs neither body_filter nor log.

local helpers   = require "spec.openresty.helpers"
local collector = require "spec.openresty.collector"
local socket    = require "socket"

local sleep = socket.sleep

local AUTH = { Authorization = "Bearer good-acc_slots" }

-- Locations where something else ends or moves the request after access().
local LOCATIONS = [[
        location /exit/ {
            access_by_lua_block {
                require("auth_router.openresty").access()
                return ngx.exit(418)                     -- another handler ends it
            }
            header_filter_by_lua_block { require("auth_router.openresty").header_filter() }
            log_by_lua_block           { require("auth_router.openresty").log() }
        }
        location /failing-filter/ {
            set $auth_router_target "${default_target}";
            access_by_lua_block        { require("auth_router.openresty").access() }
            header_filter_by_lua_block {
                require("auth_router.openresty").header_filter()
                error("a later header filter fails")
            }
            log_by_lua_block           { require("auth_router.openresty").log() }
            proxy_pass http://$auth_router_target;
        }
        location /redirect/ {
            access_by_lua_block {
                require("auth_router.openresty").access()
                return ngx.exec("/landing")              -- ngx.ctx is dropped here
            }
        }
        location = /landing {
            log_by_lua_block { require("auth_router.openresty").log() }
            return 200 "landed\n";
        }
        location /error-page/ {
            set $auth_router_target "${default_target}";
            access_by_lua_block { require("auth_router.openresty").access() }
            proxy_pass http://$auth_router_target;
            proxy_intercept_errors on;
            error_page 502 = /;   # back through access()
        }
        location /two-phases/ {   # what a config that does not log needs
            set $auth_router_target "${default_target}";
            access_by_lua_block        { require("auth_router.openresty").access() }
            header_filter_by_lua_block { require("auth_router.openresty").header_filter() }
            proxy_pass http://$auth_router_target;
        }]]

-- Both configs add response headers, so header_filter has work either way.
local RESPONSE_HEADERS = {
  { name = "x-account-id", pointer = "/id" },
  { name = "x-account-plan", pointer = "/plan" },
  { name = "x-gateway", value = "auth-router" },
}


for _, logging in ipairs({ true, false }) do
describe("per-request native slots (1 worker, logging " .. (logging and "on" or "off") .. ")", function()
  local mocks, gw, sink

  lazy_setup(function()
    mocks = helpers.start_mocks()
    local overrides = { response_headers = RESPONSE_HEADERS }
    if logging then
      sink = collector.start()
      overrides.log = { enabled = true, sink = "tcp", host = "127.0.0.1", port = sink.port,
                        response_body = true, flush_interval_ms = 50 }
    end
    gw = helpers.start({
      mocks = mocks,
      workers = 1,
      config = helpers.config(mocks, overrides),
      locations = LOCATIONS:gsub("%${default_target}", mocks.targets.legacy),
    })
  end)

  lazy_teardown(function()
    helpers.stop_all()
    if sink then
      sink:stop()
    end
  end)

  -- live_slots after the request's log phase ran (it runs after the response
  -- is sent, so poll a little)
  local function settled_live_slots()
    local live
    for _ = 1, 50 do
      live = gw:stats().live_slots
      if live == 0 then
        return 0
      end
      sleep(0.02)
    end
    return live
  end

  before_each(function()
    assert.equal(0, settled_live_slots())
  end)

  it("frees the slot of a request that ends normally, and of a denied one", function()
    local status, headers = helpers.request("GET", gw.gw_url .. "/ok", AUTH)
    assert.equal(200, status)
    assert.equal("acc_slots", headers["x-account-id"])
    assert.equal("auth-router", headers["x-gateway"])
    assert.equal(401, (helpers.request("GET", gw.gw_url .. "/ok", { Authorization = "Bearer deny" })))
    assert.equal(401, (helpers.request("GET", gw.gw_url .. "/ok")))
    assert.equal(0, settled_live_slots())
  end)

  it("frees the slot when the client goes away mid-request", function()
    local before = gw:stats()
    -- the upstream waits 500 ms; the client gives up after 100 ms
    local status = helpers.request("GET", gw.gw_url .. "/slow?delay_ms=500", AUTH, nil, 0.1)
    assert.is_nil(status)
    sleep(0.6)
    assert.equal(0, settled_live_slots())
    assert.equal(1, gw:stats().requests - before.requests)
  end)

  it("frees the slot when another handler ends the request after access()", function()
    assert.equal(418, (helpers.request("GET", gw.gw_url .. "/exit/x", AUTH)))
    assert.equal(0, settled_live_slots())
  end)

  it("frees the slot when a later header filter fails", function()
    helpers.request("GET", gw.gw_url .. "/failing-filter/x", AUTH)
    assert.equal(0, settled_live_slots())
  end)

  it("frees the slot across an internal redirect (ngx.exec), which drops ngx.ctx", function()
    local before = gw:stats()
    local status, _, body = helpers.request("GET", gw.gw_url .. "/redirect/x", AUTH)
    assert.equal(200, status)
    assert.equal("landed\n", body)
    assert.equal(0, settled_live_slots())
    assert.equal(1, gw:stats().completed - before.completed)
  end)

  it("frees both slots when an error_page brings the request back through access()", function()
    local before = gw:stats()
    -- the upstream answers 502; error_page sends the request to `/`, whose
    -- access() runs again: the first slot is freed there, the second in log
    local status = helpers.request("GET", gw.gw_url .. "/error-page/x?status=502", AUTH)
    assert.equal(200, status)
    assert.equal(0, settled_live_slots())
    local after = gw:stats()
    assert.equal(2, after.requests - before.requests)
    assert.equal(2, after.completed - before.completed)
  end)


  if not logging then
    it("needs no log phase: a location with access and header_filter only keeps no slot", function()
      local before = gw:stats()
      for i = 1, 3 do
        -- a miss (new credential), a hit, and a denial
        local token = { "Bearer good-acc_two" .. i, "Bearer good-acc_two" .. i, "Bearer deny" }
        for _, t in ipairs(token) do
          local status, headers = helpers.request("GET", gw.gw_url .. "/two-phases/x",
                                                  { Authorization = t })
          if t == "Bearer deny" then
            assert.equal(401, status)
            assert.is_nil(headers["x-account-id"])
          else
            assert.equal(200, status)
            assert.equal("acc_two" .. i, headers["x-account-id"])
            assert.equal("auth-router", headers["x-gateway"])
          end
          -- at once: nothing waits for a log phase
          assert.equal(0, gw:stats().live_slots)
        end
      end
      local after = gw:stats()
      assert.equal(9, after.requests - before.requests)
      assert.equal(9, after.completed - before.completed)
      assert.equal(3, after.l1_hits - before.l1_hits)
    end)
  end
end)
end
