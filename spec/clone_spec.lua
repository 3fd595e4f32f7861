-- loom.clone and the values messages carry (API.md, "Messages").
local H = require "helper"
local loom = require "loom"

local function isnegzero(x) return x == 0 and 1 / x == -math.huge end

-- every byte value, twice, with NULs at both ends
local BINARY = {}
for i = 0, 255 do BINARY[#BINARY + 1] = string.char(i) end
BINARY = "\0" .. table.concat(BINARY) .. table.concat(BINARY):reverse() .. "\0"

describe("loom.clone", function()
  before_each(H.before_each)
  after_each(H.after_each)

  describe("scalars", function()
    it("keeps nil and booleans", function()
      assert.is_nil(loom.clone(nil))
      assert.is_true(loom.clone(true))
      assert.is_false(loom.clone(false))
    end)

    it("keeps integers exact, including the 64-bit extremes", function()
      local ints = { 0, 1, -1, 63, 64, -63, -64, 127, 128, 255, 256, 1 << 31,
                     -(1 << 31), (1 << 53) + 1, -(1 << 53) - 1, 1 << 62,
                     math.maxinteger, math.mininteger,
                     math.maxinteger - 1, math.mininteger + 1 }
      for _, n in ipairs(ints) do
        local c = loom.clone(n)
        assert.are.equal("integer", math.type(c), "type of " .. n)
        assert.are.equal(n, c)
      end
    end)

    it("keeps floats exact and floats stay floats", function()
      local floats = { 0.5, -0.5, 1.0, 3.0, 0.1, 1 / 3, 1e308, -1e308, 5e-324,
                       2.2250738585072014e-308, 2^63, -2^63, 123456789.123456789 }
      for _, x in ipairs(floats) do
        local c = loom.clone(x)
        assert.are.equal("float", math.type(c), "type of " .. x)
        assert.are.equal(x, c)
        assert.are.equal(string.pack("<d", x), string.pack("<d", c))
      end
    end)

    it("keeps NaN, +inf, -inf and -0.0", function()
      local nan = loom.clone(0 / 0)
      assert.are.equal("float", math.type(nan))
      assert.is_true(nan ~= nan)
      assert.are.equal(math.huge, loom.clone(math.huge))
      assert.are.equal(-math.huge, loom.clone(-math.huge))
      local z = loom.clone(-0.0)
      assert.are.equal("float", math.type(z))
      assert.is_true(isnegzero(z))
      assert.is_false(isnegzero(loom.clone(0.0)))
    end)

    it("keeps strings of every length, binary-safe", function()
      local strs = { "", "a", ("x"):rep(127), ("y"):rep(128), ("z"):rep(65536 + 3),
                     BINARY, "\0", "a\0b", "\255\254", "héllo wörld ✓" }
      for _, s in ipairs(strs) do
        local c = loom.clone(s)
        assert.are.equal(#s, #c)
        assert.are.equal(s, c)
      end
    end)

    it("keeps a multi-megabyte string", function()
      local big = ("0123456789abcdef"):rep(256 * 1024)   -- 4 MiB
      assert.are.equal(big, loom.clone(big))
    end)
  end)

  describe("tables", function()
    it("makes a new table with the same contents", function()
      local t = { 1, 2, 3, x = "y" }
      local c = loom.clone(t)
      assert.are_not.equal(t, c)
      assert.are.same(t, c)
    end)

    it("keeps the empty table", function()
      local c = loom.clone({})
      assert.are.equal("table", type(c))
      assert.is_nil(next(c))
    end)

    it("keeps array and hash parts together", function()
      local t = { 10, 20, 30, [4] = 40, [100] = 100, [0] = 0, [-1] = -1,
                  name = "n", [1.5] = "float key", [true] = "t", [false] = "f" }
      local c = loom.clone(t)
      assert.are.same(t, c)
      assert.are.equal(4, #c)
      assert.are.equal("float key", c[1.5])
      assert.are.equal("t", c[true])
      assert.are.equal("f", c[false])
      assert.are.equal(-1, c[-1])
      assert.are.equal(100, c[100])
    end)

    it("keeps holes in arrays as holes", function()
      local t = { 1, nil, 3, nil, 5 }
      local c = loom.clone(t)
      for i = 1, 5 do assert.are.equal(t[i], c[i]) end
    end)

    it("keeps integer and float keys apart", function()
      local c = loom.clone({ [1] = "int", [1.25] = "float", [2^53] = "big float" })
      assert.are.equal("int", c[1])
      assert.are.equal("float", c[1.25])
      assert.are.equal("big float", c[2^53])
      for k in pairs(c) do
        if k == 1.25 then assert.are.equal("float", math.type(k)) end
      end
    end)

    it("keeps extreme integer keys", function()
      local c = loom.clone({ [math.maxinteger] = "max", [math.mininteger] = "min" })
      assert.are.equal("max", c[math.maxinteger])
      assert.are.equal("min", c[math.mininteger])
    end)

    it("clones tables used as keys", function()
      local k = { "key" }
      local t = { [k] = "value" }
      local c = loom.clone(t)
      local ck, cv = next(c)
      assert.are.equal("table", type(ck))
      assert.are_not.equal(k, ck)
      assert.are.equal("key", ck[1])
      assert.are.equal("value", cv)
    end)

    it("keeps functions as keys and string keys apart from number keys", function()
      local f = function() return "key fn" end
      local c = loom.clone({ [f] = "fn", ["1"] = "string one", [1] = "int one" })
      assert.are.equal("string one", c["1"])
      assert.are.equal("int one", c[1])
      local found
      for k, v in pairs(c) do
        if type(k) == "function" then found = { k(), v } end
      end
      assert.are.same({ "key fn", "fn" }, found)
    end)

    it("is not disturbed by finalizers that clone while it runs", function()
      local fired = 0
      local mt = { __gc = function()
        fired = fired + 1
        loom.clone({ "from a finalizer", { fired } })
      end }
      local t = {}
      for i = 1, 2000 do t[i] = { i, ("v"):rep(i % 50) } end
      for _ = 1, 60 do
        for _ = 1, 1000 do setmetatable({}, mt) end
        local c = loom.clone(t)
        for i = 1, 2000, 97 do
          assert.are.equal(i, c[i][1])
          assert.are.equal(("v"):rep(i % 50), c[i][2])
        end
      end
      collectgarbage()
      assert.is_true(fired > 0)
    end)

    it("keeps a large array", function()
      local t = {}
      for i = 1, 100000 do t[i] = i * 2 end
      local c = loom.clone(t)
      assert.are.equal(100000, #c)
      for i = 1, 100000 do
        if c[i] ~= i * 2 then error("element " .. i .. " differs") end
      end
    end)

    it("keeps a large hash", function()
      local t = {}
      for i = 1, 50000 do t["k" .. i] = i end
      local c = loom.clone(t)
      local n = 0
      for k, v in pairs(c) do
        n = n + 1
        assert(t[k] == v)
      end
      assert.are.equal(50000, n)
    end)

    it("keeps nested tables", function()
      local t = { a = { b = { c = { d = { 1, 2, { 3 } } } } } }
      assert.are.same(t, loom.clone(t))
    end)

    it("accepts nesting well within the depth bound", function()
      local t = {}
      local cur = t
      for _ = 1, 150 do cur.next = {}; cur = cur.next end
      cur.leaf = true
      local c = loom.clone(t)
      for _ = 1, 150 do c = c.next end
      assert.is_true(c.leaf)
    end)

    it("keeps cycles", function()
      local t = { name = "root" }
      t.self = t
      t.list = { t, { parent = t } }
      local c = loom.clone(t)
      assert.are_not.equal(t, c)
      assert.are.equal(c, c.self)
      assert.are.equal(c, c.list[1])
      assert.are.equal(c, c.list[2].parent)
      assert.are.equal("root", c.self.self.name)
    end)

    it("keeps mutual cycles", function()
      local a, b = {}, {}
      a.b, b.a = b, a
      local c = loom.clone(a)
      assert.are.equal(c, c.b.a)
      assert.are.equal(c.b, c.b.a.b)
    end)

    it("keeps shared references shared", function()
      local s = { "shared" }
      local t = { s, s, x = s, inner = { y = s } }
      local c = loom.clone(t)
      assert.are_not.equal(s, c[1])
      assert.are.equal(c[1], c[2])
      assert.are.equal(c[1], c.x)
      assert.are.equal(c[1], c.inner.y)
      c[1][1] = "changed"
      assert.are.equal("changed", c.inner.y[1])
      assert.are.equal("shared", s[1])
    end)

    it("keeps a table that is both a key and a value shared", function()
      local k = {}
      local c = loom.clone({ [k] = k })
      local ck, cv = next(c)
      assert.are.equal(ck, cv)
    end)

    it("keeps the same table shared between array slots and keys", function()
      local s = {}
      local c = loom.clone({ s, [s] = 1, sub = { s } })
      assert.are.equal(c[1], c.sub[1])
      assert.are.equal(1, c[c[1]])
    end)

    it("does not send metatables", function()
      local mt = { __index = function() return "from mt" end, kind = "mt" }
      local t = setmetatable({ real = 1 }, mt)
      local c = loom.clone(t)
      assert.is_nil(getmetatable(c))
      assert.are.equal(1, c.real)
      assert.is_nil(c.missing)
    end)

    it("does not call metamethods while cloning", function()
      local called = {}
      local function boom(name)
        return function() called[#called + 1] = name; error(name .. " called") end
      end
      local t = setmetatable({ 1, 2, x = 3 }, {
        __index = boom("__index"), __newindex = boom("__newindex"),
        __pairs = boom("__pairs"), __len = boom("__len"),
        __eq = boom("__eq"), __tostring = boom("__tostring"),
        __metatable = "locked",
      })
      local c = loom.clone(t)
      assert.are.same({}, called)
      assert.are.same({ 1, 2, x = 3 }, c)
      assert.is_nil(getmetatable(c))
    end)
  end)

  describe("functions", function()
    it("clones a function without upvalues", function()
      local f = function(a, b) return a + b, "sum" end
      local c = loom.clone(f)
      assert.are.equal("function", type(c))
      assert.are_not.equal(f, c)
      local x, y = c(2, 3)
      assert.are.equal(5, x)
      assert.are.equal("sum", y)
    end)

    it("clones upvalues by value", function()
      local n, s, t = 41, "str", { k = "v" }
      local f = function() return n + 1, s, t end
      local c = loom.clone(f)
      local a, b, tt = c()
      assert.are.equal(42, a)
      assert.are.equal("str", b)
      assert.are.same({ k = "v" }, tt)
      assert.are_not.equal(t, tt)
    end)

    it("keeps the clone's upvalues independent of the original", function()
      local count = 0
      local function inc() count = count + 1; return count end
      local c = loom.clone(inc)
      assert.are.equal(1, c())
      assert.are.equal(2, c())
      assert.are.equal(0, count)
    end)

    it("clones a recursive local function", function()
      local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
      local c = loom.clone(fact)
      assert.are.equal(3628800, c(10))
      assert.are.equal(c, select(2, debug.getupvalue(c, 1)))
    end)

    it("clones mutually recursive local functions", function()
      local isodd
      local function iseven(n) if n == 0 then return true end return isodd(n - 1) end
      function isodd(n) if n == 0 then return false end return iseven(n - 1) end
      local c = loom.clone({ even = iseven, odd = isodd })
      assert.is_true(c.even(10))
      assert.is_true(c.odd(7))
      assert.is_false(c.even(7))
      -- the pair still refers to each other, not to the originals
      local _, up = debug.getupvalue(c.even, 1)
      assert.are.equal(c.odd, up)
    end)

    it("keeps a function shared when it appears twice", function()
      local f = function() return 1 end
      local c = loom.clone({ a = f, b = f, list = { f } })
      assert.are.equal(c.a, c.b)
      assert.are.equal(c.a, c.list[1])
    end)

    it("keeps a table shared between an upvalue and the message", function()
      local cfg = { level = 3 }
      local function get() return cfg end
      local c = loom.clone({ cfg = cfg, get = get })
      assert.are.equal(c.cfg, c.get())
      assert.are_not.equal(cfg, c.cfg)
    end)

    it("gives the _ENV upvalue the receiver's globals", function()
      local f = function() return _ENV end
      assert.are.equal(_G, loom.clone(f)())
    end)

    it("refuses C functions, naming them", function()
      assert.has_error(function() loom.clone(print) end,
                       "loom.clone: cannot clone value: C function")
      assert.has_error(function() loom.clone({ f = string.format }) end,
                       "loom.clone: cannot clone value.f: C function")
    end)

    it("refuses a function whose upvalue cannot be cloned, naming the upvalue", function()
      local out = io.stdout
      local f = function() return out end
      local ok, err = pcall(loom.clone, { job = f })
      assert.is_false(ok)
      assert.matches("cannot clone value.job", err, 1, true)
      assert.matches("upvalue 'out'", err, 1, true)
      assert.matches("userdata", err, 1, true)
    end)
  end)

  describe("values that cannot be cloned", function()
    it("refuses userdata, coroutines and C functions at the top", function()
      assert.has_error(function() loom.clone(io.stdout) end, "loom.clone: cannot clone value: userdata")
      assert.has_error(function() loom.clone(coroutine.create(print)) end,
                       "loom.clone: cannot clone value: thread")
    end)

    it("names the path of a nested bad value", function()
      local msg = { items = { 1, 2, { handle = io.stdout } } }
      assert.has_error(function() loom.clone(msg) end,
                       "loom.clone: cannot clone value.items[3].handle: userdata")
    end)

    it("names string keys that are not identifiers with brackets", function()
      assert.has_error(function() loom.clone({ ["two words"] = { io.stdout } }) end,
                       'loom.clone: cannot clone value["two words"][1]: userdata')
    end)

    it("names integer, float and boolean keys", function()
      assert.has_error(function() loom.clone({ [10] = io.stdout }) end,
                       "loom.clone: cannot clone value[10]: userdata")
      assert.has_error(function() loom.clone({ [true] = io.stdout }) end,
                       "loom.clone: cannot clone value[true]: userdata")
      local ok, err = pcall(loom.clone, { [2.5] = io.stdout })
      assert.is_false(ok)
      assert.matches("cannot clone value[2.5]: userdata", err, 1, true)
    end)

    it("refuses a bad key", function()
      local ok, err = pcall(loom.clone, { [io.stdout] = 1 })
      assert.is_false(ok)
      assert.matches("^loom%.clone: cannot clone value", err)
      assert.matches("userdata", err, 1, true)
    end)

    it("refuses nesting beyond the depth bound with a clear error", function()
      local t = {}
      local cur = t
      for _ = 1, 1000 do cur[1] = {}; cur = cur[1] end
      local ok, err = pcall(loom.clone, t)
      assert.is_false(ok)
      assert.matches("^loom%.clone: cannot clone value%[1%]%[1%]", err)
      assert.matches("nested deeper than %d+ levels", err)
    end)

    it("refuses very deep nesting without crashing", function()
      local t = {}
      local cur = t
      for _ = 1, 200000 do cur[1] = {}; cur = cur[1] end
      local ok, err = pcall(loom.clone, t)
      assert.is_false(ok)
      assert.matches("nested deeper", err)
    end)

    it("refuses deeply nested closures without crashing", function()
      local f = function() return 0 end
      for _ = 1, 1000 do
        local g = f
        f = function() return g() + 1 end
      end
      local ok, err = pcall(loom.clone, f)
      assert.is_false(ok)
      assert.matches("nested deeper", err)
    end)

    it("keeps working after a failed clone", function()
      assert.has_error(function() loom.clone({ io.stdout }) end)
      assert.are.same({ 1, { 2 } }, loom.clone({ 1, { 2 } }))
    end)
  end)

  describe("through postMessage", function()
    it("carries every kind of value to a worker and back", function()
      local shared = { "shared" }
      local msg = {
        nothing = nil, yes = true, no = false,
        ints = { 0, 63, 64, -1, math.maxinteger, math.mininteger },
        floats = { 0.5, 1.0, math.huge, -math.huge, -0.0 },
        nan = 0 / 0,
        strings = { "", ("s"):rep(300), BINARY },
        mixed = { 1, 2, 3, k = "v", [10] = 10, [1.5] = 1.5, [true] = false },
        a = shared, b = shared,
      }
      msg.cycle = msg
      local c = H.roundtrip(msg)
      assert.are.equal(c, c.cycle)
      assert.are.equal(c.a, c.b)
      assert.are.same({ "shared" }, c.a)
      assert.is_true(c.yes)
      assert.is_false(c.no)
      for i, n in ipairs(msg.ints) do
        assert.are.equal("integer", math.type(c.ints[i]))
        assert.are.equal(n, c.ints[i])
      end
      for i = 1, 4 do
        assert.are.equal("float", math.type(c.floats[i]))
        assert.are.equal(msg.floats[i], c.floats[i])
      end
      assert.is_true(isnegzero(c.floats[5]))
      assert.is_true(c.nan ~= c.nan)
      assert.are.same(msg.strings, c.strings)
      assert.are.same(msg.mixed, c.mixed)
    end)

    it("carries nil as a message", function()
      local w = H.echo(1)
      local got, n = "unset", 0
      w:on("message", function(m) got, n = m, n + 1 end)
      w:postMessage(nil)
      H.run()
      assert.are.equal(1, n)
      assert.is_nil(got)
    end)

    it("carries a big message", function()
      local t = {}
      for i = 1, 200000 do t[i] = { i, tostring(i) } end
      local c = H.roundtrip(t)
      assert.are.equal(200000, #c)
      assert.are.same({ 199999, "199999" }, c[199999])
    end)

    it("carries a function with upvalues that the worker can call", function()
      local base, names = 100, { "a", "b" }
      local f = function(x) return base + x, names[2] end
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:once("message", function(g)
          local a, b = g(5)
          loom.parentPort:postMessage({ a, b })
        end)
      end)
      local got
      w:on("message", function(m) got = m end)
      w:postMessage(f)
      H.run()
      assert.are.same({ 105, "b" }, got)
    end)

    it("carries a recursive local function", function()
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:once("message", function(g) loom.parentPort:postMessage(g(20)) end)
      end)
      local got
      w:on("message", function(m) got = m end)
      w:postMessage(fib)
      H.run()
      assert.are.equal(6765, got)
    end)

    it("gives a sent function's _ENV the worker's globals", function()
      -- luacheck: globals where
      local w = H.spawn(function()
        local loom = require "loom"
        where = "worker"                   -- a global of the worker state
        loom.parentPort:once("message", function(g)
          loom.parentPort:postMessage({ g() })
        end)
      end)
      where = "main"                       -- a global here
      local got
      w:on("message", function(m) got = m end)
      w:postMessage(function() return where, type(describe) end)
      H.run()
      where = nil
      assert.are.same({ "worker", "nil" }, got)
    end)

    it("carries functions back from a worker", function()
      local got = H.inworker(function()
        local loom = require "loom"
        local k = 7
        local function times(x) return x * k end
        loom.parentPort:postMessage({ f = times, g = times })
      end)
      assert.are.equal(21, got.f(3))
      assert.are.equal(got.f, got.g)
    end)

    it("does not send metatables", function()
      local c = H.roundtrip(setmetatable({ x = 1 }, { __index = { y = 2 } }))
      assert.is_nil(getmetatable(c))
      assert.are.equal(1, c.x)
      assert.is_nil(c.y)
    end)

    it("raises in the sender naming the path under msg", function()
      local w = H.echo(1)
      local ok, err = pcall(w.postMessage, w, { items = { 1, 2, { handle = io.stdout } } })
      assert.is_false(ok)
      assert.matches("cannot clone msg.items[3].handle: userdata", err, 1, true)
      -- the worker is unaffected and still gets the next message
      local got
      w:on("message", function(m) got = m end)
      assert.is_true(w:postMessage("after"))
      H.run()
      assert.are.equal("after", got)
    end)

    it("names the path of a bad value posted by a worker", function()
      local w = H.spawn(function()
        local loom = require "loom"
        local ok, err = pcall(loom.parentPort.postMessage, loom.parentPort,
                              { list = { { co = coroutine.create(print) } } })
        loom.parentPort:postMessage({ ok, err })
      end)
      local got
      w:on("message", function(m) got = m end)
      H.run()
      assert.is_false(got[1])
      assert.matches("cannot clone msg.list[1].co: thread", got[2], 1, true)
    end)

    it("refuses a message nested beyond the depth bound", function()
      local w = H.echo(1)
      local t = {}
      local cur = t
      for _ = 1, 1000 do cur.x = {}; cur = cur.x end
      local ok, err = pcall(w.postMessage, w, t)
      assert.is_false(ok)
      assert.matches("cannot clone msg.x.x.x", err, 1, true)
      assert.matches("nested deeper", err)
      w:postMessage("done")
      H.run()
    end)
  end)

  describe("registered classes", function()
    local Point = {}
    Point.__index = Point
    function Point:norm2() return self.x * self.x + self.y * self.y end
    setup(function() loom.registerClass("spec.Point", Point) end)

    it("keep their metatable in a local clone, shared references too", function()
      local p = setmetatable({ x = 3, y = 4 }, Point)
      local c = loom.clone({ p, p })
      assert.are.equal(Point, getmetatable(c[1]))
      assert.are.equal(25, c[1]:norm2())
      assert.are.equal(c[1], c[2])
      assert.are_not.equal(p, c[1])
    end)

    it("get the receiving thread's class of the same name", function()
      local w = H.spawn(function()
        local loom = require "loom"
        local P = {}
        P.__index = P
        function P:norm2() return 10 * (self.x * self.x + self.y * self.y) end
        loom.registerClass("spec.Point", P)
        loom.parentPort:on("message", function(m)
          loom.parentPort:postMessage({ m:norm2(), m })
          loom.parentPort:close()
        end)
      end)
      local got
      w:on("message", function(m) got = m end)
      w:postMessage(setmetatable({ x = 1, y = 2 }, Point))
      H.run()
      assert.are.equal(50, got[1])
      assert.are.equal(Point, getmetatable(got[2]))
    end)

    it("fail as a messageerror where the class is not registered", function()
      local w = H.spawn([[
        local loom = require "loom"
        loom.parentPort:on("message", function() end)
        loom.parentPort:on("messageerror", function(e)
          loom.parentPort:postMessage(e)
          loom.parentPort:close()
        end)]], { eval = true })
      local got
      w:on("message", function(m) got = m end)
      w:postMessage(setmetatable({ x = 1, y = 2 }, Point))
      H.run()
      assert.matches("class 'spec.Point' is not registered", got, 1, true)
    end)

    it("fail as a messageerror in the parent where only the worker registered the class", function()
      local w = H.spawn(function()
        local loom = require "loom"
        local P = {}
        P.__index = P
        loom.registerClass("spec.WorkerOnly", P)
        local port = loom.parentPort
        local function onmsg(m)
          port:postMessage("still running, got " .. m)
          port:off("message", onmsg)
        end
        port:on("message", onmsg)
        port:postMessage(setmetatable({ x = 1 }, P))
        port:postMessage("after the instance")
      end)
      local events = {}
      w:on("messageerror", function(e)
        events[#events + 1] = { "messageerror", e }
        w:postMessage("ping")
      end)
      w:on("message", function(m) events[#events + 1] = { "message", m } end)
      H.run()
      assert.are.equal(3, #events)
      assert.are.equal("messageerror", events[1][1])
      assert.are.equal("string", type(events[1][2]))
      assert.matches("class 'spec.WorkerOnly' is not registered", events[1][2], 1, true)
      assert.are.same({ "message", "after the instance" }, events[2])
      assert.are.same({ "message", "still running, got ping" }, events[3])
      assert.are.same({ true, 0 }, { H.exited(w) })
    end)

    it("a name registered again points at the new metatable only", function()
      local A, B = {}, {}
      loom.registerClass("spec.Renamed", A)
      loom.registerClass("spec.Renamed", B)
      assert.is_nil(getmetatable(loom.clone(setmetatable({}, A))))
      assert.are.equal(B, getmetatable(loom.clone(setmetatable({}, B))))
    end)

    it("reject bad names and metatables", function()
      local function fails(pattern, ...)
        local ok, err = pcall(loom.registerClass, ...)
        assert.is_false(ok)
        assert.matches(pattern, err, 1, true)
      end
      fails("class name must be 1 to 255 bytes", "", {})
      fails("class name must be 1 to 255 bytes", string.rep("x", 256), {})
      fails("bad argument #2", "x", 5)
      fails("table expected, got number", "x", 5)
      fails("string expected, got nil", nil, {})
    end)
  end)

  describe("through the workerData option", function()
    it("gives the worker a clone of workerData", function()
      local shared = { 1 }
      local data = { n = math.mininteger, f = -0.0, s = BINARY, a = shared, b = shared,
                     fn = function() return "called" end }
      data.self = data
      local got = H.spawn(function()
        local loom = require "loom"
        local d = loom.workerData
        loom.parentPort:postMessage({
          n = d.n, negzero = 1 / d.f == -math.huge, s = d.s,
          cycle = d.self == d, shared = d.a == d.b, called = d.fn(),
        })
      end, { workerData = data })
      local r
      got:on("message", function(m) r = m end)
      H.run()
      assert.are.same({ n = math.mininteger, negzero = true, s = BINARY,
                        cycle = true, shared = true, called = "called" }, r)
    end)

    it("is nil in a worker spawned without it", function()
      local r = H.inworker(function()
        local loom = require "loom"
        loom.parentPort:postMessage({ type(loom.workerData) })
      end)
      assert.are.same({ "nil" }, r)
    end)

    it("is cloned at spawn: later changes are not seen", function()
      local data = { v = 1 }
      local w = H.spawn(function()
        local loom = require "loom"
        loom.parentPort:once("message", function()   -- sent after the change
          loom.parentPort:postMessage(loom.workerData.v)
        end)
      end, { workerData = data })
      data.v = 2
      assert.is_true(w:postMessage("changed"))
      local got
      w:on("message", function(m) got = m end)
      H.run()
      assert.are.equal(1, got)
    end)

    it("raises at spawn naming the path under workerData", function()
      local ok, err = pcall(loom.Worker, function() end,
                            { workerData = { items = { 1, 2, { handle = io.stdout } } } })
      assert.is_false(ok)
      assert.matches("cannot clone workerData.items[3].handle: userdata", err, 1, true)
      assert.are.equal(0, H.stats().children)
      assert.are.equal(0, H.stats().holds)
    end)

    it("raises at spawn for workerData nested beyond the depth bound", function()
      local t = {}
      local cur = t
      for _ = 1, 1000 do cur[1] = {}; cur = cur[1] end
      local ok, err = pcall(loom.Worker, function() end, { workerData = t })
      assert.is_false(ok)
      assert.matches("cannot clone workerData[1][1]", err, 1, true)
      assert.matches("nested deeper", err)
      assert.are.equal(0, H.stats().children)
    end)
  end)
end)
