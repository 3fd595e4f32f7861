-- Tracing (issue 12): loom.trace.start / stop / on and LOOM_TRACE.  The
-- trace file is loaded back with cjson and its structure checked: tasks
-- queued, started, finished / failed / cancelled in order on the right
-- threads, flows linking each post to its delivery and each queueing to
-- its run, one named track per thread, time going forward on each.
local H = require "helper"
local loom = require "loom"
local cjson = require "cjson"

local function readjson(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return cjson.decode(s), s
end

-- per tid: its events in file order; and a few indexes
local function index(doc)
  local X = { bytid = {}, names = {}, flows_s = {}, flows_f = {}, byevent = {} }
  for _, e in ipairs(doc.traceEvents) do
    assert.is_string(e.ph)
    assert.is_number(e.pid)
    assert.is_number(e.tid)
    if e.ph == "M" then
      if e.name == "thread_name" then X.names[e.tid] = e.args.name end
    elseif e.ph == "s" then X.flows_s[e.id] = e
    elseif e.ph == "f" then X.flows_f[e.id] = e
    else
      assert.is_number(e.ts)
      local l = X.bytid[e.tid]
      if not l then l = {}; X.bytid[e.tid] = l end
      l[#l + 1] = e
      local ev = e.args.event
      X.byevent[ev] = X.byevent[ev] or {}
      table.insert(X.byevent[ev], e)
    end
  end
  return X
end

-- time goes forward on each thread: each event is recorded when it ends,
-- so the ends (ts + dur) never go back in file order
local function check_monotonic(X)
  for tid, list in pairs(X.bytid) do
    local last = -1
    for i, e in ipairs(list) do
      local t = e.ts + (e.dur or 0)
      assert(t >= last - 1e-3, ("thread %d: event %d (%s) ends at %.3f, before %.3f")
             :format(tid, i, e.name, t, last))
      last = t
    end
  end
end

-- every delivery's flow starts at a post on another thread
local function check_messages(X)
  local posts, n = {}, 0
  for _, e in ipairs(X.byevent["message.post"] or {}) do posts[e.args.flow] = e end
  for _, d in ipairs(X.byevent["message.deliver"] or {}) do
    local p = posts[d.args.flow]
    assert(p, "a delivery without its post: flow " .. tostring(d.args.flow))
    assert.are.equal(p.args.size, d.args.size)
    assert(X.flows_s[d.args.flow] and X.flows_f[d.args.flow], "no flow events for a message")
    assert.are.equal(p.tid, X.flows_s[d.args.flow].tid)
    assert.are.equal(d.tid, X.flows_f[d.args.flow].tid)
    n = n + 1
  end
  return n
end

local TASKS = [[
  local loom = require "loom"
  return {
    default = function(x) return x * 2 end,
    boom = function() error("boom in a task") end,
    slow = function(ms) local t = loom.now(); while loom.now() - t < ms do end; return ms end,
  }
]]

-- a pool a failed test left running is destroyed, so that the helper's
-- check that no thread is left does not wait for it
local function stoppool(p)
  if #p._all > 0 then
    p:destroy()
    H.run_until(function() return #p._all == 0 end, 5000)
  end
end

describe("loom.trace", function()
  before_each(H.before_each)
  after_each(function()
    loom.trace.stop()
    H.after_each()
  end)

  it("writes a pool's tasks, messages and workers as Chrome trace JSON", function()
    local path = os.tmpname()
    local batches, seen = 0, {}
    local off = loom.trace.on(function(list)
      batches = batches + 1
      for _, e in ipairs(list) do seen[#seen + 1] = e end
    end)
    assert.is_true(loom.trace.start(path, { interval = 10 }))
    assert.is_true(loom.trace.active())
    local p = loom.Pool{ source = TASKS, minThreads = 2, maxThreads = 2, name = "traced" }
    finally(function() stoppool(p) end)
    local fs = {}
    for i = 1, 6 do fs[#fs + 1] = p:run(i) end
    local bad = p:run(0, { name = "boom" })
    bad:catch(function() end)
    local ac = loom.AbortController()
    local gone = p:run(0, { name = "slow", signal = ac.signal })
    gone:catch(function() end)
    ac:abort("not wanted")           -- still in the main thread's queue
    for i, f in ipairs(fs) do assert.are.equal(i * 2, f:await()) end
    local ok, err = pcall(bad.await, bad)
    assert.is_false(ok)
    assert.matches("boom in a task", tostring(err), 1, true)
    assert.is_false((pcall(gone.await, gone)))
    p:close():await()
    assert.is_true(loom.trace.stop())
    assert.is_false(loom.trace.active())
    off()
    local doc = readjson(path)
    os.remove(path)
    assert.is_table(doc.traceEvents)
    assert.are.equal(0, doc.otherData.dropped)
    local X = index(doc)
    -- one named track per thread: main, and the two pool workers
    assert.matches("^main %[0%]$", X.names[1])
    local workers = 0
    for tid, name in pairs(X.names) do
      if tid ~= 1 then
        workers = workers + 1
        assert.matches("^traced %[%d+%]$", name)
      end
    end
    assert.are.equal(2, workers)
    for tid in pairs(X.bytid) do assert(X.names[tid], "a track without a name: " .. tid) end
    check_monotonic(X)
    -- the tasks: by id
    local tasks = {}
    local function rec(kind)
      for _, e in ipairs(X.byevent[kind] or {}) do
        local t = tasks[e.args.task] or {}
        tasks[e.args.task] = t
        assert.is_nil(t[kind])
        t[kind] = e
      end
    end
    for _, k in ipairs({ "task.queued", "task.started", "task.finished", "task.failed",
                         "task.cancelled" }) do rec(k) end
    local n, finished, failed, cancelled = 0, 0, 0, 0
    for id, t in pairs(tasks) do
      n = n + 1
      local q = assert(t["task.queued"], "task " .. id .. " was never queued")
      assert.are.equal(1, q.tid)                       -- queued on the main thread
      if t["task.cancelled"] then
        cancelled = cancelled + 1
        assert.are.equal(1, t["task.cancelled"].tid)
        assert.are.equal("not wanted", t["task.cancelled"].args.reason)
        assert.is_nil(t["task.started"])
        assert(t["task.cancelled"].ts >= q.ts)
      else
        local s = assert(t["task.started"], "task " .. id .. " never started")
        local e = t["task.finished"] or t["task.failed"]
        assert(e, "task " .. id .. " never ended")
        assert.are_not.equal(1, s.tid)                 -- run in a worker
        assert.are.equal(s.tid, e.tid)                 -- started and ended there
        assert(s.ts >= q.ts, "started before it was queued")
        assert(e.ts + e.dur >= s.ts, "ended before it started")
        assert.are.equal("X", e.ph)
        -- the flow: from the queueing (main) to the run (worker)
        local fl = q.args.flow
        assert.are.equal(fl, e.args.flow)
        assert.are.equal(1, X.flows_s[fl].tid)
        assert.are.equal(e.tid, X.flows_f[fl].tid)
        if t["task.failed"] then
          failed = failed + 1
          assert.are.equal("boom", e.args.name)
          assert.matches("boom in a task", e.args.error, 1, true)
        else
          finished = finished + 1
        end
      end
    end
    assert.are.same({ 8, 6, 1, 1 }, { n, finished, failed, cancelled })
    -- messages: the pool's chunks and results, each post linked to its delivery
    assert(check_messages(X) >= 4)
    -- workers: spawned on main, online and exit on their own threads
    assert.are.equal(2, #X.byevent["worker.spawn"])
    for _, e in ipairs(X.byevent["worker.online"]) do assert.are_not.equal(1, e.tid) end
    for _, e in ipairs(X.byevent["worker.exit"]) do assert.are.equal(0, e.args.code) end
    -- trace.on saw the same events, batched
    assert(batches >= 1)
    local count = 0
    for _, e in ipairs(seen) do
      if e.event:find("^task%.") then count = count + 1 end
      assert.is_number(e.ts)
      assert.is_number(e.tid)
      assert.is_string(e.thread)
    end
    assert.are.equal(#X.byevent["task.queued"] + #X.byevent["task.started"] +
                     #X.byevent["task.finished"] + #X.byevent["task.failed"] +
                     #X.byevent["task.cancelled"], count)
  end)

  it("records channel pushes and pops with their flow, and terminate", function()
    local got = {}
    local off = loom.trace.on(function(list)
      for _, e in ipairs(list) do got[#got + 1] = e end
    end)
    local q = loom.Channel()
    local w = H.spawn(function()
      local loom = require "loom"
      local ch = loom.workerData
      for i = 1, 3 do ch:push(("x"):rep(i)) end
      loom.parentPort:on("message", function() end)
    end, { name = "pusher", workerData = q })
    for i = 1, 3 do assert.are.equal(("x"):rep(i), q:pop(H.ms(5000))) end
    w:terminate():await()
    loom.trace.stop()
    off()
    local push, pop, term = {}, {}, 0
    for _, e in ipairs(got) do
      if e.event == "channel.push" then push[e.flow] = e
      elseif e.event == "channel.pop" then pop[#pop + 1] = e
      -- (this worker's: a worker an earlier spec left may end meanwhile)
      elseif e.event == "worker.terminate" and e.worker == w.threadId then term = term + 1 end
    end
    assert.are.equal(3, #pop)
    for _, e in ipairs(pop) do
      local p = assert(push[e.flow], "a pop without its push")
      assert.are.equal("pusher", p.thread)
      assert.are.equal("main", e.thread)
      assert.are.equal(p.size, e.size)
    end
    assert.are.equal(1, term)
  end)

  it("a failing trace.on callback does not take the main thread down", function()
    local good = 0
    local offs = {
      loom.trace.on(function() error("callback bug") end),
      loom.trace.on(function(list) good = good + #list end),
    }
    for i = 1, 5 do assert.are.equal(i, H.roundtrip(i)) end
    -- (the drain timer does not keep the loop alive: stop hands the rest out)
    assert.is_true(loom.trace.stop())
    assert(good >= 20, "the good callback got " .. good .. " events")
    assert.is_false(loom.trace.active())
    for _, off in ipairs(offs) do off() end
  end)

  it("off() hands its callback what was recorded since the last batch", function()
    local kept, dropped = {}, {}
    local offa = loom.trace.on(function(list) for _, e in ipairs(list) do kept[#kept + 1] = e end end)
    local offb = loom.trace.on(function(list) for _, e in ipairs(list) do dropped[#dropped + 1] = e end end)
    offb()                                  -- before anything was recorded
    for i = 1, 3 do assert.are.equal(i, H.roundtrip(i)) end   -- far under a 50 ms batch
    offa()
    assert.is_false(loom.trace.active())
    local posts = 0
    for _, e in ipairs(kept) do if e.event == "message.post" then posts = posts + 1 end end
    assert(posts >= 3, "off handed out " .. #kept .. " events, " .. posts .. " posts")
    assert.are.equal(0, #dropped)
    offa()                                  -- twice: harmless
  end)

  it("refuses bad arguments, naming the function", function()
    assert.has_error(function() loom.trace.start(42) end,
      "bad argument #1 to 'start' (string (the file's path) expected, got number)")
    assert.has_error(function() loom.trace.start("x", { bogus = 1 }) end,
      "bad argument #2 to 'start' (unknown option 'bogus')")
    assert.has_error(function() loom.trace.on("f") end,
      "bad argument #1 to 'on' (function expected, got string)")
    local ok, err = loom.trace.start("/nonexistent/dir/trace.json")
    assert.is_nil(ok)
    assert.matches("^start: ", err)
    assert.is_false(loom.trace.active())
  end)

  -- LOOM_TRACE traces a program that knows nothing of tracing; the file is
  -- valid JSON however it ends
  local PROGRAM = [[
    local loom = require "loom"
    local w = loom.Worker(function()
      local loom = require "loom"
      loom.parentPort:on("message", function(m) loom.parentPort:postMessage(m + 1) end)
    end, { name = "echo" })
    local n = 0
    w:on("message", function(m)
      n = n + 1
      if n < 5 then w:postMessage(m) else w:terminate() end
    end)
    w:postMessage(1)
    loom.run()
    io.write("ran ", n, "\n")
    io.flush()
  ]]

  local function traced(script, ending)
    local path, src = os.tmpname(), os.tmpname()
    local f = assert(io.open(src, "w"))
    f:write(script .. ending)
    f:close()
    local p = io.popen(("LOOM_TRACE=%s timeout 60 %s %s 2>&1; echo \"rc=$?\""):format(
      path, os.getenv("LUA") or "lua5.4", src))
    local out = p:read("a")
    p:close()
    os.remove(src)
    local ok, doc = pcall(readjson, path)
    os.remove(path)
    assert(ok, "not valid JSON: " .. tostring(doc) .. "\n" .. out)
    return doc, out
  end

  local function check_program(doc)
    local X = index(doc)
    assert.are.equal(1, #X.byevent["worker.spawn"])
    assert(check_messages(X) >= 8)
    check_monotonic(X)
    local names = {}
    for _, n in pairs(X.names) do names[#names + 1] = n end
    table.sort(names)
    assert.matches("^echo %[%d+%]$", names[1])
    assert.are.equal("main [0]", names[2])
  end

  it("LOOM_TRACE: valid JSON when the program ends normally", function()
    if H.no_fork(pending) then return end
    local doc, out = traced(PROGRAM, "")
    assert.matches("ran 5\nrc=0", out, 1, true)
    check_program(doc)
  end)

  it("LOOM_TRACE: valid JSON when the program ends by an uncaught error", function()
    if H.no_fork(pending) then return end
    local doc, out = traced(PROGRAM, "\nerror('the program failed')\n")
    assert.matches("the program failed", out, 1, true)
    assert.matches("rc=1", out, 1, true)
    check_program(doc)
  end)

  it("LOOM_TRACE: valid JSON when the program ends by os.exit", function()
    if H.no_fork(pending) then return end
    local doc, out = traced(PROGRAM, "\nos.exit(3)\n")
    assert.matches("rc=3", out, 1, true)
    check_program(doc)
  end)
end)

describe("worker:stats", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("counts messages, the queue, memory, CPU and the loop's utilisation", function()
    local w = H.spawn(function()
      local loom = require "loom"
      local keep = {}
      loom.parentPort:on("message", function(m)
        if m == "burn" then
          local t = loom.now()
          while loom.now() - t < 150 do end        -- busy: what comes waits
        elseif m == "stop" then
          loom.parentPort:close()
          return
        else
          keep[#keep + 1] = ("x"):rep(1000)
        end
        loom.parentPort:postMessage(m)
      end)
    end)
    local got = 0
    w:on("message", function() got = got + 1 end)
    w:postMessage("burn")
    for i = 1, 5 do w:postMessage(i) end
    local s = w:stats()
    assert(s.queueLength >= 5, "queueLength " .. s.queueLength)
    assert(H.run_until(function() return got == 6 end, 5000))
    loom.sleep(50)                                  -- the worker idles
    s = w:stats()
    assert.are.equal(6, s.messagesIn)
    assert.are.equal(6, s.messagesOut)
    assert.are.equal(0, s.queueLength)
    assert(s.memory > 5000, "memory " .. s.memory)   -- the strings it keeps
    assert(s.cpu > 20, "cpu " .. s.cpu)             -- the burn, in ms of CPU
    local elu = s.eventLoopUtilization
    assert(elu.idle > 0 and elu.active > 20)
    assert(elu.utilization > 0 and elu.utilization < 1)
    assert(math.abs(elu.utilization - elu.active / (elu.idle + elu.active)) < 1e-9)
    w:postMessage("stop")
    H.join(w)
    local after = w:stats()                         -- still readable after the exit
    assert.are.equal(7, after.messagesIn)
    assert(after.cpu >= s.cpu)
  end)

  it("pool:stats() has each worker's figures", function()
    local p = loom.Pool{ source = "return function(x) return x end", minThreads = 2,
                         maxThreads = 2 }
    finally(function() stoppool(p) end)
    local fs = {}
    for i = 1, 20 do fs[i] = p:run(i) end
    for i = 1, 20 do assert.are.equal(i, fs[i]:await()) end
    -- on a loaded machine the tasks may all be done before the second
    -- worker is up: its figures come once it is
    assert(H.run_until(function() return #p:stats().workers == 2 end, 5000),
           "the second worker never came up")
    local s = p:stats()
    assert.are.equal(2, #s.workers)
    local ins = 0
    for _, ws in ipairs(s.workers) do
      assert.is_number(ws.threadId)
      assert.are.equal(0, ws.tasks)
      assert.is_number(ws.cpu)
      assert.is_table(ws.eventLoopUtilization)
      ins = ins + ws.messagesIn
    end
    assert(ins >= 2)              -- the tasks came in chunks, at least one each
    p:close():await()
  end)
end)

describe("errors that cross a thread", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("name the pool task (name and id) and its worker", function()
    local p = loom.Pool{ source = "return { bad = function() error('task broke') end }",
                         maxThreads = 1, name = "errpool" }
    finally(function() stoppool(p) end)
    local f = p:run(nil, { name = "bad" })
    local err, tb
    f:catch(function(e, t) err, tb = e, t end)
    assert(H.run_until(function() return err ~= nil end, 5000))
    assert.matches("task broke", err, 1, true)
    assert.matches("in pool task 'bad' %(task 1, worker %d+ 'errpool'%): ", tb)
    p:close():await()
  end)

  it("name every worker of a nested chain", function()
    local w = H.spawn(function()
      local loom = require "loom"
      loom.Worker(function() error("deep failure") end, { name = "inner" })
      loom.run()
    end, { name = "middle" })
    local err, tb
    w:on("error", function(e, t) err, tb = e, t end)
    H.join(w)
    assert.matches("^uncaught error in worker %d+ 'inner': .*deep failure", err)
    assert.matches("^in worker " .. w.threadId .. " 'middle'\n", tb)
  end)
end)

describe("an uncaught error from a nested worker", function()
  before_each(H.before_each)
  after_each(H.after_each)

  it("names the whole chain when nobody listens", function()
    local w = H.spawn(function()
      local loom = require "loom"
      loom.Worker(function() error("deep failure") end, { name = "inner" })
      loom.run()
    end, { name = "middle" })
    local ok, err = pcall(H.run)
    assert.is_false(ok)
    assert.matches("^uncaught error in worker " .. w.threadId ..
                   " 'middle': uncaught error in worker %d+ 'inner': .*deep failure", err)
    H.join(w)
  end)
end)
