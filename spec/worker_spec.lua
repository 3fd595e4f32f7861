-- loom.Worker: sources, options, events, exit codes, messages (API.md "Worker").
local H = require "helper"
local loom = require "loom"

local wait_flag, set_flag = H.wait_flag, H.set_flag   -- upvalues of worker functions

-- spawn, collect every event in order, run until the loop is empty
local function record(source, opts)
  local w = H.spawn(source, opts)
  local ev = { messages = {}, errors = {}, order = {} }
  w:on("online", function() ev.order[#ev.order + 1] = "online"; ev.online = (ev.online or 0) + 1 end)
  w:on("message", function(m)
    ev.order[#ev.order + 1] = "message"
    ev.messages[#ev.messages + 1] = m
  end)
  w:on("error", function(e, tb)
    ev.order[#ev.order + 1] = "error"
    ev.errors[#ev.errors + 1] = { err = e, tb = tb }
  end)
  w:on("exit", function(code)
    ev.order[#ev.order + 1] = "exit"
    ev.code = code
  end)
  return w, ev
end

local function runworker(source, opts)
  local w, ev = record(source, opts)
  H.run()
  return ev, w
end

describe("loom.Worker", function()
  before_each(H.before_each)
  after_each(H.after_each)

  describe("sources", function()
    it("runs a file", function()
      local ev = runworker(H.fixture("hello.lua"))
      assert.are.equal(0, ev.code)
      assert.are.equal("file", ev.messages[1].from)
    end)

    it("runs a code string with eval = true", function()
      local ev = runworker([[
        local loom = require "loom"
        loom.parentPort:postMessage({ 6 * 7, ... })
      ]], { eval = true, argv = { "x" } })
      assert.are.equal(0, ev.code)
      assert.are.same({ 42, "x" }, ev.messages[1])
    end)

    it("runs a function (sent as bytecode)", function()
      local ev = runworker(function(a, b)
        local loom = require "loom"
        loom.parentPort:postMessage(a + b)
      end, { argv = { 40, 2 } })
      assert.are.equal(0, ev.code)
      assert.are.same({ 42 }, ev.messages)
    end)

    it("runs a function whose upvalues are cloned", function()
      local greeting, parts = "hi", { "a", "b" }
      local ev = runworker(function()
        require("loom").parentPort:postMessage(greeting .. table.concat(parts))
      end)
      assert.are.same({ "hiab" }, ev.messages)
    end)

    it("treats a string without eval as a file name", function()
      local ok, err = pcall(loom.Worker, "return 1")
      assert.is_false(ok)
      assert.matches("return 1", err, 1, true)
    end)
  end)

  describe("options", function()
    it("passes workerData as loom.workerData", function()
      local ev = runworker(H.fixture("hello.lua"), { workerData = { job = "resize", size = { 640, 480 } } })
      assert.are.same({ job = "resize", size = { 640, 480 } }, ev.messages[1].workerData)
    end)

    it("passes scalar workerData", function()
      local ev = runworker(function()
        require("loom").parentPort:postMessage(require("loom").workerData)
      end, { workerData = "just a string" })
      assert.are.same({ "just a string" }, ev.messages)
    end)

    it("passes argv as the main chunk's ...", function()
      local ev = runworker(H.fixture("hello.lua"), { argv = { 1, "two", { 3 } } })
      assert.are.equal(3, ev.messages[1].argc)
      assert.are.same({ 1, "two", { 3 } }, ev.messages[1].argv)
    end)

    it("passes no ... without argv, and none for an empty argv", function()
      local a = runworker(H.fixture("hello.lua"))
      local b = runworker(H.fixture("hello.lua"), { argv = {} })
      assert.are.equal(0, a.messages[1].argc)
      assert.are.equal(0, b.messages[1].argc)
    end)

    it("passes many arguments", function()
      local argv = {}
      for i = 1, 200 do argv[i] = i end
      local ev = runworker(function(...)
        require("loom").parentPort:postMessage({ select("#", ...), (select(200, ...)) })
      end, { argv = argv })
      assert.are.same({ { 200, 200 } }, ev.messages)
    end)

    it("uses name in uncaught error messages", function()
      local w = H.spawn(function() error("named boom") end, { name = "resizer" })
      local ok, err = pcall(H.run)
      assert.is_false(ok)
      assert.matches("resizer", err, 1, true)
      assert.matches("named boom", err, 1, true)
      H.join(w)
    end)

    it("uses name for the thread name", function()
      local ev = runworker(function()
        local f = io.open("/proc/thread-self/comm")
        local name = f and f:read("l")
        if f then f:close() end
        require("loom").parentPort:postMessage(name or "n/a")
      end, { name = "resizer" })
      if ev.messages[1] ~= "n/a" then
        assert.are.equal("loom:resizer", ev.messages[1])
      end
    end)

    it("accepts resourceLimits.stackSizeKb", function()
      local ev = runworker(function()
        local function depth(n) if n == 0 then return 0 end return 1 + depth(n - 1) end
        require("loom").parentPort:postMessage(depth(10000))
      end, { resourceLimits = { stackSizeKb = 8192 } })
      assert.are.equal(0, ev.code)
      assert.are.same({ 10000 }, ev.messages)
    end)

    it("accepts resourceLimits.maxMemoryMb (API.md)", function()
      local ev = runworker(function()
        require("loom").parentPort:postMessage("ran")
      end, { resourceLimits = { maxMemoryMb = 64 } })
      assert.are.equal(0, ev.code)
      assert.are.same({ "ran" }, ev.messages)
    end)

    it("gives environment data set before the spawn to the worker", function()
      loom.setEnvironmentData("spec.env", { mode = "test" })
      finally(function() loom.setEnvironmentData("spec.env", nil) end)
      local ev = runworker(function()
        local loom = require "loom"
        loom.parentPort:postMessage(loom.getEnvironmentData("spec.env"))
      end)
      assert.are.same({ { mode = "test" } }, ev.messages)
    end)
  end)

  describe("identity", function()
    it("has threadId 0 and isMainThread on the main thread, no parentPort", function()
      assert.are.equal(0, loom.threadId)
      assert.is_true(loom.isMainThread)
      assert.is_nil(loom.parentPort)
    end)

    it("gives each worker a distinct integer threadId, the same on both sides", function()
      local a, aev = record(H.fixture("hello.lua"))
      local b, bev = record(H.fixture("hello.lua"))
      H.run()
      assert.are.equal("integer", math.type(a.threadId))
      assert.is_true(a.threadId > 0)
      assert.are_not.equal(a.threadId, b.threadId)
      assert.are.equal(a.threadId, aev.messages[1].threadId)
      assert.are.equal(b.threadId, bev.messages[1].threadId)
      assert.is_false(aev.messages[1].isMainThread)
    end)

    it("gives the worker a parentPort", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.parentPort:postMessage(type(loom.parentPort))
      end)
      assert.are.same({ "table" }, ev.messages)
    end)

    it("gives the worker a full Lua with every standard library", function()
      local ev = runworker(function()
        local libs = {}
        for _, name in ipairs({ "string", "table", "math", "io", "os", "coroutine",
                                "utf8", "debug", "package" }) do
          libs[name] = type(_G[name])
        end
        libs.load = type(load)
        libs.require = type(require)
        require("loom").parentPort:postMessage(libs)
      end)
      for name, t in pairs(ev.messages[1]) do
        assert(t ~= "nil", name .. " is missing in a worker")
      end
    end)

    it("gives the worker the parent's package.path and package.cpath", function()
      local ev = runworker(function()
        require("loom").parentPort:postMessage({ package.path, package.cpath,
                                                 require("fixtures.mathmod").square(9) })
      end)
      assert.are.same({ { package.path, package.cpath, 81 } }, ev.messages)
    end)

    it("reports availableParallelism() as a positive integer", function()
      local n = loom.availableParallelism()
      assert.are.equal("integer", math.type(n))
      assert.is_true(n >= 1)
    end)
  end)

  describe("events", function()
    it("fires online before any message, then exit", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.parentPort:postMessage(1)
        loom.parentPort:postMessage(2)
      end)
      assert.are.same({ "online", "message", "message", "exit" }, ev.order)
      assert.are.equal(1, ev.online)
    end)

    it("supports once and off", function()
      local w = H.spawn(function()
        local loom = require "loom"
        for i = 1, 3 do loom.parentPort:postMessage(i) end
      end)
      local onced, all, removed = {}, {}, {}
      local function rm(m) removed[#removed + 1] = m end
      w:once("message", function(m) onced[#onced + 1] = m end)
      w:on("message", function(m) all[#all + 1] = m end)
      w:on("message", rm)
      w:off("message", rm)
      H.run()
      assert.are.same({ 1 }, onced)
      assert.are.same({ 1, 2, 3 }, all)
      assert.are.same({}, removed)
    end)

    it("keeps a worker with a message listener alive until the listener is removed", function()
      local w = H.spawn(function()
        local loom = require "loom"
        local function onmsg(m)
          if m == "stop" then loom.parentPort:off("message", onmsg) end
          loom.parentPort:postMessage("got " .. m)
        end
        loom.parentPort:on("message", onmsg)
      end)
      local got = {}
      w:on("message", function(m)
        got[#got + 1] = m
        if #got == 1 then w:postMessage("stop") end
      end)
      w:postMessage("first")
      H.run()
      assert.are.same({ "got first", "got stop" }, got)
      assert.are.same({ true, 0 }, { H.exited(w) })
    end)

    it("keeps a worker alive while it has a timer", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.setTimeout(function() loom.parentPort:postMessage("timer fired") end, 30)
      end)
      assert.are.same({ "timer fired" }, ev.messages)
      assert.are.equal(0, ev.code)
    end)
  end)

  describe("exit codes", function()
    it("is 0 after a normal end", function()
      assert.are.equal(0, runworker(function() end).code)
    end)

    it("is 1 after an uncaught error", function()
      local ev = runworker(function() error("x") end)
      assert.are.equal(1, ev.code)
    end)

    it("is n after loom.exit(n)", function()
      local ev = runworker(function() require("loom").exit(7) end)
      assert.are.equal(7, ev.code)
    end)

    it("is 0 after loom.exit()", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.setTimeout(function() end, 100000)
        loom.exit()
      end)
      assert.are.equal(0, ev.code)
    end)

    it("stops the worker's loop after loom.exit: pending timers never fire", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.parentPort:postMessage("before")
        loom.setTimeout(function() loom.parentPort:postMessage("timer") end, 0)
        loom.setInterval(function() loom.parentPort:postMessage("interval") end, 1)
        loom.exit(5)
      end)
      assert.are.equal(5, ev.code)
      assert.are.same({ "before" }, ev.messages)
    end)

    it("honours loom.exit(n) inside a message handler", function()
      local w, ev = record(function()
        local loom = require "loom"
        loom.parentPort:on("message", function(m)
          loom.parentPort:postMessage("handled " .. m)
          if m == 2 then loom.exit(9) end
        end)
      end)
      for i = 1, 5 do w:postMessage(i) end
      H.run()
      assert.are.equal(9, ev.code)
      assert.are.same({ "handled 1", "handled 2" }, ev.messages)
    end)

    it("is n after os.exit(n), which ends the worker alone and at once", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.parentPort:postMessage("before")
        os.exit(3)
        loom.parentPort:postMessage("after")   -- never runs
      end)
      assert.are.equal(3, ev.code)
      assert.are.same({ "before" }, ev.messages)
      assert.are.same({}, ev.errors)
    end)

    it("is 0 after os.exit(true) and after os.exit()", function()
      assert.are.equal(0, runworker(function() os.exit(true) end).code)
      assert.are.equal(0, runworker(function() os.exit() end).code)
    end)

    it("is 1 after os.exit(false)", function()
      assert.are.equal(1, runworker(function() os.exit(false) end).code)
    end)

    it("honours os.exit even inside pcall", function()
      local ev = runworker(function()
        local loom = require "loom"
        pcall(os.exit, 4)
        loom.parentPort:postMessage("survived pcall")
      end)
      assert.are.equal(4, ev.code)
      assert.are.same({}, ev.messages)
    end)

    it("honours os.exit inside a message handler and a coroutine", function()
      local w, ev = record(function()
        local loom = require "loom"
        loom.parentPort:on("message", function()
          coroutine.wrap(function() os.exit(6) end)()
          loom.parentPort:postMessage("survived")
        end)
      end)
      w:postMessage("go")
      H.run()
      assert.are.equal(6, ev.code)
      assert.are.same({}, ev.messages)
    end)
  end)

  describe("errors", function()
    it("fires error with (err, traceback), then exit 1", function()
      local ev = runworker(function()
        local function deep() error("boom") end
        deep()
      end)
      assert.are.same({ "online", "error", "exit" }, ev.order)
      assert.are.equal(1, ev.code)
      local e = ev.errors[1]
      assert.are.equal("string", type(e.err))
      assert.matches("boom", e.err, 1, true)
      assert.are.equal("string", type(e.tb))
      assert.matches("stack traceback", e.tb, 1, true)
      assert.matches("deep", e.tb, 1, true)
    end)

    it("keeps a table error a table", function()
      local ev = runworker(function() error({ code = 42, list = { 1, 2 } }) end)
      assert.are.same({ code = 42, list = { 1, 2 } }, ev.errors[1].err)
    end)

    it("keeps a non-string scalar error as it is", function()
      local ev = runworker(function() error(17) end)
      assert.are.equal(17, ev.errors[1].err)
      ev = runworker(function() error(false) end)
      assert.are.equal(false, ev.errors[1].err)
    end)

    it("gives tostring of an error value that cannot be cloned", function()
      local ev = runworker(function() error(io.stdout) end)
      assert.are.equal("string", type(ev.errors[1].err))
      assert.matches("^file %(0x", ev.errors[1].err)
      assert.are.equal(1, ev.code)
    end)

    it("gives tostring of a table error that holds something uncloneable", function()
      local ev = runworker(function()
        error(setmetatable({ co = coroutine.create(print) },
                           { __tostring = function() return "custom error text" end }))
      end)
      assert.are.equal("custom error text", ev.errors[1].err)
      assert.are.equal(1, ev.code)
    end)

    it("reports an uncloneable error even when its __tostring fails", function()
      local ev = runworker(function()
        error(setmetatable({ f = print }, { __tostring = function() error("no text") end }))
      end)
      assert.are.equal(1, ev.code)
      assert.are.equal(1, #ev.errors)
      assert.are.equal("(error object is a table value)", ev.errors[1].err)
    end)

    it("reports an error raised inside a message handler, then exits 1", function()
      local w, ev = record(function()
        local loom = require "loom"
        loom.parentPort:on("message", function(m)
          if m == "bad" then error("handler failed on " .. m) end
          loom.parentPort:postMessage("ok " .. m)
        end)
      end)
      w:postMessage("good")
      w:postMessage("bad")
      w:postMessage("never handled")
      H.run()
      assert.are.same({ "ok good" }, ev.messages)
      assert.are.equal(1, #ev.errors)
      assert.matches("handler failed on bad", ev.errors[1].err, 1, true)
      assert.are.equal(1, ev.code)
    end)

    it("reports an error raised inside a worker's timer, then exits 1", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.setTimeout(function() error({ where = "timer" }) end, 1)
        loom.setTimeout(function() loom.parentPort:postMessage("second timer") end, 50)
      end)
      assert.are.same({ where = "timer" }, ev.errors[1].err)
      assert.are.same({}, ev.messages)
      assert.are.equal(1, ev.code)
    end)

    it("raises an error nobody listens to from loom.run()", function()
      local w = H.spawn(function() error("nobody listens") end)
      local exitcode
      w:on("exit", function(c) exitcode = c end)
      local ok, err = pcall(H.run)
      assert.is_false(ok)
      assert.matches("nobody listens", err, 1, true)
      -- the loop can go on afterwards and the exit still arrives
      H.run()
      assert.are.equal(1, exitcode)
    end)

    it("raises a table error nobody listens to as the table itself", function()
      local w = H.spawn(function() error({ code = 99 }) end)
      local ok, err = pcall(H.run)
      assert.is_false(ok)
      assert.are.same({ code = 99 }, err)
      H.join(w)
    end)

    it("raises an error nobody listens to from loom.poll()", function()
      local w = H.spawn(function() error("polled error") end)
      assert.matches("polled error", H.poll_error() or "(nothing raised)", 1, true)
      H.join(w)
    end)

    it("does not fire error for a worker that ends normally", function()
      local ev = runworker(function() end)
      assert.are.same({}, ev.errors)
    end)
  end)

  describe("messages", function()
    it("delivers messages posted before the worker is online, in order", function()
      local w, ev = record(function()
        local loom = require "loom"
        local got = {}
        local function onmsg(m)
          got[#got + 1] = m
          if #got == 100 then
            loom.parentPort:off("message", onmsg)
            loom.parentPort:postMessage(got)
          end
        end
        loom.parentPort:on("message", onmsg)
      end)
      for i = 1, 100 do assert.is_true(w:postMessage(i)) end
      H.run()
      local expected = {}
      for i = 1, 100 do expected[i] = i end
      assert.are.same({ expected }, ev.messages)
    end)

    it("delivers messages that arrive before the first listener, in order", function()
      -- messages 1..5 reach the worker while it has no listener (they wait
      -- in the port); 6..10 are still on their way while it attaches one:
      -- all must come in order.  Flags make that interleaving certain.
      local posted_1_5, posted_6_10 = H.flag(), H.flag()
      local w, ev = record(function(flag1, flag2, bound)
        local loom = require "loom"
        local port = loom.parentPort
        assert(wait_flag(flag1, bound), "the parent never posted 1..5")
        loom.poll(bound)            -- take 1..5: with no listener they wait
        port:postMessage("attaching")
        assert(wait_flag(flag2, bound), "the parent never posted 6..10")
        local got = {}              -- 6..10 are in this thread's inbox now
        local function onmsg(m)
          got[#got + 1] = m
          if #got == 10 then port:off("message", onmsg); port:postMessage(got) end
        end
        port:on("message", onmsg)
      end, { argv = { posted_1_5, posted_6_10, H.ms(5000) } })
      for i = 1, 5 do w:postMessage(i) end
      H.set_flag(posted_1_5)
      w:on("message", function(m)
        if m == "attaching" then
          for i = 6, 10 do w:postMessage(i) end
          H.set_flag(posted_6_10)
        end
      end)
      H.run()
      assert.are.same({}, ev.errors)
      assert.are.same({ "attaching", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 } }, ev.messages)
    end)

    it("keeps the order of many messages from a worker", function()
      local N = 20000
      local w = H.spawn(function(n)
        local port = require("loom").parentPort
        for i = 1, n do port:postMessage(i) end
      end, { argv = { N } })
      local expect, bad = 1, nil
      w:on("message", function(m)
        if m ~= expect and not bad then bad = ("got %s, expected %d"):format(m, expect) end
        expect = expect + 1
      end)
      H.run()
      assert.is_nil(bad)
      assert.are.equal(N + 1, expect)
    end)

    it("keeps the order of many messages to a worker and back", function()
      local N = 5000
      local w = H.echo(N)
      local got = {}
      w:on("message", function(m) got[#got + 1] = m end)
      for i = 1, N do w:postMessage({ i }) end
      H.run()
      assert.are.equal(N, #got)
      for i = 1, N do
        if got[i][1] ~= i then error(("message %d came as %s"):format(i, got[i][1])) end
      end
    end)

    it("returns true from postMessage on both sides", function()
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:once("message", function()
          loom.parentPort:postMessage(loom.parentPort:postMessage("x"))
        end)
      end)
      local got = {}
      w:on("message", function(m) got[#got + 1] = m end)
      assert.is_true(w:postMessage("go"))
      H.run()
      assert.are.same({ "x", true }, got)
    end)

    it("returns false, \"closed\" when posting to an exited worker", function()
      local w = H.spawn(function() end)
      H.join(w)
      local ok, why = w:postMessage("late")
      assert.is_false(ok)
      assert.are.equal("closed", why)
    end)

    it("returns false, \"closed\" when posting to a worker that closed its parentPort", function()
      local closed = H.flag()
      local w = H.spawn(function(flag)
        local loom = require "loom"
        local port = loom.parentPort
        port:on("close", function() set_flag(flag) end)
        port:close()
        loom.setTimeout(function() end, 1e9)   -- lives on: the parent stops it
      end, { argv = { closed } })
      finally(function() w:terminate() end)   -- also when an assert fails
      assert(H.run_until(function() return H.flag_is_set(closed) end),
             "the worker's parentPort never fired close")
      loom.poll(5)     -- whatever the close sent this way has arrived by now
      local ok, why = w:postMessage("dropped")
      assert.is_false((H.exited(w)))   -- the port is closed, not the worker
      assert.are.same({ false, "closed" }, { ok, why })
      assert.are.equal(1, w:terminate():await())
    end)

    it("delivers messages to several workers independently", function()
      local ws, got = {}, {}
      for i = 1, 8 do
        ws[i] = H.echo(3)
        ws[i]:on("message", function(m) got[i] = (got[i] or 0) + m end)
      end
      for i = 1, 8 do for _ = 1, 3 do ws[i]:postMessage(i) end end
      H.run()
      for i = 1, 8 do assert.are.equal(3 * i, got[i]) end
    end)
  end)

  describe("parentPort", function()
    -- Once the worker closed its parentPort, nothing can come back that way:
    -- these workers report through an uncaught error value instead.
    it("close() fires close once; posting after it returns false, \"closed\"", function()
      local _, ev = record(function()
        local loom = require "loom"
        local port = loom.parentPort
        local closes = 0
        port:on("message", function() end)
        port:on("close", function()
          closes = closes + 1
          loom.setImmediate(function()   -- after a second close event, if any
            error({ closes = closes, post = { port:postMessage("after close") } })
          end)
        end)
        port:postMessage("before close")
        port:close()
        port:close()
      end)
      H.run()
      assert.are.same({ "before close" }, ev.messages)
      assert.are.equal(1, #ev.errors)
      assert.are.same({ closes = 1, post = { false, "closed" } }, ev.errors[1].err)
      assert.are.equal(1, ev.code)
    end)

    it("close() in a message handler still delivers the messages already queued, then close", function()
      -- as Node: closing parentPort in its own handler delivers what was
      -- queued, then fires close.  The flag makes sure all five are queued
      -- before the worker's loop delivers the first.
      local posted = H.flag()
      local w, ev = record(function(flag, bound)
        local loom = require "loom"
        local port = loom.parentPort
        local got = {}
        port:on("message", function(m)
          got[#got + 1] = m
          if m == 1 then port:close() end
        end)
        port:on("close", function() error({ before_close = got }) end)
        assert(wait_flag(flag, bound), "the parent never posted")
      end, { argv = { posted, H.ms(5000) } })
      for i = 1, 5 do assert.is_true(w:postMessage(i)) end
      H.set_flag(posted)
      H.run()
      assert.are.equal(1, #ev.errors)
      assert.are.same({ before_close = { 1, 2, 3, 4, 5 } }, ev.errors[1].err)
      assert.are.equal(1, ev.code)
    end)

    it("unref() lets a worker with a message listener exit 0, before or after on()", function()
      local after = H.spawn(function()
        local port = require("loom").parentPort
        port:on("message", function() end)
        port:unref()
      end)
      local before = H.spawn(function()
        local port = require("loom").parentPort
        port:unref()
        port:on("message", function() end)
      end)
      assert.are.equal(0, H.join(after))
      assert.are.equal(0, H.join(before))
    end)

    it("ref() after unref() keeps the worker alive again: the parent's message arrives", function()
      local w, ev = record(function()
        local port = require("loom").parentPort
        local function onmsg(m)
          port:postMessage("got " .. m)
          port:off("message", onmsg)
        end
        port:on("message", onmsg)
        port:unref()
        port:ref()
        port:postMessage("ready")
      end)
      w:on("message", function(m) if m == "ready" then w:postMessage("ping") end end)
      H.run()
      assert.are.same({ "ready", "got ping" }, ev.messages)
      assert.are.equal(0, ev.code)
    end)

    it("an unref'd parentPort still delivers while something else keeps the worker alive", function()
      local w, ev = record(function()
        local loom = require "loom"
        local port = loom.parentPort
        local t = loom.setTimeout(function() end, 1e9)
        port:on("message", function(m)
          port:postMessage("got " .. m)
          t:close()
        end)
        port:unref()
        port:postMessage("ready")
      end)
      w:on("message", function(m) if m == "ready" then w:postMessage("ping") end end)
      H.run()
      assert.are.same({ "ready", "got ping" }, ev.messages)
      assert.are.equal(0, ev.code)
    end)
  end)

  describe("many at once", function()
    it("32 workers each stream 500 messages both ways; every sum is right", function()
      local N, K = 32, 500
      local sums, exits = {}, 0
      for id = 1, N do
        local w = H.spawn(function(k)
          local loom = require "loom"
          local total = 0
          loom.parentPort:on("message", function(m)
            total = total + m.v
            loom.parentPort:postMessage({ v = m.v * 2 })
            if m.last then loom.parentPort:close() end
          end)
          return k
        end, { argv = { K } })
        sums[id] = 0
        w:on("message", function(m) sums[id] = sums[id] + m.v end)
        w:on("exit", function(code) assert.are.equal(0, code); exits = exits + 1 end)
        for i = 1, K do w:postMessage({ v = i, last = i == K }) end
      end
      H.run()
      assert.are.equal(N, exits)
      for id = 1, N do assert.are.equal(K * (K + 1), sums[id]) end
    end)

    it("past the open-files limit a worker fails with its error event; the others echo", function()
      if H.no_fork(pending) then return end
      -- a child process under `ulimit -n 40`: a worker holds 5 descriptors
      local script = [=[
        local loom = require "loom"
        local ws, fs, errs, echoed = {}, {}, {}, 0
        for i = 1, 20 do
          local w = loom.Worker("local loom = require 'loom'; " ..
            "loom.parentPort:on('message', function(m) loom.parentPort:postMessage(m) end)",
            { eval = true })
          local f = loom.Future.new()
          w:on("error", function(e) errs[#errs + 1] = tostring(e) end)
          w:once("message", function(m) if m == i then echoed = echoed + 1 end; f:resolve(true) end)
          w:once("exit", function() f:resolve(false) end)
          w:postMessage(i)
          ws[i], fs[i] = w, f
        end
        loom.all(fs):await()
        print(("echoed=%d errors=%d"):format(echoed, #errs))
        print("first=" .. tostring(errs[1]))
        for _, w in ipairs(ws) do w:terminate() end
      ]=]
      local tmp = os.tmpname()
      local f = assert(io.open(tmp, "w"))
      f:write(script)
      f:close()
      local p = io.popen(("ulimit -n 40; timeout 60 %s %s 2>&1; echo \"rc=$?\""):format(
        os.getenv("LUA") or "lua5.4", tmp))
      local out = p:read("a")
      p:close()
      os.remove(tmp)
      assert.matches("rc=0", out, 1, true)
      local echoed, nerr = out:match("echoed=(%d+) errors=(%d+)")
      echoed, nerr = tonumber(echoed), tonumber(nerr)
      assert.is_true(echoed >= 1, out)
      assert.is_true(nerr >= 1, out)
      assert.are.equal(20, echoed + nerr, out)
      assert.matches("first=cannot create the worker's event loop: too many open files", out, 1, true)
    end)
  end)

  describe("nested workers", function()
    it("lets a worker spawn a worker and relay its messages", function()
      local ev = runworker(function()
        local loom = require "loom"
        local inner = loom.Worker(function()
          local loom = require "loom"
          loom.parentPort:postMessage({ from = "inner", id = loom.threadId,
                                        main = loom.isMainThread })
        end)
        inner:on("message", function(m)
          loom.parentPort:postMessage(m)
        end)
        inner:on("exit", function(code)
          loom.parentPort:postMessage({ innerExit = code, innerId = inner.threadId,
                                        myId = loom.threadId })
        end)
      end)
      assert.are.equal(0, ev.code)
      local a, b = ev.messages[1], ev.messages[2]
      assert.are.equal("inner", a.from)
      assert.is_false(a.main)
      assert.are.equal(0, b.innerExit)
      assert.are.equal(b.innerId, a.id)
      assert.are_not.equal(b.innerId, b.myId)
    end)

    it("passes an inner worker's error to its parent worker", function()
      local ev = runworker(function()
        local loom = require "loom"
        local inner = loom.Worker(function() error({ inner = true }) end)
        inner:on("error", function(e) loom.parentPort:postMessage(e) end)
      end)
      assert.are.same({ { inner = true } }, ev.messages)
      assert.are.equal(0, ev.code)
    end)

    it("raises an inner worker's unheard error in the parent worker", function()
      local ev = runworker(function()
        local loom = require "loom"
        loom.Worker(function() error("inner unheard") end)
      end)
      assert.are.equal(1, ev.code)
      assert.matches("inner unheard", tostring(ev.errors[1].err), 1, true)
    end)

    it("stops three levels of workers cleanly", function()
      local ev = runworker(function()
        local loom = require "loom"
        local w = loom.Worker(function()
          local loom = require "loom"
          local w2 = loom.Worker(function()
            require("loom").parentPort:postMessage("deepest")
          end)
          w2:on("message", function(m) loom.parentPort:postMessage(m) end)
        end)
        w:on("message", function(m) loom.parentPort:postMessage(m) end)
      end)
      assert.are.same({ "deepest" }, ev.messages)
      assert.are.equal(0, ev.code)
    end)
  end)

  describe("ref and unref", function()
    it("does not keep loom.run() alive once unref'd", function()
      local w = H.spawn(function()
        local loom = require "loom"
        loom.setInterval(function() end, 10)   -- runs forever
      end)
      assert.are.equal(w, w:unref())
      local t0 = loom.now()
      H.run(2000)
      assert.is_true(loom.now() - t0 < H.ms(2000))
      assert.is_false((H.exited(w)))
      local code = w:terminate():await()
      assert.are.equal(1, code)
    end)

    it("delivers messages of an unref'd worker while the loop runs anyway", function()
      local w = H.spawn(function()
        require("loom").parentPort:postMessage("hello")
      end)
      w:unref()
      local got
      -- keeps the loop running until the message is there (H.run's bound
      -- fails the test if it never comes)
      local t = loom.setTimeout(function() end, 1e9)
      w:on("message", function(m) got = m; t:close() end)
      H.run()
      t:close()
      assert.are.equal("hello", got)
      H.join(w)
    end)

    it("keeps loom.run() alive again after ref()", function()
      -- the worker lives until the parent answers it: only the ref can keep
      -- loom.run() going that long
      local w = H.spawn(function()
        local port = require("loom").parentPort
        port:once("message", function() port:postMessage("done") end)
        port:postMessage("ready")
      end)
      local got = {}
      w:on("message", function(m)
        got[#got + 1] = m
        if m == "ready" then w:postMessage("go") end
      end)
      assert.are.equal(w, w:unref():ref())
      H.run()
      assert.are.same({ "ready", "done" }, got)
      assert.are.same({ true, 0 }, { H.exited(w) })
    end)

    it("balances ref/unref called many times and after exit", function()
      local w = H.spawn(function() end)
      w:unref(); w:unref(); w:ref(); w:ref(); w:ref()
      H.run()
      assert.is_true((H.exited(w)))
      w:unref(); w:ref(); w:unref()
      assert.are.equal(0, H.stats().holds)
    end)
  end)

  describe("finalizers and first use", function()
    it("workers load loom's Lua modules from the runtime's bytecode, not package.path", function()
      local saved = package.path
      package.path = "/nonexistent/?.lua"      -- what workers inherit
      local ok, got = pcall(H.inworker, function()
        local loom = require "loom"
        local names = {}
        for _, m in ipairs({ "loom.events", "loom.future", "loom.endpoint", "loom.port",
                             "loom.worker" }) do
          names[#names + 1] = type(require(m)) == "table" and m or "?"
        end
        loom.parentPort:postMessage(table.concat(names, " "))
      end)
      package.path = saved
      assert.is_true(ok, tostring(got))
      assert.are.equal("loom.events loom.future loom.endpoint loom.port loom.worker", got)
    end)

    it("warn in a worker is plain Lua's: off until @on, pieces printed whole", function()
      -- a worker's state is not luaL_newstate's (it lives on loom's arena),
      -- so its warning function is loom's twin of lauxlib's
      if H.no_fork(pending) then return end
      local out = H.run_script([[
        local loom = require "loom"
        for _, opts in ipairs({ { eval = true },
                                { eval = true, resourceLimits = { maxMemoryMb = 16 } } }) do
          local w = loom.Worker([=[
            warn("hidden: warnings start off")
            warn("@on")
            warn("one ", "message ", "in pieces")
            warn("@off")
            warn("hidden again")
            warn("@on")
            warn("two")
          ]=], opts)
          local done = false
          w:on("exit", function() done = true end)
          while not done do loom.poll(1) end
        end
      ]], 30)
      assert.matches("rc=0", out, 1, true)
      assert.not_matches("hidden", out, 1, true)
      local _, n1 = out:gsub("Lua warning: one message in pieces\n", "")
      local _, n2 = out:gsub("Lua warning: two\n", "")
      assert.are.equal(2, n1)
      assert.are.equal(2, n2)
    end)

    it("os.exit in a finalizer that runs while the worker closes sets the exit code", function()
      -- as os.exit anywhere else in a worker: the code it gives is the
      -- worker's exit code, and it is not an error
      local w = H.spawn([[setmetatable({}, { __gc = function() os.exit(7) end })]], { eval = true })
      local code, errors = nil, 0
      w:on("exit", function(c) code = c end)
      w:on("error", function() errors = errors + 1 end)
      H.run()
      assert.are.equal(7, code)
      assert.are.equal(0, errors)
    end)

    it("loom required first inside a coroutine runs callbacks on a live thread", function()
      if H.no_fork(pending) then return end
      local out = H.run_script([[
        local loom = coroutine.wrap(function() return require "loom" end)()
        collectgarbage(); collectgarbage()
        loom.setTimeout(function() collectgarbage(); io.write("timer ran\n") end, 1)
        loom.run()
      ]], 20)
      assert.matches("timer ran", out, 1, true)
      assert.matches("rc=0", out, 1, true)
    end)

    it("a worker opens shared memory, frozen tables and Channels on first use, a message's too", function()
      -- a worker opens those concepts of loom.core only when it first uses
      -- them: here a message brings them before the worker touched any
      local buf = loom.SharedBuffer(16)
      local view = buf:view("int32")
      local q = loom.Channel(4)
      local w = H.spawn([[
        local loom = require "loom"
        loom.parentPort:once("message", function(m)
          local v, ft, ch = m[1], m[2], m[3]
          v:add(1, 41)
          ch:push(ft.answer + v[1])
          loom.parentPort:postMessage({ type(loom.freeze), tostring(m[1]):match("^[%w.]+"),
                                        loom.freeze({ 7 })[1] })
        end)
      ]], { eval = true })
      local got
      w:on("message", function(m) got = m end)
      w:postMessage({ view, loom.freeze({ answer = 1 }), q })
      H.run_until(function() return got ~= nil end)
      assert.are.same({ "function", "loom.SharedView", 7 }, got)
      assert.are.equal(41, view[1])
      assert.are.equal(42, q:pop(0))
      w:terminate()
    end)

    it("a worker whose first use of shared memory fails for memory opens it on the next", function()
      local w = H.spawn(function()
        local loom = require "loom"
        local t, first = {}, nil
        local ok = pcall(function()
          for i = 1, math.huge do t[i] = ("x"):rep(1000) .. i end
        end)
        assert(not ok)
        -- may fail: the heap is full (looking loom.SharedBuffer up opens it)
        local ok1, err1 = pcall(function() return loom.SharedBuffer(8) end)
        first = ok1 and "opened" or tostring(err1):match("not enough memory") or tostring(err1)
        t = nil
        collectgarbage()
        local b = loom.SharedBuffer(8)
        local v = b:view("uint8")
        v[1] = 5
        loom.parentPort:postMessage({ first, v[1], loom.freeze({ 3 })[1] })
      end, { resourceLimits = { maxMemoryMb = 2 } })
      local got, err
      w:on("message", function(m) got = m end)
      w:on("error", function(e) err = e end)
      H.run()
      assert.is_nil(err)
      assert.is_true(got[1] == "opened" or got[1] == "not enough memory", tostring(got[1]))
      assert.are.equal(5, got[2])
      assert.are.equal(3, got[3])
    end)

    it("a closing worker's finalizer can make nor receive nothing that needs a finalizer: an error, no leak", function()
      -- Lua registers no finalizer while a state closes: a SharedBuffer (or
      -- any value holding a count of something shared) made there would
      -- never be released.  The finalizer gets an error instead; the
      -- child runs under the suite's leak checker where there is one.
      if H.no_fork(pending) then return end
      local out = H.run_script([[
        local loom = require "loom"
        local w = loom.Worker([=[
          LOOM = require "loom"
          CORE = require "loom.core"
          CH = LOOM.MessageChannel()
          CH.port1:postMessage(LOOM.SharedBuffer(8))
          KEEP = setmetatable({}, { __gc = function()
            for _, f in ipairs({ function() return CORE.SharedBuffer(8) end,
                                 function() return LOOM.freeze({ 1 }) end,
                                 function() return LOOM.Channel(1) end,
                                 function() return LOOM.MessageChannel() end,
                                 function() return LOOM.receiveMessageOnPort(CH.port2) end }) do
              local ok, err = pcall(f)
              io.write("finalizer: ", tostring(ok), " ", tostring(err), "\n")
            end
          end })
        ]=], { eval = true })
        local done = false
        w:on("exit", function() done = true end)
        while not done do loom.poll(1) end
      ]], 20)
      local _, closing = out:gsub("finalizer: false [^\n]*the state is closing", "")
      assert.are.equal(4, closing, out)
      assert.matches("finalizer: false [^\n]*loom.SharedBuffer: not received while the state closes", out)
      assert.matches("rc=0", out, 1, true)
    end)

    it("a finalizer that calls loom after loom closed gets an error, not a crash", function()
      if H.no_fork(pending) then return end
      local out = H.run_script([[
        KEEP = setmetatable({}, { __gc = function()
          local ok, err = pcall(function() return LOOM.setTimeout(function() end, 1) end)
          io.write(tostring(ok), " ", tostring(err), "\n")
        end })
        LOOM = require "loom"
      ]], 20)
      assert.matches("false .*loom is closed", out)
      assert.matches("rc=0", out, 1, true)
    end)
  end)

  describe("a script that ends with workers still running", function()
    it("exits (the workers are stopped when the state closes)", function()
      if H.no_fork(pending) then return end
      local script = [[
        local loom = require "loom"
        loom.Worker("while true do end", { eval = true })
        loom.Worker("require('loom').sleep(100000)", { eval = true })
        loom.Worker("require('loom').parentPort:on('message', print)", { eval = true })
        io.write("spawned\n")
      ]]
      local out = H.run_script(script, 20)
      assert.matches("spawned", out, 1, true)
      assert.matches("rc=0", out, 1, true)
    end)
  end)
end)
