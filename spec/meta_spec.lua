-- lua/meta/loom.lua (the LuaLS definitions) names every public field of
-- the loom module and every method of its classes, so an editor's
-- completion matches the code.
local loom = require "loom"

local DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local function readmeta()
  local f = assert(io.open(DIR .. "/../lua/meta/loom.lua"))
  local s = f:read("a")
  f:close()
  return s
end

-- a function of class 'cls' is defined in the file, or a field of that
-- name (the module's values that are not functions are fields)
local function defined(s, cls, name)
  return s:find("function " .. cls .. "[:.]" .. name .. "%(") ~= nil
      or s:find("\n%-%-%-@field " .. name .. "[%s%?]") ~= nil
end

describe("the LuaLS definitions", function()
  local s = readmeta()

  it("name every public field of the module", function()
    local missing = {}
    local names = { Worker = true, Pool = true }
    for k in pairs(loom) do
      if type(k) == "string" and not k:find("^_[^V]") and k ~= "WorkerClass" then names[k] = true end
    end
    for k in pairs(names) do
      if not defined(s, "loom", k) then missing[#missing + 1] = k end
    end
    table.sort(missing)
    assert(#missing == 0, "not in lua/meta/loom.lua: " .. table.concat(missing, ", "))
  end)

  it("name every method of the classes users hold", function()
    local ch = loom.MessageChannel()
    local w = loom.Worker("return", { eval = true })
    local objects = {
      Worker = w, MessagePort = ch.port1, Channel = loom.Channel(),
      BroadcastChannel = loom.BroadcastChannel("meta"), SharedBuffer = loom.SharedBuffer(8),
      View = loom.SharedBuffer(8):view("int32"), Future = loom.Future.new(),
      AbortController = loom.AbortController(),
      Pool = loom.Pool{ source = "return function() end", minThreads = 0 },
    }
    local missing = {}
    for cls, o in pairs(objects) do
      local mt = getmetatable(o)
      local idx = type(mt) == "table" and mt.__index
      local seen = {}
      local function scan(t)
        if type(t) ~= "table" or seen[t] then return end
        seen[t] = true
        for k, v in pairs(t) do
          if type(k) == "string" and type(v) == "function" and not k:find("^_") and
             not defined(s, cls, k) and not defined(s, "Emitter", k) then
            missing[#missing + 1] = cls .. ":" .. k
          end
        end
        local m2 = getmetatable(t)
        if type(m2) == "table" then scan(m2.__index) end
      end
      scan(idx)
    end
    objects.BroadcastChannel:close()
    ch.port1:close()
    objects.Pool:destroy()
    w:terminate()
    loom.run()
    table.sort(missing)
    assert(#missing == 0, "not in lua/meta/loom.lua: " .. table.concat(missing, ", "))
  end)
end)
