-- loom.worker: the Worker class, the parent's side of a worker: an
-- endpoint on its end of the port pair made at spawn (the worker's
-- parentPort is the other end), plus the control messages only a worker
-- sends (online, error, exit).  Loaded on first use of loom.Worker.
local core = require "loom.core"
local events = require "loom.events"
local future = require "loom.future"
local endpoint = require "loom.endpoint"

local type, tostring, pairs, next, pcall, error, setmetatable, getmetatable =
      type, tostring, pairs, next, pcall, error, setmetatable, getmetatable
local argerror = events.argerror
local MSG = core.MSG

local M = {}

local Worker = events.class("loom.Worker", endpoint.Endpoint)
M.WorkerClass = Worker

local WORKER_OPTS = {
  workerData = true, name = true, eval = true, argv = true, transfer = true,
  resourceLimits = true, env = true,
}

local function optcheck(opts, key, want)
  local v = opts[key]
  if v ~= nil and type(v) ~= want then
    error(("loom.Worker: option '%s' must be a %s (got %s)"):format(key, want, type(v)), 3)
  end
  return v
end

local envmod = require "loom.env"

local spawn = core.spawn
function M.Worker(source, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then argerror("Worker", 2, "table", opts) end
  for k in pairs(opts) do
    if not WORKER_OPTS[k] then
      error(("loom.Worker: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  optcheck(opts, "name", "string")
  optcheck(opts, "argv", "table")
  optcheck(opts, "eval", "boolean")
  local limits = optcheck(opts, "resourceLimits", "table") or {}
  for k, v in pairs(limits) do
    if k ~= "stackSizeKb" and k ~= "maxMemoryMb" then
      error(("loom.Worker: unknown resourceLimits.%s"):format(tostring(k)), 2)
    elseif type(v) ~= "number" or v ~= v or v <= 0 then
      error(("loom.Worker: resourceLimits.%s must be a number > 0"):format(k), 2)
    elseif k == "stackSizeKb" and (math.type(v) ~= "integer" or v < 64 or v > 4194304) then
      error("loom.Worker: resourceLimits.stackSizeKb must be an integer from 64 to 4194304", 2)
    end
  end
  local transfer = optcheck(opts, "transfer", "table")
  local env = opts.env
  if env ~= nil and env ~= "share" and env ~= "clone" then
    error("loom.Worker: option 'env' must be \"clone\" or \"share\"", 2)
  end
  local kind
  if type(source) == "function" then
    kind = "function"
  elseif type(source) == "string" then
    kind = opts.eval and "eval" or "file"   -- a file is read by core.spawn
  else
    error("loom.Worker: source must be a file name, a code string or a function"
          .. " (got " .. type(source) .. ")", 2)
  end
  local ok, h, id, port = pcall(spawn, kind, source, {
    name = opts.name, workerData = opts.workerData, argv = opts.argv, transfer = transfer,
    stackSizeKb = limits.stackSizeKb, maxMemoryMb = limits.maxMemoryMb,
    env = next(envmod.table()) ~= nil and envmod.table() or nil,
  })
  if not ok then error(h, 2) end
  local w = events.emitter(setmetatable({ threadId = id, name = opts.name, _h = h,
                                          _alive = true, _strong = true }, Worker))
  return endpoint.attach(w, port, false)
end

local function checkworker(self, method)
  if getmetatable(self) ~= Worker then
    error(("bad argument #1 to '%s' (loom.Worker expected, got %s)")
          :format(method, type(self)), 3)
  end
end

-- a Worker keeps the loop alive until its exit, unless unref'd; the hold
-- is kept in C, which drops it when the EXIT comes in whatever the Lua side
-- manages to do then
function Worker:_keepsalive() return self._alive and self._ref end
function Worker:_hold(on) core.whold(self._h, on) end

-- its parentPort was closed: posts fail from now on (in C); no event
function Worker:_onclose() end

function Worker:_control(kind, v, aux)
  if kind == MSG.ONLINE then
    return self:emit("online")
  elseif kind == MSG.ERROR then
    local err, tb = v, nil
    if type(v) == "table" then err, tb = v[1], v[2] end   -- else: why it failed to decode
    -- the traceback says which worker it came from (an error passed up
    -- from a nested worker names its own in the message: the whole chain)
    tb = ("in worker %d%s\n%s"):format(self.threadId,
      self.name and (" '" .. self.name .. "'") or "", tostring(tb or "(no traceback)"))
    if not self:emit("error", err, tb) then
      if type(err) == "string" or err == nil then
        err = ("uncaught error in worker %d%s: %s\n%s"):format(self.threadId,
          self.name and (" '" .. self.name .. "'") or "", tostring(err),
          (tb:gsub("^[^\n]*\n", "")))
      end
      error(err, 0)
    end
  elseif kind == MSG.EXIT then
    -- the hold goes first, with no allocation before it: out of memory
    -- below may lose the event (raised from loom.run), never the exit
    self._alive = false
    self:_detach()
    self.exitCode = aux
    local f = self._exitf
    self._exitf = nil
    if f then future.settle(f, future.FULFILLED, aux) end
    return self:emit("exit", aux)
  end
end

-- terminate() -> Future of the exit code
function Worker:terminate()
  checkworker(self, "terminate")
  if not self._alive then
    local f = future.new()
    future.settle(f, future.FULFILLED, self.exitCode)
    return f
  end
  if not self._exitf then
    self._exitf = future.new()
    if not self._ref then   -- the awaited exit must keep the loop alive
      self._ref = true
      self:_sync()
    end
    local h = self._h
    h:terminate()
    -- arm again while it has not exited: an arming a weakly ordered CPU
    -- missed, or a worker that entered Lua from a raw C resume, is caught
    local again = core.timer(function() h:terminate() end, 20, true)
    again:unref()
    self._exitf:next(function() again:close() end)
  end
  return self._exitf
end

-- stats() -> messagesIn, messagesOut, queueLength, memory (bytes), cpu
-- (ms), eventLoopUtilization {idle, active, utilization} (core/worker.c)
function Worker:stats()
  checkworker(self, "stats")
  return self._h:stats()
end

function Worker:ref()
  checkworker(self, "ref")
  return endpoint.Endpoint.ref(self)
end

function Worker:unref()
  checkworker(self, "unref")
  return endpoint.Endpoint.unref(self)
end

function Worker:__tostring()
  checkworker(self, "__tostring")
  return ("loom.Worker %d%s (%s)"):format(self.threadId,
    self.name and (" '" .. self.name .. "'") or "", self._alive and "alive" or "exited")
end

core.boot("loom.worker", debug.getinfo(1, "f").func)

return M
