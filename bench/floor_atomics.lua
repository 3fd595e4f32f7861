-- The floor under e. atomics: the add workloads of bench/atomics.lua (2
-- workers x 10M adds on one int32 cell, then 1 worker), the same workers,
-- loop, start and checks, but each add is loomfloor.add (bench/floor.c):
-- one Lua call of a C function that adds at a raw address and checks
-- nothing.  No Lua binding of an atomic add can be cheaper than that call;
-- the distance from it to Node's JIT-inlined Atomics.add is the part of the
-- gap loom cannot close.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
assert(loadfile(DIR .. "/atomics.lua"))("floor")
