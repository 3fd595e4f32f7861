-- The rockspec ships the whole library: every C source the build compiles
-- and every Lua module of lua/loom/ (a file missing from it would install
-- a loom that fails at require or at spawn), and the LuaLS definitions;
-- `luarocks make` installs it offline into a scratch tree, from which loom
-- runs and where the definitions land in share/lua/5.4/meta/.
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

  it("installs the LuaLS definitions (lua/meta/loom.lua) as meta/loom.lua", function()
    local install = spec.build.install and spec.build.install.lua or {}
    assert.are.equal("lua/meta/loom.lua", install["meta.loom"])
  end)

  it("installs offline with luarocks make; loom runs from the tree, the definitions are there", function()
    if H.no_fork(pending) then return end
    local tmp = list("mktemp -d")[1]
    -- a copy of the sources (luarocks builds its objects where they are),
    -- installed into a scratch tree; the whole script runs without a
    -- sanitizer's preload: this rock is no sanitizer build (and cp -r
    -- fails silently under the ASan preload)
    local f = assert(io.open(tmp .. "/test.sh", "w"))
    f:write(([[
      set -e; cd %q; mkdir src; cp -r %q/core %q/lua %q/rocks src/; cd src
      luarocks --lua-version=5.4 make --tree=%q/tree rocks/loom-scm-1.rockspec >../make.log 2>&1 \
        || { cat ../make.log; exit 1; }
      cmp lua/meta/loom.lua ../tree/share/lua/5.4/meta/loom.lua
      eval "$(luarocks --lua-version=5.4 --tree=%q/tree path)"
      cd /
      lua5.4 -e '
        local loom = require "loom"
        for _, m in ipairs({ "loom.core", "loom" }) do
          local p = m == "loom" and package.path or package.cpath
          assert(package.searchpath(m, p):find("/tree/", 1, true), m .. " is not from the tree")
        end
        local w = loom.Worker(function() require("loom").parentPort:postMessage(6 * 7) end)
        local got; w:on("message", function(v) got = v end); loom.run()
        assert(got == 42, "no answer from a worker of the installed rock")
        print("rock: ok")'
    ]]):format(tmp, root, root, root, tmp, tmp))
    f:close()
    local out = table.concat(list(("env -u LD_PRELOAD sh %q/test.sh 2>&1; echo \"rc=$?\""):format(tmp)), "\n")
    os.execute(("env -u LD_PRELOAD rm -rf %q"):format(tmp))
    assert(out:find("rock: ok\nrc=0$"), out)
  end)
end)
