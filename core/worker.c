/*
** worker.c: workers.  Each is an OS thread with its own lua_State and its
** own libuv loop; the parent keeps a handle, the thread keeps the state.
** Above the fence, the Lua-free lifecycle (make, start, terminate, join,
** release) that the C API shares; below it, the Lua binding: the handle
** behind loom.Worker, spawning from a Lua options table, the parent's
** list of children, and the worker side's own functions.
*/
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE          /* pthread_clockjoin_np */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#ifdef __linux__
#include <pthread.h>
#include <time.h>
#endif
#include "loom_lua.h"

#define LOOM_MIN_STACK_KB 1024       /* Lua's 200 C levels fit with room */
#define LOOM_MAX_STACK_KB (1u << 22) /* 4 GiB */

static char *dupstr (const char *s, size_t n) {
  char *d = (char *)malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static char *dupz (const char *s) { return s ? dupstr(s, strlen(s)) : NULL; }

void loom__worker_release (loom_worker *w) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (w == NULL || atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
    return;
  free(w->name);
  free(w->source);
  free(w->chunkname);
  loom__msg_free(w->wdata);
  loom__msg_free(w->argv);
  loom__msg_free(w->env);
  loom__msg_free(w->exitmsg);
  free(w->path);
  free(w->cpath);
  loom__pair_release(w->pair);
  loom__mailbox_release(w->inbox);
  loom__stop_destroy(&w->stop);
  loom_runtime_release(w->rt);
  free(w);
}

int loom__worker_new (loom_runtime *rt, loom_mailbox *parent,
                      const loom_worker_opts *o, loom_worker **out) {
  loom_worker *w = (loom_worker *)calloc(1, sizeof *w);
  *out = NULL;
  if (w == NULL || loom__stop_init(&w->stop)) {
    free(w);
    loom__msg_free(o->wdata);
    loom__msg_free(o->argv);
    loom__msg_free(o->env);
    return UV_ENOMEM;
  }
  atomic_init(&w->refs, 1);
  loom__runtime_retain(rt);
  w->rt = rt;
  w->wdata = o->wdata;
  w->argv = o->argv;
  w->env = o->env;
  w->kind = o->kind;
  w->mem_limit = o->mem_limit;
  w->stack_kb = o->stack_kb ? o->stack_kb : rt->cfg.stack_kb;
  if (w->stack_kb < LOOM_MIN_STACK_KB) w->stack_kb = LOOM_MIN_STACK_KB;
  w->id = loom__runtime_newid(rt);
  w->srclen = o->srclen;
  w->source = dupstr(o->source ? o->source : "", o->srclen);
  w->name = dupz(o->name);
  w->chunkname = dupz(o->chunkname);
  w->path = dupz(o->path);
  w->cpath = dupz(o->cpath);
  w->inbox = loom__mailbox_new();
  w->exitmsg = loom__msg_new(LOOM_MSG_EXIT, 0, NULL, NULL);
  if (w->inbox) w->pair = loom__pair_new(rt, parent, w->inbox, 1);
  if (!w->source || (o->name && !w->name) || (o->chunkname && !w->chunkname) ||
      (o->path && !w->path) || (o->cpath && !w->cpath) || !w->inbox ||
      !w->exitmsg || !w->pair) {
    loom__worker_release(w);
    return UV_ENOMEM;
  }
  *out = w;
  return 0;
}

int loom__worker_start (loom_worker *w) {
  uv_thread_options_t topt;
  int r;
  if (w->stack_kb > LOOM_MAX_STACK_KB) return UV_EINVAL;
  topt.flags = UV_THREAD_HAS_STACK_SIZE;
  topt.stack_size = w->stack_kb * 1024;
  atomic_fetch_add(&w->refs, 1);             /* the thread's reference */
  r = uv_thread_create_ex(&w->thread, &topt, w->rt->worker_main, w);
  if (r) {
    atomic_fetch_sub(&w->refs, 1);
    return r;
  }
  w->started = 1;
  return 0;
}

void loom__worker_terminate (loom_worker *w) {
  loom__stop_request(&w->stop);
  loom__mailbox_interrupt(w->inbox);
}

#if defined(__linux__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 31))
/* A join that gives up at 'ts' on CLOCK_MONOTONIC: wall-clock jumps do not
** change the grace.  ThreadSanitizer (gcc 12) does not know
** pthread_clockjoin_np and would report the thread as leaked, so under it
** the same deadline is taken on CLOCK_REALTIME. */
static int clockjoin (pthread_t t, const struct timespec *mono) {
#if defined(__SANITIZE_THREAD__)
  struct timespec now, rt;
  int64_t ns;
  clock_gettime(CLOCK_MONOTONIC, &now);
  ns = (int64_t)(mono->tv_sec - now.tv_sec) * 1000000000 + (mono->tv_nsec - now.tv_nsec);
  clock_gettime(CLOCK_REALTIME, &rt);
  if (ns < 0) ns = 0;
  rt.tv_sec += (time_t)(ns / 1000000000);
  rt.tv_nsec += (long)(ns % 1000000000);
  if (rt.tv_nsec >= 1000000000L) { rt.tv_sec++; rt.tv_nsec -= 1000000000L; }
  return pthread_timedjoin_np(t, NULL, &rt);
#else
  return pthread_clockjoin_np(t, NULL, CLOCK_MONOTONIC, mono);
#endif
}
#endif

int loom__worker_join (loom_worker *w, uint64_t deadline) {
  int r = 0;
  if (!w->started || w->joined) return 0;
#if defined(__linux__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 31))
  if (deadline) {
    struct timespec ts;
    uint64_t now = uv_hrtime(), ns;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* uv_hrtime's clock */
    ns = deadline > now ? deadline - now : 0;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec += (long)(ns % 1000000000u);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    if (clockjoin(w->thread, &ts) != 0) {
      pthread_detach(w->thread);
      r = -1;
    }
  }
  else uv_thread_join(&w->thread);
#else
  (void)deadline;                 /* no timed join here: wait */
  uv_thread_join(&w->thread);
#endif
  w->joined = 1;
  return r;
}

/* {======================================================================
** Lua API, parent side: the children of a state, and the handle
** ======================================================================= */

#define HANDLE "loom.WorkerHandle"
#define KIDS "loom.Children"

/* One per state (upvalue 2 of this file's functions): the workers spawned
** from it and not yet joined, each holding one reference.  Owner thread
** only.  Its finalizer runs after every handle's (it was made first), and
** stops them all against one deadline. */
typedef struct children {
  loom_ctx *c;
  loom_worker *list;
  int closed;                   /* the state is closing: no more spawns */
} children;

/* A full userdata: one reference to w, dropped in __gc. */
typedef struct whandle {
  loom_worker *w;
} whandle;

static void unlink_child (children *k, loom_worker *w) {
  loom_worker **p;
  for (p = &k->list; *p; p = &(*p)->next)
    if (*p == w) { *p = w->next; break; }
  loom__worker_release(w);
}

/* A worker stuck outside loom (a C call that never returns) is detached:
** say so through the host's warn hook, or on stderr. */
static void warn_detached (loom_worker *w) {
  char msg[160];
  snprintf(msg, sizeof msg, "loom: worker %llu did not stop within %d ms; detached",
           (unsigned long long)w->id, w->rt->cfg.close_ms);
  if (w->rt->cfg.warn) w->rt->cfg.warn(w->rt->cfg.ud, msg);
  else fprintf(stderr, "%s\n", msg);
}

/* EXIT kind: the worker's last act; join its thread. */
static void on_exitmsg (loom_ctx *c, loom_msg *m, void *ud) {
  children *k = (children *)ud;
  loom_worker *w;
  for (w = k->list; w; w = w->next) {
    if (w->pair->id[0] == m->target) {
      w->exited = 1;
      if (w->held) {             /* before any Lua runs: never lost */
        w->held = 0;
        loom__ctx_ref(c, -1);
      }
      if (loom__worker_join(w, uv_hrtime() + c->rt->close_ns))
        warn_detached(w);
      unlink_child(k, w);
      return;
    }
  }
}

#define CLOSE_MARGIN_NS (20 * (uint64_t)1000000)   /* at least; a tenth of close_ms */

static int kids_gc (lua_State *L) {
  children *k = (children *)lua_touserdata(L, 1);
  loom_worker *w, *me = (loom_worker *)k->c->self;
  uint64_t deadline = uv_hrtime() + k->c->rt->close_ns, up;
  if (k->closed) return 0;
  k->closed = 1;
  /* a worker closing because its parent closes keeps the parent's
  ** deadline, a little earlier, so that it is done when its parent looks */
  if (me && (up = atomic_load(&me->deadline)) != 0) {
    uint64_t margin = k->c->rt->close_ns / 10;
    if (margin < CLOSE_MARGIN_NS) margin = CLOSE_MARGIN_NS;
    up = up > margin ? up - margin : 0;
    if (up < deadline) deadline = up;
  }
  loom__ctx_setkind(k->c, LOOM_MSG_EXIT, NULL, NULL);
  for (w = k->list; w; w = w->next) {
    atomic_store(&w->deadline, deadline);
    loom__worker_terminate(w);
  }
  while ((w = k->list) != NULL) {   /* one deadline for all of them */
    if (loom__worker_join(w, deadline)) warn_detached(w);
    unlink_child(k, w);
  }
  return 0;
}

static children *getkids (lua_State *L) {
  return (children *)lua_touserdata(L, lua_upvalueindex(2));
}

static whandle *checkhandle (lua_State *L) {
  whandle *h = (whandle *)luaL_checkudata(L, 1, HANDLE);
  if (h->w == NULL) luaL_error(L, "worker handle is closed");
  return h;
}

/* A handle collected while its worker runs (the state is closing): stop
** it; the children list joins it. */
static int h_gc (lua_State *L) {
  whandle *h = (whandle *)luaL_checkudata(L, 1, HANDLE);
  if (h->w) {
    if (h->w->started && !h->w->joined) loom__worker_terminate(h->w);
    loom__worker_release(h->w);
    h->w = NULL;
  }
  return 0;
}

/* core.whold(handle, on): the Worker keeps this thread's loop alive (on)
** or not.  Kept here, not by the Lua side, so that the EXIT drops it in C
** (on_exitmsg) even if the Lua bookkeeping of the exit runs out of memory. */
static int l_whold (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  whandle *h = (whandle *)luaL_checkudata(L, 1, HANDLE);
  int on = lua_toboolean(L, 2);
  loom_worker *w = h->w;
  if (w == NULL) return 0;
  if (on && !w->held && !w->exited) {
    w->held = 1;
    loom__ctx_ref(c, 1);
  }
  else if (!on && w->held) {
    w->held = 0;
    loom__ctx_ref(c, -1);
  }
  return 0;
}

static int h_terminate (lua_State *L) {
  loom_worker *w = checkhandle(L)->w;
  if (LOOM_TRACING(w->rt)) {
    loom_ctx *c = loom__ctx_get(L);
    if (c) loom__trace(c->rt, &c->trace, LOOM_TR_TERMINATE, 0, 0, (int64_t)w->id, 0,
                       w->name, w->name ? strlen(w->name) : 0);
  }
  loom__worker_terminate(w);
  return 0;
}

/* Errors of spawn carry no position: the Lua side adds the caller's. */
static int spawnerr (lua_State *L, const char *what, const char *detail) {
  lua_pushfstring(L, "loom.Worker: %s%s", what, detail ? detail : "");
  return lua_error(L);
}

#define LOOM_MAX_SOURCE ((size_t)1 << 30)   /* a worker file of 1 GiB */

/* Read a whole regular file into a malloc'd buffer: 0, or -1 with errno
** set.  Not a FIFO or a device: those could block or never end. */
static int readfile (const char *path, char **out, size_t *len) {
  /* O_NONBLOCK: opening a FIFO must not wait for a writer */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), e;
  FILE *f;
  char *buf = NULL;
  size_t cap = 0, n = 0;
  struct stat st;
  if (fd < 0) return -1;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    e = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    close(fd);
    errno = e;
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  if ((f = fdopen(fd, "rb")) == NULL) {
    e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  for (;;) {
    size_t got;
    if (cap - n < 4096) {
      char *nb;
      if (cap >= LOOM_MAX_SOURCE) { free(buf); fclose(f); errno = EFBIG; return -1; }
      nb = (char *)realloc(buf, cap ? cap * 2 : 8192);
      if (nb == NULL) { free(buf); fclose(f); errno = ENOMEM; return -1; }
      buf = nb;
      cap = cap ? cap * 2 : 8192;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    e = errno ? errno : EIO;
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

/* A string field of the table at t, or NULL; raises if it is not one. */
static const char *strfield (lua_State *L, int t, const char *field, const char *name) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, field);
  if (ty == LUA_TSTRING) s = lua_tostring(L, -1);
  else if (ty != LUA_TNIL) spawnerr(L, name, " must be a string");
  lua_pop(L, 1);      /* the string stays alive in the table */
  return s;
}

/* The spawn in progress: what must be freed if it raises (a userdata,
** collected with its __gc). */
typedef struct spawnjob {
  char *source;
  loom_msg *wdata, *argv, *env;
} spawnjob;

static int job_gc (lua_State *L) {
  spawnjob *j = (spawnjob *)lua_touserdata(L, 1);
  free(j->source);
  loom__msg_free(j->wdata);
  loom__msg_free(j->argv);
  loom__msg_free(j->env);
  memset(j, 0, sizeof *j);
  return 0;
}

static loom_msg *cloneopt (lua_State *L, loom_ctx *c, int opts, const char *field) {
  loom_msg *m = NULL;
  if (lua_getfield(L, opts, field) != LUA_TNIL) {
    char err[512];
    c->scratch.len = 0;
    if (loom__encode(L, -1, &c->scratch, &c->scratch_refs, field, err, sizeof err))
      spawnerr(L, err, NULL);
    m = loom__msg_new(LOOM_MSG_MESSAGE, 0, &c->scratch, &c->scratch_refs);
    if (m == NULL) {
      loom__refs_clear(&c->scratch_refs);
      spawnerr(L, "not enough memory", NULL);
    }
    if (c->scratch.p == NULL) loom__runtime_take_spare(c->rt, &c->scratch);
  }
  lua_pop(L, 1);
  return m;
}

/* core.spawn(kind, source, opts) -> handle, threadId, port
** kind: "file" | "eval" | "function"; opts: name, workerData, argv, env,
** stackSizeKb, maxMemoryMb (checked by the Lua side, and again here). */
static int l_spawn (lua_State *L) {
  static const char *const kinds[] = {"file", "eval", "function", NULL};
  loom_ctx *c = loom__ctx_check(L);
  children *k = getkids(L);
  int kind = luaL_checkoption(L, 1, NULL, kinds), r;
  whandle *h;
  spawnjob *j;
  loom_worker_opts o;
  loom_worker *w;
  lua_Integer stack_kb;
  char *chunkname = NULL;
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  if (k->closed || loom__ctx_inclose(L))
    return spawnerr(L, "the state is closing (no workers from its finalizers)", NULL);
  memset(&o, 0, sizeof o);
  /* the handle first, empty: whatever fails below is freed by a __gc */
  h = (whandle *)lua_newuserdatauv(L, sizeof *h, 0);      /* 4 */
  h->w = NULL;
  luaL_setmetatable(L, HANDLE);
  j = (spawnjob *)lua_newuserdatauv(L, sizeof *j, 0);     /* 5 */
  memset(j, 0, sizeof *j);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, job_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  if (kind == 2) {                /* function: its bytecode and upvalues */
    char err[512];
    loom_buf b = {NULL, 0, 0};
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (loom__encode(L, 2, &b, NULL, "source", err, sizeof err)) {
      loom__buf_free(&b);
      return spawnerr(L, err, NULL);
    }
    j->source = (char *)b.p;
    o.source = j->source;
    o.srclen = b.len;
    o.kind = LOOM_SRC_FUNC;
  }
  else if (kind == 0) {
    const char *path = luaL_checkstring(L, 2);
    size_t n;
    if (readfile(path, &j->source, &n)) {
      lua_pushfstring(L, "cannot open worker file %s: %s", path, strerror(errno));
      return spawnerr(L, lua_tostring(L, -1), NULL);
    }
    o.source = j->source;
    o.srclen = n;
    lua_pushfstring(L, "@%s", path);                      /* 6 */
    chunkname = (char *)lua_tostring(L, -1);
    o.chunkname = chunkname;
    o.kind = LOOM_SRC_FILE;
  }
  else {
    o.source = luaL_checklstring(L, 2, &o.srclen);
    o.kind = LOOM_SRC_CODE;
  }
  o.name = strfield(L, 3, "name", "name");
  if (lua_getfield(L, 3, "transfer") != LUA_TNIL) {   /* ports in workerData */
    int tidx = lua_gettop(L);
    lua_getfield(L, 3, "workerData");
    j->wdata = loom__port_packx(L, c, tidx + 1, tidx, "loom.Worker", "workerData");
    lua_pop(L, 2);
  }
  else {
    lua_pop(L, 1);
    j->wdata = cloneopt(L, c, 3, "workerData");
  }
  j->argv = cloneopt(L, c, 3, "argv");
  j->env = cloneopt(L, c, 3, "env");
  if (lua_getfield(L, 3, "maxMemoryMb") != LUA_TNIL) {
    lua_Number mb = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(mb > 0)) return spawnerr(L, "maxMemoryMb must be > 0", NULL);
    o.mem_limit = (size_t)((mb < 1e6 ? mb : 1e6) * 1024 * 1024);   /* 1e6 MiB: no limit */
    if (o.mem_limit < 65536) o.mem_limit = 65536;
  }
  lua_pop(L, 1);
  lua_getfield(L, 3, "stackSizeKb");
  stack_kb = luaL_optinteger(L, -1, (lua_Integer)c->rt->cfg.stack_kb);
  lua_pop(L, 1);
  if (stack_kb < 64 || stack_kb > (lua_Integer)LOOM_MAX_STACK_KB)
    return spawnerr(L, "stackSizeKb must be an integer from 64 to 4194304", NULL);
  o.stack_kb = (size_t)stack_kb;
  if (lua_getglobal(L, "package") == LUA_TTABLE) {
    o.path = strfield(L, -1, "path", "package.path");
    o.cpath = strfield(L, -1, "cpath", "package.cpath");
  }
  lua_pop(L, 1);
  o.wdata = j->wdata;
  o.argv = j->argv;
  o.env = j->env;
  j->wdata = j->argv = j->env = NULL;     /* loom__worker_new takes them */
  r = loom__worker_new(c->rt, c->mb, &o, &w);
  if (r) return spawnerr(L, "not enough memory", NULL);
  h->w = w;
  r = loom__worker_start(w);
  if (r) {
    lua_pushfstring(L, "cannot start a thread: %s", uv_strerror(r));
    return spawnerr(L, lua_tostring(L, -1), NULL);
  }
  atomic_fetch_add(&w->refs, 1);          /* the children list's */
  w->next = k->list;
  k->list = w;
  if (LOOM_TRACING(c->rt))
    loom__trace(c->rt, &c->trace, LOOM_TR_SPAWN, 0, 0, (int64_t)w->id, 0,
                w->name, w->name ? strlen(w->name) : 0);
  lua_pushvalue(L, 4);
  lua_pushinteger(L, (lua_Integer)w->id);
  loom__port_push(L, c, w->pair, 0);
  return 3;
}

/* }====================================================================== */

/* {======================================================================
** Lua API, worker side
** ======================================================================= */

static loom_worker *self (loom_ctx *c) { return (loom_worker *)c->self; }

/* core.parentPort() -> the port of this worker's pair, or nil (main) */
static int l_parentport (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  loom_worker *w = self(c);
  if (w == NULL) return 0;
  if (loom__ctx_inclose(L)) return luaL_error(L, "parentPort: the state is closing");
  loom__port_push(L, c, w->pair, 1);
  return 1;
}

/* The value of a blob given at spawn, decoded once (decoding takes its
** references) and kept in the registry at key 'slot'. */
static int pushblob (lua_State *L, loom_msg *m, const char *slot) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, slot) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (m == NULL) {
    lua_pushnil(L);
    return 1;
  }
  if (loom__decode_msg(L, m)) return lua_error(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, slot);
  return 1;
}

static const char WDATAKEY = 'd', ENVKEY = 'v';

static int l_workerdata (lua_State *L) {
  loom_worker *w = self(loom__ctx_check(L));
  return pushblob(L, w ? w->wdata : NULL, &WDATAKEY);
}

static int l_envdata (lua_State *L) {
  loom_worker *w = self(loom__ctx_check(L));
  return pushblob(L, w ? w->env : NULL, &ENVKEY);
}

static int l_workername (lua_State *L) {
  loom_worker *w = self(loom__ctx_check(L));
  if (w && w->name) lua_pushstring(L, w->name);
  else lua_pushnil(L);
  return 1;
}

/* core.exit(code): stop this worker after the current callback.  Check
** the argument, then change state. */
static int l_exit (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_Integer code = luaL_optinteger(L, 1, 0);
  if (self(c) == NULL) return luaL_error(L, "loom.exit: only inside a worker");
  c->exiting = 1;
  c->exit_code = code;
  loom__ctx_stop(c);
  return 0;
}

/* core.stats(): what this thread still holds, for tests and debugging */
static int l_stats (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  children *k = getkids(L);
  loom_worker *w;
  loom_msg *m;
  int n = 0, p = 0;
  for (w = k->list; w; w = w->next) n++;
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

static uint64_t figure (atomic_uint_fast64_t *v) {
  return (uint64_t)atomic_load_explicit(v, memory_order_relaxed);
}

/* The worker thread's CPU time in ns: from its clock while it runs, else
** what it stored when it ended. */
static uint64_t cputime (loom_worker *w) {
#ifdef __linux__
  if (w->started && !w->joined && figure(&w->stats.end) == 0) {
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(w->thread, &cid) == 0 && clock_gettime(cid, &ts) == 0)
      return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  }
#endif
  return figure(&w->stats.cpu);
}

/* handle:stats() -> messagesIn, messagesOut, queueLength, memory (bytes
** of its Lua state, as of its last delivery), cpu (ms), and its loop's
** utilisation as Node's performance.eventLoopUtilization() gives it:
** idle and active ms since it started, active / (idle + active).  Idle is
** time libuv spent waiting in the poll (UV_METRICS_IDLE_TIME); a wait
** outside the loop (receive, pop, sleep) counts as active. */
static int h_stats (lua_State *L) {
  loom_worker *w = checkhandle(L)->w;
  uint64_t start = figure(&w->stats.start), end = figure(&w->stats.end);
  uint64_t pushed = loom__mailbox_pushed(w->inbox);
  uint64_t done = figure(&w->stats.done), idle = figure(&w->stats.idle), life;
  uint64_t asleep = figure(&w->stats.asleep);
  double active;
  if (end == 0) {
    end = uv_hrtime();
    if (asleep && end > asleep) idle += end - asleep;   /* in the poll now */
  }
  life = start && end > start ? end - start : 0;
  if (idle > life) idle = life;
  active = (double)(life - idle) / 1e6;
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)figure(&w->stats.in));
  lua_setfield(L, -2, "messagesIn");
  lua_pushinteger(L, (lua_Integer)figure(&w->stats.out));
  lua_setfield(L, -2, "messagesOut");
  lua_pushinteger(L, (lua_Integer)(pushed > done ? pushed - done : 0));
  lua_setfield(L, -2, "queueLength");
  lua_pushinteger(L, (lua_Integer)figure(&w->stats.mem));
  lua_setfield(L, -2, "memory");
  lua_pushnumber(L, (lua_Number)cputime(w) / 1e6);
  lua_setfield(L, -2, "cpu");
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, (lua_Number)idle / 1e6);
  lua_setfield(L, -2, "idle");
  lua_pushnumber(L, active);
  lua_setfield(L, -2, "active");
  lua_pushnumber(L, life ? active / ((lua_Number)life / 1e6) : 0);
  lua_setfield(L, -2, "utilization");
  lua_setfield(L, -2, "eventLoopUtilization");
  return 1;
}

static const luaL_Reg handle_meth[] = {
  {"terminate", h_terminate},
  {"stats", h_stats},
  {NULL, NULL}
};

static const luaL_Reg handle_meta[] = {
  {"__gc", h_gc},
  {"__index", NULL},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"spawn", l_spawn},
  {"whold", l_whold},
  {"parentPort", l_parentport},
  {"workerData", l_workerdata},
  {"envData", l_envdata},
  {"workerName", l_workername},
  {"exit", l_exit},
  {"stats", l_stats},
  {NULL, NULL}
};

static const char KIDSKEY = 'w';   /* registry: the state's children */

void loom__worker_open (lua_State *L, loom_ctx *c) {
  children *k;
  loom__createmeta(L, HANDLE, handle_meta, handle_meth, 0);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, c);
  /* one list per state, kept when loom.core is opened again */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &KIDSKEY) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    k = (children *)lua_newuserdatauv(L, sizeof *k, 0);
    k->c = c;
    k->list = NULL;
    k->closed = 0;
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, kids_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, KIDS);
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KIDSKEY);
    loom__ctx_setkind(c, LOOM_MSG_EXIT, on_exitmsg, k);
  }
  luaL_setfuncs(L, funcs, 2);   /* every function: ctx, children */
}

/* }====================================================================== */
