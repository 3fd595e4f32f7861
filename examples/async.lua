-- loom example: a parallel map with futures.
-- A few workers each serve requests {id, n}; `call` posts one and returns a
-- Future of the reply.  loom.async lets the main code await replies in order
-- while every worker computes at the same time.
local loom = require "loom"

local function fib(n) return n < 2 and n or fib(n - 1) + fib(n - 2) end

local workers, pending, next_id = {}, {}, 0
for i = 1, math.max(2, loom.availableParallelism()) do
  local w = loom.Worker(function()
    local loom = require "loom"
    loom.parentPort:on("message", function(req)
      loom.parentPort:postMessage({ id = req.id, value = fib(req.n) })
    end)
  end, { name = "fib-" .. i })
  w:on("message", function(rep)
    pending[rep.id]:resolve(rep.value)
    pending[rep.id] = nil
  end)
  workers[i] = w
end

local function call(n)                     -- round-robin, Future of fib(n)
  next_id = next_id + 1
  local f = loom.Future.new()
  pending[next_id] = f
  workers[next_id % #workers + 1]:postMessage({ id = next_id, n = n })
  return f
end

local main = loom.async(function()
  local t0 = loom.now()
  local futures = {}
  for n = 20, 27 do futures[#futures + 1] = call(n) end
  local results = loom.all(futures):await()      -- all computed in parallel
  for i, v in ipairs(results) do
    print(("fib(%d) = %d"):format(19 + i, v))
    assert(v == fib(19 + i))
  end
  print(("%d calls on %d workers in %.0f ms"):format(#results, #workers, loom.now() - t0))
  for _, w in ipairs(workers) do w:terminate() end
end)

main:next(function() print("ok") end, function(err) print("failed: " .. tostring(err)) end)
loom.run()
