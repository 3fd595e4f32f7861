-- The examples a newcomer runs first (examples/*.lua) keep working.
local H = require "helper"

local function run_example(name, ...)
  local args = { ... }
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = ("%q"):format(a) end
  return H.run_script(([[
    arg = { [0] = %q, %s }
    dofile(arg[0])
  ]]):format(H.dir .. "/../examples/" .. name, table.concat(quoted, ", ")), 60)
end

describe("examples", function()
  it("demo.lua counts primes with workers and agrees with one thread", function()
    if H.no_fork(pending) then return end
    local out = run_example("demo.lua", "300000")
    assert.matches("ok: the workers agree", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("primes.lua counts primes with a pool and draws its progress", function()
    if H.no_fork(pending) then return end
    local out = run_example("primes.lua", "1000000", "2")
    assert.matches("ok: the count is pi(1000000) = 78498", out, 1, true)
    assert.matches("100%", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("trace.lua traces the primes pool and draws the timeline", function()
    if H.no_fork(pending) then return end
    local json = os.tmpname()
    local out = run_example("trace.lua", "1000000", "2", json)
    local svg = json .. ".svg"
    os.remove(json)
    local f = io.open(svg)
    local s = f and f:read("a") or ""
    if f then f:close() end
    os.remove(svg)
    assert.matches("ok: the count is pi(1000000) = 78498", out, 1, true)
    assert.matches("tasks: 10 queued, 10 run, 0 failed", out, 1, true)
    assert.matches("ok: every task was queued and run", out, 1, true)
    assert.matches("rc=0", out, 1, true)
    assert.matches("^<svg ", s)
    assert.matches("main [0]", s, 1, true)
  end)

  it("histogram.lua fills shared bins with atomic adds from several workers", function()
    if H.no_fork(pending) then return end
    local out = run_example("histogram.lua", "100000", "2")
    assert.matches("ok: 100000 samples in 40 bins from 2 workers, as one thread counts them", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("lookup.lua prices orders in workers from one frozen table", function()
    if H.no_fork(pending) then return end
    local out = run_example("lookup.lua", "3000", "2")
    assert.matches("20000 orders priced by 2 workers from one frozen table of 3000 items", out, 1, true)
    assert.matches("ok: every worker's total is the one thread's", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("async.lua maps in parallel with futures", function()
    if H.no_fork(pending) then return end
    local out = run_example("async.lua")
    assert.matches("fib(27) = 196418", out, 1, true)
    assert.matches("\nok\n", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("pipeline.lua counts words through Channels, a transferred port and select", function()
    if H.no_fork(pending) then return end
    local out = run_example("pipeline.lua", "8000")
    assert.matches("24000 words in 8000 lines, counted by 4 workers", out, 1, true)
    assert.matches("reporter: ", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("select.lua serves three sensors' Channels from one thread with loom.select", function()
    if H.no_fork(pending) then return end
    local out = run_example("select.lua", "1000")
    assert.matches("slow       10 readings, in order", out, 1, true)
    assert.matches("ok: 10110 readings from 3 sensors in", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("deadline.lua awaits pool tasks and timers in one coroutine, aborting the late ones", function()
    if H.no_fork(pending) then return end
    -- the deadline leaves room for a slow (instrumented) build
    local out = run_example("deadline.lua", "6", H.instrumented and "3000" or "300")
    assert.matches("job  4:  18 ms of work -> 16", out, 1, true)
    assert.matches("job  5: timeout", out, 1, true)
    assert.matches("4 done, 2 past their deadline", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("progress.lua draws a bar from a shared counter and counts right", function()
    if H.no_fork(pending) then return end
    local out = run_example("progress.lua", "1000000")
    assert.matches("] 100%", out, 1, true)
    assert.matches("78498 primes below 1000000, counted by", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)
end)
