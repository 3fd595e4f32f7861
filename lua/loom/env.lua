-- loom.env: environment data (Node's setEnvironmentData): this thread's
-- copy, cloned into every worker spawned after a change.  Decoded on
-- first use, so a worker can register the classes it holds first.
local core = require "loom.core"
local events = require "loom.events"

local M = {}

local data

function M.table()
  if data == nil then data = core.envData() or {} end
  return data
end

function M.set(k, v)
  if k == nil or k ~= k then events.argerror("setEnvironmentData", 1, "key", k) end
  M.table()[k] = v
end

function M.get(k) return M.table()[k] end

core.boot("loom.env", debug.getinfo(1, "f").func)

return M
