-- loom example: a live progress bar over shared memory.
--   lua5.4 examples/progress.lua [limit]
-- Workers count the primes below `limit` (default 3,000,000), block by block.
-- Each takes the next block from a shared cursor (v:add returns the old
-- value, so no two workers take the same block) and adds what it finished
-- to a shared counter; nothing is posted until the end.  The main thread
-- never blocks: a timer reads the counter 20 times a second and redraws the
-- bar in place, and waitAsync wakes it the moment the last worker is done.
local loom = require "loom"

local LIMIT = math.tointeger(tonumber(arg and arg[1] or "")) or 3000000
local BLOCK = 20000
local NBLOCKS = (LIMIT + BLOCK - 1) // BLOCK
local NWORKERS = math.max(2, loom.availableParallelism())

-- int64 slots: [1] next block to take, [2] numbers done, [3] primes found,
-- [4] workers still running
local shared = loom.SharedBuffer(4 * 8)
local v = shared:view("int64")
v[4] = NWORKERS

for i = 1, NWORKERS do
  loom.Worker(function(limit, block, nblocks)
    local loom = require "loom"
    local s = loom.workerData:view("int64")
    local function isprime(n)
      if n < 2 then return false end
      if n < 4 then return true end
      if n % 2 == 0 then return false end
      for d = 3, math.floor(math.sqrt(n)), 2 do
        if n % d == 0 then return false end
      end
      return true
    end
    while true do
      local b = s:add(1, 1)                  -- the old value: this block is ours
      if b >= nblocks then break end
      local lo, hi, found = b * block, math.min(limit, (b + 1) * block), 0
      for n = lo, hi - 1 do
        if isprime(n) then found = found + 1 end
      end
      s:add(3, found)
      s:add(2, hi - lo)
    end
    if s:sub(4, 1) == 1 then s:notify(4) end -- the last one out wakes the main thread
  end, { workerData = shared, argv = { LIMIT, BLOCK, NBLOCKS }, name = "primes-" .. i })
end

local tty = os.execute("[ -t 1 ]") == true  -- a terminal: redraw in place
local WIDTH = 40
local t0 = loom.now()
local last = -1

local function draw(final)
  local done = v:load(2)
  local pct = math.floor(100 * done / LIMIT)
  if not tty and not final and pct - last < 25 then return end   -- a log: a few lines
  last = pct
  local fill = WIDTH * done // LIMIT
  local bar = ("#"):rep(fill) .. ("."):rep(WIDTH - fill)
  local line = ("[%s] %3d%%  %d primes so far  %.1f s"):format(bar, pct, v:load(3),
                                                             (loom.now() - t0) / 1000)
  io.stdout:write(tty and ("\r" .. line .. "\27[K") or (line .. "\n"))
  io.stdout:flush()
end

local ticker = loom.setInterval(draw, 50)

loom.async(function()
  while v:load(4) > 0 do
    v:waitAsync(4, v:load(4)):await()        -- settles when a worker leaves
  end
  ticker:close()
  draw(true)
  io.stdout:write(tty and "\n" or "")
  print(("%d primes below %d, counted by %d workers in %.2f s"):format(
    v:load(3), LIMIT, NWORKERS, (loom.now() - t0) / 1000))
end)

loom.run()
