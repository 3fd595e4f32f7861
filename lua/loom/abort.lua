-- loom.abort: AbortController and AbortSignal, as the web platform's.
local core = require "loom.core"
local events = require "loom.events"

local setmetatable, getmetatable, error, pcall, type =
      setmetatable, getmetatable, error, pcall, type

local M = {}

local AbortSignal = events.class("loom.AbortSignal")
local AbortController = { __name = "loom.AbortController" }
AbortController.__index = AbortController
M.AbortSignal, M.AbortControllerClass = AbortSignal, AbortController

local function newsignal()
  return events.emitter(setmetatable({ aborted = false }, AbortSignal))
end

function M.AbortController()
  return setmetatable({ signal = newsignal() }, AbortController)
end

-- every listener runs, even after one raises; the first error is raised
-- once they all have
local function fire(s)
  local ls, first = s._ev.abort, nil
  if not ls then return end
  for i = 1, #ls do
    local ok, err = pcall(ls[i], s.reason)
    if not ok and first == nil then first = err end
  end
  if first ~= nil then error(first, 0) end
end

local function abort(s, reason)
  if s.aborted then return end
  s.aborted, s.reason = true, reason == nil and "aborted" or reason
  fire(s)
end

function AbortController:abort(reason)
  if getmetatable(self) ~= AbortController then
    error(("bad argument #1 to 'abort' (loom.AbortController expected, got %s)")
          :format(type(self)), 2)
  end
  abort(self.signal, reason)
end

-- AbortSignal.timeout(ms): a signal aborted with "timeout" after ms
function AbortSignal.timeout(ms)
  if type(ms) ~= "number" or ms ~= ms or ms < 0 then
    events.argerror("AbortSignal.timeout", 1, "number >= 0", ms)
  end
  local s = newsignal()
  local t = core.timer(function() abort(s, "timeout") end, ms, false)
  t:unref()             -- as Node's: it does not keep the loop alive
  return s
end

core.boot("loom.abort", debug.getinfo(1, "f").func)

return M
