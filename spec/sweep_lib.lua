-- The bad-input sweep's engine and table (used by spec/sweep_spec.lua, by
-- the child processes and by the workers it starts).
--
-- Every public function and method of loom is an entry below.  Each entry
-- is called with its good arguments, then with each argument position
-- replaced by each value of S.values(); a method also with each wrong self
-- and on its closed / exited / settled objects; an options table also with
-- each option replaced.  Every call runs under pcall, the loop is driven a
-- bounded number of non-blocking turns after it, and its outcome is
-- judged (S.judge): a success must give a defined result (the entry's
-- 'result' check), an error must be a string that names the function
-- and, for an argument, its number or its name, and must not be one of
-- Lua's own messages leaking from inside loom ("attempt to index ...").
--
-- Where an entry runs (entry.where):
--   "main"   in the spec's own process (the default);
--   "child"  in a child process (a crash fails one test), or in-process
--            where no child can be made (TSan);
--   "worker" in one worker that sweeps its own parentPort (and writes its
--            report to a file: the port is closed by the end);
--   "fresh"  one fresh worker per call (calls that block or end the
--            thread): the parent judges the worker's exit as well;
--   "exit"   loom.exit on the main thread: one child process per value.
local loom = require "loom"

local type, pcall, select, tostring, pairs, ipairs, getmetatable =
      type, pcall, select, tostring, pairs, ipairs, getmetatable
local unpack, pack = table.unpack, table.pack

local S = {}

S.LONG = ("x"):rep(1 << 20)

local function noop() end
S.noop = noop

-- The bad values, fresh for each call (a table or a coroutine could be
-- changed by the call before).  Labels name them in findings.
function S.values()
  return {
    { "nil", nil }, { "true", true }, { "0", 0 }, { "-1", -1 },
    { "2^53", 2 ^ 53 }, { "maxinteger", math.maxinteger },
    { "mininteger", math.mininteger }, { "-0.0", -0.0 }, { "1/0", 1 / 0 },
    { "-1/0", -1 / 0 }, { "0/0", 0 / 0 }, { '""', "" }, { '"x"', "x" },
    { "long string", S.LONG }, { "{}", {} }, { "function", function() end },
    { "coroutine", coroutine.create(noop) }, { "userdata", io.stdout },
  }
end

-- {==================================================================
-- Judging an outcome
-- ==================================================================

-- Lua's own messages: from inside loom they mean a check is missing
local LEAKS = {
  "attempt to index", "attempt to call", "attempt to perform arithmetic",
  "attempt to compare", "attempt to concatenate", "attempt to get length",
  "attempt to yield", "attempt to divide", "table index is nil",
  "table index is NaN", "invalid key to 'next'", "to '?'", "(null)",
  "stack overflow", "string length overflow",
}

local function esc(s) return (s:gsub("%p", "%%%0")) end

local function mtname(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end
S.mtname = mtname

-- does err name fname: 'fname', 'X.fname' or fname: (as "loom.Worker: ...")
local function names(err, fname)
  local e = esc(fname)
  return err:find("'[%w_.]*%f[%w_]" .. e .. "'") ~= nil
      or err:find("%f[%w_]" .. e .. ":") ~= nil
end
S.names = names

local function short(v)
  local s = tostring(v)
  if #s > 160 then s = s:sub(1, 160) .. ("...(%d bytes)"):format(#s) end
  return (s:gsub("\n", "\\n"))
end
S.short = short

-- A call's outcome: where = "pos 2 = nil", "opts.name = 0/0", "self = 5"
-- judge(entry, c, ok, res) -> nil | problem string.
--   c.pos: the argument number (after self for a method), or nil
--   c.opt: the option's name for an option sweep
function S.judge(entry, c, ok, res)
  if ok then
    local check = entry.result
    if c.wrongself and not (entry.selfok and entry.selfok(c.self)) then
      return "accepted a wrong self, returned " .. short(res[1])
    end
    if check then
      local good, why = check(res, c)
      if not good then
        return "returned an undefined result: " .. (why or short(res[1]))
      end
    end
    return nil
  end
  local err = res[1]
  if entry.own and entry.own(err, c) then return nil end   -- the caller's own error value
  if type(err) ~= "string" then
    return "raised a non-string error (" .. type(err) .. "): " .. short(err)
  end
  for _, leak in ipairs(LEAKS) do
    if err:find(leak, 1, true) then return "raised Lua's own message: " .. short(err) end
  end
  if err:find("has no integer representation", 1, true) and not err:find("bad argument", 1, true) then
    return "raised Lua's own message: " .. short(err)
  end
  if err:find("loom/[%w_]+%.lua:%d+:") or err:find("%[loom%]") then
    return "the error points into loom's own code: " .. short(err)
  end
  local fname = entry.fname
  if not names(err, fname) then
    return ("the error does not name '%s': %s"):format(fname, short(err))
  end
  local n = tonumber(err:match("bad argument #(%d+)"))
  if n and entry.shift then n = n - entry.shift(c) end
  if c.wrongself then
    -- "(X expected, got Y)": X is what the method wants, never what it got
    local want = err:match("%(([^()]-) expected")
    if want and want == mtname(c.self) then
      return "says it expected the wrong self's own type: " .. short(err)
    end
    if n and n ~= 1 then return "a wrong self reported as argument #" .. n .. ": " .. short(err) end
    return nil
  end
  if c.pos then
    if n then
      if n ~= c.pos then
        return ("argument %d reported as #%d: %s"):format(c.pos, n, short(err))
      end
      return nil
    end
    -- a free-form error: it names the argument, or is a run-time failure
    for _, a in ipairs((entry.argnames or {})[c.pos] or {}) do
      if err:find(a, 1, true) then return nil end
    end
  elseif c.opt then
    if err:find(c.opt, 1, true) then return nil end
    if n then return ("option '%s' reported as argument #%d: %s"):format(c.opt, n, short(err)) end
  else
    return nil        -- the good call or the call without arguments
  end
  for _, p in ipairs(entry.runtime or {}) do
    if err:find(p, 1, true) then return nil end
  end
  return "the error names no argument: " .. short(err)
end

-- }==================================================================

-- {==================================================================
-- Results and their cleanup
-- ==================================================================


local function is(name) return function(res) return mtname(res[1]) == name end end
local function istype(t) return function(res) return type(res[1]) == t end end
local function isnil(res) return res.n == 0 or res[1] == nil end
local function isself(res, c) return rawequal(res[1], c.self) end
local function posted(res)
  return res[1] == true or (res[1] == false and res[2] == "closed"),
         "expected true or false, \"closed\""
end

-- after each call: close timers, handle futures, stop workers that a
-- call returned or made; every wait bounded
local function drive(n)
  local problems
  for _ = 1, n do
    local ok, err = pcall(loom.poll, 0)
    if not ok then
      problems = problems or {}
      problems[#problems + 1] = "the loop raised after the call: " .. short(err)
    end
  end
  return problems
end

-- wait for w's exit (terminate() it after bound_ms, or at once when
-- now: a worker of the sweep's own that never ends by itself)
local function stopworker(w, bound_ms, now)
  local exited = false
  if w._alive == false then return true end
  w:on("exit", function() exited = true end)
  w:on("error", noop)
  local deadline = loom.now() + bound_ms
  local asked = false
  if now then asked = true; w:terminate() end
  while not exited do
    pcall(loom.poll, 5)
    if not exited then loom.sleep(1) end
    if not exited and loom.now() > deadline then
      if asked then return false end
      asked = true
      w:terminate()
      deadline = loom.now() + bound_ms
    end
  end
  return true
end
S.stopworker = stopworker

-- destroy pool p and wait (bounded) until its workers have exited
function S.stoppool(p, bound_ms)
  pcall(p.destroy, p)
  local deadline = loom.now() + (bound_ms or 2000)
  while #p._all > 0 and loom.now() < deadline do
    pcall(loom.poll, 0)
    loom.sleep(1)
  end
  pcall(loom.poll, 0)
  return #p._all == 0
end

-- close, handle or stop what res holds; workers only when asked (args
-- and selves may be shared ones), terminated at once when workers == "stop"
function S.cleanup(res, bound_ms, workers)
  local problems
  for i = 1, res.n or #res do
    local v = res[i]
    local name = mtname(v)
    if name == "loom.Timer" or name == "loom.Immediate" then pcall(v.close, v)
    elseif name == "loom.Future" then pcall(v.catch, v, noop)
    elseif name == "loom.Pool" and v ~= S.sharedpool then
      if not S.stoppool(v, bound_ms) then
        problems = problems or {}
        problems[#problems + 1] = "a pool the call made did not stop after destroy()"
      end
    elseif name == "loom.Worker" and workers and v ~= S.shared then
      if not stopworker(v, bound_ms, workers == "stop") then
        problems = problems or {}
        problems[#problems + 1] = "a worker the call made did not exit after terminate()"
      end
    end
  end
  return problems
end

-- }==================================================================

-- {==================================================================
-- The table
-- ==================================================================

local entries = {}
S.entries = entries
local byname = {}
S.byname = byname

local function E(e)
  e.fname = e.fname or e.f
  e.where = e.where or "main"
  e.n = e.n or 1
  entries[#entries + 1] = e
  byname[e.key] = byname[e.key] or {}
  table.insert(byname[e.key], e)
  return e
end

local function A(...) local t = pack(...); return function() return t end end

local classcount = 0
local function freshtimer() return loom.setTimeout(noop, 600000) end
local function closedtimer() local t = freshtimer(); t:close(); return t end
local function firedtimer()
  local fired = false
  local t = loom.setTimeout(function() fired = true end, 0)
  local deadline = loom.now() + 2000
  while not fired and loom.now() < deadline do loom.sleep(1); loom.poll(0) end
  return t
end
local function freshimmediate() return loom.setImmediate(noop) end
local function ranimmediate()
  local ran = false
  local im = loom.setImmediate(function() ran = true end)
  local deadline = loom.now() + 2000
  while not ran and loom.now() < deadline do loom.poll(0) end
  return im
end
local function pending() return loom.Future.new() end
local function fulfilled() local f = loom.Future.new(); f:resolve(1); return f end
local function rejected()
  local f = loom.Future.new()
  f:catch(noop)
  f:reject("sweep")
  return f
end
local function controller() return loom.AbortController() end
local function aborted() local ac = loom.AbortController(); ac:abort("sweep"); return ac end
local function signal() return loom.AbortController().signal end
local function abortedsignal() return aborted().signal end

S.makers = {
  timer = freshtimer, closedtimer = closedtimer, firedtimer = firedtimer,
  immediate = freshimmediate, ranimmediate = ranimmediate,
  pending = pending, fulfilled = fulfilled, rejected = rejected,
  controller = controller, aborted = aborted, signal = signal,
  abortedsignal = abortedsignal,
}

-- a few objects for wrong-self calls and for 'the object a function
-- takes' arguments: other loom types
local function otherobjects()
  return {
    { "a loom.AbortController", controller() },
    { "a loom.Timer", freshtimer() },
    { "a loom.Future", pending() },
  }
end
S.otherobjects = otherobjects

local function isemitter(v) return type(v) == "table" and type(rawget(v, "_ev")) == "table" end

-- module functions ---------------------------------------------------

local L = function() return loom end

E{ key = "loom.clone", t = L, f = "clone", args = A(1), result = function(res, c)
     local v = c.args[1]
     return type(res[1]) == type(v) or (v ~= v and res[1] ~= res[1]) end,
   argnames = { { "cannot clone value" } } }
E{ key = "loom.registerClass", t = L, f = "registerClass", n = 2,
   args = function() classcount = classcount + 1; return pack("SweepClass" .. classcount, {}) end,
   result = istype("table") }
E{ key = "loom.now", t = L, f = "now", args = A(), result = istype("number") }
E{ key = "loom.availableParallelism", t = L, f = "availableParallelism", args = A(),
   result = function(res) return math.type(res[1]) == "integer" and res[1] >= 1 end }
E{ key = "loom.isFuture", t = L, f = "isFuture", args = A(1), result = istype("boolean") }
E{ key = "loom.async", t = L, f = "async", n = 2, args = A(noop, 1), result = is("loom.Future") }
for _, f in ipairs({ "all", "race", "any", "allSettled" }) do
  E{ key = "loom." .. f, t = L, f = f, args = function() return pack({ fulfilled(), 2 }) end,
     elements = true, result = is("loom.Future") }
end
for _, f in ipairs({ "setTimeout", "setInterval" }) do
  E{ key = "loom." .. f, t = L, f = f, n = 3, args = A(noop, 1), result = is("loom.Timer") }
end
E{ key = "loom.setImmediate", t = L, f = "setImmediate", n = 2, args = A(noop),
   result = is("loom.Immediate") }
for _, f in ipairs({ "clearTimeout", "clearInterval", "clearImmediate" }) do
  E{ key = "loom." .. f, t = L, f = f, args = function() return pack(freshtimer()) end,
     result = isnil,
     extra = { { "a closed timer", closedtimer }, { "a fired timer", firedtimer },
               { "an immediate", freshimmediate }, { "a run immediate", ranimmediate },
               { "a loom.Future", pending } } }
end
E{ key = "loom.AbortController", t = L, f = "AbortController", args = A(),
   result = function(res) return mtname(res[1]) == "loom.AbortController"
                                 and mtname(res[1].signal) == "loom.AbortSignal" end }
E{ key = "loom.setEnvironmentData", t = L, f = "setEnvironmentData", n = 2,
   args = A("sweep.key", 1), result = isnil, argnames = { { "key" } },
   after = function(c) pcall(loom.setEnvironmentData, c.args[1], nil) end }
E{ key = "loom.getEnvironmentData", t = L, f = "getEnvironmentData", args = A("sweep.none") }
E{ key = "loom.onUnhandledRejection", t = L, f = "onUnhandledRejection", args = A(noop),
   result = isnil, after = function() loom.onUnhandledRejection(S.onunhandled) end }
E{ key = "loom.run", t = L, f = "run", args = A(), result = istype("boolean"), guard = true }
E{ key = "loom.poll", t = L, f = "poll", args = A(0), result = istype("boolean"),
   argnames = { { "budget" } } }
E{ key = "loom.Future.new", t = function() return loom.Future end, f = "new", args = A(),
   result = is("loom.Future") }
E{ key = "loom.AbortSignal.timeout", t = function() return loom.AbortSignal end, f = "timeout",
   args = A(1), result = is("loom.AbortSignal") }

-- loom.Worker: spawning with strange options is the riskiest call there
-- is, so it runs in a child process
local WORKER_OPTS = { "workerData", "name", "eval", "argv", "transfer", "resourceLimits", "env",
                      "resourceLimits.maxMemoryMb", "resourceLimits.stackSizeKb" }
local function isworker(res) return mtname(res[1]) == "loom.Worker" end
E{ key = "loom.Worker", t = L, f = "Worker", n = 2, where = "child",
   args = function() return pack(function() end, {}) end, result = isworker,
   opts = { pos = 2, keys = WORKER_OPTS },
   argnames = { { "source", "worker file" }, {} } }
E{ key = "loom.Worker", variant = "eval = true", t = L, f = "Worker", n = 1, where = "child",
   args = function() return pack("return", { eval = true }) end, result = isworker,
   argnames = { { "source" } } }

-- loom.trace: start writes a file (made in the temp dir; a bad path may
-- make one in the current directory, removed after the call)
local T = function() return loom.trace end
local function tracepath() return os.tmpname() end
local function tracedone(c)
  pcall(loom.trace.stop)
  local p = c.args and c.args[1]
  if type(p) == "string" and p ~= "" and #p < 200 then os.remove(p) end
end
E{ key = "loom.trace.start", t = T, f = "start", n = 2,
   args = function() return pack(tracepath(), { interval = 50 }) end,
   result = function(res) return res[1] == true or (res[1] == nil and type(res[2]) == "string") end,
   after = tracedone,
   opts = { pos = 2, keys = { "interval" }, base = function() return { interval = 50 } end } }
E{ key = "loom.trace.stop", t = T, f = "stop", args = A(), result = istype("boolean"),
   after = tracedone }
E{ key = "loom.trace.on", t = T, f = "on", args = A(noop), result = istype("function"),
   after = tracedone }
E{ key = "loom.trace.active", t = T, f = "active", args = A(), result = istype("boolean") }

-- methods ------------------------------------------------------------

-- M{ key, f, self = maker, closed = { {label, maker} }, n, args, ... }
local function M(e)
  e.method = true
  return E(e)
end

local FUTURE_CLOSED = { { "a fulfilled future", fulfilled }, { "a rejected future", rejected } }
M{ key = "loom.Future.resolve", f = "resolve", self = pending, closed = FUTURE_CLOSED,
   args = A(1), result = istype("boolean") }
M{ key = "loom.Future.reject", f = "reject", n = 2, self = pending, closed = FUTURE_CLOSED,
   args = A("e", "tb"), result = istype("boolean") }
M{ key = "loom.Future.state", f = "state", self = pending, closed = FUTURE_CLOSED, args = A(),
   result = function(res)
     return res[1] == "pending" or res[1] == "fulfilled" or res[1] == "rejected" end }
M{ key = "loom.Future.next", f = "next", n = 2, self = pending, closed = FUTURE_CLOSED,
   args = A(noop, noop), result = is("loom.Future") }
M{ key = "loom.Future.catch", f = "catch", self = pending, closed = FUTURE_CLOSED,
   args = A(noop), result = is("loom.Future") }
-- await on a pending future with nothing else in the loop: it can never settle
M{ key = "loom.Future.await", f = "await", self = pending, closed = FUTURE_CLOSED, args = A(),
   guard = true, runtime = { "can never settle" },
   own = function(err, c)
     return err == "sweep" and loom.isFuture(c.self) and c.self:state() == "rejected" end }

M{ key = "loom.AbortController.abort", f = "abort", self = controller,
   closed = { { "an aborted controller", aborted } }, args = A("why"), result = isnil }

local EMITTER = {
  on = { n = 2, args = function(ev) return A(ev, noop) end, result = isself },
  once = { n = 2, args = function(ev) return A(ev, noop) end, result = isself },
  off = { n = 2, args = function(ev) return A(ev, noop) end, result = isself },
  listenerCount = { n = 1, args = function(ev) return A(ev) end,
                    result = function(res) return math.type(res[1]) == "integer" end },
  emit = { n = 2, args = function() return A("sweep", 1) end, result = istype("boolean") },
}
local function emitters(class, self, closed, ev, where)
  for f, m in pairs(EMITTER) do
    M{ key = class .. "." .. f, f = f, n = m.n, self = self, closed = closed, where = where,
       args = m.args(ev), result = m.result, selfok = isemitter }
  end
end
emitters("loom.AbortSignal", signal, { { "an aborted signal", abortedsignal } }, "abort")

local TIMER_CLOSED = { { "a closed timer", closedtimer }, { "a fired timer", firedtimer } }
for f, check in pairs({ close = isnil, ref = isself, unref = isself, hasRef = istype("boolean"),
                        __tostring = istype("string"), __close = isnil, __gc = isnil }) do
  M{ key = "loom.Timer." .. f, f = f, self = freshtimer, closed = TIMER_CLOSED, args = A(),
     result = check }
end
M{ key = "loom.Immediate.close", f = "close", self = freshimmediate,
   closed = { { "a run immediate", ranimmediate } }, args = A(), result = isnil }

-- Worker methods: on a live worker (one per entry, shared by its calls:
-- spawning one per call would be slow under valgrind), an exited one and
-- one being terminated.  terminate() gets a fresh worker per call.
local function liveworker()
  local w = loom.Worker(function()
    local port = require("loom").parentPort
    port:on("message", function(m) if m == "sweep:end" then port:close() end end)
  end)
  w:on("error", noop)
  return w
end
S.liveworker = liveworker
local exitedw
local function exitedworker()
  if exitedw == nil or exitedw._alive ~= false then
    exitedw = loom.Worker(function() end)
    S.stopworker(exitedw, 5000)
  end
  return exitedw
end
-- one per entry (S.setup_workers): it has exited after the first calls
local function terminating()
  if S.terminating == nil then
    S.terminating = liveworker()
    S.terminating:terminate()
  end
  return S.terminating
end
local WORKER_CLOSED = { { "an exited worker", exitedworker },
                        { "a worker terminate() was called on", terminating } }
function S.setup_workers()
  S.shared = liveworker()
  S.terminating = nil
end
function S.teardown_workers()
  local ok = true
  if S.shared then
    pcall(S.shared.postMessage, S.shared, "sweep:end")
    ok = stopworker(S.shared, S.bound_ms)    -- it closes its port on "sweep:end"
  end
  if S.terminating then ok = stopworker(S.terminating, S.bound_ms) and ok end
  S.shared, S.terminating = nil, nil
  return ok
end
local function shared() return S.shared end
emitters("loom.Worker", shared, WORKER_CLOSED, "message")
M{ key = "loom.Worker.postMessage", f = "postMessage", n = 2, self = shared, closed = WORKER_CLOSED,
   args = A(1), result = posted,
   argnames = { { "cannot clone msg" }, { "transfer" } } }
-- loom.Pool: creating one spawns workers, so it runs in a child process;
-- methods on a pool shared by the calls of an entry (minThreads = 0: no
-- worker until a task runs), on a closed and on a destroyed one
local POOL_OPTS = { "filename", "source", "fn", "minThreads", "maxThreads", "idleTimeout",
                    "maxQueue", "concurrentTasksPerWorker", "resourceLimits", "timeout",
                    "abortGrace", "name", "resourceLimits.maxMemoryMb" }
local function pooltasks() return function(x) return x end end
local function newpool() return loom.Pool{ fn = pooltasks, minThreads = 0, maxThreads = 1 } end
S.newpool = newpool
local function sharedpool()
  if S.sharedpool == nil then S.sharedpool = newpool() end
  return S.sharedpool
end
local function closedpool() local p = newpool(); p:close(); return p end
local function destroyedpool() local p = newpool(); p:destroy(); return p end
local POOL_CLOSED = { { "a closed pool", closedpool }, { "a destroyed pool", destroyedpool } }
E{ key = "loom.Pool", t = L, f = "Pool", where = "child",
   args = function() return pack({ fn = pooltasks, minThreads = 0, maxThreads = 1 }) end,
   result = is("loom.Pool"), argnames = { { "Pool" } },
   opts = { pos = 1, keys = POOL_OPTS,
            base = function() return { fn = pooltasks, minThreads = 0, maxThreads = 1 } end } }
M{ key = "loom.Pool.run", f = "run", n = 2, self = sharedpool, closed = POOL_CLOSED,
   args = A(1), result = is("loom.Future"), argnames = { { "run" }, { "run" } } }
M{ key = "loom.Pool.map", f = "map", n = 2, self = sharedpool, closed = POOL_CLOSED,
   args = function() return pack({ 1, 2 }) end, result = is("loom.Future"),
   argnames = { { "map" }, { "map" } } }
M{ key = "loom.Pool.stats", f = "stats", self = sharedpool, closed = POOL_CLOSED, args = A(),
   result = istype("table") }
M{ key = "loom.Pool.close", f = "close", self = newpool, closed = POOL_CLOSED, args = A(),
   result = is("loom.Future") }
M{ key = "loom.Pool.destroy", f = "destroy", self = newpool, closed = POOL_CLOSED, args = A(),
   result = is("loom.Future") }
M{ key = "loom.Pool.__tostring", f = "__tostring", self = sharedpool, closed = POOL_CLOSED,
   args = A(), result = istype("string") }
emitters("loom.Pool", sharedpool, POOL_CLOSED, "drain")

M{ key = "loom.Worker.terminate", f = "terminate", self = liveworker,
   closed = WORKER_CLOSED, args = A(), result = is("loom.Future") }
M{ key = "loom.Worker.stats", f = "stats", self = shared, closed = WORKER_CLOSED, args = A(),
   result = istype("table") }
M{ key = "loom.Worker.ref", f = "ref", self = shared, closed = WORKER_CLOSED, args = A(), result = isself }
M{ key = "loom.Worker.unref", f = "unref", self = shared, closed = WORKER_CLOSED, args = A(),
   result = isself, after = function(c) if c.self == S.shared then S.shared:ref() end end }
M{ key = "loom.Worker.__tostring", f = "__tostring", self = shared, closed = WORKER_CLOSED,
   args = A(), result = istype("string") }

-- in a worker: its parentPort, live, then closed (the worker's batch)
local function port() return loom.parentPort end
local PORT_CLOSED = { { "a closed port", port } }   -- the batch closes it in between
emitters("loom.MessagePort", port, PORT_CLOSED, "message", "worker")
M{ key = "loom.MessagePort.postMessage", f = "postMessage", n = 2, self = port, closed = PORT_CLOSED,
   args = A(1), result = posted, where = "worker",
   argnames = { { "cannot clone msg" }, { "transfer" } } }
M{ key = "loom.MessagePort.start", f = "start", self = port, closed = PORT_CLOSED, args = A(),
   result = isself, where = "worker" }
M{ key = "loom.MessagePort.ref", f = "ref", self = port, closed = PORT_CLOSED, args = A(),
   result = isself, where = "worker", after = function() loom.parentPort:unref() end }
M{ key = "loom.MessagePort.unref", f = "unref", self = port, closed = PORT_CLOSED, args = A(),
   result = isself, where = "worker" }
-- close on the live port is called last, by the batch itself
M{ key = "loom.MessagePort.close", f = "close", self = port, closed = PORT_CLOSED, args = A(),
   result = isnil, where = "worker", closedonly = true }

-- shared memory: buffers and views (waits that cannot block: the value
-- differs or the timeout is 0) ------------------------------------------
local function sharedbuf() return loom.SharedBuffer(16) end
local function releasedbuf() local b = sharedbuf(); getmetatable(b).__gc(b); return b end
local function isinteger(res) return math.type(res[1]) == "integer" end
E{ key = "loom.SharedBuffer", t = L, f = "SharedBuffer", args = A(16), result = is("loom.SharedBuffer") }
local BUF_CLOSED = { { "a released buffer", releasedbuf } }
local RELEASED = { "was released", "views have no atomic methods", "an int32 or int64 view expected" }
M{ runtime = RELEASED, key = "loom.SharedBuffer.read", f = "read", n = 2, self = sharedbuf, closed = BUF_CLOSED,
   args = A(2, 4), result = istype("string") }
M{ runtime = RELEASED, key = "loom.SharedBuffer.write", f = "write", n = 2, self = sharedbuf, closed = BUF_CLOSED,
   args = A(2, "ab"), result = function(res) return res[1] == true end }
M{ runtime = RELEASED, key = "loom.SharedBuffer.view", f = "view", n = 3, self = sharedbuf, closed = BUF_CLOSED,
   args = A("int32", 4, 2), result = is("loom.SharedView") }
for f, check in pairs({ __len = isinteger, __tostring = istype("string"), __gc = isnil }) do
  M{ runtime = RELEASED, key = "loom.SharedBuffer." .. f, f = f, self = sharedbuf, closed = BUF_CLOSED, args = A(),
     result = check }
end
local function view(kind) return function() return loom.SharedBuffer(16):view(kind) end end
local function releasedview() local v = view("int32")(); getmetatable(v).__gc(v); return v end
local VIEW_CLOSED = { { "a released view", releasedview } }
local ATOMIC_CLOSED = { { "a released view", releasedview }, { "a float64 view", view("float64") } }
local WAIT_CLOSED = { { "a released view", releasedview }, { "a uint32 view", view("uint32") },
                      { "a float32 view", view("float32") } }
for _, f in ipairs({ "add", "sub", "band", "bor", "bxor", "exchange", "store" }) do
  M{ runtime = RELEASED, key = "loom.SharedView." .. f, f = f, n = 2, self = view("int8"), closed = ATOMIC_CLOSED,
     args = A(2, 3), result = isinteger }
end
M{ runtime = RELEASED, key = "loom.SharedView.compareExchange", f = "compareExchange", n = 3, self = view("int16"),
   closed = ATOMIC_CLOSED, args = A(2, 0, 3), result = isinteger }
M{ runtime = RELEASED, key = "loom.SharedView.load", f = "load", n = 1, self = view("uint32"), closed = ATOMIC_CLOSED,
   args = A(2), result = isinteger }
M{ runtime = RELEASED, key = "loom.SharedView.wait", f = "wait", n = 3, self = view("int32"), closed = WAIT_CLOSED,
   args = A(2, 1, 0), result = istype("string") }
M{ runtime = RELEASED, key = "loom.SharedView.waitAsync", f = "waitAsync", n = 3, self = view("int64"), closed = WAIT_CLOSED,
   args = A(2, 1, 0), result = is("loom.Future") }
M{ runtime = RELEASED, key = "loom.SharedView.notify", f = "notify", n = 2, self = view("int32"), closed = WAIT_CLOSED,
   args = A(2, 1), result = isinteger }
-- metamethods, called directly: self is argument #1, the key #2
local function afterself(c) return c.wrongself and 0 or 1 end
M{ runtime = RELEASED, key = "loom.SharedView.__index", f = "__index", n = 1, self = view("float32"), closed = VIEW_CLOSED,
   args = A(2), shift = afterself }
M{ runtime = RELEASED, key = "loom.SharedView.__newindex", f = "__newindex", n = 2, self = view("uint16"), closed = VIEW_CLOSED,
   args = A(2, 7), result = isnil, shift = afterself }
for f, check in pairs({ __len = isinteger, __tostring = istype("string"), __gc = isnil }) do
  M{ runtime = RELEASED, key = "loom.SharedView." .. f, f = f, self = view("float64"), closed = VIEW_CLOSED, args = A(),
     result = check }
end

-- frozen tables: reads, and writes that always raise
local function frozen() return loom.freeze({ 1, 2, a = { b = 1 } }) end
local function releasedfrozen() local f = frozen(); getmetatable(f).__gc(f); return f end
local FROZEN_CLOSED = { { "a released frozen table", releasedfrozen } }
local FROZEN_ERRORS = { "was released", "attempt to modify a frozen table", "not in this frozen table" }
E{ key = "loom.freeze", t = L, f = "freeze", args = function() return pack({ 1, x = { 2 } }) end,
   result = is("loom.Frozen") }
M{ runtime = FROZEN_ERRORS, key = "loom.Frozen.__index", f = "__index", n = 1, self = frozen,
   closed = FROZEN_CLOSED, args = A("a"), shift = afterself }
M{ runtime = FROZEN_ERRORS, key = "loom.Frozen.__newindex", f = "__newindex", n = 2, self = frozen,
   closed = FROZEN_CLOSED, args = A("a", 1), shift = afterself }
M{ runtime = FROZEN_ERRORS, key = "loom.Frozen.__eq", f = "__eq", n = 1, self = frozen,
   closed = FROZEN_CLOSED, args = function() return pack(frozen()) end, result = istype("boolean"),
   shift = afterself }
M{ runtime = FROZEN_ERRORS, key = "loom.Frozen.__pairs", f = "__pairs", self = frozen,
   closed = FROZEN_CLOSED, args = A(), result = istype("function") }
for f, check in pairs({ __len = isinteger, __tostring = istype("string"), __gc = isnil }) do
  M{ runtime = FROZEN_ERRORS, key = "loom.Frozen." .. f, f = f, self = frozen, closed = FROZEN_CLOSED,
     args = A(), result = check }
end
-- MessageChannel ports on the main thread: one message waiting in each
local function chport()
  local ch = loom.MessageChannel()
  ch.port2:postMessage("sweep")
  return ch.port1
end
local function closedchport()
  local ch = loom.MessageChannel()
  ch.port1:close()
  local deadline = loom.now() + 2000
  while not ch.port1._closed and loom.now() < deadline do loom.poll(0) end
  return ch.port1
end
local function transferredport()
  local ch, sink = loom.MessageChannel(), loom.MessageChannel()
  sink.port1:postMessage(ch.port1, { ch.port1 })
  return ch.port1
end
local CHPORT_CLOSED = { { "a closed port", closedchport }, { "a transferred port", transferredport } }
local function received(res)
  return res[1] == true or (res[1] == false and (res[2] == "empty" or res[2] == "timeout"
    or res[2] == "closed")), 'expected true, v or false, "empty" | "timeout" | "closed"'
end
E{ key = "loom.MessageChannel", t = L, f = "MessageChannel", n = 0, args = A(),
   result = is("loom.MessageChannel") }
E{ key = "loom.receiveMessageOnPort", t = L, f = "receiveMessageOnPort",
   args = function() return pack(chport()) end, result = received,
   argnames = { { "receiveMessageOnPort" } } }
M{ key = "loom.MessagePort.receive", f = "receive", self = chport, closed = CHPORT_CLOSED,
   args = A(0), result = received, argnames = { { "timeout", "receive" } } }

-- Channels on the main thread: one value waiting in each; unref'd, so a
-- 'message' listener the sweep adds does not hold the loop
local function chan()
  local q = loom.Channel()
  q:push("sweep")
  return q:unref()
end
local function closedchan() local q = chan(); q:close(); return q end
local CHAN_CLOSED = { { "a closed channel", closedchan } }
local function popped(res)
  return res[1] ~= nil or res[2] == "empty" or res[2] == "timeout" or res[2] == "closed",
         'expected a value or nil, "empty" | "timeout" | "closed"'
end
local function pushed(res)
  return res[1] == true or res[2] == "full" or res[2] == "timeout" or res[2] == "closed",
         'expected true or nil, "full" | "timeout" | "closed"'
end
E{ key = "loom.Channel", t = L, f = "Channel", args = A(4), result = is("loom.Channel"),
   argnames = { { "capacity" } } }
E{ key = "loom.Channel.named", t = function() return loom.Channel end, f = "named", n = 2,
   args = A("sweep-named"), result = is("loom.Channel"), argnames = { { "named" }, { "capacity", "named" } } }
M{ key = "loom.Channel.push", f = "push", n = 2, self = chan, closed = CHAN_CLOSED, args = A(1),
   result = pushed, argnames = { { "push" }, { "timeout", "push" } } }
M{ key = "loom.Channel.pop", f = "pop", self = chan, closed = CHAN_CLOSED, args = A(0),
   result = popped, argnames = { { "timeout", "pop" } } }
M{ key = "loom.Channel.tryPop", f = "tryPop", self = chan, closed = CHAN_CLOSED, args = A(),
   result = popped }
M{ key = "loom.Channel.__len", f = "__len", self = chan, closed = CHAN_CLOSED, args = A(),
   result = istype("number") }
M{ key = "loom.Channel.close", f = "close", self = chan, closed = CHAN_CLOSED, args = A(),
   result = isnil }
M{ key = "loom.Channel.ref", f = "ref", self = chan, closed = CHAN_CLOSED, args = A(),
   result = isself, after = function(c) if c.self and c.self.unref then pcall(c.self.unref, c.self) end end }
M{ key = "loom.Channel.unref", f = "unref", self = chan, closed = CHAN_CLOSED, args = A(),
   result = isself }
emitters("loom.Channel", chan, CHAN_CLOSED, "message")
E{ key = "loom.select", t = L, f = "select", n = 2,
   args = function() return pack({ chan(), chport() }, 0) end,
   result = function(res) return res[1] ~= nil or res[2] == "timeout" or res[2] == "closed" end,
   argnames = { { "select" }, { "timeout", "select" } } }

-- BroadcastChannels on the main thread (unref'd: listeners do not hold)
local function bcast() return loom.BroadcastChannel("sweep"):unref() end
local function closedbcast() local b = bcast(); b:close(); return b end
local BCAST_CLOSED = { { "a closed channel", closedbcast } }
E{ key = "loom.BroadcastChannel", t = L, f = "BroadcastChannel", args = A("sweep"),
   result = is("loom.BroadcastChannel"), argnames = { { "BroadcastChannel" } },
   after = function(_, res) if type(res) == "table" and type(res[1]) == "table" then pcall(res[1].close, res[1]) end end }
M{ key = "loom.BroadcastChannel.postMessage", f = "postMessage", self = bcast, closed = BCAST_CLOSED,
   args = A(1), result = posted, argnames = { { "cannot clone msg" } } }
M{ key = "loom.BroadcastChannel.close", f = "close", self = bcast, closed = BCAST_CLOSED, args = A(),
   result = isnil }
M{ key = "loom.BroadcastChannel.ref", f = "ref", self = bcast, closed = BCAST_CLOSED, args = A(),
   result = isself, after = function(c) if c.self and c.self.unref then pcall(c.self.unref, c.self) end end }
M{ key = "loom.BroadcastChannel.unref", f = "unref", self = bcast, closed = BCAST_CLOSED, args = A(),
   result = isself }
emitters("loom.BroadcastChannel", bcast, BCAST_CLOSED, "message")

-- calls that block or end the thread: a fresh worker each ----------------
-- expect(v, n): "error" | "return" | "block" | {exit = code}; n = #args
local function isint(v) return math.type(v) == "integer" end
local function blocks(v) return type(v) == "number" and v >= 1e6 end
E{ key = "loom.sleep", t = L, f = "sleep", where = "fresh", args = A(1),
   expect = function(v, n)
     if n == 0 or type(v) ~= "number" or v ~= v or v < 0 then return "error" end
     return blocks(v) and "block" or "return"
   end }
E{ key = "loom.sleep", variant = "inside loom.async", t = L, f = "sleep", where = "fresh", args = A(1),
   async = true,
   expect = function(v, n)
     if n == 0 or type(v) ~= "number" or v ~= v or v < 0 then return "error" end
     return blocks(v) and "block" or "return"
   end }
E{ key = "loom.exit", t = L, f = "exit", where = "fresh", args = A(3),
   expect = function(v, n)
     if n == 0 or v == nil then return { exit = 0 } end
     if isint(v) then return { exit = v } end
     return "error"
   end }
E{ key = "loom.exit", variant = "main thread", t = L, f = "exit", where = "exit", args = A(3),
   expect = function(v, n)
     if n == 0 or v == nil then return { exit = 0 } end
     if isint(v) then return { exit = v & 0xff } end
     return "error"
   end }
-- os.exit, coroutine.resume/wrap/close, xpcall and debug.sethook are
-- loom's own in a worker (state.c): found by S.patched()
E{ key = "os.exit", t = function() return os end, f = "exit", where = "fresh", args = A(3),
   expect = function(v, n)
     if n == 0 or v == nil or v == true then return { exit = 0 } end
     if v == false then return { exit = 1 } end
     if math.tointeger(v) and type(v) == "number" then return { exit = math.tointeger(v) } end
     if type(v) == "string" and math.tointeger(tonumber(v)) then return { exit = math.tointeger(tonumber(v)) } end
     return "error"
   end }
local CO = function() return coroutine end
E{ key = "coroutine.resume", t = CO, f = "resume", n = 2, where = "worker",
   args = function() return pack(coroutine.create(noop), 1) end,
   result = function(res) return type(res[1]) == "boolean" end }
E{ key = "coroutine.wrap", t = CO, f = "wrap", where = "worker", args = A(noop),
   result = istype("function") }
E{ key = "coroutine.close", t = CO, f = "close", where = "worker",
   args = function() return pack(coroutine.create(noop)) end, result = istype("boolean") }
E{ key = "xpcall", t = function() return _G end, f = "xpcall", n = 3, where = "worker",
   args = A(noop, noop), result = istype("boolean") }
E{ key = "debug.sethook", t = function() return debug end, f = "sethook", n = 3, where = "worker",
   args = A(noop, "", 0), result = isnil, after = function() debug.sethook() end,
   -- sethook(thread, hook, mask, count) is a valid form: a coroutine
   -- first shifts the arguments
   shift = function(c) return type(c.args[1]) == "thread" and 1 or 0 end }

-- }==================================================================

-- {==================================================================
-- The public surface, as found (not as listed)
-- ==================================================================

local function methodset(mt, into, class)
  -- a class: its own functions and those of its __index chain
  local seen = {}
  local t = mt
  while type(t) == "table" and not seen[t] do
    seen[t] = true
    for k, v in pairs(t) do
      if type(k) == "string" and type(v) == "function"
         and (not k:find("^_") or k:find("^__")) then
        into[class .. "." .. k] = true
      end
    end
    local idx = rawget(t, "__index")
    if type(idx) == "function" then idx = rawget(t, "__methods") end   -- elements, then methods
    if idx ~= nil and idx ~= t then t = idx
    else
      local m = getmetatable(t)
      t = type(m) == "table" and rawget(m, "__index") or nil
    end
  end
end

local function instance(v, into, depth)
  local mt = getmetatable(v)
  local class = mtname(v)
  if type(mt) ~= "table" or type(class) ~= "string" then return end
  methodset(mt, into, class)
  if type(v) == "table" and depth < 3 then
    for k, f in pairs(v) do
      if type(k) == "string" and not k:find("^_") then
        if type(f) == "function" then into[class .. "." .. k] = true
        elseif type(f) == "table" then instance(f, into, depth + 1) end
      end
    end
  end
end

-- names of lazily loaded module fields, read from loom's own source so a
-- new one cannot hide
local function lazynames()
  local path = package.searchpath("loom", package.path)
  local out = { "workerData" }
  local f = path and io.open(path)
  if not f then return out end
  local src = f:read("a")
  f:close()
  local block = src:match("local LAZY = (%b{})")
  for k in (block or ""):gmatch("\n%s*([%a_][%w_]*)%s*=") do out[#out + 1] = k end
  for args in src:gmatch("\nlazily(%b())") do      -- lazily(module, name...)
    local i = 0
    for k in args:gmatch('"([^"]+)"') do
      i = i + 1
      if i > 1 then out[#out + 1] = k end
    end
  end
  return out
end

-- C functions loom put into a worker's standard library (state.c's
-- patches): they carry loom's context, the light userdata every function
-- of loom.core has as its first upvalue
local function patched(into)
  local _, ctx = debug.getupvalue(require("loom.core").now, 1)
  local libs = { _G = _G, os = os, coroutine = coroutine, debug = debug, string = string,
                 table = table, io = io, math = math, utf8 = utf8, package = package }
  for lname, lib in pairs(libs) do
    for k, f in pairs(lib) do
      if type(f) == "function" and debug.getinfo(f, "S").what == "C" then
        local _, up = debug.getupvalue(f, 1)
        if up ~= nil and rawequal(up, ctx) then
          into[(lname == "_G" and "" or lname .. ".") .. k] = true
        end
      end
    end
  end
end

-- every public name this thread sees (samples: instances to look into)
function S.surface(samples)
  local into = {}
  for _, k in ipairs(lazynames()) do local _ = loom[k] end
  for k, v in pairs(loom) do
    if type(k) == "string" and not k:find("^_") then
      if type(v) == "function" then
        into["loom." .. k] = true
      elseif type(v) == "table" and type(rawget(v, "__name")) == "string" then
        methodset(v, into, rawget(v, "__name"))     -- a class table
        local mt = getmetatable(v)
        if type(mt) == "table" and mt.__call then into["loom." .. k] = true end  -- callable
      elseif type(v) == "table" then
        instance(v, into, 0)                        -- parentPort
      end
    end
  end
  for _, s in ipairs(samples or {}) do instance(s, into, 0) end
  patched(into)
  return into
end

-- }==================================================================

-- {==================================================================
-- Running calls
-- ==================================================================

local chunks = {}
local function chunk(src)
  local f = chunks[src]
  if not f then f = assert(load(src, "=(sweep call)")); chunks[src] = f end
  return f
end
-- each call written as a user writes it, so Lua names the function
local function fncall(f)
  return chunk(("local t, a = ...; return t.%s(table.unpack(a, 1, a.n))"):format(f))
end
local function methcall(f)
  return chunk(("local o, a = ...; return o:%s(table.unpack(a, 1, a.n))"):format(f))
end
local function dotcall(f)
  return chunk(("local o, s, a = ...; return o.%s(s, table.unpack(a, 1, a.n))"):format(f))
end
local function tostringcall()
  return chunk("local o = ...; return tostring(o)")
end
-- a metamethod as a user calls it directly
local function metacall(f)
  return chunk(("local o, a = ...; return getmetatable(o).%s(o, table.unpack(a, 1, a.n))"):format(f))
end
local function metadotcall(f)
  return chunk(("local o, s, a = ...; return getmetatable(o).%s(s, table.unpack(a, 1, a.n))"):format(f))
end
-- __close as Lua calls it: a to-be-closed variable going out of scope
local function closecall()
  return chunk("local o = ...; do local x <close> = o end")
end

S.calls = 0

local function guarded(fn, ...)
  local g = loom.setTimeout(function() error("sweep: the call was still running after its bound", 0) end,
                            S.bound_ms)
  g:unref()
  local res = pack(pcall(fn, ...))
  g:close()
  return res
end

local TRACE = os.getenv("LOOM_SWEEP_TRACE") ~= nil   -- every outcome to stderr
local label

-- one call: returns nil or a problem
local function one(e, c, fn, ...)
  S.calls = S.calls + 1
  local t0 = loom.now()
  local res
  -- a call stuck in a Lua loop is stopped by a count hook (S.watchdog;
  -- not in the worker batch, which sweeps debug.sethook itself)
  if S.watchdog then
    local deadline = t0 + S.bound_ms * 2
    debug.sethook(function()
      if loom.now() > deadline then error("sweep: the call ran past its bound", 2) end
    end, "", 100000)
  end
  if e.guard then res = guarded(fn, ...) else res = pack(pcall(fn, ...)) end
  if S.watchdog then debug.sethook() end
  local took = loom.now() - t0
  local ok = res[1]
  local out = pack(select(2, unpack(res, 1, res.n)))
  local problems = {}
  problems[1] = S.judge(e, c, ok, out)
  if TRACE then
    io.stderr:write(("%s, %s: %s %s%s\n"):format(label(e), c.where or "?", ok and "ok" or "error",
      short(out[1]), problems[1] and ("  <- " .. problems[1]) or ""))
  end
  -- a worker the call made may fail at once (a source that does not
  -- compile): its error event has a listener before the loop turns, as a
  -- careful caller's would
  if ok then
    for i = 1, out.n do
      if mtname(out[i]) == "loom.Worker" and out[i] ~= S.shared then pcall(out[i].on, out[i], "error", noop) end
    end
  end
  for _, p in ipairs(drive(2) or {}) do problems[#problems + 1] = p end
  if e.after then pcall(e.after, c) end
  for _, p in ipairs(ok and S.cleanup(out, S.bound_ms, true) or {}) do problems[#problems + 1] = p end
  S.cleanup(c.args or {}, S.bound_ms, false)
  if c.self ~= nil and not c.wrongself then
    for _, p in ipairs(S.cleanup(pack(c.self), S.bound_ms, "stop") or {}) do problems[#problems + 1] = p end
  end
  if took > S.bound_ms then problems[#problems + 1] = ("took %.0f ms"):format(took) end
  if #problems == 0 and problems[1] == nil then return nil end
  local list = {}
  for i = 1, 64 do if problems[i] then list[#list + 1] = problems[i] end end
  return #list > 0 and table.concat(list, "; ") or nil
end

function label(e)
  return e.key .. (e.variant and (" (" .. e.variant .. ")") or "")
end
S.label = label

local function copyargs(a)
  local t = pack(unpack(a, 1, a.n))
  return t
end

-- run every call of entry e; report(where, problem) for each finding
function S.run_entry(e, report, opts)
  opts = opts or {}
  if e.key:find("^loom%.Worker%.") and not opts.inner then
    S.setup_workers()
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.inner = true
    local ok, err = pcall(S.run_entry, e, report, o)
    if not S.teardown_workers() then report(label(e), "a worker of the sweep did not exit") end
    if not ok then error(err, 0) end
    return
  end
  if e.key:find("^loom%.Pool%.") and not opts.inner then
    S.sharedpool = nil
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.inner = true
    local ok, err = pcall(S.run_entry, e, report, o)
    if S.sharedpool and not S.stoppool(S.sharedpool, S.bound_ms) then
      report(label(e), "the sweep's pool did not stop")
    end
    S.sharedpool = nil
    if not ok then error(err, 0) end
    return
  end
  local function try(where, c, fn, ...)
    c.where = where
    local p = one(e, c, fn, ...)
    if p then report(label(e) .. ", " .. where, p) end
  end
  local valuesets = function()
    local vs = S.values()
    if e.extra then
      for _, x in ipairs(e.extra) do vs[#vs + 1] = { x[1], x[2]() } end
    end
    return vs
  end
  if not e.method then
    local t = e.t()
    local call = fncall(e.f)
    local a = e.args()
    try("good arguments", { args = a }, call, t, copyargs(a))
    try("no arguments", { args = pack() }, call, t, pack())
    for pos = 1, e.n do
      for _, v in ipairs(valuesets()) do
        local args = copyargs(e.args())
        S.cleanup(pack(args[pos]), 0, false)       -- the good value it replaces
        args[pos] = v[2]
        if pos > args.n then args.n = pos end
        try(("argument %d = %s"):format(pos, v[1]), { pos = pos, args = args }, call, t, args)
      end
    end
    if e.opts then
      for _, key in ipairs(e.opts.keys) do
        for _, v in ipairs(S.values()) do
          local args = copyargs(e.args())
          local o = e.opts.base and e.opts.base() or {}   -- the other options, good
          local k1, k2 = key:match("^(.-)%.(.*)$")
          if k1 then o[k1] = { [k2] = v[2] } else o[key] = v[2] end
          args[e.opts.pos] = o
          try(("option %s = %s"):format(key, v[1]), { opt = k2 or key, args = args }, call, t, args)
        end
      end
    end
    if e.elements then
      for _, v in ipairs(S.values()) do
        local args = pack({ v[2] })
        try(("list element = %s"):format(v[1]), { args = args }, call, t, args)
      end
    end
    return
  end
  -- a method
  local selves = {}
  if not e.closedonly then selves[1] = { "a live object", e.self } end
  for _, x in ipairs(e.closed or {}) do selves[#selves + 1] = x end
  if opts.selves then selves = opts.selves(selves) end
  local call = methcall(e.f)
  local meta = e.f:find("^__") ~= nil
  if meta then call = metacall(e.f) end
  for _, sx in ipairs(selves) do
    local function self() return sx[2]() end
    local a = e.args()
    local o = self()
    try(sx[1] .. ", good arguments", { self = o, args = a }, call, o, copyargs(a))
    o = self()
    try(sx[1] .. ", no arguments", { self = o, args = pack() }, call, o, pack())
    if e.f == "__tostring" then
      o = self()
      try(sx[1] .. ", tostring()", { self = o, args = pack() }, tostringcall(), o)
    elseif e.f == "__close" then
      o = self()
      try(sx[1] .. ", a <close> variable", { self = o, args = pack() }, closecall(), o)
    end
    do
      for pos = 1, e.n do
        for _, v in ipairs(valuesets()) do
          local args = copyargs(e.args())
          S.cleanup(pack(args[pos]), 0, false)
          args[pos] = v[2]
          if pos > args.n then args.n = pos end
          o = self()
          try(("%s, argument %d = %s"):format(sx[1], pos, v[1]), { self = o, pos = pos, args = args },
              call, o, args)
        end
      end
    end
  end
  -- wrong selves: o.f(bad, good arguments...), o a live object
  if not opts.noself then
    local host = e.self()
    local wrong = S.values()
    local class = e.key:match("^(.*)%.[^.]+$")
    for _, x in ipairs(otherobjects()) do
      if mtname(x[2]) ~= class then wrong[#wrong + 1] = x else S.cleanup(pack(x[2]), 0, false) end
    end
    for _, v in ipairs(wrong) do
      local a = e.args()
      try("self = " .. v[1], { self = v[2], wrongself = true, args = a },
          meta and metadotcall(e.f) or dotcall(e.f), host, v[2], copyargs(a))
      S.cleanup(pack(v[2]), S.bound_ms, false)
    end
    S.cleanup(pack(host), S.bound_ms, "stop")
  end
end

S.bound_ms = 2000

-- }==================================================================

-- {==================================================================
-- One call in a fresh worker (where = "fresh")
-- ==================================================================

-- the calls of a fresh entry: { {where, pos, vi}, ... } (vi: index in
-- S.values(), 0: the good argument; pos 0: no arguments)
function S.fresh_plan(e)
  local plan = { { "good arguments", 1, 0 }, { "no arguments", 0, 0 } }
  for pos = 1, e.n do
    for vi, v in ipairs(S.values()) do
      plan[#plan + 1] = { ("argument %d = %s"):format(pos, v[1]), pos, vi }
    end
  end
  return plan
end

function S.fresh_args(e, pos, vi)
  local args = copyargs(e.args())
  if pos == 0 then return pack() end
  if vi > 0 then
    args[pos] = S.values()[vi][2]
    if pos > args.n then args.n = pos end
  end
  return args
end

-- in the fresh worker: make the call, post what happened
-- ("returned" | "raised", problem or false)
function S.fresh_call(key, variant, pos, vi, post)
  local e
  for _, x in ipairs(byname[key]) do if x.variant == variant then e = x end end
  local args = S.fresh_args(e, pos, vi)
  local call = fncall(e.f)
  local res
  if e.async then
    local f = loom.async(function() return call(e.t(), args) end)
    -- settled at once or later (the worker's loop runs after the chunk)
    f:next(function() post({ "returned", false }) end,
           function(err)
             local p = S.judge(e, { pos = pos > 0 and vi > 0 and pos or nil, args = args }, false, pack(err))
             post({ "raised", p or false, short(err) })
           end)
    return
  end
  res = pack(pcall(call, e.t(), args))
  local out = pack(select(2, unpack(res, 1, res.n)))
  local p = S.judge(e, { pos = pos > 0 and vi > 0 and pos or nil, args = args }, res[1], out)
  post({ res[1] and "returned" or "raised", p or false, res[1] and "" or short(out[1]) })
end

-- }==================================================================

-- {==================================================================
-- Drivers: where each kind of entry runs
-- ==================================================================

-- rejections the sweep causes (Future.reject, any{} ...) are expected
function S.onunhandled() end
function S.prepare() loom.onUnhandledRejection(S.onunhandled) end

function S.entries_where(where)
  local out = {}
  for _, e in ipairs(entries) do if e.where == where then out[#out + 1] = e end end
  return out
end

local function keep(list, live)
  local out = {}
  for _, x in ipairs(list) do
    if (x[1] == "a live object") == live then out[#out + 1] = x end
  end
  return out
end

-- In a child process: run the entries of key (variant), print findings.
function S.child_main(key, variant)
  S.prepare()
  S.watchdog = true
  for _, e in ipairs(byname[key]) do
    if (e.variant or false) == (variant or false) then
      S.run_entry(e, function(where, p) io.write("FINDING\t", where, ": ", p, "\n") end)
    end
  end
  io.write("CALLS\t", S.calls, "\nDONE\n")
end

-- parse a child's output: findings, calls; a child that did not finish
-- is a finding
function S.parse_child(out, what)
  local findings, calls = {}, 0
  for line in out:gmatch("[^\n]+") do
    local f = line:match("^FINDING\t(.*)$")
    if f then findings[#findings + 1] = f end
    calls = tonumber(line:match("^CALLS\t(%d+)$")) or calls
  end
  if not out:find("\nDONE\n", 1, true) or not out:find("rc=0", 1, true) then
    findings[#findings + 1] = what .. ": the child process did not finish (crash or hang): "
                              .. short(out:sub(-2000))
  end
  return findings, calls
end

-- In the worker of the batch: sweep the entries that run there (its
-- parentPort live, then closed; the functions state.c replaces), write
-- the findings and the count to the file at path.
function S.worker_batch(path)
  S.prepare()
  local findings = {}
  local function report(where, p) findings[#findings + 1] = where .. ": " .. p end
  local batch = S.entries_where("worker")
  local counts, order = {}, {}
  local function count(key, before)
    if not counts[key] then counts[key] = 0; order[#order + 1] = key end
    counts[key] = counts[key] + S.calls - before
  end
  for _, e in ipairs(batch) do
    local before = S.calls
    S.run_entry(e, report, { selves = function(list) return keep(list, true) end })
    count(e.key, before)
  end
  local close = byname["loom.MessagePort.close"][1]
  local before = S.calls
  local p = one(close, { self = loom.parentPort, args = pack() }, methcall("close"), loom.parentPort, pack())
  if p then report("loom.MessagePort.close, a live object, good arguments", p) end
  count(close.key, before)
  for _, e in ipairs(batch) do
    if e.method then
      before = S.calls
      S.run_entry(e, report, { selves = function(list) return keep(list, false) end, noself = true })
      count(e.key, before)
    end
  end
  local f = assert(io.open(path, "w"))
  f:write("CALLS\t", S.calls, "\n")
  for _, k in ipairs(order) do f:write("COUNT\t", k, "\t", counts[k], "\n") end
  for _, x in ipairs(findings) do f:write("FINDING\t", (x:gsub("\n", "\\n")), "\n") end
  f:write("DONE\n")
  f:close()
end

-- The calls of a fresh entry, one worker each, all at once; a call that
-- blocks must be stopped by terminate() (exit code 1).  Returns the
-- findings and the number of calls.
function S.run_fresh(e, bound_ms)
  local findings = {}
  local plan = S.fresh_plan(e)
  local runs = {}
  local values = S.values()
  for i, step in ipairs(plan) do
    local where, pos, vi = step[1], step[2], step[3]
    local v
    if vi > 0 then v = values[vi][2] elseif pos > 0 then v = e.args()[1] end
    local n = pos == 0 and 0 or math.max(pos, e.args().n)
    local run = { where = where, expect = e.expect(v, n) }
    local w = loom.Worker(function(key, variant, p, x)
      local S = require "sweep_lib"
      local port = require("loom").parentPort
      S.fresh_call(key, variant or nil, p, x, function(m) port:postMessage(m) end)
    end, { argv = { e.key, e.variant or false, pos, vi }, name = "sweep " .. i })
    w:on("message", function(m) run.msg = m end)
    w:on("error", function(err) run.err = err end)
    w:on("exit", function(code) run.code = code end)
    run.w = w
    runs[#runs + 1] = run
  end
  local function alldone(blockers)
    for _, r in ipairs(runs) do
      if r.code == nil and (blockers or r.expect ~= "block") then return false end
    end
    return true
  end
  local deadline = loom.now() + bound_ms
  while not alldone(false) and loom.now() < deadline do pcall(loom.poll, 5); loom.sleep(1) end
  -- what blocks as asked (and what hangs) must stop at terminate()
  for _, r in ipairs(runs) do
    if r.code == nil then
      r.blocked = r.msg == nil
      r.w:terminate()
    end
  end
  deadline = loom.now() + bound_ms
  while not alldone(true) and loom.now() < deadline do pcall(loom.poll, 5); loom.sleep(1) end
  for _, r in ipairs(runs) do
    local where = label(e) .. ", " .. r.where
    local x = r.expect
    local function bad(p) findings[#findings + 1] = where .. ": " .. p end
    if r.code == nil then
      bad("did not exit after terminate() within " .. bound_ms .. " ms")
      r.w:unref()
    elseif r.err ~= nil then
      bad("the worker raised: " .. short(r.err))
    elseif type(x) == "table" then
      if r.code ~= x.exit then bad(("exit code %s, expected %s"):format(tostring(r.code), tostring(x.exit))) end
    elseif x == "block" then
      if not r.blocked then bad("expected to block until terminate(), but " .. short(r.msg and r.msg[1]))
      elseif r.code ~= 1 then bad("terminated while blocked, exit code " .. tostring(r.code)) end
    elseif x == "error" or x == "return" then
      if r.msg == nil then
        bad(("expected it to %s, but it blocked (exit code %s)")
            :format(x == "error" and "raise" or "return", tostring(r.code)))
      else
        if r.msg[2] then bad(r.msg[2]) end
        if x == "error" and r.msg[1] ~= "raised" then bad("expected an error, it returned") end
        if x == "return" and r.msg[1] ~= "returned" then bad("expected it to return, it raised " .. tostring(r.msg[3])) end
        if r.code ~= 0 then bad("exit code " .. tostring(r.code) .. ", expected 0") end
      end
    end
  end
  return findings, #plan
end

-- loom.exit on the main thread: one child process per call
function S.exit_script(key, variant, pos, vi)
  return ([[
    local S = require "sweep_lib"
    local loom = require "loom"
    local e
    for _, x in ipairs(S.byname[%q]) do if (x.variant or false) == %s then e = x end end
    local args = S.fresh_args(e, %d, %d)
    local t = e.t()
    local ok, err = pcall(function() return t.exit(table.unpack(args, 1, args.n)) end)
    local p = S.judge(e, { pos = %d > 0 and %d > 0 and %d or nil, args = args }, ok, table.pack(err))
    io.write(ok and "RETURNED" or "RAISED", "\t", p or "", "\n")
  ]]):format(key, variant and ("%q"):format(variant) or "false", pos, vi, pos, vi, pos)
end

function S.run_exit(e, run_script)
  local findings = {}
  local plan = S.fresh_plan(e)
  local values = S.values()
  for _, step in ipairs(plan) do
    local where, pos, vi = step[1], step[2], step[3]
    local v
    if vi > 0 then v = values[vi][2] elseif pos > 0 then v = e.args()[1] end
    local x = e.expect(v, pos == 0 and 0 or 1)
    local out = run_script(S.exit_script(e.key, e.variant, pos, vi))
    local rc = tonumber(out:match("rc=(%d+)"))
    local w = label(e) .. ", " .. where
    local line = out:match("RAISED\t([^\n]*)") or out:match("RETURNED\t([^\n]*)")
    if type(x) == "table" then
      if rc ~= x.exit then
        findings[#findings + 1] = ("%s: exit status %s, expected %d: %s")
                                  :format(w, tostring(rc), x.exit, short(out))
      end
      if line then findings[#findings + 1] = w .. ": did not exit: " .. short(out) end
    else
      if not out:find("RAISED", 1, true) then findings[#findings + 1] = w .. ": expected an error: " .. short(out)
      elseif line ~= "" then findings[#findings + 1] = w .. ": " .. line end
      if rc ~= 0 then findings[#findings + 1] = w .. ": exit status " .. tostring(rc) end
    end
  end
  return findings, #plan
end

-- }==================================================================

return S
