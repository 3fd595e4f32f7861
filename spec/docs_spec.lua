-- The API reference and the README stay true to the code.
--
-- docs/lua-api.md names every public name of the Lua module and every
-- method of its classes; docs/c-api.md every LOOM_API function and every
-- LOOM_E* / LOOM_EV_* / LOOM_VERSION* macro of core/loom.h.
--
-- Every code block of README.md and docs/*.md works, by this convention
-- (the block's fence, then its first line):
--
--   ```lua  a complete program: run in its own lua5.4 process, it must
--           exit 0.  First line `-- fragment`: a piece of a program, only
--           compiled (load).
--   ```c    a complete program: compiled with the flags spec/c/test_embed.c
--           is compiled with (read from the build tree, less the house's
--           -Wdeclaration-after-statement: an example may declare a name
--           where it first uses it), linked as it is against libloom.a,
--           run (with no LUA_PATH or LUA_CPATH: libloom carries loom's
--           Lua half), and it must exit 0.  First line
--           `/* fragment, given: DECL; DECL; */`: the body of a function,
--           compiled (not linked) after the standard headers, lua.h,
--           lauxlib.h, lualib.h, loom.h and an extern declaration of each
--           DECL (`lua_State *L; int frame_time_left(void);`).
--   ```json a configuration file: it must parse (lua-cjson).
--   ```sh   shell commands, not run here: they are make's targets, the
--           examples (spec/examples_spec.lua runs them) and the rock
--           (spec/rock_spec.lua installs it).
--
-- A fence of any other language, or of none, fails the spec, so that no
-- block escapes by the way it is spelled.
local H = require "helper"
local A = require "api_lib"

local ROOT = H.dir .. "/.."

local function slurp(path)
  local f = assert(io.open(path:find("^/") and path or ROOT .. "/" .. path))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

-- run a shell command; its output with "rc=<exit status>" appended
local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\""))
  local out = p:read("a")
  p:close()
  return out
end

local function ok_rc(out) return out:find("rc=0\n?$") ~= nil end

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

-- the fenced blocks of a markdown file: { lang, body, line } in order
local function blocks_of(path)
  local out, cur = {}, nil
  local n = 0
  for l in (slurp(path) .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local fence = l:match("^%s*```+([^`]*)$")   -- (an info string has no backquote)
    if cur then
      if fence and fence:find("^%s*$") then
        cur.body = table.concat(cur.lines, "\n") .. "\n"
        out[#out + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = l
      end
    elseif fence then
      cur = { lang = fence:match("^%s*(.-)%s*$"), line = n + 1, lines = {}, file = path }
    end
  end
  assert(cur == nil, path .. ": a code block opened on line " .. (cur and cur.line - 1 or 0) .. " never closes")
  return out
end

-- README.md, docs/README.md and the pages it links (read, not listed: a
-- shell cannot start under the TSan preload; the index is checked against
-- the directory below where one can)
local function md_files()
  local files = { "README.md", "docs/README.md" }
  for f in slurp("docs/README.md"):gmatch("%]%(([%w_%-]+%.md)%)") do files[#files + 1] = "docs/" .. f end
  return files
end

-- {====== compiling the C blocks as spec/c/test_embed.c is compiled

-- the build tree the specs run against: the one loom.core is loaded from
local function build_dir()
  local so = assert(package.searchpath("loom.core", package.cpath), "loom.core is not on package.cpath")
  return (assert(so:match("^(.*)/loom/core%.so$"), "loom.core is not a build tree's loom/core.so: " .. so))
end

-- cc, its flags and the link line of test_embed, from CMake's files
local function toolchain()
  local b = build_dir()
  local flags = slurp(b .. "/CMakeFiles/test_embed.dir/flags.make")
  local link = slurp(b .. "/CMakeFiles/test_embed.dir/link.txt")
  local cc = assert(flags:match("# compile C with (%S+)"), "no compiler in flags.make")
  local function var(name) return assert(flags:match("\n" .. name .. " = ([^\n]*)"), name) end
  local cflags = (var("C_DEFINES") .. " " .. var("C_INCLUDES") .. " " .. var("C_FLAGS"))
    :gsub("%-Wdeclaration%-after%-statement", "")
  link = link:gsub("%s+$", "")
  assert(link:find("CMakeFiles/test_embed.dir/spec/c/test_embed.c.o", 1, true)
         and link:find("-o test_embed", 1, true), "link.txt of test_embed is not as expected: " .. link)
  return { dir = b, cc = cc, cflags = cflags, link = link }
end

local C_PRELUDE = [[
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "loom.h"
]]

-- compile (and for a complete program, link and run) one ```c block;
-- returns true, or false and what went wrong
local function check_c(tc, blk)
  local base = os.tmpname()
  local src, obj, exe = base .. ".c", base .. ".o", base .. ".exe"
  local given = blk.body:match("^/%* fragment, given: (.-)%s*%*/\n")
  local text
  if given then
    local decls = {}
    for d in given:gmatch("[^;]+") do
      d = d:match("^%s*(.-)%s*$")
      if d ~= "" then decls[#decls + 1] = "extern " .. d .. ";\n" end
    end
    text = C_PRELUDE .. table.concat(decls) .. "void loom_doc_fragment(void);\nvoid loom_doc_fragment(void) {\n"
      .. ('#line %d "%s"\n'):format(blk.line, blk.file) .. blk.body .. "}\n"
  else
    text = ('#line %d "%s"\n'):format(blk.line, blk.file) .. blk.body
  end
  spit(src, text)
  -- the compiler runs without a sanitizer's preload (it is no part of the test)
  local out = sh(("env -u LD_PRELOAD %s %s -c %s -o %s"):format(tc.cc, tc.cflags, src, obj))
  if ok_rc(out) and not given then
    local link = tc.link:gsub("CMakeFiles/test_embed%.dir/spec/c/test_embed%.c%.o", obj)
      :gsub("%-o test_embed", "-o " .. exe)
    out = sh(("cd %s && env -u LD_PRELOAD %s"):format(tc.dir, link))
    -- with no LUA_PATH or LUA_CPATH: libloom carries loom's Lua half
    if ok_rc(out) then
      out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 timeout 60 %s")
               :format(ROOT, exe))
    end
  end
  for _, f in ipairs({ base, src, obj, exe }) do os.remove(f) end
  if ok_rc(out) then return true end
  return false, out
end

-- }======

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

describe("the code blocks of README.md and docs/", function()
  local all, count = {}, {}
  for _, f in ipairs(md_files()) do
    for _, b in ipairs(blocks_of(f)) do
      all[#all + 1] = b
      local k = f .. " " .. b.lang
      count[k] = (count[k] or 0) + 1
    end
  end

  it("are found in every page of docs/, each linked from docs/README.md", function()
    if H.no_fork(pending) then return end
    local listed, linked = {}, {}
    local p = assert(io.popen("cd " .. ROOT .. " && ls docs/*.md"))
    for f in p:lines() do listed[#listed + 1] = f end
    p:close()
    for _, f in ipairs(md_files()) do if f:find("^docs/") then linked[#linked + 1] = f end end
    table.sort(listed)
    table.sort(linked)
    assert.are.same(listed, linked)
  end)

  it("are found: README's example and the reference's", function()
    assert((count["README.md lua"] or 0) >= 1, "README.md has no ```lua block")
    assert((count["README.md c"] or 0) >= 1, "README.md has no ```c block")
    assert((count["docs/lua-api.md lua"] or 0) >= 19, "docs/lua-api.md: only "
      .. (count["docs/lua-api.md lua"] or 0) .. " ```lua blocks")
    assert((count["docs/c-api.md c"] or 0) >= 5, "docs/c-api.md: only "
      .. (count["docs/c-api.md c"] or 0) .. " ```c blocks")
  end)

  it("are each ```lua, ```c, ```json or ```sh", function()
    for _, b in ipairs(all) do
      assert(b.lang == "lua" or b.lang == "c" or b.lang == "json" or b.lang == "sh",
        ("%s:%d: a block fenced ```%s (lua, c, json or sh expected)"):format(b.file, b.line - 1, b.lang))
    end
  end)

  local tc
  for _, b in ipairs(all) do
    local first = b.body:match("^([^\n]*)")
    local telling = first    -- the block's first line that tells it apart
    for l in b.body:gmatch("[^\n]+") do
      if not (l:find("fragment") or l:find("^local loom = require") or l:find("^#include")) then
        telling = l
        break
      end
    end
    local what = ("%s:%d (%s)"):format(b.file, b.line, telling)
    if b.lang == "lua" and first == "-- fragment" then
      it("lua fragment compiles: " .. what, function()
        local f, err = load(b.body, "=" .. b.file .. ":" .. b.line)
        assert(f, err)
      end)
    elseif b.lang == "lua" then
      it("lua program runs: " .. what, function()
        if H.no_fork(pending) then return end
        local out = H.run_script(b.body, 60)
        assert(ok_rc(out), what .. " failed:\n" .. b.body .. "\n--- output:\n" .. out)
      end)
    elseif b.lang == "json" then
      it("json parses: " .. what, function()
        local ok, cjson = pcall(require, "cjson")
        if not ok then return pending("needs lua-cjson") end
        local pok, err = pcall(cjson.decode, b.body)
        assert(pok, what .. ": " .. tostring(err))
      end)
    elseif b.lang == "c" then
      local frag = first:find("^/%* fragment, given: ") ~= nil
      it((frag and "C fragment compiles: " or "C program compiles, links and runs: ") .. what, function()
        if H.no_fork(pending) then return end
        tc = tc or toolchain()
        local ok, out = check_c(tc, b)
        assert(ok, what .. " failed:\n" .. b.body .. "\n--- output:\n" .. tostring(out))
      end)
    end
  end
end)
