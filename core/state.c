/*
** state.c: a worker's lua_State and the life of its thread.  A state is a
** full Lua (every standard library) made terminable: coroutine.resume,
** .wrap and .close record which coroutine runs (terminate() arms it too),
** os.exit ends the worker alone, xpcall skips its handler while the worker
** is being stopped; its allocator enforces resourceLimits.maxMemoryMb; a
** package searcher serves loom's Lua modules from the runtime's bytecode.
** The thread body builds such a state, runs the worker's code and its
** loop, reports an uncaught error, and always sends the exit.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <lualib.h>
#include "loom_lua.h"

/* {======================================================================
** Terminable coroutines, os.exit and xpcall (after lcorolib/lbaselib)
** ======================================================================= */

static int closethread (loom_ctx *c, lua_State *co, lua_State *L) {
  lua_State *prev = loom__stop_track(c->stop, co);  /* __close handlers run in co */
  int st;
#if LUA_VERSION_RELEASE_NUM >= 50406
  st = lua_closethread(co, L);
#else
  (void)L;
  st = lua_resetthread(co);
#endif
  loom__stop_untrack(c->stop, prev, L);
  return st;
}

static int auxresume (lua_State *L, loom_ctx *c, lua_State *co, int narg) {
  lua_State *prev;
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  prev = loom__stop_track(c->stop, co);
  status = lua_resume(co, L, narg, &nres);
  loom__stop_untrack(c->stop, prev, L);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

static lua_State *getco (lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  return co;
}

static int co_resume (lua_State *L) {
  lua_State *co = getco(L);
  int r;
  if (co == L) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume non-suspended coroutine");
    return 2;
  }
  r = auxresume(L, loom__ctx_check(L), co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_auxwrap (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_State *co = lua_tothread(L, lua_upvalueindex(2));
  int r = auxresume(L, c, co, lua_gettop(L));
  if (r < 0) {
    int st = lua_status(co);
    if (st != LUA_OK && st != LUA_YIELD) {   /* error in the coroutine */
      closethread(c, co, L);
      lua_xmove(co, L, 1);
    }
    if (lua_type(L, -1) == LUA_TSTRING) {   /* add where the call was */
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

/* coroutine.close, as lcorolib's, with the __close handlers tracked */
static int co_close (lua_State *L) {
  lua_State *co = getco(L);
  int st;
  if (co == L) return luaL_error(L, "cannot close a running coroutine");
  if (lua_status(co) == LUA_OK) {
    lua_Debug ar;
    if (lua_getstack(co, 0, &ar))     /* it has frames: it is active */
      return luaL_error(L, "cannot close a normal coroutine");
  }
  st = closethread(loom__ctx_check(L), co, L);  /* suspended, or dead */
  if (st == LUA_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);
  return 2;
}

static int co_wrap (lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, lua_upvalueindex(1));    /* ctx */
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_auxwrap, 2);
  return 1;
}

/* os.exit in a worker ends that worker alone, at once: check, then act. */
static int os_exit (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_Integer code;
  if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? 0 : 1;
  else code = luaL_optinteger(L, 1, 0);
  c->exiting = 1;
  c->exit_code = code;
  loom__stop_request(c->stop);
  lua_pushliteral(L, LOOM_TERMINATED);
  return lua_error(L);
}

/* xpcall whose message handler is skipped while the worker is being
** terminated: Lua runs a handler for an error raised by a hook with
** hooks off, so a handler that never returns could not be stopped. */
static int guard_msgh (lua_State *L) {
  if (loom__ctx_stopping(loom__ctx_check(L))) return 1;
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int finishpcall (lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

static int co_xpcall (lua_State *L) {
  int n = lua_gettop(L), status;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, guard_msgh, 2);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2);
  status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finishpcall);
  return finishpcall(L, status, 2);
}

/* debug.sethook, which user code may call while the worker is being
** terminated (even from C, many times per instruction, as table.sort with
** it as the comparator does): the terminating hook is put back. */
static int db_sethook (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  if (lua_pcall(L, lua_gettop(L) - 1, 0, 0) != LUA_OK) {
    /* called from C, the original cannot name itself: it says '?' */
    if (lua_type(L, -1) == LUA_TSTRING)
      luaL_gsub(L, lua_tostring(L, -1), "to '?'", "to 'sethook'");
    return lua_error(L);
  }
  loom__stop_rearm(c->stop);
  return 0;
}

static void patch (lua_State *L, loom_ctx *c, const char *lib,
                   const char *name, lua_CFunction f) {
  lua_getglobal(L, lib);
  lua_pushlightuserdata(L, c);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

/* }====================================================================== */

/* {======================================================================
** The allocator of a worker with resourceLimits.maxMemoryMb: counts the
** bytes of its state and refuses to pass the limit (Lua then raises "not
** enough memory").  Only the worker's thread uses it.  It counts the bytes
** Lua asks for: not the arena's region around them (256 KiB, mostly
** untouched) nor the rounding of a small block up to its class.
** ======================================================================= */

typedef struct memlimit {
  lua_Alloc base;
  void *base_ud;
  size_t used, limit;
} memlimit;

static void *limited_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  memlimit *m = (memlimit *)ud;
  size_t old = ptr ? osize : 0;
  void *p;
  if (nsize == 0) {
    m->base(m->base_ud, ptr, osize, 0);
    m->used -= old;
    return NULL;
  }
  if (nsize > old && m->used + (nsize - old) > m->limit) return NULL;
  p = m->base(m->base_ud, ptr, osize, nsize);
  if (p) m->used = m->used - old + nsize;
  return p;
}

/* lauxlib's warning function (luaL_newstate's, which makes its states
** on libc's heap): off until "@on"; a message's pieces on one line */
static void warnon (void *ud, const char *msg, int tocont);
static void warnoff (void *ud, const char *msg, int tocont);

static int warncontrol (lua_State *L, const char *msg, int tocont) {
  if (tocont || *(msg++) != '@') return 0;     /* not a control message */
  if (strcmp(msg, "off") == 0) lua_setwarnf(L, warnoff, L);
  else if (strcmp(msg, "on") == 0) lua_setwarnf(L, warnon, L);
  return 1;
}

static void warnoff (void *ud, const char *msg, int tocont) {
  warncontrol((lua_State *)ud, msg, tocont);
}

static void warncont (void *ud, const char *msg, int tocont) {
  lua_State *L = (lua_State *)ud;
  fputs(msg, stderr);
  if (!tocont) fputs("\n", stderr);
  fflush(stderr);
  lua_setwarnf(L, tocont ? warncont : warnon, L);
}

static void warnon (void *ud, const char *msg, int tocont) {
  if (warncontrol((lua_State *)ud, msg, tocont)) return;
  fputs("Lua warning: ", stderr);
  warncont(ud, msg, tocont);
}

/* and its panic function: say what the error was (then Lua aborts) */
static int panic (lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                   : "error object is not a string";
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", msg);
  fflush(stderr);
  return 0;
}

/* }====================================================================== */

/* {======================================================================
** loom's Lua modules from the runtime's bytecode: a package searcher
** ======================================================================= */

/* What a worker boots (its libraries, loom.core, loom's Lua modules)
** lives as long as its state, so the collector pauses while it is made: a
** young state's collector would otherwise run cycle after cycle over it
** (a tenth of a spawn's instructions).  A full heap still collects (Lua's
** emergency collection runs while the collector is stopped).  Resumed,
** the next cycle waits until the heap has grown by as much again, as the
** end of a cycle with the default pause would have set. */
static void gc_resume (lua_State *L) {
  int kb = lua_gc(L, LUA_GCCOUNT);
  lua_gc(L, LUA_GCRESTART);
  if (kb > 0) lua_gc(L, LUA_GCSTEP, -kb);   /* a negative step defers */
}

/* A module of loom's loads with the collector paused (gc_resume), only
** when it ran (a script's collectgarbage("stop") stands), and resumed
** whatever the load raised. */
static int l_loadboot (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  const loom_boot *b = (const loom_boot *)lua_touserdata(L, lua_upvalueindex(2));
  char chunkname[80];
  int running = lua_gc(L, LUA_GCISRUNNING), st;
  (void)c;
  snprintf(chunkname, sizeof chunkname, "@[loom] %s", b->name);
  if (running) lua_gc(L, LUA_GCSTOP);
  st = b->file ? luaL_loadfilex(L, b->code, "t")
               : luaL_loadbufferx(L, b->code, b->len, chunkname, "b");
  if (st == LUA_OK) {
    lua_pushvalue(L, 1);        /* the module name, as require passes it */
    st = lua_pcall(L, 1, 1, 0);
  }
  if (running) gc_resume(L);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* searcher(name): loom.core, and every module a thread of this runtime
** has booted (core.boot), whenever it was booted */
static int l_searcher (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  const char *name = luaL_checkstring(L, 1);
  const loom_boot *b;
  if (strcmp(name, "loom.core") == 0) {
    lua_pushcfunction(L, c->rt->open_core);
    lua_pushliteral(L, ":preload:");
    return 2;
  }
  if ((b = loom__runtime_boot_find(c->rt, name)) == NULL) {
    const loom_embedded *e = loom__embedded();   /* built into libloom? */
    for (; e && e->name; e++) {
      if (strcmp(e->name, name) == 0) {
        char chunkname[80];
        snprintf(chunkname, sizeof chunkname, "=[loom] %s", name);
        if (luaL_loadbufferx(L, e->src, e->len, chunkname, "t") != LUA_OK) return lua_error(L);
        lua_pushliteral(L, ":loom:");
        return 2;
      }
    }
    lua_pushfstring(L, "no module '%s' in loom's bytecode", name);
    return 1;
  }
  lua_pushlightuserdata(L, c);
  lua_pushlightuserdata(L, (void *)b);    /* lives as long as the runtime */
  lua_pushcclosure(L, l_loadboot, 2);
  lua_pushliteral(L, ":loom:");
  return 2;
}

/* Put the searcher second, after preload and before the path searchers. */
static void addsearcher (lua_State *L, loom_ctx *c) {
  lua_Integer i, n;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushlightuserdata(L, c);
  lua_pushcclosure(L, l_searcher, 1);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
}

/* }====================================================================== */

/* {======================================================================
** The worker thread
** ======================================================================= */

static void post_parent (loom_ctx *c, int kind, loom_buf *b, loom_refs *refs) {
  loom_worker *w = (loom_worker *)c->self;
  loom_msg *m = loom__msg_new(kind, 0, b, refs);
  if (m) loom__pair_post(w->pair, 1, m, 1);
}

static void setpath (lua_State *L, const char *field, const char *value) {
  if (value == NULL) return;
  lua_getglobal(L, "package");
  lua_pushstring(L, value);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

/* Protected: prepare the state, then run the main chunk. */
static int wmain (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, 1);
  loom_worker *w = (loom_worker *)c->self;
  int st = LUA_OK, nargs = 0;
  lua_gc(L, LUA_GCSTOP);          /* until loom.core is in (gc_resume) */
  luaL_openlibs(L);
  patch(L, c, "os", "exit", os_exit);
  patch(L, c, "coroutine", "resume", co_resume);
  patch(L, c, "coroutine", "wrap", co_wrap);
  patch(L, c, "coroutine", "close", co_close);
  lua_pushlightuserdata(L, c);
  lua_pushcclosure(L, co_xpcall, 1);
  lua_setglobal(L, "xpcall");
  lua_getglobal(L, "debug");
  lua_pushlightuserdata(L, c);
  lua_getfield(L, -2, "sethook");
  lua_pushcclosure(L, db_sethook, 2);
  lua_setfield(L, -2, "sethook");
  lua_pop(L, 1);
  setpath(L, "path", w->path);
  setpath(L, "cpath", w->cpath);
  addsearcher(L, c);
  luaL_requiref(L, "loom.core", c->rt->open_core, 0);   /* its clone hooks */
  lua_pop(L, 1);
  gc_resume(L);
  if (c->rt->cfg.on_state) c->rt->cfg.on_state(L, c->rt->cfg.ud);
  lua_settop(L, 0);
  if (LOOM_TRACING(c->rt))
    loom__trace(c->rt, &c->trace, LOOM_TR_ONLINE, 0, 0, 0, 0, NULL, 0);
  post_parent(c, LOOM_MSG_ONLINE, NULL, NULL);
  switch (w->kind) {
    case LOOM_SRC_FILE: {   /* read by the parent: skip a '#' first line */
      const char *src = w->source;
      size_t len = w->srclen;
      if (len && src[0] == '#') {
        while (len && *src != '\n') { src++; len--; }
      }
      st = luaL_loadbufferx(L, src, len, w->chunkname, "t");
      break;
    }
    case LOOM_SRC_CODE: {
      char name[80];
      if (w->name) snprintf(name, sizeof name, "=[worker '%s']", w->name);
      else snprintf(name, sizeof name, "=[worker %llu]", (unsigned long long)w->id);
      st = luaL_loadbufferx(L, w->source, w->srclen, name, "t");
      break;
    }
    default:
      if (loom__decode(L, (const unsigned char *)w->source, w->srclen, NULL, 0))
        st = LUA_ERRRUN;
      else if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "worker source is not a function");
        st = LUA_ERRRUN;
      }
      break;
  }
  if (st != LUA_OK) return lua_error(L);
  if (w->argv) {
    lua_Integer i, n;
    if (w->argv->nrefs)        /* by-reference values: loom's Lua half has their hooks */
      loom__ctx_require(L, "worker", "loom");
    if (loom__decode_msg(L, w->argv)) return lua_error(L);
    n = luaL_len(L, -1);
    luaL_checkstack(L, (int)(n < 1000000 ? n : 1000000) + 1, "too many arguments");
    for (i = 1; i <= n; i++) lua_geti(L, 2, i);
    lua_remove(L, 2);
    nargs = (int)n;
  }
  lua_call(L, nargs, 0);
  return 0;
}

static int tostr (lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Protected: send {err, traceback} (err as text if it cannot be cloned). */
static int report (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, 1);
  char err[512];
  if (!lua_isstring(L, 3)) {    /* Lua runs no handler for a memory error */
    lua_pushliteral(L, "(no traceback: the error was raised out of memory)");
    lua_replace(L, 3);
  }
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, 2);
  c->scratch.len = 0;
  if (loom__encode(L, -1, &c->scratch, &c->scratch_refs, "error", err, sizeof err)) {
    lua_pushcfunction(L, tostr);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
    }
    lua_rawseti(L, -2, 1);
    c->scratch.len = 0;
    if (loom__encode(L, -1, &c->scratch, &c->scratch_refs, "error", err, sizeof err))
      return luaL_error(L, "%s", err);
  }
  if (LOOM_TRACING(c->rt)) {
    size_t n = 0;
    const char *s = lua_tolstring(L, 2, &n);
    if (s == NULL) s = "(error object is not a string)", n = strlen(s);
    loom__trace(c->rt, &c->trace, LOOM_TR_ERROR, 0, 0, 0, 0, s, n);
  }
  post_parent(c, LOOM_MSG_ERROR, &c->scratch, &c->scratch_refs);
  loom__refs_clear(&c->scratch_refs);    /* if the message could not be made */
  return 0;
}

/* The error of the worker is pending in c: report it unless it is the
** termination unwinding.  Returns the exit code. */
static lua_Integer failed (loom_ctx *c, memlimit *mem) {
  lua_State *L = c->L;
  size_t limit = mem->limit;
  if (c->exiting) return c->exit_code;
  if (loom__ctx_stopping(c)) return 1;
  mem->limit = SIZE_MAX;          /* room to report */
  lua_pushcfunction(L, report);
  lua_pushlightuserdata(L, c);
  if (loom__ctx_take_error(L, c)) {
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);
  }
  else lua_pop(L, 2);
  mem->limit = limit;             /* the finalizers lua_close runs keep it */
  return 1;
}

static lua_Integer run (loom_ctx *c, memlimit *mem) {
  lua_State *L = c->L;
  lua_pushcfunction(L, wmain);
  lua_pushlightuserdata(L, c);
  if (loom__ctx_pcall(c, 1, 0) != LUA_OK && !c->has_error)
    return c->exiting ? c->exit_code : 1;   /* terminated */
  if (!c->has_error && !c->exiting && !loom__ctx_stopping(c)) {
    c->running = 1;
    while (uv_run(&c->loop, UV_RUN_DEFAULT) && !c->stopping)
      ;
    c->running = 0;
  }
  if (c->has_error || loom__ctx_stopping(c)) return failed(c, mem);
  return c->exiting ? c->exit_code : 0;
}

/* The worker could not even start: say why, without a Lua state. */
static void failstart (loom_worker *w, const char *why) {
  loom_buf b = {NULL, 0, 0};
  loom_msg *m = NULL;
  if (loom__errblob(&b, why) == 0) m = loom__msg_new(LOOM_MSG_ERROR, 0, &b, NULL);
  loom__buf_free(&b);
  if (m) loom__pair_post(w->pair, 1, m, 1);
}

void loom__state_main (void *arg) {
  loom_worker *w = (loom_worker *)arg;
  loom_runtime *rt = w->rt;
  loom_ctx c;
  lua_State *L;
  lua_Integer code = 1;
  int ok = 0, r;
  memlimit mem;
  loom_arena *arena = NULL;
#ifdef __linux__
  {
    char tname[16];
    snprintf(tname, sizeof tname, "loom:%s", w->name ? w->name : "worker");
    prctl(PR_SET_NAME, tname, 0, 0, 0);
  }
#endif
  if (rt->cfg.thread_start) rt->cfg.thread_start(rt->cfg.ud, w->id);
  if (rt->cfg.alloc) {           /* a host's allocator is never replaced */
    mem.base = rt->cfg.alloc;
    mem.base_ud = rt->cfg.alloc_ud;
  }
  else if ((arena = loom__arena_new(LOOM_ARENA_SIZE)) != NULL) {
    mem.base = loom__arena_alloc;
    mem.base_ud = arena;
  }
  else {
    mem.base = loom__alloc_libc;
    mem.base_ud = NULL;
  }
  mem.used = 0;
  mem.limit = w->mem_limit ? w->mem_limit : SIZE_MAX;
  L = w->mem_limit ? lua_newstate(limited_alloc, &mem) : lua_newstate(mem.base, mem.base_ud);
  if (L) {                        /* as luaL_newstate's (on_state may change them) */
    lua_atpanic(L, panic);
    lua_setwarnf(L, warnoff, L);
  }
  if (L == NULL) failstart(w, "cannot create the worker's Lua state: not enough memory");
  else if ((r = loom__ctx_init(&c, rt, L, w->inbox)) != 0) {
    char why[160];
    snprintf(why, sizeof why, "cannot create the worker's event loop: %s", uv_strerror(r));
    failstart(w, why);
  }
  else {
    ok = 1;
    c.self = w;
    c.stop = &w->stop;
    c.thread_id = w->id;
    loom__tbuf_name(&c.trace, w->id, w->name ? w->name : "worker");
    c.stats = &w->stats;
    atomic_store_explicit(&w->stats.start, uv_hrtime(), memory_order_relaxed);
    if (loom__ctx_install(L, &c) == 0 && !loom__stop_attach(&w->stop, L))
      code = run(&c, &mem);
    loom__stop_detach(&w->stop);
    if (loom__ctx_stopping(&c)) code = 1;
  }
  if (L) lua_close(L);            /* finalizers may still call os.exit */
  loom__arena_free(arena);
  if (ok && c.exiting) code = c.exit_code;
  if (ok && LOOM_TRACING(rt))
    loom__trace(rt, &c.trace, LOOM_TR_EXIT, 0, 0, (int64_t)code, 0, NULL, 0);
  {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
      atomic_store_explicit(&w->stats.cpu, (uint64_t)ts.tv_sec * 1000000000u +
                            (uint64_t)ts.tv_nsec, memory_order_relaxed);
    atomic_store_explicit(&w->stats.end, uv_hrtime(), memory_order_relaxed);
  }
  if (ok) loom__ctx_close(&c);
  else loom__mailbox_close(w->inbox);   /* no state: exit 1, nothing ran */
  loom__pair_shut(w->pair);             /* posts to it fail from now on */
  w->exitmsg->aux = code;
  loom__pair_post(w->pair, 1, w->exitmsg, 1);
  w->exitmsg = NULL;
  if (rt->cfg.thread_stop) rt->cfg.thread_stop(rt->cfg.ud, w->id);
  loom__worker_release(w);
}

/* }====================================================================== */
