-- loom.future: Futures.  Callbacks run as soon as a future settles, on
-- that turn ("settle last": settle after the bookkeeping that led to it).
-- f:await() yields inside loom.async and runs the event loop elsewhere.
local core = require "loom.core"
local events = require "loom.events"

local type, setmetatable, getmetatable, error, xpcall =
      type, setmetatable, getmetatable, error, xpcall
local co_create, co_resume, co_yield, co_running, co_status =
      coroutine.create, coroutine.resume, coroutine.yield, coroutine.running,
      coroutine.status
local traceback = debug.traceback
local table_move = table.move
local argerror = events.argerror

local M = {}

local Future = { __name = "loom.Future" }
Future.__index = Future
M.Future = Future

local PENDING, FULFILLED, REJECTED = 0, 1, 2
M.PENDING, M.FULFILLED, M.REJECTED = PENDING, FULFILLED, REJECTED

local function newfuture()
  return setmetatable({ _s = PENDING }, Future)
end
M.new = newfuture

-- Rejections nobody handles: reported on the next turn (or when the
-- state closes), never silently lost.  A handler attached before then
-- (next, catch, await, all...) takes it off the list.
local unhandled, unhandledlist = {}, {}
local reporter          -- the timer that reports them, while one is due
local onunhandled       -- user's handler(err, traceback), or nil: stderr

local function report()
  reporter = nil
  local list = unhandledlist
  unhandledlist = {}
  for i = 1, #list do
    local f = list[i]
    if unhandled[f] then
      unhandled[f] = nil
      if onunhandled then onunhandled(f._v, f._tb)
      else
        io.stderr:write("loom: a rejected future nobody handled: ", tostring(f._v), "\n",
                        f._tb and (tostring(f._tb) .. "\n") or "")
      end
    end
  end
end

local function markunhandled(f)
  unhandled[f] = true
  unhandledlist[#unhandledlist + 1] = f
  if not reporter then
    local ok, t = pcall(core.timer, report, 0, false)
    if ok then reporter = t end    -- (none once loom has closed: see below)
  end
end

-- the state closes: report what is left
M._closing = setmetatable({}, { __gc = function() pcall(report) end })

function M.onUnhandledRejection(fn)
  if fn ~= nil and type(fn) ~= "function" then
    argerror("onUnhandledRejection", 1, "function or nil", fn)
  end
  onunhandled = fn
end

-- Callbacks of settled futures run from one queue, in order, so that a
-- chain of any length settles without deepening the C stack.
local queue, qhead, qtail, draining = {}, 1, 0, false

local function drainloop()
  while qhead <= qtail do
    local cb, f = queue[qhead], queue[qhead + 1]
    queue[qhead], queue[qhead + 1] = nil, nil
    qhead = qhead + 2
    cb(f)
  end
end

-- a callback that raises (loom's own never do, but terminate() can stop
-- any of them) leaves the rest queued for the next settle
local function drain()
  draining = true
  local ok, err = pcall(drainloop)
  draining = false
  if qhead > qtail then qhead, qtail = 1, 0 end
  if not ok then error(err, 0) end
end

-- hold(fn, ...): pcall(fn, ...), the callbacks of what it settles held
-- until it returns and then run in order (a batch of settles drains once;
-- the pool's results).  A callback that raises raises from here.
function M.hold(fn, a, b, c)
  if draining then return pcall(fn, a, b, c) end
  draining = true
  local ok, err = pcall(fn, a, b, c)
  draining = false
  if qhead <= qtail then drain() end
  return ok, err
end

local function settle(f, state, v, tb)
  if f._s ~= PENDING then return false end
  f._s, f._v = state, v
  if tb ~= nil then f._tb = tb end     -- (a nil into a missing key is a slow store)
  local cbs = f._cbs
  f._cbs = nil
  if cbs then
    if type(cbs) == "function" then        -- one callback: no list
      queue[qtail + 1], queue[qtail + 2] = cbs, f
      qtail = qtail + 2
    else
      for i = 1, #cbs do
        queue[qtail + 1], queue[qtail + 2] = cbs[i], f
        qtail = qtail + 2
      end
    end
    if not draining then drain() end
  elseif state == REJECTED and not f._awaited then
    markunhandled(f)
  end
  return true
end
M.settle = settle

local function isfuture(v) return getmetatable(v) == Future end
M.isFuture = isfuture

local function checkfuture(f, fname)
  if not isfuture(f) then
    error(("bad argument #1 to '%s' (loom.Future expected, got %s)"):format(fname, type(f)), 3)
  end
end

function Future.resolve(f, v)
  checkfuture(f, "resolve")
  return settle(f, FULFILLED, v)
end
function Future.reject(f, e, tb)
  checkfuture(f, "reject")
  return settle(f, REJECTED, e, tb)
end
function Future.new() return newfuture() end

-- call cb(f) once f settles; a plain value counts as a settled future
local function whendone(f, cb)
  if not isfuture(f) then return cb({ _s = FULFILLED, _v = f }) end
  if f._s ~= PENDING then
    unhandled[f] = nil
    return cb(f)
  end
  -- _cbs: the one callback, or the list of them in order
  local cbs = f._cbs
  if not cbs then f._cbs = cb
  elseif type(cbs) == "function" then f._cbs = { cbs, cb }
  else cbs[#cbs + 1] = cb end
end
M.whendone = whendone

function Future:state()
  checkfuture(self, "state")
  return self._s == PENDING and "pending" or self._s == FULFILLED and "fulfilled"
         or "rejected"
end

local function keeptb(e) return { e, traceback(nil, 2) } end

-- f:next(onValue, onError) -> Future of what the callback returns
function Future:next(onValue, onError)
  checkfuture(self, "next")
  if onValue ~= nil and type(onValue) ~= "function" then argerror("next", 1, "function", onValue) end
  if onError ~= nil and type(onError) ~= "function" then argerror("next", 2, "function", onError) end
  local out = newfuture()
  whendone(self, function(f)
    local h
    if f._s == FULFILLED then h = onValue else h = onError end
    if h == nil then return settle(out, f._s, f._v, f._tb) end
    local ok, r = xpcall(h, keeptb, f._v, f._tb)
    if not ok then return settle(out, REJECTED, r[1], r[2]) end
    if isfuture(r) then
      whendone(r, function(g) settle(out, g._s, g._v, g._tb) end)
    else
      settle(out, FULFILLED, r)
    end
  end)
  return out
end

function Future:catch(onError)
  checkfuture(self, "catch")
  if onError ~= nil and type(onError) ~= "function" then argerror("catch", 1, "function", onError) end
  return self:next(nil, onError)
end

local asyncs = setmetatable({}, { __mode = "k" })   -- coroutines of loom.async

function M.inasync() return asyncs[co_running()] == true end

-- f:await(): the value, or raise the error.  Inside loom.async it yields;
-- elsewhere it runs the event loop until the future settles.
function Future:await()
  checkfuture(self, "await")
  if self._s == PENDING then
    if asyncs[co_running()] then
      co_yield(self)
    else
      -- awaited: a rejection is handled here, even when the loop turn
      -- that settles it also runs the unhandled-rejection report
      self._awaited = true
      local step = core.step
      repeat
        if not step() and self._s == PENDING then
          self._awaited = nil
          error("await: the future can never settle (the event loop is empty)", 2)
        end
      until self._s ~= PENDING
    end
  end
  if self._s == FULFILLED then return self._v end
  unhandled[self] = nil          -- raised here: handled
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
      return settle(out, REJECTED, r, traceback(co))
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

local function checklist(list, fname)
  if type(list) ~= "table" then argerror(fname, 1, "table", list, 3) end   -- at all's caller
end

-- The combinators: each settled future of 'list' is seen by shortcut
-- (true: it settled 'out' itself) or recorded at its index; when all are
-- recorded, finish(out, records).  Plain values count as fulfilled.
local function gather(list, fname, shortcut, record, finish)
  checklist(list, fname)
  local out, n, acc = newfuture(), #list, {}
  local left = n
  if n == 0 then finish(out, acc) end
  for i = 1, n do
    whendone(list[i], function(f)
      if shortcut and shortcut(out, f) then return end
      acc[i] = record(f)
      left = left - 1
      if left == 0 then finish(out, acc) end
    end)
  end
  return out
end

local function value(f) return f._v end
local function fulfil(out, acc) settle(out, FULFILLED, acc) end

-- every value, in order; the first rejection rejects.  (gather's shape
-- with one callback for the whole list, not one per entry: the list is
-- copied, and each future in the copy is replaced by its value at the end)
function M.all(list)
  checklist(list, "all")
  local n = #list
  local out, left, vals = newfuture(), n, table_move(list, 1, n, 1, {})
  local function one(f)
    if out._s ~= PENDING then return end
    if f._s == REJECTED then settle(out, REJECTED, f._v, f._tb); return end
    left = left - 1
    if left == 0 then
      for i = 1, n do
        local x = vals[i]
        if isfuture(x) then vals[i] = x._v end
      end
      settle(out, FULFILLED, vals)
    end
  end
  if n == 0 then settle(out, FULFILLED, vals) end
  for i = 1, n do
    local x = vals[i]
    -- (whendone, inlined for the common case: a pending future, no callback yet)
    if getmetatable(x) == Future and x._s == PENDING and not x._cbs then x._cbs = one
    else whendone(x, one) end
  end
  return out
end

-- the first to settle, either way
function M.race(list)
  checklist(list, "race")
  local out = newfuture()
  for i = 1, #list do
    whendone(list[i], function(f) settle(out, f._s, f._v, f._tb) end)
  end
  return out
end

-- the first to fulfil; rejected with the list of errors if all reject
function M.any(list)
  return gather(list, "any", function(out, f)
    if f._s == FULFILLED then settle(out, FULFILLED, f._v); return true end
  end, value, function(out, errs) settle(out, REJECTED, errs) end)
end

-- a list of {status = "fulfilled", value = v} | {status = "rejected", reason = e}
function M.allSettled(list)
  return gather(list, "allSettled", nil, function(f)
    if f._s == FULFILLED then return { status = "fulfilled", value = f._v } end
    return { status = "rejected", reason = f._v, traceback = f._tb }
  end, fulfil)
end

core.boot("loom.future", debug.getinfo(1, "f").func)

return M
