-- loom.endpoint: what a message can be addressed to in this thread.  The
-- base of every class that owns a port (MessagePort, Worker): its id, the
-- postMessage closure, what keeps the loop alive, the direct path to a
-- sole 'message' listener, the queue of messages that arrive before the
-- first listener, and the CLOSE that ends it.  C calls dispatch(id, kind,
-- value, aux) for everything but the direct path.
local core = require "loom.core"
local events = require "loom.events"

local MSG = core.MSG
local K_MESSAGE, K_MESSAGEERROR, K_CLOSE = MSG.MESSAGE, MSG.MESSAGEERROR, MSG.CLOSE

local M = {}

-- id -> endpoint object: weak, so that a port nobody holds is collected
-- with what it queued; 'strong' keeps those that keep the loop alive
-- (and Workers, while they run)
local endpoints = setmetatable({}, { __mode = "v" })
local strong = {}
local fast = setmetatable({}, { __mode = "v" })   -- id -> its sole 'message' listener, called from C
M.endpoints, M.fast, M.strong = endpoints, fast, strong

function M.dispatch(id, kind, v, aux)
  local ep = endpoints[id]
  if ep then return ep:_recv(kind, v, aux) end
end

local Endpoint = events.class("loom.Endpoint")
M.Endpoint = Endpoint

-- Make obj (an emitter) the owner of port.  opts.queue: messages that
-- arrive with no listener wait for the first one (ports); otherwise they
-- are emitted to nobody (a Worker, as Node's).
-- (A BroadcastChannel gives its own id and postMessage.)
function M.attach(obj, port, queue, id, post)
  id = id or port:id()
  obj._port, obj._id, obj._ref, obj._queues = port, id, true, queue
  obj._closed, obj._held = false, false   -- fields made now: _detach allocates nothing
  obj.postMessage = post or core.poster(port, obj)
  endpoints[id] = obj
  obj:_sync()
  return obj
end

-- Does this endpoint keep its thread's loop alive now?  (Ports: while
-- ref'd with a 'message' listener, or while a close is on its way.)
function Endpoint:_keepsalive()
  if self._closed then return false end
  if self._closing then return true end
  return self._ref and self:listenerCount("message") > 0
end

-- bring the hold and the direct path in line with the state.  'strong'
-- first: its new entry may raise (out of memory), and a hold taken before
-- it would then belong to a port that may be collected, and never go back
function Endpoint:_sync()
  local want = self:_keepsalive() and true or false
  strong[self._id] = not self._closed and (want or self._strong) and self or nil
  if want ~= (self._held or false) then
    self:_hold(want)
    self._held = want
  end
  local ls = self._ev.message
  fast[self._id] = not self._closed and not self._queue and ls and #ls == 1 and ls[1] or nil
end

function Endpoint:_hold(on) core.hold(on and 1 or -1) end

function Endpoint:_listening(event, n)
  if event ~= "message" then return end
  if n > 0 and self._queue and not self._flushing then
    self._flushing = true
    require("loom.timers").setImmediate(function()   -- as arrivals do: on a later turn
      local q = self._queue
      self._queue, self._flushing = nil, nil
      for i = 1, #q do self:_recv(K_MESSAGE, q[i]) end
      self:_sync()
    end)
  end
  self:_sync()
end

function Endpoint:_recv(kind, v, aux)
  if self._closed then return end
  if kind == K_MESSAGE then
    local ls = self._ev.message
    if ls and not self._queue then
      if #ls == 1 then return ls[1](v) end
      return self:emit("message", v)
    end
    if not self._queues then return end
    local q = self._queue
    if not q then q = {}; self._queue = q end
    q[#q + 1] = v
    self:_sync()
  elseif kind == K_MESSAGEERROR then
    return self:emit("messageerror", v)
  elseif kind == K_CLOSE then
    return self:_onclose()
  else
    return self:_control(kind, v, aux)
  end
end

function Endpoint:_control() end

-- this thread is done with the endpoint: no events, no hold
function Endpoint:_detach()
  self._closed = true
  self._queue = nil
  endpoints[self._id] = nil
  fast[self._id] = nil
  strong[self._id] = nil
  self:_sync()
end

function Endpoint:_onclose()
  self:_detach()
  self:emit("close")
end

function Endpoint:ref()
  self._ref = true
  self:_sync()
  return self
end

function Endpoint:unref()
  self._ref = false
  self:_sync()
  return self
end

core.boot("loom.endpoint", debug.getinfo(1, "f").func)

return M
