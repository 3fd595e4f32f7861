-- select.lua: one thread serving several Channels at once with loom.select.
--
--   lua5.4 examples/select.lua [readings]
--
-- Three workers stand for three sensors.  Each pushes its readings into a
-- Channel of its own, bounded (8 readings: a sensor waits when the hub
-- falls behind), at its own pace: "fast" as quickly as it can, "medium"
-- every millisecond, "slow" every 3 ms; then it closes its channel.  The
-- main thread is the hub: loom.select waits on the three channels at once
-- and returns one that has a reading, starting each call one channel
-- further, so the fast sensor, whose channel stays full while it runs,
-- cannot starve the others: the longest wait of each sensor's readings
-- (from its push to the hub) shows how soon they are taken, flood or not.
-- A timeout catches a sensor that falls silent, and select says "closed"
-- once every channel is closed and drained.  The hub checks that every
-- reading came, once, in the order its sensor sent it.
local loom = require "loom"

local N = tonumber(arg and arg[1]) or 4000

local SENSORS = {                 -- name, readings, ms between two readings
  { name = "fast", n = 10 * N, pause = 0 },
  { name = "medium", n = N // 10, pause = 1 },
  { name = "slow", n = N // 100, pause = 3 },
}

local function sensor()
  local loom = require "loom"
  local d = loom.workerData
  for seq = 1, d.n do
    if d.pause > 0 then loom.sleep(d.pause) end
    d.q:push({ seq = seq, at = loom.now(), value = math.sin(seq) })   -- waits while full
  end
  d.q:close()                     -- the hub still takes what is in it
end

local channels, sensor_of = {}, {}
for i, s in ipairs(SENSORS) do
  s.q = loom.Channel(8)
  s.got, s.wait, s.sum = 0, 0, 0
  channels[i], sensor_of[s.q] = s.q, s
  loom.Worker(sensor, { name = s.name, workerData = { q = s.q, n = s.n, pause = s.pause } })
end

local t0, total = loom.now(), 0
while true do
  local q, r = loom.select(channels, 10000)     -- the channel that had a reading, and it
  if q == nil then
    if r == "closed" then break end               -- every sensor is done, nothing is left
    error("select: no reading for 10 s (" .. r .. ")")
  end
  local s = sensor_of[q]
  assert(r.seq == s.got + 1, s.name .. ": a reading lost or out of order")
  s.got, s.sum, s.last = s.got + 1, s.sum + r.value, loom.now() - t0
  s.wait = math.max(s.wait, loom.now() - r.at)  -- from its push to the hub
  total = total + 1
end
loom.run()                                        -- the sensors have ended: join them

for _, s in ipairs(SENSORS) do
  local sum = 0
  for seq = 1, s.n do sum = sum + math.sin(seq) end
  assert(s.got == s.n and math.abs(s.sum - sum) < 1e-9, s.name .. ": readings lost")
  print(("%-6s %6d readings, in order, the last at %3.0f ms; the longest wait %.2f ms")
        :format(s.name, s.got, s.last, s.wait))
end
print(("ok: %d readings from %d sensors in %.0f ms, each in order, none lost"):format(total, #SENSORS,
      loom.now() - t0))
