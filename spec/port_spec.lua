-- MessageChannel and MessagePort: order, close and its order against what
-- was posted, pulling without the loop (receive, receiveMessageOnPort),
-- and transfer: ports moving into workers, on again, and back, with
-- nothing lost or reordered in flight.
local H = require "helper"
local loom = require "loom"
local core = require "loom.core"

local function settle() collectgarbage(); collectgarbage() end

describe("MessageChannel", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("delivers in the order posted, and close after everything posted before it", function()
    local ch = loom.MessageChannel()
    local got, events = {}, {}
    ch.port2:on("message", function(v) got[#got + 1] = v end)
    ch.port2:on("close", function() events[#events + 1] = "close2:" .. #got end)
    ch.port1:on("close", function() events[#events + 1] = "close1" end)
    for i = 1, 1000 do assert.is_true(ch.port1:postMessage(i)) end
    ch.port1:close()
    local ok, why = ch.port1:postMessage("late")
    assert.is_false(ok)
    assert.are.equal("closed", why)
    H.run()
    assert.are.equal(1000, #got)
    for i = 1, 1000 do assert.are.equal(i, got[i]) end
    table.sort(events)
    assert.are.same({ "close1", "close2:1000" }, events)
  end)

  it("queues what arrives before the first listener; a port with no listener does not hold the loop", function()
    local ch = loom.MessageChannel()
    ch.port1:postMessage("a")
    ch.port1:postMessage("b")
    H.run()                              -- returns: nobody listens
    local got = {}
    ch.port2:on("message", function(v)
      got[#got + 1] = v
      if #got == 2 then ch.port2:close() end
    end)
    H.run()
    assert.are.same({ "a", "b" }, got)
  end)

  it("unref lets the loop end while a listener waits", function()
    local ch = loom.MessageChannel()
    ch.port2:on("message", function() end)
    ch.port2:unref()
    H.run()                              -- would block if the port held it
    ch.port2:ref()
    ch.port1:postMessage(1)
    ch.port2:on("message", function() ch.port2:close() end)
    H.run()
  end)
end)

describe("receiving without the loop", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("receiveMessageOnPort takes one message at a time and never calls listeners", function()
    local ch = loom.MessageChannel()
    local called = false
    ch.port2:on("message", function() called = true end)
    assert.are.same({ false, "empty" }, { loom.receiveMessageOnPort(ch.port2) })
    ch.port1:postMessage(nil)
    ch.port1:postMessage({ x = 1 })
    local ok, v = loom.receiveMessageOnPort(ch.port2)
    assert.is_true(ok)
    assert.is_nil(v)                     -- nil is a message
    ok, v = loom.receiveMessageOnPort(ch.port2)
    assert.is_true(ok)
    assert.are.same({ x = 1 }, v)
    assert.are.same({ false, "empty" }, { loom.receiveMessageOnPort(ch.port2) })
    loom.poll(0)
    assert.is_false(called)
    ch.port2:close()
    H.run()
  end)

  it("takes first what the port queued before a listener, then the inbox", function()
    local ch = loom.MessageChannel()
    ch.port1:postMessage(1)
    H.run()                              -- 1 is delivered into the port's queue
    ch.port1:postMessage(2)
    assert.are.same({ true, 1 }, { ch.port2:receive(0) })
    assert.are.same({ true, 2 }, { ch.port2:receive(0) })
    assert.are.same({ false, "empty" }, { ch.port2:receive(0) })
  end)

  it("receive waits up to its timeout, and reports a close", function()
    local ch = loom.MessageChannel()
    local t0 = loom.now()
    assert.are.same({ false, "timeout" }, { ch.port2:receive(30) })
    assert.is_true(loom.now() - t0 >= 29)
    ch.port1:close()
    assert.are.same({ false, "closed" }, { ch.port2:receive() })
    H.run()                              -- the close is still delivered
    assert.are.same({ false, "closed" }, { ch.port2:receive(0) })
    assert.are.same({ false, "closed" }, { loom.receiveMessageOnPort(ch.port2) })
  end)

  it("receive blocks until a worker posts", function()
    local ch = loom.MessageChannel()
    local w = H.spawn(function()
      local loom = require "loom"
      local p = loom.workerData
      loom.sleep(50)
      p:postMessage("late hello")
      p:close()
    end, { workerData = ch.port2, transfer = { ch.port2 } })
    assert.are.same({ true, "late hello" }, { ch.port1:receive(H.ms(5000)) })
    assert.are.same({ false, "closed" }, { ch.port1:receive(H.ms(5000)) })
    H.join(w)
  end)

  it("terminate() wakes a worker blocked in receive", function()
    local ch = loom.MessageChannel()
    local w = H.spawn(function()
      local loom = require "loom"
      local p = loom.workerData
      loom.parentPort:postMessage("blocking")
      p:receive()                        -- nothing ever comes
      loom.parentPort:postMessage("not reached")
    end, { workerData = ch.port2, transfer = { ch.port2 } })
    local seen = {}
    w:on("message", function(m)
      seen[#seen + 1] = m
      if m == "blocking" then loom.setTimeout(function() w:terminate() end, 20) end
    end)
    assert.are.equal(1, H.join(w, 10000))
    assert.are.same({ "blocking" }, seen)
  end)

  it("rejects bad timeouts with the function's name", function()
    local ch = loom.MessageChannel()
    for _, bad in ipairs({ -1, 0 / 0, -math.huge, "10", {} }) do
      local ok, err = pcall(ch.port2.receive, ch.port2, bad)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("receive", 1, true), err)
    end
    assert.is_false(pcall(loom.receiveMessageOnPort, {}))
    assert.is_false(pcall(loom.receiveMessageOnPort, ch.port2, 10))
    assert.are.same({ false, "empty" }, { ch.port2:receive(0) })
  end)
end)

describe("transfer", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("moves a port into a worker with what was queued for it; the sender's copy raises", function()
    local ch = loom.MessageChannel()
    for i = 1, 100 do ch.port1:postMessage(i) end   -- queued for port2, here
    local w = H.spawn(function()
      local loom = require "loom"
      loom.parentPort:once("message", function(m)
        local sum, n = 0, 0
        m.port:on("message", function(v)
          if v == "end" then
            m.port:postMessage({ sum = sum, n = n })
            m.port:close()
            loom.parentPort:close()
            return
          end
          n = n + 1
          sum = sum * 31 % 1000003 + v          -- order matters
        end)
      end)
    end)
    assert.is_true(w:postMessage({ port = ch.port2 }, { ch.port2 }))
    for i = 101, 200 do ch.port1:postMessage(i) end  -- posted in flight
    ch.port1:postMessage("end")
    for _, f in ipairs({ "postMessage", "start", "close", "ref", "unref", "receive" }) do
      local ok, err = pcall(ch.port2[f], ch.port2, 1)
      assert.is_false(ok, f)
      assert.truthy(tostring(err):find("transferred", 1, true), f .. ": " .. tostring(err))
    end
    local want = 0
    for i = 1, 200 do want = want * 31 % 1000003 + i end
    local result
    ch.port1:on("message", function(r) result = r end)
    H.run()
    assert.are.same({ sum = want, n = 200 }, result)
  end)

  it("passes a port on, worker to worker to worker, and back, with nothing lost or reordered", function()
    local ch = loom.MessageChannel()
    -- each relay takes the port from its parent, sends 'hop' over it, and
    -- hands it to its own child; the last one sends it home
    local function relay(depth)
      local loom = require "loom"
      local me = loom.workerData.depth
      local port = loom.workerData.port
      port:postMessage("hop " .. me)
      if me < 3 then
        local kid = loom.Worker(loom.workerData.relay, {
          workerData = { depth = me + 1, port = port, relay = loom.workerData.relay },
          transfer = { port } })
        kid:on("exit", function() end)
      else
        loom.parentPort:postMessage("last")
        port:postMessage("done")
        port:close()
      end
      local _ = depth
    end
    local w = H.spawn(relay, { workerData = { depth = 1, port = ch.port2, relay = relay },
                               transfer = { ch.port2 } })
    for i = 1, 300 do ch.port1:postMessage(i) end
    local got = {}
    ch.port1:on("message", function(v) got[#got + 1] = v end)
    H.run()
    assert.are.same({ "hop 1", "hop 2", "hop 3", "done" }, got)
    H.join(w)
  end)

  it("a port inside a message must be listed in transfer, and is named by its path", function()
    local ch = loom.MessageChannel()
    local sink = loom.MessageChannel()
    local ok, err = pcall(sink.port1.postMessage, sink.port1, { a = { ch.port1 } })
    assert.is_false(ok)
    assert.truthy(err:find("msg.a[1]", 1, true), err)
    assert.truthy(err:find("transfer", 1, true), err)
    -- nothing moved: the port still works
    assert.is_true(ch.port1:postMessage("still here"))
    assert.are.same({ true, "still here" }, { loom.receiveMessageOnPort(ch.port2) })
  end)

  it("refuses bad transfer lists and leaves every port usable", function()
    local ch, other = loom.MessageChannel(), loom.MessageChannel()
    local p = other.port1
    local cases = {
      { { p, p }, { p, p }, "listed twice" },
      { ch.port1, { ch.port1 }, "its own channel" },
      { ch.port2, { ch.port2 }, "its own channel" },
      { p, { {} }, "MessagePort expected" },
      { p, { 1 }, "MessagePort expected" },
      { p, "x", "must be a table" },
      { 1, { p }, "not in the message" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(ch.port1.postMessage, ch.port1, c[1], c[2])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[3], 1, true), c[3] .. " / " .. tostring(err))
    end
    assert.is_true(p:postMessage("usable"))
    assert.are.same({ true, "usable" }, { loom.receiveMessageOnPort(other.port2) })
    p:close()
    H.run()
    local ok, err = pcall(ch.port1.postMessage, ch.port1, p, { p })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("closed", 1, true), err)
  end)

  it("a worker's own port cannot be transferred", function()
    local w = H.spawn(function()
      local loom = require "loom"
      local ch = loom.MessageChannel()
      local ok, err = pcall(ch.port1.postMessage, ch.port1, loom.parentPort, { loom.parentPort })
      loom.parentPort:postMessage({ ok, err })
    end)
    local r
    w:on("message", function(m) r = m end)
    H.join(w)
    assert.is_false(r[1])
    assert.truthy(r[2]:find("worker's own port", 1, true), r[2])
  end)

  it("a transferred port that is never received closes, and frees what it carried", function()
    local ref = core.testref()
    local ch = loom.MessageChannel()
    ch.port1:postMessage({ ref })                      -- queued for port2
    local closed = false
    ch.port1:on("close", function() closed = true end)
    local w = H.spawn(function() end)
    H.join(w)
    local ok, why = w:postMessage(ch.port2, { ch.port2 })  -- the worker is gone
    assert.is_false(ok)
    assert.are.equal("closed", why)
    assert.is_true(H.run_until(function() return closed end))
    settle()
    assert.are.equal(1, ref:count())
  end)

  it("a port collected with messages queued frees them and their references", function()
    local ref = core.testref()
    do
      local ch = loom.MessageChannel()
      for _ = 1, 10 do ch.port1:postMessage({ ref }) end
      assert.are.equal(11, ref:count())
    end
    H.run()                               -- delivered into nobody's queue
    settle()
    H.run()
    settle()
    assert.are.equal(1, ref:count())
  end)

  it("the Worker's transfer option moves ports in workerData", function()
    local ch = loom.MessageChannel()
    local w = H.spawn(function()
      local loom = require "loom"
      local p = loom.workerData.p
      p:postMessage(loom.threadId)
      p:close()
    end, { workerData = { p = ch.port2 }, transfer = { ch.port2 } })
    local got
    ch.port1:on("message", function(v) got = v end)
    H.run()
    assert.are.equal(w.threadId, got)
  end)
end)

-- A worker's pair (its handle and its parentPort) posts through lanes
-- (core/mailbox.c): rings of plain stores, a locked list beside them for
-- CLOSE and for any post the ring cannot take.  These floods cross every
-- segment boundary and the ring's hand-back of emptied segments.
describe("a worker's pair", function()
  before_each(H.before_each)
  after_each(H.after_each)

  local N = 20000

  it("keeps the order of floods both ways, and messages come before the exit", function()
    local w = H.spawn(function(n)
      local loom = require "loom"
      local want, bad = 1, 0
      loom.parentPort:on("message", function(v)
        if v.i ~= want then bad = bad + 1 end
        want = v.i + 1
        if v.i == n then
          for i = 1, n do loom.parentPort:postMessage(i) end
          loom.parentPort:postMessage({ bad = bad })
          loom.parentPort:close()
        end
      end)
    end, { argv = { N } })
    local want, bad, report, exit_seen_early = 1, 0, nil, false
    w:on("message", function(v)
      if H.exited(w) then exit_seen_early = true end
      if type(v) == "table" then report = v; return end
      if v ~= want then bad = bad + 1 end
      want = v + 1
    end)
    for i = 1, N do assert.is_true(w:postMessage({ i = i, pad = ("x"):rep(i % 40) })) end
    H.run()
    assert.are.same({ bad = 0 }, report)
    assert.are.equal(0, bad)
    assert.are.equal(N + 1, want)
    assert.is_false(exit_seen_early)
    assert.is_true((H.exited(w)))
  end)

  it("a parentPort closed while the parent floods it: each post says true or false, 'closed'", function()
    for round = 1, 3 do
      local w = H.spawn(function(at)
        local loom = require "loom"
        local n = 0
        loom.parentPort:on("message", function()
          n = n + 1
          if n == at then loom.parentPort:close() end
        end)
      end, { argv = { 100 * round } })
      local trues, falses = 0, 0
      for i = 1, N do
        local ok, why = w:postMessage(i)
        if ok then trues = trues + 1
        else
          assert.are.equal("closed", why)
          falses = falses + 1
        end
        if i % 1000 == 0 then loom.poll(0) end
      end
      H.run()
      assert.is_true(trues >= 100 * round, "round " .. round .. ": " .. trues)
      assert.are.equal(N, trues + falses)
      assert.is_true((H.exited(w)))
    end
  end)

  it("a worker terminated in the middle of floods both ways ends, and frees what was queued", function()
    for round = 1, 3 do
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:on("message", function(v) loom.parentPort:postMessage(v) end)
        for i = 1, 5000 do loom.parentPort:postMessage({ i = i }) end
      end)
      local got = 0
      w:on("message", function() got = got + 1 end)
      for i = 1, 3000 * round do
        if not w:postMessage({ i = i, t = { 1, 2, 3 } }) then break end
      end
      loom.poll(0)
      w:terminate()
      H.run()
      assert.is_true((H.exited(w)))
    end
  end)

  -- The parent takes a bounded share of each worker's messages at a time
  -- (1,024), so B's message, posted when the parent had delivered s0 of
  -- A's, comes before it has delivered much more than two shares of A's.
  -- It once waited behind all of A's backlog (which grows while the
  -- parent, slower than a flood, works through it): 4 workers that each
  -- flooded until the parent saw their first message grew to gigabytes.
  it("a flooding worker does not hold back another worker's messages", function()
    local buf = loom.SharedBuffer(4)
    local seen = buf:view("int32")
    local a = H.spawn(function()
      local loom = require "loom"
      local n = 0
      while true do n = n + 1; loom.parentPort:postMessage(n) end
    end)
    local b = H.spawn(function(shared)
      local loom = require "loom"
      local v = shared:view("int32")
      while v:load(1) < 50000 do loom.sleep(1) end     -- A's flood well under way
      loom.parentPort:postMessage(v:load(1))
    end, { argv = { buf } })
    local count, gap = 0, nil
    a:on("message", function() count = count + 1; seen:store(1, count) end)
    b:on("message", function(s0) gap = count - s0; a:terminate() end)
    H.run(60000)
    assert.is_number(gap)
    assert.is_true(gap <= 3 * 1024, "B's message came after " .. gap .. " more of A's")
    assert.is_true((H.exited(a)) and (H.exited(b)))
  end)
end)
