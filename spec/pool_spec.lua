-- Pool: a task pool over workers (run, named tasks, errors, replacement
-- of dead workers, close and destroy; abort, timeouts, maxQueue, map,
-- drain and stats).  Every test closes or destroys its pool and awaits
-- it, so no worker outlives its test.
local H = require "helper"
local loom = require "loom"

local TASKS = H.fixture("pool_tasks.lua")

-- f:await() with a bound: raises instead of hanging the suite
local function await(f, ms)
  ms = H.ms(ms or 10000)
  local guard = loom.setTimeout(function()
    error(("await: not settled after %d ms"):format(ms), 0)
  end, ms)
  guard:unref()
  local ok, v, tb = pcall(function() return f:await() end)
  guard:close()
  if not ok then error(v, 0) end
  return v
end

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

local function pool(opts)
  opts = opts or {}
  if not opts.fn and not opts.source then opts.filename = opts.filename or TASKS end
  opts.maxThreads = opts.maxThreads or 2
  return loom.Pool(opts)
end

local function closed(p) assert.is_true(await(p:close())) end

describe("Pool", function()
  before_each(H.before_each)
  after_each(H.after_each)

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
end)
