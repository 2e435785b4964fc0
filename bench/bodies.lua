-- The JSON bodies of the log variants, shared by the wrk script (request
-- bodies) and the backend (response bodies), so both ends agree byte for byte.
--
--   local bodies = dofile("bench/bodies.lua")   -- or require("bodies")
--   bodies.json(1024)  -> a JSON object of exactly 1024 bytes (for n >= 200)
--
-- The object holds the two redacted fields of the log variants' config
-- (`password` at the top, `token` nested in `auth`) and filler items:
--   {"user":"bench","password":"hunter2-...","auth":{"token":"tok-..."},"items":[...],"pad":"xx"}
-- Pure Lua, no ngx: runs in wrk's LuaJIT, nginx and plain luajit.

local rep    = string.rep
local concat = table.concat
local floor  = math.floor

local _M = {}

local memo = {}

local HEAD = '{"user":"bench","password":"hunter2-not-a-real-password",'
          .. '"auth":{"token":"tok-0123456789abcdef0123456789abcdef"},"items":['
local ITEM = '{"id":%d,"to":"someone@example.com","subject":"Hello there","tags":["a","b"]}'


--- A JSON object of exactly `n` bytes (n >= 200), with the two secrets.
function _M.json(n)
  if memo[n] then
    return memo[n]
  end
  local tail_min = #'],"pad":""}'
  local parts, len, i = {}, #HEAD, 0
  while true do
    local item = ITEM:format(i)
    local add = #item + (i > 0 and 1 or 0)
    if len + add + tail_min > n then
      break
    end
    parts[#parts + 1] = item
    len = len + add
    i = i + 1
  end
  local pad = n - len - tail_min
  local body = HEAD .. concat(parts, ",") .. '],"pad":"' .. rep("x", floor(pad)) .. '"}'
  assert(#body == n, "bodies.json: size " .. #body .. " ~= " .. n)
  memo[n] = body
  return body
end


return _M
