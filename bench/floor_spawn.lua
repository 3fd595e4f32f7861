-- The floor under a. spawn: loomfloor.spawn (bench/floor.c) starts a thread
-- that makes a Lua state with the standard libraries and a libuv loop and
-- says it is up, then closes both and ends.  The same counts as
-- bench/spawn.lua's sequential spawns (3 warm-up + 50 measured, one at a
-- time):
--   up_ms:     create -> the thread is up (the floor of spawn -> first echo)
--   joined_ms: create -> the thread has closed its state and loop and was
--              joined (the floor of spawn -> first echo -> exit)
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loomfloor = require "loomfloor"
local C = dofile(DIR .. "/lib/common.lua")
local summarize, check = C.summarize, C.check

local N, WARM = C.count(50, 10), C.count(3, 1)

local up, joined = {}, {}
for i = 1, WARM + N do
  local u, j = loomfloor.spawn()
  if i > WARM then up[#up + 1], joined[#joined + 1] = u, j end
end
check(#up == N, "count")
C.emit("spawn_floor", { sequential = { up_ms = summarize(up), joined_ms = summarize(joined) } })
