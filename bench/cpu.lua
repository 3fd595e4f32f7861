-- cpu: the primes below 20,000,000 with loom.Pool (workload f of the Node
-- reference, cpu.js, run in the same invocation by bench/run.lua), the
-- exact test of the reference (lib/primes.js).  The range is cut into
-- 100,000-number blocks, one task each, so the pool balances the uneven
-- work itself (submitted from the highest block down: longest first).  n1: a pool of 1 thread; n2: a pool of 2.  Wall time runs
-- from creating the pool until every count has arrived (worker start-up
-- included, as the reference's).  speedup = wall(n1) / wall(n2).
-- floor2: what this machine gives two threads of this Lua loop: two plain
-- worker threads, no pool, counting the blocks b mod 2 (the reference's
-- interleaved split), timed the same way; floor_speedup = wall(n1) /
-- wall(floor2).  (Two cores of a VM can be two hyperthreads of the host:
-- an interpreter's loop then gains less from the second than V8's code.)
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, check = C.now, C.check

local LIMIT = C.count(20000000, 2000000)
local EXPECTED = C.quick and 148933 or 1270607
local BLOCK = 100000

local function tasks()
  return function(range)
    local c = 0
    for n = range[1], range[2] - 1 do
      if n < 2 then                            -- luacheck: ignore 542 (not prime)
      elseif n < 4 then c = c + 1
      elseif n % 2 ~= 0 then
        local d, prime = 3, true
        while d * d <= n do
          if n % d == 0 then prime = false; break end
          d = d + 2
        end
        if prime then c = c + 1 end
      end
    end
    return c
  end
end

local function run(threads)
  local t0 = now()
  local pool = loom.Pool{ fn = tasks, minThreads = threads, maxThreads = threads }
  local fs = {}
  -- the largest blocks (the highest numbers) first: the last tasks are the
  -- shortest, so both threads finish at nearly the same time
  for lo = (LIMIT - 1) // BLOCK * BLOCK, 0, -BLOCK do
    fs[#fs + 1] = pool:run({ lo, math.min(lo + BLOCK, LIMIT) })
  end
  local counts = loom.all(fs):await()
  local wall = now() - t0
  local s = pool:stats()
  pool:close():await()
  local total = 0
  for _, c in ipairs(counts) do total = total + c end
  check(total == EXPECTED, ("prime count %d ~= %d"):format(total, EXPECTED))
  return { threads = threads, wall_ms = wall, count = total, tasks = #fs,
           utilization = s.utilization, run_time_p50_ms = s.runTime.p50 }
end

-- two plain threads, block b to thread b mod 2
local function floor2()
  local t0 = now()
  local ws, fs = {}, {}
  for k = 0, 1 do
    ws[k + 1] = loom.Worker(function()
      local l = require "loom"
      local d = l.workerData
      local fn = load(d.code)()
      local c, b = 0, d.k
      while b * d.block < d.limit do
        local lo = b * d.block
        c = c + fn({ lo, math.min(lo + d.block, d.limit) })
        b = b + 2
      end
      l.parentPort:postMessage(c)
    end, { workerData = { k = k, block = BLOCK, limit = LIMIT,
                          code = string.dump(tasks) } })
    fs[k + 1] = C.once(ws[k + 1], "message")
  end
  local counts = loom.all(fs):await()
  local wall = now() - t0
  check(counts[1] + counts[2] == EXPECTED, "floor prime count")
  return { threads = 2, wall_ms = wall, count = counts[1] + counts[2] }
end

local n1 = run(1)
local n2 = run(2)
local f2 = floor2()
C.emit("cpu", { limit = LIMIT, block = BLOCK, n1 = n1, n2 = n2, floor2 = f2,
                speedup = n1.wall_ms / n2.wall_ms, floor_speedup = n1.wall_ms / f2.wall_ms })
