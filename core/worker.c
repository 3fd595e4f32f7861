/*
** worker.c: workers.  Each is an OS thread with its own lua_State and its
** own libuv loop; the parent keeps a handle, the thread keeps the state.
**
** Terminating running Lua: terminate() sets an atomic flag, then arms a
** count hook (count 1) on the worker's main state and on the coroutine it
** is running, and wakes every loom wait.  The hook raises at every
** instruction, so a pcall that catches the error is interrupted again in
** its caller, up to the top.  state_lock makes sure the state is not being
** closed meanwhile.
**
** Known limit: lua_sethook is meant to be callable asynchronously, but
** ldebug.c has a signal handler on the same thread in mind.  From another
** thread, its walk over the running state's CallInfo list (settraps) races
** with the worker returning from frames; a GC step that shrinks that list
** (luaE_shrinkCI) in the same nanoseconds could make the walk touch a
** freed frame.  On x86-64 (total store order) the hook is otherwise seen
** reliably; a weakly ordered CPU could miss one arming.  The alternatives
** (a process-wide signal handler, or a hook armed all the time, 1.4x
** slower loops) are worse for a library; this is the technique lua.c and
** LuaLanes use.
*/
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE          /* pthread_timedjoin_np */
#endif
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <pthread.h>
#include <time.h>
#include <sys/prctl.h>
#endif
#include <lualib.h>
#include "loom_int.h"

#define HANDLE "loom.WorkerHandle"
#define TERMINATED "loom: worker terminated"

enum { SRC_FILE, SRC_EVAL, SRC_FUNC };

/* Shared by the parent (through its handle and its children list) and
** the worker thread; freed when the atomic refcount drops to 0.
** Immutable once the thread starts: rt, id, name, kind, source, wdata,
** argv, path, cpath, parent, inbox.  state_lock guards L and running.
** terminating is atomic.  Parent thread only: thread, started, joined,
** next.  Worker thread only: everything else it touches through its ctx. */
struct loom_worker {
  atomic_int refs;
  loom_runtime *rt;
  uint64_t id;
  char *name;
  int kind;
  char *source;                /* file contents, code, or cloned function */
  size_t srclen;
  char *chunkname;             /* "@path" for files */
  loom_buf wdata, argv, env;   /* cloned workerData, argv, environment data */
  char *path, *cpath;          /* the parent's package.path and cpath */
  loom_mailbox *parent;        /* the parent's inbox */
  loom_mailbox *inbox;         /* this worker's inbox */
  uv_mutex_t state_lock;
  lua_State *L;                /* NULL while no Lua code may run */
  lua_State *running;          /* the coroutine being run, or L */
  atomic_int terminating;
  size_t mem_limit;            /* resourceLimits.maxMemoryMb in bytes, or 0 */
  struct memlimit *mem;        /* worker thread only: its allocator's count */
  uv_thread_t thread;
  int started, joined;
  loom_worker *next;           /* in the parent's children list */
};

static void worker_release (loom_worker *w) {
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
    return;
  free(w->name);
  free(w->source);
  free(w->chunkname);
  loom__buf_free(&w->wdata);
  loom__buf_free(&w->argv);
  loom__buf_free(&w->env);
  free(w->path);
  free(w->cpath);
  loom__mailbox_release(w->parent);
  loom__mailbox_release(w->inbox);
  uv_mutex_destroy(&w->state_lock);
  loom_runtime_release(w->rt);
  free(w);
}

/* {======================================================================
** Termination
** ======================================================================= */

static void onhook (lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_pushliteral(L, TERMINATED);
  lua_error(L);
}

static void arm (lua_State *L) {
  lua_sethook(L, onhook, LUA_MASKCOUNT, 1);
}

/* Any thread. */
static void terminate (loom_worker *w) {
  atomic_store(&w->terminating, 1);
  uv_mutex_lock(&w->state_lock);
  if (w->L) {
    arm(w->L);
    if (w->running && w->running != w->L) arm(w->running);
  }
  uv_mutex_unlock(&w->state_lock);
  loom__mailbox_interrupt(w->inbox);
}

int loom__terminating (loom_ctx *c) {
  return c->self && atomic_load(&c->self->terminating);
}

const atomic_int *loom__stopflag (loom_ctx *c) {
  return c->self ? &c->self->terminating : NULL;
}

void loom__check_terminate (lua_State *L, loom_ctx *c) {
  if (loom__terminating(c)) {
    lua_pushliteral(L, TERMINATED);
    lua_error(L);
  }
}

#define JOIN_GRACE_S 5           /* after terminate(), how long a worker may take */
#define LOOM_MIN_STACK_KB 1024   /* Lua's 200 C levels fit with room */

/* Join a worker's thread.  A worker stuck in a foreign blocking call
** (not a loom wait) cannot be interrupted: after a grace period it is
** detached, and it frees what it owns whenever it ends. */
static void join (loom_ctx *c, loom_worker *w) {
  loom_worker **p;
  if (!w->started || w->joined) return;
#if defined(__linux__) && defined(__GLIBC__)
  {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += JOIN_GRACE_S;
    if (pthread_timedjoin_np(w->thread, NULL, &ts) != 0) {
      fprintf(stderr, "loom: worker %llu did not stop within %d s; detached\n",
              (unsigned long long)w->id, JOIN_GRACE_S);
      pthread_detach(w->thread);
    }
  }
#else
  uv_thread_join(&w->thread);
#endif
  w->joined = 1;
  for (p = &c->children; *p; p = &(*p)->next)
    if (*p == w) { *p = w->next; break; }
}

void loom__worker_on_exit (loom_ctx *c, uint64_t id) {
  loom_worker *w;
  for (w = c->children; w; w = w->next)
    if (w->id == id) { join(c, w); return; }
}

void loom__children_stop (loom_ctx *c) {
  loom_worker *w;
  for (w = c->children; w; w = w->next) terminate(w);
  while (c->children) join(c, c->children);
}

/* }====================================================================== */

/* {======================================================================
** The worker thread
** ======================================================================= */

static int post_parent (loom_ctx *c, int kind, int aux, loom_buf *b) {
  loom_msg *m = loom__msg_new(kind, c->self->id, aux, b);
  if (m == NULL) return -1;
  return loom__mailbox_push(c->self->parent, m);
}

/* Record that Lua code runs in 'co' (resumed, or closing) from L, so that
** terminate() can reach it; returns what ran before. */
static lua_State *track (loom_worker *w, lua_State *co) {
  lua_State *prev;
  uv_mutex_lock(&w->state_lock);
  prev = w->running;
  w->running = co;
  if (atomic_load(&w->terminating)) arm(co);
  uv_mutex_unlock(&w->state_lock);
  return prev;
}

static void untrack (loom_worker *w, lua_State *prev, lua_State *L) {
  uv_mutex_lock(&w->state_lock);
  w->running = prev;
  if (atomic_load(&w->terminating)) arm(L);   /* it may not have been */
  uv_mutex_unlock(&w->state_lock);
}

static int closethread (loom_worker *w, lua_State *co, lua_State *L) {
  lua_State *prev = track(w, co);    /* __close handlers run in co */
  int st;
#if LUA_VERSION_RELEASE_NUM >= 50406
  st = lua_closethread(co, L);
#else
  (void)L;
  st = lua_resetthread(co);
#endif
  untrack(w, prev, L);
  return st;
}

/* coroutine.resume, .wrap and .close, made to record which coroutine runs
** so that terminate() can reach it. */
static int auxresume (lua_State *L, loom_ctx *c, lua_State *co, int narg) {
  loom_worker *w = c->self;
  lua_State *prev;
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  prev = track(w, co);
  status = lua_resume(co, L, narg, &nres);
  untrack(w, prev, L);
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

static int co_resume (lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  int r;
  luaL_argexpected(L, co, 1, "coroutine");
  if (co == L) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume non-suspended coroutine");
    return 2;
  }
  r = auxresume(L, CTX(L), co, lua_gettop(L) - 1);
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
  lua_State *co = lua_tothread(L, lua_upvalueindex(2));
  int r = auxresume(L, CTX(L), co, lua_gettop(L));
  if (r < 0) {
    int st = lua_status(co);
    if (st != LUA_OK && st != LUA_YIELD) {   /* error in the coroutine */
      closethread(CTX(L)->self, co, L);
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
  lua_State *co = lua_tothread(L, 1);
  int st;
  luaL_argexpected(L, co, 1, "coroutine");
  if (co == L) return luaL_error(L, "cannot close a running coroutine");
  if (lua_status(co) == LUA_OK) {
    lua_Debug ar;
    if (lua_getstack(co, 0, &ar))     /* it has frames: it is active */
      return luaL_error(L, "cannot close a normal coroutine");
  }
  st = closethread(CTX(L)->self, co, L);  /* suspended, or dead */
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

/* os.exit in a worker ends that worker alone, at once. */
static int os_exit (lua_State *L) {
  loom_ctx *c = CTX(L);
  loom_worker *w = c->self;
  int code;
  if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? 0 : 1;
  else code = (int)luaL_optinteger(L, 1, 0);
  c->exiting = 1;
  c->exit_code = code;
  atomic_store(&w->terminating, 1);
  uv_mutex_lock(&w->state_lock);
  if (w->L) {           /* NULL once the state is closing (a finalizer) */
    arm(w->L);
    if (w->running && w->running != w->L) arm(w->running);
  }
  uv_mutex_unlock(&w->state_lock);
  lua_pushliteral(L, TERMINATED);
  return lua_error(L);
}

/* xpcall whose message handler is skipped while the worker is being
** terminated: Lua runs a handler for an error raised by a hook with
** hooks off, so a handler that never returns could not be stopped. */
static int guard_msgh (lua_State *L) {
  if (loom__terminating(CTX(L))) return 1;
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

/* The allocator of a worker with resourceLimits.maxMemoryMb: counts the
** bytes of its state and refuses to pass the limit (Lua then raises "not
** enough memory").  Only the worker's thread uses it. */
typedef struct memlimit {
  lua_Alloc base;
  void *base_ud;
  size_t used, limit;
} memlimit;

static void *plain_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud; (void)osize;
  if (nsize == 0) { free(ptr); return NULL; }
  return realloc(ptr, nsize);
}

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

static void patch (lua_State *L, loom_ctx *c, const char *lib,
                   const char *name, lua_CFunction f) {
  lua_getglobal(L, lib);
  lua_pushlightuserdata(L, c);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
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
  loom_worker *w = c->self;
  int st = LUA_OK, nargs = 0;
  luaL_openlibs(L);
  patch(L, c, "os", "exit", os_exit);
  patch(L, c, "coroutine", "resume", co_resume);
  patch(L, c, "coroutine", "wrap", co_wrap);
  patch(L, c, "coroutine", "close", co_close);
  lua_pushlightuserdata(L, c);
  lua_pushcclosure(L, co_xpcall, 1);
  lua_setglobal(L, "xpcall");
  setpath(L, "path", w->path);
  setpath(L, "cpath", w->cpath);
  loom__preload(L, c);
  if (c->rt->cfg.on_state) c->rt->cfg.on_state(L, c->rt->cfg.ud);
  lua_settop(L, 0);
  post_parent(c, LOOM_MSG_ONLINE, 0, NULL);
  switch (w->kind) {
    case SRC_FILE: {   /* read by the parent: skip a '#' first line */
      const char *src = w->source;
      size_t len = w->srclen;
      if (len && src[0] == '#') {
        while (len && *src != '\n') { src++; len--; }
      }
      st = luaL_loadbufferx(L, src, len, w->chunkname, "t");
      break;
    }
    case SRC_EVAL: {
      char name[80];
      if (w->name) snprintf(name, sizeof name, "=[worker '%s']", w->name);
      else snprintf(name, sizeof name, "=[worker %llu]", (unsigned long long)w->id);
      st = luaL_loadbufferx(L, w->source, w->srclen, name, "t");
      break;
    }
    default:
      if (loom__decode(L, (const unsigned char *)w->source, w->srclen)) st = LUA_ERRRUN;
      else if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "worker source is not a function");
        st = LUA_ERRRUN;
      }
      break;
  }
  if (st != LUA_OK) return lua_error(L);
  if (w->argv.len) {
    lua_Integer i, n;
    if (loom__decode(L, w->argv.p, w->argv.len)) return lua_error(L);
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
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, 2);
  c->scratch.len = 0;
  if (loom__encode(L, -1, &c->scratch, "error", err, sizeof err)) {
    lua_pushcfunction(L, tostr);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
    }
    lua_rawseti(L, -2, 1);
    c->scratch.len = 0;
    if (loom__encode(L, -1, &c->scratch, "error", err, sizeof err))
      return luaL_error(L, "%s", err);
  }
  post_parent(c, LOOM_MSG_ERROR, 0, &c->scratch);
  return 0;
}

/* The error of the worker is pending in c: report it unless it is the
** termination unwinding.  Returns the exit code. */
static int failed (loom_ctx *c) {
  lua_State *L = c->L;
  if (c->exiting) return c->exit_code;
  if (loom__terminating(c)) return 1;
  if (c->self->mem) c->self->mem->limit = SIZE_MAX;   /* room to report */
  lua_pushcfunction(L, report);
  lua_pushlightuserdata(L, c);
  if (!loom__take_error(L, c)) {
    lua_pop(L, 2);
    return 1;
  }
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);
  return 1;
}

static int run (loom_ctx *c) {
  lua_State *L = c->L;
  lua_pushcfunction(L, wmain);
  lua_pushlightuserdata(L, c);
  if (loom__pcall(c, 1, 0) != LUA_OK && !c->has_error)
    return c->exiting ? c->exit_code : 1;   /* terminated */
  if (!c->has_error && !c->exiting && !loom__terminating(c)) {
    c->running = 1;
    while (uv_run(&c->loop, UV_RUN_DEFAULT) && !c->stopping)
      ;
    c->running = 0;
  }
  if (c->has_error || loom__terminating(c)) return failed(c);
  return c->exiting ? c->exit_code : 0;
}

static void worker_main (void *arg) {
  loom_worker *w = (loom_worker *)arg;
  loom_runtime *rt = w->rt;
  loom_ctx c;
  lua_State *L;
  int code = 1, ok = 0;
  loom_buf none = {NULL, 0, 0};
#ifdef __linux__
  {
    char tname[16];
    snprintf(tname, sizeof tname, "loom:%s", w->name ? w->name : "worker");
    prctl(PR_SET_NAME, tname, 0, 0, 0);
  }
#endif
  if (rt->cfg.thread_start) rt->cfg.thread_start(rt->cfg.ud, w->id);
  memlimit mem;
  mem.base = rt->cfg.alloc ? rt->cfg.alloc : plain_alloc;
  mem.base_ud = rt->cfg.alloc ? rt->cfg.alloc_ud : NULL;
  mem.used = 0;
  mem.limit = w->mem_limit;
  if (w->mem_limit) L = lua_newstate(limited_alloc, &mem);
  else if (rt->cfg.alloc) L = lua_newstate(rt->cfg.alloc, rt->cfg.alloc_ud);
  else L = luaL_newstate();
  if (w->mem_limit) w->mem = &mem;
  if (L && loom__ctx_init(&c, rt, L, w->inbox) == 0) {
    int term;
    ok = 1;
    c.self = w;
    c.thread_id = w->id;
    loom__ctx_install(L, &c);
    uv_mutex_lock(&w->state_lock);
    w->L = w->running = L;
    term = atomic_load(&w->terminating);
    uv_mutex_unlock(&w->state_lock);
    if (!term) code = run(&c);
    uv_mutex_lock(&w->state_lock);
    w->L = w->running = NULL;        /* terminate() leaves the state alone */
    uv_mutex_unlock(&w->state_lock);
    lua_sethook(L, NULL, 0, 0);
    if (loom__terminating(&c) && !c.exiting) code = 1;
  }
  if (L) lua_close(L);
  w->mem = NULL;
  if (ok) loom__ctx_close(&c);
  else loom__mailbox_close(w->inbox);   /* no state: exit 1, nothing ran */
  {
    loom_msg *m = loom__msg_new(LOOM_MSG_EXIT, w->id, code, &none);
    if (m) loom__mailbox_push(w->parent, m);
  }
  if (rt->cfg.thread_stop) rt->cfg.thread_stop(rt->cfg.ud, w->id);
  worker_release(w);
}

/* }====================================================================== */

/* {======================================================================
** Lua API, parent side: the handle behind loom.Worker
** ======================================================================= */

typedef struct whandle {
  loom_worker *w;
  loom_ctx *c;
} whandle;

static whandle *checkhandle (lua_State *L) {
  whandle *h = (whandle *)luaL_checkudata(L, 1, HANDLE);
  if (h->w == NULL) luaL_error(L, "worker handle is closed");
  return h;
}

static int h_gc (lua_State *L) {
  whandle *h = (whandle *)luaL_checkudata(L, 1, HANDLE);
  if (h->w) {
    if (h->w->started && !h->w->joined) {
      terminate(h->w);
      join(h->c, h->w);
    }
    worker_release(h->w);
    h->w = NULL;
  }
  return 0;
}

/* A transfer list: nothing can be transferred yet, so only an empty one. */
static void checktransfer (lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx))
    luaL_error(L, "postMessage: transfer must be a list (got %s)", luaL_typename(L, idx));
  lua_pushnil(L);
  if (lua_next(L, idx)) {
    lua_pop(L, 2);
    luaL_error(L, "postMessage: transfer: nothing in this list can be transferred");
  }
}

static int pushed (lua_State *L, loom_mailbox *mb, loom_msg *m) {
  if (loom__mailbox_push(mb, m)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "closed");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Worker:postMessage(value [, transfer]) -> true | false, "closed" */
static int l_wpost (lua_State *L) {
  whandle *h;
  loom_msg *m;
  luaL_checktype(L, 1, LUA_TTABLE);
  checktransfer(L, 3);
  lua_settop(L, 2);
  lua_getfield(L, 1, "_h");       /* anchored by the Worker table */
  h = (whandle *)luaL_testudata(L, 3, HANDLE);
  if (h == NULL || h->w == NULL) return luaL_error(L, "postMessage: not a loom.Worker");
  if (h->c->closed) return luaL_error(L, "loom is closed in this state");
  m = loom__pack(L, h->c, 2, "msg", LOOM_MSG_MESSAGE, 0);
  return pushed(L, h->w->inbox, m);
}

static int h_terminate (lua_State *L) {
  terminate(checkhandle(L)->w);
  return 0;
}

/* Errors of spawn carry no position: the Lua side adds the caller's. */
static int spawnerr (lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

/* Read a whole file into a malloc'd buffer: 0, or -1 with errno set. */
static int readfile (const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, n = 0;
  if (f == NULL) return -1;
  for (;;) {
    size_t got;
    if (cap - n < 4096) {
      char *nb = (char *)realloc(buf, cap ? cap * 2 : 8192);
      if (nb == NULL) { free(buf); fclose(f); errno = ENOMEM; return -1; }
      buf = nb;
      cap = cap ? cap * 2 : 8192;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    int e = errno ? errno : EIO;
    free(buf);
    fclose(f);
    errno = e;
    return -1;
  }
  fclose(f);
  *out = buf;
  *len = n;
  return 0;
}

static char *dupstr (const char *s, size_t n) {
  char *d = (char *)malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static char *dupfield (lua_State *L, int t, const char *field, const char *name) {
  char *s = NULL;
  lua_getfield(L, t, field);
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    if ((s = dupstr(v, n)) == NULL) spawnerr(L, "loom.Worker: not enough memory");
  }
  else if (!lua_isnil(L, -1))
    spawnerr(L, "loom.Worker: %s must be a string", name);
  lua_pop(L, 1);
  return s;
}

static void cloneopt (lua_State *L, int opts, const char *field, loom_buf *b) {
  char err[512];
  lua_getfield(L, opts, field);
  if (!lua_isnil(L, -1) && loom__encode(L, -1, b, field, err, sizeof err))
    spawnerr(L, "loom.Worker: %s", err);
  lua_pop(L, 1);
}

/* core.spawn(kind, source, opts) -> handle, id
** kind: "file" | "eval" | "function"; opts: name, workerData, argv,
** stackSizeKb (checked by the Lua side). */
static int l_spawn (lua_State *L) {
  static const char *const kinds[] = {"file", "eval", "function", NULL};
  loom_ctx *c = CTX(L);
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  whandle *h;
  loom_worker *w;
  lua_Integer stack_kb;
  uv_thread_options_t topt;
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  /* the handle first, empty: whatever fails below is freed by its __gc */
  h = (whandle *)lua_newuserdatauv(L, sizeof *h, 0);
  h->w = NULL;
  h->c = c;
  luaL_setmetatable(L, HANDLE);
  w = (loom_worker *)calloc(1, sizeof *w);
  if (w == NULL) return spawnerr(L, "loom.Worker: not enough memory");
  if (uv_mutex_init(&w->state_lock)) { free(w); return spawnerr(L, "loom.Worker: no mutex"); }
  atomic_init(&w->refs, 1);
  atomic_init(&w->terminating, 0);
  loom__runtime_retain(c->rt);
  w->rt = c->rt;
  loom__mailbox_retain(c->mb);
  w->parent = c->mb;
  h->w = w;
  w->kind = kind;
  if ((w->inbox = loom__mailbox_new()) == NULL)
    return spawnerr(L, "loom.Worker: not enough memory");
  if (kind == SRC_FUNC) {
    char err[512];
    loom_buf b = {NULL, 0, 0};
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (loom__encode(L, 2, &b, "source", err, sizeof err)) {
      loom__buf_free(&b);
      return spawnerr(L, "loom.Worker: %s", err);
    }
    w->source = (char *)b.p;
    w->srclen = b.len;
  }
  else if (kind == SRC_FILE) {
    const char *path = luaL_checkstring(L, 2);
    if (readfile(path, &w->source, &w->srclen))
      return spawnerr(L, "loom.Worker: cannot open worker file %s: %s", path, strerror(errno));
    if ((w->chunkname = malloc(strlen(path) + 2)) == NULL)
      return spawnerr(L, "loom.Worker: not enough memory");
    w->chunkname[0] = '@';
    strcpy(w->chunkname + 1, path);
  }
  else {
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if ((w->source = dupstr(s, n)) == NULL) return spawnerr(L, "loom.Worker: not enough memory");
    w->srclen = n;
  }
  w->name = dupfield(L, 3, "name", "name");
  cloneopt(L, 3, "workerData", &w->wdata);
  cloneopt(L, 3, "argv", &w->argv);
  cloneopt(L, 3, "env", &w->env);
  lua_getfield(L, 3, "maxMemoryMb");
  if (lua_isnumber(L, -1)) {
    lua_Number mb = lua_tonumber(L, -1);
    w->mem_limit = mb >= 1e6 ? (size_t)1e12 : (size_t)(mb * 1024 * 1024);
    if (w->mem_limit < 65536) w->mem_limit = 65536;
  }
  lua_pop(L, 1);
  lua_getfield(L, 3, "stackSizeKb");
  stack_kb = luaL_optinteger(L, -1, (lua_Integer)c->rt->cfg.stack_kb);
  lua_pop(L, 1);
  if (stack_kb < LOOM_MIN_STACK_KB) stack_kb = LOOM_MIN_STACK_KB;
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    w->path = dupfield(L, -1, "path", "package.path");
    w->cpath = dupfield(L, -1, "cpath", "package.cpath");
  }
  lua_pop(L, 1);
  w->id = (uint64_t)atomic_fetch_add(&c->rt->next_id, 1);
  topt.flags = UV_THREAD_HAS_STACK_SIZE;
  topt.stack_size = (size_t)stack_kb * 1024;
  atomic_fetch_add(&w->refs, 1);             /* the thread's reference */
  if (uv_thread_create_ex(&w->thread, &topt, worker_main, w)) {
    atomic_fetch_sub(&w->refs, 1);
    return spawnerr(L, "loom.Worker: cannot start a thread");
  }
  w->started = 1;
  w->next = c->children;
  c->children = w;
  lua_pushinteger(L, (lua_Integer)w->id);
  return 2;
}

/* }====================================================================== */

/* {======================================================================
** Lua API, worker side
** ======================================================================= */

static loom_worker *self (lua_State *L, loom_ctx *c, const char *who) {
  if (c->self == NULL) luaL_error(L, "%s: only inside a worker", who);
  return c->self;
}

/* parentPort:postMessage(value [, transfer]) -> true | false, "closed" */
static int l_ppost (lua_State *L) {
  loom_ctx *c = CTX(L);
  loom_worker *w = self(L, c, "parentPort:postMessage");
  loom_msg *m;
  luaL_checktype(L, 1, LUA_TTABLE);
  checktransfer(L, 3);
  lua_settop(L, 2);
  if (lua_getfield(L, 1, "_closed") != LUA_TNIL && lua_toboolean(L, 3)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "closed");
    return 2;
  }
  m = loom__pack(L, c, 2, "msg", LOOM_MSG_MESSAGE, w->id);
  return pushed(L, w->parent, m);
}

static int pushblob (lua_State *L, loom_ctx *c, size_t off) {
  loom_buf *b = c->self ? (loom_buf *)((char *)c->self + off) : NULL;
  if (b == NULL || b->len == 0) lua_pushnil(L);
  else if (loom__decode(L, b->p, b->len)) lua_error(L);
  return 1;
}

static int l_workerdata (lua_State *L) {
  return pushblob(L, CTX(L), offsetof(loom_worker, wdata));
}

static int l_envdata (lua_State *L) {
  return pushblob(L, CTX(L), offsetof(loom_worker, env));
}

static int l_workername (lua_State *L) {
  loom_ctx *c = CTX(L);
  if (c->self && c->self->name) lua_pushstring(L, c->self->name);
  else lua_pushnil(L);
  return 1;
}

/* core.exit(code): stop this worker after the current callback. */
static int l_exit (lua_State *L) {
  loom_ctx *c = CTX(L);
  self(L, c, "loom.exit");
  c->exiting = 1;
  c->exit_code = (int)luaL_optinteger(L, 1, 0);
  c->stopping = 1;
  uv_stop(&c->loop);
  return 0;
}

/* core.stats(): what this thread still holds, for tests and debugging */
static int l_stats (lua_State *L) {
  loom_ctx *c = CTX(L);
  loom_worker *w;
  loom_msg *m;
  int n = 0, p = 0;
  for (w = c->children; w; w = w->next) n++;
  for (m = c->pend_head; m; m = m->next) p++;
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "children");
  lua_pushinteger(L, c->holds);
  lua_setfield(L, -2, "holds");
  lua_pushinteger(L, p);
  lua_setfield(L, -2, "pending");
  lua_pushboolean(L, uv_loop_alive(&c->loop));
  lua_setfield(L, -2, "alive");
  return 1;
}

static const luaL_Reg handle_meth[] = {
  {"terminate", h_terminate},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"spawn", l_spawn},
  {"wpost", l_wpost},
  {"ppost", l_ppost},
  {"workerData", l_workerdata},
  {"envData", l_envdata},
  {"workerName", l_workername},
  {"exit", l_exit},
  {"stats", l_stats},
  {NULL, NULL}
};

int loom__open_worker (lua_State *L) {
  if (luaL_newmetatable(L, HANDLE)) {
    lua_pushcfunction(L, h_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, handle_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushlightuserdata(L, loom__ctx(L));
  luaL_setfuncs(L, funcs, 1);
  return 0;
}

/* }====================================================================== */
