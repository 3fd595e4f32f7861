-- Worker side of bigclone.lua.
--   {op = "echo", data = ...}  -> post data back (cloned again)
--   {op = "ack", data = ...}   -> post back the number 0 (one-way cost of data + tiny ack)
--   {op = "readall", data = array or frozen array} -> read every entry's id,
--                                 name and v; post back the sum of the ids
-- A SharedBuffer is "transferred" by echo: it travels by reference.
local loom = require "loom"
local port = loom.parentPort
port:on("message", function(m)
  local op = m.op
  if op == "echo" then
    port:postMessage(m.data)
  elseif op == "ack" then
    port:postMessage(0)
  elseif op == "readall" then
    local a, sum = m.data, 0
    for i = 1, #a do
      local e = a[i]
      local _, _ = e.name, e.v
      sum = sum + e.id
    end
    port:postMessage(sum)
  else
    error("bad op: " .. tostring(op))
  end
end)
