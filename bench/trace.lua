-- The cost of tracing (issue 12): pingpong (bench/pingpong.lua, 100,000
-- round trips between the main thread and one worker) three ways, in one
-- run, interleaved:
--   none  a build without the trace points (cmake -DLOOM_TRACE_POINTS=OFF,
--         built here into build-notrace/ of this checkout)
--   off   this checkout's build/, tracing off
--   on    the same build with LOOM_TRACE=<tmp file> (every post and
--         delivery recorded and written as JSON)
-- Each way runs REPS times (ABC ABC ...); the median mean round trip of
-- each is compared: off/none is what the trace points cost when tracing
-- is off, on/off what tracing costs when on.
--
--   lua5.4 bench/trace.lua [reps]          (LOOM_BENCH_QUICK=1: 10k trips)
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local ROOT = DIR .. "/.."
local cjson = require "cjson"
local LUA = arg[-1] or "lua5.4"
local REPS = tonumber(arg[1]) or 5

local function sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("failed: " .. cmd) end
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- the variant without trace points, in its own build directory
local NOTRACE = ROOT .. "/build-notrace"
io.stderr:write("building the variant without trace points in ", NOTRACE, " ...\n")
sh(("cmake -S %s -B %s -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOOM_TRACE_POINTS=OFF >/dev/null")
   :format(q(ROOT), q(NOTRACE)))
sh(("cmake --build %s --target loom_core -j 1 >/dev/null"):format(q(NOTRACE)))

local LPATH = ("%s/lua/?.lua;%s/lua/?/init.lua;;"):format(ROOT, ROOT)
local function cpath(build) return ("%s/%s/?.so;;"):format(ROOT, build) end

local tracefile = os.tmpname()
local WAYS = {
  { name = "none", cpath = cpath("build-notrace"), env = "" },
  { name = "off", cpath = cpath("build"), env = "" },
  { name = "on", cpath = cpath("build"), env = "LOOM_TRACE=" .. q(tracefile) .. " " },
}

local function once(way)
  local cmd = ("%sLUA_PATH=%s LUA_CPATH=%s %s %s"):format(way.env, q(LPATH), q(way.cpath),
                                                        q(LUA), q(DIR .. "/pingpong.lua"))
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  assert(p:close(), "pingpong failed: " .. out)
  local line = out:match("(%b{})%s*$")
  return cjson.decode(line).results.mean_us
end

local function median(t)
  local s = table.move(t, 1, #t, 1, {})
  table.sort(s)
  local m = #s // 2
  if #s % 2 == 1 then return s[m + 1] end
  return (s[m] + s[m + 1]) / 2
end

local got = { none = {}, off = {}, on = {} }
local events
for r = 1, REPS do
  for _, way in ipairs(WAYS) do
    local us = once(way)
    table.insert(got[way.name], us)
    io.stderr:write(("  rep %d %-4s %.2f us\n"):format(r, way.name, us))
    if way.name == "on" then
      local f = assert(io.open(tracefile))
      local doc = cjson.decode(f:read("a"))
      f:close()
      events = #doc.traceEvents
    end
  end
end
os.remove(tracefile)

local m = { none = median(got.none), off = median(got.off), on = median(got.on) }
print(("pingpong round trip, median of %d runs each (us):"):format(REPS))
print(("  no trace points  %8.2f"):format(m.none))
print(("  tracing off      %8.2f   off/none = %.3f"):format(m.off, m.off / m.none))
print(("  tracing on       %8.2f   on/off   = %.3f  (%d events in the last file)")
      :format(m.on, m.on / m.off, events or 0))
print(cjson.encode({ bench = "trace", reps = REPS, none_us = m.none, off_us = m.off,
                     on_us = m.on, off_over_none = m.off / m.none, on_over_off = m.on / m.off,
                     runs = got }))
