-- loom example: count the primes below 20,000,000 with a task pool
-- (workload f of the Node reference), drawing a progress bar.
--
--   lua5.4 examples/primes.lua [limit] [threads]
--
-- The range is cut into 100,000-number blocks; each block is one task
-- of loom.Pool, so the threads share the work however uneven it is
-- (higher numbers need more trial divisions).  The pool hands every
-- thread its next block before it has finished the current one, so no
-- thread waits for the main thread between tasks.  The highest blocks
-- (the longest tasks) go first, so the threads finish together.
local loom = require "loom"

local LIMIT = math.tointeger(tonumber(arg and arg[1])) or 20000000
local THREADS = math.tointeger(tonumber(arg and arg[2])) or loom.availableParallelism()
local BLOCK = 100000
local KNOWN = { [20000000] = 1270607, [10000000] = 664579, [5000000] = 348513,
                [1000000] = 78498 }

-- the task: the primes in [lo, hi), with the reference's exact test
local pool = loom.Pool{
  maxThreads = THREADS, minThreads = THREADS,
  fn = function()
    return function(range)
      local c = 0
      for n = range[1], range[2] - 1 do
        if n < 2 then                          -- luacheck: ignore 542 (not prime)
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
  end,
}

local tty = os.getenv("TERM") ~= nil and os.getenv("TERM") ~= "dumb"
local blocks = (LIMIT + BLOCK - 1) // BLOCK
local done, total, t0 = 0, 0, loom.now()
local lastdraw = -1

local function bar()
  local width = 40
  local filled = done * width // blocks
  local line = ("\r  [%s%s] %3d%%  %d/%d blocks  %5.1f s  %d primes so far"):format(
    ("#"):rep(filled), ("."):rep(width - filled), done * 100 // blocks, done, blocks,
    (loom.now() - t0) / 1000, total)
  io.write(line)
  io.flush()
end

print(("%s: counting the primes below %d with a pool of %d threads"):format(
  loom._VERSION, LIMIT, THREADS))
local fs = {}
for b = blocks - 1, 0, -1 do    -- the longest blocks (highest numbers) first
  local lo = b * BLOCK
  fs[#fs + 1] = pool:run({ lo, math.min(lo + BLOCK, LIMIT) }):next(function(c)
    total, done = total + c, done + 1
    -- redraw at most every 1% (every block when not on a terminal would be
    -- too much: then 10% steps)
    local step = tty and 1 or 10
    local pct = done * 100 // blocks
    if pct >= lastdraw + step or done == blocks then lastdraw = pct; bar() end
    return c
  end)
end
loom.all(fs):await()
local ms = loom.now() - t0
io.write("\n")
local s = pool:stats()
pool:close():await()

print(("%d primes below %d in %.0f ms (%d tasks, run time p50 %.1f ms, p99 %.1f ms, utilization %.0f%%)")
  :format(total, LIMIT, ms, s.completed, s.runTime.p50, s.runTime.p99, s.utilization * 100))
if KNOWN[LIMIT] then
  assert(total == KNOWN[LIMIT], ("wrong count: %d, expected %d"):format(total, KNOWN[LIMIT]))
  print("ok: the count is pi(" .. LIMIT .. ") = " .. KNOWN[LIMIT])
end
