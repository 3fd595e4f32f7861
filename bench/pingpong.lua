-- b. pingpong: postMessage round-trip latency between the main thread and one
-- worker (the loom twin of bench/node/pingpong.js).
-- Message: {seq = i, payload = "x"}.  The worker (workers/echo.lua) posts every
-- message back.  The main thread sends message i+1 only after the echo of
-- message i arrived (checks echo.seq == i).  10,000 warm-up round trips, then
-- 100,000 measured.  Per-round-trip time = loom.now() at receive minus at send.
-- mean_us = total wall time of the measured phase / 100,000.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, summarize, check = C.now, C.summarize, C.check

local WARM = C.count(10000, 1000)
local N = C.count(100000, 10000)

-- Future of {total_ms, lat}: n round trips, each sent from the previous
-- echo's callback, as in the Node script.  seq runs 0 .. n-1 like there.
local function run(w, n)
  local done = loom.Future.new()
  local lat = {}
  local i, tSend = 0, 0
  local t0 = now()
  local onMsg
  onMsg = function(m)
    local t = now()
    if m.seq ~= i or m.payload ~= "x" then
      done:reject(("bad echo at %d"):format(i))
      return
    end
    lat[i + 1] = (t - tSend) * 1000   -- us
    i = i + 1
    if i < n then
      tSend = now()
      w:postMessage({ seq = i, payload = "x" })
    else
      w:off("message", onMsg)
      done:resolve({ total_ms = now() - t0, lat = lat })
    end
  end
  w:on("message", onMsg)
  tSend = now()
  w:postMessage({ seq = 0, payload = "x" })
  return done
end

local w = loom.Worker(DIR .. "/workers/echo.lua")
C.once(w, "online"):await()
run(w, WARM):await()
local r = run(w, N):await()
w:terminate():await()
local s = summarize(r.lat)
check(s.n == N, "count")
C.emit("pingpong", {
  round_trips = N,
  warmup = WARM,
  total_ms = r.total_ms,
  mean_us = (r.total_ms * 1000) / N,
  round_trips_per_s = N / (r.total_ms / 1000),
  latency_us = s,
})
