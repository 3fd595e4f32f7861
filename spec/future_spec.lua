-- Futures, loom.async, await, loom.all, loom.race (API.md "Futures, async
-- and timers").
local H = require "helper"
local loom = require "loom"

-- a Future settled by a timer after ms
local function later(ms, value, fail)
  local f = loom.Future.new()
  loom.setTimeout(function()
    if fail then f:reject(value) else f:resolve(value) end
  end, ms)
  return f
end

describe("futures", function()
  before_each(H.before_each)
  after_each(H.after_each)

  describe("loom.async", function()
    it("returns a Future of the function's result", function()
      local f = loom.async(function(a, b) return a + b end, 40, 2)
      assert.is_true(loom.isFuture(f))
      assert.are.equal("fulfilled", f:state())
      assert.are.equal(42, f:await())
    end)

    it("runs the function at once, up to its first await", function()
      local order = {}
      loom.async(function()
        order[#order + 1] = "started"
        later(1, true):await()
        order[#order + 1] = "resumed"
      end)
      order[#order + 1] = "returned"
      H.run()
      assert.are.same({ "started", "returned", "resumed" }, order)
    end)

    it("awaits futures in sequence", function()
      local f = loom.async(function()
        local a = later(20, 1):await()
        local b = later(1, 2):await()
        return a + b
      end)
      assert.are.equal("pending", f:state())
      H.run()
      assert.are.equal(3, f:await())
    end)

    it("awaits an already settled future without yielding", function()
      local g = loom.Future.new()
      g:resolve("done")
      local f = loom.async(function() return g:await() end)
      assert.are.equal("fulfilled", f:state())
      assert.are.equal("done", f:await())
    end)

    it("nests: an async awaits another async", function()
      local f = loom.async(function()
        local inner = loom.async(function() return later(5, "inner"):await() .. "!" end)
        return inner:await() .. "?"
      end)
      assert.are.equal("inner!?", f:await())
    end)

    it("rejects with the error value when the function raises", function()
      local f = loom.async(function() error({ code = 7 }) end)
      assert.are.equal("rejected", f:state())
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.same({ code = 7 }, err)
    end)

    it("rejects with a string error as raised", function()
      local f = loom.async(function() error("plain", 0) end)
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.equal("plain", err)
    end)

    it("rejects when an awaited future rejects, and the error can be caught", function()
      local f = loom.async(function()
        local ok, err = pcall(function() return later(1, "nope", true):await() end)
        return { ok, err }
      end)
      assert.are.same({ false, "nope" }, f:await())
    end)

    it("gives a traceback to onError", function()
      local tb
      loom.async(function()
        local function deep() error("with traceback") end
        deep()
      end):next(nil, function(_, t) tb = t end)
      assert.are.equal("string", type(tb))
      assert.matches("stack traceback", tb, 1, true)
    end)

    it("rejects when the coroutine yields something that is not a future", function()
      local f = loom.async(function() coroutine.yield(5) end)
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.matches("non%-future", tostring(err))
    end)

    it("can be started from an event callback and await there", function()
      local got
      loom.setTimeout(function()
        loom.async(function() got = later(5, "from callback"):await() end)
      end, 0)
      H.run()
      assert.are.equal("from callback", got)
    end)
  end)

  describe("Future", function()
    it("settles once: later resolve and reject are ignored", function()
      local f = loom.Future.new()
      assert.are.equal("pending", f:state())
      assert.is_true(f:resolve(1))
      assert.is_false(f:resolve(2))
      assert.is_false(f:reject("x"))
      assert.are.equal("fulfilled", f:state())
      assert.are.equal(1, f:await())
    end)

    it("can be resolved with nil", function()
      local f = loom.Future.new()
      f:resolve(nil)
      assert.are.equal("fulfilled", f:state())
      assert.is_nil(f:await())
    end)

    it("can be rejected with any value", function()
      for _, v in ipairs({ "s", 1, true, { t = 1 } }) do
        local f = loom.Future.new()
        f:reject(v)
        local ok, err = pcall(f.await, f)
        assert.is_false(ok)
        assert.are.same(v, err)
      end
    end)

    it("is recognised by isFuture, other values are not", function()
      assert.is_true(loom.isFuture(loom.Future.new()))
      assert.is_false(loom.isFuture({}))
      assert.is_false(loom.isFuture(nil))
      assert.is_false(loom.isFuture(setmetatable({}, {})))
    end)
  end)

  describe("next", function()
    it("chains values", function()
      local f = later(1, 2):next(function(v) return v + 1 end):next(function(v) return v * 10 end)
      assert.are.equal(30, f:await())
    end)

    it("runs the callback at once on a settled future", function()
      local f = loom.Future.new()
      f:resolve("v")
      local got
      f:next(function(v) got = v end)
      assert.are.equal("v", got)
    end)

    it("runs callbacks in the order they were added", function()
      local f, order = loom.Future.new(), {}
      for i = 1, 5 do f:next(function() order[#order + 1] = i end) end
      f:resolve()
      assert.are.same({ 1, 2, 3, 4, 5 }, order)
    end)

    it("flattens a future returned by the callback", function()
      local f = later(1, "a"):next(function(v) return later(5, v .. "b") end)
      assert.are.equal("ab", f:await())
    end)

    it("passes a rejection to onError with the error value", function()
      local got
      local f = later(1, { reason = "bad" }, true):next(function() return "not called" end,
                                                        function(e) got = e; return "recovered" end)
      assert.are.equal("recovered", f:await())
      assert.are.same({ reason = "bad" }, got)
    end)

    it("passes a rejection through when there is no onError", function()
      local f = later(1, "deep", true):next(function() return 1 end):next(function() return 2 end)
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.equal("deep", err)
    end)

    it("passes a value through when there is no onValue", function()
      local f = later(1, "kept"):next(nil, function() return "not called" end)
      assert.are.equal("kept", f:await())
    end)

    it("rejects when the callback raises", function()
      local f = later(1, 1):next(function() error({ in_callback = true }) end)
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.same({ in_callback = true }, err)
    end)

    it("rejects when a returned future rejects", function()
      local f = later(1, 1):next(function() return later(1, "inner failure", true) end)
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.equal("inner failure", err)
    end)

    it("catch handles a rejection", function()
      local f = later(1, "oops", true):catch(function(e) return "caught " .. e end)
      assert.are.equal("caught oops", f:await())
    end)
  end)

  describe("loom.all", function()
    it("gives the values in list order, whatever order they settle in", function()
      local f = loom.all({ later(30, "a"), later(10, "b"), later(20, "c") })
      assert.are.same({ "a", "b", "c" }, f:await())
    end)

    it("settles at once for an empty list", function()
      local f = loom.all({})
      assert.are.equal("fulfilled", f:state())
      assert.are.same({}, f:await())
    end)

    it("keeps nil values at their index", function()
      local f = loom.all({ later(1, nil), later(2, "x") })
      local v = f:await()
      assert.is_nil(v[1])
      assert.are.equal("x", v[2])
    end)

    it("rejects with the first rejection", function()
      local f = loom.all({ later(30, "slow"), later(5, "failed", true), later(10, "ok") })
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.equal("failed", err)
      H.run()   -- let the other timers end
    end)

    it("accepts already settled futures", function()
      local a, b = loom.Future.new(), loom.Future.new()
      a:resolve(1); b:resolve(2)
      assert.are.same({ 1, 2 }, loom.all({ a, b }):await())
    end)

    it("treats plain values in the list as values (as Promise.all)", function()
      local f = loom.all({ later(1, "future"), 42 })
      assert.are.same({ "future", 42 }, f:await())
    end)

    it("counts a future listed twice at both places, and leaves the list as it was", function()
      local a, b = loom.Future.new(), loom.Future.new()
      local list = { a, b, a }
      local f = loom.all(list)
      a:resolve("A")
      assert.are.equal("pending", f:state())
      b:resolve("B")
      assert.are.same({ "A", "B", "A" }, f:await())
      assert.are.equal(a, list[1])          -- the caller's list holds the futures still
      assert.are.equal(b, list[2])
    end)

    it("runs every callback of a future, in the order they were attached", function()
      local a, seen = loom.Future.new(), {}
      local f1 = a:next(function(v) seen[#seen + 1] = "next " .. v end)
      local f2 = loom.all({ a })
      local f3 = a:next(function(v) seen[#seen + 1] = "last " .. v end)
      a:resolve(7)
      f1:await(); f3:await()
      assert.are.same({ 7 }, f2:await())
      assert.are.same({ "next 7", "last 7" }, seen)
    end)

    it("ignores what settles after the first rejection", function()
      local a, b = loom.Future.new(), loom.Future.new()
      local f = loom.all({ a, b })
      a:reject("first")
      b:resolve("late")
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.equal("first", err)
    end)
  end)

  describe("loom.race", function()
    it("settles with the first future to settle", function()
      local f = loom.race({ later(30, "slow"), later(5, "fast"), later(20, "medium") })
      assert.are.equal("fast", f:await())
      H.run()
    end)

    it("settles with the first rejection when it comes first", function()
      local f = loom.race({ later(30, "slow"), later(5, "failed", true) })
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.are.equal("failed", err)
      H.run()
    end)

    it("ignores later rejections", function()
      local f = loom.race({ later(5, "first"), later(20, "late failure", true) })
      assert.are.equal("first", f:await())
      H.run()
      assert.are.equal("fulfilled", f:state())
    end)

    it("never settles for an empty list", function()
      assert.are.equal("pending", loom.race({}):state())
    end)
  end)

  describe("await", function()
    it("outside loom.async runs the loop until the future settles", function()
      local ticks = 0
      local iv = loom.setInterval(function() ticks = ticks + 1 end, 1)
      assert.are.equal("done", later(30, "done"):await())
      iv:close()
      assert.is_true(ticks > 0)
    end)

    it("outside loom.async returns when the awaited reply arrives in a spin (50 rounds)", function()
      -- regression: a reply delivered while the loop spun before blocking
      -- settled the future, then the same turn blocked with nothing to wake it
      for i = 1, 50 do
        local w = H.spawn([[local loom = require 'loom'
          loom.parentPort:on('message', function(m) loom.parentPort:postMessage(m) end)]],
          { eval = true })
        local f = loom.Future.new()
        w:on("message", function(m) f:resolve(m) end)
        w:postMessage(i)
        assert.are.equal(i, f:await())
        assert.are.equal(1, w:terminate():await())
      end
    end)

    it("outside loom.async waits for a worker's message", function()
      local w = H.spawn(function() require("loom").parentPort:postMessage("from worker") end)
      local f = loom.Future.new()
      w:on("message", function(m) f:resolve(m) end)
      assert.are.equal("from worker", f:await())
      H.join(w)
    end)

    it("raises on a future that can never settle instead of hanging", function()
      local t0 = loom.now()
      local ok, err = pcall(function() return loom.Future.new():await() end)
      assert.is_false(ok)
      assert.matches("never settle", err, 1, true)
      assert.is_true(loom.now() - t0 < H.ms(2000))
    end)

    it("raises on a future that can never settle once the loop empties", function()
      loom.setTimeout(function() end, 20)
      local ok, err = pcall(function() return loom.Future.new():await() end)
      assert.is_false(ok)
      assert.matches("never settle", err, 1, true)
    end)

    it("raises on a future that can never settle with only unref'd timers left", function()
      local t = loom.setTimeout(function() end, 100000)
      t:unref()
      local t0 = loom.now()
      local ok, err = pcall(function() return loom.Future.new():await() end)
      t:close()
      assert.is_false(ok)
      assert.matches("never settle", err, 1, true)
      assert.is_true(loom.now() - t0 < H.ms(2000))
    end)

    it("raises on an async that awaits a never-settling future", function()
      local f = loom.async(function() return loom.Future.new():await() end)
      local ok, err = pcall(f.await, f)
      assert.is_false(ok)
      assert.matches("never settle", err, 1, true)
    end)

    it("inside an event callback raises a clear error", function()
      local ok, err
      local pending = loom.Future.new()
      loom.setTimeout(function() ok, err = pcall(pending.await, pending) end, 0)
      H.run()
      assert.is_false(ok)
      assert.matches("already running", err, 1, true)
      assert.matches("loom.async", err, 1, true)
    end)

    it("inside an event callback, uncaught, is raised from loom.run()", function()
      local pending = loom.Future.new()
      loom.setTimeout(function() pending:await() end, 0)
      local ok, err = pcall(loom.run)
      assert.is_false(ok)
      assert.matches("already running", err, 1, true)
    end)

    it("inside a worker message handler raises a clear error", function()
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:once("message", function()
          local ok, err = pcall(function() return loom.Future.new():await() end)
          loom.parentPort:postMessage({ ok, err })
        end)
      end)
      local got
      w:on("message", function(m) got = m end)
      w:postMessage("go")
      H.run()
      assert.is_false(got[1])
      assert.matches("already running", got[2], 1, true)
    end)

    it("inside an event callback works on a settled future", function()
      local done = loom.Future.new()
      done:resolve("ready")
      local got
      loom.setTimeout(function() got = done:await() end, 0)
      H.run()
      assert.are.equal("ready", got)
    end)

    it("in a worker's main chunk runs the worker's loop", function()
      local got = H.inworker(function()
        local loom = require "loom"
        local f = loom.Future.new()
        loom.setTimeout(function() f:resolve("settled in worker") end, 10)
        loom.parentPort:postMessage(f:await())
      end)
      assert.are.equal("settled in worker", got)
    end)
  end)
end)
