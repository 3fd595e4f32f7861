-- loom.events: on / once / off / emit, as Node's EventEmitter, and the
-- small class helper every loom type is made with.
local core = require "loom.core"

local type, error, setmetatable = type, error, setmetatable

local M = {}

-- luaL_argerror's wording; methods number their arguments after self,
-- as Lua does for a call with a colon
function M.argerror(fname, i, expected, got, level)
  error(("bad argument #%d to '%s' (%s expected, got %s)")
        :format(i, fname, expected, type(got)), (level or 2) + 1)
end
local argerror = M.argerror

local Emitter = {}
Emitter.__index = Emitter
M.Emitter = Emitter

-- the methods are shared by every emitter class, so what they expect is
-- an emitter (naming self's own class here would say "Future expected,
-- got table" for a Future)
local function checkself(self, fname)
  if type(self) ~= "table" or type(rawget(self, "_ev")) ~= "table" then
    error(("bad argument #1 to '%s' (loom emitter expected, got %s)"):format(fname, type(self)), 3)
  end
end

function Emitter:on(event, fn)
  checkself(self, "on")
  if type(event) ~= "string" then argerror("on", 1, "string", event) end
  if type(fn) ~= "function" then argerror("on", 2, "function", fn) end
  local ev = self._ev
  local ls = ev[event]
  if not ls then ls = {}; ev[event] = ls end
  ls[#ls + 1] = fn       -- appended in place: a running emit read #ls already
  if self._listening then self:_listening(event, #ls) end
  return self
end

function Emitter:once(event, fn)
  checkself(self, "once")
  if type(event) ~= "string" then argerror("once", 1, "string", event) end
  if type(fn) ~= "function" then argerror("once", 2, "function", fn) end
  local wrapper
  wrapper = function(...)
    self:off(event, wrapper)
    return fn(...)
  end
  self._once[wrapper] = fn
  return self:on(event, wrapper)
end

function Emitter:off(event, fn)
  checkself(self, "off")
  if type(event) ~= "string" then argerror("off", 1, "string", event) end
  if type(fn) ~= "function" then argerror("off", 2, "function", fn) end   -- (else nil
  local ls = self._ev[event]                      -- matched a plain listener's _once)
  if not ls then return self end
  for i = #ls, 1, -1 do
    local f = ls[i]
    if f == fn or self._once[f] == fn then
      local copy = table.move(ls, 1, #ls, 1, {})   -- emit may be iterating ls
      table.remove(copy, i)
      self._once[f] = nil
      self._ev[event] = #copy > 0 and copy or nil
      if self._listening then self:_listening(event, #copy) end
      break
    end
  end
  return self
end

function Emitter:listenerCount(event)
  checkself(self, "listenerCount")
  local ls = self._ev[event]
  return ls and #ls or 0
end

-- Listeners are called in order.  'on' appends in place and a numeric for
-- reads #ls once; 'off' replaces the list: either way adding or removing
-- during an emit affects the next emit only.
function Emitter:emit(event, ...)
  checkself(self, "emit")
  local ls = self._ev[event]
  if not ls then return false end
  for i = 1, #ls do ls[i](...) end
  return true
end

function M.emitter(obj)
  obj._ev = {}
  obj._once = setmetatable({}, { __mode = "k" })
  return obj
end

-- a class whose instances are emitters; 'base' (default Emitter) is its
-- __index fallback
function M.class(name, base)
  local c = setmetatable({}, { __index = base or Emitter })
  c.__index = c
  c.__name = name
  return c
end

core.boot("loom.events", debug.getinfo(1, "f").func)

return M
