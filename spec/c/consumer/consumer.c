/* A host of an installed loom: make a runtime, attach a state, spawn a
** worker from Lua and get its answer through loom_poll.  Exit 0 when it
** all worked.  argv[1]: the directory of loom's Lua half. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <lualib.h>
#include <lauxlib.h>
#include <loom.h>

int main (int argc, char **argv) {
  loom_runtime *rt = loom_runtime_new(NULL);
  lua_State *L = luaL_newstate();
  char code[1024];
  int i, ok = 0;
  if (rt == NULL || L == NULL || argc < 2) return 2;
  luaL_openlibs(L);
  if (loom_open(L, rt) != 0) return 3;
  loom_runtime_release(rt);
  if (strcmp(loom_strerror(LOOM_EEXIST), "already attached to a runtime") != 0) return 4;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);
  snprintf(code, sizeof code,
           "package.path = '%s/?.lua;%s/?/init.lua;' .. package.path\n"
           "local loom = require 'loom'\n"
           "answer = nil\n"
           "assert(package.loaded['loom.pool'] == nil)\n"
           "local w = loom.Worker(function()\n"
           "  assert(type(require('loom.pool').Pool) == 'function')\n"   /* never loaded here */
           "  require('loom').parentPort:postMessage(6 * 7)\n"
           "end)\n"
           "w:on('message', function(v) answer = v end)\n", argv[1], argv[1]);
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "consumer: %s\n", lua_tostring(L, -1));
    return 5;
  }
  for (i = 0; i < 5000 && !ok; i++) {
    struct timespec ts = {0, 1000000};
    if (loom_poll(L, 1000, 0) < 0) return 6;
    lua_getglobal(L, "answer");
    ok = lua_tointeger(L, -1) == 42;
    lua_pop(L, 1);
    nanosleep(&ts, NULL);
  }
  lua_close(L);
  printf("consumer: %s\n", ok ? "ok" : "no answer");
  return ok ? 0 : 7;
}
