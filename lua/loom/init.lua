-- loom: Node.js-style workers for Lua 5.4.
-- The Lua half: events, futures, timers, the Worker class and parentPort.
-- What touches threads or must be fast lives in C (loom.core).
local core = require "loom.core"

local type, select, setmetatable, getmetatable, error, pcall, tostring =
      type, select, setmetatable, getmetatable, error, pcall, tostring
local co_create, co_resume, co_yield, co_running, co_status =
      coroutine.create, coroutine.resume, coroutine.yield, coroutine.running,
      coroutine.status
local unpack = table.unpack

local M = {
  _VERSION = "loom " .. core.version,
  isMainThread = core.isMainThread,
  threadId = core.threadId,
  clone = core.clone,
  registerClass = core.registerClass,
  now = core.now,
  availableParallelism = core.availableParallelism,
}

-- message kinds, as in core/loom_int.h
local K_MESSAGE, K_ONLINE, K_ERROR, K_EXIT = 1, 2, 3, 4

local function argerror(fname, i, expected, got)
  error(("bad argument #%d to '%s' (%s expected, got %s)")
        :format(i, fname, expected, type(got)), 3)
end

---------------------------------------------------------------------------
-- Events: on / once / off / emit, as Node's EventEmitter
---------------------------------------------------------------------------
local Emitter = {}
Emitter.__index = Emitter

function Emitter:on(event, fn)
  if type(event) ~= "string" then argerror("on", 1, "string", event) end
  if type(fn) ~= "function" then argerror("on", 2, "function", fn) end
  local ev = self._ev
  local ls = ev[event]
  if not ls then ls = {}; ev[event] = ls end
  ls[#ls + 1] = fn
  if self._listening then self:_listening(event, #ls) end
  return self
end

function Emitter:once(event, fn)
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
  local ls = self._ev[event]
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
  local ls = self._ev[event]
  return ls and #ls or 0
end

-- Listeners are called in order; a list is never changed in place, so
-- adding or removing during an emit affects the next emit only.
function Emitter:emit(event, ...)
  local ls = self._ev[event]
  if not ls then return false end
  for i = 1, #ls do ls[i](...) end
  return true
end

local function emitter(obj)
  obj._ev = {}
  obj._once = setmetatable({}, { __mode = "k" })
  return obj
end

local function class(name)
  local c = setmetatable({}, { __index = Emitter })
  c.__index = c
  c.__name = name
  return c
end

---------------------------------------------------------------------------
-- Futures.  Callbacks run as soon as the future settles, on that turn.
---------------------------------------------------------------------------
local Future = { __name = "loom.Future" }
Future.__index = Future
M.Future = Future

local PENDING, FULFILLED, REJECTED = 0, 1, 2

local function newfuture()
  return setmetatable({ _s = PENDING }, Future)
end

local function settle(f, state, v, tb)
  if f._s ~= PENDING then return false end
  f._s, f._v, f._tb = state, v, tb
  local cbs = f._cbs
  f._cbs = nil
  if cbs then for i = 1, #cbs do cbs[i](f) end end
  return true
end

function Future.resolve(f, v) return settle(f, FULFILLED, v) end
function Future.reject(f, e, tb) return settle(f, REJECTED, e, tb) end
function Future.new() return newfuture() end

local function isfuture(v) return getmetatable(v) == Future end
M.isFuture = isfuture

-- call cb(f) once f settles; a plain value counts as a settled future
local function whendone(f, cb)
  if not isfuture(f) then return cb({ _s = FULFILLED, _v = f }) end
  if f._s ~= PENDING then return cb(f) end
  local cbs = f._cbs
  if not cbs then cbs = {}; f._cbs = cbs end
  cbs[#cbs + 1] = cb
end

function Future:state()
  return self._s == PENDING and "pending" or self._s == FULFILLED and "fulfilled"
         or "rejected"
end

-- f:next(onValue, onError) -> Future of what the callback returns
function Future:next(onValue, onError)
  local out = newfuture()
  whendone(self, function(f)
    local h
    if f._s == FULFILLED then h = onValue else h = onError end
    if h == nil then return settle(out, f._s, f._v, f._tb) end
    local ok, r = pcall(h, f._v, f._tb)
    if not ok then return settle(out, REJECTED, r) end
    if isfuture(r) then
      whendone(r, function(g) settle(out, g._s, g._v, g._tb) end)
    else
      settle(out, FULFILLED, r)
    end
  end)
  return out
end

function Future:catch(onError) return self:next(nil, onError) end

local asyncs = setmetatable({}, { __mode = "k" })   -- coroutines of loom.async

-- f:await(): the value, or raise the error.  Inside loom.async it yields;
-- elsewhere it runs the event loop until the future settles.
function Future:await()
  if self._s == PENDING then
    local co = co_running()
    if asyncs[co] then
      co_yield(self)
    else
      repeat
        if not core.step() and self._s == PENDING then
          error("await: the future can never settle (the event loop is empty)", 2)
        end
      until self._s ~= PENDING
    end
  end
  if self._s == FULFILLED then return self._v end
  error(self._v, 0)
end

function M.async(fn, ...)
  if type(fn) ~= "function" then argerror("async", 1, "function", fn) end
  local out = newfuture()
  local co = co_create(fn)
  asyncs[co] = true
  local step
  local function resume(...)
    local ok, r = co_resume(co, ...)
    if not ok then
      asyncs[co] = nil
      return settle(out, REJECTED, r, debug.traceback(co))
    end
    if co_status(co) == "dead" then
      asyncs[co] = nil
      return settle(out, FULFILLED, r)
    end
    if not isfuture(r) then
      asyncs[co] = nil
      return settle(out, REJECTED, "loom.async: the coroutine yielded a non-future")
    end
    whendone(r, step)
  end
  step = function() return resume() end
  resume(...)
  return out
end

function M.all(list)
  if type(list) ~= "table" then argerror("all", 1, "table", list) end
  local out, n, left, vals = newfuture(), #list, #list, {}
  if n == 0 then settle(out, FULFILLED, vals) end
  for i = 1, n do
    whendone(list[i], function(f)
      if f._s == REJECTED then return settle(out, REJECTED, f._v, f._tb) end
      vals[i] = f._v
      left = left - 1
      if left == 0 then settle(out, FULFILLED, vals) end
    end)
  end
  return out
end

function M.race(list)
  if type(list) ~= "table" then argerror("race", 1, "table", list) end
  local out = newfuture()
  for i = 1, #list do
    whendone(list[i], function(f) settle(out, f._s, f._v, f._tb) end)
  end
  return out
end

---------------------------------------------------------------------------
-- Timers
---------------------------------------------------------------------------
local function bindargs(fn, ...)
  local n = select("#", ...)
  if n == 0 then return fn end
  local args = { ... }
  return function() return fn(unpack(args, 1, n)) end
end

-- as Node: a delay that is not a number >= 1 means 1 ms
local function delay(ms)
  ms = tonumber(ms)
  if not ms or ms ~= ms or ms < 1 then return 1 end
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
function Immediate:close() self._done = true end

function M.setImmediate(fn, ...)
  if type(fn) ~= "function" then argerror("setImmediate", 1, "function", fn) end
  local im = setmetatable({ _fn = bindargs(fn, ...) }, Immediate)
  if #immediates == 0 then core.immediates(true) end
  immediates[#immediates + 1] = im
  return im
end

local function runimmediates()
  local q = immediates
  immediates = {}
  for i = 1, #q do
    local im = q[i]
    if not im._done then
      im._done = true
      local ok, err = pcall(im._fn)
      if not ok then               -- keep the rest for the next turn
        for j = #q, i + 1, -1 do table.insert(immediates, 1, q[j]) end
        if #immediates == 0 then core.immediates(false) end
        error(err, 0)
      end
    end
  end
  if #immediates == 0 then core.immediates(false) end
end

local Timer = core.Timer
function M.clearTimeout(t)
  if t == nil then return end
  local mt = getmetatable(t)
  if mt ~= Timer and mt ~= Immediate then
    argerror("clearTimeout", 1, "timer", t)
  end
  t:close()
end
M.clearInterval = M.clearTimeout
M.clearImmediate = M.clearTimeout

function M.sleep(ms)
  if type(ms) ~= "number" then argerror("sleep", 1, "number", ms) end
  if ms ~= ms or ms < 0 then
    error("bad argument #1 to 'sleep' (time must be a number >= 0)", 2)
  end
  if asyncs[co_running()] then
    local f = newfuture()
    core.timer(function() settle(f, FULFILLED, true) end, ms, false)
    return f:await()
  end
  core.block(ms)
  return true
end

---------------------------------------------------------------------------
-- AbortController
---------------------------------------------------------------------------
local AbortSignal = class("loom.AbortSignal")
local AbortController = { __name = "loom.AbortController" }
AbortController.__index = AbortController

function M.AbortController()
  local signal = emitter(setmetatable({ aborted = false }, AbortSignal))
  return setmetatable({ signal = signal }, AbortController)
end

function AbortController:abort(reason)
  local s = self.signal
  if s.aborted then return end
  s.aborted, s.reason = true, reason == nil and "aborted" or reason
  s:emit("abort", s.reason)
end

---------------------------------------------------------------------------
-- Endpoints: whatever a message can be addressed to in this thread
---------------------------------------------------------------------------
local endpoints = {}
local fast = {}     -- target -> its sole 'message' listener, called from C

local function dispatch(id, kind, v, aux)
  local ep = endpoints[id]
  if ep then return ep:_recv(kind, v, aux) end
end

core.setdispatch(dispatch, runimmediates, fast)

-- environment data: this thread's copy, cloned into every later worker
local envdata = core.envData() or {}

function M.setEnvironmentData(k, v)
  if k == nil then argerror("setEnvironmentData", 1, "key", k) end
  envdata[k] = v
end

function M.getEnvironmentData(k) return envdata[k] end

---------------------------------------------------------------------------
-- Worker (parent side): lua/loom/worker.lua, loaded on first use
---------------------------------------------------------------------------
local internals = {
  emitter = emitter, class = class, argerror = argerror,
  newfuture = newfuture, settle = settle, FULFILLED = FULFILLED,
  endpoints = endpoints, fast = fast, envdata = envdata,
  K_MESSAGE = K_MESSAGE, K_ONLINE = K_ONLINE, K_ERROR = K_ERROR, K_EXIT = K_EXIT,
}

setmetatable(M, { __index = function(t, k)
  if (k == "Worker" or k == "WorkerClass") and internals then
    local install = require "loom.worker"
    install(t, internals)
    internals = nil
    return rawget(t, k)
  end
end })

---------------------------------------------------------------------------
-- parentPort (worker side)
---------------------------------------------------------------------------
local ParentPort = class("loom.MessagePort")

-- a 'message' listener keeps the worker alive while the port is ref'd;
-- messages that arrive before the first listener wait for it
function ParentPort:_listening(event, n)
  if event ~= "message" then return end
  local want = n > 0 and self._ref and not self._closed
  if want and not self._held then core.hold(1); self._held = true
  elseif not want and self._held then core.hold(-1); self._held = false end
  if n > 0 and self._queue and not self._flushing then
    self._flushing = true
    M.setImmediate(function()
      local q = self._queue
      self._queue, self._flushing = nil, nil
      for i = 1, #q do self:_recv(K_MESSAGE, q[i]) end
      self:_listening("message", self:listenerCount("message"))
    end)
  end
  -- the direct path only while nothing waits in the queue
  fast[0] = n == 1 and not self._closed and not self._queue and self._ev.message[1] or nil
end

function ParentPort:_recv(kind, v)
  if self._closed then return end
  if kind == K_MESSAGE then
    local ls = self._ev.message
    if ls and not self._queue then     -- earlier messages still wait: queue
      if #ls == 1 then return ls[1](v) end
      return self:emit("message", v)
    end
    local q = self._queue
    if not q then q = {}; self._queue = q end
    q[#q + 1] = v
  elseif kind == -K_MESSAGE then
    self:emit("messageerror", v)
  end
end

ParentPort.postMessage = core.ppost  -- (self, value [, transfer])

function ParentPort:ref()
  self._ref = true
  self:_listening("message", self:listenerCount("message"))
  return self
end

function ParentPort:unref()
  self._ref = false
  self:_listening("message", self:listenerCount("message"))
  return self
end

function ParentPort:start() return self end

function ParentPort:close()
  if self._closed then return end
  self._closed = true
  self:_listening("message", 0)
  self:emit("close")
end

if not M.isMainThread then
  M.parentPort = emitter(setmetatable({ _ref = true }, ParentPort))
  endpoints[0] = M.parentPort
  M.workerData = core.workerData()
  M.workerName = core.workerName()
end

---------------------------------------------------------------------------
-- The loop
---------------------------------------------------------------------------
M.run = core.run
M.poll = core.poll

function M.exit(code)
  if code ~= nil and math.type(code) ~= "integer" then argerror("exit", 1, "integer", code) end
  if M.isMainThread then os.exit(code or 0, true) end
  core.exit(code or 0)
end

core.boot("loom", debug.getinfo(1, "f").func)

return M
