/*
** test_embed.c: a host that owns its loop.  It makes a runtime with hooks,
** attaches it to its state, spawns workers from Lua, and drives delivery
** with loom_poll only; then closes the state, which must stop everything.
*/
#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <lualib.h>
#include <lauxlib.h>
#include "loom.h"

static int failures = 0, checks = 0;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
  fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
  fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static void nap (void) {
  struct timespec ts = {0, 200000};
  nanosleep(&ts, NULL);
}

typedef struct hoststats {
  _Atomic int states, starts, stops;
} hoststats;

static void on_state (lua_State *L, void *ud) {
  hoststats *s = (hoststats *)ud;
  s->states++;
  lua_pushinteger(L, 42);
  lua_setglobal(L, "ENGINE_BINDING");     /* an engine binding */
}

static void on_start (void *ud, uint64_t id) { (void)id; ((hoststats *)ud)->starts++; }
static void on_stop (void *ud, uint64_t id) { (void)id; ((hoststats *)ud)->stops++; }

int main (void) {
  hoststats st = {0, 0, 0};
  loom_config cfg;
  loom_runtime *rt;
  lua_State *L;
  int frames = 0, rc;
  memset(&cfg, 0, sizeof cfg);
  cfg.on_state = on_state;
  cfg.thread_start = on_start;
  cfg.thread_stop = on_stop;
  cfg.ud = &st;
  rt = loom_runtime_new(&cfg);
  CHECK(rt != NULL, "runtime");
  L = luaL_newstate();
  luaL_openlibs(L);
  CHECK(loom_open(L, rt) == 0, "attach");
  CHECK(loom_open(L, rt) == -1, "attach twice is refused");
  loom_runtime_release(rt);               /* the state holds it now */
  CHECK(loom_backend_fd(L) == -1, "no fd before loom is loaded");
  /* a static host preloads the C half; the Lua half comes from lua/ */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);
  rc = luaL_dostring(L,
    "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
    "local loom = require 'loom'\n"
    "results = {}\n"
    "for i = 1, 3 do\n"
    "  local w = loom.Worker(function(n)\n"
    "    local loom = require 'loom'\n"
    "    loom.parentPort:postMessage(n * ENGINE_BINDING)\n"
    "  end, { argv = { i } })\n"
    "  w:on('message', function(v) results[#results + 1] = v end)\n"
    "end\n");
  CHECK(rc == LUA_OK, "script: %s", rc ? lua_tostring(L, -1) : "");
  if (rc != LUA_OK) return 1;
  CHECK(loom_backend_fd(L) >= 0, "backend fd");
  for (frames = 0; frames < 20000; frames++) {   /* the host's frame loop */
    int n;
    lua_getglobal(L, "results");
    n = (int)luaL_len(L, -1);
    lua_pop(L, 1);
    if (n == 3) break;
    CHECK(loom_poll(L, 1000, 16) >= 0, "poll");
    {
      nap();
    }
  }
  rc = luaL_dostring(L,
    "table.sort(results)\n"
    "assert(results[1] == 42 and results[2] == 84 and results[3] == 126, 'results')");
  CHECK(rc == LUA_OK, "results: %s", rc ? lua_tostring(L, -1) : "");
  /* a host that sleeps in poll(2) on the backend fd is woken by a message */
  rc = luaL_dostring(L,
    "local loom = require 'loom'\n"
    "late = nil\n"
    "local w = loom.Worker(\"local l = require 'loom'; l.sleep(50); l.parentPort:postMessage('late')\", { eval = true })\n"
    "w:on('message', function(v) late = v end)\n");
  CHECK(rc == LUA_OK, "late worker: %s", rc ? lua_tostring(L, -1) : "");
  {
    int woken = 0, i;
    for (i = 0; i < 20; i++) {
      struct pollfd pfd;
      pfd.fd = loom_backend_fd(L);
      pfd.events = POLLIN;
      pfd.revents = 0;
      CHECK(loom_poll(L, 1000, 0) >= 0, "poll");
      lua_getglobal(L, "late");
      woken = lua_isstring(L, -1);
      lua_pop(L, 1);
      if (woken) break;
      if (poll(&pfd, 1, 5000) == 0) break;     /* asleep 5 s: never woken */
    }
    CHECK(woken, "the backend fd woke the host for the message");
  }
  /* an uncaught error in a callback surfaces from loom_poll */
  rc = luaL_dostring(L,
    "local loom = require 'loom'\n"
    "loom.setTimeout(function() error('boom in timer') end, 0)\n");
  CHECK(rc == LUA_OK, "timer script");
  {
    int got = 0, i;
    for (i = 0; i < 2000 && !got; i++) {
      if (loom_poll(L, 1000, 0) < 0) {
        got = 1;
        CHECK(strstr(lua_tostring(L, -1), "boom in timer") != NULL, "error text: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
      }
      else {
        nap();
      }
    }
    CHECK(got, "uncaught timer error reaches loom_poll");
  }
  /* a worker still running when the host closes its state is stopped */
  rc = luaL_dostring(L,
    "local loom = require 'loom'\n"
    "loom.Worker('while true do end', { eval = true })\n");
  CHECK(rc == LUA_OK, "spinning worker");
  lua_close(L);
  CHECK(st.states >= 4, "on_state ran for each worker that ran (%d)", (int)st.states);
  CHECK(st.starts == 5 && st.stops == 5, "thread hooks (%d, %d)", (int)st.starts, (int)st.stops);
  printf("test_embed: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
