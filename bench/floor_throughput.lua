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
C.emit("throughput_floor", out)
