-- Pool: a task pool over workers (run, named tasks, errors, replacement
-- of dead workers, close and destroy; abort, timeouts, maxQueue, map,
-- drain and stats).  Every test closes or destroys its pool and awaits
-- it, so no worker outlives its test.
local H = require "helper"
local loom = require "loom"

local TASKS = H.fixture("pool_tasks.lua")

local await = H.await

-- the error a future rejects with (and its traceback)
local function rejection(f, ms)
  local err, tb
  local done = false
  f:next(function(v) done = true; err = "fulfilled with " .. tostring(v) end,
         function(e, t) done = true; err, tb = e, t end)
  local ok, why = pcall(await, f:next(nil, function() end), ms)
  if not ok then error(why, 2) end
  assert(done)
  return err, tb
end

local made = {}          -- the pools of a test: a failed test's are destroyed
local function pool(opts)
  opts = opts or {}
  if not opts.fn and not opts.source then opts.filename = opts.filename or TASKS end
  opts.maxThreads = opts.maxThreads or 2
  local p = loom.Pool(opts)
  made[#made + 1] = p
  return p
end

local function cleanup()
  for _, p in ipairs(made) do
    if #p._all > 0 then
      p:destroy()
      H.run_until(function() return #p._all == 0 end, 5000)
    end
  end
  made = {}
end

local function closed(p) assert.is_true(await(p:close())) end

describe("Pool", function()
  before_each(H.before_each)
  after_each(function() cleanup(); H.after_each() end)

  describe("runs tasks", function()
    it("named tasks from a file", function()
      local p = pool()
      assert.are.equal(2, await(p:run(1, { name = "inc" })))
      assert.are.same({ a = { 1, 2 } }, await(p:run({ a = { 1, 2 } }, { name = "echo" })))
      closed(p)
    end)

    it("a function returned by a Lua function, and source code", function()
      local p = pool{ fn = function() return function(x) return x * 2 end end }
      assert.are.equal(42, await(p:run(21)))
      closed(p)
      p = pool{ source = "return { default = function(x) return -x end, sq = function(x) return x*x end }" }
      assert.are.equal(-3, await(p:run(3)))
      assert.are.equal(9, await(p:run(3, { name = "sq" })))
      closed(p)
    end)

    it("many tasks, each result for its own task", function()
      local p = pool()
      local fs = {}
      for i = 1, 2000 do fs[i] = p:run(i, { name = "inc" }) end
      local rs = await(loom.all(fs))
      for i = 1, 2000 do assert.are.equal(i + 1, rs[i]) end
      closed(p)
    end)

    it("tasks that return a future (async tasks)", function()
      local p = pool()
      assert.are.equal(5, await(p:run(5, { name = "sleep" })))
      closed(p)
    end)

    it("transfer moves a port into the task", function()
      local p = pool{ maxThreads = 1, fn = function()
        return function(port) port:postMessage("from the task"); port:close(); return true end
      end }
      local ch = loom.MessageChannel()
      local got
      ch.port1:on("message", function(m) got = m end)
      assert.is_true(await(p:run(ch.port2, { transfer = { ch.port2 } })))
      assert.is_true(H.run_until(function() return got ~= nil end))
      assert.are.equal("from the task", got)
      ch.port1:close()
      closed(p)
    end)

    it("inside loom.async, awaiting yields", function()
      local p = pool()
      local got = await(loom.async(function()
        local a = p:run(1, { name = "inc" }):await()
        local b = p:run(a, { name = "inc" }):await()
        return b
      end))
      assert.are.equal(3, got)
      closed(p)
    end)

    it("an idle worker's own timers keep running between tasks", function()
      local p = pool{ maxThreads = 1, fn = function()
        local loom = require "loom"
        local ticks = 0
        return {
          start = function() loom.setInterval(function() ticks = ticks + 1 end, 5):unref(); return true end,
          ticks = function() return ticks end,
        }
      end }
      assert.is_true(await(p:run(nil, { name = "start" })))
      local t0 = loom.now()
      while loom.now() - t0 < 60 do loom.poll(5) end    -- the pool is idle meanwhile
      assert.is_true(await(p:run(nil, { name = "ticks" })) >= 3)
      closed(p)
    end)
  end)

  describe("task errors", function()
    it("reject with the error and the worker's traceback naming the task", function()
      local p = pool()
      local err, tb = rejection(p:run("boom", { name = "fail" }))
      assert.are.equal("boom", err:match("boom"))
      assert.truthy(tb:find("in pool task 'fail'", 1, true), tb)
      assert.truthy(tb:find("pool_tasks.lua", 1, true), tb)
      -- the error value is cloned: a table comes back as a table
      err = rejection(p:run(nil, { name = "failtable" }))
      assert.are.same({ code = 42 }, err)
      -- the pool still works
      assert.are.equal(2, await(p:run(1, { name = "inc" })))
      closed(p)
    end)

    it("an unknown task name, and no default task", function()
      local p = pool()
      assert.are.equal("run: no task named 'nope'", rejection(p:run(1, { name = "nope" })))
      assert.truthy(rejection(p:run(1)):find("no default task", 1, true))
      closed(p)
    end)

    it("uncloneable arguments and results name the path of the bad value", function()
      local p = pool{ fn = function()
        return { bad = function() return { list = { 1, io.stdout } } end, ok = function(x) return x end,
                 badErr = function() error({ io.stdout }) end }
      end }
      local err = rejection(p:run({ h = { io.stdout } }, { name = "ok" }))
      assert.truthy(tostring(err):find("cannot clone the task.h[1]: userdata", 1, true), err)
      err = rejection(p:run(nil, { name = "bad" }))
      assert.truthy(tostring(err):find("cannot clone the task's result.list[2]: userdata", 1, true), err)
      err = rejection(p:run(nil, { name = "badErr" }))
      assert.are.equal("string", type(err))
      assert.are.equal(7, await(p:run(7, { name = "ok" })))
      closed(p)
    end)
  end)

  describe("bad input", function()
    local function fails(pat, fn, ...)
      local ok, err = pcall(fn, ...)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(pat, 1, true), err)
    end

    it("at creation: clear errors, no worker left", function()
      fails("bad argument #1 to 'Pool' (table of options expected, got nil)", loom.Pool)
      fails("exactly one of the options", loom.Pool, {})
      fails("exactly one of the options", loom.Pool, { filename = TASKS, source = "return 1" })
      fails("Pool: cannot load the task file", loom.Pool, { filename = "/nonexistent/tasks.lua" })
      fails("Pool: cannot load the task file", loom.Pool, { filename = H.fixture("syntax_error.lua") })
      fails("Pool: cannot load the task source", loom.Pool, { source = "return (" })
      fails("unknown option 'maxthreads'", loom.Pool, { filename = TASKS, maxthreads = 2 })
      fails("option 'maxThreads' must be an integer >= 1", loom.Pool, { filename = TASKS, maxThreads = 0 })
      fails("option 'minThreads' must be an integer >= 0", loom.Pool, { filename = TASKS, minThreads = 1.5 })
      fails("minThreads (3) > maxThreads (2)", loom.Pool, { filename = TASKS, minThreads = 3, maxThreads = 2 })
      fails("option 'maxQueue'", loom.Pool, { filename = TASKS, maxQueue = "lots" })
      fails("option 'idleTimeout' must be a number of ms >= 0", loom.Pool, { filename = TASKS, idleTimeout = -1 })
      fails("option 'timeout' must be", loom.Pool, { filename = TASKS, timeout = 0 / 0 })
      fails("option 'fn' must be a function", loom.Pool, { fn = 1 })
      local handle = io.stdout
      fails("Pool: cannot clone option 'fn'(upvalue 'handle'): userdata", loom.Pool,
            { fn = function() return handle end, minThreads = 0 })
      fails("resourceLimits", loom.Pool, { filename = TASKS, resourceLimits = { bogus = 1 } })
    end)

    it("a task file that fails when it runs rejects every task, and new ones", function()
      local p = pool{ filename = H.fixture("pool_init_error.lua") }
      local err = rejection(p:run(1))
      assert.truthy(err:find("the task module failed in a worker", 1, true), err)
      assert.truthy(err:find("the task file fails when it runs", 1, true), err)
      assert.truthy(rejection(p:run(2)):find("the task module failed", 1, true))
      closed(p)
      p = pool{ fn = function() return 42 end }
      assert.truthy(rejection(p:run(1)):find("returned number", 1, true))
      closed(p)
    end)

    it("run's arguments", function()
      local p = pool()
      fails("bad argument #1 to 'run' (loom.Pool expected, got number)", p.run, 1)
      fails("bad argument #2 to 'run' (table of options expected, got number)", p.run, p, 1, 2)
      fails("bad argument #2 to 'run' (unknown option 'nam')", p.run, p, 1, { nam = "x" })
      fails("bad argument #2 to 'run' (option 'name' must be a string, got number)", p.run, p, 1, { name = 1 })
      fails("option 'signal' must be a loom.AbortSignal", p.run, p, 1, { signal = {} })
      fails("option 'timeout' must be a number of ms >= 0", p.run, p, 1, { timeout = -5 })
      fails("option 'transfer' must be a table", p.run, p, 1, { transfer = 1 })
      fails("bad argument #1 to 'map' (table expected, got nil)", p.map, p)
      fails("bad argument #1 to 'stats' (loom.Pool expected", p.stats, {})
      closed(p)
      fails("run: the pool is closed", p.run, p, 1)
      fails("map: the pool is closed", p.map, p, { 1 })
    end)
  end)

  describe("workers that die", function()
    it("are replaced; only their own task fails", function()
      local p = pool{ maxThreads = 2, fn = function()
        return { exit = function() os.exit(3) end, id = function() return require("loom").threadId end,
                 inc = function(x) return x + 1 end }
      end }
      local fs = {}
      for i = 1, 50 do fs[i] = p:run(i, { name = "inc" }) end
      local err = rejection(p:run(nil, { name = "exit" }))
      assert.truthy(tostring(err):find("exited with code 3", 1, true), err)
      for i = 51, 100 do fs[i] = p:run(i, { name = "inc" }) end
      local rs = await(loom.all(fs))
      for i = 1, 100 do assert.are.equal(i + 1, rs[i]) end
      assert.is_true(H.run_until(function() return p:stats().threads >= 1 end))
      assert.are.equal(3, await(p:run(2, { name = "inc" })))
      closed(p)
    end)

    it("an uncaught error outside a task (a timer) kills the worker; the pool goes on", function()
      local p = pool{ maxThreads = 1, fn = function()
        local loom = require "loom"
        return { later = function() loom.setTimeout(function() error("timer boom") end, 1); return 1 end,
                 slow = function(ms) local t = loom.now() + ms; while loom.now() < t do end; return ms end,
                 inc = function(x) return x + 1 end }
      end }
      assert.are.equal(1, await(p:run(nil, { name = "later" })))
      -- the worker dies when its timer fires: whatever task it runs then fails
      local t0 = loom.now()
      while loom.now() - t0 < 50 do loom.poll(5) end
      assert.are.equal(11, await(p:run(10, { name = "inc" })))
      closed(p)
    end)

    it("out of memory under resourceLimits fails the task, not the pool", function()
      local p = pool{ maxThreads = 1, resourceLimits = { maxMemoryMb = 32 }, fn = function()
        return { hog = function() local t = {}; for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end end,
                 inc = function(x) return x + 1 end }
      end }
      local err = rejection(p:run(nil, { name = "hog" }), 60000)
      assert.truthy(tostring(err):find("memory", 1, true), err)
      assert.are.equal(2, await(p:run(1, { name = "inc" })))
      closed(p)
    end)
  end)

  describe("close and destroy", function()
    it("close finishes queued work, then stops the threads", function()
      local p = pool()
      local fs = {}
      for i = 1, 20 do fs[i] = p:run(2, { name = "spin" }) end
      local c = p:close()
      assert.are.equal(c, p:close())                   -- one future
      local rs = await(loom.all(fs))
      assert.are.equal(20, #rs)
      assert.is_true(await(c))
      assert.are.equal(0, p:stats().threads)
    end)

    it("destroy fails pending futures with \"destroyed\"", function()
      local p = pool{ maxThreads = 1 }
      local errs = {}
      for i = 1, 20 do
        p:run(20, { name = "spin" }):catch(function(e) errs[i] = e end)
      end
      loom.poll(0)
      assert.is_true(await(p:destroy()))
      for i = 1, 20 do assert.are.equal("destroyed", errs[i]) end
      local ok, err = pcall(p.run, p, 1)
      assert.is_false(ok)
      assert.truthy(err:find("run: the pool is destroyed", 1, true))
      assert.is_true(await(p:close()))                 -- after destroy: settled already
    end)

    it("an idle pool does not keep loom.run() going; close does until the end", function()
      local p = pool()
      assert.are.equal(2, await(p:run(1, { name = "inc" })))
      H.run(2000)                                      -- returns: the pool is idle
      local f = p:run(1, { name = "inc" })
      local got
      f:next(function(v) got = v end)
      H.run(5000)                                      -- runs until the task is done
      assert.are.equal(2, got)
      local c = p:close()
      H.run(5000)                                      -- and until the threads are gone
      assert.are.equal("fulfilled", c:state())
    end)
  end)

  describe("abort and timeouts", function()
    local function stoppable()
      return pool{ maxThreads = 1, abortGrace = 50, fn = function()
        local loom = require "loom"
        local ran = {}
        return {
          mark = function(k) ran[k] = true; return k end,
          ran = function(k) return ran[k] == true end,
          id = function() return loom.threadId end,
          spin = function(ms) local t = loom.now() + ms; while loom.now() < t do end; return ms end,
          -- checks its signal; returns once aborted
          coop = function(_, signal)
            while not signal.aborted do end
            return "stopped: " .. tostring(signal.reason)
          end,
          -- listens for abort from its own loop (an async task)
          listen = function(_, signal)
            local f = loom.Future.new()
            signal:on("abort", function(why) f:resolve("heard " .. tostring(why)) end)
            return f
          end,
          stubborn = function() while true do end end,
        }
      end }
    end

    it("aborting a queued task removes it: it never runs", function()
      local p = stoppable()
      local busy = p:run(100, { name = "spin" })
      local ac = loom.AbortController()
      local f = p:run("b", { name = "mark", signal = ac.signal })
      local g = p:run("c", { name = "mark" })
      loom.poll(0)
      ac:abort("changed my mind")
      assert.are.equal("changed my mind", rejection(f))
      assert.are.equal(100, await(busy))
      assert.are.equal("c", await(g))
      assert.is_false(await(p:run("b", { name = "ran" })))
      assert.is_true(await(p:run("c", { name = "ran" })))
      closed(p)
    end)

    it("abort just before run: rejected at once, never sent", function()
      local p = stoppable()
      local ac = loom.AbortController()
      ac:abort()
      local f = p:run("x", { name = "mark", signal = ac.signal })
      assert.are.equal("rejected", f:state())
      assert.are.equal("aborted", rejection(f))
      assert.is_false(await(p:run("x", { name = "ran" })))
      closed(p)
    end)

    it("aborting a running task signals it; a task that stops keeps its worker", function()
      local p = stoppable()
      local id = await(p:run(nil, { name = "id" }))
      local ac = loom.AbortController()
      local f = p:run(nil, { name = "coop", signal = ac.signal })
      local t = loom.setTimeout(function() ac:abort("enough") end, 20)
      assert.are.equal("enough", rejection(f))
      t:close()
      local ac2 = loom.AbortController()
      local g = p:run(nil, { name = "listen", signal = ac2.signal })
      loom.setTimeout(function() ac2:abort("now") end, 10)
      assert.are.equal("now", rejection(g))
      assert.are.equal(id, await(p:run(nil, { name = "id" })))   -- the same worker
      closed(p)
    end)

    it("a running task that ignores its signal: its worker is terminated and replaced", function()
      local p = stoppable()
      local id = await(p:run(nil, { name = "id" }))
      local ac = loom.AbortController()
      local f = p:run(nil, { name = "stubborn", signal = ac.signal })
      local after = p:run("after", { name = "mark" })          -- prefetched behind it
      loom.setTimeout(function() ac:abort() end, 20)
      assert.are.equal("aborted", rejection(f))
      assert.are.equal("after", await(after))                 -- ran on the new worker
      local id2 = await(p:run(nil, { name = "id" }))
      assert.are_not.equal(id, id2)
      closed(p)
    end)

    it("a stubborn task behind a finished one whose result the worker holds back", function()
      -- the quick task's result waits for the worker's next batch; the
      -- worker is in the stubborn task: it must still be stopped
      local p = stoppable()
      await(p:run(nil, { name = "id" }))
      local ac = loom.AbortController()
      local quick = p:run("quick", { name = "mark" })
      local f = p:run(nil, { name = "stubborn", signal = ac.signal })
      loom.setTimeout(function() ac:abort("stop") end, 20)
      assert.are.equal("stop", rejection(f))
      assert.are.equal("quick", await(quick))     -- (run again on the new worker)
      closed(p)
    end)

    it("an error in a 'drain' listener is raised from the loop; the pool goes on", function()
      local p = pool{ maxThreads = 1 }
      p:once("drain", function() error("drain listener failed") end)
      local f = p:run(1, { name = "inc" })
      local ok, err = pcall(await, f)
      assert.is_false(ok)
      assert.matches("drain listener failed", err)
      assert.are.equal(2, await(f))
      assert.are.equal(3, await(p:run(2, { name = "inc" })))
      closed(p)
    end)

    it("abort after the task finished changes nothing", function()
      local p = stoppable()
      local ac = loom.AbortController()
      local f = p:run("x", { name = "mark", signal = ac.signal })
      assert.are.equal("x", await(f))
      ac:abort()
      assert.are.equal("fulfilled", f:state())
      assert.are.equal(1, p:stats().completed)
      assert.are.equal(0, p:stats().failed)
      closed(p)
    end)

    it("races: aborts before, during and after many tasks; every future settles once", function()
      local p = stoppable()
      local n, fs, acs = 200, {}, {}
      for i = 1, n do
        acs[i] = loom.AbortController()
        fs[i] = p:run(i % 3 == 0 and 2 or 0, { name = "spin", signal = acs[i].signal })
        if i % 5 == 0 then acs[i]:abort() end                 -- before it runs
      end
      for i = 1, n do
        if i % 7 == 0 then loom.setTimeout(function() acs[i]:abort() end, i % 13) end
      end
      local states = await(loom.allSettled(fs), 60000)
      local ok, bad = 0, 0
      for i = 1, n do
        if states[i].status == "fulfilled" then ok = ok + 1
        else
          bad = bad + 1
          assert.are.equal("aborted", states[i].reason)
          assert.is_true(i % 5 == 0 or i % 7 == 0)
        end
      end
      for i = 1, n do acs[i]:abort() end                      -- after: nothing changes
      local s = p:stats()
      assert.are.equal(ok, s.completed)
      assert.are.equal(bad, s.failed)
      assert.are.equal(0, s.queued)
      assert.are.equal(0, s.running)
      closed(p)
    end)

    it("a per-task timeout, and the pool's default one", function()
      local p = stoppable()
      assert.are.equal("timeout", rejection(p:run(nil, { name = "coop", timeout = 20 })))
      assert.are.equal(0, await(p:run(0, { name = "spin", timeout = 5000 })))
      closed(p)
      p = pool{ maxThreads = 1, timeout = 20, abortGrace = 20 }
      assert.are.equal("timeout", rejection(p:run(2000, { name = "spin" })))
      assert.are.equal(2, await(p:run(1, { name = "inc", timeout = math.huge })))
      closed(p)
    end)
  end)

  describe("queue, map, drain, concurrency", function()
    it("maxQueue: runs past it fail with a clear error", function()
      local p = pool{ maxThreads = 1, maxQueue = 2 }
      local fs = {}
      for i = 1, 10 do fs[i] = p:run(i, { name = "inc" }) end
      local states = await(loom.allSettled(fs))
      local ok, full = 0, 0
      for _, s in ipairs(states) do
        if s.status == "fulfilled" then ok = ok + 1
        else
          full = full + 1
          assert.truthy(s.reason:find("run: the task queue is full (maxQueue = 2)", 1, true), s.reason)
        end
      end
      assert.are.equal(2, ok)
      assert.are.equal(8, full)
      closed(p)
      p = pool{ maxThreads = 2, maxQueue = "auto" }          -- maxThreads^2
      assert.are.equal(2, await(p:run(1, { name = "inc" })))
      closed(p)
    end)

    it("map keeps the order; one failure rejects it", function()
      local p = pool()
      local list = {}
      for i = 1, 300 do list[i] = i end
      local rs = await(p:map(list, { name = "inc" }))
      for i = 1, 300 do assert.are.equal(i + 1, rs[i]) end
      assert.are.same({}, await(p:map({}, { name = "inc" })))
      assert.truthy(rejection(p:map({ "no" }, { name = "fail" })):find(": no$"))
      closed(p)
    end)

    it("'drain' fires when the queue empties", function()
      local p = pool{ maxThreads = 1 }
      local drains = 0
      p:on("drain", function() drains = drains + 1 end)
      local fs = {}
      for i = 1, 50 do fs[i] = p:run(1, { name = "spin" }) end
      await(loom.all(fs))
      assert.is_true(drains >= 1)
      closed(p)
    end)

    it("concurrentTasksPerWorker runs that many async tasks at once in a worker", function()
      local p = pool{ maxThreads = 1, concurrentTasksPerWorker = 4, fn = function()
        local loom = require "loom"
        local now, max = 0, 0
        return {
          wait = function(ms)
            now = now + 1
            if now > max then max = now end
            return loom.async(function() loom.sleep(ms); now = now - 1; return true end)
          end,
          max = function() return max end,
        }
      end }
      local fs = {}
      for i = 1, 12 do fs[i] = p:run(20, { name = "wait" }) end
      await(loom.all(fs))
      assert.are.equal(4, await(p:run(nil, { name = "max" })))
      closed(p)
    end)

    it("grows to maxThreads under load, back to minThreads after idleTimeout", function()
      local p = pool{ minThreads = 1, maxThreads = 2, idleTimeout = 30 }
      local fs = {}
      for i = 1, 40 do fs[i] = p:run(5, { name = "spin" }) end
      await(loom.all(fs), 30000)
      assert.are.equal(2, p:stats().threads)
      -- the idle timers are unref'd (an idle pool lets loom.run return): a
      -- ref'd interval keeps this loop turning meanwhile
      local keep = loom.setInterval(function() end, 5)
      assert.is_true(H.run_until(function() return p:stats().threads == 1 end, 10000))
      keep:close()
      closed(p)
    end)
  end)

  describe("stats", function()
    it("a long mixed run ends with exact counts", function()
      local p = pool{ maxThreads = 2 }
      local n = 3000
      local fs, want_ok, want_bad = {}, 0, 0
      local pre = loom.AbortController()
      pre:abort()
      for i = 1, n do
        if i % 10 == 0 then
          fs[i] = p:run("bad " .. i, { name = "fail" }); want_bad = want_bad + 1
        elseif i % 97 == 0 then
          fs[i] = p:run(i, { name = "inc", signal = pre.signal }); want_bad = want_bad + 1
        elseif i % 101 == 0 then
          fs[i] = p:run(i, { name = "nope" }); want_bad = want_bad + 1
        else
          fs[i] = p:run(i, { name = "inc" }); want_ok = want_ok + 1
        end
      end
      local s = p:stats()
      assert.are.equal(n - (n // 97 - n // 970), s.queued + s.running)
      local states = await(loom.allSettled(fs), 60000)
      for i = 1, n do
        local st = states[i]
        if i % 10 == 0 then assert.truthy(st.reason:find("bad " .. i, 1, true))
        elseif i % 97 == 0 then assert.are.equal("aborted", st.reason)
        elseif i % 101 == 0 then assert.are.equal("run: no task named 'nope'", st.reason)
        else assert.are.equal(i + 1, st.value) end
      end
      s = p:stats()
      assert.are.equal(want_ok, s.completed)
      assert.are.equal(want_bad, s.failed)
      assert.are.equal(0, s.queued)
      assert.are.equal(0, s.running)
      assert.is_true(s.threads >= 1 and s.threads <= 2)
      assert.is_true(s.utilization >= 0 and s.utilization <= 1)
      -- every task that ran has a run time and a wait time (the pre-aborted did not run)
      local ran = n - (n // 97 - n // 970)
      assert.are.equal(ran, s.runTime.count)
      assert.are.equal(ran, s.waitTime.count)
      for _, k in ipairs({ "runTime", "waitTime" }) do
        assert.is_true(s[k].p50 >= 0 and s[k].p50 <= s[k].p99 and s[k].mean >= 0)
      end
      closed(p)
    end)

    it("utilization measures the time the workers spend in tasks", function()
      local p = pool{ maxThreads = 1 }
      await(p:run(0, { name = "spin" }))
      local fs = {}
      for i = 1, 20 do fs[i] = p:run(5, { name = "spin" }) end
      await(loom.all(fs))
      local s = p:stats()
      assert.is_true(s.runTime.p50 >= 5, s.runTime.p50)
      assert.is_true(s.utilization > 0.3, s.utilization)   -- busy most of its life
      closed(p)
    end)
  end)
end)
