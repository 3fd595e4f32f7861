-- What the docs spec and the LuaLS definitions spec both check against:
-- the public names of the loom module, and the methods of the objects a
-- user holds, found by making one of each.
local loom = require "loom"

local A = {}

-- the module's public names (those init.lua's LAZY loads on first use
-- included)
function A.public_names()
  local names = { Worker = true, Pool = true, BroadcastChannel = true, trace = true,
                  AbortController = true, AbortSignal = true,
                  setEnvironmentData = true, getEnvironmentData = true }
  for k in pairs(loom) do
    if type(k) == "string" and (not k:find("^_") or k == "_VERSION") and k ~= "WorkerClass" then
      names[k] = true
    end
  end
  return names
end

-- the function-valued names an object answers to: its own fields (a
-- Channel's push, a port's postMessage) and its metatables' __index chain
local function methods(o)
  local out, seen = {}, {}
  local function add(t)
    for k, v in pairs(t) do
      if type(k) == "string" and type(v) == "function" and not k:find("^_") then out[k] = true end
    end
  end
  local function scan(t)
    if type(t) ~= "table" or seen[t] then return end
    seen[t] = true
    add(t)
    local mt = getmetatable(t)
    if type(mt) == "table" then scan(mt.__index) end
  end
  if type(o) == "table" then add(o) end
  local mt = getmetatable(o)
  if type(mt) == "table" then scan(mt.__index) end
  return out
end

-- "Class:method" for every method of every class for which
-- known(class, method) is false; every object made is closed again
function A.missing_methods(known)
  local ch = loom.MessageChannel()
  local w = loom.Worker("return", { eval = true })
  local objects = {
    Worker = w, MessagePort = ch.port1, Channel = loom.Channel(),
    BroadcastChannel = loom.BroadcastChannel("api_lib"), SharedBuffer = loom.SharedBuffer(8),
    View = loom.SharedBuffer(8):view("int32"), Future = loom.Future.new(),
    AbortController = loom.AbortController(), AbortSignal = loom.AbortController().signal,
    Timer = loom.setTimeout(function() end, 1),
    Pool = loom.Pool{ source = "return function() end", minThreads = 0 },
  }
  local missing = {}
  for cls, o in pairs(objects) do
    for k in pairs(methods(o)) do
      if not known(cls, k) then missing[#missing + 1] = cls .. ":" .. k end
    end
  end
  objects.Timer:close()
  objects.BroadcastChannel:close()
  ch.port1:close()
  objects.Pool:destroy()
  w:terminate()
  loom.run()
  table.sort(missing)
  return missing
end

return A
