-- bench/run.sh's template renderer: fills `${name}` placeholders with
-- spec/fixtures/render_conf.lua's fill (raises on a placeholder without value).
--   luajit bench/render.lua <render_conf.lua> <template> <out> key=value...
local render = dofile(arg[1])
local values = {}
for i = 4, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  assert(k, "expected key=value, got " .. arg[i])
  values[k] = v
end
local f = assert(io.open(arg[2], "rb"))
local text = f:read("*a")
f:close()
local out = assert(io.open(arg[3], "wb"))
out:write(render.fill(text, values))
out:close()
