-- lookup.lua: one frozen lookup table read by every worker.
--
--   lua5.4 examples/lookup.lua [entries] [workers]
--
-- Shows loom.freeze: the main thread builds a table once (here a price
-- list of items, each with a name, a price and a category), freezes it into
-- shared immutable memory, and sends it to every worker by reference: no
-- worker copies it, each reads only the entries it touches.  Every worker
-- prices its share of orders against it and sends back a total; the main
-- thread checks them against the same orders priced from its own table.
local loom = require "loom"

local ENTRIES = tonumber(arg and arg[1]) or 20000
local WORKERS = tonumber(arg and arg[2]) or loom.availableParallelism()
local ORDERS = 20000

local items = {}
for i = 1, ENTRIES do
  items[("item%05d"):format(i)] = { price = (i * 37) % 1000 + 1,
                                    category = ({ "tools", "books", "food" })[i % 3 + 1] }
end
local prices = loom.freeze(items)        -- once; items itself stays as it was

-- order i of worker w: three items and their counts (the same on any thread)
local function order(w, i, entries)
  local lines = {}
  for k = 1, 3 do
    local n = (w * 7919 + i * 104729 + k * 1299709) % entries + 1
    lines[k] = { ("item%05d"):format(n), (i + k) % 5 + 1 }
  end
  return lines
end

local function price(book, lines)
  local sum = 0
  for _, l in ipairs(lines) do
    local it = book[l[1]]
    local p = it.price
    if it.category == "food" then p = p * 0.9 end     -- food is 10% off
    sum = sum + p * l[2]
  end
  return sum
end

local totals, done = {}, 0
for w = 1, WORKERS do
  local worker = loom.Worker(function(book, w, n, entries, orderfn, pricefn)
    local sum = 0
    for i = 1, n do sum = sum + pricefn(book, orderfn(w, i, entries)) end
    require("loom").parentPort:postMessage(sum)
  end, { argv = { prices, w, ORDERS // WORKERS, ENTRIES, order, price } })
  worker:on("message", function(sum) totals[w], done = sum, done + 1 end)
end
loom.run()

assert(done == WORKERS, "a worker did not answer")
local grand = 0
for w = 1, WORKERS do
  local want = 0
  for i = 1, ORDERS // WORKERS do want = want + price(items, order(w, i, ENTRIES)) end
  assert(math.abs(totals[w] - want) < 1e-6, ("worker %d: %.2f, one thread: %.2f"):format(w, totals[w], want))
  grand = grand + totals[w]
end
assert(not pcall(function() prices["item00001"] = 1 end), "a frozen table is read-only")
print(("%d orders priced by %d workers from one frozen table of %d items: %.2f"):format(
      ORDERS // WORKERS * WORKERS, WORKERS, ENTRIES, grand))
print("ok: every worker's total is the one thread's")
