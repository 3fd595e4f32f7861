-- Shared helpers for the loom specs.
--
--   local H = require "helper"
--   before_each(H.before_each); after_each(H.after_each)
--
-- H.spawn(source, opts) is loom.Worker plus bookkeeping: after each test the
-- helper drives the loop until every worker it spawned has exited (stopping
-- any left running, which fails the test), then checks that loom.core holds
-- nothing: no unjoined child thread, no hold on the loop, no message left
-- undelivered, and a loop that nothing keeps alive (libuv's "the loop closed
-- clean": a test that leaves a ref'd timer or interval fails).
--
-- Every wait is bounded, so a worker that cannot be stopped fails a test
-- instead of hanging the suite.  Bounds are generous and are multiplied by
-- H.scale under valgrind or a sanitizer (or by $LOOM_TIME_SCALE).
--
-- Scaling happens once, inside the helpers: H.run, H.run_until, H.join and
-- H.poll_error take plain (unscaled) milliseconds.  H.ms(n) is only for a
-- bound a test checks itself against loom.now(); never pass its result to a
-- helper.
local loom = require "loom"
local core = require "loom.core"

-- busted prints its summary just before the state closes; if closing hangs
-- (a worker loom cannot stop), a pipe's buffer would swallow the results
io.stdout:setvbuf("line")

local H = {}

H.dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

function H.fixture(name) return H.dir .. "/fixtures/" .. name end

do
  local preload = os.getenv("LD_PRELOAD") or ""
  -- under valgrind or a sanitizer (whose allocators keep freed memory)
  H.instrumented = (preload:find("vgpreload") or preload:find("san")) ~= nil
  H.scale = tonumber(os.getenv("LOOM_TIME_SCALE") or "") or (H.instrumented and 20 or 1)
end

-- this process's resident set in KiB (nil without /proc)
-- The resident set, once this thread's heap (and those of exited threads)
-- gave back what it holds free: mimalloc keeps freed pages a while, so
-- without this the figure shows the last burst, not what is live.
function H.rss_kb()
  local core = require "loom.core"
  if core.heap_collect then core.heap_collect() end
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- Child processes: /bin/sh itself crashes when libtsan is preloaded into
-- it, so tests that run a script in a child process cannot run in the
-- ThreadSanitizer build (they run in the normal and ASan builds).
H.can_fork = not (os.getenv("LD_PRELOAD") or ""):find("libtsan")

-- In a test that needs a child process: `if H.no_fork(pending) then return end`
function H.no_fork(pending)
  if H.can_fork then return false end
  pending("needs a child process: /bin/sh crashes under the TSan preload")
  return true
end

-- Run a Lua script in a child process (so that a crash fails one test, not
-- the suite); returns its output with "rc=<exit status>" appended.
function H.run_script(script, timeout_s)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "w"))
  f:write(script)
  f:close()
  local p = io.popen(("timeout %d %s %s 2>&1; echo \"rc=$?\""):format(
    timeout_s or 30, os.getenv("LUA") or "lua5.4", tmp))
  local out = p:read("a")
  p:close()
  os.remove(tmp)
  return out
end

-- a bound in milliseconds, scaled for slow builds (for a test's own checks
-- against loom.now(); the helpers below scale their arguments themselves)
function H.ms(n) return n * H.scale end

local tracked = {}      -- { w = worker, exited = bool, code = int }
local leaked = 0        -- workers no terminate() could stop (earlier failures)

-- f:await() with a bound: raises instead of hanging the suite
function H.await(f, ms)
  ms = H.ms(ms or 10000)
  local guard = loom.setTimeout(function()
    error(("await: not settled after %d ms"):format(ms), 0)
  end, ms)
  guard:unref()
  local ok, v = pcall(function() return f:await() end)
  guard:close()
  if not ok then error(v, 0) end
  return v
end

function H.spawn(source, opts)
  local w = loom.Worker(source, opts)
  local rec = { w = w, exited = false }
  w:on("exit", function(code) rec.exited, rec.code = true, code end)
  tracked[#tracked + 1] = rec
  return w
end

-- has the exit event of w fired?
function H.exited(w)
  for _, rec in ipairs(tracked) do
    if rec.w == w then return rec.exited, rec.code end
  end
  return false
end

-- loom.run(), raising if it has not returned within ms (unscaled, default
-- 10 s).  The guard timer is unref'd: it never keeps the loop alive by itself.
function H.run(ms)
  ms = H.ms(ms or 10000)
  local guard = loom.setTimeout(function()
    error(("loom.run() still running after %d ms"):format(ms), 0)
  end, ms)
  guard:unref()
  local ok, r = pcall(loom.run)
  guard:close()
  if not ok then error(r, 0) end
  return r
end

-- Drive the loop with loom.poll until pred() is true; false after ms
-- (unscaled, default 5 s).
function H.run_until(pred, ms)
  local deadline = loom.now() + H.ms(ms or 5000)
  while true do
    loom.poll(5)
    if pred() then return true end
    if loom.now() >= deadline then return false end
    loom.sleep(1)
  end
end

-- wait for the exit event of w; returns its code (raises after ms,
-- unscaled, default 5 s)
function H.join(w, ms)
  if not H.run_until(function() return (H.exited(w)) end, ms or 5000) then
    error("worker " .. tostring(w.threadId) .. " did not exit in time", 2)
  end
  return select(2, H.exited(w))
end

-- Drive the loop with loom.poll until a poll raises; returns that error, or
-- nil when none was raised within ms (unscaled, default 5 s).
function H.poll_error(ms)
  local deadline = loom.now() + H.ms(ms or 5000)
  repeat
    local ok, err = pcall(loom.poll, 5)
    if not ok then return err end
    loom.sleep(1)
  until loom.now() >= deadline
  return nil
end

-- Flags: a one-way signal between two threads for an ordering that the
-- port between them cannot express (the parent's posts must all be queued
-- before the worker's loop starts; a worker whose port is closed must say
-- so).  A flag is a file: one side writes it, the other polls it, always
-- within a bound, never by sleeping.  H.flag() makes one (removed after the
-- test); H.set_flag(path) sets it; H.flag_is_set(path) looks at it;
-- H.wait_flag(path, ms) polls until it is set.  set_flag and wait_flag have
-- no upvalues, so a worker function can use them as upvalues (`local
-- wait_flag = H.wait_flag` outside the function).  Give wait_flag a bound
-- already scaled with H.ms(): a worker cannot see H.scale.
local flags = {}

function H.flag()
  local path = os.tmpname()       -- created empty: not set
  flags[#flags + 1] = path
  return path
end

function H.set_flag(path)
  local f = assert(io.open(path, "w"))
  f:write("set")
  f:close()
end

function H.flag_is_set(path)
  local f = io.open(path, "r")
  local s = f and f:read("a")
  if f then f:close() end
  return s == "set"
end

function H.wait_flag(path, ms)
  local now = require("loom").now
  local deadline = now() + ms
  repeat
    local f = io.open(path, "r")
    local s = f and f:read("a")
    if f then f:close() end
    if s == "set" then return true end
  until now() >= deadline
  return false
end

-- A worker that sends back each message it gets, n of them (default 1),
-- then lets its loop end.
function H.echo(n, opts)
  opts = opts or {}
  opts.argv = { n or 1 }
  return H.spawn(function(count)
    local loom = require "loom"
    local port = loom.parentPort
    local seen = 0
    local function onmsg(m)
      port:postMessage(m)
      seen = seen + 1
      if seen >= count then port:off("message", onmsg) end
    end
    port:on("message", onmsg)
  end, opts)
end

-- Send v to a fresh echo worker and return what comes back.
function H.roundtrip(v)
  local w = H.echo(1)
  local got, n = nil, 0
  w:on("message", function(m) got, n = m, n + 1 end)
  w:on("error", function(e) error("echo worker failed: " .. tostring(e), 0) end)
  assert(w:postMessage(v))
  H.run()
  assert(n == 1, "expected one reply, got " .. n)
  return got
end

-- Run fn(...) in a worker and return the first value it posts back
-- (or raise the worker's error).
function H.inworker(fn, ...)
  local w = H.spawn(fn, { argv = table.pack(...) })
  local got, n, err = nil, 0, nil
  w:on("message", function(m)
    n = n + 1
    if n == 1 then got = m end
  end)
  w:on("error", function(e, tb) err = tostring(e) .. "\n" .. tostring(tb) end)
  H.run()
  if err then error("worker failed: " .. err, 2) end
  return got
end

function H.stats() return core.stats() end

local carried_alive = false  -- an earlier test left the loop alive

function H.before_each()
  tracked = {}
  -- a loop an earlier test left alive has failed that test already
  carried_alive = core.stats().alive
end

-- Drive the loop (errors from late events are swallowed) until pred().
local function settle(pred, ms)
  local deadline = loom.now() + H.ms(ms)
  while true do
    pcall(loom.poll, 5)
    if pred() then return true end
    if loom.now() >= deadline then return false end
    loom.sleep(1)
  end
end

-- Handles that were closed (a closed timer, the guard of H.run, those a
-- finished worker leaves) keep the loop "alive" until the next turn runs
-- their close callbacks.  Collect first (a timer the test dropped closes
-- in its finalizer), then give them a few non-blocking turns: a ref'd
-- timer or interval that is still active stays, and fails the test.
local function close_handles()
  collectgarbage()
  for _ = 1, 10 do
    if not core.stats().alive then return end
    pcall(loom.poll, 0)
  end
end

function H.after_each()
  local problems = {}
  -- before anything is delivered: messages the test left in the queue
  local left = core.stats().pending
  if left ~= 0 then
    problems[#problems + 1] = ("%d message(s) left undelivered by the test"):format(left)
  end
  local function alldone()
    for _, rec in ipairs(tracked) do
      if not rec.exited then return false end
    end
    local s = core.stats()
    return s.children == leaked and s.holds == 0
  end
  if not settle(alldone, 1000) then
    -- workers a failed test left running: stop them (not an error in itself)
    for _, rec in ipairs(tracked) do
      if not rec.exited then pcall(rec.w.terminate, rec.w) end
    end
    if not settle(alldone, 3000) then
      for _, rec in ipairs(tracked) do
        if not rec.exited then       -- cannot be stopped: do not cascade
          pcall(rec.w.unref, rec.w)
          leaked = leaked + 1
          problems[#problems + 1] = ("worker %d ignored terminate()"):format(rec.w.threadId)
        end
      end
    end
  end
  tracked = {}
  for i = #flags, 1, -1 do os.remove(flags[i]); flags[i] = nil end
  close_handles()
  local s = core.stats()
  if s.children ~= leaked then
    problems[#problems + 1] = ("core.stats().children == %d after the test"):format(s.children - leaked)
  end
  if s.holds ~= 0 then
    problems[#problems + 1] = ("core.stats().holds == %d after the test"):format(s.holds)
  end
  if s.pending ~= 0 then
    problems[#problems + 1] = ("core.stats().pending == %d after the test"):format(s.pending)
  end
  if s.alive and not carried_alive then
    problems[#problems + 1] = "core.stats().alive after the test: something ref'd"
      .. " (a timer, an interval, an immediate) still keeps the loop alive"
  end
  if #problems > 0 then error(table.concat(problems, "; "), 0) end
end

return H
