/*
** runtime.c: the runtime object, the per-thread context, message delivery
** and the module entry point luaopen_loom_core.
*/
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include "loom_int.h"

static const char CTXKEY = 'c';   /* registry: light pointer to loom_ctx */
static const char RTKEY = 'r';    /* registry: runtime given by loom_open */
static const char ERRKEY = 'e';   /* registry: pending uncaught error */
static const char TBKEY = 't';    /* registry: traceback of the last error */

/* {======================================================================
** Runtime
** ======================================================================= */

loom_runtime *loom_runtime_new (const loom_config *cfg) {
  loom_runtime *rt = (loom_runtime *)calloc(1, sizeof *rt);
  if (rt == NULL) return NULL;
  if (uv_mutex_init(&rt->lock)) { free(rt); return NULL; }
  atomic_init(&rt->refs, 1);
  atomic_init(&rt->next_id, 1);
  if (cfg) rt->cfg = *cfg;
  if (rt->cfg.stack_kb == 0) rt->cfg.stack_kb = 4096;
  rt->t0 = uv_hrtime();
  rt->spin_ns = LOOM_SPIN_NS;
  {
    const char *e = getenv("LOOM_SPIN_US");   /* for measuring the spin */
    if (e && *e) rt->spin_ns = (uint64_t)strtoul(e, NULL, 10) * 1000u;
  }
  return rt;
}

void loom__runtime_retain (loom_runtime *rt) {
  atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

void loom_runtime_release (loom_runtime *rt) {
  if (rt == NULL || atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
    return;
  while (rt->nboot > 0) free(rt->boot[--rt->nboot].code);
  free(rt->spare);
  uv_mutex_destroy(&rt->lock);
  free(rt);
}

static int rtbox_gc (lua_State *L);

int loom_open (lua_State *L, loom_runtime *rt) {
  loom_runtime **box;
  int had;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RTKEY);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  had = !lua_isnil(L, -1) || !lua_isnil(L, -2);
  lua_pop(L, 2);
  if (had) return -1;
  box = (loom_runtime **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_newtable(L);
  lua_pushcfunction(L, rtbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  loom__runtime_retain(rt);
  *box = rt;                       /* released when the state closes */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RTKEY);
  return 0;
}

/* }====================================================================== */

/* {======================================================================
** Thread context
** ======================================================================= */

loom_ctx *loom__ctx (lua_State *L) {
  loom_ctx *c;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  c = (loom_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL) luaL_error(L, "loom is not loaded in this state (require \"loom\" first)");
  return c;
}

void loom__ctx_install (lua_State *L, loom_ctx *c) {
  lua_pushlightuserdata(L, c);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  /* make the error slots now: storing an uncaught error later, outside any
  ** protected call, must not allocate */
  lua_pushboolean(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRKEY);
  lua_pushboolean(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TBKEY);
}

loom_ctx *loom__ctxup (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (c->closed) luaL_error(L, "loom is closed in this state");
  return c;
}

lua_State *loom__enter_thread (loom_ctx *c, lua_State *L) {
  lua_State *saved = c->L;
  c->L = L;
  return saved;
}

static void onclose (uv_handle_t *h) { free(h); }

static void on_async (uv_async_t *a) {
  loom_ctx *c = (loom_ctx *)a->data;
  loom__mailbox_awake(c->mb);
  if (loom__terminating(c)) {
    c->stopping = 1;
    uv_stop(&c->loop);
    return;
  }
  loom__deliver(c, -1);
}

static void cpu_relax (void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

void loom__expect (loom_ctx *c) {
  if (c->rt->spin_ns) c->spin_until = uv_hrtime() + c->rt->spin_ns;
}

/* Before the loop blocks in the kernel: if a message is expected soon,
** wait for it here.  A sleeping thread costs a few us or ~60 us to wake on
** these VMs; a bounded spin costs only this thread's time. */
static void on_prepare (uv_prepare_t *h) {
  loom_ctx *c = (loom_ctx *)h->data;
  const atomic_int *stop = loom__stopflag(c);
  uint64_t now;
  int rounds, delivered = 0;
  if (c->stopping) return;
  if (c->spin_until) {
    for (now = uv_hrtime(); now < c->spin_until; now = uv_hrtime()) {
      int i;
      for (i = 0; i < 64; i++) {
        if (atomic_load_explicit(&c->mb->nonempty, memory_order_acquire) ||
            (stop && atomic_load(stop))) {
          c->spin_until = now;   /* leave both loops */
          break;
        }
        cpu_relax();
      }
      if (i < 64) break;
      sched_yield();   /* a thread waiting for this core goes first */
    }
    if (now >= c->spin_until) c->spin_until = 0;
  }
  /* Block only once the mailbox says pushes will wake us; a few rounds,
  ** then let the loop turn (timers, I/O) and come back.  In a single turn
  ** (await) whatever was delivered here may be what the caller waits for:
  ** then the poll must not block either. */
  for (rounds = 0; loom__mailbox_sleep(c->mb); rounds++) {
    if (rounds == 8 || c->stopping) {
      uv_async_send(c->async);   /* the poll must not block */
      return;
    }
    if (loom__deliver(c, -1) > 0) delivered = 1;
  }
  if (delivered && c->once) uv_async_send(c->async);
}

static void on_check (uv_check_t *h) {
  loom_ctx *c = (loom_ctx *)h->data;
  loom__mailbox_awake(c->mb);   /* back from the poll */
  if (c->stopping || c->immediate_ref == LUA_NOREF) return;
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, c->immediate_ref);
  loom__pcall(c, 0, 0);
}

int loom__ctx_init (loom_ctx *c, loom_runtime *rt, lua_State *L,
                    loom_mailbox *mb) {
  memset(c, 0, sizeof *c);
  c->dispatch_ref = c->immediate_ref = c->fast_ref = LUA_NOREF;
  if (uv_loop_init(&c->loop)) return -1;
  c->async = (uv_async_t *)malloc(sizeof *c->async);
  c->check = (uv_check_t *)malloc(sizeof *c->check);
  c->idle = (uv_idle_t *)malloc(sizeof *c->idle);
  c->prepare = (uv_prepare_t *)malloc(sizeof *c->prepare);
  if (mb) loom__mailbox_retain(mb);
  else mb = loom__mailbox_new();
  if (!c->async || !c->check || !c->idle || !c->prepare || !mb ||
      uv_async_init(&c->loop, c->async, on_async)) {
    free(c->async); free(c->check); free(c->idle); free(c->prepare);
    loom__mailbox_release(mb);
    uv_loop_close(&c->loop);
    return -1;
  }
  uv_check_init(&c->loop, c->check);
  uv_idle_init(&c->loop, c->idle);
  uv_prepare_init(&c->loop, c->prepare);
  c->async->data = c->check->data = c->idle->data = c->prepare->data = c;
  uv_prepare_start(c->prepare, on_prepare);
  uv_unref((uv_handle_t *)c->prepare);
  uv_unref((uv_handle_t *)c->async);   /* only 'holds' keep the loop alive */
  uv_check_start(c->check, on_check);
  uv_unref((uv_handle_t *)c->check);
  loom__runtime_retain(rt);
  c->rt = rt;
  c->L = L;
  c->mb = mb;
  loom__mailbox_attach(mb, c->async);
  return 0;
}

static void closeall (uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, onclose);
}

void loom__ctx_close (loom_ctx *c) {
  loom_msg *m;
  loom__children_stop(c);
  loom__mailbox_close(c->mb);
  while ((m = c->pend_head) != NULL) {
    c->pend_head = m->next;
    loom__msg_free(m);
  }
  loom__msg_free(c->current);
  c->current = NULL;
  uv_walk(&c->loop, closeall, NULL);
  while (uv_loop_close(&c->loop) == UV_EBUSY)
    uv_run(&c->loop, UV_RUN_NOWAIT);
  loom__mailbox_release(c->mb);
  loom__buf_free(&c->scratch);
  loom_runtime_release(c->rt);
}

void loom__hold (loom_ctx *c, int delta) {
  c->holds += delta;
  if (c->holds > 0) uv_ref((uv_handle_t *)c->async);
  else uv_unref((uv_handle_t *)c->async);
}

/* }====================================================================== */

/* {======================================================================
** Errors and protected calls
** ======================================================================= */

int loom__msgh (lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TBKEY);
  lua_settop(L, 1);
  return 1;
}

void loom__uncaught (loom_ctx *c) {
  lua_State *L = c->L;
  if (!c->has_error) {   /* the first error wins */
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRKEY);
    c->has_error = 1;
  }
  lua_pop(L, 1);
  c->stopping = 1;
  uv_stop(&c->loop);
}

int loom__pcall (loom_ctx *c, int nargs, int nres) {
  lua_State *L = c->L;
  int base = lua_gettop(L) - nargs, st;
  lua_pushcfunction(L, loom__msgh);
  lua_insert(L, base);
  st = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  if (st != LUA_OK) {
    if (loom__terminating(c)) {
      lua_pop(L, 1);
      c->stopping = 1;
      uv_stop(&c->loop);
    }
    else loom__uncaught(c);
  }
  return st;
}

/* Push the pending uncaught error and its traceback; 0 if none. */
int loom__take_error (lua_State *L, loom_ctx *c) {
  if (!c->has_error) return 0;
  c->has_error = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ERRKEY);
  lua_pushboolean(L, 0);              /* keep the slot: no allocation later */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRKEY);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &TBKEY);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Delivery: messages are taken from the mailbox into c->pend_* and handed
** to the Lua dispatcher one by one, so a nested run (an await inside a
** handler) keeps their order.
** ======================================================================= */

static int deliver_batch (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, 1);
  int max = (int)lua_tointeger(L, 2), n = 0;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->fast_ref);       /* 1: fast table */
  while (c->pend_head && !c->stopping && (max < 0 || n < max)) {
    loom_msg *m = c->pend_head;
    int kind = m->kind, nargs = 4;
    c->pend_head = m->next;
    if (c->pend_head == NULL) c->pend_tail = NULL;
    c->current = m;
    if (kind == LOOM_MSG_MESSAGE &&
        lua_rawgeti(L, 1, (lua_Integer)m->target) == LUA_TFUNCTION) {
      if (loom__decode(L, m->data, m->len) == 0) nargs = 1;  /* fast path */
      else {
        lua_pop(L, 2);
        goto slow;
      }
    }
    else {
      if (kind == LOOM_MSG_MESSAGE) lua_pop(L, 1);
    slow:
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->dispatch_ref);
      lua_pushinteger(L, (lua_Integer)m->target);
      if (kind == LOOM_MSG_EXIT) loom__worker_on_exit(c, m->target);
      if (m->len == 0) lua_pushnil(L);
      else if (loom__decode(L, m->data, m->len)) kind = -kind;  /* text pushed */
      lua_pushinteger(L, kind);
      lua_insert(L, -2);
      lua_pushinteger(L, m->aux);
    }
    c->current = NULL;
    loom__msg_release(c->rt, m);
    lua_call(L, nargs, 0);
    n++;
    if (c->poll_deadline && uv_hrtime() >= c->poll_deadline) break;
  }
  lua_pushinteger(L, n);
  return 1;
}

int loom__deliver (loom_ctx *c, int max) {
  lua_State *L = c->L;
  loom_msg *list = loom__mailbox_take(c->mb), *saved = c->current;
  int n = 0;
  if (list) {
    loom_msg *last = list;
    while (last->next) last = last->next;
    if (c->pend_tail) c->pend_tail->next = list;
    else c->pend_head = list;
    c->pend_tail = last;
  }
  if (c->pend_head == NULL || c->dispatch_ref == LUA_NOREF) return 0;
  lua_pushcfunction(L, deliver_batch);
  lua_pushlightuserdata(L, c);
  lua_pushinteger(L, max);
  if (loom__pcall(c, 2, 1) == LUA_OK) {
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n > 0) loom__expect(c);
  }
  else {
    if (c->current != saved) loom__msg_free(c->current);
    c->current = saved;
    n = -1;
  }
  if (c->pend_head && !c->stopping) uv_async_send(c->async);  /* rest later */
  return n;
}

/* }====================================================================== */

/* {======================================================================
** Embedding entry points
** ======================================================================= */

int loom_poll (lua_State *L, int budget_us, int max_messages) {
  loom_ctx *c;
  lua_State *saved;
  int n = 0, r;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  c = (loom_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL || c->running || c->closed) return 0;
  saved = loom__enter_thread(c, L);
  c->poll_deadline = uv_hrtime() + (uint64_t)(budget_us > 0 ? budget_us : 0) * 1000;
  c->running = 1;
  c->stopping = 0;
  uv_run(&c->loop, UV_RUN_NOWAIT);   /* timers, wake-ups, immediates */
  r = loom__deliver(c, max_messages > 0 ? max_messages : -1);
  c->running = 0;
  c->poll_deadline = 0;
  c->L = saved;
  /* the host may now sleep on loom_backend_fd: pushes must wake it */
  if (loom__mailbox_sleep(c->mb) || c->pend_head) uv_async_send(c->async);
  if (r > 0) n += r;
  if (loom__take_error(L, c)) {
    lua_pop(L, 1);     /* keep the error value, drop the traceback */
    return -1;
  }
  return n;
}

int loom_backend_fd (lua_State *L) {
  loom_ctx *c;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  c = (loom_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c && !c->closed ? uv_backend_fd(&c->loop) : -1;
}

/* }====================================================================== */

/* {======================================================================
** Lua API
** ======================================================================= */

/* The main thread's context lives inside this full userdata, anchored in
** the registry.  Its finalizer closes the loop and marks the context
** closed; the memory itself stays until the state is freed, so a loom
** function called by a later finalizer finds it and raises. */
static int ctxbox_gc (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, 1);
  if (!c->closed) {
    loom__ctx_close(c);
    c->closed = 1;
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  }
  return 0;
}

/* Holds loom_open's reference until the first require takes it. */
static int rtbox_gc (lua_State *L) {
  loom_runtime **box = (loom_runtime **)lua_touserdata(L, 1);
  loom_runtime_release(*box);
  *box = NULL;
  return 0;
}

static loom_ctx *main_ctx (lua_State *L) {
  loom_runtime **rtbox, *rt;
  lua_State *ML;
  loom_ctx *c;
  int own = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  c = (loom_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c) return c;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);   /* not a coroutine */
  ML = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RTKEY);
  rtbox = (loom_runtime **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  rt = rtbox ? *rtbox : NULL;
  if (rt == NULL) {
    rt = loom_runtime_new(NULL);
    own = 1;
    if (rt == NULL) luaL_error(L, "loom: not enough memory");
  }
  c = (loom_ctx *)lua_newuserdatauv(L, sizeof *c, 0);
  if (loom__ctx_init(c, rt, ML, NULL)) {
    if (own) loom_runtime_release(rt);
    luaL_error(L, "loom: cannot create the event loop");
  }
  if (own) loom_runtime_release(rt);   /* the context holds it now */
  lua_newtable(L);
  lua_pushcfunction(L, ctxbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, c);  /* anchored for the state's life */
  loom__ctx_install(L, c);
  return c;
}

/* core.setdispatch(dispatch, run_immediates, fast): 'fast' maps a target
** to its sole 'message' listener, called directly with the value. */
static int l_setdispatch (lua_State *L) {
  loom_ctx *c = CTX(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_unref(L, LUA_REGISTRYINDEX, c->dispatch_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->immediate_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->fast_ref);
  lua_settop(L, 3);
  c->fast_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->immediate_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int boot_writer (lua_State *L, const void *p, size_t sz, void *ud) {
  loom_buf *b = (loom_buf *)ud;
  (void)L;
  if (loom__buf_reserve(b, sz)) return 1;
  memcpy(b->p + b->len, p, sz);
  b->len += sz;
  return 0;
}

/* core.boot(name, chunk): keep the bytecode of one of loom's Lua modules,
** so that workers load it without searching or parsing. */
static int l_boot (lua_State *L) {
  loom_ctx *c = CTX(L);
  loom_runtime *rt = c->rt;
  loom_buf b = {NULL, 0, 0};
  size_t n;
  const char *name = luaL_checklstring(L, 1, &n);
  int i, known = 0;
  luaL_argcheck(L, n < sizeof rt->boot[0].name, 1, "name too long");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  uv_mutex_lock(&rt->lock);
  for (i = 0; i < rt->nboot; i++)
    if (strcmp(rt->boot[i].name, name) == 0) known = 1;
  uv_mutex_unlock(&rt->lock);
  if (known || lua_dump(L, boot_writer, &b, 1) != 0) {   /* dump unlocked */
    loom__buf_free(&b);
    return 0;
  }
  uv_mutex_lock(&rt->lock);
  for (i = 0; i < rt->nboot; i++)
    if (strcmp(rt->boot[i].name, name) == 0) known = 1;
  if (!known && rt->nboot < LOOM_BOOT_MAX) {
    memcpy(rt->boot[rt->nboot].name, name, n + 1);
    rt->boot[rt->nboot].code = (char *)b.p;
    rt->boot[rt->nboot].len = b.len;
    rt->nboot++;
    b.p = NULL;
  }
  uv_mutex_unlock(&rt->lock);
  loom__buf_free(&b);
  return 0;
}

/* package.preload loader for boot module i (upvalue 2) in workers */
static int l_loadboot (lua_State *L) {
  loom_ctx *c = CTX(L);
  int i = (int)lua_tointeger(L, lua_upvalueindex(2)), st;
  char chunkname[40];
  /* entry i was published before loom__preload read nboot under the lock,
  ** and entries never change once added: no lock needed to read it */
  snprintf(chunkname, sizeof chunkname, "=%s", c->rt->boot[i].name);
  st = luaL_loadbufferx(L, c->rt->boot[i].code, c->rt->boot[i].len, chunkname, "b");
  if (st != LUA_OK) return lua_error(L);
  lua_pushvalue(L, 1);          /* the module name, as require passes it */
  lua_call(L, 1, 1);
  return 1;
}

/* Set package.preload for "loom.core" and loom's Lua modules in a worker. */
void loom__preload (lua_State *L, loom_ctx *c) {
  int i, n;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  uv_mutex_lock(&c->rt->lock);
  n = c->rt->nboot;
  uv_mutex_unlock(&c->rt->lock);
  for (i = 0; i < n; i++) {
    lua_pushlightuserdata(L, c);
    lua_pushinteger(L, i);
    lua_pushcclosure(L, l_loadboot, 2);
    lua_setfield(L, -2, c->rt->boot[i].name);   /* set once, never changed */
  }
  lua_pop(L, 2);
}

static const luaL_Reg funcs[] = {
  {"setdispatch", l_setdispatch},
  {"boot", l_boot},
  {NULL, NULL}
};

int luaopen_loom_core (lua_State *L) {
  loom_ctx *c = main_ctx(L);
  lua_newtable(L);
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
  lua_pushboolean(L, c->self == NULL);
  lua_setfield(L, -2, "isMainThread");
  lua_pushinteger(L, (lua_Integer)c->thread_id);
  lua_setfield(L, -2, "threadId");
  lua_pushliteral(L, LOOM_VERSION);
  lua_setfield(L, -2, "version");
  loom__open_serial(L);
  loom__open_loop(L);
  loom__open_worker(L);
  return 1;
}

/* }====================================================================== */
