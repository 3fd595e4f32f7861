-- e. atomics: a SharedBuffer and its atomics between workers (the loom twin
-- of bench/node/atomics.js).  One 64-byte SharedBuffer viewed as int32:
-- [1] counter / turn word, [2] ready count, [3] go flag (Node's [0], [1],
-- [2]).  Each worker adds 1 to [2], posts "ready", then waits on [3]; the
-- timed region starts when the main thread stores 1 into [3] and notifies.
--   add_contended: 2 workers x 10,000,000 add(1, 1); wall = go -> both
--     "done" messages; the final value must be 20,000,000.
--   add_uncontended: the same with 1 worker.
--   wait_notify_pingpong: ping: store(1); notify; while load ~= 0: wait(1, 1)
--     pong: while load ~= 1: wait(1, 0); store(0); notify.  1,000 warm-up +
--     100,000 measured round trips, timed inside ping.
--   spin_pingpong: the same, busy-waiting on load.
--   waitasync_pingpong: the main thread is ping with waitAsync (a Future),
--     one worker is pong with wait.  1,000 warm-up + 20,000 measured.
-- Run as loadfile(this)("floor") (bench/floor_atomics.lua): the two add
-- workloads only, each add a loomfloor.add instead of a view's add.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local FLOOR = select(1, ...) == "floor"
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, summarize, check = C.now, C.summarize, C.check

local FILE = DIR .. "/workers/atomics_worker.lua"
local CTR, READY, GO = 1, 2, 3
local ADDS = C.count(10000000, 1000000)
local PP, PP_WARM = C.count(100000, 10000), C.count(1000, 100)
local WA, WA_WARM = C.count(20000, 2000), C.count(1000, 100)

local function newshared()
  local sab = loom.SharedBuffer(64)
  return sab, sab:view("int32")
end

-- start workers, wait until all are parked on the go flag, release them,
-- collect one message from each
local function runworkers(sab, ia, specs)
  local ws, ready = {}, {}
  for i, wd in ipairs(specs) do
    wd.sab = sab
    ws[i] = loom.Worker(FILE, { workerData = wd })
    ready[i] = C.once(ws[i], "message")
  end
  loom.all(ready):await()
  while ia:load(READY) ~= #ws do loom.sleep(0.1) end   -- 'ready' is posted after the add
  local done = {}
  for i, w in ipairs(ws) do done[i] = C.once(w, "message") end
  local t0 = now()
  ia:store(GO, 1)
  ia:notify(GO)
  local results = loom.all(done):await()
  local wall = now() - t0
  local exits = {}
  for i, w in ipairs(ws) do exits[i] = w:terminate() end
  loom.all(exits):await()
  return wall, results
end

local function addtest(nworkers, n)
  local sab, ia = newshared()
  local specs = {}
  local fl, cells, addr
  if FLOOR then
    fl = require "loomfloor"
    cells = fl.cells(16)
    addr = fl.addr(cells)
  end
  for i = 1, nworkers do
    specs[i] = FLOOR and { mode = "floor_add", n = n, addr = addr } or { mode = "add", n = n }
  end
  local wall, results = runworkers(sab, ia, specs)
  local final = FLOOR and fl.load(addr, CTR) or ia:load(CTR)
  check(final == nworkers * n, ("final %d ~= %d"):format(final, nworkers * n))
  local loops = {}
  for i, r in ipairs(results) do loops[i] = r.ms end
  return { workers = nworkers, adds_per_worker = n, final_value = final, wall_ms = wall,
           ops_per_s = nworkers * n / (wall / 1000), per_worker_loop_ms = loops }
end

local function pingpong(spin, n, warm)
  local sab, ia = newshared()
  local m = spin and { "spin_ping", "spin_pong" } or { "ping", "pong" }
  local _, results = runworkers(sab, ia, { { mode = m[1], n = n, warm = warm },
                                           { mode = m[2], n = n, warm = warm } })
  local ping = results[1]
  return { round_trips = n, warmup = warm, total_ms = ping.ms, mean_us = ping.ms * 1000 / n,
           latency_us = summarize(ping.lat) }
end

local function waitasync_pingpong(n, warm)
  local sab, ia = newshared()
  local w = loom.Worker(FILE, { workerData = { mode = "async_pong", sab = sab, n = n, warm = warm } })
  C.once(w, "message"):await()
  local done = C.once(w, "message")
  ia:store(GO, 1)
  ia:notify(GO)
  local lat, tmeasure = {}, 0
  local store, notify, load, waitAsync = ia.store, ia.notify, ia.load, ia.waitAsync
  loom.async(function()
    for i = 0, warm + n - 1 do
      if i == warm then tmeasure = now() end
      local t0 = now()
      store(ia, CTR, 1)
      notify(ia, CTR, 1)
      while load(ia, CTR) ~= 0 do
        local f = waitAsync(ia, CTR, 1)
        if f:state() == "pending" then f:await() end
      end
      if i >= warm then lat[i - warm + 1] = (now() - t0) * 1000 end
    end
  end):await()
  local total = now() - tmeasure
  done:await()
  w:terminate():await()
  return { round_trips = n, warmup = warm, total_ms = total, mean_us = total * 1000 / n,
           latency_us = summarize(lat) }
end

local out = {}
out.add_contended = addtest(2, ADDS)
out.add_uncontended = addtest(1, ADDS)
if FLOOR then
  C.emit("atomics_floor", out)
  return
end
out.wait_notify_pingpong = pingpong(false, PP, PP_WARM)
out.spin_pingpong = pingpong(true, PP, PP_WARM)
out.waitasync_pingpong = waitasync_pingpong(WA, WA_WARM)
C.emit("atomics", out)
