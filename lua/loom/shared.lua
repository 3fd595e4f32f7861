-- loom.shared: the Lua half of v:waitAsync, which C requires at a
-- thread's first waitAsync.  C (core/shared.c) checks the
-- arguments and calls make(h, id, ms) to make the Future of a wait (then
-- lists the waiter and holds the loop), or make(nil, result) for a wait
-- decided at once; a notify on any thread sends the waiting thread a WAKE
-- for id, which C hands to onwake(id) on that thread's loop.  The hold on
-- the loop belongs to the waiter handle h (C releases it when h closes),
-- so nothing that fails here for lack of memory can keep a loop alive.
-- The timeout is a repeating timer: it settles "timed-out" only if the
-- waiter was still listed (else the WAKE is on its way and settles "ok"),
-- and a run that fails is not its last.
local core = require "loom.core"
local newfuture, settle, FULFILLED   -- loom.future's, at the first wait

local function loadfuture()
  local future = require "loom.future"
  newfuture, settle, FULFILLED = future.new, future.settle, future.FULFILLED
end

local M = {}

local pending = {}   -- id -> { f = Future, h = waiter handle, t = timer | false }

-- idempotent: a WAKE whose handling failed comes again
local function finish(id, result)
  local p = pending[id]
  if not p then return end
  p.h:close()
  if p.t then
    p.t:close()
    p.t = false
  end
  pending[id] = nil
  settle(p.f, FULFILLED, result or "ok")
end

local function make(h, id, ms)
  if not newfuture then loadfuture() end
  local f = newfuture()
  if h == nil then            -- decided at once: id is the result
    settle(f, FULFILLED, id)
    return f
  end
  local p = { f = f, h = h, t = false }   -- (t's slot exists: storing it cannot fail)
  if ms then
    p.t = core.timer(function()
      if h:cancel() then return finish(id, "timed-out") end
      local t = p.t                         -- a notify came first
      p.t = false
      if t then t:close() end
    end, ms, true)
  end
  pending[id] = p
  return f
end

core.sharedwaits(make, finish)

-- for the specs: waits of this thread still pending
function M.pending()
  local n = 0
  for _ in pairs(pending) do n = n + 1 end
  return n
end

core.boot("loom.shared", debug.getinfo(1, "f").func)

return M
