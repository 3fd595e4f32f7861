-- Task file for bench/pool.lua (named tasks, as the reference's
-- workers/pool_tasks.js)
local now = require("loom").now
local M = {}
-- tiny task: x + 1
function M.inc(x) return x + 1 end
-- ~1 ms CPU task: busy-wait until 1 ms of monotonic time has passed
function M.spin1ms(x)
  local stop = now() + 1
  while now() < stop do end
  return x
end
return M
