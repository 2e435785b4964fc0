std = "ngx_lua"
max_line_length = 120
files["spec/"] = { std = "+busted" }
exclude_files = { ".tree/", "target/", ".tmp/" }
-- wrk scripts: wrk's own globals and callbacks.
files["bench/wrk.lua"] = {
  std = "max",
  globals = { "wrk", "init", "setup", "request", "response", "done", "delay" },
  unused_args = false,
}
