rockspec_format = "3.0"
package = "loom"
version = "scm-1"
source = {
  url = "git+file:///dev/null",   -- installed from a checkout: luarocks make
}
description = {
  summary = "Node.js-style worker threads for Lua 5.4: workers, messages, shared memory",
  detailed = [[
Every worker is an OS thread with its own lua_State and libuv event loop;
workers exchange cloned messages and can be terminated at any instruction.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  MIMALLOC = { header = "mimalloc.h", library = "mimalloc" },   -- Debian: libmimalloc-dev
}
build = {
  type = "builtin",
  modules = {
    ["loom.core"] = {
      sources = {
        "core/buf.c", "core/alloc.c",
        "core/stream.c", "core/message.c", "core/mailbox.c", "core/wake.c", "core/runtime.c", "core/stop.c",
        "core/trace.c",
        "core/ctx.c", "core/serial.c", "core/state.c",
        "core/loop.c", "core/port.c", "core/channel.c", "core/broadcast.c", "core/worker.c",
        "core/shared.c", "core/frozen.c", "core/testref.c",
        "core/entry.c", "core/host.c", "core/noembed.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L", "LOOM_HAVE_MIMALLOC" },
      incdirs = { "core", "$(LIBUV_INCDIR)", "$(MIMALLOC_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(MIMALLOC_LIBDIR)" },
      libraries = { "uv", "mimalloc", "pthread" },
    },
    ["loom"] = "lua/loom/init.lua",
    ["loom.events"] = "lua/loom/events.lua",
    ["loom.future"] = "lua/loom/future.lua",
    ["loom.timers"] = "lua/loom/timers.lua",
    ["loom.abort"] = "lua/loom/abort.lua",
    ["loom.env"] = "lua/loom/env.lua",
    ["loom.endpoint"] = "lua/loom/endpoint.lua",
    ["loom.port"] = "lua/loom/port.lua",
    ["loom.channel"] = "lua/loom/channel.lua",
    ["loom.broadcast"] = "lua/loom/broadcast.lua",
    ["loom.worker"] = "lua/loom/worker.lua",
    ["loom.pool"] = "lua/loom/pool.lua",
    ["loom.shared"] = "lua/loom/shared.lua",
    ["loom.trace"] = "lua/loom/trace.lua",   -- trace.start needs lua-cjson
  },
  -- The LuaLS definitions (never required): <tree>/share/lua/5.4/meta/loom.lua,
  -- a directory for lua-language-server's workspace.library (README, "Editor
  -- support").  The builtin type copies lua/ whole anyway; named here so it stays.
  install = {
    lua = { ["meta.loom"] = "lua/meta/loom.lua" },
  },
}
