-- w:terminate(): stops a worker wherever its Lua code is (API.md "Worker").
--
-- Each case spawns a worker that posts "ready" and then gets stuck; the
-- parent terminates it on "ready" and measures the time to the exit event.
-- The bound is generous (2 s; the real target, 100 ms, is the bench's job).
local H = require "helper"
local loom = require "loom"

-- unscaled, as the helpers take it; H.ms(BOUND) where loom.now() is compared
local BOUND = 2000

-- Spawn source (eval'd unless a function), terminate it once it says
-- "ready", return the exit code and the milliseconds terminate took.
local function stop_when_ready(source)
  local w = H.spawn(source, { eval = type(source) == "string" })
  local t0, t1, code, errors = nil, nil, nil, {}
  local fut
  w:on("error", function(e) errors[#errors + 1] = e end)
  w:on("message", function(m)
    if m == "ready" and not fut then
      t0 = loom.now()
      fut = w:terminate()
    end
  end)
  w:on("exit", function(c) t1, code = loom.now(), c end)
  local ok = H.run_until(function() return code ~= nil end, BOUND + 3000)
  assert(fut, "the worker never said ready")
  assert(ok, "the worker did not exit after terminate()")
  assert.are.same({}, errors)
  return code, t1 - t0, fut
end

local READY = 'local loom = require "loom"; loom.parentPort:postMessage("ready"); '

-- A case: the worker running source stops with exit code 1 within BOUND.
local function stops(name, source)
  it(name, function()
    local code, ms = stop_when_ready(source)
    assert.are.equal(1, code)
    assert.is_true(ms < H.ms(BOUND), ("took %.0f ms"):format(ms))
  end)
end

describe("w:terminate()", function()
  before_each(H.before_each)
  after_each(H.after_each)

  describe("stops a worker", function()
    stops("spinning in `while true do end`", READY .. "while true do end")

    stops("spinning in a __close handler run by coroutine.close", READY .. [[
        local co = coroutine.create(function()
          local guard <close> = setmetatable({}, { __close = function() while true do end end })
          coroutine.yield()
        end)
        coroutine.resume(co)
        coroutine.close(co)]])

    stops("spinning in a __close handler of a failing coroutine.wrap", READY .. [[
        coroutine.wrap(function()
          local guard <close> = setmetatable({}, { __close = function() while true do end end })
          error("boom")
        end)()]])

    stops("blocked in loom.sleep(math.huge)", READY .. "loom.sleep(math.huge)")

    stops("spinning inside pcall in a loop", READY ..
        "while true do pcall(function() while true do end end) end")

    stops("catching errors in a tight loop", READY .. "while true do pcall(error, 'x') end")

    stops("spinning inside a coroutine", READY ..
        "local co = coroutine.create(function() while true do end end) coroutine.resume(co)")

    stops("spinning inside coroutine.wrap", READY ..
        "coroutine.wrap(function() while true do end end)()")

    stops("resuming a yielding coroutine in a loop", READY .. [[
        local co = coroutine.create(function() while true do coroutine.yield() end end)
        while true do coroutine.resume(co) end]])

    stops("in a coroutine loop that resumes spinning coroutines", READY .. [[
        local scheduler = coroutine.wrap(function()
          while true do
            coroutine.resume(coroutine.create(function() while true do end end))
          end
        end)
        scheduler()]])

    stops("in a pcall loop inside a coroutine", READY .. [[
        coroutine.wrap(function()
          while true do pcall(function() while true do end end) end
        end)()]])

    stops("spinning inside loom.async", READY ..
        "loom.async(function() while true do end end)")

    stops("spinning inside loom.async after an await", [[
        local loom = require "loom"
        loom.async(function()
          loom.sleep(1)
          loom.parentPort:postMessage("ready")
          while true do end
        end)]])

    it("spinning inside a message handler", function()
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:on("message", function()
          loom.parentPort:postMessage("ready")
          while true do end
        end)
      end)
      local t0, code
      w:on("message", function() t0 = loom.now(); w:terminate() end)
      w:on("exit", function(c) code = c end)
      w:postMessage("go")
      assert.is_true(H.run_until(function() return code ~= nil end, BOUND + 3000))
      assert.are.equal(1, code)
      assert.is_true(loom.now() - t0 < H.ms(BOUND))
    end)

    stops("spinning inside a timer callback", READY ..
        "loom.setTimeout(function() while true do end end, 0)")

    stops("spinning inside a callback passed to a C function", READY ..
        "while true do pcall(table.sort, {3, 1, 2}, function() while true do end end) end")

    stops("spinning inside a to-be-closed variable's __close", READY .. [[
        while true do
          pcall(function()
            local x <close> = setmetatable({}, { __close = function() while true do end end })
            error("x")
          end)
        end]])

    stops("blocked in loom.sleep(100000)", READY .. "loom.sleep(100000)")

    stops("sleeping in loom.sleep(100000) inside loom.async", READY ..
        "loom.async(function() loom.sleep(100000) end)")

    stops("awaiting a future that never settles", READY .. [[
        loom.parentPort:on("message", function() end)   -- keeps the loop alive
        loom.Future.new():await()]])

    stops("awaiting a future that never settles inside loom.async", READY .. [[
        loom.parentPort:on("message", function() end)
        loom.async(function() loom.Future.new():await() end)]])

    stops("idle, waiting for messages", READY ..
        "loom.parentPort:on('message', function() end)")

    stops("waiting on a long interval", READY ..
        "loom.setInterval(function() end, 100000)")

    stops("together with the workers it spawned", READY .. [[
        local inner = loom.Worker("while true do end", { eval = true })
        inner:on("exit", function() end)
        while true do end]])

    it("right after spawning, before it is online", function()
      local w = H.spawn("while true do end", { eval = true })
      local f = w:terminate()
      local code
      w:on("exit", function(c) code = c end)
      assert.is_true(H.run_until(function() return code ~= nil end, BOUND))
      assert.are.equal(1, code)
      assert.are.equal(1, f:await())
    end)

    it("many at once", function()
      -- under valgrind every thread shares one core: 4 spinning workers, not 16
      local n = H.instrumented and 4 or 16
      local ws, codes, ready = {}, {}, 0
      for i = 1, n do
        ws[i] = H.spawn(READY .. "while true do end", { eval = true })
        ws[i]:on("message", function() ready = ready + 1 end)
        ws[i]:on("exit", function(c) codes[#codes + 1] = c end)
      end
      assert(H.run_until(function() return ready == n end, 30000), "not every worker said ready")
      local t0 = loom.now()
      for i = 1, n do ws[i]:terminate() end
      assert.is_true(H.run_until(function() return #codes == n end, BOUND + 3000))
      assert.is_true(loom.now() - t0 < H.ms(BOUND))
      for i = 1, n do assert.are.equal(1, codes[i]) end
    end)
  end)

  describe("its result", function()
    it("is a Future of exit code 1", function()
      local code, _, fut = stop_when_ready(READY .. "while true do end")
      assert.is_true(loom.isFuture(fut))
      assert.are.equal("fulfilled", fut:state())
      assert.are.equal(1, fut:await())
      assert.are.equal(1, code)
    end)

    it("can be awaited directly", function()
      local w = H.spawn(READY .. "while true do end", { eval = true })
      local ready = false
      w:on("message", function() ready = true end)
      assert(H.run_until(function() return ready end), "the worker never said ready")
      assert.are.equal(1, w:terminate():await())
    end)

    it("fires exit 1 and no error event", function()
      local w = H.spawn(READY .. "while true do end", { eval = true })
      local events = {}
      w:on("error", function() events[#events + 1] = "error" end)
      w:on("exit", function(c) events[#events + 1] = "exit " .. c end)
      w:on("message", function() w:terminate() end)
      H.run()
      assert.are.same({ "exit 1" }, events)
    end)

    it("is the same for a second call while terminating", function()
      local w = H.spawn("while true do end", { eval = true })
      local a = w:terminate()
      local b = w:terminate()
      assert.are.equal(1, a:await())
      assert.are.equal(1, b:await())
      local exits = 0
      w:on("exit", function() exits = exits + 1 end)
      H.run()
      assert.are.equal(0, exits)   -- exit fired once, before this listener
    end)

    it("after the worker exited is a settled Future of its exit code", function()
      local w = H.spawn(function() require("loom").exit(7) end)
      assert.are.equal(7, H.join(w))
      local f = w:terminate()
      assert.is_true(loom.isFuture(f))
      assert.are.equal("fulfilled", f:state())
      assert.are.equal(7, f:await())
      local g = H.spawn(function() end)
      H.join(g)
      assert.are.equal(0, g:terminate():await())
    end)

    it("can be awaited inside loom.async", function()
      local w = H.spawn(READY .. "while true do end", { eval = true })
      local result
      w:on("message", function()
        loom.async(function() result = w:terminate():await() end)
      end)
      H.run()
      assert.are.equal(1, result)
    end)

    it("leaves the main thread able to spawn again", function()
      for _ = 1, 5 do
        local w = H.spawn("while true do end", { eval = true })
        assert.are.equal(1, w:terminate():await())
      end
      local w = H.spawn(function() require("loom").parentPort:postMessage("fresh") end)
      local got
      w:on("message", function(m) got = m end)
      H.run()
      assert.are.equal("fresh", got)
    end)

    it("of an unref'd worker can be awaited", function()
      local w = H.spawn("while true do end", { eval = true })
      w:unref()
      assert.are.equal(1, w:terminate():await())
    end)
  end)

  -- Last: if loom cannot stop these, their threads keep spinning.
  describe("stops a worker whose code runs with hooks off", function()
    stops("spinning in an xpcall message handler", READY .. [[
        while true do
          xpcall(function() while true do end end, function() while true do end end)
        end]])

    -- Not covered: a __gc finalizer that never returns.  Lua runs
    -- finalizers with hooks off, so terminate() cannot reach it (README,
    -- "Known limits"); closing the parent detaches such a thread after a
    -- grace period instead of hanging.
  end)
end)
