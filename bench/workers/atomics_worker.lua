-- Worker side of bench/atomics.lua (the twin of atomics_worker.js).  Shared
-- int32 view layout (1-based): [1] counter / turn word, [2] ready count,
-- [3] go flag.  Methods are looked up once (local add = ia.add), as a Lua
-- programmer writes a hot loop; each call is still one atomic operation.
local loom = require "loom"
local wd = loom.workerData
local mode, n, warm = wd.mode, wd.n, wd.warm
local ia = wd.sab:view("int32")
local CTR, READY, GO = 1, 2, 3
local now = loom.now
local add, load, store, wait, notify = ia.add, ia.load, ia.store, ia.wait, ia.notify

local function ready()
  add(ia, READY, 1)
  loom.parentPort:postMessage("ready")
  while load(ia, GO) == 0 do wait(ia, GO, 0) end
end

if mode == "add" then
  ready()
  local t0 = now()
  for _ = 1, n do add(ia, CTR, 1) end
  loom.parentPort:postMessage({ ms = now() - t0 })
elseif mode == "floor_add" then      -- bench/floor_atomics.lua: the same loop, no binding
  local fadd, addr = require "loomfloor".add, wd.addr
  ready()
  local t0 = now()
  for _ = 1, n do fadd(addr, CTR, 1) end
  loom.parentPort:postMessage({ ms = now() - t0 })
elseif mode == "ping" or mode == "pong" or mode == "spin_ping" or mode == "spin_pong" then
  -- turn word: 0 = ping's turn, 1 = pong's.  One round trip = ping -> pong -> ping.
  local spin = mode:find("^spin_") ~= nil
  local isping = mode:find("ping$") ~= nil
  local mine = isping and 0 or 1
  local other = 1 - mine
  local lat = {}
  ready()
  local tmeasure = 0
  for i = 0, warm + n - 1 do
    if isping and i == warm then tmeasure = now() end
    local t0 = isping and now() or 0
    if isping then
      store(ia, CTR, other)
      if not spin then notify(ia, CTR, 1) end
    end
    if spin then
      while load(ia, CTR) ~= mine do end
    else
      while load(ia, CTR) ~= mine do wait(ia, CTR, other) end
    end
    if not isping then
      store(ia, CTR, other)
      if not spin then notify(ia, CTR, 1) end
    elseif i >= warm then
      lat[i - warm + 1] = (now() - t0) * 1000
    end
  end
  if isping then
    loom.parentPort:postMessage({ ms = now() - tmeasure, lat = lat })
  else
    loom.parentPort:postMessage({ ms = 0 })
  end
elseif mode == "async_pong" then
  -- blocking responder for the main thread's waitAsync: turn 1 = the worker's
  ready()
  for _ = 1, warm + n do
    while load(ia, CTR) ~= 1 do wait(ia, CTR, 0) end
    store(ia, CTR, 0)
    notify(ia, CTR, 1)
  end
  loom.parentPort:postMessage({ ms = 0 })
else
  error("bad mode " .. tostring(mode))
end
