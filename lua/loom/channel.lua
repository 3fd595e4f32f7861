-- loom.channel: Channel, a multi-producer multi-consumer queue shared by
-- reference (core/channel.c), and loom.select over channels and ports.
-- A Channel object is a table over the queue's userdata ('_q'), whose
-- push, pop and tryPop are C closures; it is an event emitter: with a
-- 'message' listener, this thread's loop serves the queue (each value
-- still goes to exactly one consumer, in any thread).
local core = require "loom.core"
local events = require "loom.events"
local endpoint = require "loom.endpoint"
local timers = require "loom.timers"
local port = require "loom.port"

local setmetatable, getmetatable, error, type, tostring =
      setmetatable, getmetatable, error, type, tostring
local MSG_READY = core.MSG.READY
local SERVE_BATCH = 64          -- values per loop turn, then an immediate

local M = {}

local Channel = events.class("loom.Channel")
M.Channel = Channel

local function wrap(ref)
  local q = events.emitter(setmetatable({ _q = ref, _ref = true }, Channel))
  q.push, q.pop, q.tryPop = core.chan_bind(ref, q)
  return q
end

local function check(self, fname)
  if getmetatable(self) ~= Channel then
    error(("bad argument #1 to '%s' (loom.Channel expected, got %s)"):format(fname, type(self)), 3)
  end
end

local function checkcap(cap, fname, i)
  if cap ~= nil and (math.type(cap) ~= "integer" or cap < 1) then
    error(("bad argument #%d to '%s' (capacity must be an integer >= 1, got %s)")
          :format(i, fname, tostring(cap)), 3)
  end
end

-- loom.Channel([capacity]): unbounded without one
local function new(_, cap)
  checkcap(cap, "Channel", 1)
  return wrap(core.chan_new(cap))
end

-- loom.Channel.named(name [, capacity]): one per name in the runtime
function M.named(name, cap)
  if type(name) ~= "string" then
    error(("bad argument #1 to 'named' (string expected, got %s)"):format(type(name)), 2)
  end
  checkcap(cap, "named", 2)
  local ref, got = core.chan_named(name, cap)
  if cap and got ~= cap then
    error(("named: channel '%s' exists with capacity %s"):format(name,
          got == 0 and "unbounded" or tostring(got)), 2)
  end
  return wrap(ref)
end

setmetatable(Channel, { __index = getmetatable(Channel).__index, __call = new })
Channel.named = M.named

function Channel.__len(self) check(self, "__len"); return core.chan_len(self._q) end

function Channel:close()
  check(self, "close")
  core.chan_close(self._q)
end

-- {------------------------------------------------------------------
-- Serving from the loop
-- -------------------------------------------------------------------

function Channel:_sync()
  local want = self._sid ~= nil and self._ref
  if want ~= (self._held or false) then
    core.hold(want and 1 or -1)
    self._held = want
  end
  endpoint.strong[self._sid or 0] = want and self or nil
end

local function stopserving(self)
  local sid = self._sid
  if not sid then return end
  core.chan_serve(self._q, false)
  endpoint.endpoints[sid] = nil
  endpoint.strong[sid] = nil
  self._sid = nil
  self:_sync()
end

function Channel:_listening(event, n)
  if event ~= "message" then return end
  if n > 0 and not self._sid and not self._drained then
    local sid = core.chan_serve(self._q, true)
    self._sid = sid
    endpoint.endpoints[sid] = self
  elseif n == 0 then
    stopserving(self)
  end
  self:_sync()
end

-- a READY: values (or the close) are there
function Channel:_recv(kind)
  if kind ~= MSG_READY or not self._sid then return end
  for _ = 1, SERVE_BATCH do
    local v, why = core.chan_drain(self._q)
    if v == nil then
      if why == "closed" then
        self._drained = true
        stopserving(self)
        self:emit("close")
      end
      return
    end
    self:emit("message", v)
    if not self._sid then return end
  end
  timers.setImmediate(function() self:_recv(MSG_READY) end)   -- the loop turns
end

function Channel:ref() check(self, "ref"); self._ref = true; self:_sync(); return self end
function Channel:unref() check(self, "unref"); self._ref = false; self:_sync(); return self end

-- {------------------------------------------------------------------
-- select
-- -------------------------------------------------------------------

local rr = 0   -- where the next select starts looking: none starves

-- loom.select(list [, timeout_ms]) -> source, value | nil, "timeout"
function M.select(list, timeout)
  if type(list) ~= "table" then
    error(("bad argument #1 to 'select' (table of channels and ports expected, got %s)")
          :format(type(list)), 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("bad argument #2 to 'select' (timeout must be >= 0 ms, nil or math.huge)", 2)
  end
  local n = #list
  if n == 0 then error("bad argument #1 to 'select' (no sources)", 2) end
  local refs, ports = {}, false
  for i = 1, n do
    local s = list[i]
    local mt = getmetatable(s)
    if mt == Channel then refs[#refs + 1] = s._q
    elseif mt == port.MessagePort then
      if s._gone then error(("select: source %d: port was transferred"):format(i), 2) end
      ports = true
    else
      error(("bad argument #1 to 'select' (source %d: a Channel or MessagePort expected, got %s)")
            :format(i, type(s)), 2)
    end
  end
  if #refs > 64 then error("bad argument #1 to 'select' (at most 64 channels)", 2) end
  local deadline = timeout and timeout ~= math.huge and core.now() + timeout or nil
  while true do
    rr = rr + 1
    local closed = 0
    for k = 0, n - 1 do
      local s = list[(rr + k) % n + 1]
      if getmetatable(s) == Channel then
        local v, why = s:tryPop()
        if v ~= nil then return s, v end
        if why == "closed" then closed = closed + 1 end
      else
        local ok, v = port.receiveMessageOnPort(s)
        if ok then return s, v end
        if v == "closed" then closed = closed + 1 end
      end
    end
    if closed == n then return nil, "closed" end
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return nil, "timeout" end
    core.chan_wait(refs, ports, left)
  end
end

core.chanhook(Channel, wrap)

core.boot("loom.channel", debug.getinfo(1, "f").func)

return M
