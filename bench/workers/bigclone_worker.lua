-- Worker side of bigclone.lua.
--   {op = "echo", data = ...}  -> post data back (cloned again)
--   {op = "ack", data = ...}   -> post back the number 0 (one-way cost of data + tiny ack)
-- There is no "echo_transfer": nothing transferable exists yet (needs SharedBuffer).
local loom = require "loom"
local port = loom.parentPort
port:on("message", function(m)
  local op = m.op
  if op == "echo" then
    port:postMessage(m.data)
  elseif op == "ack" then
    port:postMessage(0)
  else
    error("bad op: " .. tostring(op))
  end
end)
