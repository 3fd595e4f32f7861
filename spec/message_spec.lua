-- Messages own the references they carry: a by-reference value (here the
-- specs' TestRef, a refcounted block behind loom's clone hooks) holds one
-- count per message until the message is decoded or dropped, wherever it is
-- dropped.  core.testref() -> ref; ref:count() -> holders now.
local H = require "helper"
local loom = require "loom"
local core = require "loom.core"

describe("messages that carry references", function()
  before_each(H.before_each)
  after_each(H.after_each)

  local function settle()
    collectgarbage(); collectgarbage()
  end

  it("a reference arrives as the same block and is released with its holder", function()
    local ref = core.testref()
    assert.are.equal(1, ref:count())
    local w = H.spawn(function()
      local loom = require "loom"
      loom.parentPort:once("message", function(m)
        loom.parentPort:postMessage(m.r:count())    -- parent's + this one
      end)
    end)
    local seen
    w:on("message", function(n) seen = n end)
    assert.is_true(w:postMessage({ r = ref }))
    H.run()
    assert.are.equal(2, seen)
    settle()
    assert.are.equal(1, ref:count())   -- the worker's state closed
  end)

  it("a post to an exited worker drops the message and its reference at once", function()
    local ref = core.testref()
    local w = H.spawn(function() end)
    H.join(w)
    local ok, why = w:postMessage({ ref, { ref } })
    assert.is_false(ok)
    assert.are.equal("closed", why)
    assert.are.equal(1, ref:count())
  end)

  it("a message still queued when its worker is terminated releases its reference", function()
    local ref = core.testref()
    local w = H.spawn(function()
      local loom = require "loom"
      loom.parentPort:postMessage("ready")
      loom.sleep(math.huge)                 -- never reads its inbox
    end)
    w:on("message", function()
      assert.is_true(w:postMessage({ ref }))
      assert.are.equal(2, ref:count())      -- the queued message holds one
      w:terminate()
    end)
    H.run()
    assert.are.equal(1, H.join(w))
    assert.are.equal(1, ref:count())
  end)

  it("a message that fails to decode releases its references", function()
    local ref = core.testref()
    local Point = { __name = "Point" }
    loom.registerClass("Point", Point)     -- here, not in the worker
    local w = H.spawn(function()
      local loom = require "loom"
      local port = loom.parentPort
      port:on("messageerror", function(e)
        port:postMessage(tostring(e))
        port:close()
      end)
      port:on("message", function() port:postMessage("decoded?!") end)
    end)
    local got
    w:on("message", function(m) got = m end)
    assert.is_true(w:postMessage({ ref, setmetatable({}, Point) }))
    H.run()
    assert.matches("class 'Point' is not registered", got, 1, true)
    settle()
    assert.are.equal(1, ref:count())
  end)

  it("an encoding that fails after taking a reference gives it back", function()
    local ref = core.testref()
    local ok, err = pcall(loom.clone, { ref, io.stdout })
    assert.is_false(ok)
    assert.matches("cannot clone value%[2%]: userdata", err)
    assert.are.equal(1, ref:count())
    local w = H.echo(1)
    ok, err = pcall(w.postMessage, w, { a = ref, b = coroutine.create(print) })
    assert.is_false(ok)
    assert.matches("msg.b: thread", err, 1, true)
    assert.are.equal(1, ref:count())
    w:terminate()
    H.join(w)
  end)

  it("loom.clone shares the block, and a value met twice stays one value", function()
    local ref = core.testref()
    local c = loom.clone({ ref, ref, inner = { ref } })
    assert.are.equal(2, ref:count())
    assert.are.equal(c[1], c[2])
    assert.are.equal(c[1], c.inner[1])
    c = nil
    settle()
    assert.are.equal(1, ref:count())
  end)

  it("workerData and argv carry references into the worker", function()
    local ref = core.testref()
    local w = H.spawn(function(r)
      local loom = require "loom"
      loom.parentPort:postMessage({ r:count(), loom.workerData:count() })
    end, { workerData = ref, argv = { ref } })
    local got
    w:on("message", function(m) got = m end)
    H.run()
    assert.are.same({ 3, 3 }, got)   -- the parent's, argv's and workerData's
    settle()
    assert.are.equal(1, ref:count())
  end)
end)
