-- The `auth-router` command-line tool (src/bin/auth-router.rs), run as a
-- process on temporary files: `check` and `explain` (text and --json), on the
-- motivating deployment of docs/configuration.md ("Complete example"), whose
-- documented claims are checked here too.
--
-- The binary: $AUTH_ROUTER_CLI, else the newer of target/release/auth-router
-- and target/debug/auth-router; if neither exists it is built once with
-- `cargo build --release --locked --bin auth-router`.
--
--   busted --lua=luajit spec/unit/03-cli_spec.lua

local cjson = require "cjson"

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/unit/[^/]*$") or ".")


local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("*a")
  f:close()
  return text
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

-- exit code and combined output of a shell command
local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("__rc=(%d+)%s*$")), (out:gsub("__rc=%d+%s*$", ""))
end

local function mtime(path)
  local code, out = sh("stat -c %Y " .. shell_quote(path))
  return code == 0 and tonumber(out:match("%d+")) or nil
end

local function find_binary()
  local env = os.getenv("AUTH_ROUTER_CLI")
  if env and env ~= "" then
    return env
  end
  local best, best_time
  for _, profile in ipairs({ "release", "debug" }) do
    local path = ROOT .. "/target/" .. profile .. "/auth-router"
    local t = mtime(path)
    if t and (not best_time or t > best_time) then
      best, best_time = path, t
    end
  end
  if best then
    return best
  end
  local code, out = sh("cd " .. shell_quote(ROOT) .. " && cargo build --release --locked --bin auth-router")
  assert(code == 0, "cargo build --bin auth-router failed:\n" .. out)
  return ROOT .. "/target/release/auth-router"
end


-- The "Complete example" JSON block of docs/configuration.md.
local function documented_example()
  local doc = assert(read_file(ROOT .. "/docs/configuration.md"), "docs/configuration.md not found")
  local from = assert(doc:find("## Complete example", 1, true), "no 'Complete example' section")
  local json = doc:match("```json\n(.-)```", from)
  assert(json, "no JSON block in the 'Complete example' section")
  return json
end


describe("auth-router CLI", function()
  local bin, dir
  local n = 0

  -- writes `text` (a string, or a table encoded as JSON) to a new temp file
  local function file(text)
    n = n + 1
    local path = dir .. "/f" .. n .. ".json"
    write_file(path, type(text) == "table" and cjson.encode(text) or text)
    return path
  end

  -- runs the binary: exit code, stdout, stderr
  local function cli(...)
    local args = { shell_quote(bin) }
    for i = 1, select("#", ...) do
      args[#args + 1] = shell_quote((select(i, ...)))
    end
    local out, err = dir .. "/stdout", dir .. "/stderr"
    local code = sh(table.concat(args, " ") .. " >" .. shell_quote(out) .. " 2>" .. shell_quote(err))
    return code, read_file(out) or "", read_file(err) or ""
  end

  local example -- docs' complete example config file

  lazy_setup(function()
    bin = find_binary()
    local code, out = sh("mktemp -d /tmp/auth-router-cli.XXXXXX")
    assert(code == 0, out)
    dir = out:match("[^\n]+")
    example = file(documented_example())
  end)

  lazy_teardown(function()
    if dir and dir:match("^/tmp/auth%-router%-cli%.") then
      sh("rm -rf " .. shell_quote(dir))
    end
  end)


  describe("check", function()
    it("prints ok and exits 0 for the documented complete example and a minimal config", function()
      local code, out, err = cli("check", example)
      assert.equal(0, code, err)
      assert.equal("ok\n", out)
      assert.equal("", err)

      code, out, err = cli("check", file('{"auth": {"url": "http://127.0.0.1:9000/auth"}}'))
      assert.equal(0, code, err)
      assert.equal("ok\n", out)
    end)

    it("prints one `path: message` line per error and exits 1", function()
      local bad = file([[{
        "auth": {"url": "ftp://x"},
        "routes": [
          {"name": "email", "paths": ["/send"], "target": "no-port"},
          {"name": "mail", "target": "a:1", "percentage": 101},
          {"name": "both", "target": "a:1", "upstream": "u"}
        ],
        "extra": 1
      }]])
      local code, out, err = cli("check", bad)
      assert.equal(1, code, err)
      assert.equal("", err)
      local lines = {}
      for line in out:gmatch("[^\n]+") do
        assert.matches("^[%w_%.%[%]]+: %S", line)
        lines[#lines + 1] = line
      end
      assert.same({
        "auth.url: scheme must be http or https, got 'ftp'",
        "routes[1].target: expected host:port, got 'no-port'",
        "routes[2].percentage: value should be between 0 and 100",
        "routes[3].target: only one of upstream or target may be set",
        "extra: unknown field",
      }, lines)

      code, out = cli("check", file([[{"auth": {"url": "http://x/"},
        "routes": [{"name": "email", "target": "a:1"}, {"name": "email", "target": "b:2"}]}]]))
      assert.equal(1, code)
      assert.equal("routes: duplicate route name 'email'\n", out)
    end)

    it("names the plugin's place in a decK file, and reports JSON errors as the plugin does", function()
      local deck = file([[{"_format_version": "3.0", "services": [{"name": "s", "url": "http://legacy:8080",
        "plugins": [{"name": "auth-router", "config": {"auth": {"url": "http://auth/"},
                     "routes": [{"name": "r", "target": "x"}]}}]}]}]])
      local code, out = cli("check", deck)
      assert.equal(1, code)
      assert.equal("services[1].plugins[1].config.routes[1].target: expected host:port, got 'x'\n", out)

      code, out = cli("check", file("{not json"))
      assert.equal(1, code)
      assert.matches("^config is not valid JSON: ", out)
    end)

    it("exits 2 on a missing file or bad usage, on stderr", function()
      local code, out, err = cli("check", dir .. "/missing.json")
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("missing.json", err, 1, true)

      code, out, err = cli("check")
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("usage:", err, 1, true)
    end)
  end)


  describe("explain", function()
    it("reproduces the documentation's example: a v1 account takes legacy-v1 on any path", function()
      local code, out, err = cli("explain", example, "--path", "/events",
                                 "--account", file('{"id":"acc_1","api_version":"v1"}'))
      assert.equal(0, code, err)
      assert.equal("api version: v1 (from account)\n"
                   .. "routes[1] legacy-v1: match\n"
                   .. "chosen: routes[1] legacy-v1 -> target legacy:8080\n", out)
    end)

    it("prints the chosen route and, for each earlier route, why it did not match", function()
      local acc = file('{"id": "acc_1", "api_version": "v2", "flags": ["calendar_v2"]}')
      local code, out, err = cli("explain", example, "--path", "/events/7?x=1", "--account", acc)
      assert.equal(0, code, err)
      assert.equal("", err)
      assert.equal(table.concat({
        'api version: v2 (from account)',
        'routes[1] legacy-v1: no match: api_versions: "v2" (from account) is not one of "v1"',
        'routes[2] calendar-v2-pilot: no match: accounts: account "acc_1" is not among the 2 allowed',
        'routes[3] calendar-v2: no match: percentage: bucket 4345 of "calendar-v2:acc_1" '
          .. 'is not below 2500 (25%)',
        'routes[4] calendar: match',
        'chosen: routes[4] calendar -> target calendar:8080',
        '',
      }, "\n"), out)
    end)

    it("agrees with the documented rollout: acc_2 and acc_3 get calendar-v2, pilots always do", function()
      for _, c in ipairs({
        { '{"id": "acc_2", "flags": ["calendar_v2"]}', "routes[3] calendar-v2 -> target calendar-v2:8080" },
        { '{"id": "acc_3", "flags": {"calendar_v2": true}}', "routes[3] calendar-v2 -> target calendar-v2:8080" },
        { '{"id": "acc_3", "flags": {"calendar_v2": false}}', "routes[4] calendar -> target calendar:8080" },
        { '{"id": "acc_internal"}', "routes[2] calendar-v2-pilot -> target calendar-v2:8080" },
      }) do
        local code, out, err = cli("explain", example, "--path", "/calendars", "--account", file(c[1]))
        assert.equal(0, code, err)
        assert.matches("\nchosen: " .. c[2]:gsub("[%[%]%-%.]", "%%%0") .. "\n$", out)
      end
    end)

    it("uses --method and the API version header (header beats the account)", function()
      local acc = file('{"id": "acc_9", "api_version": "v1"}')
      local code, out, err = cli("explain", example, "--method", "POST", "--path", "/send",
                                 "--header", "X-Api-Version: v3", "--header", "x-other:1", "--account", acc)
      assert.equal(0, code, err)
      assert.matches("^api version: v3 %(from header%)\n", out)
      assert.matches('routes[1] legacy-v1: no match: api_versions: "v3" (from header) is not one of "v1"\n',
                     out, 1, true)
      local tail = "\nroutes[5] email: match\nchosen: routes[5] email -> target email:8080\n"
      assert.equal(tail, out:sub(-#tail))
    end)

    it("says no route matched, after every route's reason", function()
      local acc = file('{"id": "acc_1", "api_version": "v2", "flags": ["calendar_v2"]}')
      local code, out, err = cli("explain", example, "--method", "POST", "--path", "/other?x=1",
                                 "--header", "x-api-version:v3", "--account", acc)
      assert.equal(0, code, err)
      assert.equal(table.concat({
        'api version: v3 (from header)',
        'routes[1] legacy-v1: no match: api_versions: "v3" (from header) is not one of "v1"',
        'routes[2] calendar-v2-pilot: no match: paths: "/other" starts with none of "/events", "/calendars"',
        'routes[3] calendar-v2: no match: paths: "/other" starts with none of "/events", "/calendars"',
        'routes[4] calendar: no match: paths: "/other" starts with none of "/events", "/calendars"',
        'routes[5] email: no match: paths: "/other" starts with none of "/send"',
        "no route matched: Kong's configured service",
        '',
      }, "\n"), out)
    end)

    it("--json: one object, parsed with cjson, for a matching and a non-matching case", function()
      local acc = file('{"id": "acc_1", "api_version": "v2", "flags": ["calendar_v2"]}')
      local code, out, err = cli("explain", example, "--path", "/events", "--account", acc, "--json")
      assert.equal(0, code, err)
      local v = cjson.decode(out)
      assert.same({ value = "v2", source = "account" }, v.api_version)
      assert.same({ position = 4, name = "calendar", target = "calendar:8080", prefix = "/events",
                    path = cjson.null }, v.route)
      assert.same({
        { position = 1, name = "legacy-v1", matched = false, dimension = "api_versions",
          reason = '"v2" (from account) is not one of "v1"' },
        { position = 2, name = "calendar-v2-pilot", matched = false, dimension = "accounts",
          reason = 'account "acc_1" is not among the 2 allowed' },
        { position = 3, name = "calendar-v2", matched = false, dimension = "percentage",
          reason = 'bucket 4345 of "calendar-v2:acc_1" is not below 2500 (25%)' },
        { position = 4, name = "calendar", matched = true },
      }, v.steps)

      code, out, err = cli("explain", example, "--path", "/nowhere", "--account", acc, "--json")
      assert.equal(0, code, err)
      v = cjson.decode(out)
      assert.equal(cjson.null, v.route)
      assert.same({ value = "v2", source = "account" }, v.api_version)
      assert.equal(5, #v.steps)
      for i, s in ipairs(v.steps) do
        assert.equal(i, s.position)
        assert.is_false(s.matched)
        assert.equal(i == 1 and "api_versions" or "paths", s.dimension)
      end
    end)

    it("shows strip_prefix's upstream path, in text and --json", function()
      local conf = file([[{"auth": {"url": "http://auth/"}, "api_version": {"default": "v2"},
        "routes": [{"name": "api", "paths": ["/api/email"], "strip_prefix": true, "target": "10.0.0.1:8080"}]}]])
      local acc = file('{"id": 42}')
      local code, out, err = cli("explain", conf, "--path", "/api/email/send?to=x", "--account", acc)
      assert.equal(0, code, err)
      assert.equal("api version: v2 (from default)\nroutes[1] api: match\n"
                   .. 'chosen: routes[1] api -> target 10.0.0.1:8080, upstream path "/send" (strip_prefix)\n', out)
      code, out, err = cli("explain", conf, "--path", "/api/email", "--account", acc, "--json")
      assert.equal(0, code, err)
      local v = cjson.decode(out)
      assert.same({ position = 1, name = "api", target = "10.0.0.1:8080", prefix = "/api/email", path = "/" },
                  v.route)
    end)

    it("an invalid config prints its errors (exit 1); bad usage exits 2", function()
      local acc = file('{"id": "a"}')
      local code, out = cli("explain", file('{"auth": {"url": "ftp://x"}}'), "--path", "/", "--account", acc)
      assert.equal(1, code)
      assert.equal("auth.url: scheme must be http or https, got 'ftp'\n", out)

      local err
      code, out, err = cli("explain", example, "--account", acc)
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("explain needs --path", err, 1, true)

      code, out, err = cli("explain", example, "--path", "/", "--account", file('{"name": "no id"}'))
      assert.equal("", out)
      assert.equal(2, code)
      assert.matches("no id at '/id'", err, 1, true)
    end)
  end)
end)
