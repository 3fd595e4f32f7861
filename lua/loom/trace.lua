-- loom.trace: the collector and the writer of loom's trace.
--
-- Every thread records its events into its own buffer in C (core/trace.c);
-- the thread that started tracing drains them all every `interval` ms (a
-- timer that does not keep the loop alive), and on stop, and hands each
-- batch to the callbacks of trace.on and to the file of trace.start.
--
-- The file is Chrome's Trace Event format (JSON object form): each event
-- is encoded by lua-cjson as it comes; the writer adds only the constant
-- punctuation around them (the opening '{"traceEvents":[', the commas,
-- and the closing '], ...}').  One track per thread (pid 1, tid = loom's
-- threadId + 1: Perfetto keeps tid 0 for the idle task), named by a
-- thread_name metadata event; durations are complete events ("X"), the
-- rest instants ("i"); a message's post and its delivery, and a task's
-- queueing and its run, are linked by flow events ("s" at the middle of
-- the first slice, "f" binding to the enclosing slice of the second).
--
-- The file is closed as valid JSON by trace.stop(), by os.exit (wrapped
-- while a file is open), and by the state's closing (an uncaught error
-- in the main chunk: lua.c closes the state after reporting it).
local core = require "loom.core"

local type, pairs, ipairs, pcall, tostring, error, setmetatable =
      type, pairs, ipairs, pcall, tostring, error, setmetatable

local M = {}

local INTERVAL = 50          -- ms between two drains

local S = {
  file = nil, path = nil,    -- the open trace file
  first = true,              -- no event written yet
  named = {},                -- tid -> thread_name written
  fns = {},                  -- trace.on callbacks, in order
  failed = {},               -- fn -> its failures (reported once)
  timer = nil, interval = INTERVAL,
  dropped = 0,               -- events lost (out of memory, undrained)
  exit = nil,                -- os.exit before we wrapped it
  cjson = nil,
}

local function argerror(fname, i, expected, got)
  error(("bad argument #%d to '%s' (%s expected, got %s)"):format(i, fname, expected,
        type(got)), 3)
end

-- {==================================================================
-- Chrome's events
-- ==================================================================

local PID = 1

local function put(ev)
  local f = S.file
  local s = S.cjson.encode(ev)
  if S.first then
    S.first = false
    f:write(s)
  else
    f:write(",\n", s)
  end
end

local function label(e)
  local n = e.name
  local ev = e.event
  if ev == "message.post" then return "post " .. e.size .. " B"
  elseif ev == "message.deliver" then return "deliver " .. e.size .. " B"
  elseif ev == "channel.push" then return "push " .. e.size .. " B"
  elseif ev == "channel.pop" then return "pop " .. e.size .. " B"
  elseif ev == "task.queued" then return "queued " .. n
  elseif ev == "task.started" then return "start " .. n
  elseif ev == "task.finished" or ev == "task.failed" then return "task " .. n
  elseif ev == "task.cancelled" then return "cancelled " .. (n or "")
  elseif ev == "worker.spawn" then
    return ("spawn worker %d%s"):format(e.worker, n and (" '" .. n .. "'") or "")
  elseif ev == "worker.terminate" then return ("terminate worker %d"):format(e.worker)
  elseif ev == "worker.exit" then return ("exit %d"):format(e.code)
  end
  return ev
end

-- what an event says besides its place and time
local ARGS = { "flow", "size", "to", "worker", "code", "task", "pool", "name", "error",
               "reason" }

local FLOW_OUT = { ["message.post"] = "message", ["channel.push"] = "message",
                   ["task.queued"] = "task" }
local FLOW_IN = { ["message.deliver"] = "message", ["channel.pop"] = "message",
                  ["task.finished"] = "task", ["task.failed"] = "task" }
local SLICE = { ["message.post"] = true, ["message.deliver"] = true, ["channel.push"] = true,
                ["task.queued"] = true, ["task.finished"] = true, ["task.failed"] = true }

local function write(e)
  local tid = e.tid + 1
  if not S.named[tid] then
    S.named[tid] = true
    put({ ph = "M", name = "thread_name", pid = PID, tid = tid,
          args = { name = ("%s [%d]"):format(e.thread, e.tid) } })
    put({ ph = "M", name = "thread_sort_index", pid = PID, tid = tid,
          args = { sort_index = e.tid } })
  end
  local args = { event = e.event, thread = e.tid }
  for _, k in ipairs(ARGS) do args[k] = e[k] end
  if e.event == "task.finished" or e.event == "task.failed" then
    args.status = e.event:sub(6)
  end
  local ev = { name = label(e), cat = "loom", pid = PID, tid = tid, ts = e.ts, args = args }
  if SLICE[e.event] or e.dur > 0 then
    ev.ph, ev.dur = "X", e.dur
  else
    ev.ph, ev.s = "i", "t"
  end
  put(ev)
  local fl = e.flow
  if fl then
    local mid = e.ts + e.dur / 2
    if FLOW_OUT[e.event] then
      put({ ph = "s", name = FLOW_OUT[e.event], cat = "loom.flow", id = fl, pid = PID,
            tid = tid, ts = mid })
    elseif FLOW_IN[e.event] then
      put({ ph = "f", bp = "e", name = FLOW_IN[e.event], cat = "loom.flow", id = fl,
            pid = PID, tid = tid, ts = mid })
    end
  end
end

-- }==================================================================

-- {==================================================================
-- Draining
-- ==================================================================

local function report(fn, err)
  local n = (S.failed[fn] or 0) + 1
  S.failed[fn] = n
  if n == 1 then
    io.stderr:write(("loom.trace.on: a callback failed (reported once): %s\n")
                    :format(tostring(err)))
  end
end

local on, finish

-- take what every thread recorded and hand it on.  S.fns is replaced,
-- never changed in place (an off inside a callback): this batch goes to
-- the callbacks there were when it was taken.
local function drain()
  local list, dropped = core.trace_take()
  S.dropped = S.dropped + dropped
  if #list == 0 then return end
  if S.file then
    for i = 1, #list do write(list[i]) end
  end
  local fns = S.fns
  S.draining = true
  for i = 1, #fns do
    local ok, err = pcall(fns[i], list)
    if not ok then report(fns[i], err) end
  end
  S.draining = false
  if not on() and S.timer then finish() end   -- the last callback went meanwhile
end
M._drain = drain

function on()
  return S.file ~= nil or #S.fns > 0
end

local function begin()
  if S.timer then return end
  local ok, err = core.trace_enable(true)
  if not ok then error("loom.trace: " .. err, 3) end
  S.timer = core.timer(function()
    local ok2, e2 = pcall(drain)
    if not ok2 then io.stderr:write("loom.trace: ", tostring(e2), "\n") end
  end, S.interval, true)
  S.timer:unref()
end

-- tracing ends: the last batch, the file's end
function finish()
  core.trace_enable(false)
  if S.timer then S.timer:close(); S.timer = nil end
  drain()
  local f = S.file
  if f then
    S.file = nil
    f:write("],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":",
            S.cjson.encode({ loom = core.version, dropped = S.dropped }), "}\n")
    f:close()
  end
  if S.exit and os.exit == M._exit then os.exit = S.exit end   -- luacheck: ignore 122
  S.exit = nil
  S.fns, S.failed, S.named, S.first, S.path, S.dropped = {}, {}, {}, true, nil, 0
end

-- }==================================================================

-- {==================================================================
-- The API
-- ==================================================================

local START_OPTS = { interval = true }

-- trace.start(path [, {interval = ms}]) -> true | nil, err (cannot open)
function M.start(path, opts)
  if type(path) ~= "string" then argerror("start", 1, "string (the file's path)", path) end
  if opts ~= nil and type(opts) ~= "table" then argerror("start", 2, "table of options", opts) end
  if opts then
    for k in pairs(opts) do
      if not START_OPTS[k] then
        error(("bad argument #2 to 'start' (unknown option '%s')"):format(tostring(k)), 2)
      end
    end
    local iv = opts.interval
    -- (not (iv > 0): NaN fails too)
    if iv ~= nil and (type(iv) ~= "number" or not (iv > 0) or iv == math.huge) then   -- luacheck: ignore 581
      error("bad argument #2 to 'start' (option 'interval' must be a number of ms > 0)", 2)
    end
  end
  if S.file then error(("start: already tracing to '%s'"):format(S.path), 2) end
  if not S.cjson then
    local ok, cj = pcall(require, "cjson")
    if not ok then
      error("start: writing a trace needs lua-cjson (Debian: apt-get install lua-cjson): "
            .. tostring(cj), 2)
    end
    S.cjson = cj
  end
  local f, err = io.open(path, "w")
  if not f then return nil, "start: " .. tostring(err) end
  f:setvbuf("full")
  f:write('{"traceEvents":[\n')
  if not on() then core.trace_take() end   -- left over from an earlier trace
  S.file, S.path, S.first = f, path, true
  S.interval = opts and opts.interval or INTERVAL
  -- made after the file: finalized before it when the state closes
  S.guard = setmetatable({}, { __gc = function() if S.file then pcall(M.stop) end end })
  if not S.exit then
    S.exit = os.exit
    os.exit = M._exit   -- luacheck: ignore 122
  end
  local ok, e = pcall(begin)
  if not ok then
    S.file = nil
    f:close()
    error(e, 2)
  end
  return true
end

-- os.exit while a file is open: end it first
function M._exit(...)
  if S.file then pcall(M.stop) end
  local exit = S.exit or os.exit
  return exit(...)
end

-- trace.stop(): the last events go out, the file is closed
function M.stop()
  if not on() then return false end
  finish()
  return true
end

-- trace.on(fn): fn(events) on this thread with each batch; returns a
-- function that takes fn off again
function M.on(fn)
  if type(fn) ~= "function" then argerror("on", 1, "function", fn) end
  local fns = S.fns
  fns[#fns + 1] = fn
  if #fns == 1 and not S.file then core.trace_take() end
  begin()
  return function()
    local found = false
    for i = 1, #S.fns do found = found or S.fns[i] == fn end
    if not found then return end
    -- what was recorded, fn still sees (inside a callback it has this
    -- batch already, and the others get it from the drain that runs)
    if S.timer and not S.draining then pcall(drain) end
    local keep = {}
    for i = 1, #S.fns do
      if S.fns[i] ~= fn then keep[#keep + 1] = S.fns[i] end
    end
    S.fns = keep
    if not on() and S.timer and not S.draining then finish() end
  end
end

-- is tracing on in this runtime?
function M.active() return core.tracing() end

-- }==================================================================

core.boot("loom.trace", debug.getinfo(1, "f").func)

return setmetatable(M, { __name = "loom.trace" })
