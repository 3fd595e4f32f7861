-- Bad input never crashes: misuse raises a clear error, run-time failures
-- are reported, and nothing is left behind (API.md "Conventions").
local H = require "helper"
local loom = require "loom"

local function noop() end

-- pcall(fn, ...) must fail with a string error matching every pattern
local function raises(patterns, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, the call succeeded")
  assert(type(err) == "string", "expected a string error, got " .. type(err))
  for _, p in ipairs(patterns) do
    assert(err:find(p, 1, true), ("error %q does not mention %q"):format(err, p))
  end
  return err
end

local function deep(n, key)
  local t = {}
  local cur = t
  for _ = 1, n do cur[key or 1] = {}; cur = cur[key or 1] end
  return t
end

local function record(source, opts)
  local w = H.spawn(source, opts)
  local ev = { errors = {}, messages = {} }
  w:on("message", function(m) ev.messages[#ev.messages + 1] = m end)
  w:on("error", function(e, tb) ev.errors[#ev.errors + 1] = { err = e, tb = tb } end)
  w:on("exit", function(c) ev.code = c end)
  return w, ev
end

describe("misuse and failures", function()
  before_each(H.before_each)
  after_each(H.after_each)

  describe("wrong argument types raise a clear error", function()
    local cases = {
      { "loom.clone()", function() loom.clone() end, { "clone", "value expected" } },
      { "loom.Worker()", function() loom.Worker() end, { "source", "nil" } },
      { "loom.Worker(42)", function() loom.Worker(42) end, { "source", "number" } },
      { "loom.Worker({})", function() loom.Worker({}) end, { "source", "table" } },
      { "loom.Worker(true)", function() loom.Worker(true) end, { "source", "boolean" } },
      { "loom.Worker(fn, 5)", function() loom.Worker(noop, 5) end, { "Worker", "table" } },
      { "loom.Worker(fn, 'opts')", function() loom.Worker(noop, "opts") end,
        { "Worker", "table expected", "string" } },
      { "name = 5", function() loom.Worker(noop, { name = 5 }) end, { "name", "string" } },
      { "argv = 'x'", function() loom.Worker(noop, { argv = "x" }) end, { "argv", "table" } },
      { "eval = 'yes'", function() loom.Worker("x", { eval = "yes" }) end, { "eval", "boolean" } },
      { "resourceLimits = 1", function() loom.Worker(noop, { resourceLimits = 1 }) end,
        { "resourceLimits", "table", "number" } },
      { "stackSizeKb = 'big'", function()
          loom.Worker(noop, { resourceLimits = { stackSizeKb = "big" } }) end,
        { "stackSizeKb", "number" } },
      { "stackSizeKb = 1", function()
          loom.Worker(noop, { resourceLimits = { stackSizeKb = 1 } }) end,
        { "stackSizeKb", "from 64" } },
      { "env = 'both'", function() loom.Worker(noop, { env = "both" }) end,
        { "env", '"clone" or "share"' } },
      { "transfer = 'x'", function() loom.Worker(noop, { transfer = "x" }) end,
        { "transfer", "table", "string" } },
      { "transfer = { {} }", function() loom.Worker(noop, { transfer = { {} } }) end,
        { "transfer[1]", "MessagePort expected" } },
      { "setTimeout('f')", function() loom.setTimeout("f", 1) end, { "setTimeout", "function" } },
      { "setTimeout()", function() loom.setTimeout() end, { "setTimeout", "function" } },
      { "setInterval(nil)", function() loom.setInterval(nil, 1) end, { "setInterval", "function" } },
      { "setImmediate(5)", function() loom.setImmediate(5) end, { "setImmediate", "function" } },
      { "sleep('x')", function() loom.sleep("x") end, { "sleep", "number" } },
      { "sleep()", function() loom.sleep() end, { "sleep", "number" } },
      { "sleep(-1)", function() loom.sleep(-1) end, { "sleep", ">= 0" } },
      { "sleep(NaN)", function() loom.sleep(0 / 0) end, { "sleep", ">= 0" } },
      { "poll(-1)", function() loom.poll(-1) end, { "poll", "budget", ">= 0" } },
      { "poll('x')", function() loom.poll("x") end, { "poll", "number" } },
      { "async(5)", function() loom.async(5) end, { "async", "function" } },
      { "async()", function() loom.async() end, { "async", "function" } },
      { "all(5)", function() loom.all(5) end, { "all", "table" } },
      { "race(nil)", function() loom.race(nil) end, { "race", "table" } },
      { "exit('x') on the main thread", function() loom.exit("x") end, { "exit", "integer" } },
      { "exit(1.5) on the main thread", function() loom.exit(1.5) end, { "exit", "integer" } },
      { "setEnvironmentData(nil, 1)", function() loom.setEnvironmentData(nil, 1) end,
        { "setEnvironmentData", "key" } },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        raises(case[3], case[2])
        assert.are.equal(0, H.stats().children)
      end)
    end
  end)

  describe("worker methods with bad arguments", function()
    local w
    before_each(function()
      w = H.echo(1)
    end)
    after_each(function()
      w:postMessage("end")
      H.run()
    end)

    it("w:on with a non-string event or a non-function listener", function()
      raises({ "on", "string" }, w.on, w, 1, noop)
      raises({ "on", "function" }, w.on, w, "message", 5)
      raises({ "on", "function" }, w.on, w, "message")
    end)

    it("w:once with a non-function listener", function()
      raises({ "once", "function" }, w.once, w, "message", "x")
    end)

    it("w:off with an unknown listener or event is harmless", function()
      assert.are.equal(w, w:off("message", noop))
      assert.are.equal(w, w:off("nothing", noop))
    end)

    it("w:off without its listener, or with a non-string event, raises and removes nothing", function()
      local got = 0
      w:on("message", function() got = got + 1 end)
      raises({ "off", "function expected, got nil" }, w.off, w, "message")
      raises({ "off", "function" }, w.off, w, "message", 5)
      raises({ "off", "string" }, w.off, w, 1, noop)
      assert.are.equal(1, w:listenerCount("message"))
    end)

    it("w:postMessage with a non-table transfer list", function()
      raises({ "transfer", "table", "string" }, w.postMessage, w, 1, "x")
      raises({ "transfer[1]", "MessagePort expected" }, w.postMessage, w, 1, { {} })
    end)

    it("postMessage called on something that is not a worker", function()
      raises({ "postMessage", "loom.Worker expected, got table" }, function() w.postMessage({}, 1) end)
      raises({ "postMessage", "loom.Worker expected, got number" }, function() w.postMessage(42, 1) end)
    end)

    it("terminate, ref and unref called on something that is not a worker", function()
      raises({ "bad argument #1 to 'terminate' (loom.Worker expected, got table)" }, w.terminate, {})
      raises({ "bad argument #1 to 'ref' (loom.Worker expected, got number)" }, w.ref, 5)
      raises({ "bad argument #1 to 'unref' (loom.Worker expected, got string)" }, w.unref, "x")
    end)
  end)

  describe("timers and futures with bad arguments", function()
    it("timer methods called on something that is not a timer", function()
      local t = loom.setTimeout(noop, 1)
      raises({ "loom.Timer expected, got number" }, t.close, 5)
      raises({ "loom.Timer expected, got table" }, t.unref, {})
      t:close()
    end)

    it("clearTimeout of something that is not a timer raises, naming the type", function()
      for _, bad in ipairs({ 5, "x", {}, true }) do
        raises({ ("bad argument #1 to 'clearTimeout' (timer expected, got %s)"):format(type(bad)) },
               loom.clearTimeout, bad)
      end
    end)

    it("await on something that is not a future raises a clear error", function()
      raises({ "await" }, loom.Future.await, {})
      raises({ "await" }, loom.Future.await, 5)
    end)

    it("AbortController works and aborts once", function()
      local ac = loom.AbortController()
      local seen = {}
      assert.is_false(ac.signal.aborted)
      ac.signal:on("abort", function(r) seen[#seen + 1] = r end)
      ac:abort("why")
      ac:abort("again")
      assert.is_true(ac.signal.aborted)
      assert.are.equal("why", ac.signal.reason)
      assert.are.same({ "why" }, seen)
    end)
  end)

  describe("loom.Worker options", function()
    it("refuses an unknown option, naming it", function()
      raises({ "unknown option", "nmae" }, loom.Worker, noop, { nmae = "typo" })
      raises({ "unknown option" }, loom.Worker, noop, { "positional" })
    end)

    it("raises at spawn when the worker file is missing, naming the file", function()
      local err = raises({ "no_such_worker_file.lua" }, loom.Worker,
                         "/nonexistent/dir/no_such_worker_file.lua")
      assert.matches("loom.Worker", err, 1, true)
      assert.are.equal(0, H.stats().children)
    end)

    it("raises at spawn for a directory as worker file, naming it and why", function()
      raises({ "loom.Worker: cannot open worker file " .. H.dir .. ": Is a directory" },
             loom.Worker, H.dir)
      assert.are.equal(0, H.stats().children)
    end)

    it("reports a syntax error in a worker file as error + exit 1", function()
      local _, ev = record(H.fixture("syntax_error.lua"))
      H.run()
      assert.are.equal(1, ev.code)
      assert.are.equal(1, #ev.errors)
      assert.matches("syntax_error.lua", ev.errors[1].err, 1, true)
    end)

    it("reports an error raised while a worker file loads, with its traceback", function()
      local _, ev = record(H.fixture("failing.lua"))
      H.run()
      assert.are.equal(1, ev.code)
      assert.matches("failing fixture", ev.errors[1].err, 1, true)
      assert.matches("failing.lua", ev.errors[1].tb, 1, true)
    end)

    it("reports a syntax error in eval source as error + exit 1", function()
      local _, ev = record("local = = 1", { eval = true, name = "broken" })
      H.run()
      assert.are.equal(1, ev.code)
      assert.are.equal(1, #ev.errors)
      assert.are.equal("string", type(ev.errors[1].err))
      assert.matches("broken", ev.errors[1].err, 1, true)
    end)

    it("reports an empty eval source as a normal end", function()
      local _, ev = record("", { eval = true })
      H.run()
      assert.are.equal(0, ev.code)
    end)

    it("refuses binary chunks as eval source", function()
      local _, ev = record(string.dump(function() end), { eval = true })
      H.run()
      assert.are.equal(1, ev.code)
      assert.are.equal(1, #ev.errors)
      assert.matches("attempt to load a binary chunk", ev.errors[1].err, 1, true)
    end)

    it("raises for uncloneable workerData naming the path, leaving nothing behind", function()
      raises({ "cannot clone workerData.conn.sock: userdata" }, loom.Worker, noop,
             { workerData = { conn = { sock = io.stdout } } })
      raises({ "cannot clone workerData: thread" }, loom.Worker, noop,
             { workerData = coroutine.create(noop) })
      assert.are.equal(0, H.stats().children)
      assert.are.equal(0, H.stats().holds)
    end)

    it("raises for uncloneable argv naming the path", function()
      raises({ "cannot clone argv[2]: C function" }, loom.Worker, noop,
             { argv = { 1, print } })
      assert.are.equal(0, H.stats().children)
    end)

    it("raises for a source function with an uncloneable upvalue", function()
      local out = io.stdout
      local err = raises({ "upvalue 'out'", "userdata" }, loom.Worker,
                         function() out:write("x") end)
      assert.matches("cannot clone", err, 1, true)
      assert.are.equal(0, H.stats().children)
    end)

    it("raises for a C function as source", function()
      raises({ "C function" }, loom.Worker, print)
      assert.are.equal(0, H.stats().children)
    end)

    it("raises for huge nesting in workerData without crashing", function()
      raises({ "nested deeper" }, loom.Worker, noop, { workerData = deep(100000) })
      assert.are.equal(0, H.stats().children)
    end)

    it("can still spawn after many failed spawns", function()
      for _ = 1, 200 do
        pcall(loom.Worker, noop, { workerData = { io.stdout } })
        pcall(loom.Worker, "/nonexistent.lua")
        pcall(loom.Worker, noop, { bad = 1 })
      end
      local _, ev = record(function() require("loom").parentPort:postMessage("alive") end)
      H.run()
      assert.are.same({ "alive" }, ev.messages)
    end)
  end)

  describe("postMessage with values that cannot be sent", function()
    it("raises naming the path, and the worker goes on", function()
      local w = H.echo(1)
      raises({ "cannot clone msg: userdata" }, w.postMessage, w, io.stdout)
      raises({ "cannot clone msg.a.b[2]: userdata" }, w.postMessage, w, { a = { b = { 1, io.stderr } } })
      raises({ "cannot clone msg: thread" }, w.postMessage, w, coroutine.create(noop))
      raises({ "cannot clone msg: C function" }, w.postMessage, w, print)
      raises({ "nested deeper" }, w.postMessage, w, deep(100000, "k"))
      local got
      w:on("message", function(m) got = m end)
      assert.is_true(w:postMessage("still fine"))
      H.run()
      assert.are.equal("still fine", got)
    end)

    it("points at the caller, not into loom's own code", function()
      local w = H.echo(1)
      local err = raises({ "cannot clone msg" }, w.postMessage, w, { io.stdout })
      assert.is_nil(err:find("loom/init.lua", 1, true), err)
      w:postMessage("end")
      H.run()
    end)

    it("grows neither the Lua heap nor the process when many posts fail", function()
      -- each post encodes ~100 KB before it meets the userdata; leaking
      -- that (or the message) on the failure path would be 20 MB.  The Lua
      -- heap cannot see the C side; the resident set can, except where
      -- valgrind's or a sanitizer's allocator keeps freed memory (those
      -- builds check for leaks themselves)
      local w = H.echo(1)
      local big = {}
      for i = 1, 1000 do big[i] = ("x"):rep(100) end
      big[1001] = io.stdout
      local function fail() raises({ "cannot clone msg[1001]: userdata" }, w.postMessage, w, big) end
      for _ = 1, 5 do fail() end      -- buffers reused from here on
      collectgarbage()
      local heap, rss = collectgarbage("count"), H.rss_kb()
      for _ = 1, 200 do fail() end
      collectgarbage()
      local dheap = collectgarbage("count") - heap
      assert.is_true(dheap < 1024, ("the Lua heap grew by %.0f KiB"):format(dheap))
      if rss and not H.instrumented then
        local drss = H.rss_kb() - rss
        assert.is_true(drss < 8192, ("the resident set grew by %d KiB"):format(drss))
      end
      w:postMessage("end")
      H.run()
    end)

    it("in a worker raises there naming the path; uncaught it is an error event", function()
      local _, ev = record(function()
        local loom = require "loom"
        loom.parentPort:postMessage({ h = io.stdout })
      end)
      H.run()
      assert.are.equal(1, ev.code)
      assert.matches("cannot clone msg.h: userdata", ev.errors[1].err, 1, true)
    end)

    it("in a worker, with huge nesting, raises there without crashing", function()
      local _, ev = record(function()
        local loom = require "loom"
        local t = {}
        local cur = t
        for _ = 1, 100000 do cur[1] = {}; cur = cur[1] end
        local ok, err = pcall(loom.parentPort.postMessage, loom.parentPort, t)
        loom.parentPort:postMessage({ ok, err })
      end)
      H.run()
      assert.are.equal(0, ev.code)
      assert.is_false(ev.messages[1][1])
      assert.matches("nested deeper", ev.messages[1][2], 1, true)
    end)
  end)

  describe("errors raised in workers", function()
    it("a worker's error nested too deeply to clone arrives as text", function()
      local _, ev = record(function()
        local t = {}
        local cur = t
        for _ = 1, 100000 do cur[1] = {}; cur = cur[1] end
        error(t)
      end)
      H.run()
      assert.are.equal(1, ev.code)
      assert.are.equal("string", type(ev.errors[1].err))
      assert.matches("^table: ", ev.errors[1].err)
    end)

    it("a huge error string arrives intact", function()
      local _, ev = record(function() error(("e"):rep(1000000), 0) end)
      H.run()
      assert.are.equal(1000000, #ev.errors[1].err)
    end)

    it("a nil error is reported", function()
      local _, ev = record(function() error(nil) end)
      H.run()
      assert.are.equal(1, ev.code)
      assert.are.equal(1, #ev.errors)
      assert.is_nil(ev.errors[1].err)
      assert.are.equal("string", type(ev.errors[1].tb))
    end)

    it("an error whose __tostring returns a non-string is still reported", function()
      local _, ev = record(function()
        error(setmetatable({ co = coroutine.create(print) }, { __tostring = function() return 42 end }))
      end)
      H.run()
      assert.are.equal(1, ev.code)
      assert.are.equal(1, #ev.errors)
    end)

    it("an unheard error whose __tostring fails is still raised from loom.run()", function()
      local w = H.spawn(function()
        error(setmetatable({ f = print }, { __tostring = function() error("no text") end }))
      end)
      local ok, err = pcall(H.run)
      assert.is_false(ok, "the worker's error was dropped")
      assert.matches("uncaught error in worker " .. w.threadId .. ": (error object is a table value)",
                     err, 1, true)
      H.join(w)
    end)

    it("Lua stack overflow in a worker is an error event, not a crash", function()
      local _, ev = record(function()
        local function f(n) return 1 + f(n + 1) end
        f(1)
      end)
      H.run()
      assert.are.equal(1, ev.code)
      assert.matches("stack overflow", ev.errors[1].err, 1, true)
    end)

    it("C stack overflow in a worker is an error event, not a crash", function()
      local _, ev = record(function()
        local t = setmetatable({}, { __index = function(t, k) return t[k + 1] end })
        return t[1]
      end)
      H.run()
      assert.are.equal(1, ev.code)
      assert.matches("stack overflow", ev.errors[1].err, 1, true)
    end)

    it("a worker over resourceLimits.maxMemoryMb fails with 'not enough memory': error, exit 1", function()
      local _, ev = record(function()
        local loom = require "loom"
        loom.parentPort:postMessage("allocating")
        local t = {}
        for i = 1, math.huge do t[i] = ("x"):rep(1000) .. i end   -- until it fails
      end, { resourceLimits = { maxMemoryMb = 2 } })
      H.run()
      assert.are.same({ "allocating" }, ev.messages)   -- it ran, then hit the limit
      assert.are.equal(1, #ev.errors)
      assert.are.equal("string", type(ev.errors[1].err))
      assert.matches("not enough memory", ev.errors[1].err, 1, true)
      assert.are.equal(1, ev.code)
      -- the parent is unharmed: it allocates, and a new worker runs
      assert.are.equal(4 << 20, #loom.clone(("y"):rep(4 << 20)))
      local _, again = record(function() require("loom").parentPort:postMessage("fine") end)
      H.run()
      assert.are.same({ "fine" }, again.messages)
      assert.are.equal(0, again.code)
    end)

    it("a worker out of memory still gives the error listener a traceback string", function()
      -- API.md: error is fn(err, traceback) with the worker's traceback string
      local _, ev = record(function()
        local t = {}
        for i = 1, math.huge do t[i] = ("x"):rep(1000) .. i end
      end, { resourceLimits = { maxMemoryMb = 2 } })
      H.run()
      assert.are.equal(1, #ev.errors)
      assert.matches("not enough memory", ev.errors[1].err, 1, true)
      assert.are.equal("string", type(ev.errors[1].tb))
    end)

    it("deep C recursion allowed by Lua does not crash a worker with the smallest stack", function()
      if H.no_fork(pending) then return end
      -- run in a child process: a crash must fail this test, not the suite
      local script = [[
        local loom = require "loom"
        for _, kb in ipairs({ 64, 128, 256, 512 }) do
          local w = loom.Worker([=[
            local function g(n)
              if n == 0 then return "" end
              return (string.gsub("a", "a", function() return g(n - 1) end))
            end
            local t = setmetatable({}, { __index = function(t, k) return t[k + 1] end })
            pcall(g, 190)
            pcall(function() return t[1] end)
            local function f(n) if n == 0 then return 0 end return select(2, pcall(f, n - 1)) end
            f(190)
          ]=], { eval = true, resourceLimits = { stackSizeKb = kb } })
          w:on("error", function() end)
        end
        loom.run()
        io.write("survived\n")
      ]]
      local out = H.run_script(script, 30)
      assert.matches("survived", out, 1, true)
      assert.matches("rc=0", out, 1, true)
    end)
  end)

  describe("loop misuse", function()
    it("loom.run inside a worker's callback raises a clear error there", function()
      local _, ev = record(function()
        local loom = require "loom"
        loom.setTimeout(function()
          local ok, err = pcall(loom.run)
          loom.parentPort:postMessage({ ok, err })
        end, 0)
      end)
      H.run()
      assert.is_false(ev.messages[1][1])
      assert.matches("already running", ev.messages[1][2], 1, true)
    end)

    it("a callback that raises a non-string error is raised as it is", function()
      local e = setmetatable({}, { __tostring = function() return "custom" end })
      loom.setTimeout(function() error(e) end, 0)
      local ok, err = pcall(loom.run)
      assert.is_false(ok)
      assert.are.equal(e, err)
    end)
  end)
end)
