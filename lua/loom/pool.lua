-- loom.pool: Pool, a task pool over Workers (Piscina's model).
--
-- Dispatch: the main thread keeps the queue of waiting tasks and hands
-- them to each worker in batches ("chunks", one message each), keeping up
-- to cap = concurrentTasksPerWorker + prefetch tasks outstanding per
-- worker, so a worker starts its next task without waiting for the main
-- thread (no round trip per task).  prefetch adapts to the measured run
-- time: about PREFETCH_MS of work (none for tasks longer than that, up to
-- MAX_PREFETCH for tiny ones; 1 before any task has been measured).
-- Workers send results back in batches (every FLUSH_COUNT results, or
-- once FLUSH_MS (6 ms) have passed since the first unsent one started, or when
-- they run out of work).  Each worker runs its tasks in the order they
-- were handed to it, so the main thread knows which task a worker is
-- running: the oldest ones it has not reported (the first
-- concurrentTasksPerWorker), and which are only prefetched: when a worker
-- dies, its running tasks fail and its prefetched ones go back to the
-- front of the queue.  (Known limit: results a worker had not sent yet
-- when it was terminated are lost with it; those tasks go back to the
-- queue and run again.  os.exit in a task sends them first.)
--
-- Messages, main -> worker:  {RUN, n, id1, name1, arg1, ...}
--                            {ABORT, id, reason} | {EXIT}
--            worker -> main: {READY} | {FAILED, err}
--                            {DONE, n, id1, status1, value1, t0_1, t1_1, ...}
-- status: OK (value), ERR (value = {err, traceback}), SKIP (aborted
-- before it started).  t0/t1: loom.now() when the task started/ended in
-- the worker (loom.now is one clock per runtime).
-- {==================================================================
-- The worker's side (runs in each pool worker; first in
-- the file so that it has no upvalues but _ENV: it is sent as bytecode)
-- ==================================================================

local function workermain()
  local loom = require "loom"
  local wd = loom.workerData
  local fut = require "loom.future"
  local port = loom.parentPort
  local now, isFuture, whendone = loom.now, fut.isFuture, fut.whendone
  local receive = loom.receiveMessageOnPort
  local setmetatable, type, pcall, tostring = setmetatable, type, pcall, tostring
  local RUN, ABORT, EXIT, READY, FAILED, DONE = 1, 2, 3, 4, 5, 6
  local OK, ERR, SKIP = 1, 2, 3
  -- each batch wakes the main thread, whose turn (some 30-40 us on this
  -- VM) is taken from a worker's core: at 3 ms, 1 ms tasks lost 1% more
  -- to it (the prefetch below keeps 16 ms queued, so 6 ms never starves)
  local FLUSH_COUNT, FLUSH_MS = 32, 6
  local conc = wd.conc
  -- trace points (nothing while tracing is off): flow = tf + task id
  local core = require "loom.core"
  local tp, TR, tf, uid = core.trace_point, core.TRACE, wd.tf, wd.uid
  local T_STARTED, T_FINISHED, T_FAILED = TR["task.started"], TR["task.finished"],
                                          TR["task.failed"]

  -- the task module
  local ok, mod
  if wd.kind == "file" then
    ok, mod = pcall(dofile, wd.src)
  elseif wd.kind == "source" then
    local chunk, err = load(wd.src, "=(pool source)")
    if chunk then ok, mod = pcall(chunk) else ok, mod = false, err end
  else
    ok, mod = pcall(wd.src)
  end
  if ok and type(mod) ~= "function" and type(mod) ~= "table" then
    ok, mod = false, "the task module returned " .. type(mod) ..
                     " (a function or a table of functions expected)"
  end
  if not ok then
    port:postMessage({ FAILED, tostring(mod) })
    return
  end
  local tasks = type(mod) == "function" and { [true] = mod } or mod

  local q, qh, qt = {}, 1, 0        -- id, name, arg triples handed to us
  local aborted = {}                -- id -> reason, for tasks not finished
  local listeners = {}              -- id -> abort listeners of its signal
  local out, on, first = { DONE, 0 }, 0, nil   -- results not yet sent
  local active, pumping, exiting = 0, false, false
  local pump

  local function cloneable(v)
    local okc, err = pcall(loom.clone, v)
    return okc, err
  end

  local function flush()
    if on == 0 then return end
    out[2] = on
    local msg = out
    out, on, first = { DONE, 0 }, 0, nil
    if not pcall(port.postMessage, port, msg) then
      -- some value cannot be cloned: say which, for each result
      for i = 3, 2 + msg[2] * 5, 5 do
        local v = msg[i + 2]
        if msg[i + 1] == OK then
          local okc, err = cloneable(v)
          if not okc then
            msg[i + 1] = ERR
            msg[i + 2] = { (tostring(err):gsub("^loom%.clone: cannot clone value",
                                               "cannot clone the task's result")) }
          end
        elseif msg[i + 1] == ERR then
          if not cloneable(v[1]) then v[1] = tostring(v[1]) end
          if not cloneable(v[2]) then v[2] = nil end
        end
      end
      port:postMessage(msg)
    end
  end

  local function result(id, status, v, t0, t1, name)
    if status == OK then tp(T_FINISHED, tf + id, id, uid, name, nil, t0)
    elseif status == ERR then
      tp(T_FAILED, tf + id, id, uid, name, tostring(v[1]), t0)
    end
    out[on * 5 + 3], out[on * 5 + 4], out[on * 5 + 5], out[on * 5 + 6], out[on * 5 + 7] =
      id, status, v, t0, t1
    on = on + 1
    if aborted[id] ~= nil then aborted[id] = nil end     -- (a nil into a missing key
    if listeners[id] ~= nil then listeners[id] = nil end  --  is a slow store)
    if not first then first = t0 end
    if on >= FLUSH_COUNT or t1 - first >= FLUSH_MS then flush() end
  end

  -- each message from the pool
  local function handle(m)
    local k = m[1]
    if k == RUN then
      for i = 3, 2 + m[2] * 3, 3 do
        q[qt + 1], q[qt + 2], q[qt + 3] = m[i], m[i + 1], m[i + 2]
        qt = qt + 3
      end
    elseif k == ABORT then
      local id, reason = m[2], m[3]
      if aborted[id] == nil then
        aborted[id] = reason
        local ls = listeners[id]
        if ls then
          for i = 1, #ls do pcall(ls[i], reason) end
        end
      end
    elseif k == EXIT then
      exiting = true
    end
  end

  -- while a task runs, its signal looks at the port (without running
  -- the loop) for an abort
  local function poll()
    while true do
      local got, m = receive(port)
      if not got then return end
      handle(m)
    end
  end

  local Signal = {}
  local SignalMethods = {}
  Signal.__name = "loom.PoolSignal"
  Signal.__index = function(s, key)
    if key == "aborted" then
      poll()
      return aborted[s.id] ~= nil
    elseif key == "reason" then
      poll()
      return aborted[s.id]
    end
    return SignalMethods[key]
  end
  function SignalMethods:on(ev, fn)
    if ev == "abort" and type(fn) == "function" then
      local ls = listeners[self.id]
      if not ls then ls = {}; listeners[self.id] = ls end
      ls[#ls + 1] = fn
    end
    return self
  end
  SignalMethods.once = SignalMethods.on
  function SignalMethods:throwIfAborted()
    if self.aborted then error(aborted[self.id], 2) end
  end

  local onesig = setmetatable({ id = 0 }, Signal)

  -- a task's error names the task (name and id) and its worker (thread
  -- id and the pool's name), before the traceback
  local curname, curid
  local where = ("worker %d '%s'"):format(loom.threadId, loom.workerName or "pool")
  local function handler(e)
    return { e, debug.traceback(("in pool task '%s' (task %d, %s): %s"):format(curname,
                                curid, where, tostring(e)), 2), handled = true }
  end

  local function finished(id, t0, name)
    return function(f)
      active = active - 1
      local t1 = now()
      if f._s == fut.FULFILLED then result(id, OK, f._v, t0, t1, name)
      else result(id, ERR, { f._v, f._tb }, t0, t1, name) end
      pump()
    end
  end

  local lastpoll = now()
  pump = function()
    if pumping then return end
    pumping = true
    while active < conc and qh <= qt do
      local t0 = now()
      -- after a long task, aborts may wait on the port: look before the next
      if t0 - lastpoll > 0.2 then poll(); lastpoll = t0 end
      local id, name, arg = q[qh], q[qh + 1], q[qh + 2]
      q[qh], q[qh + 1], q[qh + 2] = nil, nil, nil
      qh = qh + 3
      if aborted[id] ~= nil then
        result(id, SKIP, nil, t0, t0)
      else
        local fn = tasks[name == nil and true or name]
        if fn == nil and name == nil then fn = tasks.default end
        if type(fn) ~= "function" then
          result(id, ERR, { name == nil and "run: the task module has no default task"
                            .. " (give a name)" or ("run: no task named '%s'"):format(name) },
                 t0, t0, name or "default")
        else
          curname, curid = name or "default", id
          tp(T_STARTED, tf + id, id, uid, curname)
          active = active + 1
          local sig
          if conc == 1 then sig = onesig; sig.id = id     -- one task at a time: one signal
          else sig = setmetatable({ id = id }, Signal) end
          local okr, r = xpcall(fn, handler, arg, sig)
          if okr and isFuture(r) and r._s == fut.PENDING then
            whendone(r, finished(id, t0, curname))
          else
            active = active - 1
            local t1 = now()
            if not okr then
              -- the handler itself failed (out of memory): the bare error
              if type(r) ~= "table" or r.handled ~= true then r = { r } end
              r.handled = nil
              result(id, ERR, r, t0, t1, curname)
            elseif isFuture(r) then
              if r._s == fut.FULFILLED then result(id, OK, r._v, t0, t1, curname)
              else
                r:catch(function() end)
                result(id, ERR, { r._v, r._tb }, t0, t1, curname)
              end
            else result(id, OK, r, t0, t1, curname) end
          end
        end
      end
    end
    if qh > qt then q, qh, qt = {}, 1, 0 end
    pumping = false
    flush()
    if exiting and active == 0 and qh > qt then loom.exit(0) end
  end

  -- a task that ends its worker: the results before it are sent first
  local exit = os.exit
  os.exit = function(...)   -- luacheck: ignore 122 (on purpose)
    pcall(flush)
    return exit(...)
  end

  port:on("message", function(m)
    handle(m)
    pump()
    if exiting and active == 0 and qh > qt then loom.exit(0) end
  end)
  port:postMessage({ READY })
end

-- }==================================================================

local core = require "loom.core"
local events = require "loom.events"
local future = require "loom.future"
local timers = require "loom.timers"
local abortmod = require "loom.abort"

local type, tostring, pairs, ipairs, error, setmetatable, getmetatable, pcall =
      type, tostring, pairs, ipairs, error, setmetatable, getmetatable, pcall
local floor, ceil, huge, mtype = math.floor, math.ceil, math.huge, math.type
local now = core.now
local tp, TR = core.trace_point, core.TRACE
local T_QUEUED, T_CANCELLED = TR["task.queued"], TR["task.cancelled"]
local settle, newfuture, FULFILLED, REJECTED = future.settle, future.new, future.FULFILLED,
                                               future.REJECTED
local Future, PENDING = future.Future, future.PENDING
local hold = future.hold

local M = {}

local RUN, ABORT, EXIT, READY, FAILED, DONE = 1, 2, 3, 4, 5, 6
local OK, ERR, SKIP = 1, 2, 3
local PREFETCH_MS, MAX_PREFETCH, OVERHEAD_MS = 16, 256, 0.002
local MAIN_MS = 0.004          -- the main thread's cost per task, about
local SAMPLES = 65536          -- run and wait times kept for the percentiles

local Pool = events.class("loom.Pool")
M.PoolClass = Pool


-- {==================================================================
-- Options
-- ==================================================================

local POOL_OPTS = {
  filename = true, source = true, fn = true, minThreads = true, maxThreads = true,
  idleTimeout = true, maxQueue = true, concurrentTasksPerWorker = true,
  resourceLimits = true, timeout = true, abortGrace = true, name = true,
}
local RUN_OPTS = { name = true, transfer = true, signal = true, timeout = true }

local function opterr(fname, msg, level)
  error(("bad argument #1 to '%s' (%s)"):format(fname, msg), level + 1)
end

local function checkint(opts, key, min, dflt)
  local v = opts[key]
  if v == nil then return dflt end
  if mtype(v) ~= "integer" or v < min then
    opterr("Pool", ("option '%s' must be an integer >= %d, got %s"):format(key, min,
           mtype(v) and tostring(v) or type(v)), 3)
  end
  return v
end

local function checkms(v, fname, what, level)
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v < 0 then
    opterr(fname, ("%s must be a number of ms >= 0 (or math.huge), got %s")
           :format(what, type(v) == "number" and tostring(v) or type(v)), level + 1)
  end
  if v == huge then return nil end
  return v
end

-- }==================================================================

-- {==================================================================
-- The pool (main thread side)
-- ==================================================================

local function check(self, fname)
  if getmetatable(self) ~= Pool then
    error(("bad argument #1 to '%s' (loom.Pool expected, got %s)"):format(fname, type(self)), 3)
  end
end

local flush, spawn, trystart, sync, onmessage, onworkerexit

-- guard(p, pcall(f, ...)): an error inside the pool's own bookkeeping,
-- run from the loop (out of memory, in practice), breaks the pool (every
-- pending task fails with that error, its workers stop) rather than let it
-- run on with half-updated state, and goes on to loom.run: what it cut
-- short (a callback of a Future settled then) is not lost silently.
local function guard(p, ok, err)
  if not ok then
    pcall(p._break, p, err)       -- (if this fails too, a later call goes on)
    error(err, 0)
  end
end

-- the Future of a task settles; its bookkeeping goes
local function finish(p, t, state, v, tb)
  if t._s ~= PENDING then return end     -- (a task is done when its Future is)
  t._arg = nil
  if t._transfer ~= nil then t._transfer = nil end
  if t._timer then t._timer:close(); t._timer = nil end
  if t._onabort then t._sig:off("abort", t._onabort); t._onabort = nil end
  if state == FULFILLED then p._completed = p._completed + 1
  else p._failed = p._failed + 1 end
  p._live[t._id] = nil
  settle(t, state, v, tb)
end

-- the tasks of W in the order they were handed to it
local function outstanding(W)
  local list = {}
  for _, t in pairs(W.tasks) do list[#list + 1] = t end
  table.sort(list, function(a, b) return a._id < b._id end)
  return list
end

local function requeue_front(p, list)
  local n = #list
  if n == 0 then return end
  local q, qh = p._q, p._qh
  for i = n, 1, -1 do
    qh = qh - 1
    q[qh] = list[i]
    list[i]._w = false
    p._np = p._np + 1
  end
  p._qh = qh
end

-- the grace period of an aborted task on W is over: terminate W if the
-- task is one it runs, or if W said nothing during the period: the tasks
-- before it may be done with their results held back (a worker sends them
-- in batches, not while a task runs), and then W is stuck in this one.
-- (Killed, W's unfinished tasks go back to the queue: none fails for it.)
-- Otherwise the task waits behind one that runs: look again later.
local function graceover(p, W, t)
  t._grace = nil
  if not W.alive or W.tasks[t._id] == nil then return end
  local before = 0
  for id in pairs(W.tasks) do if id < t._id then before = before + 1 end end
  if before < p._conc or W.heard < t._abortat then
    W.killed = true
    W.w:terminate()
  else
    local tm = core.timer(function() guard(p, pcall(graceover, p, W, t)) end, p._grace, false)
    tm:unref()
    t._grace, t._abortat = tm, now()      -- (W must speak within this period)
  end
end

local function abort(p, t, reason)
  if t._s ~= PENDING then return end
  tp(T_CANCELLED, p._tf + t._id, t._id, p._uid, t._name or "default", tostring(reason))
  local W = t._w
  if not W then         -- still queued: it never runs (left in the queue, skipped)
    p._np = p._np - 1
    t._removed = true
    finish(p, t, REJECTED, reason)
    if p._np == 0 then sync(p) end
  else
    finish(p, t, REJECTED, reason)
    if W.alive then
      t._abortat = now()
      pcall(W.w.postMessage, W.w, { ABORT, t._id, reason })
      local tm = core.timer(function() guard(p, pcall(graceover, p, W, t)) end, p._grace, false)
      tm:unref()
      t._grace = tm
    end
  end
end

local function onresults(p, W, m)
  local tasks, n, live = W.tasks, m[2], p._live
  local rt, wt = p._rt, p._wt
  local sum, cnt, gone = 0, 0, 0
  for i = 3, 2 + n * 5, 5 do
    local id = m[i]
    local t = tasks[id]
    if t then
      tasks[id] = nil
      gone = gone + 1
      if t._grace then t._grace:close(); t._grace = nil end
      local st = m[i + 1]
      if st ~= SKIP then
        local t0, t1 = m[i + 3], m[i + 4]
        local d = t1 - t0
        sum, cnt = sum + d, cnt + 1
        local w = t0 - t._tsub
        if w < 0 then w = 0 end
        local k = rt.n + 1          -- (a sample of each, inlined: the hot path)
        rt.n, rt.sum, rt[(k - 1) % SAMPLES + 1] = k, rt.sum + d, d
        k = wt.n + 1
        wt.n, wt.sum, wt[(k - 1) % SAMPLES + 1] = k, wt.sum + w, w
      end
      if t._s == PENDING then
        if st == OK and not t._timer and not t._onabort then   -- finish(), inlined
          t._arg = nil
          if t._transfer ~= nil then t._transfer = nil end
          p._completed = p._completed + 1
          live[id] = nil
          settle(t, FULFILLED, m[i + 2])
        elseif st == OK then finish(p, t, FULFILLED, m[i + 2])
        elseif st == ERR then
          local v = m[i + 2]
          finish(p, t, REJECTED, v[1], v[2])
        else finish(p, t, REJECTED, "aborted") end
      end
    end
  end
  W.n, p._out = W.n - gone, p._out - gone   -- (settles are held: nobody looked meanwhile)
  if cnt > 0 then
    p._busy = p._busy + sum
    local mean = sum / cnt
    p._ewma = p._ewma and p._ewma * 0.7 + mean * 0.3 or mean
  end
  if W.n == 0 then W.idle0 = now() end
  flush(p)
end

-- a worker's exit: what it held
local function onexit(p, W, code)
  W.alive = false
  if W.ready then p._life = p._life + (now() - W.born) end
  for i, x in ipairs(p._workers) do
    if x == W then table.remove(p._workers, i); break end
  end
  if W.idletimer then W.idletimer:close(); W.idletimer = nil end
  local list = outstanding(W)
  W.tasks, W.n = {}, 0
  p._out = p._out - #list
  if #list > 0 then
    local why = W.err
    if why == nil then
      why = W.killed and "the worker was terminated (an aborted task did not stop)"
            or ("the pool worker exited with code %s while running the task"):format(tostring(code))
    end
    local rest = {}
    for i, t in ipairs(list) do
      if t._grace then t._grace:close(); t._grace = nil end
      local done = t._s ~= PENDING
      if (W.killed and done) or (not W.killed and i <= p._conc) then
        finish(p, t, REJECTED, why, W.errtb)
      elseif not done then
        rest[#rest + 1] = t
      end
    end
    requeue_front(p, rest)
  end
  if not p._destroyed and not p._broken then
    local have = #p._workers + p._spawning
    if (have < p._min and not p._closing) or (have == 0 and p._np > 0) then trystart(p) end
  end
  flush(p)
end

local function retire(_, W)
  W.retiring, W.expected = true, true
  pcall(W.w.postMessage, W.w, { EXIT })
end

spawn = function(p)
  p._spawning = p._spawning + 1
  -- W.starting: counted in p._spawning until READY, FAILED or its exit
  local W = { tasks = {}, n = 0, alive = true, ready = false, starting = true, heard = 0 }
  local ok, w = pcall(require("loom.worker").Worker, workermain, {
    name = p._name, workerData = { kind = p._kind, src = p._src, conc = p._conc,
                                   tf = p._tf, uid = p._uid },
    resourceLimits = p._limits,
  })
  if not ok then
    p._spawning = p._spawning - 1
    error(w, 0)
  end
  W.w = w
  p._all[#p._all + 1] = W
  if not p._active then w:unref() end
  w:on("message", function(m) guard(p, hold(onmessage, p, W, m)) end)
  w:on("error", function(e, tb)
    W.err, W.errtb = e, tb
  end)
  w:on("exit", function(code) guard(p, pcall(onworkerexit, p, W, code)) end)
  return W
end

onmessage = function(p, W, m)
  local k = m[1]
  W.heard = now()
  if k == DONE then return onresults(p, W, m)
  elseif k == READY then
    W.starting = false
    p._spawning = p._spawning - 1
    W.ready, W.born, W.idle0 = true, now(), now()
    p._workers[#p._workers + 1] = W
    if p._destroyed or p._broken then retire(p, W) end
    flush(p)
  elseif k == FAILED then
    W.starting = false
    p._spawning = p._spawning - 1
    W.expected = true
    p:_break("loom.Pool: the task module failed in a worker: " .. tostring(m[2]))
  end
end

onworkerexit = function(p, W, code)
  if W.starting then W.starting = false; p._spawning = p._spawning - 1 end
  if W.ready then onexit(p, W, code)
  else
    W.alive = false
    if not W.expected and not p._destroyed then
      p:_break(("loom.Pool: a worker failed to start (exit code %s): %s")
               :format(tostring(code), tostring(W.err)))
    end
    flush(p)
  end
  -- W leaves p._all last: should the above fail, _break still sees its tasks
  for i, x in ipairs(p._all) do
    if x == W then table.remove(p._all, i); break end
  end
  p:_checkclosed()
end

-- spawn from the loop (a replacement, more threads): a worker that cannot
-- be made (no memory, no thread) breaks the pool instead of raising from
-- the loop
trystart = function(p)
  local ok, err = pcall(spawn, p)
  if not ok then p:_break("loom.Pool: cannot start a worker: " .. tostring(err)) end
end

-- keep the loop alive (ref the workers) while the pool has work, or is
-- closing; otherwise an idle pool lets loom.run() return
sync = function(p)
  local want = p._np > 0 or p._out > 0 or (p._closef ~= nil and #p._all > 0)
  if want ~= p._active then
    p._active = want
    for _, W in ipairs(p._all) do
      if W.alive then if want then W.w:ref() else W.w:unref() end end
    end
  end
end

local function prefetch(p)
  local m = p._ewma
  if not m then return 1 end
  -- tasks longer than PREFETCH_MS get none: a round trip is small next to
  -- them, and a task prefetched by a busy worker could be waiting at the
  -- end while another worker has nothing to do
  local k = floor(PREFETCH_MS / (m + OVERHEAD_MS))
  if k > MAX_PREFETCH then return MAX_PREFETCH end
  return k
end


-- idle workers above minThreads leave after idleTimeout
local function idlecheck(p, W)
  if W.idletimer or W.retiring or not W.alive then return end
  if p._idle == nil then return end
  local tm
  tm = core.timer(function()
    W.idletimer = nil
    if W.n == 0 and W.alive and not W.retiring then
      local staying = 0
      for _, x in ipairs(p._workers) do if not x.retiring then staying = staying + 1 end end
      if staying > p._min then guard(p, pcall(retire, p, W)) end
    end
  end, p._idle, false)
  tm:unref()
  W.idletimer = tm
end

-- (from an immediate: an error in a listener is the user's, raised from
-- loom.run, not the pool's)
local function emitdrain(p) p:emit("drain") end

-- hand queued tasks to the workers that have room
local function send(p, W, k)
  local q, qh, qt = p._q, p._qh, p._qt
  local msg, n, transfer = { RUN, 0 }, 0, nil
  local sent = {}
  local at = qh
  -- the message first, the queue after: out of memory while the message
  -- grows leaves the queue as it was
  while n < k and at <= qt do
    local t = q[at]
    if t._transfer and n > 0 then break end   -- a task with a transfer list goes alone
    at = at + 1
    if not t._removed then
      local j = n * 3 + 3
      msg[j], msg[j + 1], msg[j + 2] = t._id, t._name, t._arg
      n = n + 1
      sent[n] = t
      if t._transfer then transfer = t._transfer; break end
    end
  end
  for x = qh, at - 1 do q[x] = nil end
  qh = at
  p._qh = qh
  if qh > qt then p._q, p._qh, p._qt = {}, 1, 0 end
  if n == 0 then return end
  msg[2] = n
  p._np = p._np - n
  local ok, posted = pcall(W.w.postMessage, W.w, msg, transfer)
  if ok and posted == false then ok = false end       -- the worker has exited
  if not ok then
    -- one by one, to find what cannot be cloned (or the worker is gone)
    for i = 1, n do
      local t = sent[i]
      local ok1, e1 = pcall(W.w.postMessage, W.w, { RUN, 1, t._id, t._name, t._arg }, t._transfer)
      if ok1 and e1 ~= false then
        W.tasks[t._id], W.n, p._out = t, W.n + 1, p._out + 1
        t._w = W
      elseif not ok1 then
        finish(p, t, REJECTED, (tostring(e1):gsub("^postMessage: cannot clone msg%[5%]",
                                                  "run: cannot clone the task")))
      else
        requeue_front(p, { t })
      end
    end
    return
  end
  local tasks = W.tasks
  for i = 1, n do
    local t = sent[i]
    tasks[t._id] = t
    t._w = W
  end
  W.n = W.n + n
  p._out = p._out + n
  if W.idletimer then W.idletimer:close(); W.idletimer = nil end
end

flush = function(p)
  p._flushq = false
  if p._np > 0 then
    local cap = p._conc + prefetch(p)
    local ready = {}
    for _, W in ipairs(p._workers) do
      if W.alive and not W.retiring and W.n < cap then ready[#ready + 1] = W end
    end
    local nr = #ready
    -- Tiny tasks: feed only as many workers as the main thread can keep
    -- busy (a task costs it about MAIN_MS to hand out and settle).  More
    -- would only take CPU from the main thread, which is then the
    -- bottleneck; the busiest workers are kept, so the rest sleep.
    local m = p._ewma
    if m and nr > 1 then
      local feed = ceil((m + OVERHEAD_MS) / MAIN_MS)
      if feed < nr then
        table.sort(ready, function(a, b) return a.n > b.n end)
        for i = nr, feed + 1, -1 do ready[i] = nil end
        nr = feed
      end
    end
    if nr > 0 then
      local per = ceil(p._np / nr)
      for i = 1, nr do
        local W = ready[i]
        if p._np <= 0 then break end
        local k = cap - W.n
        if k > per then k = per end
        send(p, W, k)
      end
      if p._np == 0 then timers.setImmediate(emitdrain, p) end
    end
    -- more threads when every one is busy
    if p._np > 0 and not p._destroyed and not p._broken then
      local busy = true
      for _, W in ipairs(p._workers) do
        if W.n < p._conc and not W.retiring then busy = false; break end
      end
      if busy and #p._workers + p._spawning < p._max and p._spawning * p._conc < p._np then
        trystart(p)
      end
    end
  end
  for _, W in ipairs(p._workers) do
    if W.n == 0 and not W.retiring then idlecheck(p, W) end
  end
  sync(p)
  if p._closef and p._np == 0 and p._out == 0 then
    for _, W in ipairs(p._all) do
      if W.alive and not W.retiring then retire(p, W) end
    end
  end
end

local function flushnow(p) guard(p, pcall(flush, p)) end

local function schedule(p)
  if not p._flushq then
    timers.setImmediate(flushnow, p)   -- (may raise: then no flush is pending)
    p._flushq = true
  end
end

function Pool:_checkclosed()
  local f = self._closef
  if f and #self._all == 0 and f:state() == "pending" then
    sync(self)
    settle(f, FULFILLED, true)
  end
end

-- every task fails with 'why'; no task runs from now on.  Every pending
-- task is in p._live (from run to finish), wherever the bookkeeping that
-- failed had left it (a queue, a worker's list, a local variable)
function Pool:_failall(why)
  local list = {}
  for _, t in pairs(self._live) do list[#list + 1] = t end
  table.sort(list, function(a, b) return a._id < b._id end)
  self._q, self._qh, self._qt, self._np = {}, 1, 0, 0
  for _, W in ipairs(self._all) do W.tasks, W.n = {}, 0 end
  self._out = 0
  for _, t in ipairs(list) do
    if t._grace then t._grace:close(); t._grace = nil end
    finish(self, t, REJECTED, why)
  end
end

-- (may be called again after it raised half way: it goes on)
function Pool:_break(why)
  if self._brokedone then return end
  self._broken = self._broken or why
  self:_failall(self._broken)
  for _, W in ipairs(self._all) do
    if W.alive then W.expected = true; W.retiring = true; W.w:terminate() end
  end
  sync(self)
  self._brokedone = true
  self:_checkclosed()
end

function M.Pool(opts)
  if type(opts) ~= "table" then events.argerror("Pool", 1, "table of options", opts) end
  for k in pairs(opts) do
    if not POOL_OPTS[k] then opterr("Pool", ("unknown option '%s'"):format(tostring(k)), 2) end
  end
  local kind, src
  local given = (opts.filename ~= nil and 1 or 0) + (opts.source ~= nil and 1 or 0)
                + (opts.fn ~= nil and 1 or 0)
  if given ~= 1 then
    opterr("Pool", "exactly one of the options 'filename', 'source' and 'fn' expected", 2)
  end
  if opts.filename ~= nil then
    if type(opts.filename) ~= "string" then
      opterr("Pool", "option 'filename' must be a string, got " .. type(opts.filename), 2)
    end
    local chunk, err = loadfile(opts.filename)
    if not chunk then
      error(("Pool: cannot load the task file: %s"):format(tostring(err)), 2)
    end
    kind, src = "file", opts.filename
  elseif opts.source ~= nil then
    if type(opts.source) ~= "string" then
      opterr("Pool", "option 'source' must be a string, got " .. type(opts.source), 2)
    end
    local chunk, err = load(opts.source, "=(pool source)")
    if not chunk then error(("Pool: cannot load the task source: %s"):format(tostring(err)), 2) end
    kind, src = "source", opts.source
  else
    if type(opts.fn) ~= "function" then
      opterr("Pool", "option 'fn' must be a function, got " .. type(opts.fn), 2)
    end
    kind, src = "function", opts.fn
    local ok, err = pcall(core.clone, opts.fn)      -- its upvalues must be cloneable
    if not ok then
      error((tostring(err):gsub("^loom%.clone: cannot clone value", "Pool: cannot clone option 'fn'")), 2)
    end
  end
  local maxT = checkint(opts, "maxThreads", 1, nil)
  local minT = checkint(opts, "minThreads", 0, nil)
  if maxT == nil then maxT = core.availableParallelism() end
  if minT == nil then minT = maxT < 1 and maxT or 1 end
  if minT > maxT then
    if opts.maxThreads ~= nil then
      opterr("Pool", ("minThreads (%d) > maxThreads (%d)"):format(minT, maxT), 2)
    end
    maxT = minT
  end
  local conc = checkint(opts, "concurrentTasksPerWorker", 1, 1)
  local idle = checkms(opts.idleTimeout, "Pool", "option 'idleTimeout'", 2)
  if opts.idleTimeout == nil then idle = 1000 end
  local timeout = checkms(opts.timeout, "Pool", "option 'timeout'", 2)
  local grace = checkms(opts.abortGrace, "Pool", "option 'abortGrace'", 2) or 1000
  local maxQ = opts.maxQueue
  if maxQ == nil then maxQ = huge
  elseif maxQ == "auto" then maxQ = maxT * maxT
  elseif maxQ ~= huge and (mtype(maxQ) ~= "integer" or maxQ < 0) then
    opterr("Pool", "option 'maxQueue' must be \"auto\", an integer >= 0 or math.huge", 2)
  end
  if opts.resourceLimits ~= nil and type(opts.resourceLimits) ~= "table" then
    opterr("Pool", "option 'resourceLimits' must be a table, got " .. type(opts.resourceLimits), 2)
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then
    opterr("Pool", "option 'name' must be a string, got " .. type(opts.name), 2)
  end
  local p = events.emitter(setmetatable({
    _kind = kind, _src = src, _min = minT, _max = maxT, _conc = conc, _idle = idle,
    _timeout = timeout, _grace = grace, _maxq = maxQ, _limits = opts.resourceLimits,
    _name = opts.name or "pool",
    _q = {}, _qh = 1, _qt = 0, _np = 0, _out = 0, _id = 0, _live = {},
    _workers = {}, _all = {}, _spawning = 0, _active = false,
    _completed = 0, _failed = 0, _busy = 0, _life = 0, _t0 = now(),
    _rt = { n = 0, sum = 0 }, _wt = { n = 0, sum = 0 },
  }, Pool))
  p._uid = core.trace_uid()          -- the pool's flows: _tf + task id
  p._tf = p._uid << 32
  -- the first worker checks the options Worker checks (resourceLimits)
  if minT > 0 then
    local ok, err = pcall(spawn, p)
    if not ok then error((tostring(err):gsub("^loom%.Worker:", "Pool:")), 2) end
    for _ = 2, minT do spawn(p) end
  elseif opts.resourceLimits ~= nil then
    local ok, err = pcall(spawn, p)
    if not ok then error((tostring(err):gsub("^loom%.Worker:", "Pool:")), 2) end
  end
  return p
end

-- option tables whose keys were checked (a loop passing the same table
-- to every run pays for the pairs() pass once; the values are checked
-- each time)
local keyschecked = setmetatable({}, { __mode = "k" })

local function checkrunopts(opts, fname)
  if opts == nil then return nil end
  if type(opts) ~= "table" then events.argerror(fname, 2, "table of options", opts, 3) end
  if not keyschecked[opts] then
    for k in pairs(opts) do
      if not RUN_OPTS[k] then
        error(("bad argument #2 to '%s' (unknown option '%s')"):format(fname, tostring(k)), 4)
      end
    end
    keyschecked[opts] = true
  end
  local name = opts.name
  if name ~= nil and type(name) ~= "string" then
    error(("bad argument #2 to '%s' (option 'name' must be a string, got %s)")
          :format(fname, type(name)), 4)
  end
  if opts.transfer ~= nil and type(opts.transfer) ~= "table" then
    error(("bad argument #2 to '%s' (option 'transfer' must be a table, got %s)")
          :format(fname, type(opts.transfer)), 4)
  end
  local sig = opts.signal
  if sig ~= nil and getmetatable(sig) ~= abortmod.AbortSignal then
    error(("bad argument #2 to '%s' (option 'signal' must be a loom.AbortSignal, got %s)")
          :format(fname, type(sig)), 4)
  end
  if opts.timeout ~= nil then checkms(opts.timeout, fname, "option 'timeout'", 3) end
  return opts
end

local function run(p, arg, opts, fname)
  if p._closing or p._destroyed then
    error(("%s: the pool is %s"):format(fname, p._destroyed and "destroyed" or "closed"), 3)
  end
  local name, sig, timeout, transfer
  if opts then
    name, sig, transfer = opts.name, opts.signal, opts.transfer
    timeout = opts.timeout
  end
  -- the task's record is its Future (one table per task), made with every
  -- field it will get, so that its hash part is sized once
  local id = p._id + 1
  p._id = id
  local f = setmetatable({ _s = PENDING, _v = false, _cbs = false, _id = id, _name = name,
                           _arg = arg, _tsub = now(), _w = false }, Future)
  if timeout == nil then timeout = p._timeout
  elseif timeout == huge then timeout = nil end          -- no limit, not the pool's
  if p._broken then settle(f, REJECTED, p._broken); return f end
  if sig and sig.aborted then
    p._failed = p._failed + 1
    settle(f, REJECTED, sig.reason)
    return f
  end
  if p._np >= p._maxq then
    p._failed = p._failed + 1
    settle(f, REJECTED, ("%s: the task queue is full (maxQueue = %d)"):format(fname, p._maxq))
    return f
  end
  local t = f
  if transfer then t._transfer = transfer end
  local qt = p._qt + 1
  p._q[qt] = t
  p._live[id] = t       -- (out of memory here: the slot is reused)
  p._qt = qt
  p._np = p._np + 1
  if sig then
    t._sig = sig
    t._onabort = function(reason) abort(p, t, reason) end
    sig:on("abort", t._onabort)
  end
  if timeout then
    t._timer = core.timer(function() t._timer = nil; guard(p, pcall(abort, p, t, "timeout")) end,
                          timeout, false)
    t._timer:unref()
  end
  if not p._active then sync(p) end
  schedule(p)
  tp(T_QUEUED, p._tf + id, id, p._uid, name or "default", nil, f._tsub)
  return f
end

-- pool:run(arg [, {name, transfer, signal, timeout}]) -> Future
function Pool:run(arg, opts)
  check(self, "run")
  return run(self, arg, checkrunopts(opts, "run"), "run")
end

-- pool:map(list [, opts]) -> Future of the list of results, in order
function Pool:map(list, opts)
  check(self, "map")
  if type(list) ~= "table" then events.argerror("map", 1, "table", list) end
  opts = checkrunopts(opts, "map")
  if opts and opts.transfer then
    error("bad argument #2 to 'map' (option 'transfer' is for run only)", 2)
  end
  local fs = {}
  for i = 1, #list do fs[i] = run(self, list[i], opts, "map") end
  return future.all(fs)
end

local function summary(list)
  local n = list.n < SAMPLES and list.n or SAMPLES
  if n == 0 then return { p50 = 0, p99 = 0, mean = 0, count = 0 } end
  local s = table.move(list, 1, n, 1, {})
  table.sort(s)
  local function at(q)
    local i = ceil(q * n)
    if i < 1 then i = 1 end
    return s[i]
  end
  return { p50 = at(0.5), p99 = at(0.99), mean = list.sum / list.n, count = list.n }
end

function Pool:stats()
  check(self, "stats")
  local running, out = 0, 0
  local t = now()
  local life = self._life
  for _, W in ipairs(self._workers) do
    running = running + (W.n < self._conc and W.n or self._conc)
    out = out + W.n
    life = life + (t - W.born)
  end
  local workers = {}
  for i, W in ipairs(self._workers) do   -- each thread's figures
    local s = W.w:stats()
    s.threadId, s.tasks = W.w.threadId, W.n
    workers[i] = s
  end
  return {
    completed = self._completed, failed = self._failed,
    queued = self._np + out - running, running = running,
    threads = #self._workers, workers = workers,
    utilization = life > 0 and math.min(1, self._busy / life) or 0,
    runTime = summary(self._rt), waitTime = summary(self._wt),
  }
end

-- close() -> Future: queued work finishes, then the threads stop
function Pool:close()
  check(self, "close")
  if not self._closef then
    self._closef = newfuture()
    self._closing = true
    sync(self)
    flush(self)
    self:_checkclosed()
  end
  return self._closef
end

-- destroy() -> Future: stop now; pending futures fail with "destroyed"
function Pool:destroy()
  check(self, "destroy")
  if not self._destroyed then
    self._destroyed = true
    self._closing = true
    if not self._closef then self._closef = newfuture() end
    self:_failall("destroyed")
    for _, W in ipairs(self._all) do
      if W.alive then W.expected = true; W.retiring = true; W.w:terminate() end
    end
    sync(self)
    self:_checkclosed()
  end
  return self._closef
end

function Pool:__tostring()
  check(self, "__tostring")
  return ("loom.Pool (%d threads, %d queued, %d outstanding%s)"):format(#self._workers,
    self._np, self._out, self._destroyed and ", destroyed" or self._closef and ", closed" or "")
end

core.boot("loom.pool", debug.getinfo(1, "f").func)

return M
