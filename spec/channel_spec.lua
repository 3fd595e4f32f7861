-- Channel: a multi-producer multi-consumer queue shared by reference, and
-- loom.select over channels and ports.
local H = require "helper"
local loom = require "loom"
local core = require "loom.core"

local function settle() collectgarbage(); collectgarbage() end

describe("Channel", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("pushes and pops in order, with a length, and refuses nil", function()
    local q = loom.Channel()
    for i = 1, 100 do assert.is_true(q:push(i)) end
    assert.are.equal(100, #q)
    for i = 1, 100 do assert.are.equal(i, q:pop()) end
    assert.are.same({ nil, "empty" }, { q:tryPop() })
    assert.are.same({ nil, "timeout" }, { q:pop(0) })
    local ok, err = pcall(q.push, q, nil)
    assert.is_false(ok)
    assert.truthy(err:find("nil cannot be pushed", 1, true), err)
    q:push(false)                                  -- false is a value
    assert.are.equal(false, q:pop())
  end)

  it("a capacity makes push wait, then time out or report full", function()
    local q = loom.Channel(2)
    assert.is_true(q:push(1))
    assert.is_true(q:push(2))
    assert.are.same({ nil, "full" }, { q:push(3, 0) })
    local t0 = loom.now()
    assert.are.same({ nil, "timeout" }, { q:push(3, 30) })
    assert.is_true(loom.now() - t0 >= 29)
    assert.are.equal(1, q:pop(0))
    assert.are.equal(2, q:pop(0))
    t0 = loom.now()
    assert.are.same({ nil, "timeout" }, { q:pop(30) })
    assert.is_true(loom.now() - t0 >= 29)
  end)

  it("close wakes everyone; pops drain what is left, then say closed", function()
    local q = loom.Channel()
    q:push("a")
    q:close()
    assert.are.same({ nil, "closed" }, { q:push("b") })
    assert.are.equal("a", q:pop())
    assert.are.same({ nil, "closed" }, { q:pop() })
    assert.are.same({ nil, "closed" }, { q:tryPop() })
    q:close()                                      -- twice is fine
  end)

  it("a worker blocked in pop is woken by close and by the value it waits for", function()
    local q, out = loom.Channel(), loom.Channel()
    local w = H.spawn(function()
      local loom = require "loom"
      local q, out = loom.workerData.q, loom.workerData.out
      out:push("waiting")
      out:push({ q:pop() })
      out:push({ q:pop() })
    end, { workerData = { q = q, out = out } })
    assert.are.equal("waiting", out:pop(H.ms(5000)))
    loom.sleep(20)
    q:push("v")
    assert.are.same({ "v" }, out:pop(H.ms(5000)))
    q:close()
    assert.are.same({ nil, "closed" }, out:pop(H.ms(5000)))
    H.join(w)
  end)

  it("loses nothing with 4 producers and 4 consumers (count and checksum exact)", function()
    local N = H.instrumented and 2000 or 25000
    local jobs, results = loom.Channel(64), loom.Channel()
    local producer = function()
      local loom = require "loom"
      local d = loom.workerData
      for i = d.from, d.to do assert(d.jobs:push(i)) end
    end
    local consumer = function()
      local loom = require "loom"
      local d = loom.workerData
      local n, sum = 0, 0
      while true do
        local v = d.jobs:pop()
        if v == nil then break end
        n, sum = n + 1, sum + v * v
      end
      d.results:push({ n = n, sum = sum })
    end
    local ps, cs = {}, {}
    for k = 0, 3 do
      ps[#ps + 1] = H.spawn(producer, { workerData = { jobs = jobs, from = k * N + 1, to = (k + 1) * N } })
      cs[#cs + 1] = H.spawn(consumer, { workerData = { jobs = jobs, results = results } })
    end
    for _, w in ipairs(ps) do H.join(w, 60000) end
    jobs:close()
    local n, sum = 0, 0
    for _ = 1, 4 do
      local r = results:pop(H.ms(20000))
      n, sum = n + r.n, sum + r.sum
    end
    local want = 0
    for i = 1, 4 * N do want = want + i * i end
    assert.are.equal(4 * N, n)
    assert.are.equal(want, sum)
    for _, w in ipairs(cs) do H.join(w, 10000) end
  end)

  it("terminate() wakes a worker blocked in pop, in a full push, and in select", function()
    for _, how in ipairs({ "pop", "push", "select" }) do
      local q, out = loom.Channel(1), loom.Channel()
      q:push("fills it")
      if how ~= "push" then q:pop() end
      local w = H.spawn(function()
        local loom = require "loom"
        local d = loom.workerData
        d.out:push("blocking")
        if d.how == "pop" then d.q:pop()
        elseif d.how == "push" then d.q:push("more")
        else loom.select({ d.q }) end
        d.out:push("not reached")
      end, { workerData = { q = q, out = out, how = how } })
      assert.are.equal("blocking", out:pop(H.ms(5000)))
      loom.sleep(20)
      w:terminate()
      assert.are.equal(1, H.join(w, 10000), how)
      assert.are.same({ nil, "empty" }, { out:tryPop() }, how)
    end
  end)

  it("lives while any thread holds it: a worker exits holding the only copy", function()
    local ref = core.testref()
    local out = loom.Channel()
    local w = H.spawn(function()
      local loom = require "loom"
      local q = loom.Channel()
      q:push({ r = loom.workerData.ref })         -- the queue holds one count
      loom.workerData.out:push(#q)
    end, { workerData = { ref = ref, out = out } })
    assert.are.equal(1, out:pop(H.ms(5000)))
    H.join(w)
    settle()
    assert.are.equal(1, ref:count())             -- freed with the worker's state
  end)

  it("a channel collected with values queued frees them and their references", function()
    local ref = core.testref()
    do
      local q = loom.Channel()
      for _ = 1, 10 do q:push({ ref }) end
      assert.are.equal(11, ref:count())
    end
    settle()
    assert.are.equal(1, ref:count())
  end)

  it("is the same queue in every thread, sent inside tables", function()
    local q = loom.Channel()
    local w = H.spawn(function()
      local loom = require "loom"
      local t = loom.workerData
      t.list[2]:push(t.list[1] == t.list[2])     -- one object per message
    end, { workerData = { list = { q, q } } })
    assert.is_true(q:pop(H.ms(5000)))
    H.join(w)
  end)

  it("Channel.named gives the same channel for the same name in every thread", function()
    local a = loom.Channel.named("spec-jobs", 8)
    local w = H.spawn(function()
      local loom = require "loom"
      local q = loom.Channel.named("spec-jobs")
      q:push("from the worker")
    end)
    assert.are.equal("from the worker", a:pop(H.ms(5000)))
    H.join(w)
    local ok, err = pcall(loom.Channel.named, "spec-jobs", 9)
    assert.is_false(ok)
    assert.truthy(err:find("capacity 8", 1, true), err)
  end)

  it("rejects bad capacities, timeouts and selves with the function's name", function()
    for _, cap in ipairs({ 0, -1, 1.5, 0 / 0, "3" }) do
      local ok, err = pcall(loom.Channel, cap)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("capacity", 1, true), err)
    end
    local q = loom.Channel()
    for _, t in ipairs({ -1, 0 / 0, -math.huge, "1", {} }) do
      local ok, err = pcall(q.pop, q, t)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("'pop'", 1, true), err)
      ok, err = pcall(q.push, q, 1, t)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("'push'", 1, true), err)
    end
    local ok, err = pcall(q.pop, {})
    assert.is_false(ok)
    assert.truthy(tostring(err):find("loom.Channel expected", 1, true), err)
    assert.are.equal(0, #q)                      -- nothing was pushed
    assert.is_false(pcall(loom.Channel.named, 1))
  end)
end)

describe("serving a Channel from the loop", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("gives each value to exactly one listener across threads, then 'close'", function()
    local N = 2000
    local q, out = loom.Channel(), loom.Channel()
    local server = function()
      local loom = require "loom"
      local d = loom.workerData
      local n, sum = 0, 0
      d.q:on("message", function(v) n, sum = n + 1, sum + v end)
      d.q:on("close", function() d.out:push({ n = n, sum = sum }) end)
    end
    local ws = { H.spawn(server, { workerData = { q = q, out = out } }),
                 H.spawn(server, { workerData = { q = q, out = out } }) }
    for i = 1, N do q:push(i) end
    q:close()
    local n, sum = 0, 0
    for _ = 1, 2 do
      local r = out:pop(H.ms(10000))
      n, sum = n + r.n, sum + r.sum
    end
    assert.are.equal(N, n)
    assert.are.equal(N * (N + 1) // 2, sum)
    for _, w in ipairs(ws) do H.join(w) end
  end)

  it("keeps the loop alive while listening, and not once unref'd or off", function()
    local q = loom.Channel()
    local got = {}
    local function f(v)
      got[#got + 1] = v
      if #got == 3 then q:off("message", f) end
    end
    q:on("message", f)
    for i = 1, 5 do q:push(i) end
    H.run()                                     -- ends once the listener is off
    assert.are.same({ 1, 2, 3 }, got)
    assert.are.equal(2, #q)                     -- the rest waits for a consumer
    q:on("message", function() end)
    q:unref()
    H.run()                                     -- unref'd: returns at once
  end)
end)

describe("loom.select", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("returns the ready source and its value, or a timeout", function()
    local a, b = loom.Channel(), loom.Channel()
    b:push("from b")
    assert.are.same({ b, "from b" }, { loom.select({ a, b }) })
    local t0 = loom.now()
    assert.are.same({ nil, "timeout" }, { loom.select({ a, b }, 30) })
    assert.is_true(loom.now() - t0 >= 29)
    assert.are.same({ nil, "timeout" }, { loom.select({ a, b }, 0) })
  end)

  it("waits on channels and ports at once, woken by a worker", function()
    local q, ch = loom.Channel(), loom.MessageChannel()
    local w = H.spawn(function()
      local loom = require "loom"
      loom.sleep(30)
      loom.workerData.p:postMessage("over the port")
      loom.sleep(30)
      loom.workerData.q:push("over the channel")
      loom.workerData.p:close()
    end, { workerData = { q = q, p = ch.port2 }, transfer = { ch.port2 } })
    local src, v = loom.select({ q, ch.port1 }, H.ms(5000))
    assert.are.equal(ch.port1, src)
    assert.are.equal("over the port", v)
    src, v = loom.select({ q, ch.port1 }, H.ms(5000))
    assert.are.equal(q, src)
    assert.are.equal("over the channel", v)
    H.join(w)
  end)

  it("is fair: no ready source starves", function()
    local a, b, c = loom.Channel(), loom.Channel(), loom.Channel()
    local count = { [a] = 0, [b] = 0, [c] = 0 }
    for _ = 1, 3000 do a:push(1); b:push(1); c:push(1) end
    for _ = 1, 3000 do
      local src = loom.select({ a, b, c })
      count[src] = count[src] + 1
    end
    for _, q in ipairs({ a, b, c }) do assert.is_true(count[q] >= 800, tostring(count[q])) end
  end)

  it("says closed once every source is closed", function()
    local a, b = loom.Channel(), loom.Channel()
    a:close(); b:close()
    assert.are.same({ nil, "closed" }, { loom.select({ a, b }, 1000) })
  end)

  it("rejects bad lists and timeouts", function()
    local a = loom.Channel()
    for _, bad in ipairs({ { {} }, { 1 }, {}, "x" }) do
      local ok, err = pcall(loom.select, bad, 0)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("select", 1, true), err)
    end
    local many = {}
    for i = 1, 65 do many[i] = loom.Channel() end
    local ok, err = pcall(loom.select, many, 0)
    assert.is_false(ok)
    assert.truthy(err:find("at most 64", 1, true), err)
    for _, t in ipairs({ -1, 0 / 0, "1" }) do
      local ok2, err2 = pcall(loom.select, { a }, t)
      assert.is_false(ok2)
      assert.truthy(tostring(err2):find("timeout", 1, true), err2)
    end
  end)
end)

describe("loading on first use", function()
  it("a worker that never named Channels decodes one it is sent, and uses it", function()
    local q = loom.Channel()
    local w = H.spawn(function()
      local loom = require "loom"
      local before = package.loaded["loom.channel"] ~= nil
      loom.parentPort:on("message", function(m)
        m.q:push({ before = before, after = package.loaded["loom.channel"] ~= nil,
                   same = getmetatable(m.q) == loom.Channel, len = #m.q })
        loom.parentPort:close()
      end)
    end)
    assert.is_true(w:postMessage({ q = q }))
    local v = q:pop(H.ms(5000))
    assert.are.same({ before = false, after = true, same = true, len = 0 }, v)
    assert.are.equal(0, H.join(w))
  end)

  it("a module that cannot load makes a messageerror naming the class; the worker goes on", function()
    local q = loom.Channel()
    local w = H.spawn(function()
      local loom = require "loom"
      local port = loom.parentPort
      local searchers = package.searchers
      package.searchers = {}                  -- nothing can be required now
      port:on("messageerror", function(e)
        package.searchers = searchers
        port:postMessage(tostring(e))
      end)
      port:on("message", function(m)
        if m == "done" then port:close() else port:postMessage(getmetatable(m.q) == loom.Channel) end
      end)
    end)
    local got = {}
    w:on("message", function(m) got[#got + 1] = m end)
    assert.is_true(w:postMessage({ q = q }))
    H.run_until(function() return #got == 1 end)
    assert.matches("loom.Channel: cannot load its module", got[1], 1, true)
    assert.is_true(w:postMessage({ q = q }))   -- the searchers are back
    H.run_until(function() return #got == 2 end)
    assert.is_true(got[2])
    w:postMessage("done")
    assert.are.equal(0, H.join(w))
  end)
end)
