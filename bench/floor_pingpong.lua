-- The floor under b. pingpong: the same workload as bench/pingpong.lua, over
-- loomfloor (bench/floor.c) instead of a loom.Worker.  Two Lua states, one
-- per thread, exchange {seq = i, payload = "x"} through loom's codec over two
-- SPSC rings, both sides spinning.  The other state runs the echo below, the
-- twin of workers/echo.lua.  Same counts (10,000 warm-up round trips, then
-- 100,000 measured), same check (echo.seq == i), same now() stamps: per
-- round trip, now() at receive minus now() just before the send.
-- mean_us = total wall time of the measured phase / 100,000.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loomfloor = require "loomfloor"
local C = dofile(DIR .. "/lib/common.lua")
local now, summarize, check = C.now, C.summarize, C.check

local WARM = C.count(10000, 1000)
local N = C.count(100000, 10000)

local ECHO = [[
local port = ...
port:on("message", function(m) port:postMessage(m) end)
]]

-- {total_ms, lat}: n round trips, each sent after the previous echo came
-- back.  seq runs 0 .. n-1 as in pingpong.lua.
local function run(f, n)
  local lat = {}
  local t0 = now()
  for i = 0, n - 1 do
    local tSend = now()
    f:post({ seq = i, payload = "x" })
    local m = f:recv()
    local t = now()
    if m.seq ~= i or m.payload ~= "x" then
      error(("bad echo at %d"):format(i))
    end
    lat[i + 1] = (t - tSend) * 1000   -- us
  end
  return { total_ms = now() - t0, lat = lat }
end

local f = loomfloor.pair(ECHO)
run(f, WARM)
local r = run(f, N)
f:close()
local s = summarize(r.lat)
check(s.n == N, "count")
C.emit("pingpong_floor", {
  round_trips = N,
  warmup = WARM,
  total_ms = r.total_ms,
  mean_us = (r.total_ms * 1000) / N,
  round_trips_per_s = N / (r.total_ms / 1000),
  latency_us = s,
})
