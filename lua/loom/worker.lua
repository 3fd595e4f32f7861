-- loom.worker: the Worker class, the parent's side of a worker.  Loaded on
-- first use of loom.Worker, so that workers which never spawn one do not
-- pay for it at start-up.  init.lua hands over the internals it shares.
local core = require "loom.core"

core.boot("loom.worker", debug.getinfo(1, "f").func)   -- for workers' require

return function(M, I)
  local emitter, class, argerror = I.emitter, I.class, I.argerror
  local newfuture, settle, FULFILLED = I.newfuture, I.settle, I.FULFILLED
  local endpoints, fast, envdata = I.endpoints, I.fast, I.envdata
  local K_MESSAGE, K_ONLINE, K_ERROR, K_EXIT = I.K_MESSAGE, I.K_ONLINE, I.K_ERROR, I.K_EXIT
  local type, tostring, pairs, next, pcall, error, setmetatable, getmetatable =
        type, tostring, pairs, next, pcall, error, setmetatable, getmetatable

  local Worker = class("loom.Worker")
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
      elseif k == "stackSizeKb" and (math.type(v) ~= "integer" or v < 64) then
        error("loom.Worker: resourceLimits.stackSizeKb must be an integer >= 64", 2)
      end
    end
    local transfer = optcheck(opts, "transfer", "table")
    if transfer and next(transfer) ~= nil then
      error("loom.Worker: transfer: nothing in this list can be transferred", 2)
    end
    local env = opts.env
    if env ~= nil and env ~= "share" and env ~= "clone" then
      error("loom.Worker: option 'env' must be \"clone\" or \"share\"", 2)
    end
    local kind
    if type(source) == "function" then
      kind = "function"
    elseif type(source) == "string" then
      if opts.eval then
        kind = "eval"
      else
        kind = "file"     -- read (and checked) by core.spawn
      end
    else
      error("loom.Worker: source must be a file name, a code string or a function"
            .. " (got " .. type(source) .. ")", 2)
    end
    local ok, h, id = pcall(spawn, kind, source, {
      name = opts.name, workerData = opts.workerData, argv = opts.argv,
      stackSizeKb = limits.stackSizeKb, maxMemoryMb = limits.maxMemoryMb, env = next(envdata) ~= nil and envdata or nil,
    })
    if not ok then error(h, 2) end
    local w = emitter(setmetatable({ threadId = id, name = opts.name, _h = h,
                                     _alive = true, _ref = true }, Worker))
    endpoints[id] = w
    core.hold(1)
    return w
  end

  local function checkworker(self, method)
    if getmetatable(self) ~= Worker then
      error(("bad argument #1 to '%s' (loom.Worker expected, got %s)")
            :format(method, type(self)), 3)
    end
  end

  function Worker:_listening(event, n)
    if event == "message" and self._alive then
      fast[self.threadId] = n == 1 and self._ev.message[1] or nil
    end
  end

  function Worker:_recv(kind, v, aux)
    if kind == K_MESSAGE then
      return self:emit("message", v)
    elseif kind == K_ONLINE then
      return self:emit("online")
    elseif kind == K_ERROR then
      if not self:emit("error", v[1], v[2]) then
        local err = v[1]
        if type(err) == "string" then
          err = ("uncaught error in worker %d%s: %s\n%s"):format(self.threadId,
            self.name and (" '" .. self.name .. "'") or "", err, v[2])
        end
        error(err, 0)
      end
    elseif kind == K_EXIT then
      self._alive = false
      self.exitCode = aux
      endpoints[self.threadId] = nil
      fast[self.threadId] = nil
      if self._ref then core.hold(-1) end
      local f = self._exitf
      self._exitf = nil
      if f then settle(f, FULFILLED, aux) end
      return self:emit("exit", aux)
    elseif kind == -K_MESSAGE then
      return self:emit("messageerror", v)
    end
  end

  Worker.postMessage = core.wpost      -- (self, value [, transfer])

  -- terminate() -> Future of the exit code
  function Worker:terminate()
    checkworker(self, "terminate")
    if not self._alive then
      local f = newfuture()
      settle(f, FULFILLED, self.exitCode)
      return f
    end
    if not self._exitf then
      self._exitf = newfuture()
      if not self._ref then   -- the awaited exit must keep the loop alive
        self._ref = true
        core.hold(1)
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

  function Worker:ref()
    checkworker(self, "ref")
    if self._alive and not self._ref then core.hold(1) end
    self._ref = true
    return self
  end

  function Worker:unref()
    checkworker(self, "unref")
    if self._alive and self._ref then core.hold(-1) end
    self._ref = false
    return self
  end

  function Worker:__tostring()
    return ("loom.Worker %d%s (%s)"):format(self.threadId,
      self.name and (" '" .. self.name .. "'") or "", self._alive and "alive" or "exited")
  end
end
