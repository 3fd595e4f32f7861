-- loom.broadcast: BroadcastChannel(name).  Every open BroadcastChannel of
-- that name in every thread of the runtime gets each message posted on
-- one of them, except the one that posted it (core/broadcast.c).  An
-- endpoint like a port, but what arrives with no listener is dropped, and
-- close() drops what was not delivered yet.
local core = require "loom.core"
local events = require "loom.events"
local endpoint = require "loom.endpoint"

local setmetatable, getmetatable, error, type = setmetatable, getmetatable, error, type

local M = {}

local BroadcastChannel = events.class("loom.BroadcastChannel", endpoint.Endpoint)
M.BroadcastChannel = BroadcastChannel

local function new(_, name)
  if type(name) ~= "string" then
    error(("bad argument #1 to 'BroadcastChannel' (string expected, got %s)"):format(type(name)), 2)
  end
  local ref, id = core.bc_open(name)
  local bc = events.emitter(setmetatable({ name = name }, BroadcastChannel))
  return endpoint.attach(bc, ref, false, id, core.bc_poster(ref, bc))
end

setmetatable(BroadcastChannel, { __index = getmetatable(BroadcastChannel).__index, __call = new })

local function check(self, fname)
  if getmetatable(self) ~= BroadcastChannel then
    error(("bad argument #1 to '%s' (loom.BroadcastChannel expected, got %s)")
          :format(fname, type(self)), 3)
  end
end

-- close(): leave the name; undelivered messages are dropped, posts fail
function BroadcastChannel:close()
  check(self, "close")
  if self._closed then return end
  core.bc_close(self._port)
  self:_detach()
end

function BroadcastChannel:ref() check(self, "ref"); return endpoint.Endpoint.ref(self) end
function BroadcastChannel:unref() check(self, "unref"); return endpoint.Endpoint.unref(self) end

core.boot("loom.broadcast", debug.getinfo(1, "f").func)

return M
