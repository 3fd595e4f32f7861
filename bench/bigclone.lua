-- d. bigclone: large payloads (the loom twin of bench/node/bigclone.js).
-- Object payload: an array of 100,000 entries {id = i, name = "n" .. i, v = i * 0.5},
--   i = 0 .. 99,999 (stored at index i + 1).
--   json_bytes = #cjson.encode(array) (Node: JSON.stringify(array).length).
--   round trip: main posts {op = "echo", data = array}; the worker posts the
--   array back (cloned twice in total).  MB/s = 2 * json_bytes / round_trip_time.
--   one-way+ack: main posts {op = "ack", data = array}; the worker replies 0.
--   The overlapped floor: twice the time to build the array in Lua (what
--   the round trip would cost if each side's decode overlapped the other's
--   encode and cost no more than building the values).
--   Local (same-thread) references: loom.clone(array) (Node: structuredClone),
--   cjson.encode + cjson.decode (Node: JSON.stringify + JSON.parse).  Node's
--   v8.serialize + deserialize has no loom counterpart.
--   2 warm-up + 10 measured repetitions of each.
-- Buffer payload: Node uses a 16 MiB ArrayBuffer; here a 16 MiB string with
--   byte i = i & 255.  copy round trip and copy one-way+ack, 2 warm-up + 20
--   measured repetitions of each.  Node's transfer round trip (transferList
--   both ways) is matched by a 16 MiB SharedBuffer with the same bytes handed
--   over and back by reference (the worker posts it back; both ends check two
--   bytes, as Node's checkBuf does), 2 warm-up + 20 measured.
-- Frozen table (no Node counterpart): the same 100k-entry array frozen once
--   (loom.freeze, timed once); each repetition posts {op = "readall", data =
--   frozen} and the worker reads every entry (id, name, v), replying with the
--   sum of the ids.  Against it, in the same run: the same with the plain
--   array (copied), and the copying round trip above.  2 warm-up + 10
--   measured of each.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local loom = require "loom"
local cjson = require "cjson"
local C = dofile(DIR .. "/lib/common.lua")
local now, summarize, check = C.now, C.summarize, C.check

local ENTRIES = 100000
local BUF_BYTES = 16 * 1024 * 1024
local OBJ_WARM, OBJ_REPS = C.count(2, 1), C.count(10, 3)
local BUF_WARM, BUF_REPS = C.count(2, 1), C.count(20, 5)

local function makeArray()
  local a = {}
  for i = 0, ENTRIES - 1 do a[i + 1] = { id = i, name = "n" .. i, v = i * 0.5 } end
  return a
end

local function checkArray(a)
  check(type(a) == "table" and #a == ENTRIES, "array length")
  local last = a[ENTRIES]
  check(last.id == ENTRIES - 1 and last.name == "n" .. (ENTRIES - 1)
        and last.v == (ENTRIES - 1) * 0.5, "array content")
end

-- 16 MiB string, byte i (0-based) = i & 255: a 256-byte ramp repeated
local function makeBuf()
  local ramp = {}
  for i = 0, 255 do ramp[i + 1] = string.char(i) end
  return table.concat(ramp):rep(BUF_BYTES // 256)
end

local function checkBuf(b)
  check(type(b) == "string" and #b == BUF_BYTES, "buf len")
  check(b:byte(12345 + 1) == (12345 & 255) and b:byte(BUF_BYTES) == ((BUF_BYTES - 1) & 255),
        "buf content")
end

-- fn runs one repetition (awaiting as needed); the time includes its checks,
-- as in the Node script
local function timeIt(warm, reps, fn)
  local t = {}
  for i = 1, warm + reps do
    local t0 = now()
    fn()
    local dt = now() - t0
    if i > warm then t[#t + 1] = dt end
  end
  return summarize(t)
end

local w = loom.Worker(DIR .. "/workers/bigclone_worker.lua")
C.once(w, "online"):await()
-- the overlapped floor of the round trip: building the array twice (once
-- on each side, as a decode that keeps up with its encode would cost)
local objBuild = timeIt(OBJ_WARM, OBJ_REPS, function() checkArray(makeArray()) end)
local arr = makeArray()
local jsonBytes = #cjson.encode(arr)
local MB = 1e6

local objRt = timeIt(OBJ_WARM, OBJ_REPS, function()
  local p = C.once(w, "message")
  w:postMessage({ op = "echo", data = arr })
  checkArray(p:await())
end)
local objOneWay = timeIt(OBJ_WARM, OBJ_REPS, function()
  local p = C.once(w, "message")
  w:postMessage({ op = "ack", data = arr })
  p:await()
end)
local objClone = timeIt(OBJ_WARM, OBJ_REPS, function() checkArray(loom.clone(arr)) end)
local objJson = timeIt(OBJ_WARM, OBJ_REPS, function()
  checkArray(cjson.decode(cjson.encode(arr)))
end)

local buf = makeBuf()
checkBuf(buf)
local bufCopyRt = timeIt(BUF_WARM, BUF_REPS, function()
  local p = C.once(w, "message")
  w:postMessage({ op = "echo", data = buf })
  checkBuf(p:await())
  checkBuf(buf)   -- "copy must not detach": a string cannot be, but check anyway
end)
local bufCopyOneWay = timeIt(BUF_WARM, BUF_REPS, function()
  local p = C.once(w, "message")
  w:postMessage({ op = "ack", data = buf })
  p:await()
end)
-- the transfer round trip: a SharedBuffer handed over and back
local sbuf = loom.SharedBuffer(BUF_BYTES)
sbuf:write(1, buf)
local function checkShared(b)
  local u8 = b:view("uint8")
  check(#b == BUF_BYTES and u8[12345 + 1] == (12345 & 255) and u8[BUF_BYTES] == ((BUF_BYTES - 1) & 255),
        "shared buf content")
end
local shareRt = timeIt(BUF_WARM, BUF_REPS, function()
  local p = C.once(w, "message")
  w:postMessage({ op = "echo", data = sbuf })
  local back = p:await()
  checkShared(back)
  checkShared(sbuf)      -- by reference: the sender keeps it too
end)
buf = nil

-- the frozen table: freeze once, then send it and read every entry there
local tf = now()
local frozen = loom.freeze(arr)
local freezeMs = now() - tf
local wantSum = ENTRIES * (ENTRIES - 1) // 2
local function readall(data)
  return function()
    local p = C.once(w, "message")
    w:postMessage({ op = "readall", data = data })
    check(p:await() == wantSum, "readall sum")
  end
end
local frozenRead = timeIt(OBJ_WARM, OBJ_REPS, readall(frozen))
local copyRead = timeIt(OBJ_WARM, OBJ_REPS, readall(arr))
w:terminate():await()

local function mbps(bytes, ms) return bytes / MB / (ms / 1000) end
C.emit("bigclone", {
  object = {
    entries = ENTRIES,
    json_bytes = jsonBytes,
    round_trip_ms = objRt,
    build_ms = objBuild,
    overlapped_floor_ms = 2 * objBuild.p50,
    round_trip_MBps_json = mbps(2 * jsonBytes, objRt.p50),
    one_way_ack_ms = objOneWay,
    one_way_MBps_json = mbps(jsonBytes, objOneWay.p50),
    local_loom_clone_ms = objClone,
    local_cjson_encode_decode_ms = objJson,
    freeze_once_ms = freezeMs,
    frozen_send_read_all_ms = frozenRead,
    copy_send_read_all_ms = copyRead,
  },
  string_16MiB = {
    bytes = BUF_BYTES,
    copy_round_trip_ms = bufCopyRt,
    copy_round_trip_MBps = mbps(2 * BUF_BYTES, bufCopyRt.p50),
    copy_one_way_ack_ms = bufCopyOneWay,
  },
  shared_16MiB = {
    bytes = BUF_BYTES,
    handover_round_trip_ms = shareRt,
  },
})
