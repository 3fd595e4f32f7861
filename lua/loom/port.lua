-- loom.port: MessagePort, an endpoint that queues what arrives before its
-- first 'message' listener, and MessageChannel, two entangled ports.  A
-- worker's parentPort is a MessagePort too (but cannot be transferred).
-- A port listed in a post's transfer list moves to the receiving thread
-- (core/port.c); the sender's object raises on every use afterwards.
local core = require "loom.core"
local events = require "loom.events"
local endpoint = require "loom.endpoint"

local setmetatable, getmetatable, error, type, select = setmetatable, getmetatable, error, type, select
local remove = table.remove

local M = {}

local MessagePort = events.class("loom.MessagePort", endpoint.Endpoint)
M.MessagePort = MessagePort

function M.wrap(port)
  local p = events.emitter(setmetatable({}, MessagePort))
  return endpoint.attach(p, port, true)
end

local function check(self, fname)
  if getmetatable(self) ~= MessagePort then
    error(("bad argument #1 to '%s' (loom.MessagePort expected, got %s)")
          :format(fname, type(self)), 3)
  end
  if self._gone then error(fname .. ": port was transferred", 3) end
end

function MessagePort:start()
  check(self, "start")
  return self
end

-- close(): posting fails from now on; what was posted to either end is
-- still delivered, then both ends get 'close'
function MessagePort:close()
  check(self, "close")
  if self._closed or self._closing then return end
  self._closing = true
  self._port:close()
  self:_sync()
end

function MessagePort:ref() check(self, "ref"); return endpoint.Endpoint.ref(self) end
function MessagePort:unref() check(self, "unref"); return endpoint.Endpoint.unref(self) end

-- a timeout: nil or math.huge (no limit), or >= 0 ms
local function checktimeout(t, fname)
  if t == nil then return nil end
  if type(t) ~= "number" then
    error(("bad argument #1 to '%s' (timeout in ms expected, got %s)"):format(fname, type(t)), 3)
  elseif t ~= t or t < 0 then
    error(("bad argument #1 to '%s' (timeout must be >= 0 ms, nil or math.huge)"):format(fname), 3)
  end
  return t
end

-- the next message, without the loop and without listeners: what the
-- queue holds first, then what the inbox has (core.receive)
local function pull(self, timeout, fname)
  local q = self._queue
  if q and #q > 0 then
    local v = remove(q, 1)
    if #q == 0 and not self._flushing then self._queue = nil; self:_sync() end
    return true, v
  end
  if self._closed then return false, "closed" end   -- its CLOSE was delivered
  return core.receive(self._port, timeout, fname)
end

-- port:receive([timeout_ms]) -> true, value | false, "timeout" | "closed"
function MessagePort:receive(timeout)
  check(self, "receive")
  return pull(self, checktimeout(timeout, "receive"), "receive")
end

-- loom.receiveMessageOnPort(port) -> true, value | false, "empty" | "closed"
function M.receiveMessageOnPort(port, ...)
  if getmetatable(port) ~= MessagePort then
    error(("bad argument #1 to 'receiveMessageOnPort' (loom.MessagePort expected, got %s)")
          :format(type(port)), 2)
  end
  if select("#", ...) > 0 then
    error("bad argument #2 to 'receiveMessageOnPort' (no timeout: use port:receive)", 2)
  end
  if port._gone then error("receiveMessageOnPort: port was transferred", 2) end
  return pull(port, 0, "receiveMessageOnPort")
end

-- called by core/port.c once this port has moved into a message
function MessagePort:_transferred()
  self._gone = true
  self:_detach()
end

-- loom.MessageChannel() -> { port1 = MessagePort, port2 = MessagePort }
local MessageChannel = { __name = "loom.MessageChannel" }
MessageChannel.__index = MessageChannel
M.MessageChannel = function()
  local a, b = core.channel()
  return setmetatable({ port1 = M.wrap(a), port2 = M.wrap(b) }, MessageChannel)
end

core.porthook(MessagePort, M.wrap)

core.boot("loom.port", debug.getinfo(1, "f").func)

return M
