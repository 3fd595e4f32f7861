-- c. throughput: one-way stream of small messages main -> worker (the loom
-- twin of bench/node/throughput.js).
-- The main thread posts N messages in a tight loop (no back-pressure: a post
-- never blocks, messages queue in the worker's mailbox), then posts nil
-- (Node's null).  The worker (workers/counter.lua) counts and sums ids and
-- replies {count, sum} on nil.
-- Time = from the first post to the reply's arrival.  msgs_per_s = N / time.
-- Variants: the integer i, and the table {id = i, name = "item", tags = {"a", "b"}}.
-- Each variant: one warm-up phase of 50,000 messages on the same worker,
-- then the measured 1,000,000.  ids run 0 .. N-1 as in the Node script.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local C = dofile(DIR .. "/lib/common.lua")
local now, check = C.now, C.check

local N = C.count(1000000, 100000)
local WARM = C.count(50000, 5000)

local function makeInt(i) return i end
local function makeObj(i) return { id = i, name = "item", tags = { "a", "b" } } end

local function phase(w, n, make)
  local reply = C.once(w, "message")
  local t1
  reply = reply:next(function(r) t1 = now(); return r end)
  local t0 = now()
  for i = 0, n - 1 do w:postMessage(make(i)) end
  w:postMessage(nil)
  local tPosted = now()
  local r = reply:await()
  check(r.count == n, ("count %s ~= %d"):format(tostring(r.count), n))
  check(r.sum == n * (n - 1) // 2, ("sum %s"):format(tostring(r.sum)))
  return {
    messages = n,
    total_ms = t1 - t0,
    msgs_per_s = n / ((t1 - t0) / 1000),
    post_loop_ms = tPosted - t0,
    post_loop_msgs_per_s = n / ((tPosted - t0) / 1000),
  }
end

local out = {}
for _, v in ipairs({ { "int", makeInt }, { "object", makeObj } }) do
  local name, make = v[1], v[2]
  local w = loom.Worker(DIR .. "/workers/counter.lua")
  C.once(w, "online"):await()
  phase(w, WARM, make)
  out[name] = phase(w, N, make)
  w:terminate():await()
end
C.emit("throughput", out)
