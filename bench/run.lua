-- Benchmark driver: loom against Node.js worker_threads, measured in the same
-- invocation.
--
--   lua5.4 bench/run.lua [--quick] [--no-node] [workload ...]
--
-- workloads: spawn pingpong throughput bigclone channels atomics cpu pool
-- (default: all, in that order).  For each workload, the loom script (bench/<name>.lua) and then the
-- Node reference (<name>.js, from a copy of the reference directory in a temp
-- dir) run as separate processes; each prints one JSON line.  The table shows
-- both and the ratio "how many times better loom is" (node/loom for times and
-- sizes, loom/node for rates), against the targets of the issue.  pingpong
-- also runs its floor (bench/floor_pingpong.lua, over build/loomfloor.so)
-- between loom and Node, and shows loom against it as loom/floor.  The loom
-- build (lua/loom, build/loom and build/loomfloor.so) is copied at the start
-- and every loom process loads that copy, so a rebuild during the run cannot
-- mix builds.
--
-- Environment:
--   LOOM_BENCH_QUICK=1     same as --quick: cut counts for a smoke run (the
--                          Node copies get the same cuts; numbers are then
--                          NOT comparable with the reference results)
--   LOOM_BENCH_NODE_DIR    the Node reference (default /work/shared/bench/node)
--   LOOM_BENCH_TIMEOUT     seconds per process before it counts as hung (900)
--   LUA_PATH / LUA_CPATH   passed on; when unset, lua/ and build/ of this
--                          checkout are used
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local cjson = require "cjson"

local WORKLOADS = { "spawn", "pingpong", "throughput", "bigclone", "channels", "atomics",
                    "cpu", "pool" }
local NODE_DIR = os.getenv("LOOM_BENCH_NODE_DIR") or "/work/shared/bench/node"
local TIMEOUT = tonumber(os.getenv("LOOM_BENCH_TIMEOUT")) or 900
local LUA = arg[-1] or "lua5.4"

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function usage(msg)
  if msg then io.stderr:write(msg, "\n") end
  io.stderr:write("usage: lua5.4 bench/run.lua [--quick] [--no-node] [",
                  table.concat(WORKLOADS, "|"), " ...]\n")
  os.exit(msg and 1 or 0)
end

---------------------------------------------------------------------------
-- Arguments
---------------------------------------------------------------------------
local quickenv = os.getenv("LOOM_BENCH_QUICK")
local quick = quickenv ~= nil and quickenv ~= "" and quickenv ~= "0"
local withNode = true
local selected, known = {}, {}
for _, w in ipairs(WORKLOADS) do known[w] = true end
for _, a in ipairs(arg) do
  if a == "--quick" then quick = true
  elseif a == "--no-node" then withNode = false
  elseif a == "-h" or a == "--help" then usage()
  elseif known[a] then selected[a] = true
  else usage("unknown argument: " .. a) end
end
local todo = {}
for _, w in ipairs(WORKLOADS) do
  if next(selected) == nil or selected[w] then todo[#todo + 1] = w end
end

---------------------------------------------------------------------------
-- Running one benchmark process
---------------------------------------------------------------------------
local function readfile(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

-- Run a shell command; return the decoded JSON line it printed, or nil and
-- why not.  stderr goes straight to the terminal.
local function runjson(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  local line
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then line = l end
  end
  if not ok then
    local why = how == "exit" and ("exit code " .. code) or ("killed by signal " .. tostring(code))
    if how == "exit" and code == 124 then why = "timed out after " .. TIMEOUT .. " s (hang?)" end
    return nil, why, out
  end
  if not line then return nil, "printed no JSON line", out end
  local dok, v = pcall(cjson.decode, line)
  if not dok then return nil, "bad JSON: " .. tostring(v), out end
  return v, line
end

local function envor(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then v = default end
  return v
end

local ROOT = DIR .. "/.."
local CHILD_PATH = envor("LUA_PATH", ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;")
local CHILD_CPATH = envor("LUA_CPATH", ROOT .. "/build/?.so;;")
local TIMEOUT_CMD = ("timeout -k 10 %d "):format(TIMEOUT)

-- one temp dir per invocation: the Node copy, the loom snapshot, the results
local tmpdir
do
  local t = os.tmpname()
  os.remove(t)
  tmpdir = t .. "-loom-bench"
  assert(os.execute("mkdir -p " .. shquote(tmpdir)), "cannot create " .. tmpdir)
end

-- The loom that is measured: a copy of the loom module directories (Lua
-- half and core.so) and of the floor module (loomfloor.so, when built)
-- taken at the start, searched first by every child, so a rebuild of the
-- tree while the suite runs cannot mix two builds.
local LUA_ENV
local FLOOR_SO        -- the loomfloor.so found at the start, or nil
local function snapshot()
  local so = package.searchpath("loom.core", CHILD_CPATH)
  local init = package.searchpath("loom", CHILD_PATH)
  if not so or not init then error("loom not found on LUA_PATH / LUA_CPATH (run make build)") end
  local snap = tmpdir .. "/loom-snapshot"
  local sodir, initdir = so:match("^(.*)/[^/]*$"), init:match("^(.*)/[^/]*$")
  assert(os.execute(("mkdir -p %s/c %s/lua && cp -r %s %s/c/loom && cp -r %s %s/lua/loom"):format(
    shquote(snap), shquote(snap), shquote(sodir), shquote(snap), shquote(initdir), shquote(snap))),
    "cannot snapshot the loom build")
  FLOOR_SO = package.searchpath("loomfloor", CHILD_CPATH)
  if FLOOR_SO then
    assert(os.execute(("cp %s %s/c/loomfloor.so"):format(shquote(FLOOR_SO), shquote(snap))),
           "cannot snapshot " .. FLOOR_SO)
  end
  LUA_ENV = table.concat({
    "LUA_PATH=" .. shquote(snap .. "/lua/?.lua;" .. snap .. "/lua/?/init.lua;" .. CHILD_PATH),
    "LUA_CPATH=" .. shquote(snap .. "/c/?.so;" .. CHILD_CPATH),
    "LOOM_BENCH_QUICK=" .. (quick and "1" or "0"),
  }, " ")
end

local function runloom(name)
  if name:match("^floor_") and not FLOOR_SO then
    return nil, "loomfloor.so not found on LUA_CPATH (make build builds it)"
  end
  return runjson(("%s%s %s %s"):format(LUA_ENV .. " ", TIMEOUT_CMD, shquote(LUA),
                                       shquote(DIR .. "/" .. name .. ".lua")))
end

---------------------------------------------------------------------------
-- The Node reference, copied to a temp dir (it must not be written to).
-- Quick mode cuts the same counts in the copies; each cut must apply.
---------------------------------------------------------------------------
local QUICK_NODE = {
  spawn = {
    { "sequential(50, 3, false)", "sequential(10, 1, false)", 1 },
    { "sequential(50, 3, true)", "sequential(10, 1, true)", 1 },
    { "concurrent(8, 10, 1)", "concurrent(8, 3, 1)", 1 },
    { "seq.first_echo_ms.n === 50", "seq.first_echo_ms.n === 10", 1 },
  },
  pingpong = {
    { "const WARM = 10_000;", "const WARM = 1_000;", 1 },
    { "const N = 100_000;", "const N = 10_000;", 1 },
  },
  throughput = {
    { "const N = 1_000_000;", "const N = 100_000;", 1 },
    { "const WARM = 50_000;", "const WARM = 5_000;", 1 },
  },
  bigclone = {
    { "timeIt(2, 10,", "timeIt(1, 3,", 5 },
    { "timeIt(2, 20,", "timeIt(1, 5,", 3 },
  },
  atomics = {
    { "addTest(2, 10_000_000)", "addTest(2, 1_000_000)", 1 },
    { "addTest(1, 10_000_000)", "addTest(1, 1_000_000)", 1 },
    { "pingPong(false, 100_000, 1_000)", "pingPong(false, 10_000, 100)", 1 },
    { "pingPong(true, 100_000, 1_000)", "pingPong(true, 10_000, 100)", 1 },
    { "waitAsyncPingPong(20_000, 1_000)", "waitAsyncPingPong(2_000, 100)", 1 },
  },
  cpu = {
    { "const LIMIT = 20_000_000;", "const LIMIT = 2_000_000;", 1 },
    { "const EXPECTED = 1_270_607;", "const EXPECTED = 148_933;", 1 },
  },
  pool = {
    { "const N_TINY = 100_000;", "const N_TINY = 10_000;", 1 },
    { "const N_SPIN = 1_000;", "const N_SPIN = 200;", 1 },
  },
}

-- pool.js needs Piscina (the reference's package.json): installed with npm
-- in the temp copy when the reference has no node_modules
local function npm_install(nodedir)
  local f = io.open(nodedir .. "/node_modules/piscina/package.json", "r")
  if f then f:close(); return true end
  io.stderr:write("  npm install (piscina) in the temp copy of the Node reference ...\n")
  local cmd = ("cd %s && %s >/dev/null 2>&1"):format(shquote(nodedir),
    "(npm ci --no-audit --no-fund || npm install --no-audit --no-fund)")
  return os.execute(cmd) and true or false
end

local function plain(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local function setup_node()
  local nodedir = tmpdir .. "/node"
  local ok = os.execute(("mkdir -p %s && cp -r %s/. %s"):format(
    shquote(nodedir), shquote(NODE_DIR), shquote(nodedir)))
  if not ok then error("cannot copy the Node reference from " .. NODE_DIR) end
  -- loom's own Node scripts (workloads the reference has not), beside its lib/
  ok = os.execute(("cp %s/node/*.js %s"):format(shquote(DIR), shquote(nodedir)))
  if not ok then error("cannot copy bench/node/*.js") end
  if quick then
    for name, cuts in pairs(QUICK_NODE) do
      local path = nodedir .. "/" .. name .. ".js"
      local src = assert(readfile(path), "missing " .. path)
      for _, c in ipairs(cuts) do
        local n
        src, n = src:gsub(plain(c[1]), (c[2]:gsub("%%", "%%%%")))
        if n ~= c[3] then
          error(("quick mode: %s.js: expected %d of %q, found %d (reference changed?)")
                :format(name, c[3], c[1], n))
        end
      end
      writefile(path, src)
    end
  end
  return nodedir
end

local function runnode(nodedir, name)
  if name == "pool" and not npm_install(nodedir) then
    return nil, "npm install of piscina failed (network?)"
  end
  return runjson(("cd %s && %snode %s.js"):format(shquote(nodedir), TIMEOUT_CMD, name))
end

---------------------------------------------------------------------------
-- The table
---------------------------------------------------------------------------
-- kind: "time" and "size" are better smaller (ratio node/loom); "rate" is
-- better larger (ratio loom/node).  loom/node: paths into the results.
-- ref = "cjson": the reference is a loom-side number (lua-cjson in the same
-- loom process), not Node.
-- ref = "floor": the reference is the floor's result (FLOORS below) at
-- refpath; the ratio is loom/floor, how many times slower than the floor
-- loom is, and `within` is its target (met when ratio <= within).
local ROWS = {
  spawn = {
    { "spawn -> online, mean", "ms", "time", "sequential_file.online_ms.mean" },
    { "spawn -> first echo, mean", "ms", "time", "sequential_file.first_echo_ms.mean", target = 100 },
    { "spawn -> first echo, p50", "ms", "time", "sequential_file.first_echo_ms.p50", target = 100 },
    { "spawn -> first echo, p50 vs the floor (f)", "ms", "time", "sequential_file.first_echo_ms.p50",
      ref = "floor", refpath = "sequential.up_ms.p50", within = 1.2 },
    { "spawn -> first echo -> exit, mean vs the floor (f)", "ms", "time",
      "sequential_file.echo_exit_ms.mean", ref = "floor", refpath = "sequential.joined_ms.mean" },
    { "spawn (eval) -> first echo, mean", "ms", "time", "sequential_eval.first_echo_ms.mean" },
    { "terminate -> exit, mean", "ms", "time", "sequential_file.terminate_ms.mean" },
    { "terminate -> exit, objects of an exited worker kept, vs without (l)", "ms", "time",
      "sequential_kept.terminate_ms.mean", ref = "loom", refpath = "sequential_file.terminate_ms.mean" },
    { "spawn -> first echo -> exit, the same, vs without (l)", "ms", "time",
      "sequential_kept.echo_exit_ms.mean", ref = "loom", refpath = "sequential_file.echo_exit_ms.mean" },
    { "8 concurrent spawns -> all echoed, p50", "ms", "time", "concurrent_8.all_echoed_ms.p50" },
    { "RSS per idle worker (rss8-rss0)/8", "MiB", "size", "memory.per_worker_avg_of_8_mib", target = 30 },
    { "RSS per idle worker, marginal (rss8-rss1)/7", "MiB", "size",
      "memory.per_worker_marginal_2_to_8_mib", target = 30 },
    { "RSS of the bare process", "MiB", "size", "memory.rss_base_mib" },
  },
  pingpong = {
    { "round trip, mean", "us", "time", "mean_us" },
    { "round trip, p50", "us", "time", "latency_us.p50", target = 10 },
    { "round trip, p99", "us", "time", "latency_us.p99" },
    { "round trip, p99.9", "us", "time", "latency_us.p999" },
    { "round trip, p50 vs the floor (f)", "us", "time", "latency_us.p50",
      ref = "floor", refpath = "latency_us.p50", within = 1.3 },
    { "round trip, mean vs the floor (f)", "us", "time", "mean_us",
      ref = "floor", refpath = "mean_us" },
  },
  throughput = {
    { "integers one-way (post -> reply)", "msg/s", "rate", "int.msgs_per_s", target = 3 },
    { "small objects one-way (post -> reply)", "msg/s", "rate", "object.msgs_per_s", target = 3 },
    { "small objects one-way vs the sender's floor (f)", "msg/s", "rate", "object.msgs_per_s",
      ref = "floor", refpath = "object.build_minencode.msgs_per_s", within = 1.25 },
    { "small objects one-way vs the sender's floor, the other CPU busy (f)", "msg/s", "rate",
      "object.msgs_per_s", ref = "floor", refpath = "object.busy_minencode.msgs_per_s" },
    { "the machine: the sender's floor, the other CPU busy vs idle (F/f)", "msg/s", "rate",
      "object.busy_minencode.msgs_per_s", from = "floor", ref = "floor",
      refpath = "object.idle_minencode.msgs_per_s" },
    { "integers one-way vs the sender's floor (f)", "msg/s", "rate", "int.msgs_per_s",
      ref = "floor", refpath = "int.build_minencode.msgs_per_s" },
    { "objects: build + loom's encoder vs build + minimal encoder (F/f)", "msg/s", "rate",
      "object.build_encode.msgs_per_s", from = "floor", ref = "floor",
      refpath = "object.build_minencode.msgs_per_s" },
    { "the floor itself: objects built + minimally encoded (F)", "msg/s", "rate",
      "object.build_minencode.msgs_per_s", from = "floor", node = "object.msgs_per_s" },
    { "integers: post loop alone", "msg/s", "rate", "int.post_loop_msgs_per_s" },
    { "objects: post loop alone", "msg/s", "rate", "object.post_loop_msgs_per_s" },
  },
  bigclone = {
    { "100k-entry array round trip, p50", "ms", "time", "object.round_trip_ms.p50", target = 4 },
    { "100k round trip vs lua-cjson enc+dec (*)", "ms", "time", "object.round_trip_ms.p50",
      ref = "cjson", refpath = "object.local_cjson_encode_decode_ms.p50", target = 2 },
    { "100k round trip vs the overlapped floor (2 x building the array) (l)", "ms", "time",
      "object.round_trip_ms.p50", ref = "loom", refpath = "object.overlapped_floor_ms" },
    { "... as MB/s of JSON size", "MB/s", "rate", "object.round_trip_MBps_json",
      node = "object.round_trip_MBps_json" },
    { "100k-entry array one-way + ack, p50", "ms", "time", "object.one_way_ack_ms.p50" },
    { "loom.clone vs structuredClone, p50", "ms", "time", "object.local_loom_clone_ms.p50",
      node = "object.local_structuredClone_ms.p50" },
    { "cjson enc+dec vs JSON.stringify+parse, p50", "ms", "time",
      "object.local_cjson_encode_decode_ms.p50", node = "object.local_json_stringify_parse_ms.p50" },
    { "16 MiB copied, round trip, p50", "ms", "time", "string_16MiB.copy_round_trip_ms.p50",
      node = "arraybuffer_16MiB.copy_round_trip_ms.p50" },
    { "16 MiB copied, one-way + ack, p50", "ms", "time", "string_16MiB.copy_one_way_ack_ms.p50",
      node = "arraybuffer_16MiB.copy_one_way_ack_ms.p50" },
    { "16 MiB SharedBuffer handed over and back vs transfer round trip, p50", "ms", "time",
      "shared_16MiB.handover_round_trip_ms.p50", node = "arraybuffer_16MiB.transfer_round_trip_ms.p50" },
    { "100k frozen: send + read every entry vs copy + read (l)", "ms", "time",
      "object.frozen_send_read_all_ms.p50", ref = "loom", refpath = "object.copy_send_read_all_ms.p50" },
    { "100k frozen: send + read every entry vs copying round trip (l)", "ms", "time",
      "object.frozen_send_read_all_ms.p50", ref = "loom", refpath = "object.round_trip_ms.p50" },
    { "loom.freeze of the 100k array, once", "ms", "time", "object.freeze_once_ms", ref = "none" },
  },
  atomics = {
    { "2 workers x 10M add, same slot", "ops/s", "rate", "add_contended.ops_per_s", target = 0.75 },
    { "2 workers x 10M add vs the floor (f)", "ops/s", "rate", "add_contended.ops_per_s",
      ref = "floor", refpath = "add_contended.ops_per_s" },
    { "the floor itself: 2 x 10M adds at a raw address (F)", "ops/s", "rate",
      "add_contended.ops_per_s", from = "floor" },
    { "1 worker x 10M add", "ops/s", "rate", "add_uncontended.ops_per_s" },
    { "1 worker x 10M add vs the floor (f)", "ops/s", "rate", "add_uncontended.ops_per_s",
      ref = "floor", refpath = "add_uncontended.ops_per_s" },
    { "wait/notify ping-pong, mean", "us", "time", "wait_notify_pingpong.mean_us", target = 1 },
    { "wait/notify ping-pong, p50", "us", "time", "wait_notify_pingpong.latency_us.p50" },
    { "wait/notify ping-pong, p99", "us", "time", "wait_notify_pingpong.latency_us.p99" },
    { "spin (load loop) ping-pong, mean", "us", "time", "spin_pingpong.mean_us" },
    { "main waitAsync <-> worker wait, mean", "us", "time", "waitasync_pingpong.mean_us" },
    { "main waitAsync <-> worker wait, p50", "us", "time", "waitasync_pingpong.latency_us.p50" },
  },
}

ROWS.channels = {
  { "port pingpong worker<->worker, p50", "us", "time", "port_pingpong.latency_us.p50", target = 10 },
  { "port pingpong worker<->worker, mean", "us", "time", "port_pingpong.mean_us" },
  { "port one-way worker->worker, objects", "msg/s", "rate", "port_oneway.msgs_per_s" },
  { "Channel 2x2 vs Node's one-way port", "msg/s", "rate", "mpmc.msgs_per_s",
    node = "port_oneway.msgs_per_s", target = 2 },
  { "Channel 2x2 vs loom's one-way port (l)", "msg/s", "rate", "mpmc.msgs_per_s",
    ref = "loom", refpath = "port_oneway.msgs_per_s" },
  { "fan-out to 8 workers, 10 us tasks: efficiency", "", "rate", "fanout.efficiency",
    ref = "loom", refpath = "fanout.ideal_ms_is_1" },
}

-- f. cpu: the primes below 20M; loom with a pool of 100k-number blocks,
-- Node with plain workers (its best split: interleaved 100k blocks)
ROWS.cpu = {
  { "primes < 20M, 1 thread", "ms", "time", "n1.wall_ms" },
  { "primes < 20M, 2 threads (Node: interleaved blocks)", "ms", "time", "n2.wall_ms",
    node = "n2_interleaved.wall_ms" },
  { "speedup 1 -> 2 threads (Node: interleaved)", "x", "rate", "speedup", node = "speedup_interleaved" },
  { "speedup 1 -> 2 threads (target: 1.95x)", "x", "rate", "speedup",
    ref = "loom", refpath = "ideal_is_1", target = 1.95 },
  { "primes < 20M, 2 threads vs 2 plain threads, no pool (l)", "ms", "time", "n2.wall_ms",
    ref = "loom", refpath = "floor2.wall_ms" },
  { "the machine: 2 plain threads' speedup over 1 (l)", "x", "rate", "floor_speedup",
    ref = "loom", refpath = "ideal_is_1" },
}

-- g. pool: loom.Pool against Piscina 5 (minThreads = maxThreads = 2)
ROWS.pool = {
  { "100k tiny tasks vs Piscina (atomics sync)", "msg/s", "rate", "tiny.tasks_per_s",
    node = "tiny_sync.tasks_per_s", target = 10 },
  { "100k tiny tasks vs Piscina, concurrent 16", "msg/s", "rate", "tiny_c16.tasks_per_s",
    node = "tiny_sync_concurrent16.tasks_per_s" },
  { "100k tiny tasks vs raw Node workers, in flight 1", "msg/s", "rate", "tiny.tasks_per_s",
    node = "tiny_raw_inflight1.tasks_per_s" },
  { "100k tiny tasks vs raw Node workers, pipelined", "msg/s", "rate", "tiny.tasks_per_s",
    node = "tiny_raw_pipelined.tasks_per_s" },
  { "1000 x 1 ms tasks: efficiency vs Piscina", "", "rate", "spin_1ms.efficiency",
    node = "spin_1ms.efficiency" },
  { "1000 x 1 ms tasks: efficiency vs ideal", "", "rate", "spin_1ms.efficiency",
    ref = "loom", refpath = "ideal_is_1", target = 0.97 },
  { "1000 x 1 ms tasks: efficiency vs 2 plain threads, no pool (l)", "", "rate",
    "spin_1ms.efficiency", ref = "loom", refpath = "spin_floor.efficiency" },
  { "the machine: 2 plain threads' efficiency, 500 x 1 ms each (l)", "", "rate",
    "spin_floor.efficiency", ref = "loom", refpath = "ideal_is_1" },
  { "tiny tasks, 1 thread", "msg/s", "rate", "scaling.t1.tasks_per_s", ref = "loom",
    refpath = "scaling.t1.tasks_per_s" },
  { "tiny tasks, all cores vs 1 thread", "msg/s", "rate", "scaling.all.tasks_per_s",
    ref = "loom", refpath = "scaling.t1.tasks_per_s" },
}

-- floors: run after the loom script of the workload, before Node
local FLOORS = { pingpong = "floor_pingpong", atomics = "floor_atomics",
                 throughput = "floor_throughput", spawn = "floor_spawn" }

local function get(t, path)
  if t == nil then return nil end
  local v = t.results
  for k in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[k]
  end
  return v
end

-- four significant digits, with k/M for large rates
local function fmt(v, unit)
  if type(v) == "string" then return v end
  if type(v) ~= "number" then return "-" end
  local suffix = ""
  local persec = unit == "msg/s" or unit == "ops/s"
  if persec and math.abs(v) >= 1e6 then v, suffix = v / 1e6, " M"
  elseif persec and math.abs(v) >= 1e3 then v, suffix = v / 1e3, " k" end
  local s
  local a = math.abs(v)
  if a >= 1000 then s = ("%.0f"):format(v)
  elseif a >= 100 then s = ("%.1f"):format(v)
  elseif a >= 10 then s = ("%.2f"):format(v)
  elseif a >= 1 then s = ("%.3f"):format(v)
  else s = ("%.3f"):format(v) end
  return s .. suffix
end

local function ratio(kind, l, n)
  if type(l) ~= "number" or type(n) ~= "number" then return nil end
  if kind == "rate" then
    if n <= 0 then return nil end
    return l / n
  end
  if l <= 0 then return nil end
  return n / l
end

-- up: round up (for ratios with a "<=" target), else down
local function fmtratio(r, up)
  if r == nil then return "-" end
  -- enough digits that a ratio just under (over, if up) a target never
  -- prints as the target
  local round = up and math.ceil or math.floor
  if r >= 10 then return ("%.1fx"):format(round(r * 10) / 10) end
  return ("%.2fx"):format(round(r * 100) / 100)
end

local function render(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do
      local n = utf8.len(c) or #c
      if n > (widths[i] or 0) then widths[i] = n end
    end
  end
  local out = {}
  for j, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      local pad = (" "):rep(widths[i] - (utf8.len(c) or #c))
      cells[i] = i == 1 and c .. pad or pad .. c
    end
    out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
    if j == 1 then
      local sep = {}
      for i = 1, #widths do sep[i] = ("-"):rep(widths[i]) end
      out[#out + 1] = "|-" .. table.concat(sep, "-|-") .. "-|"
    end
  end
  return table.concat(out, "\n")
end

---------------------------------------------------------------------------
-- Which loom is measured: the files the children load, and the git state.
-- The tree may be rebuilt while the suite runs; that is reported.
---------------------------------------------------------------------------
local function shell(cmd)
  local p = io.popen(cmd .. " 2>/dev/null", "r")
  local s = p:read("a")
  p:close()
  return (s:gsub("%s+$", ""))
end

local function buildid()
  local so = package.searchpath("loom.core", CHILD_CPATH)
  local lua = package.searchpath("loom", CHILD_PATH)
  local function mtime(f)
    return f and shell("stat -c %y " .. shquote(f)):match("^(%S+ %d+:%d+:%d+)") or "?"
  end
  -- the git state of the checkout the Lua half comes from, if it is one
  local top = lua and shell("git -C " .. shquote(lua:match("^(.*)/[^/]*$"))
                            .. " rev-parse --show-toplevel") or ""
  local git, dirty = "", 0
  if top ~= "" then
    git = shell("git -C " .. shquote(top) .. " rev-parse --short HEAD")
    dirty = tonumber(shell("git -C " .. shquote(top) .. " status --porcelain -- core lua"
                           .. " CMakeLists.txt bench/floor.c bench/CMakeLists.txt"
                           .. " | wc -l")) or 0
  end
  return {
    so = so or "?", so_mtime = mtime(so),
    lua = lua or "?", lua_mtime = mtime(lua),
    git = git, dirty = dirty,
  }
end

local function describe(b)
  local git = b.git == "" and "not a git checkout"
              or "git " .. b.git .. (b.dirty > 0 and (" + uncommitted changes in " .. b.dirty
                                                       .. " core/lua/floor files") or "")
  return ("%s; %s (%s); %s (%s)"):format(git, b.so, b.so_mtime, b.lua, b.lua_mtime)
end

---------------------------------------------------------------------------
-- Main
---------------------------------------------------------------------------
local function loadavg()
  local s = readfile("/proc/loadavg")
  return s and s:match("^(%S+ %S+ %S+)") or "?"
end

local build0 = buildid()
snapshot()
local nodedir = withNode and setup_node() or nil
local rawpath = tmpdir .. "/results.jsonl"
local raw = assert(io.open(rawpath, "w"))

io.stderr:write(("loom bench: %s%s, load average %s\n"):format(
  table.concat(todo, " "), quick and " (QUICK mode)" or "", loadavg()))

local res, failures = {}, {}
local function record(who, name, v, why, out)
  if v then
    raw:write(why, "\n")
    raw:flush()
    res[who .. "." .. name] = v
  else
    failures[#failures + 1] = ("%s %s: %s"):format(who, name, why)
    io.stderr:write(("FAILED: %s %s: %s\n"):format(who, name, why))
    if out and out ~= "" then io.stderr:write(out, "\n") end
  end
end

for _, name in ipairs(todo) do
  io.stderr:write(("  loom %s ...\n"):format(name))
  local t0 = os.time()
  record("loom", name, runloom(name))
  io.stderr:write(("  loom %s: %d s\n"):format(name, os.time() - t0))
  if FLOORS[name] then
    io.stderr:write(("  floor %s ...\n"):format(name))
    t0 = os.time()
    record("floor", name, runloom(FLOORS[name]))
    io.stderr:write(("  floor %s: %d s\n"):format(name, os.time() - t0))
  end
  if nodedir then
    io.stderr:write(("  node %s ...\n"):format(name))
    t0 = os.time()
    record("node", name, runnode(nodedir, name))
    io.stderr:write(("  node %s: %d s\n"):format(name, os.time() - t0))
  end
end
raw:close()
local build1 = buildid()
-- keep only the results
os.execute("rm -rf " .. shquote(tmpdir .. "/loom-snapshot"))
if nodedir then os.execute("rm -rf " .. shquote(nodedir)) end

local rows = { { "metric", "unit", "loom", "node", "ratio", "target", "met?" } }
local footnote, floornote, loomnote = false, false, false
for _, name in ipairs(todo) do
  local L, N, F = res["loom." .. name], res["node." .. name], res["floor." .. name]
  rows[#rows + 1] = { "[" .. name .. "]", "", "", "", "", "", "" }
  for _, row in ipairs(ROWS[name]) do
    local label, unit, kind, lpath = row[1], row[2], row[3], row[4]
    local lv = get(row.from == "floor" and F or L, lpath)   -- (F): the floor against Node
    local nv, ncell, r, rcell, tcell
    local met = ""
    if row.ref == "floor" then
      floornote = true
      nv = get(F, row.refpath)
      ncell = F and fmt(nv, unit) .. " f" or "FAILED"
      r = ratio(kind, nv, lv)          -- loom/floor for times
      rcell = fmtratio(r, true)
      tcell = row.within and ("<= " .. row.within .. "x") or ""
      if row.within then met = r == nil and "?" or r <= row.within and "yes" or "NO" end
    else
      if row.ref == "cjson" then
        footnote = true
        nv = get(L, row.refpath)
        ncell = L and fmt(nv, unit) .. " *" or "FAILED"
      elseif row.ref == "loom" then
        loomnote = true
        nv = get(L, row.refpath)
        ncell = L and (nv and fmt(nv, unit) .. " l" or "1 (ideal) l") or "FAILED"
        if nv == nil then nv = 1 end
      elseif row.ref == "none" then
        nv, ncell = nil, ""
      else
        nv = get(N, row.node or lpath)
        ncell = not nodedir and "skipped" or N and fmt(nv, unit) or "FAILED"
      end
      r = ratio(kind, lv, nv)
      rcell = fmtratio(r)
      tcell = row.target and (">= " .. row.target .. "x") or ""
      if row.target then
        met = r == nil and "?" or r >= row.target and "yes" or "NO"
      end
    end
    local lsrc = row.from == "floor" and F or L
    rows[#rows + 1] = { label, unit, lsrc and fmt(lv, unit) or "FAILED", ncell, rcell, tcell, met }
  end
end

local function version(who)
  for _, name in ipairs(todo) do
    local v = res[who .. "." .. name]
    if v then return v end
  end
end
local lv, nv = version("loom"), version("node")
print(("loom bench, %s%s"):format(os.date("!%Y-%m-%d %H:%M:%S UTC"),
  quick and "   *** QUICK MODE: cut counts, not comparable with the reference ***" or ""))
print(("loom: %s on %s | node: %s (V8 %s, libuv %s) | %s cpus, %s | load average now %s")
  :format(lv and lv.loom or "?", lv and lv.lua or "?", nv and nv.node or "-",
          nv and nv.v8 or "-", nv and nv.uv or "-",
          lv and math.tointeger(lv.cpus) or "?",
          lv and lv.cpu_model or "?", loadavg()))
print("loom build (snapshot taken at the start): " .. describe(build0))
if describe(build1) ~= describe(build0) then
  print("note: the tree changed while the suite ran (the snapshot above was measured); now: "
        .. describe(build1))
end
print("ratio = how many times better loom is (node/loom for times and sizes, loom/node for rates)")
print()
print(render(rows))
if loomnote then
  print("(l) reference column = another loom figure of the same run (Channel against loom's "
        .. "own one-way port; fan-out against the ideal, 1; a frozen table against loom's "
        .. "copying path: the plain array posted, read, or echoed; spawn with objects of an exited "
        .. "worker kept against spawn without), not Node")
end
if footnote then
  print("(*) reference column = lua-cjson encode+decode of the same array in the loom "
        .. "process (p50), not Node")
end
if floornote then
  print("(f) reference column = the floor in this run (bench/floor_pingpong.lua: the same "
        .. "round trips between two Lua states")
  print("    through loom's codec over SPSC rings, both spinning; bench/floor_atomics.lua: "
        .. "the same add loops calling a C function")
  print("    that adds at a raw address and checks nothing; bench/floor_throughput.lua: "
        .. "the sender's own work, building each value")
  print("    and a minimal encoder writing loom's format; bench/floor_spawn.lua: a thread making "
        .. "a Lua state with its libraries and a loop), not Node; "
        .. "ratio = how many times slower than the floor loom is")
  print("(F) loom column = the floor itself, against Node: what no Lua binding can beat")
end
print()
if res["loom.pool"] or res["loom.cpu"] or res["loom.bigclone"] then
  print("rows marked l: against 1 (ideal), loom's own 1-thread figure (pool, cpu), or a figure"
        .. " of the same script (bigclone's overlapped floor)")
end
print("raw JSON lines: " .. rawpath)
if #failures > 0 then
  print("FAILURES:")
  for _, f in ipairs(failures) do print("  " .. f) end
  os.exit(1)
end
