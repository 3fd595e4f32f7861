-- The event loop: timers, immediates, sleep, poll, run (API.md "Futures,
-- async and timers" and "Module").
local H = require "helper"
local loom = require "loom"

describe("the event loop", function()
  before_each(H.before_each)
  after_each(H.after_each)

  describe("setTimeout", function()
    it("fires timers in order of their delays", function()
      local order = {}
      loom.setTimeout(function() order[#order + 1] = 30 end, 30)
      loom.setTimeout(function() order[#order + 1] = 10 end, 10)
      loom.setTimeout(function() order[#order + 1] = 20 end, 20)
      loom.setTimeout(function() order[#order + 1] = 0 end, 0)
      H.run()
      assert.are.same({ 0, 10, 20, 30 }, order)
    end)

    it("fires timers with the same delay in the order they were set", function()
      local order = {}
      for i = 1, 20 do loom.setTimeout(function() order[#order + 1] = i end, 5) end
      H.run()
      local expected = {}
      for i = 1, 20 do expected[i] = i end
      assert.are.same(expected, order)
    end)

    it("does not fire before its delay", function()
      local t0, fired = loom.now(), nil
      loom.setTimeout(function() fired = loom.now() end, 50)
      H.run()
      assert.is_true(fired - t0 >= 49, ("fired after %.1f ms"):format(fired - t0))
    end)

    it("does not fire early after the thread was busy outside the loop", function()
      loom.setTimeout(function() end, 1)
      H.run()
      loom.sleep(300)               -- busy: the loop does not run meanwhile
      local t0, fired = loom.now(), nil
      loom.setTimeout(function() fired = loom.now() end, 100)
      H.run()
      assert.is_true(fired - t0 >= 99, ("fired after %.1f ms"):format(fired - t0))
    end)

    it("passes extra arguments to the callback", function()
      local got
      loom.setTimeout(function(...) got = table.pack(...) end, 0, "a", nil, 3)
      H.run()
      assert.are.same({ n = 3, "a", nil, 3 }, got)
    end)

    it("treats a missing, zero, negative, fractional or NaN delay as 1 ms (as Node)", function()
      -- all due with the 1 ms timer set first, so they fire after it, in the
      -- order set; as 0 ms they would be due first and fire before it
      local order = {}
      local function mark(name) return function() order[#order + 1] = name end end
      loom.setTimeout(mark("1 ms"), 1)
      loom.setTimeout(mark("missing"))
      loom.setTimeout(mark("zero"), 0)
      loom.setTimeout(mark("negative"), -5)
      loom.setTimeout(mark("fraction"), 0.5)
      loom.setTimeout(mark("NaN"), 0 / 0)
      H.run()
      assert.are.same({ "1 ms", "missing", "zero", "negative", "fraction", "NaN" }, order)
    end)

    it("lets a callback set further timers", function()
      local order = {}
      loom.setTimeout(function()
        order[#order + 1] = "outer"
        loom.setTimeout(function() order[#order + 1] = "inner" end, 0)
      end, 0)
      H.run()
      assert.are.same({ "outer", "inner" }, order)
    end)

    it("is cancelled by clearTimeout, also from another callback", function()
      local fired = {}
      local a = loom.setTimeout(function() fired[#fired + 1] = "a" end, 10)
      local b = loom.setTimeout(function() fired[#fired + 1] = "b" end, 30)
      loom.clearTimeout(a)
      loom.setTimeout(function() loom.clearTimeout(b) end, 5)
      H.run()
      assert.are.same({}, fired)
    end)

    it("accepts clearTimeout(nil) and clearing twice", function()
      local t = loom.setTimeout(function() end, 10)
      loom.clearTimeout(t)
      loom.clearTimeout(t)
      loom.clearTimeout(nil)
      t:close()
      H.run()
    end)

    it("closes with a to-be-closed variable", function()
      local fired = false
      do
        local t <close> = loom.setTimeout(function() fired = true end, 10)   -- luacheck: ignore 211
      end
      H.run()
      assert.is_false(fired)
    end)

    it("keeps a timer alive while it is pending even without a reference", function()
      local fired = false
      loom.setTimeout(function() fired = true end, 30)
      collectgarbage()
      collectgarbage()
      H.run()
      assert.is_true(fired)
    end)
  end)

  describe("setInterval", function()
    it("repeats until clearInterval", function()
      local n = 0
      local iv
      iv = loom.setInterval(function()
        n = n + 1
        if n == 5 then loom.clearInterval(iv) end
      end, 2)
      H.run()
      assert.are.equal(5, n)
    end)

    it("repeats with a 0 delay without starving other timers", function()
      local n, other = 0, false
      local iv = loom.setInterval(function() n = n + 1 end, 0)
      loom.setTimeout(function() other = true; iv:close() end, 20)
      H.run()
      assert.is_true(other)
      assert.is_true(n > 0)
    end)

    it("passes extra arguments on every call", function()
      local got = {}
      local iv
      iv = loom.setInterval(function(x, y)
        got[#got + 1] = x .. y
        if #got == 3 then iv:close() end
      end, 1, "p", "q")
      H.run()
      assert.are.same({ "pq", "pq", "pq" }, got)
    end)

    it("survives garbage collections while active", function()
      local n = 0
      local fire = function(close)
        n = n + 1
        collectgarbage()
        if n == 5 then close() end
      end
      do
        local iv
        iv = loom.setInterval(function() fire(function() iv:close() end) end, 1)
      end
      collectgarbage()
      collectgarbage()
      H.run()
      assert.are.equal(5, n)
    end)
  end)

  describe("setImmediate", function()
    it("runs immediates in the order they were set", function()
      local order = {}
      for i = 1, 10 do loom.setImmediate(function() order[#order + 1] = i end) end
      H.run()
      assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, order)
    end)

    it("runs an immediate set inside an immediate on a later turn", function()
      local order = {}
      loom.setImmediate(function()
        order[#order + 1] = "a"
        loom.setImmediate(function() order[#order + 1] = "c" end)
      end)
      loom.setImmediate(function() order[#order + 1] = "b" end)
      H.run()
      assert.are.same({ "a", "b", "c" }, order)
    end)

    it("runs an immediate set in a timer before a 0 ms timer set there", function()
      local order = {}
      loom.setTimeout(function()
        loom.setTimeout(function() order[#order + 1] = "timeout" end, 0)
        loom.setImmediate(function() order[#order + 1] = "immediate" end)
      end, 0)
      H.run()
      assert.are.same({ "immediate", "timeout" }, order)
    end)

    it("is not starved by a chain of 0 ms timers", function()
      local ticks, ranat = 0, nil
      local function tick()
        ticks = ticks + 1
        if ticks < 100000 and not ranat then loom.setTimeout(tick, 0) end
      end
      loom.setTimeout(tick, 0)
      loom.setImmediate(function() ranat = ticks end)
      H.run()
      assert.is_true(ranat ~= nil and ranat < 100, ("immediate ran after %s ticks"):format(ranat))
    end)

    it("passes extra arguments", function()
      local got
      loom.setImmediate(function(a, b) got = { a, b } end, 1, "two")
      H.run()
      assert.are.same({ 1, "two" }, got)
    end)

    it("is cancelled by clearImmediate, also from an earlier immediate", function()
      local order = {}
      local b
      loom.setImmediate(function() order[#order + 1] = "a"; loom.clearImmediate(b) end)
      b = loom.setImmediate(function() order[#order + 1] = "b" end)
      local c = loom.setImmediate(function() order[#order + 1] = "c" end)
      loom.clearImmediate(c)
      H.run()
      assert.are.same({ "a" }, order)
    end)

    it("keeps the loop alive until they have run, and then not", function()
      local n = 0
      loom.setImmediate(function() n = n + 1 end)
      local t0 = loom.now()
      H.run()
      assert.are.equal(1, n)
      assert.is_true(loom.now() - t0 < H.ms(2000))
      assert.is_false(loom.poll())
    end)

    it("keeps running when one raises, on the next run", function()
      local order = {}
      loom.setImmediate(function() order[#order + 1] = 1 end)
      loom.setImmediate(function() error("immediate failed") end)
      loom.setImmediate(function() order[#order + 1] = 3 end)
      local ok, err = pcall(H.run)
      assert.is_false(ok)
      assert.matches("immediate failed", err, 1, true)
      H.run()
      assert.are.same({ 1, 3 }, order)
    end)
  end)

  describe("ref and unref", function()
    it("does not keep run() alive for an unref'd timer", function()
      local fired = false
      local t = loom.setTimeout(function() fired = true end, 100000)
      assert.are.equal(t, t:unref())
      local t0 = loom.now()
      H.run()
      assert.is_true(loom.now() - t0 < H.ms(2000))
      assert.is_false(fired)
      t:close()
    end)

    it("fires an unref'd timer while something else keeps the loop running", function()
      local fired = false
      loom.setTimeout(function() fired = true end, 5):unref()
      loom.setTimeout(function() end, 100)
      H.run()
      assert.is_true(fired)
    end)

    it("keeps run() alive again after ref()", function()
      local fired = false
      local t = loom.setTimeout(function() fired = true end, 20)
      assert.are.equal(t, t:unref():ref())
      H.run()
      assert.is_true(fired)
    end)

    it("does not keep run() alive for an unref'd interval", function()
      local n = 0
      local iv = loom.setInterval(function() n = n + 1 end, 1)
      iv:unref()
      loom.setTimeout(function() end, 30)
      H.run()
      iv:close()
      assert.is_true(n > 0)
    end)
  end)

  describe("loom.sleep", function()
    it("blocks outside loom.async and returns true", function()
      local t0 = loom.now()
      assert.is_true(loom.sleep(30))
      assert.is_true(loom.now() - t0 >= 29)
    end)

    it("accepts 0", function()
      assert.is_true(loom.sleep(0))
    end)

    it("inside loom.async does not block other callbacks", function()
      local order = {}
      loom.async(function()
        order[#order + 1] = "async start"
        loom.sleep(60)
        order[#order + 1] = "async end"
      end)
      loom.setTimeout(function() order[#order + 1] = "timer" end, 10)
      loom.setImmediate(function() order[#order + 1] = "immediate" end)
      H.run()
      assert.are.same({ "async start", "immediate", "timer", "async end" }, order)
    end)

    it("lets several asyncs sleep at once, waking in order of their delays", function()
      local order = {}
      for _, d in ipairs({ 50, 10, 30 }) do
        loom.async(function() loom.sleep(d); order[#order + 1] = d end)
      end
      H.run()
      assert.are.same({ 10, 30, 50 }, order)
    end)

    it("inside loom.async returns true", function()
      local r
      loom.async(function() r = loom.sleep(1) end)
      H.run()
      assert.is_true(r)
    end)
  end)

  describe("loom.poll", function()
    it("returns at once with a long timer pending", function()
      local t = loom.setTimeout(function() end, 100000)
      local t0 = loom.now()
      assert.is_true(loom.poll())
      assert.is_true(loom.now() - t0 < H.ms(500))
      t:close()
    end)

    it("returns false when nothing is left", function()
      assert.is_false(loom.poll())
    end)

    it("runs due timers and immediates", function()
      local fired = {}
      loom.setTimeout(function() fired.timer = true end, 0)
      loom.setImmediate(function() fired.immediate = true end)
      assert.is_true(H.run_until(function() return fired.timer and fired.immediate end, 2000))
    end)

    it("accepts a time budget", function()
      local t = loom.setTimeout(function() end, 100000)
      local t0 = loom.now()
      loom.poll(10)
      assert.is_true(loom.now() - t0 < H.ms(500))
      t:close()
    end)

    it("delivers worker messages", function()
      local w = H.spawn(function()
        local port = require("loom").parentPort
        for i = 1, 100 do port:postMessage(i) end
      end)
      local n = 0
      w:on("message", function() n = n + 1 end)
      assert.is_true(H.run_until(function() return n == 100 and (H.exited(w)) end, 5000))
    end)

    it("raises an error from a timer and then goes on", function()
      local later = false
      loom.setTimeout(function() error("polled timer error") end, 0)
      loom.setTimeout(function() later = true end, 20)
      assert.matches("polled timer error", H.poll_error(2000) or "(nothing raised)", 1, true)
      assert.is_true(H.run_until(function() return later end, 2000))
    end)

    it("raises when called from a callback", function()
      local ok, err
      loom.setTimeout(function() ok, err = pcall(loom.poll) end, 0)
      H.run()
      assert.is_false(ok)
      assert.matches("already running", err, 1, true)
    end)
  end)

  describe("loom.run", function()
    it("returns at once when there is nothing to do", function()
      local t0 = loom.now()
      loom.run()
      assert.is_true(loom.now() - t0 < H.ms(500))
    end)

    it("raises an error from a timer callback", function()
      loom.setTimeout(function() error("timer boom") end, 0)
      local ok, err = pcall(loom.run)
      assert.is_false(ok)
      assert.matches("timer boom", err, 1, true)
    end)

    it("raises a table error from a timer callback as it is", function()
      loom.setTimeout(function() error({ code = 5 }) end, 0)
      local ok, err = pcall(loom.run)
      assert.is_false(ok)
      assert.are.same({ code = 5 }, err)
    end)

    it("can run again after an error, with the other timers intact", function()
      local order = {}
      loom.setTimeout(function() order[#order + 1] = "first" end, 0)
      loom.setTimeout(function() error("middle") end, 10)
      loom.setTimeout(function() order[#order + 1] = "last" end, 40)
      assert.has_error(loom.run)
      H.run()
      assert.are.same({ "first", "last" }, order)
    end)

    it("can run again after an interval raised, the interval still running", function()
      local n = 0
      local iv
      iv = loom.setInterval(function()
        n = n + 1
        if n == 2 then error("interval boom") end
        if n == 4 then iv:close() end
      end, 1)
      assert.has_error(function() loom.run() end, "interval boom")
      H.run()
      assert.are.equal(4, n)
    end)

    it("raises when called from a callback", function()
      local ok, err
      loom.setTimeout(function() ok, err = pcall(loom.run) end, 0)
      H.run()
      assert.is_false(ok)
      assert.matches("already running", err, 1, true)
    end)
  end)

  describe("loom.now", function()
    it("is a float number of milliseconds", function()
      assert.are.equal("float", math.type(loom.now()))
      assert.is_true(loom.now() >= 0)
    end)

    it("never goes backwards", function()
      local prev = loom.now()
      for _ = 1, 100000 do
        local t = loom.now()
        if t < prev then error(("now() went back from %f to %f"):format(prev, t)) end
        prev = t
      end
    end)

    it("advances across a sleep", function()
      local t0 = loom.now()
      loom.sleep(20)
      local d = loom.now() - t0
      assert.is_true(d >= 19, ("advanced %.3f ms"):format(d))
    end)

    it("is the same clock in a worker", function()
      local before = loom.now()
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:postMessage(loom.now())
      end)
      local theirs
      w:on("message", function(m) theirs = m end)
      H.run()
      local after = loom.now()
      assert.is_true(theirs >= before and theirs <= after,
                     ("worker now %f not in [%f, %f]"):format(theirs, before, after))
    end)
  end)
end)
