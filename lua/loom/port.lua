-- loom.port: MessagePort, an endpoint that queues what arrives before its
-- first 'message' listener.  A worker's parentPort is one.
local core = require "loom.core"
local events = require "loom.events"
local endpoint = require "loom.endpoint"

local setmetatable, getmetatable, error, type = setmetatable, getmetatable, error, type

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

core.boot("loom.port", debug.getinfo(1, "f").func)

return M
