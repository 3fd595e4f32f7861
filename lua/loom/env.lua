-- loom.env: environment data (Node's setEnvironmentData): this thread's
-- copy, cloned into every worker spawned after a change.
local core = require "loom.core"
local events = require "loom.events"

local M = {}

local data = core.envData() or {}
M.data = data

function M.set(k, v)
  if k == nil or k ~= k then events.argerror("setEnvironmentData", 1, "key", k) end
  data[k] = v
end

function M.get(k) return data[k] end

core.boot("loom.env", debug.getinfo(1, "f").func)

return M
