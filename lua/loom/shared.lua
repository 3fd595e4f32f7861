-- loom.shared: the Lua half of v:waitAsync.  C (core/shared.c) checks the
-- arguments, lists the waiter and calls make(h, id, ms) for a wait that
-- is pending, or make(nil, result) for one decided at once; a notify on
-- any thread sends the waiting thread a WAKE for id, which C hands to
-- onwake(id) on that thread's loop.  A pending wait holds the loop; its
-- timeout is a timer here, which settles "timed-out" only if the waiter
-- was still listed (else the WAKE is on its way and settles "ok").
local core = require "loom.core"
local future = require "loom.future"

local newfuture, settle, FULFILLED = future.new, future.settle, future.FULFILLED

local M = {}

local pending = {}   -- id -> { f = Future, h = waiter handle, t = timer }

local function finish(id, result)
  local p = pending[id]
  if not p then return end
  pending[id] = nil
  if p.t then p.t:close() end
  p.h:close()
  core.hold(-1)
  settle(p.f, FULFILLED, result)
end

local function make(h, id, ms)
  local f = newfuture()
  if h == nil then            -- decided at once: id is the result
    settle(f, FULFILLED, id)
    return f
  end
  local p = { f = f, h = h }
  pending[id] = p
  core.hold(1)
  if ms then
    p.t = core.timer(function()
      p.t = nil
      if h:cancel() then finish(id, "timed-out") end
    end, ms, false)
  end
  return f
end

core.sharedwaits(make, function(id) finish(id, "ok") end)

-- for the specs: waits of this thread still pending
function M.pending()
  local n = 0
  for _ in pairs(pending) do n = n + 1 end
  return n
end

core.boot("loom.shared", debug.getinfo(1, "f").func)

return M
