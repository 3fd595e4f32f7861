-- The bad-input sweep (the reliability issue): every public function and
-- method, called with every bad value in every argument position, with
-- wrong selves and on closed objects, ends in a defined result or in a
-- string error that names the function and the argument.  The table and
-- the engine are spec/sweep_lib.lua; the spec fails when loom has a public
-- name the table does not cover, so the sweep cannot fall behind.
local H = require "helper"
local loom = require "loom"
local S = require "sweep_lib"

local calls = 0          -- every call tried, wherever it ran
local where = {}         -- and by where they ran
local current = "?"

local function check(findings, n, counted)
  if not counted then calls = calls + n end
  where[current] = (where[current] or 0) + (n or 0)
  if #findings == 0 then return end
  local shown = {}
  for i = 1, math.min(#findings, 60) do shown[i] = findings[i] end
  if #findings > 60 then shown[#shown + 1] = ("... and %d more"):format(#findings - 60) end
  error(("%d finding(s) in %d calls:\n  "):format(#findings, n) .. table.concat(shown, "\n  "), 0)
end

-- run entries in this process, collect findings
local function inprocess(list)
  local findings = {}
  local before = S.calls
  for _, e in ipairs(list) do
    S.run_entry(e, function(where, p) findings[#findings + 1] = where .. ": " .. p end)
  end
  return findings, S.calls - before
end

describe("bad-input sweep", function()
  S.bound_ms = H.ms(2000)
  before_each(H.before_each)
  after_each(H.after_each)
  setup(function() S.prepare(); S.watchdog = true end)
  teardown(function()
    loom.onUnhandledRejection(nil)
    local parts = {}
    for _, k in ipairs({ "main thread", "child process", "worker", "fresh worker", "exit child" }) do
      if where[k] then parts[#parts + 1] = ("%d %s"):format(where[k], k) end
    end
    io.stderr:write(("\nsweep: %d calls tried (%s)\n"):format(calls, table.concat(parts, ", ")))
  end)

  it("covers every public name loom has (main thread and worker)", function()
    local w = S.liveworker()
    local samples = { w, loom.AbortController(), loom.setTimeout(S.noop, 60000),
                      loom.setImmediate(S.noop), loom.Future.new(), loom.AbortSignal.timeout(60000),
                      loom.Channel(), loom.BroadcastChannel("sweep-surface"):unref(),
                      loom.SharedBuffer(4), loom.SharedBuffer(4):view("int32"), loom.freeze({}),
                      S.newpool() }
    local found = S.surface(samples)
    for i = 3, 4 do samples[i]:close() end
    assert.is_true(S.stoppool(samples[#samples], H.ms(5000)))
    w:postMessage("sweep:end")
    assert.is_true(S.stopworker(w, H.ms(5000)))
    -- and what a worker sees
    local names = H.inworker(function()
      local S = require "sweep_lib"
      local list = {}
      for k in pairs(S.surface({})) do list[#list + 1] = k end
      require("loom").parentPort:postMessage(list)
    end)
    for _, k in ipairs(names) do found[k] = true end
    local missing, stale = {}, {}
    for k in pairs(found) do if not S.byname[k] then missing[#missing + 1] = k end end
    for k in pairs(S.byname) do if not found[k] then stale[#stale + 1] = k end end
    table.sort(missing)
    table.sort(stale)
    assert(#missing == 0, "public names the sweep does not cover: " .. table.concat(missing, ", "))
    assert(#stale == 0, "sweep entries for names loom does not have: " .. table.concat(stale, ", "))
  end)

  describe("on the main thread", function()
    for _, e in ipairs(S.entries_where("main")) do
      it(S.label(e), function() current = "main thread"; check(inprocess({ e })) end)
    end
  end)

  describe("in a child process (a crash fails one test)", function()
    for _, e in ipairs(S.entries_where("child")) do
      it(S.label(e), function()
        current = "child process"
        if not H.can_fork then           -- TSan: in this process
          return check(inprocess({ e }))
        end
        local out = H.run_script(("require('sweep_lib').child_main(%q, %s)")
          :format(e.key, e.variant and ("%q"):format(e.variant) or "nil"), 60 * H.scale)
        check(S.parse_child(out, S.label(e)))
      end)
    end
  end)

  -- one worker sweeps them all (S.worker_batch), the first test to need
  -- its report starts it; each entry is then one test
  describe("in a worker: its parentPort (live, then closed) and the functions loom replaces there", function()
    local batch            -- { findings = { [key] = {...} }, calls = n } | { failed = why }
    local function run_batch()
      local path = os.tmpname()
      local w = H.spawn(function(p) require("sweep_lib").worker_batch(p) end, { argv = { path } })
      local err
      w:on("error", function(e, tb) err = tostring(e) .. "\n" .. tostring(tb) end)
      local ok, code = pcall(H.join, w, 60000)
      local f = io.open(path)
      local out = f and f:read("a") or ""
      if f then f:close() end
      os.remove(path)
      if not ok or err or code ~= 0 or not out:find("DONE", 1, true) then
        return { failed = ("the worker did not finish its sweep (exit %s): %s %s"):format(
          tostring(code), tostring(err or ""), ok and "" or tostring(code)) }
      end
      local b = { findings = {}, calls = 0, counts = {} }
      for line in out:gmatch("[^\n]+") do
        local x = line:match("^FINDING\t(.*)$")
        if x then
          local key = x:match("^([^,(]+)"):gsub("%s+$", "")
          b.findings[key] = b.findings[key] or {}
          table.insert(b.findings[key], x)
        end
        b.calls = tonumber(line:match("^CALLS\t(%d+)$")) or b.calls
        local k, n = line:match("^COUNT\t([^\t]+)\t(%d+)$")
        if k then b.counts[k] = tonumber(n) end
      end
      calls = calls + b.calls
      return b
    end
    local seen = {}
    for _, e in ipairs(S.entries_where("worker")) do
      if not seen[e.key] then
        seen[e.key] = true
        it(e.key, function()
          current = "worker"
          batch = batch or run_batch()
          assert(not batch.failed, batch.failed)
          assert((batch.counts[e.key] or 0) > 0, "no call of " .. e.key .. " was made")
          check(batch.findings[e.key] or {}, batch.counts[e.key], true)   -- counted by run_batch
        end)
      end
    end
  end)

  describe("calls that block or end the thread, one fresh worker each", function()
    for _, e in ipairs(S.entries_where("fresh")) do
      it(S.label(e), function() current = "fresh worker"; check(S.run_fresh(e, H.ms(1000))) end)
    end
  end)

  describe("loom.exit on the main thread, one child process each", function()
    for _, e in ipairs(S.entries_where("exit")) do
      it(S.label(e), function()
        if H.no_fork(pending) then return end
        current = "exit child"
        check(S.run_exit(e, function(script) return H.run_script(script, 20) end))
      end)
    end
  end)
end)
