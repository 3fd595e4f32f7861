-- lua/meta/loom.lua (the LuaLS definitions) names every public field of
-- the loom module and every method of its classes, so an editor's
-- completion matches the code.
local A = require "api_lib"

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
    for k in pairs(A.public_names()) do
      if not defined(s, "loom", k) then missing[#missing + 1] = k end
    end
    table.sort(missing)
    assert(#missing == 0, "not in lua/meta/loom.lua: " .. table.concat(missing, ", "))
  end)

  it("name every method of the classes users hold", function()
    local missing = A.missing_methods(function(cls, k)
      return defined(s, cls, k) or defined(s, "Emitter", k)
    end)
    assert(#missing == 0, "not in lua/meta/loom.lua: " .. table.concat(missing, ", "))
  end)
end)
