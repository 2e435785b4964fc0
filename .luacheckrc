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
-- the soak's wrk script: its per-thread counters and id are globals that
-- setup() and done() reach through thread:set() / thread:get().
files["bench/soak_wrk.lua"] = {
  std = "max",
  globals = { "wrk", "init", "setup", "request", "response", "done", "delay",
              "tid", "c200", "c401", "c403", "other" },
  unused_args = false,
}
