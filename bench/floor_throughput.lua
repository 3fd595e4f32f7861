-- The floor under c. throughput's sender: the same values as
-- bench/throughput.lua (the integer i, and {id = i, name = "item", tags =
-- {"a", "b"}}), the same counts (50,000 warm-up, then 1,000,000 measured),
-- on one thread with nothing sent:
--   build:           make(i) alone (the benchmark's own Lua work)
--   build_minencode: make(i), then loomfloor.minencode (bench/floor.c: the
--                    least an encoder must do, loom's format) = the floor
--   build_encode:    make(i), then loom's encoder into a reused buffer
-- A one-way stream can go no faster than its sender's build + encode, so
-- loom's one-way rate is measured against build_minencode.
--   busy_minencode:  build_minencode of the objects while another process
--                    builds the same tables on the other CPU, as a
--                    receiver decoding them does: two busy CPUs of a VM
--                    slow each other (a shared core or memory path), so
--                    this is the sender's floor when a receiver runs
--                    beside it (idle_minencode: the same without the
--                    neighbour, measured between, its reference).
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loomfloor = require "loomfloor"
local C = dofile(DIR .. "/lib/common.lua")
local now, check = C.now, C.check

local N = C.count(1000000, 100000)
local WARM = C.count(50000, 5000)

local function makeInt(i) return i end
local function makeObj(i) return { id = i, name = "item", tags = { "a", "b" } } end

local minencode, encode = loomfloor.minencode, loomfloor.encode
local function sink(v) return v end

-- msgs/s of n rounds of use(make(i)), i = 0 .. n-1
local function rate(n, make, use)
  local t0 = now()
  local bytes = 0
  for i = 0, n - 1 do
    local b = use(make(i))
    if i == 0 then bytes = b end
  end
  local ms = now() - t0
  return { messages = n, total_ms = ms, msgs_per_s = n / (ms / 1000), first_bytes = bytes }
end

local out = {}
for _, v in ipairs({ { "int", makeInt }, { "object", makeObj } }) do
  local name, make = v[1], v[2]
  local r = {}
  for _, u in ipairs({ { "build", sink }, { "build_minencode", minencode },
                       { "build_encode", encode } }) do
    rate(WARM, make, u[2])
    r[u[1]] = rate(N, make, u[2])
  end
  check(r.build_minencode.first_bytes == r.build_encode.first_bytes, "same bytes")
  out[name] = r
end
-- the same while a neighbour process builds the tables on the other CPU
-- (it runs until the flag file is gone), in three pairs with the idle
-- floor measured again between them, as the machine drifts: the median
-- of each
local function neighbour ()
  local flag = os.tmpname()
  local lua = arg and arg[-1] or "lua5.4"
  local f = assert(io.open(flag, "w")); f:close()
  local code = ("local n, t, f = 0 while true do t = {id = n, name = 'item', tags = {'a', 'b'}} " ..
                "n = n + 1 if n %% 20000 == 0 then f = io.open(%q) if not f then break end f:close() end end")
               :format(flag)
  local p = assert(io.popen(("%q -e %q"):format(lua, code), "r"))
  local t0 = now()
  while now() - t0 < 100 do end          -- let it start on the other CPU
  return function() os.remove(flag); p:close() end
end
do
  local idle, busy = {}, {}
  for k = 1, 3 do
    idle[k] = rate(N, makeObj, minencode)
    local stop = neighbour()
    rate(WARM, makeObj, minencode)
    busy[k] = rate(N, makeObj, minencode)
    stop()
  end
  local function median (t)
    table.sort(t, function(x, y) return x.msgs_per_s < y.msgs_per_s end)
    return t[2]
  end
  out.object.idle_minencode, out.object.busy_minencode = median(idle), median(busy)
end
C.emit("throughput_floor", out)
