-- loom example: trace the primes pool (examples/primes.lua) and draw it.
--
--   lua5.4 examples/trace.lua [limit] [threads] [trace.json]
--
-- Writes the trace (Chrome Trace Event JSON: open it in Perfetto,
-- https://ui.perfetto.dev, "Open trace file", or chrome://tracing) and an
-- SVG timeline next to it (examples/trace_svg.lua, one lane per thread).
-- The same trace of any program, without changing it:
--   LOOM_TRACE=trace.json lua5.4 examples/primes.lua
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local cjson = require "cjson"

local limit, threads = arg and arg[1] or "2000000", arg and arg[2] or "2"
local out = arg and arg[3] or "trace.json"

assert(loom.trace.start(out))
do   -- run the primes example as it is, with its own arguments
  local saved = arg
  arg = { [0] = DIR .. "/primes.lua", limit, threads }   -- luacheck: ignore 121
  dofile(DIR .. "/primes.lua")
  arg = saved   -- luacheck: ignore 121
end
loom.trace.stop()

-- what the trace holds
local f = assert(io.open(out))
local doc = cjson.decode(f:read("a"))
f:close()
local count, threads_seen = {}, {}
for _, e in ipairs(doc.traceEvents) do
  if e.args and e.args.event then count[e.args.event] = (count[e.args.event] or 0) + 1 end
  if e.ph == "M" and e.name == "thread_name" then threads_seen[#threads_seen + 1] = e.args.name end
end
table.sort(threads_seen)
local svg = out:gsub("%.json$", "") .. ".svg"
dofile(DIR .. "/trace_svg.lua")(out, svg)
print(("trace: %d events in %s (threads: %s)"):format(#doc.traceEvents, out,
  table.concat(threads_seen, ", ")))
print(("tasks: %d queued, %d run, %d failed; %d messages delivered"):format(
  count["task.queued"] or 0, count["task.finished"] or 0, count["task.failed"] or 0,
  count["message.deliver"] or 0))
print(("timeline: %s"):format(svg))
if (count["task.queued"] or 0) > 0 and count["task.queued"] == count["task.finished"] then
  print("ok: every task was queued and run")
end
