-- a. spawn: cost of creating workers (the loom twin of bench/node/spawn.js).
--  1) RSS per idle live worker: RSS of a fresh process, then with 1 live idle
--     worker, then with 8 live idle workers (each has echoed one message and
--     then sits idle).
--  2) sequential: 3 warm-up + 50 measured spawns, one at a time.  For each:
--     t0 = before loom.Worker(file); "ping" is posted right after construction
--     (queued until the worker is up); online = 'online' event; first_echo =
--     echo received.  The worker is then terminated and its exit awaited
--     (timed separately) before the next spawn.  echo_exit = first_echo +
--     terminate, set against bench/floor_spawn.lua's joined_ms.
--  3) concurrent: 8 workers created back to back, each posted "ping"; time
--     until all 8 echoes arrived.  1 warm-up + 10 measured repetitions.
--  4) same as 2) with {eval = true} and the echo worker's source as a string.
--  5) same as 2) once main keeps what an exited worker made and sent it (a
--     SharedBuffer, a Channel, a frozen table and a MessagePort): no Node
--     twin; set against 2) (a thread's exit must not cost more for it).
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, summarize, check = C.now, C.summarize, C.check

local ECHO = DIR .. "/workers/echo.lua"
local ECHO_SRC
do
  local f = assert(io.open(ECHO, "r"))
  ECHO_SRC = f:read("a")
  f:close()
end

local SEQ_N, SEQ_WARM = C.count(50, 10), C.count(3, 1)
local CONC_K, CONC_REPS, CONC_WARM = 8, C.count(10, 3), 1

-- Future of {w, online, echo}: times in ms since just before the spawn.
local function spawnOne(useEval)
  local f = loom.Future.new()
  local t0 = now()
  local w = useEval and loom.Worker(ECHO_SRC, { eval = true }) or loom.Worker(ECHO)
  local tOnline = 0 / 0
  w:once("online", function() tOnline = now() end)
  w:once("error", function(err, tb) f:reject(err, tb) end)
  w:once("message", function(m)
    local tEcho = now()
    if m ~= "ping" then f:reject("bad echo: " .. tostring(m)); return end
    f:resolve({ w = w, online = tOnline - t0, echo = tEcho - t0 })
  end)
  w:postMessage("ping")
  return f
end

-- Future of the ms from terminate() to the worker's exit.
local function terminate(w)
  local t0 = now()
  return w:terminate():next(function() return now() - t0 end)
end

local function spawnMany(k)
  local fs = {}
  for i = 1, k do fs[i] = spawnOne(false) end
  return loom.all(fs)
end

local function terminateAll(list)
  local fs = {}
  for i = 1, #list do fs[i] = terminate(list[i].w) end
  return loom.all(fs)
end

local function sequential(n, warm, useEval)
  local online, echo, term, whole = {}, {}, {}, {}
  for i = 1, warm + n do
    local r = spawnOne(useEval):await()
    local t = terminate(r.w):await()
    if i > warm then
      online[#online + 1] = r.online
      echo[#echo + 1] = r.echo
      term[#term + 1] = t
      whole[#whole + 1] = r.echo + t
    end
  end
  return { online_ms = summarize(online), first_echo_ms = summarize(echo),
           terminate_ms = summarize(term), echo_exit_ms = summarize(whole) }
end

local function concurrent(k, reps, warm)
  local times = {}
  for r = 1, warm + reps do
    local t0 = now()
    -- the time is taken when the last echo settles the combined future
    local t
    local ws = spawnMany(k):next(function(ws) t = now() - t0; return ws end):await()
    terminateAll(ws):await()
    if r > warm then times[#times + 1] = t end
  end
  return { workers = k, all_echoed_ms = summarize(times) }
end

local function memory()
  collectgarbage("collect")
  C.sleep(200):await()
  local rss0 = C.rss()
  local first = spawnOne(false):await()
  C.sleep(500):await()
  local rss1 = C.rss()
  local rest = spawnMany(7):await()
  C.sleep(500):await()
  local rss8 = C.rss()
  table.insert(rest, 1, first)
  terminateAll(rest):await()
  local MiB = 1024 * 1024
  return {
    rss_base_mib = rss0 / MiB,
    rss_1_worker_mib = rss1 / MiB,
    rss_8_workers_mib = rss8 / MiB,
    per_worker_avg_of_8_mib = (rss8 - rss0) / 8 / MiB,
    per_worker_marginal_2_to_8_mib = (rss8 - rss1) / 7 / MiB,
    first_worker_mib = (rss1 - rss0) / MiB,
  }
end

-- What an exited worker made, kept by main from then on (5).
local MAKER = [[
local loom = require "loom"
local ch = loom.MessageChannel()
loom.parentPort:postMessage({ loom.SharedBuffer(64), loom.Channel(4), loom.freeze({ 1, 2, 3 }),
                              ch.port1 }, { ch.port1 })
]]
local function keepFromExited()
  local f = loom.Future.new()
  local w = loom.Worker(MAKER, { eval = true })
  local kept
  w:once("message", function(m) kept = m end)
  w:once("error", function(err, tb) f:reject(err, tb) end)
  w:once("exit", function() f:resolve(kept) end)
  local v = f:await()
  check(type(v) == "table" and #v == 4, "kept objects")
  return v
end

local mem = memory()   -- first, in a fresh process
local seq = sequential(SEQ_N, SEQ_WARM, false)
local conc = concurrent(CONC_K, CONC_REPS, CONC_WARM)
local seqEval = sequential(SEQ_N, SEQ_WARM, true)
local KEPT = keepFromExited()   -- last: it stays for the rest of the process
local seqKept = sequential(SEQ_N, SEQ_WARM, false)
check(seq.first_echo_ms.n == SEQ_N and #KEPT == 4, "count")
C.emit("spawn", { memory = mem, sequential_file = seq, concurrent_8 = conc,
                  sequential_eval = seqEval, sequential_kept = seqKept })
