-- docs/lua-api.md and docs/c-api.md name every public name of the Lua
-- module, every method of its classes, and every LOOM_API function and
-- public macro of core/loom.h; the examples marked `-- runs` run.
local H = require "helper"
local A = require "api_lib"

local ROOT = H.dir .. "/.."

local function slurp(path)
  local f = assert(io.open(ROOT .. "/" .. path))
  local s = f:read("a")
  f:close()
  return s
end

-- is 'word' in s as a whole word (not a prefix of a longer name)?
local function has(s, word)
  local i = 1
  while true do
    local a, b = s:find(word, i, true)
    if not a then return false end
    local before_ok = not word:find("^[%w_]") or not s:sub(a - 1, a - 1):find("[%w_]")
    if before_ok and not s:sub(b + 1, b + 1):find("[%w_]") then
      return true
    end
    i = b + 1
  end
end

describe("docs/lua-api.md", function()
  local doc = slurp("docs/lua-api.md")

  it("names every public field of the module as loom.<name>", function()
    local missing = {}
    for k in pairs(A.public_names()) do
      if not has(doc, "loom." .. k) then missing[#missing + 1] = k end
    end
    table.sort(missing)
    assert(#missing == 0, "not in docs/lua-api.md: loom." .. table.concat(missing, ", loom."))
  end)

  it("names every method of the classes users hold", function()
    local missing = A.missing_methods(function(_, k) return has(doc, ":" .. k) or has(doc, "." .. k) end)
    assert(#missing == 0, "not in docs/lua-api.md: " .. table.concat(missing, ", "))
  end)

  -- the ```lua blocks whose first line is `-- runs`
  local blocks = {}
  for body in doc:gmatch("```lua\n(.-)```") do
    if body:find("^%-%- runs\n") then blocks[#blocks + 1] = body end
  end

  it("has at least 12 runnable examples", function()
    assert(#blocks >= 12, "only " .. #blocks .. " examples marked -- runs")
  end)

  for i, body in ipairs(blocks) do
    local first = body:match("\n([^\n]*)") or ""
    it(("example %d runs (%s ...)"):format(i, first), function()
      if H.no_fork(pending) then return end
      local out = H.run_script(body, 60)
      assert(out:find("rc=0\n?$"), "example " .. i .. " failed:\n" .. body .. "\n--- output:\n" .. out)
    end)
  end
end)

describe("docs/c-api.md", function()
  local doc = slurp("docs/c-api.md")
  local header = slurp("core/loom.h")

  it("names every LOOM_API function of core/loom.h", function()
    local missing, n = {}, 0
    for name in header:gmatch("LOOM_API[^;(]-([%w_]+)%s*%(") do
      n = n + 1
      if not has(doc, name) then missing[#missing + 1] = name end
    end
    assert(n >= 15, "found only " .. n .. " LOOM_API functions in core/loom.h")
    assert(#missing == 0, "not in docs/c-api.md: " .. table.concat(missing, ", "))
  end)

  it("names every LOOM_E*, LOOM_EV_* and LOOM_VERSION* name of core/loom.h", function()
    local names, missing = {}, {}
    for name in header:gmatch("LOOM_E[%w_]*") do names[name] = true end
    for name in header:gmatch("LOOM_VERSION[%w_]*") do names[name] = true end
    assert(names.LOOM_EV_EXIT and names.LOOM_EINVAL and names.LOOM_VERSION_MAJOR)
    for name in pairs(names) do
      if not has(doc, name) then missing[#missing + 1] = name end
    end
    table.sort(missing)
    assert(#missing == 0, "not in docs/c-api.md: " .. table.concat(missing, ", "))
  end)
end)
