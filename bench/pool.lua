-- pool: loom.Pool against Piscina (workload g of the Node reference,
-- pool.js, run in the same invocation by bench/run.lua).
--  - tiny: 100,000 tasks x -> x + 1 (named task 'inc' from a task file),
--    all submitted at once and awaited with loom.all, after a 10,000-task
--    warm-up; the sum is checked.  Pool of minThreads = maxThreads = 2.
--    tasks_per_s = 100,000 / wall.
--  - tiny_c16: the same with concurrentTasksPerWorker = 16.
--  - spin_1ms: 1,000 tasks that each busy-wait 1 ms (after a 20-task
--    warm-up); ideal = 1,000 x 1 ms / 2 threads; efficiency = ideal / wall.
--  - spin_floor: the machine's own efficiency for that work: two plain
--    worker threads, no pool, each busy-waiting 500 x 1 ms back to back
--    (timed from a go signal until both have said done).  What a pool on
--    this machine can reach: the kernel and the host take some of each
--    core's time from any thread.
--  - scaling: tiny tasks/s with 1 thread and with every core.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, check = C.now, C.check

local TASKS = DIR .. "/workers/pool_tasks.lua"
local N_TINY = C.count(100000, 10000)
local N_SPIN = C.count(1000, 200)
local THREADS = 2

local function tiny(pool, n)
  local t0 = now()
  local fs = {}
  local opts = { name = "inc" }
  for i = 1, n do fs[i] = pool:run(i - 1, opts) end
  local rs = loom.all(fs):await()
  local wall = now() - t0
  local sum = 0
  for i = 1, n do sum = sum + rs[i] end
  check(sum == n * (n + 1) // 2, "tiny sum")
  return wall
end

local function spin(pool, n)
  local t0 = now()
  local fs = {}
  local opts = { name = "spin1ms" }
  for i = 1, n do fs[i] = pool:run(i, opts) end
  loom.all(fs):await()
  return now() - t0
end

local function pooltiny(threads, extra)
  local opts = { filename = TASKS, minThreads = threads, maxThreads = threads }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local pool = loom.Pool(opts)
  tiny(pool, C.count(10000, 2000))           -- warm-up (and both threads up)
  local wall = tiny(pool, N_TINY)
  local s = pool:stats()
  pool:destroy():await()
  return { tasks = N_TINY, threads = threads, wall_ms = wall, tasks_per_s = N_TINY / (wall / 1000),
           run_time_p50_ms = s.runTime.p50, wait_time_p50_ms = s.waitTime.p50,
           wait_time_p99_ms = s.waitTime.p99, utilization = s.utilization }
end

local function poolspin()
  local pool = loom.Pool{ filename = TASKS, minThreads = THREADS, maxThreads = THREADS }
  spin(pool, 20)
  local wall = spin(pool, N_SPIN)
  local s = pool:stats()
  pool:destroy():await()
  local ideal = N_SPIN * 1 / THREADS
  return { tasks = N_SPIN, wall_ms = wall, ideal_ms = ideal, efficiency = ideal / wall,
           overhead_ms_per_task = (wall - ideal) * THREADS / N_SPIN,
           run_time_mean_ms = s.runTime.mean, utilization = s.utilization }
end

-- the floor of spin_1ms: the same busy-waits, back to back, in two plain
-- threads (each told to go by a SharedBuffer flag, each posting when done)
local function spinfloor()
  local flag = loom.SharedBuffer(8):view("int32")
  local ws = {}
  for i = 1, THREADS do
    ws[i] = loom.Worker(function()
      local l = require "loom"
      local d = l.workerData
      local n, f, now = d.n, d.flag, l.now
      l.parentPort:postMessage("up")
      while f:load(1) == 0 do f:wait(1, 0, 100) end
      for _ = 1, n do
        local stop = now() + 1
        while now() < stop do end
      end
      l.parentPort:postMessage("done")
    end, { workerData = { n = N_SPIN // THREADS, flag = flag } })
  end
  local ready, done = {}, {}
  for i = 1, THREADS do ready[i] = C.once(ws[i], "message") end
  loom.all(ready):await()
  for i = 1, THREADS do done[i] = C.once(ws[i], "message") end
  local t0 = now()
  flag:store(1, 1)
  flag:notify(1)
  loom.all(done):await()
  local wall = now() - t0
  for i = 1, THREADS do ws[i]:terminate() end
  local ideal = N_SPIN * 1 / THREADS
  return { tasks = N_SPIN, wall_ms = wall, ideal_ms = ideal, efficiency = ideal / wall }
end

local out = { threads = THREADS }
out.tiny = pooltiny(THREADS)
out.tiny_c16 = pooltiny(THREADS, { concurrentTasksPerWorker = 16 })
out.spin_1ms = poolspin()
out.spin_floor = spinfloor()
local cpus = loom.availableParallelism()
out.scaling = { t1 = pooltiny(1) }
out.scaling["t" .. cpus] = cpus == THREADS and out.tiny or pooltiny(cpus)
out.scaling.all = out.scaling["t" .. cpus]
out.scaling.speedup = out.scaling.all.tasks_per_s / out.scaling.t1.tasks_per_s
C.emit("pool", out)
