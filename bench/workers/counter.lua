-- Counting sink for the throughput benchmark.  Counts messages and sums
-- their ids (the number itself, or m.id).  A nil message (Node's null) ends
-- a phase: the worker replies {count, sum} and resets.
local loom = require "loom"
local port = loom.parentPort
local count, sum = 0, 0
port:on("message", function(m)
  if m == nil then
    port:postMessage({ count = count, sum = sum })
    count, sum = 0, 0
    return
  end
  count = count + 1
  sum = sum + (type(m) == "number" and m or m.id)
end)
