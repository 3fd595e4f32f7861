/*
** test_embed.c: a host that owns its loop.  It makes a runtime with hooks,
** attaches it to its state, spawns workers from Lua, and drives delivery
** with loom_poll only; then closes the state, which must stop everything.
*/
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <lualib.h>
#include <lauxlib.h>
#include "loom.h"

#define LOOM_STR_(x) #x
#define LOOM_STR(x) LOOM_STR_(x)

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

/* {==================================================================
** A host type: an engine object (a texture) that crosses threads by
** handle.  The object counts its holders; a userdata holds one.
** =================================================================== */
typedef struct texture {
  _Atomic int refs;
  int id;
} texture;

static texture textures[2];   /* the engine's own objects (static: the test's) */

static void tex_release (void *h) { ((texture *)h)->refs--; }

static int tex_encode (lua_State *L, int idx, void **h, char *err, size_t errsz) {
  texture *t = *(texture **)lua_touserdata(L, idx);
  if (t->id < 0) {
    snprintf(err, errsz, "a destroyed texture");
    return 1;
  }
  t->refs++;
  *h = t;
  return 0;
}

static void pushtex (lua_State *L, texture *t) {
  texture **u = (texture **)lua_newuserdatauv(L, sizeof *u, 0);
  *u = t;                     /* the caller gave it its reference */
  luaL_setmetatable(L, "Texture");
}

static int tex_decode (lua_State *L, void *h) {
  pushtex(L, (texture *)h);
  return 0;
}

static const loom_hosttype TEXTURE = {"engine.Texture", tex_encode, tex_decode, tex_release};

static int tex_gc (lua_State *L) {
  texture **u = (texture **)luaL_checkudata(L, 1, "Texture");
  if (*u) tex_release(*u);
  *u = NULL;
  return 0;
}

static int tex_id (lua_State *L) {
  texture **u = (texture **)luaL_checkudata(L, 1, "Texture");
  lua_pushinteger(L, (*u)->id);
  return 1;
}

/* the engine binding of a state: the Texture metatable, registered */
static int open_textures (lua_State *L) {
  int r;
  luaL_newmetatable(L, "Texture");
  lua_pushcfunction(L, tex_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, tex_id);
  lua_setfield(L, -2, "id");
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  r = loom_register_type(L, -1, &TEXTURE);
  lua_pop(L, 1);
  return r;
}

/* }================================================================== */

static void on_state (lua_State *L, void *ud) {
  hoststats *s = (hoststats *)ud;
  s->states++;
  lua_pushinteger(L, 42);
  lua_setglobal(L, "ENGINE_BINDING");     /* an engine binding */
  if (open_textures(L) != 0) luaL_error(L, "cannot register Texture");
}

/* Lua: texture(i) -> a new userdata for the engine's texture i */
static int l_texture (lua_State *L) {
  texture *t = &textures[luaL_checkinteger(L, 1)];
  t->refs++;
  pushtex(L, t);
  return 1;
}

/* Lua: texrefs(i) -> holders of texture i now */
static int l_texrefs (lua_State *L) {
  lua_pushinteger(L, textures[luaL_checkinteger(L, 1)].refs);
  return 1;
}

/* host types: register, send to a worker and back, drop, refuse */
static void test_hosttypes (lua_State *L) {
  int rc, i;
  CHECK(loom_register_type(L, -1, &TEXTURE) == LOOM_EINVAL, "no table there");
  CHECK(loom_register_type(NULL, -1, &TEXTURE) == LOOM_EINVAL, "NULL state");
  {
    loom_hosttype bad = TEXTURE;
    lua_newtable(L);
    bad.release = NULL;
    CHECK(loom_register_type(L, -1, &bad) == LOOM_EINVAL, "no release");
    bad = TEXTURE;
    bad.name = "";
    CHECK(loom_register_type(L, -1, &bad) == LOOM_EINVAL, "empty name");
    lua_pop(L, 1);
  }
  CHECK(strcmp(loom_strerror(LOOM_ENOLOOM), loom_strerror(LOOM_EINVAL)) != 0, "strerror");
  CHECK(open_textures(L) == 0, "register in the main state");
  textures[0].id = 7;
  textures[1].id = -1;                   /* destroyed: cannot be sent */
  lua_register(L, "texture", l_texture);
  lua_register(L, "texrefs", l_texrefs);
  rc = luaL_dostring(L,
    "local loom = require 'loom'\n"
    "tex_reply, tex_err = nil, nil\n"
    "local t = texture(0)\n"
    "assert(texrefs(0) == 1)\n"
    "TW = loom.Worker(function()\n"
    "  local loom = require 'loom'\n"
    "  loom.parentPort:on('message', function(m)\n"
    "    if m == 'bye' then loom.parentPort:close() return end\n"
    "    loom.parentPort:postMessage({ id = m.tex:id(), back = m.tex })\n"
    "  end)\n"
    "end)\n"
    "TW:on('message', function(v) tex_reply = v end)\n"
    "TW:on('error', function(e) tex_err = e end)\n"
    "assert(TW:postMessage({ tex = t }))\n"
    "local ok, err = pcall(TW.postMessage, TW, { list = { io.stdout } })\n"
    "assert(not ok and err:find('msg.list[1]', 1, true), err)\n"
    "ok, err = pcall(TW.postMessage, TW, { t = texture(1) })\n"
    "assert(not ok and err:find('destroyed texture', 1, true), err)\n");
  CHECK(rc == LUA_OK, "texture script: %s", rc ? lua_tostring(L, -1) : "");
  for (i = 0; i < 20000; i++) {
    lua_getglobal(L, "tex_reply");
    rc = lua_istable(L, -1);
    lua_pop(L, 1);
    if (rc) break;
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll");
    nap();
  }
  rc = luaL_dostring(L,
    "assert(tex_reply and tex_reply.id == 7, 'the worker read the texture')\n"
    "assert(getmetatable(tex_reply.back) == getmetatable(texture(0)), 'came back as a Texture')\n"
    "TW:postMessage('bye')\n");
  CHECK(rc == LUA_OK, "texture reply: %s", rc ? lua_tostring(L, -1) : "");
  for (i = 0; i < 20000; i++) {          /* until the worker exited */
    lua_getglobal(L, "TW");
    lua_getfield(L, -1, "_alive");
    rc = lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (!rc) break;
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll");
    nap();
  }
  rc = luaL_dostring(L,
    "tex_reply = nil\n"
    "local dead = TW\n"
    "assert(dead:postMessage({ texture(0) }) == false)\n"   /* dropped: released */
    "TW = nil\n"
    "collectgarbage(); collectgarbage()\n");
  CHECK(rc == LUA_OK, "texture drop: %s", rc ? lua_tostring(L, -1) : "");
  CHECK(textures[0].refs == 0, "every holder of the texture let go (%d left)", (int)textures[0].refs);
  CHECK(textures[1].refs == 0, "the destroyed one too (%d)", (int)textures[1].refs);
}

static void on_start (void *ud, uint64_t id) { (void)id; ((hoststats *)ud)->starts++; }
static void on_stop (void *ud, uint64_t id) { (void)id; ((hoststats *)ud)->stops++; }

/* {==================================================================
** Workers spawned from C: events into a callback, posts of values and
** bytes, bad input, terminate
** =================================================================== */
typedef struct childlog {
  int online, messages, errors, exited;
  long long code;
  char last[64];
} childlog;

static void on_child (void *ud, loom_child *w, int ev, lua_State *L, long long code) {
  childlog *g = (childlog *)ud;
  int top = lua_gettop(L);
  (void)w;
  if (ev == LOOM_EV_ONLINE) g->online++;
  else if (ev == LOOM_EV_MESSAGE) {
    g->messages++;
    snprintf(g->last, sizeof g->last, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  }
  else if (ev == LOOM_EV_ERROR) {
    g->errors++;
    snprintf(g->last, sizeof g->last, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  }
  else if (ev == LOOM_EV_EXIT) {
    g->exited = 1;
    g->code = code;
  }
  CHECK(lua_gettop(L) == top, "callback keeps the stack");
}

static void pump (lua_State *L, childlog *g, int messages) {
  int i;
  for (i = 0; i < 20000 && !g->exited && g->messages < messages; i++) {
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll: %s", lua_tostring(L, -1));
    nap();
  }
}

static void test_children (lua_State *L) {
  static const char ECHO[] =
    "local loom = require 'loom'\n"
    "loom.parentPort:postMessage('hello ' .. loom.workerData)\n"
    "loom.parentPort:on('message', function(v)\n"
    "  if v == 'bye' then loom.parentPort:close() return end\n"
    "  if type(v) == 'table' then v = v.text .. '+' .. #v.list end\n"
    "  loom.parentPort:postMessage('echo ' .. v)\n"
    "end)\n";
  loom_spawn_opts o;
  loom_child *w = NULL;
  childlog g;
  int top = lua_gettop(L), r;
  memset(&o, 0, sizeof o);
  memset(&g, 0, sizeof g);
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == LOOM_EINVAL, "no code and no file");
  o.code = ECHO;
  CHECK(loom_spawn(L, &o, on_child, &g, NULL) == LOOM_EINVAL, "NULL out");
  o.data = "from C";
  o.data_len = 6;
  o.name = "c-child";
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == 0 && w != NULL, "spawn");
  CHECK(lua_gettop(L) == top, "spawn keeps the stack");
  pump(L, &g, 1);
  CHECK(g.online == 1 && g.messages == 1 && strcmp(g.last, "hello from C") == 0,
        "online and workerData (%d, %d, %s)", g.online, g.messages, g.last);
  CHECK(loom_child_post_bytes(w, "raw\0bytes", 3) == 0, "post bytes");
  pump(L, &g, 2);
  CHECK(strcmp(g.last, "echo raw") == 0, "bytes arrive as a string: %s", g.last);
  (void)luaL_dostring(L, "return { text = 'tbl', list = { 1, 2, 3 } }");
  CHECK(loom_child_post(w, -1) == 0, "post a value");
  lua_pop(L, 1);
  pump(L, &g, 3);
  CHECK(strcmp(g.last, "echo tbl+3") == 0, "a table arrives: %s", g.last);
  lua_pushlightuserdata(L, &g);
  (void)luaL_dostring(L, "return io.stdout");
  r = loom_child_post(w, -1);
  CHECK(r == LOOM_ECLONE, "an uncloneable value: %d", r);
  if (r == LOOM_ECLONE) {
    CHECK(strstr(lua_tostring(L, -1), "userdata") != NULL, "says why: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  CHECK(loom_child_post_bytes(w, "bye", 3) == 0, "bye");
  pump(L, &g, 1000);
  CHECK(g.exited && g.code == 0, "exit 0 (%d, %lld)", g.exited, g.code);
  CHECK(loom_child_post_bytes(w, "late", 4) == LOOM_ECLOSED, "post after exit");
  loom_child_release(w);
  CHECK(lua_gettop(L) == top, "stack kept (%d, %d)", lua_gettop(L), top);
  /* a source that does not compile: an error event, exit 1 */
  memset(&g, 0, sizeof g);
  o.code = "this is not lua";
  o.data = NULL;
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == 0, "spawn of a broken source");
  pump(L, &g, 1000);
  CHECK(g.errors == 1 && g.exited && g.code == 1, "error then exit 1 (%d, %lld)", g.errors, g.code);
  loom_child_release(w);
  /* a file that is not there: the spawn itself fails, saying why */
  o.code = NULL;
  o.file = "/nonexistent/worker.lua";
  r = loom_spawn(L, &o, on_child, &g, &w);
  CHECK(r == LOOM_ESPAWN && w == NULL, "missing file: %d", r);
  if (r == LOOM_ESPAWN) {
    CHECK(strstr(lua_tostring(L, -1), "worker.lua") != NULL, "names it: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  /* terminate a spinning one; a released one runs on unheard */
  memset(&g, 0, sizeof g);
  o.file = NULL;
  o.code = "while true do end";
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == 0, "spawn a spinner");
  loom_child_terminate(w);
  pump(L, &g, 1000);
  CHECK(g.exited && g.code == 1, "terminated: exit 1 (%lld)", g.code);
  loom_child_release(w);
  memset(&g, 0, sizeof g);
  o.code = "require('loom').sleep(20)";
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == 0, "spawn, then let go");
  loom_child_release(w);
  loom_child_release(NULL);
  pump(L, &g, 0);
  CHECK(g.online == 0 && !g.exited, "no callback after release");
  CHECK(lua_gettop(L) == top, "stack kept at the end (%d, %d)", lua_gettop(L), top);
}

/* }================================================================== */

/* }================================================================== */

/* {==================================================================
** Destroy: closing the host state stops every worker of the runtime
** (terminated, their waits woken) against one deadline, cfg.close_ms,
** shared by nested workers; those stuck in a foreign C call are detached
** with a warning and free themselves when the call returns.
** =================================================================== */
#define CLOSE_MS 500
#define STUCK_MS 2500

/* calls of stuck() entered: a worker says 'ready' just before its call,
** and a close that came in between would stop it before the call (then
** it is not detached): the test waits for both (any thread) */
static _Atomic int stuck_in;

typedef struct destroyhost {
  _Atomic int starts, stops, warnings, badwarnings;   /* (any thread) */
} destroyhost;

static double now_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* an engine call loom cannot interrupt */
static int l_stuck (lua_State *L) {
  struct timespec ts;
  lua_Integer ms = luaL_checkinteger(L, 1);
  stuck_in++;
  ts.tv_sec = (time_t)(ms / 1000);
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0) {}
  return 0;
}

static void d_state (lua_State *L, void *ud) { (void)ud; lua_register(L, "stuck", l_stuck); }
static void d_start (void *ud, uint64_t id) { (void)id; ((destroyhost *)ud)->starts++; }
static void d_stop (void *ud, uint64_t id) { (void)id; ((destroyhost *)ud)->stops++; }
/* called on any thread (a worker's state closing warns too): counts only,
** the main thread checks the counts (CHECK's globals are its own) */
static void d_warn (void *ud, const char *msg) {
  if (strstr(msg, "detached") == NULL) {
    ((destroyhost *)ud)->badwarnings++;
    fprintf(stderr, "test_embed: unexpected warning: %s\n", msg);
  }
  if (getenv("TEST_EMBED_VERBOSE")) fprintf(stderr, "test_embed: %s\n", msg);
  ((destroyhost *)ud)->warnings++;
}

static int run (lua_State *L, const char *code);

/* A host state on a runtime of its own (cfg may be NULL: default hooks),
** attached, with loom's C half preloaded as a static host has it. */
static lua_State *newhost (const loom_config *cfg) {
  lua_State *L = luaL_newstate();
  loom_runtime *rt = loom_runtime_new(cfg);
  luaL_openlibs(L);
  CHECK(rt != NULL && loom_open(L, rt) == 0, "runtime and attach");
  loom_runtime_release(rt);               /* the state holds it now */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);
  return L;
}

/* loom_pending counts what loom_poll has still to deliver, exactly once
** the senders are done */
static void test_pending (lua_State *L) {
  int i, before, n, after;
  /* the workers of the tests before have exited (their EXIT messages,
  ** late under valgrind, must not land in the middle of this count) */
  for (i = 0; i < 100000; i++) {
    run(L, "kids = require('loom.core').stats().children\n");
    lua_getglobal(L, "kids");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n == 0 && loom_pending(L) == 0) break;
    if (loom_poll(L, 1000, 100) <= 0) nap();
  }
  CHECK(loom_pending(L) == 0, "nothing pending at first (%d)", loom_pending(L));
  run(L, "local loom = require 'loom'\n"
         "got, flooded = 0, false\n"
         "DONE = loom.SharedBuffer(4):view('int32')\n"
         "W = loom.Worker(function(done)\n"
         "  local loom = require 'loom'\n"
         "  for i = 1, 1000 do loom.parentPort:postMessage(i) end\n"
         "  done:store(1, 1)\n"
         "  loom.sleep(1e9)\n"
         "end, {argv = {DONE}})\n"
         "W:on('message', function() got = got + 1 end)\n"
         "W:on('exit', function() flooded = true end)\n");
  /* until the flood is in (the worker says so after its last post: a
  ** count that merely looked steady was once a descheduled worker) */
  for (i = 0; i < 100000; i++) {
    run(L, "posted = DONE:load(1) == 1\n");
    lua_getglobal(L, "posted");
    n = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (n) break;
    nap();
  }
  before = loom_pending(L);
  CHECK(before >= 1000, "the flood waits (%d)", before);
  n = loom_poll(L, 1000000, 10);
  after = loom_pending(L);
  CHECK(n == 10 && after == before - 10, "ten delivered, %d left of %d (%d ran)", after, before, n);
  for (i = 0; i < 10000 && loom_pending(L) > 0; i++)
    CHECK(loom_poll(L, 1000, 100) >= 0, "poll");
  CHECK(loom_pending(L) == 0, "all delivered (%d left)", loom_pending(L));
  run(L, "W:terminate(); W = nil\n");
  for (i = 0; i < 10000; i++) {       /* the exit comes when the thread ends */
    lua_getglobal(L, "flooded");
    n = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (n) break;
    if (loom_pending(L) == 0) nap();
    else CHECK(loom_poll(L, 1000, 100) >= 0, "poll");
  }
  lua_getglobal(L, "got");
  lua_getglobal(L, "flooded");
  CHECK(lua_tointeger(L, -2) == 1000 && lua_toboolean(L, -1), "every message (%d), then the exit (%d)",
        (int)lua_tointeger(L, -2), lua_toboolean(L, -1));
  lua_pop(L, 2);
}

static void test_destroy (void) {
  static destroyhost dh;       /* outlives the test: detached threads end later */
  loom_config cfg;
  lua_State *L;
  double t0, took;
  int i, ready = 0;
  memset(&cfg, 0, sizeof cfg);
  cfg.on_state = d_state;
  cfg.thread_start = d_start;
  cfg.thread_stop = d_stop;
  cfg.warn = d_warn;
  cfg.ud = &dh;
  cfg.close_ms = CLOSE_MS;
  L = newhost(&cfg);
  /* each says 'ready', then blocks: in a pop, a receive, a sleep, a shared
  ** wait, a spin, two foreign C calls, and a spin whose own child is stuck
  ** in a C call */
  run(L, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
         "loom = require 'loom'\n"
         "ready = 0\n"
         "local P = \"local loom = require 'loom'; local ms = ...; \" ..\n"
         "          \"loom.parentPort:postMessage('ready'); \"\n"
         "local bodies = {\n"
         "  \"loom.Channel():pop()\",\n"
         "  \"loom.MessageChannel().port1:receive()\",\n"
         "  \"loom.sleep(1e9)\",\n"
         "  \"loom.workerData:view('int32'):wait(1, 0)\",\n"
         "  \"while true do end\",\n"
         "  \"stuck(ms)\",\n"
         "  \"stuck(ms)\",\n"
         "  \"local kid = loom.Worker(P .. 'stuck(ms)', { eval = true, argv = { ms } }) \" ..\n"
         "  \"kid:on('message', function(m) loom.parentPort:postMessage(m) end) \" ..\n"
         "  \"loom.setTimeout(function() while true do end end, 200)\",\n"
         "}\n"
         "local B = loom.SharedBuffer(8)\n"
         "for _, b in ipairs(bodies) do\n"
         "  local src = b:find('kid') and ('local P = ' .. string.format('%q', P) .. ' ' .. P .. b)\n"
         "            or P .. b\n"
         "  local w = loom.Worker(src, { eval = true, argv = { " LOOM_STR(STUCK_MS) " }, workerData = B })\n"
         "  w:on('message', function() ready = ready + 1 end)\n"
         "end\n");
  for (i = 0; i < 20000 && (ready < 9 || stuck_in < 3); i++) {
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll: %s", lua_tostring(L, -1));
    lua_getglobal(L, "ready");
    ready = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (ready < 9 || stuck_in < 3) nap();
  }
  CHECK(ready == 9, "every worker blocked (%d of 9 ready)", ready);
  CHECK(stuck_in == 3, "the three C calls entered (%d)", (int)stuck_in);
  /* three stuck threads: one after the other, the close would take 3 x CLOSE_MS */
  t0 = now_ms();
  lua_close(L);
  took = now_ms() - t0;
  CHECK(took >= CLOSE_MS * 0.8, "the close waited for the stuck ones (%.0f ms)", took);
  CHECK(took < CLOSE_MS * 2.4, "one deadline for all (%.0f ms, %d ms each)", took, CLOSE_MS);
  if (getenv("TEST_EMBED_VERBOSE")) fprintf(stderr, "test_embed: the close took %.0f ms\n", took);
  /* the two stuck ones and the grandchild (its parent closes a tenth of
  ** close_ms early, to be done when the host looks; on a loaded machine
  ** that parent may be detached too) */
  CHECK(dh.warnings == 3 || dh.warnings == 4, "three detached, each with a warning (%d)",
        (int)dh.warnings);
  CHECK(dh.badwarnings == 0, "every warning says 'detached' (%d did not)", (int)dh.badwarnings);
  /* the detached ones end with their C call and free what they own */
  for (i = 0; i < 1000 && dh.stops < dh.starts; i++) {
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  CHECK(dh.starts == 9 && dh.stops == 9, "every thread ended (%d started, %d stopped)",
        (int)dh.starts, (int)dh.stops);
}

/* {==================================================================
** Hooks that fail, and callbacks that let go: an init hook that raises
** fails its worker (an error event naming it, exit 1, nothing leaked); a
** child's callback may terminate and release its own child, after which no
** callback comes
** =================================================================== */
static void failing_state (lua_State *L, void *ud) {
  (void)ud;
  luaL_error(L, "engine init failed");
}

typedef struct letgo {
  int messages, errors, exits, after;
  int released;
  char err[128];
} letgo;

static void on_letgo (void *ud, loom_child *w, int ev, lua_State *L, long long code) {
  letgo *g = (letgo *)ud;
  (void)code;
  if (g->released) { g->after++; return; }
  if (ev == LOOM_EV_ERROR) {
    g->errors++;
    snprintf(g->err, sizeof g->err, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  }
  else if (ev == LOOM_EV_EXIT) g->exits++;
  else if (ev == LOOM_EV_MESSAGE && ++g->messages == 3) {
    loom_child_terminate(w);            /* from inside its own callback */
    loom_child_release(w);
    g->released = 1;
  }
}

static void test_failing_hooks (void) {
  static hoststats hs;
  loom_config cfg;
  lua_State *L;
  loom_spawn_opts o;
  loom_child *w = NULL;
  letgo g;
  int i;
  memset(&cfg, 0, sizeof cfg);
  cfg.on_state = failing_state;
  cfg.thread_start = on_start;
  cfg.thread_stop = on_stop;
  cfg.ud = &hs;
  L = newhost(&cfg);
  /* a Lua Worker: its error event names the hook's error, exit 1 */
  run(L, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
         "loom = require 'loom'\n"
         "failed, code = nil, nil\n"
         "local w = loom.Worker('error(\"never runs\")', { eval = true })\n"
         "w:on('error', function(e) failed = tostring(e) end)\n"
         "w:on('exit', function(c) code = c end)\n");
  for (i = 0; i < 20000; i++) {
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll");
    lua_getglobal(L, "code");
    if (!lua_isnil(L, -1)) { lua_pop(L, 1); break; }
    lua_pop(L, 1);
    nap();
  }
  run(L, "assert(code == 1, 'exit code ' .. tostring(code))\n"
         "assert(failed and failed:find('engine init failed', 1, true), tostring(failed))\n");
  /* a child spawned from C: ERROR then EXIT */
  memset(&o, 0, sizeof o);
  memset(&g, 0, sizeof g);
  o.code = "require('loom').parentPort:postMessage('never')";
  CHECK(loom_spawn(L, &o, on_letgo, &g, &w) == 0, "spawn");
  for (i = 0; i < 20000 && !g.exits; i++) {
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll");
    if (!g.exits) nap();
  }
  CHECK(g.errors == 1 && strstr(g.err, "engine init failed") != NULL, "the child's error: %s", g.err);
  CHECK(g.exits == 1 && g.messages == 0, "then its exit (%d, %d)", g.exits, g.messages);
  loom_child_release(w);
  lua_close(L);
  CHECK(hs.starts == 2 && hs.stops == 2, "both threads ended (%d, %d)", (int)hs.starts,
        (int)hs.stops);
}

static int writer (lua_State *L, const void *p, size_t n, void *ud) {
  luaL_addlstring((luaL_Buffer *)ud, (const char *)p, n);
  (void)L;
  return 0;
}

/* A worker from the host's own bytecode, with a value for workerData; a
** bounded wait for its end, and for a worker that does not end */
static void test_bytecode_wait (lua_State *L) {
  loom_spawn_opts o;
  loom_child *w = NULL;
  childlog g;
  luaL_Buffer b;
  int top = lua_gettop(L), r;
  CHECK(luaL_loadstring(L, "local loom = require 'loom'\n"
                           "loom.parentPort:postMessage('bc ' .. loom.workerData.x * 2)") == LUA_OK,
        "load the chunk");
  luaL_buffinit(L, &b);                      /* its bytecode, as an engine ships it */
  lua_pushvalue(L, -2);
  lua_dump(L, writer, &b, 1);
  lua_pop(L, 1);
  luaL_pushresult(&b);
  lua_remove(L, -2);                         /* the bytecode string */
  CHECK(luaL_loadbufferx(L, lua_tostring(L, -1), luaL_len(L, -1), "=engine", "b") == LUA_OK,
        "load the bytecode");
  lua_remove(L, -2);                         /* the function */
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, 21);
  lua_setfield(L, -2, "x");                  /* workerData = { x = 21 } */
  memset(&o, 0, sizeof o);
  memset(&g, 0, sizeof g);
  o.fn_idx = -2;
  o.data_idx = -1;
  o.data = "both";
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == LOOM_EINVAL, "data and data_idx: refused");
  o.data = NULL;
  o.code = "x";
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == LOOM_EINVAL, "code and fn_idx: refused");
  o.code = NULL;
  o.fn_idx = -1;                             /* a table, not a function */
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == LOOM_EINVAL, "fn_idx not a function: refused");
  o.fn_idx = -2;
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == 0, "spawn from bytecode: %s",
        lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
  CHECK(lua_gettop(L) == top + 2, "spawn keeps the stack");
  lua_settop(L, top);
  r = loom_child_wait(w, 10000);
  CHECK(r == 0 && g.exited && g.code == 0, "waited for its end (%d, %lld)", r, g.code);
  CHECK(g.messages == 1 && strcmp(g.last, "bc 42") == 0, "its message: %s", g.last);
  CHECK(loom_child_wait(w, 10) == 0, "a wait after the end returns at once");
  loom_child_release(w);
  /* a worker that does not end: the wait times out, then terminate ends it */
  memset(&o, 0, sizeof o);
  memset(&g, 0, sizeof g);
  o.code = "while true do end";
  CHECK(loom_spawn(L, &o, on_child, &g, &w) == 0, "spawn a spinner");
  r = loom_child_wait(w, 50);
  CHECK(r == LOOM_ETIMEDOUT && !g.exited, "the wait timed out (%d)", r);
  loom_child_terminate(w);
  r = loom_child_wait(w, 10000);
  CHECK(r == 0 && g.exited && g.code == 1, "terminated, then waited (%d, %lld)", r, g.code);
  CHECK(loom_child_wait(NULL, 10) == LOOM_EINVAL, "NULL child");
  loom_child_release(w);
  CHECK(lua_gettop(L) == top, "stack kept");
}

static void test_letgo (lua_State *L) {
  loom_spawn_opts o;
  loom_child *w = NULL;
  letgo g;
  int i;
  memset(&o, 0, sizeof o);
  memset(&g, 0, sizeof g);
  o.code = "local port = require('loom').parentPort\n"
           "while true do port:postMessage('tick') end\n";     /* a flood, for ever */
  CHECK(loom_spawn(L, &o, on_letgo, &g, &w) == 0, "spawn a flood");
  for (i = 0; i < 20000 && !g.released; i++) {
    CHECK(loom_poll(L, 1000, 16) >= 0, "poll");
    if (!g.released) nap();
  }
  CHECK(g.released, "the callback let go (%d messages)", g.messages);
  for (i = 0; i < 200; i++) {               /* what was queued is dropped */
    CHECK(loom_poll(L, 1000, 0) >= 0, "poll");
    nap();
  }
  CHECK(g.after == 0, "no callback after the release (%d)", g.after);
}

/* Two runtimes in one process: named channels and BroadcastChannels of
** the same name, workers of each, never meet. */
static int run (lua_State *L, const char *code) {
  int rc = luaL_dostring(L, code);
  CHECK(rc == LUA_OK, "script: %s", rc ? lua_tostring(L, -1) : "");
  if (rc) lua_pop(L, 1);
  return rc;
}

/* A host's allocator is the host's: loom never replaces it, neither in a
** state attached with loom_open nor in one that only preloads loom.core
** (a counting lua_Alloc of its own; the module's main state would move to
** mimalloc only from lauxlib's default allocator) */
typedef struct counted { size_t calls; } counted;

static void *counting_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)osize;
  ((counted *)ud)->calls++;
  if (nsize == 0) { free(ptr); return NULL; }
  return realloc(ptr, nsize);
}

static void test_allocator_kept (void) {
  counted cnt = {0};
  void *ud;
  lua_Alloc before, after;
  size_t calls;
  lua_State *L = newhost(NULL);            /* luaL_newstate, then loom_open */
  before = lua_getallocf(L, &ud);
  CHECK(luaL_dostring(L, "local loom = require 'loom'\n"
                         "local w = loom.Worker('return', { eval = true })\n"
                         "w:terminate():await()") == LUA_OK, "attached host runs a worker");
  after = lua_getallocf(L, NULL);
  CHECK(after == before, "loom_open's state keeps its allocator");
  lua_close(L);
  L = lua_newstate(counting_alloc, &cnt);  /* a host's own allocator, no loom_open */
  CHECK(L != NULL, "counting state");
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);
  CHECK(luaL_dostring(L, "local core = require 'loom.core'\n"
                         "local t = {} for i = 1, 1000 do t[i] = ('x'):rep(i) end") == LUA_OK,
        "loom.core in a state of the host's allocator");
  CHECK(lua_getallocf(L, &ud) == counting_alloc && ud == &cnt, "the host's allocator stays");
  calls = cnt.calls;
  CHECK(luaL_dostring(L, "local t = {} for i = 1, 100 do t[i] = {} end") == LUA_OK, "allocates");
  CHECK(cnt.calls > calls, "and through the host's allocator (%zu -> %zu)", calls, cnt.calls);
  lua_close(L);
  /* lauxlib's allocator and no loom_open, as a plain interpreter: loom may
  ** move the state to its heap; blocks from before and after must both
  ** free right, up to the state's close */
  L = luaL_newstate();
  luaL_openlibs(L);
  CHECK(luaL_dostring(L, "early = {} for i = 1, 2000 do early[i] = ('e'):rep(i % 50) end") == LUA_OK,
        "blocks before loom");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);
  CHECK(luaL_dostring(L, "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path\n"  /* (cwd: the checkout) */
                         "local loom = require 'loom'\n"
                         "for i = 1, 2000, 2 do early[i] = nil end\n"   /* freed after */
                         "for i = 1, 2000 do early[i] = (early[i] or '') .. 'x' end\n"
                         "collectgarbage()\n"
                         "local w = loom.Worker(function() require('loom').parentPort:postMessage(#('y'):rep(1e5)) end)\n"
                         "local got\n"
                         "w:on('message', function(n) got = n end)\n"
                         "loom.run()\n"
                         "assert(got == 100000)") == LUA_OK,
        "default-allocator state with loom.core: %s", lua_tostring(L, -1));
  lua_close(L);
}

static void test_two_runtimes (void) {
  lua_State *A = newhost(NULL), *B = newhost(NULL);
  int i, done = 0;
  run(A, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
         "loom = require 'loom'\n"
         "q = loom.Channel.named('shared-name')\n"
         "bc = loom.BroadcastChannel('shared-name')\n"
         "heard = 0\n"
         "bc:on('message', function() heard = heard + 1 end)\n"
         "q:push('from A')\n");
  run(B, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
         "loom = require 'loom'\n"
         "q = loom.Channel.named('shared-name')\n"
         "assert(#q == 0, 'B sees A\\'s named channel')\n"
         "assert(q:tryPop() == nil)\n"
         "bcb = loom.BroadcastChannel('shared-name')\n"
         "assert(bcb:postMessage('from B'))\n"
         "w = loom.Worker(function()\n"
         "  local loom = require 'loom'\n"
         "  local q = loom.Channel.named('shared-name')\n"
         "  q:push(#q)\n"
         "  local bc = loom.BroadcastChannel('shared-name')\n"
         "  bc:postMessage('from B worker'); bc:close()\n"
         "end)\n"
         "wexit = nil\n"
         "w:on('exit', function(c) wexit = c end)\n");
  for (i = 0; i < 20000 && !done; i++) {
    CHECK(loom_poll(A, 1000, 0) >= 0, "poll A");
    CHECK(loom_poll(B, 1000, 0) >= 0, "poll B");
    lua_getglobal(B, "wexit");
    done = !lua_isnil(B, -1);
    lua_pop(B, 1);
    nap();
  }
  CHECK(done, "B's worker exited");
  for (i = 0; i < 50; i++) { loom_poll(A, 1000, 0); nap(); }
  run(A, "assert(heard == 0, 'A heard B\\'s broadcasts')\n"
         "assert(q:pop(0) == 'from A' and #q == 0, 'A\\'s channel kept its own value')\n");
  run(B, "assert(q:pop(0) == 0, 'B\\'s worker found B\\'s channel empty')\n"
         "bcb:close()\n");
  run(A, "bc:close()\n");
  lua_close(A);
  lua_close(B);
}

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
  CHECK(loom_register_type(L, -1, &TEXTURE) != 0, "no runtime yet");
  CHECK(loom_open(L, rt) == 0, "attach");
  CHECK(loom_open(L, rt) == LOOM_EEXIST, "attach twice is refused");
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
  test_hosttypes(L);
  test_children(L);
  test_pending(L);
  test_letgo(L);
  test_bytecode_wait(L);
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
  CHECK(st.states >= 7, "on_state ran for each worker that ran (%d)", (int)st.states);
  CHECK(st.starts == 14 && st.stops == 14, "thread hooks (%d, %d)", (int)st.starts, (int)st.stops);
  test_two_runtimes();
  test_destroy();
  test_failing_hooks();
  test_allocator_kept();
  printf("test_embed: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
