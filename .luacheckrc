std = "ngx_lua"
max_line_length = 120
files["spec/"] = { std = "+busted" }
exclude_files = { ".tree/", "target/", ".tmp/" }
