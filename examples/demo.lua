-- loom demo: count the primes below N on every core, in parallel.
-- Each worker gets its share of 100k-number blocks (block b goes to worker
-- b mod n), reports progress as it goes, and sends its count back; the
-- main thread adds them up and checks the total against a single-thread run.
local loom = require "loom"

local N = tonumber(arg and arg[1]) or 4000000
local BLOCK = 100000

local function count_primes(lo, hi)       -- [lo, hi), trial division
  local count = 0
  for n = lo, hi - 1 do
    if n == 2 or n == 3 then count = count + 1
    elseif n >= 2 and n % 2 ~= 0 then
      local d, prime = 3, true
      while d * d <= n do
        if n % d == 0 then prime = false; break end
        d = d + 2
      end
      if prime then count = count + 1 end
    end
  end
  return count
end

local nworkers = math.max(2, loom.availableParallelism())
print(("loom %s: counting primes below %d with %d workers"):format(
  loom._VERSION, N, nworkers))

local t0 = loom.now()
local total, finished = 0, 0
for id = 1, nworkers do
  -- the function is cloned into the worker with its upvalue count_primes
  local w = loom.Worker(function(me, n, limit, block)
    local loom = require "loom"
    local count, blocks = 0, 0
    for b = me - 1, math.ceil(limit / block) - 1, n do
      count = count + count_primes(b * block, math.min((b + 1) * block, limit))
      blocks = blocks + 1
      if blocks % 5 == 0 then loom.parentPort:postMessage({ progress = blocks }) end
    end
    loom.parentPort:postMessage({ count = count, blocks = blocks })
  end, { argv = { id, nworkers, N, BLOCK }, name = "primes-" .. id })
  w:on("message", function(m)
    if m.progress then
      io.write(("  worker %d: %d blocks done\n"):format(w.threadId, m.progress))
    else
      total = total + m.count
      io.write(("  worker %d: %d primes in %d blocks\n"):format(w.threadId, m.count, m.blocks))
    end
  end)
  w:on("error", function(err) print("worker failed: " .. tostring(err)) end)
  w:on("exit", function() finished = finished + 1 end)
end
loom.run()                                  -- until every worker has exited
local parallel_ms = loom.now() - t0

local t1 = loom.now()
local expected = count_primes(0, N)
local single_ms = loom.now() - t1

print(("%d primes below %d (%d workers finished)"):format(total, N, finished))
print(("parallel %.0f ms, one thread %.0f ms: %.2fx faster"):format(
  parallel_ms, single_ms, single_ms / parallel_ms))
assert(total == expected, ("mismatch: %d ~= %d"):format(total, expected))
print("ok: the workers agree with the single-thread count")
