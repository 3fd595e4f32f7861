-- luacheck (Debian's lua-check) over lua/, spec/, examples/ and bench/:
-- `make lint`, run by CI.  Lua 5.4; the specs run under busted.
std = "lua54"
max_line_length = 110
exclude_files = {
  "spec/fixtures/syntax_error.lua",   -- a file that must not compile
  "bench/node/**",
}
-- A worker function is sent as bytecode and cannot reach its parent's
-- upvalues: it requires loom again under the same name, on purpose.
ignore = { "431", "432", "212/self" }
-- Specs, examples and benchmarks: test names and messages run longer;
-- specs drop references on purpose (c = nil, then collect) and keep
-- tables only to hold memory, and a worker function's arguments may
-- take the name of a loop variable outside it (it cannot see them).
files["spec/"] = { std = "+busted", max_line_length = 130, ignore = { "311", "241", "433" } }
files["examples/"] = { max_line_length = 130, ignore = { "433" } }
files["bench/"] = { max_line_length = 130 }
files["spec/fixtures/"] = { max_line_length = false }   -- data, some generated
-- lua/meta/: LuaLS definitions (signatures with empty bodies), never run
files["lua/meta/"] = { ignore = { "212", "241" } }
