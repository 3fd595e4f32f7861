-- BroadcastChannel: every open channel of a name, in every thread of the
-- runtime, gets each message, in posting order, except the sender.
local H = require "helper"
local loom = require "loom"
local core = require "loom.core"

describe("BroadcastChannel", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("reaches every other channel of the name in every worker, in order, never the sender", function()
    local N = 3
    local results = loom.Channel()
    local listener = function()
      local loom = require "loom"
      local bc = loom.BroadcastChannel("spec-news")
      local got = {}
      bc:on("message", function(v)
        if v == "end" then
          loom.workerData.out:push(got)
          bc:close()
          return
        end
        got[#got + 1] = v
      end)
      loom.workerData.out:push("ready")
    end
    for _ = 1, N do H.spawn(listener, { workerData = { out = results } }) end
    for _ = 1, N do assert.are.equal("ready", results:pop(H.ms(5000))) end
    local me = loom.BroadcastChannel("spec-news")
    local mine = 0
    me:on("message", function() mine = mine + 1 end)
    local other = loom.BroadcastChannel("spec-other")   -- another name: nothing
    for i = 1, 200 do assert.is_true(me:postMessage(i)) end
    me:postMessage("end")
    for _ = 1, N do
      local got = results:pop(H.ms(5000))
      assert.are.equal(200, #got)
      for i = 1, 200 do assert.are.equal(i, got[i]) end
    end
    loom.poll(0)
    assert.are.equal(0, mine)
    me:close()
    other:close()
    H.run()
  end)

  it("close drops what was not delivered, and later posts return false, 'closed'", function()
    local a, b = loom.BroadcastChannel("spec-drop"), loom.BroadcastChannel("spec-drop")
    local got = 0
    b:on("message", function() got = got + 1 end)
    a:postMessage(1)
    a:postMessage(2)
    b:close()                                   -- before the loop delivered them
    H.run()
    assert.are.equal(0, got)
    assert.are.same({ false, "closed" }, { b:postMessage(3) })
    assert.is_true(a:postMessage(4))             -- nobody left: still true
    a:close()
    a:close()
  end)

  it("a listener keeps the loop alive until close or unref", function()
    local a, b = loom.BroadcastChannel("spec-hold"), loom.BroadcastChannel("spec-hold")
    b:on("message", function(v) if v == "stop" then b:close() end end)
    a:postMessage("stop")
    H.run()                                      -- returns once b closed
    local c = loom.BroadcastChannel("spec-hold")
    c:on("message", function() end)
    c:unref()
    H.run()                                      -- unref'd: returns at once
    a:close(); c:close()
  end)

  it("a message that cannot be cloned fails before it reaches anyone, and a dropped one frees its references", function()
    local a, b = loom.BroadcastChannel("spec-bad"), loom.BroadcastChannel("spec-bad")
    local ok, err = pcall(a.postMessage, a, { f = io.stdout })
    assert.is_false(ok)
    assert.truthy(err:find("msg.f", 1, true), err)
    local ref = core.testref()
    a:postMessage({ ref })
    b:close()                                    -- dropped undelivered
    loom.poll(0)                                 -- (when this thread's loop next turns)
    collectgarbage(); collectgarbage()
    assert.are.equal(1, ref:count())
    a:close()
    assert.is_false(pcall(loom.BroadcastChannel, nil))
    assert.is_false(pcall(a.close, {}))
  end)
end)
