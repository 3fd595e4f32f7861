-- loom.timers: setTimeout, setInterval, setImmediate, their clear*
-- functions, and sleep.  The timers themselves live in C (loop.c); the
-- immediates queue runs from the loop's check phase.
local core = require "loom.core"
local events = require "loom.events"

local type, select, setmetatable, getmetatable, pcall, error =
      type, select, setmetatable, getmetatable, pcall, error
local unpack, tmove = table.unpack, table.move
local argerror = events.argerror

local M = {}

local function bindargs(fn, ...)
  local n = select("#", ...)
  if n == 0 then return fn end
  local args = { ... }
  return function() return fn(unpack(args, 1, n)) end
end

-- as Node: a delay that is not a number >= 1 means 1 ms; one beyond a
-- signed 32-bit count of milliseconds (about 24.8 days) means 1 ms too
local TIMEOUT_MAX = 2147483647
local function delay(ms)
  if type(ms) ~= "number" or ms ~= ms or ms < 1 or ms > TIMEOUT_MAX then return 1 end
  return ms
end

function M.setTimeout(fn, ms, ...)
  if type(fn) ~= "function" then argerror("setTimeout", 1, "function", fn) end
  return core.timer(bindargs(fn, ...), delay(ms), false)
end

function M.setInterval(fn, ms, ...)
  if type(fn) ~= "function" then argerror("setInterval", 1, "function", fn) end
  return core.timer(bindargs(fn, ...), delay(ms), true)
end

local immediates = {}            -- queue for the next check phase

local Immediate = { __name = "loom.Immediate" }
Immediate.__index = Immediate
function Immediate:close()
  if getmetatable(self) ~= Immediate then
    error(("bad argument #1 to 'close' (loom.Immediate expected, got %s)"):format(type(self)), 2)
  end
  self._done = true
end

function M.setImmediate(fn, ...)
  if type(fn) ~= "function" then argerror("setImmediate", 1, "function", fn) end
  local im = setmetatable({ _fn = bindargs(fn, ...) }, Immediate)
  if #immediates == 0 then core.immediates(true) end
  immediates[#immediates + 1] = im
  return im
end

-- the check phase: run what was queued before it (what these queue runs
-- on the next turn); after an error, the rest waits for the next turn
function M.runimmediates()
  local q = immediates
  immediates = {}
  for i = 1, #q do
    local im = q[i]
    if not im._done then
      im._done = true
      local ok, err = pcall(im._fn)
      if not ok then
        local later = immediates      -- queued by the callbacks run so far
        immediates = tmove(q, i + 1, #q, 1, {})
        tmove(later, 1, #later, #immediates + 1, immediates)
        if #immediates == 0 then core.immediates(false) end
        error(err, 0)
      end
    end
  end
  if #immediates == 0 then core.immediates(false) end
end

-- clearTimeout, clearInterval and clearImmediate clear any of the three
-- (as Node's); each names itself in its errors
local Timer = core.Timer
local function clearer(fname)
  return function(t)
    if t == nil then return end
    local mt = getmetatable(t)
    if mt ~= Timer and mt ~= Immediate then
      argerror(fname, 1, "timer", t)
    end
    t:close()
  end
end
M.clearTimeout = clearer("clearTimeout")
M.clearInterval = clearer("clearInterval")
M.clearImmediate = clearer("clearImmediate")

function M.sleep(ms)
  if type(ms) ~= "number" then argerror("sleep", 1, "number", ms) end
  if ms ~= ms or ms < 0 then
    error("bad argument #1 to 'sleep' (time must be a number >= 0)", 2)
  end
  local future = package.loaded["loom.future"]   -- loaded by any async function
  if future and future.inasync() then
    local f = future.new()
    core.timer(function() future.settle(f, future.FULFILLED, true) end, ms, false)
    return f:await()
  end
  core.block(ms)
  return true
end

core.setimmediates(M.runimmediates)   -- the loop's check phase runs them
core.boot("loom.timers", debug.getinfo(1, "f").func)

return M
