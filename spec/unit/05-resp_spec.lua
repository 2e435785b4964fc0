-- RESP2 framing of the native module (src/resp.rs, `redis_command` and
-- `redis_reply`) against a real redis-server (Debian's package), started on
-- a free loopback port for this file and stopped after it: commands encoded
-- by us are understood by Redis, and Redis's replies of every type, fed to
-- the decoder whole and byte by byte, come out as lua-resty-redis shapes.

local socket = require "socket"
local native = require "auth_router.native"

local NULL = native.redis_reply("$-1\r\n") -- the NULL light userdata (ngx.null)


local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end


describe("RESP2 framing against a real redis-server", function()
  local dir, port, conn

  -- Sends one command, reads until the decoder has a whole reply; checks
  -- that every strict prefix of a short reply asks for more.
  local function call(...)
    assert(conn:send(native.redis_command(...)))
    local buf = ""
    local deadline = socket.gettime() + 5
    while socket.gettime() < deadline do
      local data, err, partial = conn:receive(65536)
      local chunk = data or partial
      if chunk and #chunk > 0 then
        buf = buf .. chunk
        local reply, used = native.redis_reply(buf)
        if reply ~= false then
          assert.is_not_nil(reply, used)
          assert.equal(#buf, used)
          if #buf < 4096 then
            for cut = 0, #buf - 1 do
              assert.is_false(native.redis_reply(buf:sub(1, cut)), "prefix of " .. cut)
            end
          end
          return reply
        end
      elseif err ~= "timeout" then
        error("redis connection: " .. tostring(err))
      end
    end
    error("no whole reply within 5 s; have " .. #buf .. " bytes")
  end

  local function raises(pattern, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    assert.matches(pattern, tostring(err), 1, true)
  end

  lazy_setup(function()
    assert(os.execute("command -v redis-server >/dev/null"), "redis-server is not installed")
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    port = free_port()
    assert(os.execute(string.format(
      "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
      .. "--dir %s --pidfile %s/redis.pid --logfile %s/redis.log", port, dir, dir, dir)))
    for _ = 1, 100 do
      conn = socket.connect("127.0.0.1", port)
      if conn then
        break
      end
      socket.sleep(0.05)
    end
    assert(conn, "redis-server did not start on port " .. port)
    conn:settimeout(0.05)
  end)

  lazy_teardown(function()
    if conn then
      conn:close()
    end
    if dir then
      os.execute("kill $(cat " .. dir .. "/redis.pid) 2>/dev/null; sleep 0.1; rm -rf " .. dir)
    end
  end)

  it("status, bulk, null and integer replies", function()
    assert.equal("PONG", call("PING"))
    assert.equal("OK", call("SET", "k", "v\r\nwith CRLF and \0 NUL", "PX", 60000))
    assert.equal("v\r\nwith CRLF and \0 NUL", call("GET", "k"))
    assert.equal(NULL, call("GET", "absent"))
    assert.equal(NULL, call("SET", "k", "other", "NX", "PX", 1000)) -- NX lost: null bulk
    assert.equal(1, call("INCR", "n"))
    assert.equal(-41, call("INCRBY", "n", -42))
    local ttl = call("PTTL", "k")
    assert.is_true(ttl > 0 and ttl <= 60000, tostring(ttl))
    assert.equal("", (call("SET", "e", "") == "OK") and call("GET", "e"))
  end)

  it("error replies are values, and the connection stays usable", function()
    local reply = call("NOSUCHCOMMAND", "x")
    assert.is_table(reply)
    assert.matches("^ERR unknown command", reply.err)
    reply = call("INCR", "k")
    assert.matches("not an integer", reply.err, 1, true)
    assert.equal("PONG", call("PING"))
  end)

  it("arrays, nested arrays and empty arrays", function()
    call("DEL", "s")
    local id1 = call("XADD", "s", "*", "purge", "key-1")
    local id2 = call("XADD", "s", "*", "purge", "*")
    assert.matches("^%d+%-%d+$", id1)
    local range = call("XRANGE", "s", "-", "+")
    assert.same({ { id1, { "purge", "key-1" } }, { id2, { "purge", "*" } } }, range)
    assert.same({}, call("XRANGE", "s", "+", "-"))
    assert.same({ "v\r\nwith CRLF and \0 NUL", NULL }, call("MGET", "k", "absent"))
  end)

  it("a 1 MiB value crosses both ways", function()
    local big = string.rep("0123456789abcdef", 65536)
    assert.equal("OK", call("SET", "big", big))
    assert.equal(big, call("GET", "big"))
  end)

  it("refuses bytes that are not RESP, and what is not a command argument", function()
    local reply, err = native.redis_reply("!oops\r\n")
    assert.is_nil(reply)
    assert.equal("unknown RESP type byte 0x21", err)
    assert.is_false(native.redis_reply("$5\r\nab"))
    raises("redis_command: no command", native.redis_command)
    raises("redis_command: argument 2 is a table, not a string or an integer",
           native.redis_command, "GET", {})
    raises("redis_command: argument 2 is a number", native.redis_command, "PX", 1.5)
  end)
end)
