-- loom: Node.js-style workers for Lua 5.4.
-- This module assembles the Lua half from its parts (events, futures,
-- timers, abort, endpoints, ports, workers); what touches threads or must
-- be fast lives in C (loom.core).  Parts a worker may never use load on
-- first use (timers, futures, channels, workers, the pool,
-- BroadcastChannel, tracing, cancellation, environment data, waitAsync's
-- Lua half).
local core = require "loom.core"
local events = require "loom.events"
local endpoint = require "loom.endpoint"
local port = require "loom.port"   -- teaches the cloner MessagePorts

local M = {
  _VERSION = "loom " .. core.version,
  isMainThread = core.isMainThread,
  threadId = core.threadId,
  clone = core.clone,
  registerClass = core.registerClass,
  now = core.now,
  availableParallelism = core.availableParallelism,
  -- ports
  MessagePort = port.MessagePort, MessageChannel = port.MessageChannel,
  receiveMessageOnPort = port.receiveMessageOnPort,
  -- the loop
  run = core.run, poll = core.poll,
}

core.setdispatch(endpoint.dispatch, endpoint.fast)   -- (loom.timers adds its immediates)

-- a value whose class this thread has not loaded yet (a Channel in a
-- message) loads its module first
local HOOKED = { ["loom.Channel"] = "loom.channel" }
core.lazyhooks(function(name)
  local mod = HOOKED[name]
  if mod then require(mod) end
end)

-- on first use: M[name] = the field of the module (the module itself when
-- no field is named).  A worker loads what it uses: each module costs its
-- start about 40 instructions per byte of bytecode.
local LAZY = {
  trace = { "loom.trace" },                    -- tracing: start, stop, on
  setEnvironmentData = { "loom.env", "set" },  -- environment data
  getEnvironmentData = { "loom.env", "get" },
}
local function lazily(mod, ...)                -- fields of the same name
  for i = 1, select("#", ...) do
    local name = select(i, ...)
    LAZY[name] = { mod, name }
  end
end
lazily("loom.timers", "setTimeout", "setInterval", "setImmediate", "clearTimeout",
       "clearInterval", "clearImmediate", "sleep")
lazily("loom.future", "Future", "isFuture", "async", "all", "race", "any", "allSettled",
       "onUnhandledRejection")
lazily("loom.channel", "Channel", "select")
lazily("loom.worker", "Worker", "WorkerClass")
lazily("loom.pool", "Pool")
lazily("loom.broadcast", "BroadcastChannel")
lazily("loom.abort", "AbortController", "AbortSignal")   -- cancellation
lazily("loom.core", "SharedBuffer", "freeze")   -- a worker opens them on first use

setmetatable(M, { __index = function(t, k)
  local where = LAZY[k]
  if where then
    local mod = require(where[1])
    local v = where[2] and mod[where[2]] or mod
    rawset(t, k, v)
    return v
  elseif k == "workerData" then   -- decoded on first use (classes first)
    return core.workerData()
  end
end })

if not M.isMainThread then
  M.parentPort = port.wrap(core.parentPort())
  M.workerName = core.workerName()
end

function M.exit(code)
  if code ~= nil and math.type(code) ~= "integer" then events.argerror("exit", 1, "integer", code) end
  if M.isMainThread then os.exit(code or 0, true) end
  core.exit(code or 0)
end

-- The main thread: the runtime keeps the files of the modules loaded on
-- first use for its workers (a worker finds them whatever package.path
-- says by then; each one's bytecode replaces it once the main state runs
-- it), and so does package.preload for this state: a script may change
-- package.path after require "loom" and still use all of loom
if M.isMainThread then
  local function keep(name)
    local path = package.searchpath(name, package.path)
    if not path then return end      -- (a host's embedded modules: its searcher)
    core.boot(name, path)
    if package.loaded[name] == nil and package.preload[name] == nil then
      package.preload[name] = function(...) return assert(loadfile(path, "t"))(...) end
    end
  end
  for _, where in pairs(LAZY) do keep(where[1]) end
  keep("loom.shared")                -- the one C loads: v:waitAsync requires it
end

-- LOOM_TRACE=path traces the whole program (the main thread's loom)
if M.isMainThread then
  local path = os.getenv("LOOM_TRACE")
  if path and path ~= "" then
    local ok, err = M.trace.start(path)
    if not ok then io.stderr:write("loom: LOOM_TRACE: ", tostring(err), "\n") end
  end
end

core.boot("loom", debug.getinfo(1, "f").func)

return M
