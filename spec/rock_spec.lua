-- The rockspec ships the whole library: every C source the build compiles
-- and every Lua module of lua/loom/ (a file missing from it would install
-- a loom that fails at require or at spawn).
local H = require "helper"

describe("the rockspec", function()
  local root = H.dir .. "/.."
  local spec = {}
  assert(loadfile(root .. "/rocks/loom-scm-1.rockspec", "t", spec))()

  local function list(cmd)
    local p = assert(io.popen(cmd))
    local out = {}
    for l in p:lines() do out[#out + 1] = l end
    p:close()
    return out
  end

  it("compiles every core/*.c", function()
    local have = {}
    for _, s in ipairs(spec.build.modules["loom.core"].sources) do have[s] = true end
    for _, f in ipairs(list("cd " .. root .. " && ls core/*.c")) do
      assert.is_true(have[f] == true, f .. " is not in the rockspec")
    end
  end)

  it("installs every lua/loom/*.lua under its module name", function()
    for _, f in ipairs(list("cd " .. root .. " && ls lua/loom/*.lua")) do
      local name = f:match("^lua/(.*)%.lua$"):gsub("/", ".")
      if name == "loom.init" then name = "loom" end
      assert.are.equal(f, spec.build.modules[name], name .. " is not in the rockspec")
    end
  end)
end)
