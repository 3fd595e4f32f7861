-- loom example: async/await mixing timers and pool tasks.
--
--   lua5.4 examples/deadline.lua [jobs] [deadline_ms]
--
-- One loom.async coroutine reads like sequential code: it hands a batch of
-- jobs to a pool of two workers, sleeps on a timer while they run, awaits
-- each result in order, and gives every job a deadline: a job not done
-- 200 ms (deadline_ms) after it was handed in is aborted (its worker sees the signal and
-- stops), and the program goes on with what finished.  Meanwhile a plain
-- setInterval ticks on the same loop: nothing here blocks the main thread.
local loom = require "loom"

local JOBS = tonumber(arg and arg[1]) or 8
local DEADLINE = tonumber(arg and arg[2]) or 200

-- the task: "work" for job.ms milliseconds in small steps, stopping early
-- when the pool's signal says the job was aborted
local pool = loom.Pool{
  source = [[
    local loom = require "loom"
    return function(job, signal)
      local t0 = loom.now()
      while loom.now() - t0 < job.ms do
        if signal.aborted then error("stopped: " .. tostring(signal.reason), 0) end
        loom.sleep(5)                      -- a worker's sleep: a blocking wait
      end
      return { id = job.id, squared = job.id * job.id, ms = job.ms }
    end
  ]],
  minThreads = 2, maxThreads = 2,
}

local ticks = 0
local ticker = loom.setInterval(function() ticks = ticks + 1 end, 20)

local main = loom.async(function()
  local t0 = loom.now()
  local futures = {}
  local slow = JOBS - JOBS // 3                -- the last third is too slow
  for id = 1, JOBS do
    local job = { id = id, ms = id > slow and 10 * DEADLINE or 10 + 2 * id }
    futures[id] = pool:run(job, { signal = loom.AbortSignal.timeout(DEADLINE) })
  end
  loom.sleep(30)                           -- inside async: yields to the loop
  local done, late = 0, 0
  for id, f in ipairs(futures) do
    local ok, r = pcall(f.await, f)        -- await yields too
    if ok then
      done = done + 1
      assert(r.id == id and r.squared == id * id)
      print(("job %2d: %3d ms of work -> %d"):format(id, r.ms, r.squared))
    else
      late = late + 1
      print(("job %2d: %s"):format(id, tostring(r)))
    end
  end
  return { done = done, late = late, ms = loom.now() - t0 }
end)

local r = main:await()                     -- runs the loop until main settles
local done, late, ms = r.done, r.late, r.ms
ticker:close()
pool:destroy():await()
print(("%d done, %d past their deadline, %.0f ms; the timer ticked %d times meanwhile")
      :format(done, late, ms, ticks))
assert(done + late == JOBS and late == JOBS // 3 and ticks > 0)
