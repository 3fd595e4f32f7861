-- pipeline.lua: a word-frequency pipeline over Channels and ports.
--
--   lua5.4 examples/pipeline.lua [lines]
--
-- The main thread pushes lines of text into a bounded Channel (it waits
-- when the workers fall behind); four workers pop lines, count their words
-- and push partial counts into a results Channel; a fifth worker, the
-- reporter, was handed one end of a MessageChannel in its workerData
-- (transferred) and answers "how far along?" questions over it while the
-- others work.  loom.select waits on the results and the reporter's port
-- at once.
local loom = require "loom"

local LINES = tonumber(arg and arg[1]) or 20000
local WORDS = { "loom", "lua", "thread", "port", "channel", "worker", "queue", "select" }

local lines = loom.Channel(256)       -- bounded: push waits when full
local partials = loom.Channel()
-- counters report progress into a named channel: the same one in every
-- thread, found by name (loom.Channel.named), never passed around

local function counter()
  local loom = require "loom"
  local d = loom.workerData
  local counts, n = {}, 0
  while true do
    local line = d.lines:pop()
    if line == nil then break end              -- closed and drained
    for w in line:gmatch("%a+") do counts[w] = (counts[w] or 0) + 1 end
    n = n + 1
    if n % 1000 == 0 then loom.Channel.named("pipeline.done"):push(1000) end
  end
  d.partials:push(counts)
end

local function reporter()
  local loom = require "loom"
  local port, total = loom.workerData.port, loom.workerData.total
  local seen = 0
  port:on("message", function(q)
    if q == "stop" then port:close(); return end
    while true do                               -- take what the counters said
      local k = loom.Channel.named("pipeline.done"):tryPop()
      if k == nil then break end
      seen = seen + k
    end
    port:postMessage(("%d of %d lines counted"):format(seen, total))
  end)
end

local workers = {}
for i = 1, 4 do
  workers[i] = loom.Worker(counter, { workerData = { lines = lines, partials = partials } })
end
local ch = loom.MessageChannel()
loom.Worker(reporter, { workerData = { port = ch.port2, total = LINES },
                                    transfer = { ch.port2 } })

local t0 = loom.now()
for i = 1, LINES do
  local a, b = WORDS[i % #WORDS + 1], WORDS[(i * 7) % #WORDS + 1]
  lines:push(("%s %s %s"):format(a, b, a))
  if i % (LINES // 4) == 0 then ch.port1:postMessage("how far?") end
end
lines:close()

local total, parts, answers = {}, 0, 0
while parts < #workers do
  local src, v = loom.select({ partials, ch.port1 }, 10000)
  if src == partials then
    parts = parts + 1
    for w, n in pairs(v) do total[w] = (total[w] or 0) + n end
  elseif src == ch.port1 then
    answers = answers + 1
    print("reporter: " .. v)
  else
    error("pipeline: nothing for 10 s (" .. tostring(v) .. ")")
  end
end
ch.port1:postMessage("stop")
for _, w in ipairs(workers) do w:on("error", print) end
loom.run()                                    -- every worker ends by itself

local words, sum = {}, 0
for w, n in pairs(total) do words[#words + 1] = w; sum = sum + n end
table.sort(words, function(x, y) return total[x] > total[y] or (total[x] == total[y] and x < y) end)
for i = 1, math.min(3, #words) do print(("%-8s %d"):format(words[i], total[words[i]])) end
print(("%d words in %d lines, counted by %d workers in %.0f ms"):format(sum, LINES, #workers,
      loom.now() - t0))
assert(sum == 3 * LINES, "every word counted once")
