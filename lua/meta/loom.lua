---@meta loom
-- LuaLS (lua-language-server) definitions of loom's Lua API, for
-- completion and type checks in an editor: add this directory to
-- `workspace.library` (in .luarc.json: { "workspace.library": ["<loom>/lua/meta"] }).
-- The rock installs it as <tree>/share/lua/5.4/meta/loom.lua (README,
-- "Editor support").  Never required at run time; the code is lua/loom/.

---@alias loom.Timeout number   milliseconds; nil or math.huge: no limit; 0: poll
---@alias loom.Reason "timeout"|"closed"|"full"|"empty"

---@class loom.Emitter
local Emitter = {}
---@param event string
---@param fn function
---@return self
function Emitter:on(event, fn) end
---@param event string
---@param fn function
---@return self
function Emitter:once(event, fn) end
---@param event string
---@param fn? function  all listeners of the event when nil
---@return self
function Emitter:off(event, fn) end
--- Calls the listeners of event with the arguments; false when it has none.
---@param event string
---@return boolean
function Emitter:emit(event, ...) end
---@param event string
---@return integer
function Emitter:listenerCount(event) end

---@class loom.Future
local Future = {}
--- Inside loom.async: yields until settled. On the main thread outside one: runs the loop.
--- Raises the rejection (with its traceback) when rejected.
---@return any
function Future:await() end
---@param onValue? fun(value: any): any
---@param onError? fun(err: any, traceback?: string): any
---@return loom.Future
function Future:next(onValue, onError) end
---@param onError fun(err: any, traceback?: string): any
---@return loom.Future
function Future:catch(onError) end
---@return "pending"|"fulfilled"|"rejected"
function Future:state() end
---@return loom.Future
function Future.new() end
---@param f loom.Future
---@param v any
---@return boolean settled
function Future.resolve(f, v) end
---@param f loom.Future
---@param e any
---@param tb? string
---@return boolean settled
function Future.reject(f, e, tb) end

---@class loom.Timer
local Timer = {}
function Timer:ref() end
function Timer:unref() end
---@return boolean
function Timer:hasRef() end
function Timer:close() end

--- What setImmediate returns: it can only be cancelled.
---@class loom.Immediate
local Immediate = {}
function Immediate:close() end

---@class loom.AbortSignal: loom.Emitter
---@field aborted boolean
---@field reason any
local AbortSignal = {}
---@param ms number
---@return loom.AbortSignal
function AbortSignal.timeout(ms) end

---@class loom.AbortController
---@field signal loom.AbortSignal
local AbortController = {}
---@param reason? any
function AbortController:abort(reason) end

---@class loom.WorkerOptions
---@field workerData? any          cloned into the worker as loom.workerData
---@field name? string             shows in errors, traces and thread names
---@field eval? boolean            true: source is Lua code, not a file name
---@field argv? any[]              becomes `...` of the worker's main chunk
---@field transfer? any[]          ports moved into the worker with workerData
---@field resourceLimits? { maxMemoryMb?: number, stackSizeKb?: integer }
---@field env? "clone"|"share"     environment data: cloned (the default; "share" clones too, for now)

---@class loom.WorkerStats
---@field messagesIn integer
---@field messagesOut integer
---@field queueLength integer
---@field memory integer           bytes of its Lua state, as of its last delivery
---@field cpu number               ms of its thread's CPU time
---@field eventLoopUtilization { idle: number, active: number, utilization: number }

--- Events: "online", "message" (value), "messageerror", "error" (err, traceback), "exit" (code).
---@class loom.Worker: loom.Emitter
---@field threadId integer
---@field exitCode? integer
local Worker = {}
---@param value any
---@param transfer? any[]
---@return boolean ok
---@return "closed"? reason
function Worker:postMessage(value, transfer) end
--- Stops its Lua code (even inside pcall) and wakes it from any wait.
---@return loom.Future exitCode
function Worker:terminate() end
function Worker:ref() end
function Worker:unref() end
---@return loom.WorkerStats
function Worker:stats() end

--- Events: "message" (value), "messageerror", "close".
---@class loom.MessagePort: loom.Emitter
local MessagePort = {}
---@param value any
---@param transfer? any[]
---@return boolean ok
---@return "closed"? reason
function MessagePort:postMessage(value, transfer) end
function MessagePort:start() end
function MessagePort:close() end
function MessagePort:ref() end
function MessagePort:unref() end
--- A blocking pull (nil is a valid message, hence the flag).
---@param timeout_ms? loom.Timeout
---@return boolean got
---@return any valueOrReason  the value, or "timeout" | "empty" (timeout 0) | "closed"
function MessagePort:receive(timeout_ms) end

---@class loom.MessageChannel
---@field port1 loom.MessagePort
---@field port2 loom.MessagePort

---@class loom.BroadcastChannel: loom.Emitter
---@field name string
local BroadcastChannel = {}
---@param value any
---@return boolean ok
---@return "closed"? reason
function BroadcastChannel:postMessage(value) end
function BroadcastChannel:close() end
function BroadcastChannel:ref() end
function BroadcastChannel:unref() end

--- A multi-producer multi-consumer queue, shared by reference. Events: "message".
---@class loom.Channel: loom.Emitter
---@operator len: integer
local Channel = {}
---@param v any                    not nil
---@param timeout_ms? loom.Timeout
---@return true|nil ok
---@return "full"|"timeout"|"closed"|nil reason
function Channel:push(v, timeout_ms) end
---@param timeout_ms? loom.Timeout
---@return any valueOrNil
---@return "timeout"|"closed"|nil reason
function Channel:pop(timeout_ms) end
---@return any valueOrNil
---@return "empty"|"closed"|nil reason
function Channel:tryPop() end
function Channel:close() end
--- Whether its "message" listener keeps this thread's loop alive (as a port's).
function Channel:ref() end
function Channel:unref() end
---@param name string
---@param capacity? integer
---@return loom.Channel
function Channel.named(name, capacity) end

---@alias loom.ViewKind "int8"|"uint8"|"int16"|"uint16"|"int32"|"uint32"|"int64"|"float32"|"float64"

---@class loom.SharedBuffer
---@operator len: integer
local SharedBuffer = {}
---@param kind loom.ViewKind
---@param byteOffset? integer      0-based, a multiple of the element size
---@param length? integer
---@return loom.View
function SharedBuffer:view(kind, byteOffset, length) end
---@param pos integer              1-based, as string.sub
---@param len integer
---@return string
function SharedBuffer:read(pos, len) end
---@param pos integer
---@param s string
---@return true
function SharedBuffer:write(pos, s) end

--- A typed view: v[i] (1-based), #v; atomic methods on integer kinds.
---@class loom.View
---@operator len: integer
---@field [integer] number
local View = {}
---@return integer old
function View:add(i, x) end
---@return integer old
function View:sub(i, x) end
---@return integer old
function View:band(i, x) end
---@return integer old
function View:bor(i, x) end
---@return integer old
function View:bxor(i, x) end
---@return integer old
function View:exchange(i, x) end
---@return integer old
function View:compareExchange(i, expected, x) end
---@return integer
function View:load(i) end
---@return integer
function View:store(i, x) end
---@param timeout_ms? loom.Timeout
---@return "ok"|"not-equal"|"timed-out"
function View:wait(i, expected, timeout_ms) end
---@param timeout_ms? loom.Timeout
---@return loom.Future  of "ok" | "not-equal" | "timed-out"
function View:waitAsync(i, expected, timeout_ms) end
---@param count? integer
---@return integer woken
function View:notify(i, count) end

---@class loom.PoolOptions
---@field filename? string         returns a function, or a table of named functions
---@field source? string
---@field fn? function
---@field name? string
---@field minThreads? integer
---@field maxThreads? integer
---@field idleTimeout? number
---@field maxQueue? integer|"auto"
---@field concurrentTasksPerWorker? integer
---@field resourceLimits? { maxMemoryMb?: number, stackSizeKb?: integer }
---@field timeout? number          default per-task timeout (ms)
---@field abortGrace? number       ms an aborted running task has to stop before its worker is terminated

---@class loom.RunOptions
---@field name? string             the named task of a table module
---@field transfer? any[]
---@field signal? loom.AbortSignal
---@field timeout? number

--- Events: "drain".
---@class loom.Pool: loom.Emitter
local Pool = {}
---@param arg any
---@param opts? loom.RunOptions
---@return loom.Future
function Pool:run(arg, opts) end
---@param list any[]
---@param opts? loom.RunOptions
---@return loom.Future  of the list of results, in order
function Pool:map(list, opts) end
---@return table  completed, failed, queued, running, threads, utilization, runTime, waitTime, workers
function Pool:stats() end
---@return loom.Future
function Pool:close() end
---@return loom.Future
function Pool:destroy() end

---@class loom.trace
local trace = {}
---@param path string
---@param opts? { interval?: number }
---@return true|nil ok
---@return string? err
function trace.start(path, opts) end
---@return boolean
function trace.stop() end
---@param fn fun(events: table[])
---@return fun() off
function trace.on(fn) end
---@return boolean
function trace.active() end

---@class loom
---@field _VERSION string
---@field isMainThread boolean
---@field threadId integer
---@field parentPort? loom.MessagePort  nil on the main thread
---@field workerData any
---@field workerName? string       the worker's name option, in a worker
---@field Future loom.Future
---@field AbortSignal loom.AbortSignal
---@field MessagePort loom.MessagePort
---@field Channel loom.Channel
---@field trace loom.trace
local loom = {}

---@param source string|function   a file, code (eval = true), or a function (sent as bytecode)
---@param opts? loom.WorkerOptions
---@return loom.Worker
function loom.Worker(source, opts) end
---@param opts loom.PoolOptions
---@return loom.Pool
function loom.Pool(opts) end
---@return loom.MessageChannel
function loom.MessageChannel() end
---@param port loom.MessagePort
---@return boolean got
---@return any valueOrReason  the value, or "empty" | "closed"
function loom.receiveMessageOnPort(port) end
---@param name string
---@return loom.BroadcastChannel
function loom.BroadcastChannel(name) end
---@param capacity? integer
---@return loom.Channel
function loom.Channel(capacity) end
--- The first ready source and its value; fair.  nil, "timeout" | "closed" (every source closed).
---@param sources (loom.Channel|loom.MessagePort)[]  at most 64
---@param timeout_ms? loom.Timeout
---@return loom.Channel|loom.MessagePort|nil source
---@return any valueOrReason
function loom.select(sources, timeout_ms) end
---@param bytes integer
---@return loom.SharedBuffer
function loom.SharedBuffer(bytes) end
--- An immutable image of t in shared memory, read in place, sent by reference.
---@generic T: table
---@param t T
---@return T
function loom.freeze(t) end
---@generic T
---@param v T
---@return T
function loom.clone(v) end
---@param name string
---@param mt table
function loom.registerClass(name, mt) end
---@return number ms
function loom.now() end
---@return integer
function loom.availableParallelism() end
function loom.run() end
---@param budget_ms? number
function loom.poll(budget_ms) end
---@param code? integer|boolean
function loom.exit(code) end
---@param k any
---@param v any
function loom.setEnvironmentData(k, v) end
---@param k any
---@return any
function loom.getEnvironmentData(k) end
---@param fn fun(err: any, traceback?: string)
function loom.onUnhandledRejection(fn) end
---@param v any
---@return boolean
function loom.isFuture(v) end
---@param fn function
---@return loom.Future
function loom.async(fn, ...) end
---@param fs loom.Future[]
---@return loom.Future
function loom.all(fs) end
---@param fs loom.Future[]
---@return loom.Future
function loom.race(fs) end
---@param fs loom.Future[]
---@return loom.Future
function loom.any(fs) end
---@param fs loom.Future[]
---@return loom.Future  of { status, value | reason, traceback }[]
function loom.allSettled(fs) end
---@param fn function
---@param ms number
---@return loom.Timer
function loom.setTimeout(fn, ms, ...) end
---@param fn function
---@param ms number
---@return loom.Timer
function loom.setInterval(fn, ms, ...) end
---@param fn function
---@return loom.Immediate
function loom.setImmediate(fn, ...) end
---@param t loom.Timer
function loom.clearTimeout(t) end
---@param t loom.Timer
function loom.clearInterval(t) end
---@param t loom.Immediate
function loom.clearImmediate(t) end
--- Awaits inside loom.async; blocks otherwise (terminate still stops it).
---@param ms number
function loom.sleep(ms) end
---@return loom.AbortController
function loom.AbortController() end

return loom
