-- Shared helpers for the loom benchmarks (main thread only).
-- The Lua counterpart of bench/node/lib/common.js in the Node reference:
-- same percentile rule (nearest rank), same summary keys, same rounding,
-- one JSON line on stdout per benchmark.
local loom = require "loom"
local cjson = require "cjson"

cjson.encode_invalid_numbers("null")   -- NaN / inf summaries print as null
cjson.encode_sparse_array(true)

local M = {}

M.now = loom.now   -- monotonic ms (float), as performance.now()

-- LOOM_BENCH_QUICK=1 cuts the counts for a smoke run; the numbers are then
-- not comparable with the full reference runs.
M.quick = (os.getenv("LOOM_BENCH_QUICK") or "") ~= "" and os.getenv("LOOM_BENCH_QUICK") ~= "0"

-- pick the full count or the quick one
function M.count(full, quick)
  if M.quick then return quick end
  return full
end

-- Percentile by nearest rank on a sorted list; p in [0, 100].
function M.percentile(sorted, p)
  local n = #sorted
  if n == 0 then return 0 / 0 end
  local rank = math.ceil((p / 100) * n)
  return sorted[math.min(n, math.max(1, rank))]
end

function M.summarize(values)
  local a = table.move(values, 1, #values, 1, {})
  table.sort(a)
  local n, sum = #a, 0
  for i = 1, n do sum = sum + a[i] end
  local pct = M.percentile
  return {
    n = n, mean = sum / n, min = a[1],
    p50 = pct(a, 50), p90 = pct(a, 90), p99 = pct(a, 99), p999 = pct(a, 99.9),
    max = a[n],
  }
end

function M.median(values)
  local a = table.move(values, 1, #values, 1, {})
  table.sort(a)
  local m = #a // 2
  if #a % 2 == 1 then return a[m + 1] end
  return (a[m] + a[m + 1]) / 2
end

-- Round the floats of a (nested) result table to `digits` decimals.
function M.round(v, digits)
  digits = digits or 3
  if math.type(v) == "float" then
    if v ~= v or v == math.huge or v == -math.huge or v == math.floor(v) then return v end
    local f = 10 ^ digits
    return math.floor(v * f + 0.5) / f
  elseif type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = M.round(x, digits) end
    return out
  end
  return v
end

local function cpumodel()
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("model name%s*:%s*([^\n]*)")
end

function M.meta(bench)
  return {
    bench = bench,
    lua = _VERSION,
    loom = loom._VERSION,
    cpus = loom.availableParallelism(),
    cpu_model = cpumodel(),
    date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    quick = M.quick,
  }
end

-- Print exactly one JSON line on stdout.
function M.emit(bench, results)
  local out = M.meta(bench)
  out.results = M.round(results)
  io.stdout:write(cjson.encode(out), "\n")
  io.stdout:flush()
end

function M.check(cond, msg)
  if not cond then
    io.stderr:write("CHECK FAILED: ", msg, "\n")
    os.exit(2)
  end
end

-- VmRSS of this process, in bytes (what Node's process.memoryUsage.rss() reads).
function M.rss()
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)%s*kB")) * 1024
end

-- A Future settled after `ms`, driven by the event loop (Node's sleep()).
function M.sleep(ms)
  local f = loom.Future.new()
  loom.setTimeout(function() f:resolve(true) end, ms)
  return f
end

-- A Future of the next `event` of emitter `e` (Node's events.once()).
-- An 'error' event rejects it.
function M.once(e, event)
  local f = loom.Future.new()
  local onerr
  local function onev(...)
    e:off("error", onerr)
    f:resolve((...))
  end
  onerr = function(err, tb)
    e:off(event, onev)
    f:reject(err, tb)
  end
  e:once(event, onev)
  e:once("error", onerr)
  return f
end

return M
