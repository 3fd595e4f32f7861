-- channels: ports between workers and Channels (the issue "Ports and
-- channels"); Node's side is bench/node/channels.js, run in the same
-- invocation by bench/run.lua.
--  - port pingpong: {seq, payload = "x"} round trips between two workers
--    over a MessageChannel; 10,000 warm-up, 100,000 measured.
--  - port one-way: worker A posts 1,000,000 {id, name = "item", tags =
--    {"a", "b"}} to worker B over a MessageChannel, then "end"; B replies
--    {count, sum}.  Time from the start signal to the reply.
--  - mpmc: the same 1,000,000 values through one Channel (capacity
--    65,536), 2 producer workers x 2 consumer workers; time from the
--    start signal until both consumers have drained the closed channel.
--  - fanout: one producer (the main thread) to 8 workers through one
--    Channel, 20,000 tasks of 10 us of work each (a busy wait on the
--    clock); efficiency = ideal time (tasks x 10 us / min(8, cpus)) over
--    the measured time.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, summarize, check = C.now, C.summarize, C.check

local WARM = C.count(10000, 1000)
local N = C.count(100000, 10000)
local M = C.count(1000000, 100000)
local TASKS = C.count(20000, 2000)

-- await one event of every worker (listening to all of them first)
local function all(ws, event)
  local fs = {}
  for i, w in ipairs(ws) do fs[i] = C.once(w, event) end
  for _, f in ipairs(fs) do f:await() end
end

local function pingpong()
  local ch = loom.MessageChannel()
  local out = loom.Channel()
  local echo = loom.Worker(function()
    local loom = require "loom"
    local p = loom.workerData
    p:on("message", function(m) p:postMessage(m) end)
    p:on("close", function() end)
  end, { workerData = ch.port2, transfer = { ch.port2 } })
  local pinger = loom.Worker(function()
    local loom = require "loom"
    local d = loom.workerData
    local p, now = d.port, loom.now
    local function run(count)
      local done = loom.Future.new()
      local lat, i, tSend = {}, 0, 0
      local t0 = now()
      local function onMsg(m)
        local t = now()
        if m.seq ~= i or m.payload ~= "x" then error("bad echo at " .. i) end
        lat[i + 1] = (t - tSend) * 1000
        i = i + 1
        if i < count then
          tSend = now()
          p:postMessage({ seq = i, payload = "x" })
        else
          p:off("message", onMsg)
          done:resolve({ total_ms = now() - t0, lat = lat })
        end
      end
      p:on("message", onMsg)
      tSend = now()
      p:postMessage({ seq = 0, payload = "x" })
      return done
    end
    run(d.warm):await()
    local r = run(d.n):await()
    d.out:push(r)
    p:close()
  end, { workerData = { port = ch.port1, warm = WARM, n = N, out = out }, transfer = { ch.port1 } })
  local r = out:pop()
  all({ pinger, echo }, "exit")
  local s = summarize(r.lat)
  check(s.n == N, "count")
  return { round_trips = N, mean_us = r.total_ms * 1000 / N, latency_us = s }
end

-- start n workers that each pop "go" from 'go' before their work
local function oneway()
  local ch, go, out = loom.MessageChannel(), loom.Channel(), loom.Channel()
  local cons = loom.Worker(function()
    local loom = require "loom"
    local d = loom.workerData
    local count, sum = 0, 0
    d.port:on("message", function(v)
      if v == "end" then d.out:push({ count = count, sum = sum }); d.port:close(); return end
      count, sum = count + 1, sum + v.id
    end)
  end, { workerData = { port = ch.port2, out = out }, transfer = { ch.port2 } })
  local prod = loom.Worker(function()
    local loom = require "loom"
    local d = loom.workerData
    d.go:pop()
    local post = d.port.postMessage
    for i = 0, d.m - 1 do post(d.port, { id = i, name = "item", tags = { "a", "b" } }) end
    post(d.port, "end")
  end, { workerData = { port = ch.port1, go = go, m = M }, transfer = { ch.port1 } })
  all({ cons, prod }, "online")
  local t0 = now()
  go:push("go")
  local r = out:pop()
  local t1 = now()
  check(r.count == M, "count " .. r.count)
  check(r.sum == M * (M - 1) // 2, "sum " .. r.sum)
  all({ prod, cons }, "exit")
  return { messages = M, total_ms = t1 - t0, msgs_per_s = M / ((t1 - t0) / 1000) }
end

local function mpmc()
  local q, go, out = loom.Channel(65536), loom.Channel(), loom.Channel()
  local ws = {}
  for k = 0, 1 do
    ws[#ws + 1] = loom.Worker(function()
      local loom = require "loom"
      local d = loom.workerData
      d.go:pop()
      local push = d.q.push
      for i = d.from, d.to do push(d.q, { id = i, name = "item", tags = { "a", "b" } }) end
      d.out:push("produced")
    end, { workerData = { q = q, go = go, out = out, from = k * (M // 2), to = (k + 1) * (M // 2) - 1 } })
    ws[#ws + 1] = loom.Worker(function()
      local loom = require "loom"
      local d = loom.workerData
      d.go:pop()
      local pop = d.q.pop
      local count, sum = 0, 0
      while true do
        local v = pop(d.q)
        if v == nil then break end
        count, sum = count + 1, sum + v.id
      end
      d.out:push({ count = count, sum = sum })
    end, { workerData = { q = q, go = go, out = out } })
  end
  all(ws, "online")
  local t0 = now()
  for _ = 1, 4 do go:push("go") end
  local count, sum, produced = 0, 0, 0
  while produced < 2 do
    local r = out:pop()
    if r == "produced" then
      produced = produced + 1
      if produced == 2 then q:close() end
    else
      count, sum = count + r.count, sum + r.sum
    end
  end
  for _ = 1, 2 do
    local r = out:pop()
    count, sum = count + r.count, sum + r.sum
  end
  local t1 = now()
  check(count == M, "count " .. count)
  check(sum == M * (M - 1) // 2, "sum " .. sum)
  all(ws, "exit")
  return { messages = M, producers = 2, consumers = 2, total_ms = t1 - t0,
           msgs_per_s = M / ((t1 - t0) / 1000) }
end

local function fanout()
  local q, out = loom.Channel(), loom.Channel()
  local ws = {}
  for _ = 1, 8 do
    ws[#ws + 1] = loom.Worker(function()
      local loom = require "loom"
      local d = loom.workerData
      local now, done = loom.now, 0
      while true do
        local t = d.q:pop()
        if t == nil then break end
        local stop = now() + 0.01                  -- 10 us of work
        while now() < stop do end
        done = done + 1
      end
      d.out:push(done)
    end, { workerData = { q = q, out = out } })
  end
  all(ws, "online")
  local t0 = now()
  for i = 1, TASKS do q:push(i) end
  q:close()
  local done = 0
  for _ = 1, 8 do done = done + out:pop() end
  local t1 = now()
  check(done == TASKS, "tasks " .. done)
  all(ws, "exit")
  local cpus = loom.availableParallelism()
  local ideal = TASKS * 0.01 / math.min(8, cpus)
  return { tasks = TASKS, task_us = 10, workers = 8, cpus = cpus, total_ms = t1 - t0,
           ideal_ms = ideal, efficiency = ideal / (t1 - t0) }
end

local out = {}
out.port_pingpong = pingpong()
out.port_oneway = oneway()
out.mpmc = mpmc()
out.fanout = fanout()
C.emit("channels", out)
