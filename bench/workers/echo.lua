-- Minimal echo worker: every message is posted straight back (cloned again).
local loom = require "loom"
loom.parentPort:on("message", function(m) loom.parentPort:postMessage(m) end)
