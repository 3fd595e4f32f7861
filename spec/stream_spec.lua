-- Large messages stream: a port's message leaves in chunks while it is
-- encoded, and the receiver decodes each chunk as it arrives.  The value
-- that arrives is the same as an ordinary clone's (shared references,
-- hash parts, by-reference values, nesting); an encode error after the
-- first chunk left raises from postMessage and the receiver sees nothing,
-- not even a messageerror; order holds around streamed messages; a
-- terminate reaches a worker waiting for the chunks.
local H = require "helper"
local loom = require "loom"

-- an array large enough to stream several chunks (a chunk: 64 KiB)
local function big(n, f)
  local a = {}
  for i = 1, n do a[i] = f and f(i) or { id = i, name = "n" .. i, v = i * 0.5 } end
  return a
end

local function check_big(a, n)
  assert.are.equal(n, #a)
  for i = 1, n, 997 do
    local e = a[i]
    assert.are.equal(i, e.id)
    assert.are.equal("n" .. i, e.name)
    assert.are.equal(i * 0.5, e.v)
  end
  assert.are.equal(n, a[n].id)
end

describe("streamed messages", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("carry a large array to a worker and back, the same as a clone", function()
    local a = big(30000)
    local shared = { "shared" }
    a[10], a[20000] = shared, shared       -- one table, twice
    a.label, a[-1], a[0.5] = "hash part", "negative", "float key"
    a[25000] = { deep = big(400, function(i) return { i } end) }   -- a streamed table inside
    local echoed = H.roundtrip({ op = "echo", data = a, tail = "after the data" })
    local b = echoed.data
    assert.are.equal("after the data", echoed.tail)
    assert.are.equal(30000, #b)
    assert.are.equal(b[10], b[20000])
    assert.are.same({ "shared" }, b[10])
    assert.are.equal("hash part", b.label)
    assert.are.equal("negative", b[-1])
    assert.are.equal("float key", b[0.5])
    assert.are.equal(400, #b[25000].deep)
    assert.are.equal(400, b[25000].deep[400][1])
    for i = 1, 30000, 1009 do
      if i ~= 10 and i ~= 20000 and i ~= 25000 then
        assert.are.same(a[i], b[i])
      end
    end
  end)

  it("keep the order of the messages around them, both ways", function()
    local w = H.spawn(function()
      local loom = require "loom"
      local port = loom.parentPort
      port:on("message", function(m)
        if m == "stop" then port:close() return end
        port:postMessage(m)          -- echoes each, big ones too
      end)
    end)
    local got = {}
    w:on("message", function(m) got[#got + 1] = type(m) == "table" and #m or m end)
    local a = big(20000)
    for r = 1, 3 do                  -- the port streams its root from the second on
      w:postMessage("before " .. r)
      w:postMessage(a)
      w:postMessage({ small = r })
      w:postMessage("after " .. r)
    end
    w:postMessage("stop")
    H.run()
    assert.are.same({ "before 1", 20000, 0, "after 1", "before 2", 20000, 0, "after 2",
                      "before 3", 20000, 0, "after 3" }, got)
  end)

  it("carry by-reference values, which the receiver gets at the end", function()
    local buf = loom.SharedBuffer(64)
    local q = loom.Channel()
    local a = big(20000)
    a[3], a[19999] = buf, q
    local w = H.spawn(function()
      local loom = require "loom"
      loom.parentPort:on("message", function(arr)
        arr[3]:view("int32")[1] = 77
        arr[19999]:push("from the worker")
        loom.parentPort:close()
      end)
    end)
    assert.is_true(w:postMessage(a))
    assert.is_true(w:postMessage(a))     -- (the second streams its root too)
    H.run()
    assert.are.equal(77, buf:view("int32")[1])
    assert.are.equal("from the worker", q:tryPop())
  end)

  it("a Channel given in a worker's argv works there (its hook loads first)", function()
    local q = loom.Channel()
    local w = H.spawn(function(arr) arr[1]:push("hi") end, { argv = { { q } } })
    H.join(w)
    assert.are.equal("hi", q:tryPop())
  end)

  it("an encode error after the first chunk left: postMessage raises, the worker sees nothing", function()
    local w = H.spawn(function()
      local loom = require "loom"
      local port = loom.parentPort
      local seen = {}
      port:on("messageerror", function(e) seen[#seen + 1] = "messageerror: " .. tostring(e) end)
      port:on("message", function(m)
        if m == "report" then
          port:postMessage(seen)
          port:close()
        else
          seen[#seen + 1] = type(m) == "table" and ("table of " .. #m) or m
        end
      end)
    end)
    local reply
    w:on("message", function(m) reply = m end)
    local a = big(40000)
    a[39000] = io.stdout                 -- a userdata: cannot be cloned, far in
    w:postMessage("first")
    local ok, err = pcall(w.postMessage, w, a)
    assert.is_false(ok)
    assert.matches("postMessage: cannot clone msg%[39000%]: userdata", err)
    a[39000] = { id = 39000, name = "n39000", v = 19500 }
    assert.is_true(w:postMessage(a))   -- the same value, now fine
    w:postMessage("report")
    H.run()
    assert.are.same({ "first", "table of 40000" }, reply)
  end)

  it("an encode error in a nested table's entries also aborts", function()
    local a = big(30000)
    a[29000] = { ok = 1, bad = coroutine.create(function() end) }
    local w = H.echo(1)
    local got = {}
    w:on("message", function(m) got[#got + 1] = m end)
    local ok, err = pcall(w.postMessage, w, { op = "x", data = a })
    assert.is_false(ok)
    assert.matches("cannot clone msg%.data%[29000%]%.bad: thread", err)
    w:postMessage("plain")
    H.run()
    assert.are.same({ "plain" }, got)
  end)

  it("to a closed port returns false, 'closed', and leaks nothing", function()
    local ch = loom.MessageChannel()
    ch.port2:close()
    H.run()
    local ok, why = ch.port1:postMessage(big(20000))
    assert.is_false(ok)
    assert.are.equal("closed", why)
  end)

  it("through a MessageChannel in one thread, by listener and by receive", function()
    local ch = loom.MessageChannel()
    local a = big(20000)
    assert.is_true(ch.port1:postMessage(a))
    assert.is_true(ch.port1:postMessage(a))     -- (this one streams its root)
    local ok, v = ch.port2:receive(H.ms(5000))
    assert.is_true(ok)
    check_big(v, 20000)
    local got
    ch.port2:on("message", function(m) got = m; ch.port2:close() end)
    H.run()
    check_big(got, 20000)
  end)

  it("pulled by a worker with receive, without its loop", function()
    local w = H.spawn(function()
      local loom = require "loom"
      local port = loom.parentPort
      local sizes = {}
      for _ = 1, 2 do
        local ok, v = port:receive(60000)
        sizes[#sizes + 1] = ok and #v or tostring(v)
      end
      port:postMessage(sizes)
    end)
    local got
    w:on("message", function(m) got = m end)
    local a = big(30000)
    w:postMessage(a)
    w:postMessage(a)
    H.run()
    assert.are.same({ 30000, 30000 }, got)
  end)

  it("terminate reaches a worker while big messages stream to it", function()
    for round = 1, 5 do
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:on("message", function() end)
      end)
      local a = big(20000 * round)
      w:postMessage(a)
      w:postMessage(a)
      local f = w:terminate()
      H.await(f)
      assert.is_true(H.exited(w))
    end
  end)

  it("a worker that ends while its stream is being read leaves no hang and no leak", function()
    local w = H.spawn(function()
      local loom = require "loom"
      local a = {}
      for i = 1, 50000 do a[i] = { i, "x" .. i } end
      loom.parentPort:postMessage(a)
      loom.parentPort:postMessage("done")
    end)
    local got = {}
    w:on("message", function(m) got[#got + 1] = type(m) == "table" and #m or m end)
    H.run()
    assert.are.same({ 50000, "done" }, got)
  end)
end)

describe("streamed messages, hostile", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("a receiver over its memory limit fails as for any message; the sender goes on", function()
    local w = H.spawn(function()
      local loom = require "loom"
      loom.parentPort:on("message", function() end)
    end, { resourceLimits = { maxMemoryMb = 4 } })
    local err
    w:on("error", function(e) err = tostring(e) end)
    local a = big(60000)                 -- about 9 MB decoded
    local ok = pcall(w.postMessage, w, a)
    assert.is_true(ok)
    pcall(w.postMessage, w, a)           -- (the worker may be gone: false, "closed")
    H.join(w)
    assert.matches("not enough memory", err)
  end)

  it("a worker terminated while it streams to the main thread", function()
    for _ = 1, 5 do
      local w = H.spawn(function()
        local loom = require "loom"
        local a = {}
        for i = 1, 40000 do a[i] = { i, "s" .. i } end
        while true do loom.parentPort:postMessage(a) end
      end)
      local n = 0
      w:on("message", function(m)
        n = n + 1
        assert.are.equal(40000, #m)
        if n == 2 then w:terminate() end
      end)
      H.join(w)
      assert.is_true(n >= 2)
    end
  end)

  it("small messages that never stream keep their back-references (cycles, sharing, a shared cell)", function()
    -- a small table's header is marked as referring back only when it
    -- does: these must all arrive with their sharing, and a plain one too
    local s = { "shared" }
    local t = { s, s, x = s, inner = { y = s } }
    t.self = t
    local n = 0
    local function inc() n = n + 1; return n end
    local function get() return n end
    local got = H.roundtrip({ t = t, plain = { id = 1, tags = { "a", "b" } }, inc = inc, get = get,
                              k = { [s] = s } })
    assert.are.equal(got.t, got.t.self)
    assert.are.equal(got.t[1], got.t[2])
    assert.are.equal(got.t[1], got.t.x)
    assert.are.equal(got.t[1], got.t.inner.y)
    local ks, kv = next(got.k)
    assert.are.equal(ks, kv)
    assert.are.equal("shared", ks[1])
    assert.are.same({ id = 1, tags = { "a", "b" } }, got.plain)
    assert.are.equal(1, got.inc())
    assert.are.equal(1, got.get())          -- one cell, shared by both
    assert.are.equal(0, n)
  end)

  it("a big table as a key, in an upvalue, and inside a class instance", function()
    local Box = {}
    Box.__index = Box
    loom.registerClass("spec.StreamBox", Box)
    local key = big(3000)
    local up = big(3000)
    local function f() return #up end
    local v = { [key] = "by key", fn = f, box = setmetatable({ items = big(3000) }, Box) }
    local w = H.spawn(function()
      local loom = require "loom"
      local Box2 = {}
      loom.registerClass("spec.StreamBox", Box2)
      loom.parentPort:on("message", function(m)
        local k = next(m, nil)
        while type(k) ~= "table" do k = next(m, k) end
        loom.parentPort:postMessage({ #k, m[k], m.fn(), #m.box.items,
                                      getmetatable(m.box) == Box2 })
      end)
    end)
    local got = {}
    w:on("message", function(r)
      got[#got + 1] = r
      if #got == 2 then w:terminate() end
    end)
    w:postMessage(v)
    w:postMessage(v)
    H.join(w)
    assert.are.same({ { 3000, "by key", 3000, 3000, true }, { 3000, "by key", 3000, 3000, true } }, got)
  end)
end)
