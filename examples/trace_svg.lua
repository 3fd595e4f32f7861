-- examples/trace_svg.lua: draw a loom trace (Chrome Trace Event JSON, as
-- loom.trace.start writes it) as an SVG timeline, one lane per thread:
-- task runs green (failed red) in the upper part of a lane; message
-- deliveries blue, posts orange, queueings grey in the lower part; instants (spawn, online, exit, ...) as ticks, and a
-- thin line for each flow from a task's queueing to its run.
--
--   lua5.4 examples/trace_svg.lua trace.json [out.svg] [width]
--
-- Also a module: require-able as dofile(...)(json_path, svg_path, width).
local cjson = require "cjson"

local function esc(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                         ['"'] = "&quot;" }))
end

local COLORS = {
  ["task.finished"] = "#3a9d4a", ["task.failed"] = "#d33c3c", ["message.deliver"] = "#3b73c4",
  ["message.post"] = "#e8902a", ["channel.push"] = "#e8902a", ["channel.pop"] = "#3b73c4",
  ["task.queued"] = "#9a9a9a",
}

local function render(jsonpath, svgpath, width)
  width = width or 1200
  local f = assert(io.open(jsonpath))
  local doc = cjson.decode(f:read("a"))
  f:close()
  local names, lanes, order = {}, {}, {}
  local t0, t1 = math.huge, -math.huge
  local flows_s, flows_f = {}, {}
  for _, e in ipairs(doc.traceEvents) do
    if e.ph == "M" and e.name == "thread_name" then names[e.tid] = e.args.name
    elseif e.ph == "s" then flows_s[e.id] = e
    elseif e.ph == "f" then flows_f[e.id] = e
    elseif e.ph == "X" or e.ph == "i" then
      if not lanes[e.tid] then lanes[e.tid] = {}; order[#order + 1] = e.tid end
      table.insert(lanes[e.tid], e)
      t0 = math.min(t0, e.ts)
      t1 = math.max(t1, e.ts + (e.dur or 0))
    end
  end
  table.sort(order)
  local LANE, TOP, LEFT = 34, 40, 150
  local height = TOP + #order * LANE + 30
  local span = math.max(t1 - t0, 1)
  local function x(t) return LEFT + (t - t0) / span * (width - LEFT - 20) end
  local lane_of = {}
  local out = {}
  local function w(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  w(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '):format(width, height),
    ('viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">\n'):format(width, height),
    ('<rect width="%d" height="%d" fill="white"/>\n'):format(width, height),
    ('<text x="10" y="22" font-size="14" font-weight="bold">loom trace: %s (%.1f ms, %d threads)</text>\n')
      :format(esc(jsonpath:match("[^/]*$")), span / 1000, #order))
  for i, tid in ipairs(order) do
    local y = TOP + (i - 1) * LANE
    lane_of[tid] = y
    w(('<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>\n'):format(LEFT, y, width - LEFT - 20,
      LANE - 4, i % 2 == 0 and "#f4f4f4" or "#fafafa"),
      ('<text x="8" y="%d">%s</text>\n'):format(y + LANE / 2 + 2, esc(names[tid] or ("tid " .. tid))))
    for _, e in ipairs(lanes[tid]) do
      local ev = e.args and e.args.event or e.name
      if e.ph == "X" then
        -- tasks in the upper part of the lane, messages below (a task runs
        -- inside the delivery of the chunk that brought it)
        local task = ev:find("^task%.") ~= nil
        local x0 = x(e.ts)
        local wd = math.max(x(e.ts + e.dur) - x0, 0.6)
        w(('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s" stroke="white" '
           .. 'stroke-width="0.3"><title>%s</title></rect>\n')
          :format(x0, task and y + 2 or y + LANE - 12, wd, task and LANE - 16 or 7,
                  COLORS[ev] or "#7a5cc4", esc(("%s  %.3f ms"):format(e.name, e.dur / 1000))))
      else
        w(('<line x1="%.2f" x2="%.2f" y1="%d" y2="%d" stroke="#222" stroke-width="1.5"><title>%s</title></line>\n')
          :format(x(e.ts), x(e.ts), y, y + LANE - 4, esc(e.name)))
      end
    end
  end
  -- task flows only (messages are too many to draw at this scale)
  for id, s in pairs(flows_s) do
    local fe = flows_f[id]
    if fe and s.name == "task" and lane_of[s.tid] and lane_of[fe.tid] then
      w(('<line x1="%.2f" y1="%d" x2="%.2f" y2="%d" stroke="#555" stroke-opacity="0.35" stroke-width="0.7"/>\n')
        :format(x(s.ts), lane_of[s.tid] + LANE / 2, x(fe.ts), lane_of[fe.tid] + LANE / 2))
    end
  end
  -- a time axis
  local ty = TOP + #order * LANE + 14
  for k = 0, 10 do
    local t = t0 + span * k / 10
    w(('<text x="%.1f" y="%d" fill="#555" text-anchor="middle">%.0f ms</text>\n')
      :format(x(t), ty, (t - t0) / 1000))
  end
  w("</svg>\n")
  local o = assert(io.open(svgpath, "w"))
  o:write(table.concat(out))
  o:close()
  return #order
end

if arg and arg[0] and arg[0]:match("trace_svg%.lua$") and arg[1] then
  local out = arg[2] or (arg[1]:gsub("%.json$", "") .. ".svg")
  local n = render(arg[1], out, tonumber(arg[3]))
  print(("%s: %d lanes"):format(out, n))
end

return render
