/*
** entry.c: the entry points.  luaopen_loom_core (the module "loom.core":
** the main thread's context, every binding), loom_open, loom_poll and
** loom_backend_fd.  The only file that knows every concept.
*/
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

static const char RTKEY = 'r';    /* registry: runtime given by loom_open */

/* {======================================================================
** Attaching a host state to a runtime
** ======================================================================= */

/* Holds loom_open's reference until the first require takes it. */
static int rtbox_gc (lua_State *L) {
  loom_runtime **box = (loom_runtime **)lua_touserdata(L, 1);
  loom_runtime_release(*box);
  *box = NULL;
  return 0;
}

/* A package.preload loader for a module built into the library. */
static int embedded_loader (lua_State *L) {
  const loom_embedded *e = (const loom_embedded *)lua_touserdata(L, lua_upvalueindex(1));
  char chunkname[80];
  snprintf(chunkname, sizeof chunkname, "=[loom] %s", e->name);
  if (luaL_loadbufferx(L, e->src, e->len, chunkname, "t") != LUA_OK) return lua_error(L);
  lua_pushstring(L, e->name);
  lua_call(L, 1, 1);
  return 1;
}

/* libloom carries loom's Lua half: package.preload gets loom.core and a
** loader for each module (those the host preloaded itself stay). */
static int preload_p (lua_State *L) {
  const loom_embedded *e = loom__embedded();
  if (e == NULL) return 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (lua_getfield(L, -1, "loom.core") == LUA_TNIL) {
    lua_pushcfunction(L, luaopen_loom_core);
    lua_setfield(L, -3, "loom.core");
  }
  lua_pop(L, 1);
  for (; e->name; e++) {
    if (lua_getfield(L, -1, e->name) == LUA_TNIL) {
      lua_pushlightuserdata(L, (void *)e);
      lua_pushcclosure(L, embedded_loader, 1);
      lua_setfield(L, -3, e->name);
    }
    lua_pop(L, 1);
  }
  return 0;
}

int loom_open (lua_State *L, loom_runtime *rt) {
  loom_runtime **box;
  int had;
  if (L == NULL || rt == NULL) return LOOM_EINVAL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RTKEY);
  had = !lua_isnil(L, -1) || loom__ctx_get(L) != NULL;
  lua_pop(L, 1);
  if (had) return LOOM_EEXIST;
  box = (loom_runtime **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, rtbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  loom__runtime_retain(rt);
  *box = rt;                       /* released when the state closes */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RTKEY);
  lua_pushcfunction(L, preload_p);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {   /* out of memory: files still work */
    lua_pop(L, 1);
    return LOOM_ENOMEM;
  }
  return 0;
}

/* The runtime of L: its context's, or the one loom_open gave; NULL. */
static loom_runtime *runtime_of (lua_State *L) {
  loom_ctx *c = loom__ctx_get(L);
  loom_runtime *rt = NULL;
  if (c) return c->rt;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RTKEY) == LUA_TUSERDATA)
    rt = *(loom_runtime **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return rt;
}

/* }====================================================================== */

/* {======================================================================
** Host types: a loom_hosttype becomes a clone hook.  Its reference vtable
** and hook are kept by the runtime (one per type), so every state of the
** runtime shares them: a message made in one state names the same vtable
** the receiving state's hook has, and outlives the state that made it.
** ======================================================================= */

typedef struct hostreg {
  loom_refvt vt;
  loom_clonehook hook;
} hostreg;

static void hostreg_init (void *block, const void *key) {
  hostreg *r = (hostreg *)block;
  const loom_hosttype *t = (const loom_hosttype *)key;
  r->vt.name = t->name;
  r->vt.release = t->release;
  r->hook.name = t->name;
  r->hook.vt = &r->vt;
  r->hook.encode = t->encode;
  r->hook.decode = t->decode;
}

static int addhook_p (lua_State *L) {
  loom__serial_addhook(L, 1, (const loom_clonehook *)lua_touserdata(L, 2));
  return 0;
}

int loom_register_type (lua_State *L, int mtidx, const loom_hosttype *t) {
  loom_runtime *rt;
  hostreg *r;
  size_t n;
  if (L == NULL || t == NULL || t->name == NULL || t->encode == NULL ||
      t->decode == NULL || t->release == NULL)
    return LOOM_EINVAL;
  n = strlen(t->name);
  if (n == 0 || n > 255 || !lua_istable(L, mtidx)) return LOOM_EINVAL;
  if ((rt = runtime_of(L)) == NULL) return LOOM_ENOLOOM;
  if ((r = (hostreg *)loom__runtime_keep(rt, t, sizeof *r, hostreg_init, NULL)) == NULL)
    return LOOM_ENOMEM;
  mtidx = lua_absindex(L, mtidx);
  if (!lua_checkstack(L, 3)) return LOOM_ENOMEM;
  lua_pushcfunction(L, addhook_p);
  lua_pushvalue(L, mtidx);
  lua_pushlightuserdata(L, &r->hook);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {      /* the registry could not grow */
    lua_pop(L, 1);
    return LOOM_ENOMEM;
  }
  return 0;
}

const char *loom_strerror (int err) {
  switch (err) {
    case 0: return "success";
    case LOOM_EINVAL: return "invalid argument";
    case LOOM_ENOMEM: return "not enough memory";
    case LOOM_EEXIST: return "already attached to a runtime";
    case LOOM_ENOLOOM: return "the state has no loom runtime (call loom_open first)";
    case LOOM_ESPAWN: return "the worker could not be spawned";
    case LOOM_ECLOSED: return "the worker has exited or closed its port";
    case LOOM_ECLONE: return "the value cannot be cloned";
    case LOOM_ETIMEDOUT: return "timed out";
    default: return "unknown loom error";
  }
}

/* }====================================================================== */

/* {======================================================================
** Embedding entry points
** ======================================================================= */

int loom_poll (lua_State *L, int budget_us, int max_messages) {
  loom_ctx *c = loom__ctx_get(L);
  if (c == NULL || c->running || c->closed) return 0;
  return loom__ctx_poll(c, L, budget_us, max_messages);
}

int loom_pending (lua_State *L) {
  loom_ctx *c = loom__ctx_get(L);
  uint64_t pushed, done;
  if (c == NULL || c->closed) return 0;
  pushed = loom__mailbox_pushed(c->mb);
  done = (uint64_t)atomic_load_explicit(&c->stats->done, memory_order_relaxed);
  if (pushed <= done) return 0;
  return pushed - done > INT_MAX ? INT_MAX : (int)(pushed - done);
}

int loom_backend_fd (lua_State *L) {
  loom_ctx *c = loom__ctx_get(L);
  return c && !c->closed ? uv_backend_fd(&c->loop) : -1;
}

/* }====================================================================== */

/* {======================================================================
** The module
** ======================================================================= */

/* The main thread's context lives inside this full userdata, anchored in
** the registry; it is made before every other userdata of loom, so its
** finalizer runs last.  It closes the loop and marks the context closed;
** the memory itself stays until the state is freed, so a loom function
** called by a later finalizer finds it and raises. */
static int ctxbox_gc (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, 1);
  if (!c->closed) {
    c->closed = 1;
    loom__ctx_close(c);
  }
  return 0;
}

/* The main thread's context: the box first, closed, with its finalizer,
** then what it holds (liolib's create-closed-then-acquire). */
static loom_ctx *main_ctx (lua_State *L) {
  loom_runtime **rtbox, *rt;
  lua_State *ML;
  loom_ctx *c = loom__ctx_get(L);
  int own = 0, r;
  if (c) return c;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);   /* not a coroutine */
  ML = lua_tothread(L, -1);
  lua_pop(L, 1);
  c = (loom_ctx *)lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->closed = 1;                         /* nothing to close yet */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, ctxbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, c);  /* anchored for the state's life */
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RTKEY);
  rtbox = (loom_runtime **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  rt = rtbox ? *rtbox : NULL;
  if (rt == NULL) {                      /* plain Lua: default hooks */
    loom_config cfg;
    const char *e = getenv("LOOM_SPIN_US");   /* for measuring the spin */
    memset(&cfg, 0, sizeof cfg);
    if (e && *e) cfg.spin_us = atoi(e) > 0 ? atoi(e) : -1;
    e = getenv("LOOM_LANE_BARRIER");
    cfg.lane_barrier = e && atoi(e) > 0;
    loom__alloc_adopt(ML);            /* not a host's state */
    rt = loom_runtime_new(&cfg);
    own = 1;
    if (rt == NULL) luaL_error(L, "loom: not enough memory");
  }
  if ((r = loom__ctx_init(c, rt, ML, NULL)) != 0) {
    memset(c, 0, sizeof *c);
    c->closed = 1;
    if (own) loom_runtime_release(rt);
    luaL_error(L, "loom: cannot create the event loop: %s", uv_strerror(r));
  }
  if (own) loom_runtime_release(rt);   /* the context holds it now */
  /* published last, with the error slots: a state that ran out of memory
  ** before here has no context, and the next require makes one */
  if (loom__ctx_install(L, c)) {
    loom__ctx_close(c);
    memset(c, 0, sizeof *c);
    c->closed = 1;
    luaL_error(L, "loom: not enough memory");
  }
  rt->open_core = luaopen_loom_core;     /* what workers of rt run */
  rt->worker_main = loom__state_main;
  return c;
}

/* core.setdispatch(dispatch, fast): 'fast' maps a target to its sole
** 'message' listener, called directly with the value. */
static int l_setdispatch (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_unref(L, LUA_REGISTRYINDEX, c->dispatch_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->fast_ref);
  lua_settop(L, 2);
  c->fast_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* core.setimmediates(run): what the loop's check phase calls while
** immediates wait (loom.timers sets it when it loads: no immediate waits
** before). */
static int l_setimmediates (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, c->immediate_ref);
  lua_settop(L, 1);
  c->immediate_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* core.boot(name, chunk): keep the bytecode of one of loom's Lua modules,
** so that workers load it without searching or parsing.  Kept with debug
** information: loom's frames in worker tracebacks have line numbers.
** core.boot(name, path): keep the path of the source file of a module the
** main state has not loaded (init.lua: those loaded on first use), so that
** a worker finds it whatever package.path says by then; its bytecode
** replaces it once the main state runs it. */
static int l_boot (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  loom_buf b = {NULL, 0, 0};
  int r;
  const char *name = luaL_checkstring(L, 1);
  const loom_boot *had = loom__runtime_boot_find(c->rt, name);
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    const char *path = lua_tolstring(L, 2, &len);
    if (had) return 0;
    if (loom__buf_reserve(&b, len + 1)) return luaL_error(L, "core.boot: not enough memory");
    memcpy(b.p, path, len + 1);
    b.len = len + 1;
    r = loom__runtime_boot_add(c->rt, name, (const char *)b.p, b.len, 1);
    loom__buf_free(&b);
    if (r < 0) return luaL_error(L, "core.boot: not enough memory");
    return 0;
  }
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (had && !had->file) return 0;
  if (lua_dump(L, loom__buf_writer, &b, 0) != 0) {   /* dump with no lock held */
    loom__buf_free(&b);
    return luaL_error(L, "core.boot: not enough memory");
  }
  r = loom__runtime_boot_add(c->rt, name, (const char *)b.p, b.len, 0);
  loom__buf_free(&b);
  if (r < 0) return luaL_error(L, "core.boot: not enough memory");
  return 0;
}

/* core.heap_collect(): free heap memory back to the system (the stress
** specs, before they read the resident set) */
static int l_heap_collect (lua_State *L) {
  (void)L;
  loom__alloc_collect();
  return 0;
}

static const luaL_Reg funcs[] = {
  {"setdispatch", l_setdispatch},
  {"setimmediates", l_setimmediates},
  {"boot", l_boot},
  {"heap_collect", l_heap_collect},
  {NULL, NULL}
};

static void setkinds (lua_State *L) {
  static const struct { const char *name; int kind; } kinds[] = {
    {"MESSAGE", LOOM_MSG_MESSAGE}, {"ONLINE", LOOM_MSG_ONLINE},
    {"ERROR", LOOM_MSG_ERROR}, {"EXIT", LOOM_MSG_EXIT},
    {"CLOSE", LOOM_MSG_CLOSE}, {"MESSAGEERROR", LOOM_MSG_MESSAGEERROR},
    {"READY", LOOM_MSG_READY},
  };
  size_t i;
  lua_createtable(L, 0, (int)(sizeof kinds / sizeof kinds[0]));
  for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    lua_pushinteger(L, kinds[i].kind);
    lua_setfield(L, -2, kinds[i].name);
  }
  lua_setfield(L, -2, "MSG");
}

/* Concepts a worker may never touch open on first use: on the first miss
** of loom.core's __index, or when a message brings a by-reference value
** whose hook this thread does not know (serial.c calls the opener then).
** An echo worker saves about 90k instructions of its start.  The main
** thread opens them at once.  Called as __index(core, key), or with no
** argument (the cloner's opener); upvalue 1: core, 2: the context. */
static void openlazy (lua_State *L, loom_ctx *c) {
  loom__channel_open(L, c);
  loom__broadcast_open(L, c);
  loom__shared_open(L, c);
  loom__frozen_open(L);
  loom__trace_open(L, c);
  loom__testref_open(L);
}

static int l_openlazy (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, lua_upvalueindex(2));
  int top = lua_gettop(L);
  if (c->closed)
    return luaL_error(L, "loom is closed in this state (called from a finalizer "
                         "that ran after loom's own)");
  lua_pushvalue(L, lua_upvalueindex(1));
  if (lua_getmetatable(L, -1)) {           /* not opened yet */
    lua_pop(L, 1);
    openlazy(L, c);   /* may raise (memory): then the next try opens again */
    lua_pushnil(L);
    lua_setmetatable(L, -2);
    lua_pushnil(L);
    loom__serial_setopener(L);
  }
  if (top < 2) return 0;
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

int luaopen_loom_core (lua_State *L) {
  loom_ctx *c = main_ctx(L);
  lua_createtable(L, 0, 64);             /* what every concept adds: 60 */
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
  lua_pushboolean(L, c->self == NULL);
  lua_setfield(L, -2, "isMainThread");
  lua_pushinteger(L, (lua_Integer)c->thread_id);
  lua_setfield(L, -2, "threadId");
  lua_pushliteral(L, LOOM_VERSION);
  lua_setfield(L, -2, "version");
  setkinds(L);
  loom__serial_open(L);
  loom__loop_open(L, c);
  loom__port_open(L, c);
  loom__worker_open(L, c);
  if (c->self == NULL) openlazy(L, c);
  else {
    lua_createtable(L, 0, 1);              /* core's metatable */
    lua_pushvalue(L, -2);
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, l_openlazy, 2);
    lua_pushvalue(L, -1);
    loom__serial_setopener(L);             /* pops one */
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
  }
  return 1;
}

/* }====================================================================== */
