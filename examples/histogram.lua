-- histogram.lua: a histogram filled by several workers at once in shared
-- memory.
--
--   lua5.4 examples/histogram.lua [samples] [workers]
--
-- Shows a SharedBuffer sent to workers by reference, a typed int32 view of
-- it, and atomic adds: every worker draws its share of pseudo-random
-- samples (a sum of four uniform draws, so the histogram is bell-shaped)
-- and counts each in its bin with v:add, which no other worker's add can
-- lose.  A second int32 slot counts the workers done; the main thread
-- waits on it with waitAsync (its loop stays free) and then checks the bins
-- against the same draws counted on one thread.
local loom = require "loom"

local SAMPLES = tonumber(arg and arg[1]) or 400000
local WORKERS = tonumber(arg and arg[2]) or loom.availableParallelism()
local BINS = 40

-- slot 1: workers done; slots 2 .. BINS + 1: the bins
local buf = loom.SharedBuffer(4 * (BINS + 1))
local v = buf:view("int32")

-- the draws of worker w (the same on any thread: a seeded LCG)
local function draws(w, n, bins, each)
  local x = w * 2654435761 % 4294967296
  for _ = 1, n do
    local s = 0
    for _ = 1, 4 do
      x = (x * 1664525 + 1013904223) % 4294967296
      s = s + x / 4294967296
    end
    each(math.floor(s / 4 * bins) + 1)   -- 1 .. bins
  end
end

local per = SAMPLES // WORKERS
for w = 1, WORKERS do
  loom.Worker(function(view, w, n, bins, drawfn)
    drawfn(w, n, bins, function(b) view:add(b + 1, 1) end)
    view:add(1, 1)                       -- this worker is done
    view:notify(1)
  end, { argv = { v, w, per, BINS, draws } })
end

-- wait (without blocking the loop) until every worker has counted
local all = loom.async(function()
  while v:load(1) < WORKERS do v:waitAsync(1, v:load(1), 1000):await() end
end)
all:await()

-- the same draws on one thread
local want = {}
for b = 1, BINS do want[b] = 0 end
for w = 1, WORKERS do draws(w, per, BINS, function(b) want[b] = want[b] + 1 end) end

local top, total = 0, 0
for b = 1, BINS do
  if v[b + 1] > top then top = v[b + 1] end
  total = total + v[b + 1]
end
for b = 1, BINS do
  local n = v[b + 1]
  if n > 0 then
    io.write(("%5.2f %s %d\n"):format((b - 0.5) / BINS * 4, ("#"):rep(math.ceil(n / top * 50)), n))
  end
  assert(n == want[b], ("bin %d: %d counted by the workers, %d on one thread"):format(b, n, want[b]))
end
print(("ok: %d samples in %d bins from %d workers, as one thread counts them"):format(total, BINS,
      WORKERS))
