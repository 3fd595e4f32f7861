-- Shared memory (API.md "Shared memory and atomics"): loom.SharedBuffer,
-- its typed views, the atomic methods against Node's own results
-- (spec/fixtures/atomics_node.lua, made by atomics_node.js), wait,
-- notify and waitAsync, and blocks sent by reference.
-- core.sharedcount(buf | view) -> holders of the block now;
-- core.sharedwaiters(view, i) -> waiters listed on v[i] now.
local H = require "helper"
local loom = require "loom"
local core = require "loom.core"

local KINDS = { "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64" }
local SIZE = { int8 = 1, uint8 = 1, int16 = 2, uint16 = 2, int32 = 4, uint32 = 4, int64 = 8,
               float32 = 4, float64 = 8 }
local RANGE = {
  int8 = { -128, 127 }, uint8 = { 0, 255 }, int16 = { -32768, 32767 }, uint16 = { 0, 65535 },
  int32 = { -2147483648, 2147483647 }, uint32 = { 0, 4294967295 },
}

local function settle() collectgarbage(); collectgarbage() end

-- a method call by name, so that errors name it: callm(v, "add", 1, 2)
local function callm(obj, m, ...)
  return assert(load("local o = ...; return o:" .. m .. "(select(2, ...))"))(obj, ...)
end

local function errof(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("loom.SharedBuffer", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("is zero-filled, has a length, and SharedBuffer(0) is valid", function()
    local b = loom.SharedBuffer(64)
    assert.are.equal(64, #b)
    assert.are.equal(string.rep("\0", 64), b:read(1, 64))
    local z = loom.SharedBuffer(0)
    assert.are.equal(0, #z)
    assert.are.equal("", z:read())
    assert.are.equal(0, #z:view("int64"))
    assert.matches("^loom.SharedBuffer %(64 bytes%)", tostring(b))
  end)

  it("refuses sizes that are not a non-negative integer", function()
    for _, bad in ipairs({ -1, 1.5, 0 / 0, math.huge, math.maxinteger, 2 ^ 53 }) do
      assert.matches("bad argument #1 to '[%w.]*SharedBuffer'", errof(loom.SharedBuffer, bad))
    end
    assert.matches("number expected, got no value", errof(loom.SharedBuffer))
    assert.matches("number expected, got table", errof(loom.SharedBuffer, {}))
    assert.matches("size out of range", errof(loom.SharedBuffer, -1))
  end)

  it("a size the machine cannot give raises 'not enough memory'", function()
    -- (not under a sanitizer or valgrind: their allocators abort or warn)
    if H.instrumented then return end
    local ok, err = pcall(loom.SharedBuffer, 1 << 39)   -- 512 GiB, the largest allowed
    if not ok then
      assert.matches("SharedBuffer: cannot allocate 549755813888 bytes: not enough memory", err)
    end
  end)

  it("reads and writes raw bytes at 1-based positions, as string.sub counts", function()
    local b = loom.SharedBuffer(8)
    assert.is_true(b:write(1, "ab\0c"))
    assert.is_true(b:write(8, "z"))
    assert.are.equal("ab\0c", b:read(1, 4))
    assert.are.equal("b\0", b:read(2, 2))
    assert.are.equal("z", b:read(8))
    assert.are.equal("", b:read(9))
    assert.are.equal("", b:read(9, 0))
    assert.is_true(b:write(9, ""))
    assert.are.equal(8, #b:read())
  end)

  it("checks every position and length of read and write", function()
    local b = loom.SharedBuffer(8)
    assert.matches("bad argument #1 to 'read' %(position out of range", errof(function() return b:read(0) end))
    assert.matches("position out of range", errof(function() return b:read(0) end))
    assert.matches("position out of range", errof(function() return b:read(10) end))
    assert.matches("position out of range", errof(function() return b:read(-1) end))
    assert.matches("length out of range %(0..4%)", errof(function() return b:read(5, 5) end))
    assert.matches("length out of range", errof(function() return b:read(1, -1) end))
    assert.matches("number has no integer representation", errof(function() return b:read(1.5) end))
    assert.matches("do not fit", errof(function() return b:write(6, "abcd") end))
    assert.matches("position out of range", errof(function() return b:write(0, "a") end))
    assert.matches("string expected", errof(function() return b:write(1, {}) end))
    assert.matches("loom.SharedBuffer expected", errof(b.read, {}, 1))
  end)
end)

describe("views", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("exist for every kind, over the whole buffer by default", function()
    local b = loom.SharedBuffer(64)
    for _, k in ipairs(KINDS) do
      local v = b:view(k)
      assert.are.equal(64 // SIZE[k], #v)
      assert.are.equal(0, v[1])
      assert.matches("^loom.SharedView %(" .. k .. " x", tostring(v))
    end
  end)

  it("take a 0-based byte offset and a length in elements", function()
    local b = loom.SharedBuffer(16)
    local v = b:view("int32", 4, 2)
    assert.are.equal(2, #v)
    v[1], v[2] = 7, 8
    local all = b:view("int32")
    assert.are.same({ 0, 7, 8, 0 }, { all[1], all[2], all[3], all[4] })
    assert.are.equal(3, #b:view("int32", 4))
    assert.are.equal(0, #b:view("int32", 16))
    assert.are.equal(0, #b:view("int8", 16))
  end)

  it("refuse unknown kinds, misaligned offsets and ranges beyond the buffer", function()
    local b = loom.SharedBuffer(10)
    assert.matches("bad argument #1 to 'view' %(unknown kind 'int33'", errof(function() return b:view("int33") end))
    assert.matches("bad argument #1 to 'view' %(string expected", errof(function() return b:view() end))
    assert.matches("bad argument #2 to 'view' %(byte offset 2 is not a multiple of 4",
                   errof(function() return b:view("int32", 2) end))
    assert.matches("not a multiple of 4 %(give a length%)", errof(function() return b:view("int32") end))
    assert.are.equal(2, #b:view("int32", 0, 2))
    assert.matches("bad argument #3 to 'view' %(length out of range %(0..2%)",
                   errof(function() return b:view("int32", 0, 3) end))
    assert.matches("byte offset out of range", errof(function() return b:view("int8", 11) end))
    assert.matches("byte offset out of range", errof(function() return b:view("int8", -1) end))
    assert.matches("length out of range", errof(function() return b:view("int8", 0, -1) end))
    assert.matches("no integer representation", errof(function() return b:view("int8", 0.5) end))
    assert.matches("no integer representation", errof(function() return b:view("int8", 0 / 0) end))
  end)

  it("read and write 1-based elements; reading outside gives nil, writing raises", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int16")
    v[1], v[4] = -5, 300
    assert.are.same({ -5, 0, 0, 300 }, { v[1], v[2], v[3], v[4] })
    assert.is_nil(v[0])
    assert.is_nil(v[5])
    assert.is_nil(v[1.5])
    assert.is_nil(v["1"])
    assert.are.equal(-5, v[1.0])
    local n = 0
    for _ in ipairs(v) do n = n + 1 end
    assert.are.equal(4, n)
    assert.matches("bad argument #2 to 'newindex' %(view index out of range %(1..4%)%)", errof(function() v[0] = 1 end))
    assert.matches("view index out of range", errof(function() v[5] = 1 end))
    assert.matches("view index out of range", errof(function() v.x = 1 end))
    assert.matches("the view is empty", errof(function() b:view("int8", 8)[1] = 1 end))
  end)

  it("check values against the kind, as string.pack does", function()
    local b = loom.SharedBuffer(16)
    for k, r in pairs(RANGE) do
      local v = b:view(k)
      v[1] = r[1]; assert.are.equal(r[1], v[1])
      v[1] = r[2]; assert.are.equal(r[2], v[1])
      local e = errof(function() v[1] = r[2] + 1 end)
      assert.is_truthy(e:find("integer out of range for " .. k .. " (" .. r[1] .. ".." .. r[2] .. ")", 1, true), e)
      assert.matches("out of range for " .. k, errof(function() v[1] = r[1] - 1 end))
      assert.matches("number has no integer representation", errof(function() v[1] = 1.5 end))
      assert.matches("number expected, got string", errof(function() v[1] = "x" end))
      v[1] = 3.0
      assert.are.equal(3, v[1])
      assert.are.equal("integer", math.type(v[1]))
    end
    local i64 = b:view("int64")
    i64[1] = math.mininteger; assert.are.equal(math.mininteger, i64[1])
    i64[2] = math.maxinteger; assert.are.equal(math.maxinteger, i64[2])
    assert.matches("no integer representation", errof(function() i64[1] = 2 ^ 63 end))
  end)

  it("store floats as float32 (rounded, as Math.fround) and float64 (exact)", function()
    local b = loom.SharedBuffer(16)
    local f, d = b:view("float32"), b:view("float64")
    f[1] = 0.1
    assert.are.equal(string.unpack("f", string.pack("f", 0.1)), f[1])
    f[1] = 1e39; assert.are.equal(math.huge, f[1])
    f[1] = -1e39; assert.are.equal(-math.huge, f[1])
    f[1] = 3.4028235e38; assert.are.equal(string.unpack("f", string.pack("f", 3.4028234663852886e38)), f[1])
    f[1] = 0 / 0; assert.is_true(f[1] ~= f[1])
    f[1] = 7; assert.are.equal(7.0, f[1])
    assert.are.equal("float", math.type(f[1]))
    d[1] = 0.1; assert.are.equal(0.1, d[1])
    d[2] = -0.0; assert.are.equal("-0.0", tostring(d[2]))
    d[1] = math.huge; assert.are.equal(math.huge, d[1])
    assert.matches("number expected", errof(function() d[1] = true end))
  end)

  it("of different kinds share the same bytes (little-endian)", function()
    local b = loom.SharedBuffer(8)
    local u8, i32 = b:view("uint8"), b:view("int32")
    i32[1] = 0x01020304
    assert.are.same({ 4, 3, 2, 1 }, { u8[1], u8[2], u8[3], u8[4] })
    assert.are.equal(string.pack("<i4", 0x01020304), b:read(1, 4))
    b:write(5, string.pack("<i4", -2))
    assert.are.equal(-2, i32[2])
    assert.are.equal(0xfe, u8[5])
  end)
end)

describe("atomics", function()
  before_each(H.before_each)
  after_each(H.after_each)

  local NODE = dofile(H.fixture("atomics_node.lua"))
  local NAME = { ["and"] = "band", ["or"] = "bor", xor = "bxor" }

  it("give Node's results for every integer kind and method", function()
    local b = loom.SharedBuffer(16)
    local count = 0
    for kind, cases in pairs(NODE) do
      local v = b:view(kind, 8)
      for _, c in ipairs(cases) do
        local op = NAME[c[1]] or c[1]
        v[1] = c[2]
        local old
        if op == "compareExchange" then old = v:compareExchange(1, c[3], c[4])
        elseif op == "load" then old = v:load(1)
        else old = v[op](v, 1, c[3]) end
        local want_old, want_new = c[#c - 1], c[#c]
        if old ~= want_old or v[1] ~= want_new or math.type(old) ~= "integer" then
          error(("%s:%s(%s) on %s: got %s -> %s, Node %s -> %s"):format(kind, op,
            table.concat({ table.unpack(c, 3, #c - 2) }, ", "), c[2], old, v[1], want_old, want_new))
        end
        count = count + 1
      end
    end
    assert.is_true(count > 2000)
  end)

  it("exist on integer views only, and check index and operands", function()
    local b = loom.SharedBuffer(8)
    for _, k in ipairs({ "float32", "float64" }) do
      local v = b:view(k)
      for _, m in ipairs({ "add", "sub", "band", "bor", "bxor", "exchange", "load", "store" }) do
        assert.matches("calling '" .. m .. "' on bad self %(" .. k .. " views have no atomic methods%)",
                       errof(callm, v, m, 1, 1))
      end
    end
    local v = b:view("int8")
    assert.matches("bad argument #1 to 'add' %(index out of range %(1..8%)%)", errof(function() return v:add(9, 1) end))
    assert.matches("index out of range", errof(function() return v:add(0, 1) end))
    assert.matches("bad argument #2 to 'add' %(integer out of range for int8 %(%-128..127%)%)",
                   errof(function() return v:add(1, 128) end))
    assert.matches("bad argument #2 to 'sub' %(number has no integer representation", errof(function() return v:sub(1, 0.5) end))
    assert.matches("bad argument #2 to 'store' %(number expected, got no value", errof(function() return v:store(1) end))
    assert.matches("bad argument #3 to 'compareExchange'", errof(function() return v:compareExchange(1, 0, 200) end))
    assert.matches("bad argument #2 to 'compareExchange'", errof(function() return v:compareExchange(1, -200, 0) end))
    assert.matches("bad argument #1 to 'load' %(number expected, got no value", errof(function() return v:load() end))
    assert.matches("loom.SharedView expected", errof(v.add, b, 1, 1))
    assert.matches("the view is empty", errof(function() return b:view("int8", 8):load(1) end))
    assert.are.equal(5, v:store(1, 5))
    assert.are.equal(0, b:view("uint8"):sub(2, 1))
    assert.are.equal(255, b:view("uint8")[2])    -- wraps
  end)

  -- add, sub, load and store take a shorter way on int32 views: the same
  -- results and the same errors as every other kind
  it("on int32 views wrap, convert and refuse as the other kinds do", function()
    local b = loom.SharedBuffer(16)
    local v = b:view("int32", 4, 2)               -- cells 2 and 3 of the buffer
    assert.are.equal(2147483647, v:store(1, 2147483647))
    assert.are.equal(2147483647, v:add(1, 1))
    assert.are.equal(-2147483648, v:load(1))      -- wrapped
    assert.are.equal(-2147483648, v:sub(1, 1))
    assert.are.equal(2147483647, v:load(1))
    assert.are.equal(0, v:add(2.0, 3.0))          -- floats with an integer value
    assert.are.equal(3, v:load("2"))              -- as luaL_checkinteger converts
    assert.are.equal(3, b:view("int32"):load(3))  -- the offset is kept
    assert.are.equal(0, b:view("int32"):load(1))
    assert.matches("bad argument #2 to 'add' %(integer out of range for int32", errof(callm, v, "add", 1, 2 ^ 31))
    assert.matches("bad argument #2 to 'store' %(integer out of range for int32", errof(callm, v, "store", 1, -2 ^ 31 - 1))
    assert.matches("index out of range %(1..2%)", errof(callm, v, "add", 3, 1))
    assert.matches("index out of range", errof(callm, v, "load", 0))
    assert.matches("number has no integer representation", errof(callm, v, "sub", 1.5, 1))
    assert.matches("number expected, got nil", errof(callm, v, "add", 1, nil))
    assert.matches("loom.SharedView expected", errof(v.add, {}, 1, 1))
    assert.matches("loom.SharedView expected", errof(v.load, io.stdout, 1))
    local mt = getmetatable(v)
    mt.__gc(v)                                    -- released by a direct call
    assert.matches("the view was released", errof(callm, v, "add", 1, 1))
    assert.matches("the view was released", errof(callm, v, "load", 1))
  end)

  it("are exact under contention: 2 workers adding at once", function()
    local N = H.instrumented and 100000 or 1000000
    local b = loom.SharedBuffer(16)
    local v = b:view("int32")
    local ws = {}
    for w = 1, 2 do
      ws[w] = H.spawn(function(buf, n)
        local a = buf:view("int32")
        a:add(2, 1)
        while a:load(2) < 2 do end             -- start together
        for _ = 1, n do a:add(1, 1) end
        local i64 = buf:view("int64", 8)
        for _ = 1, n do i64:sub(1, 3) end
      end, { argv = { b, N } })
    end
    H.run(120000)
    for w = 1, 2 do assert.are.equal(0, select(2, H.exited(ws[w]))) end
    assert.are.equal(2 * N, v[1])
    assert.are.equal(-6 * N, b:view("int64", 8)[1])
  end)
end)

describe("sending shared memory", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("loom.clone keeps the block and the identity of a value met twice", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32", 4)
    local c = loom.clone({ b, v, v, inner = { b } })
    assert.are.equal(c[2], c[3])
    assert.are.equal(c[1], c.inner[1])
    assert.are_not.equal(b, c[1])
    c[2][1] = 42
    assert.are.equal(42, v[1])
    assert.are.equal(1, #c[2])
    assert.are.equal(4, core.sharedcount(b))   -- b, v, c[1], c[2]
    c = nil
    settle()
    assert.are.equal(2, core.sharedcount(b))
  end)

  it("goes by reference in messages and workerData: both threads see one memory", function()
    local b = loom.SharedBuffer(8)
    local w = H.spawn(function()
      local loom = require "loom"
      local wd = loom.workerData
      loom.parentPort:once("message", function(m)
        wd.buf:view("int32")[1] = 7              -- from workerData
        m.views[1][2] = m.views[1][1] + 1         -- from a message, nested
        loom.parentPort:postMessage({ kind = tostring(m.views[1]):match("%((%w+)"), n = #m.views[1] })
      end)
    end, { workerData = { buf = b } })
    local got
    w:on("message", function(m) got = m end)
    local v = b:view("int32")
    assert.is_true(w:postMessage({ views = { v } }))
    H.run()
    assert.are.same({ kind = "int32", n = 2 }, got)
    assert.are.same({ 7, 8 }, { v[1], v[2] })
    settle()
    assert.are.equal(2, core.sharedcount(b))   -- b and v: the worker's are gone
  end)

  it("outlives the worker that made it", function()
    local got = H.inworker(function()
      local loom = require "loom"
      local b = loom.SharedBuffer(1 << 20)
      b:view("float64")[131072] = 2.5
      b:write(1, "made in a worker")
      return loom.parentPort:postMessage(b)
    end)
    settle()
    assert.are.equal(1, core.sharedcount(got))
    assert.are.equal("made in a worker", got:read(1, 16))
    assert.are.equal(2.5, got:view("float64")[131072])
  end)

  it("a message dropped undelivered releases its block", function()
    local b = loom.SharedBuffer(4)
    local w = H.spawn(function() end)
    H.join(w)
    local ok, why = w:postMessage({ b, b:view("uint8") })
    assert.is_false(ok)
    assert.are.equal("closed", why)
    settle()
    assert.are.equal(1, core.sharedcount(b))
    local w2 = H.spawn(function()
      local loom = require "loom"
      loom.parentPort:postMessage("ready")
      loom.sleep(math.huge)
    end)
    w2:on("message", function()
      assert.is_true(w2:postMessage({ b:view("int32") }))
      w2:terminate()
    end)
    H.run()
    settle()
    assert.are.equal(1, core.sharedcount(b))
  end)
end)

describe("wait and notify", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("wait says not-equal, or timed-out after its timeout (0 polls)", function()
    local b = loom.SharedBuffer(16)
    local v, q = b:view("int32"), b:view("int64")
    assert.are.equal("not-equal", v:wait(1, 1))
    assert.are.equal("timed-out", v:wait(1, 0, 0))
    assert.are.equal("timed-out", v:wait(1, 0, 5))
    assert.are.equal("timed-out", v:wait(1, 0, 0.5))
    q[2] = math.mininteger
    assert.are.equal("timed-out", q:wait(2, math.mininteger, 1))
    assert.are.equal("not-equal", q:wait(2, 0, 1))
    assert.are.equal(0, v:notify(1))
    assert.are.equal(0, core.sharedwaiters(v, 1))
  end)

  it("exist on int32 and int64 views only, and check their arguments", function()
    local b = loom.SharedBuffer(8)
    for _, k in ipairs({ "int8", "uint8", "int16", "uint16", "uint32", "float32", "float64" }) do
      local v = b:view(k)
      for _, m in ipairs({ "wait", "notify", "waitAsync" }) do
        assert.matches("calling '" .. m .. "' on bad self %(an int32 or int64 view expected, got " .. k,
                       errof(callm, v, m, 1, 0))
      end
    end
    local v = b:view("int32")
    for _, m in ipairs({ "wait", "waitAsync" }) do
      assert.matches("bad argument #3 to '" .. m .. "' %(timeout must be >= 0", errof(callm, v, m, 1, 0, -1))
      assert.matches("timeout must be >= 0", errof(callm, v, m, 1, 0, 0 / 0))
      assert.matches("number expected, got string", errof(callm, v, m, 1, 0, "soon"))
      assert.matches("bad argument #1 to '" .. m .. "' %(index out of range %(1..2%)", errof(callm, v, m, 3, 0))
      assert.matches("bad argument #2 to '" .. m .. "' %(integer out of range for int32", errof(callm, v, m, 1, 2 ^ 31))
      assert.matches("bad argument #2 to '" .. m .. "' %(number expected, got no value", errof(callm, v, m, 1))
    end
    assert.matches("bad argument #2 to 'notify' %(count must be >= 0", errof(function() return v:notify(1, -1) end))
    assert.matches("count must be >= 0", errof(function() return v:notify(1, 0 / 0) end))
    assert.matches("no integer representation", errof(function() return v:notify(1, 1.5) end))
    assert.matches("index out of range", errof(function() return v:notify(0) end))
    assert.are.equal(0, v:notify(1, 0))
    assert.are.equal(0, v:notify(1, math.huge))
  end)

  it("a worker's wait is woken by notify, and notify counts whom it woke", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local ws = {}
    for i = 1, 3 do
      ws[i] = H.spawn(function(buf)
        local loom = require "loom"
        local a = buf:view("int32")
        loom.parentPort:postMessage(a:wait(1, 0))
      end, { argv = { b } })
    end
    local results = {}
    for i = 1, 3 do ws[i]:on("message", function(r) results[#results + 1] = r end) end
    assert.is_true(H.run_until(function() return core.sharedwaiters(v, 1) == 3 end, 10000))
    assert.are.equal(0, v:notify(2))               -- another address: nobody
    assert.are.equal(2, v:notify(1, 2))
    assert.are.equal(1, core.sharedwaiters(v, 1))
    assert.are.equal(1, v:notify(1, math.huge))
    assert.are.equal(0, v:notify(1))
    H.run()
    assert.are.same({ "ok", "ok", "ok" }, results)
  end)

  it("notify wakes the first waiters first", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int64")
    local order = {}
    local ws = {}
    for i = 1, 3 do
      ws[i] = H.spawn(function(buf, n)
        local loom = require "loom"
        loom.parentPort:postMessage({ n, buf:view("int64"):wait(1, 0) })
      end, { argv = { b, i } })
      ws[i]:on("message", function(m) order[#order + 1] = m[1] end)
      assert.is_true(H.run_until(function() return core.sharedwaiters(v, 1) == i end, 10000))
    end
    for i = 1, 3 do
      assert.are.equal(1, v:notify(1, 1))
      assert.is_true(H.run_until(function() return #order == i end, 10000))
    end
    H.run()
    assert.are.same({ 1, 2, 3 }, order)
  end)

  it("terminate() wakes a worker blocked in wait, without a timeout or with one", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    for _, timeout in ipairs({ false, 1e9 }) do
      local w = H.spawn(function(buf, t)
        local a = buf:view("int32")
        a:wait(1, 0, t or nil)
        a[2] = 1                                  -- never reached
      end, { argv = { b, timeout } })
      assert.is_true(H.run_until(function() return core.sharedwaiters(v, 1) == 1 end, 10000))
      w:terminate()
      assert.are.equal(1, H.join(w))
      assert.are.equal(0, core.sharedwaiters(v, 1))
      assert.are.equal(0, v[2])
    end
    settle()
    assert.are.equal(2, core.sharedcount(b))
  end)

  it("a wait inside pcall still ends the worker on terminate", function()
    local b = loom.SharedBuffer(4)
    local v = b:view("int32")
    local w = H.spawn(function(buf)
      local a = buf:view("int32")
      while true do pcall(a.wait, a, 1, 0) end
    end, { argv = { b } })
    assert.is_true(H.run_until(function() return core.sharedwaiters(v, 1) == 1 end, 10000))
    w:terminate()
    assert.are.equal(1, H.join(w))
  end)
end)

describe("waitAsync", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("returns a Future, settled at once when the value differs or the timeout is 0", function()
    local v = loom.SharedBuffer(8):view("int32")
    local f = v:waitAsync(1, 5)
    assert.is_true(loom.isFuture(f))
    assert.are.equal("fulfilled", f:state())
    assert.are.equal("not-equal", f:await())
    assert.are.equal("timed-out", v:waitAsync(1, 0, 0):await())
    assert.are.equal(0, require("loom.shared").pending())
  end)

  it("loads its Lua half on a thread's first waitAsync, also where loom was never required", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local w = H.spawn(function(buf)
      local loom = require "loom"
      local before = package.loaded["loom.shared"] == nil
      buf:view("int32"):waitAsync(1, 0):next(function(r)
        loom.parentPort:postMessage({ before, package.loaded["loom.shared"] ~= nil, r })
      end)
      loom.parentPort:postMessage("waiting")
    end, { argv = { b } })
    local got
    w:on("message", function(m)
      if m == "waiting" then v:store(1, 1); v:notify(1) else got = m end
    end)
    H.run()
    assert.are.same({ true, true, "ok" }, got)
    -- a worker that never requires loom (loom.core is there, the Lua half
    -- not): without a require to call, waitAsync says so; with it, it works
    local w2 = H.spawn(function(buf)
      local a = buf:view("int32")
      local req = require
      rawset(_G, "require", nil)
      local ok, err = pcall(function() return a:waitAsync(1, 1) end)
      rawset(_G, "require", req)
      assert(not ok and tostring(err):find("waitAsync: cannot load loom.shared", 1, true), tostring(err))
      local r = a:waitAsync(1, 5):await()
      assert(r == "not-equal", tostring(r))
      os.exit(package.loaded["loom.shared"] and 7 or 3)
    end, { argv = { b } })
    assert.are.equal(7, H.join(w2))
  end)

  it("times out from the event loop, never blocking it", function()
    local v = loom.SharedBuffer(8):view("int32")
    local f = v:waitAsync(1, 0, 20)
    local ticks = 0
    local t = loom.setInterval(function() ticks = ticks + 1 end, 1)
    assert.are.equal("pending", f:state())
    assert.are.equal("timed-out", f:await())
    t:close()
    assert.is_true(ticks > 0)
    assert.are.equal(0, core.sharedwaiters(v, 1))
  end)

  it("keeps the loop alive until a worker's notify settles it with ok", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local got
    v:waitAsync(1, 0):next(function(r) got = r end)
    local w = H.spawn(function(buf)
      local a = buf:view("int32")
      a:store(1, 1)
      assert(a:notify(1) == 1)
    end, { argv = { b } })
    H.run()                                        -- returns once settled
    assert.are.equal("ok", got)
    assert.are.equal(0, select(2, H.exited(w)))
    assert.are.equal(0, require("loom.shared").pending())
  end)

  it("counts with blocking waiters in notify, first come first woken", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local w = H.spawn(function(buf)
      local loom = require "loom"
      loom.parentPort:postMessage(buf:view("int32"):wait(1, 0))
    end, { argv = { b } })
    local blocking
    w:on("message", function(r) blocking = r end)
    assert.is_true(H.run_until(function() return core.sharedwaiters(v, 1) == 1 end, 10000))
    local f1, f2 = v:waitAsync(1, 0), v:waitAsync(1, 0, 1e9)
    assert.are.equal(3, core.sharedwaiters(v, 1))
    assert.are.equal(2, v:notify(1, 2))            -- the worker, then f1
    assert.are.equal("ok", f1:await())
    assert.are.equal("pending", f2:state())
    assert.are.equal(1, v:notify(1))
    assert.are.equal("ok", f2:await())
    H.run()
    assert.are.equal("ok", blocking)
  end)

  it("in a worker: settled by the parent's notify, and freed when the worker is terminated", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local w = H.spawn(function(buf)
      local loom = require "loom"
      local a = buf:view("int32")
      a:waitAsync(1, 0):next(function(r)
        loom.parentPort:postMessage(r)
        a:waitAsync(2, 0)                          -- pending when terminated
        a:waitAsync(2, 0, 1e9)
        loom.parentPort:postMessage("again")
      end)
    end, { argv = { b } })
    local got = {}
    w:on("message", function(r)
      got[#got + 1] = r
      if r == "again" then w:terminate() end
    end)
    assert.is_true(H.run_until(function() return core.sharedwaiters(v, 1) == 1 end, 10000))
    assert.are.equal(1, v:notify(1))
    H.run()
    assert.are.same({ "ok", "again" }, got)
    assert.are.equal(1, select(2, H.exited(w)))
    assert.are.equal(0, core.sharedwaiters(v, 2))
    settle()
    assert.are.equal(2, core.sharedcount(b))
  end)

  it("a worker that exits with waits pending (and one with a timer) frees them", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local w = H.spawn(function(buf)
      local loom = require "loom"
      local a = buf:view("int32")
      a:waitAsync(1, 0)
      a:waitAsync(1, 0, 60000)
      loom.exit(3)
    end, { argv = { b } })
    assert.are.equal(3, H.join(w))
    assert.are.equal(0, core.sharedwaiters(v, 1))
    settle()
    assert.are.equal(2, core.sharedcount(b))
  end)

  it("a process that ends with waits pending on its main thread frees them", function()
    if H.no_fork(pending) then return end
    local out = H.run_script([[
      local loom = require "loom"
      local v = loom.SharedBuffer(8):view("int64")
      v:waitAsync(1, 0)
      v:waitAsync(1, 0, 1e9)
      loom.Worker(function(buf)
        buf:view("int64"):waitAsync(1, 0)
        require("loom").sleep(math.huge)
      end, { argv = { v } })
      print("pending")
    ]])
    assert.matches("pending\nrc=0", out, 1, true)
  end)

  it("timeouts racing notifies: every wait ends ok or timed-out, none is lost", function()
    local N = H.instrumented and 200 or 2000
    local b = loom.SharedBuffer(16)
    local v = b:view("int32")
    local waiter = H.spawn(function(buf, n)
      local loom = require "loom"
      local a = buf:view("int32")
      local ok, out = 0, 0
      for _ = 1, n do
        local r = a:wait(1, 0, 0.05)
        if r == "ok" then ok = ok + 1 elseif r == "timed-out" then out = out + 1 end
      end
      a:store(2, 1)                                -- done
      loom.parentPort:postMessage({ ok, out })
    end, { argv = { b, N } })
    local notifier = H.spawn(function(buf)
      local a = buf:view("int32")
      local woke = 0
      while a:load(2) == 0 do woke = woke + a:notify(1) end
      require("loom").parentPort:postMessage(woke)
    end, { argv = { b } })
    local counts, woke
    waiter:on("message", function(m) counts = m end)
    notifier:on("message", function(m) woke = m end)
    local async_ok, async_out = 0, 0
    loom.async(function()
      while v:load(2) == 0 do
        local r = v:waitAsync(1, 0, 0.05):await()
        if r == "ok" then async_ok = async_ok + 1 else async_out = async_out + 1 end
      end
    end)
    H.run(120000)
    assert.are.equal(N, counts[1] + counts[2])
    assert.are.equal(counts[1] + async_ok, woke)      -- each ok was one wake, each wake one ok
    assert.are.equal(0, core.sharedwaiters(v, 1))
    assert.are.equal(0, require("loom.shared").pending())
  end)

  it("a worker that ends with a wait pending and a notify in flight frees both", function()
    local b = loom.SharedBuffer(8)
    local v = b:view("int32")
    local w = H.spawn(function(buf)
      local loom = require "loom"
      local a = buf:view("int32")
      a:waitAsync(1, 0)
      a:waitAsync(1, 0)
      loom.parentPort:postMessage("waiting")
      loom.sleep(math.huge)                        -- its loop never runs
    end, { argv = { b } })
    w:on("message", function()
      assert.are.equal(1, v:notify(1, 1))          -- one WAKE queued, one listed
      w:terminate()
    end)
    H.run()
    assert.are.equal(0, core.sharedwaiters(v, 1))
    settle()
    assert.are.equal(2, core.sharedcount(b))
  end)
end)

describe("loom.freeze", function()
  before_each(H.before_each)
  after_each(H.after_each)

  local function sample()
    local t = { 10, 20.5, "three", { x = 1 }, name = "frozen", flag = false, [true] = "yes",
                [1.5] = "float key", [-3] = "negative", [100] = "sparse", bin = "a\0b\255",
                nested = { deeper = { deepest = math.mininteger } } }
    t.self = t
    t.alias = t.nested
    return t
  end

  it("reads every kind of key and value, decoding only what is read", function()
    local ft = loom.freeze(sample())
    assert.matches("^loom.Frozen %(4 array", tostring(ft))
    assert.are.equal(4, #ft)
    assert.are.same({ 10, 20.5, "three" }, { ft[1], ft[2], ft[3] })
    assert.are.equal("integer", math.type(ft[1]))
    assert.are.equal("float", math.type(ft[2]))
    assert.are.equal(1, ft[4].x)
    assert.are.equal("frozen", ft.name)
    assert.is_false(ft.flag)
    assert.are.equal("yes", ft[true])
    assert.are.equal("float key", ft[1.5])
    assert.are.equal("negative", ft[-3])
    assert.are.equal("sparse", ft[100])
    assert.are.equal("a\0b\255", ft.bin)
    assert.are.equal(math.mininteger, ft.nested.deeper.deepest)
    assert.are.equal(10, ft[1.0])
    assert.is_nil(ft.missing)
    assert.is_nil(ft[5])
    assert.is_nil(ft[0 / 0])
    assert.is_nil(ft[{}])
    assert.is_nil(ft[false])
  end)

  it("keeps cycles and shared tables: two reads of one table are equal (==)", function()
    local ft = loom.freeze(sample())
    assert.is_true(ft == ft.self)
    assert.is_true(ft.nested == ft.alias)
    assert.is_true(ft.nested.deeper == ft.self.alias.deeper)
    assert.is_true(ft[4] == ft[4])
    assert.is_false(ft[4] == ft.nested)
    assert.is_false(ft == loom.freeze(sample()))          -- another block
    assert.is_true(loom.clone(ft.nested) == ft.nested)    -- the same block, sent
    assert.is_false(ft == {})
  end)

  it("a part read from it keeps its block alive after the root is gone", function()
    local ft = loom.freeze(sample())
    local deeper = ft.nested.deeper
    ft = nil
    settle()
    assert.are.equal(math.mininteger, deeper.deepest)
    assert.are.equal(1, core.frozencount(deeper))
    local sent = loom.clone(deeper)                       -- a root of its own
    assert.are.equal(2, core.frozencount(sent))
    assert.are.equal(math.mininteger, sent.deepest)
  end)

  it("finds every key of a large hash part (strings, floats, negative integers)", function()
    local t, n = {}, H.instrumented and 2000 or 20000
    for i = 1, n do
      t["k" .. i] = i
      t[i + 0.5] = -i
      t[-i] = ("x"):rep(i % 7)
    end
    local ft = loom.freeze(t)
    for i = 1, n do
      if ft["k" .. i] ~= i or ft[i + 0.5] ~= -i or ft[-i] ~= ("x"):rep(i % 7) then
        error("key " .. i .. " lost")
      end
    end
    assert.is_nil(ft["k0"])
    assert.is_nil(ft[0.5])
    local count = 0
    for k, v in pairs(ft) do
      count = count + 1
      assert.are.equal(t[k], v)
    end
    assert.are.equal(3 * n, count)
    assert.are.equal(0, #ft)
  end)

  it("iterates with pairs and ipairs, as the table would", function()
    local t = sample()
    t[{}] = "a table key"
    local ft = loom.freeze(t)
    local n, tablekeys = 0, 0
    for k, v in pairs(ft) do
      n = n + 1
      if type(k) == "userdata" then
        tablekeys = tablekeys + 1
        assert.are.equal("a table key", v)
      elseif type(t[k]) ~= "table" then
        assert.are.equal(t[k], v)
      else
        assert.matches("^loom.Frozen", tostring(v))
      end
    end
    local want = 0
    for _ in pairs(t) do want = want + 1 end
    assert.are.equal(want, n)
    assert.are.equal(1, tablekeys)
    local seen = {}
    for i, v in ipairs(ft) do seen[i] = type(v) == "userdata" and "table" or v end
    assert.are.same({ 10, 20.5, "three", "table" }, seen)
    for _ in pairs(loom.freeze({})) do error("an empty table has no entries") end
    assert.are.equal(0, #loom.freeze({}))
  end)

  it("refuses writes; its metatable's functions check what they get", function()
    local ft = loom.freeze({ a = 1 })
    assert.matches("attempt to modify a frozen table", errof(function() ft.a = 2 end))
    assert.matches("attempt to modify a frozen table", errof(function() ft.new = 2 end))
    assert.matches("attempt to modify a frozen table", errof(function() ft[1] = 2 end))
    assert.are.equal(1, ft.a)
    local mt = getmetatable(ft)
    assert.matches("loom.Frozen expected", errof(mt.__index, {}, 1))
    assert.matches("the key is not in this frozen table", errof(pairs(ft), ft, "nope"))
    local part = loom.freeze({ p = { 1 } }).p
    mt.__gc(ft)
    assert.matches("was released", errof(function() return ft.a end))
    assert.matches("was released", errof(function() return #ft end))
    assert.matches("released", tostring(ft))
    assert.is_nil(getmetatable(part).__gc)                -- a part owns no count
    assert.are.equal(1, part[1])
  end)

  it("ignores metatables (reads are raw) and returns a frozen table as it is", function()
    local t = setmetatable({ x = 1 }, { __index = function() return "meta" end })
    local ft = loom.freeze(t)
    assert.are.equal(1, ft.x)
    assert.is_nil(ft.y)
    assert.are.equal(ft, loom.freeze(ft))
  end)

  it("says what cannot be frozen, with the path of the bad value", function()
    assert.matches("bad argument #1 to '[%w.]*freeze' %(table expected, got number%)", errof(loom.freeze, 1))
    assert.matches("table expected, got no value", errof(loom.freeze))
    assert.are.equal("loom.freeze: cannot freeze value.f: function", errof(loom.freeze, { f = print }))
    assert.are.equal("loom.freeze: cannot freeze value.a[3][1]: userdata",
                     errof(loom.freeze, { a = { [3] = { io.stdout } } }))
    assert.are.equal("loom.freeze: cannot freeze value[<key>]: function", errof(loom.freeze, { [print] = 1 }))
    assert.are.equal("loom.freeze: cannot freeze value.co: thread",
                     errof(loom.freeze, { co = coroutine.create(print) }))
    assert.matches("cannot freeze value.b: userdata",
                   errof(loom.freeze, { b = loom.SharedBuffer(1) }))
    assert.matches("cannot freeze value.x: a frozen table",
                   errof(loom.freeze, { x = loom.freeze({}) }))
    local deep = {}
    local t = deep
    for _ = 1, 250 do t.next = {}; t = t.next end
    assert.matches("nested deeper than 200 levels", errof(loom.freeze, deep))
    collectgarbage()
  end)

  it("is sent by reference, and a dropped message releases it", function()
    local ft = loom.freeze(sample())
    assert.are.equal(1, core.frozencount(ft))
    local c = loom.clone({ ft, ft.nested })
    assert.are.equal("frozen", c[1].name)
    assert.are.equal(math.mininteger, c[2].deeper.deepest)
    c = nil
    settle()
    local w = H.spawn(function() end)
    H.join(w)
    assert.is_false(w:postMessage(ft))
    settle()
    assert.are.equal(1, core.frozencount(ft))
  end)

  it("is read by 4 workers at once, from one copy", function()
    local N = H.instrumented and 2000 or 100000
    local t = { items = {} }
    for i = 1, N do t.items[i] = { id = i, name = "item" .. i } end
    local ft = loom.freeze(t)
    local sums = {}
    local ws = {}
    for w = 1, 4 do
      ws[w] = H.spawn(function()
        local loom = require "loom"
        local items = loom.workerData.items
        local sum, names = 0, 0
        for i = 1, #items do
          local it = items[i]
          sum = sum + it.id
          if it.name == "item" .. i then names = names + 1 end
        end
        loom.parentPort:postMessage({ sum, names })
      end, { workerData = ft })
      ws[w]:on("message", function(m) sums[#sums + 1] = m end)
    end
    H.run(60000)
    local want = N * (N + 1) // 2
    assert.are.same({ { want, N }, { want, N }, { want, N }, { want, N } }, sums)
    settle()
    assert.are.equal(1, core.frozencount(ft))
  end)
end)
