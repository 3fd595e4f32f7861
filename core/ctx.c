/*
** ctx.c: the thread context.  One per thread running loom: its loop and
** handles, the spin that keeps a conversation awake, the stop flag's
** checks, what keeps the loop alive, uncaught errors, and delivery of the
** inbox's messages through a kind -> handler table to the Lua dispatcher.
** It knows no concept above it: workers and ports plug in through the
** kind table and the dispatcher.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

static const char CTXKEY = 'c';   /* registry: light pointer to loom_ctx */
static const char ERRKEY = 'e';   /* registry: pending uncaught error */
static const char TBKEY = 't';    /* registry: traceback of the last error */
static const char MSGPOOLKEY = 'p'; /* runtime: its pool of spare message blocks */

/* {======================================================================
** The context and its handles
** ======================================================================= */

loom_ctx *loom__ctx_get (lua_State *L) {
  loom_ctx *c;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  c = (loom_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c;
}

/* Protected: the error slots first, the context last.  Each rawsetp of a
** new key may raise, and a table that cannot grow is left as it was, so
** a failure publishes no context. */
static int install (lua_State *L) {
  /* make the error slots now: storing an uncaught error later, outside any
  ** protected call, must not allocate */
  lua_pushboolean(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRKEY);
  lua_pushboolean(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TBKEY);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CTXKEY);
  return 0;
}

int loom__ctx_install (lua_State *L, loom_ctx *c) {
  lua_pushcfunction(L, install);
  lua_pushlightuserdata(L, c);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) return 0;
  lua_pop(L, 1);                 /* out of memory */
  return -1;
}

loom_ctx *loom__ctx_check (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (c->closed)
    luaL_error(L, "loom is closed in this state (called from a finalizer "
                  "that ran after loom's own)");
  return c;
}

void loom__ctx_checkmake (lua_State *L, const char *what) {
  if (loom__ctx_inclose(L))
    luaL_error(L, "%s: the state is closing (nothing that needs a finalizer can be "
                  "made in its finalizers)", what);
}

lua_State *loom__ctx_setstate (loom_ctx *c, lua_State *L) {
  lua_State *saved = c->L;
  c->L = L;
  return saved;
}

void loom__ctx_stop (loom_ctx *c) {
  c->stopping = 1;
  uv_stop(&c->loop);
}

void loom__ctx_checkstop (lua_State *L, loom_ctx *c) {
  if (loom__ctx_stopping(c)) {
    lua_pushliteral(L, LOOM_TERMINATED);
    lua_error(L);
  }
}

void loom__ctx_ref (loom_ctx *c, int delta) {
  c->holds += delta;
  if (c->holds > 0) uv_ref(loom__wake_handle(c->wake));
  else uv_unref(loom__wake_handle(c->wake));
}

void loom__ctx_setkind (loom_ctx *c, int kind, loom_kindfn fn, void *ud) {
  LOOM_ASSERT(kind > 0 && kind < LOOM_MSG_NKINDS);
  c->kinds[kind].fn = fn;
  c->kinds[kind].ud = ud;
}

static void onclose (uv_handle_t *h) { free(h); }

/* Close a loop whose handles are closing: their callbacks run first. */
static void closeloop (uv_loop_t *loop) {
  while (uv_loop_close(loop) == UV_EBUSY)
    uv_run(loop, UV_RUN_NOWAIT);
}

#define SPIN_MIN_NS 2000u        /* the window never shrinks below this */

/* A message that woke the thread soon after its window closed: the
** window was too short for this conversation. */
static void grow (loom_ctx *c) {
  c->spin_win *= 2;
  if (c->spin_win > c->rt->spin_ns) c->spin_win = c->rt->spin_ns;
}

static void on_wake (void *ud) {
  loom_ctx *c = (loom_ctx *)ud;
  loom__mailbox_awake(c->mb);
  if (c->missed_at) {
    if (uv_hrtime() - c->missed_at < c->rt->spin_ns) grow(c);
    c->missed_at = 0;
  }
  if (loom__ctx_stopping(c)) {
    loom__ctx_stop(c);
    return;
  }
  loom__ctx_deliver(c, -1);
}

void loom__ctx_expect (loom_ctx *c) {
  if (c->rt->spin_ns) c->spin_until = uv_hrtime() + c->spin_win;
}

/* A sleeping thread costs a few us or ~60 us to wake on these VMs; a
** bounded spin costs only this thread's time, unless the other side of
** the conversation waits for this very CPU.  So the window adapts, as
** TCP's does: halved by a window that closed with nothing (down to 2 us),
** doubled by one that caught a message or by a message that came soon
** after a window closed (up to the runtime's spin_us).  No sched_yield:
** it is a syscall, and hands the core to any runnable task for a slice. */
int loom__ctx_spin (loom_ctx *c) {
  const atomic_int *stop = c->stop ? &c->stop->flag : NULL;
  uint64_t now;
  if (loom__mailbox_nonempty(c->mb)) return 1;
  if (c->spin_until == 0) return 0;
  for (now = uv_hrtime(); now < c->spin_until; now = uv_hrtime()) {
    int i;
    for (i = 0; i < 64; i++) {
      if (loom__mailbox_nonempty(c->mb)) {
        grow(c);
        return 1;
      }
      if (stop && atomic_load_explicit(stop, memory_order_relaxed)) {
        c->spin_until = 0;
        return 0;
      }
      loom__cpu_relax();
    }
  }
  c->spin_until = 0;            /* the window closed with nothing */
  c->spin_win /= 2;
  if (c->spin_win < SPIN_MIN_NS) c->spin_win = SPIN_MIN_NS;
  c->missed_at = now;
  return 0;
}

/* Before the loop blocks in the kernel.  While a conversation goes on
** (each delivery reopens the spin window), deliver here, round after
** round, instead of blocking in between; after LOOM_SPIN_ROUNDS rounds or
** LOOM_SPIN_TURN_NS, or when immediates wait, let the loop turn (timers,
** I/O, the check phase) and come back.  Then block only once the mailbox
** says pushes will wake us.  In a single turn (await) whatever was
** delivered here may be what the caller waits for: the poll must not
** block either. */
static void on_prepare (uv_prepare_t *h) {
  loom_ctx *c = (loom_ctx *)h->data;
  uint64_t start = 0;
  int rounds = 0, delivered = 0;
  /* loom_poll's own turn never blocks and must not spin: the host owns
  ** the thread (its next post waits for loom_poll to return); a wait
  ** nested in a callback (depth > 0) spins and blocks as usual */
  if (c->stopping || (c->poll_deadline && c->depth == 0)) return;
  while (!uv_is_active((uv_handle_t *)c->idle) && loom__ctx_spin(c)) {
    if (start == 0) start = uv_hrtime();
    if (loom__ctx_deliver(c, -1) > 0) delivered = 1;
    if (c->stopping || c->once || ++rounds >= LOOM_SPIN_ROUNDS ||
        uv_hrtime() - start >= LOOM_SPIN_TURN_NS) {
      loom__wake_send(c->wake);   /* the poll must not block */
      return;
    }
  }
  if (start == 0) start = uv_hrtime();
  for (rounds = 0; loom__mailbox_sleep(c->mb); rounds++) {
    if (rounds == 8 || c->stopping || uv_hrtime() - start >= LOOM_SPIN_TURN_NS) {
      loom__wake_send(c->wake);
      return;
    }
    if (loom__ctx_deliver(c, -1) > 0) delivered = 1;
  }
  if (delivered && c->once) loom__wake_send(c->wake);
  else atomic_store_explicit(&c->stats->asleep, uv_hrtime(), memory_order_relaxed);
}

static void on_check (uv_check_t *h) {
  loom_ctx *c = (loom_ctx *)h->data;
  loom__mailbox_awake(c->mb);   /* back from the poll */
  atomic_store_explicit(&c->stats->idle, uv_metrics_idle_time(&c->loop),
                        memory_order_relaxed);
  atomic_store_explicit(&c->stats->asleep, 0, memory_order_relaxed);
  if (c->stopping || c->immediate_ref == LUA_NOREF) return;
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, c->immediate_ref);
  loom__ctx_pcall(c, 0, 0);
}

int loom__ctx_step (loom_ctx *c) {
  uint64_t now = uv_hrtime();
  int r;
  if (c->fast_turns < LOOM_SPIN_ROUNDS && now - c->last_turn < LOOM_SPIN_TURN_NS &&
      !c->stopping && !uv_is_active((uv_handle_t *)c->idle) &&
      (c->pend_head || loom__ctx_spin(c))) {
    c->fast_turns++;
    loom__ctx_deliver(c, -1);
    return 1;
  }
  c->fast_turns = 0;
  c->last_turn = now;
  c->once = 1;
  r = uv_run(&c->loop, UV_RUN_ONCE);
  c->once = 0;
  return r;
}

int loom__ctx_poll (loom_ctx *c, lua_State *L, int budget_us, int max) {
  lua_State *saved = loom__ctx_setstate(c, L);
  int r;
  c->poll_deadline = uv_hrtime() + (uint64_t)(budget_us > 0 ? budget_us : 0) * 1000;
  c->poll_left = max > 0 ? max : -1;
  c->poll_count = 0;
  c->running = 1;
  c->stopping = 0;
  uv_run(&c->loop, UV_RUN_NOWAIT);   /* timers, wake-ups, immediates */
  loom__ctx_deliver(c, -1);
  r = c->poll_count;
  c->running = 0;
  c->poll_deadline = 0;
  c->L = saved;
  /* the host may now sleep on loom_backend_fd: pushes must wake it */
  if (loom__mailbox_sleep(c->mb) || c->pend_head) loom__wake_send(c->wake);
  if (loom__ctx_take_error(L, c)) {
    lua_pop(L, 1);     /* keep the error value, drop the traceback */
    return -1;
  }
  return r > 0 ? r : 0;
}

int loom__ctx_init (loom_ctx *c, loom_runtime *rt, lua_State *L,
                    loom_mailbox *mb) {
  int r;
  memset(c, 0, sizeof *c);
  c->dispatch_ref = c->immediate_ref = c->fast_ref = LUA_NOREF;
  c->spin_win = rt->spin_ns;
  if ((r = uv_loop_init(&c->loop)) != 0) return r;
  uv_loop_configure(&c->loop, UV_METRICS_IDLE_TIME);   /* worker:stats() */
  c->stats = &c->own;
  c->check = (uv_check_t *)malloc(sizeof *c->check);
  c->idle = (uv_idle_t *)malloc(sizeof *c->idle);
  c->prepare = (uv_prepare_t *)malloc(sizeof *c->prepare);
  if (mb) loom__mailbox_retain(mb);
  else mb = loom__mailbox_new();
  r = UV_ENOMEM;
  if (!c->check || !c->idle || !c->prepare || !mb ||
      (r = loom__wake_init(&c->wake, &c->loop, on_wake, c)) != 0) {
    free(c->check); free(c->idle); free(c->prepare);
    loom__mailbox_release(mb);
    closeloop(&c->loop);           /* (a wake-up half made may be closing) */
    return r;
  }
  uv_check_init(&c->loop, c->check);
  uv_idle_init(&c->loop, c->idle);
  uv_prepare_init(&c->loop, c->prepare);
  c->check->data = c->idle->data = c->prepare->data = c;
  uv_prepare_start(c->prepare, on_prepare);
  uv_unref((uv_handle_t *)c->prepare);
  uv_unref(loom__wake_handle(c->wake));   /* only 'holds' keep the loop alive */
  uv_check_start(c->check, on_check);
  uv_unref((uv_handle_t *)c->check);
  loom__runtime_retain(rt);
  c->rt = rt;
  c->mcache.pool = (loom_msgpool *)loom__runtime_keep(rt, &MSGPOOLKEY, sizeof(loom_msgpool),
                                                      loom__msgpool_init, loom__msgpool_fini);
  c->L = L;
  c->mb = mb;
  loom__mailbox_attach(mb, c->wake);
  loom__tbuf_init(&c->trace, 0, "main");   /* a worker names it again */
  return 0;
}

static void closeall (uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, onclose);
}

void loom__ctx_close (loom_ctx *c) {
  loom__mailbox_close(c->mb);
  loom__msg_freelist(c->pend_head);
  c->pend_head = c->pend_tail = NULL;
  loom__msg_free(c->current);
  c->current = NULL;
  loom__wake_close(c->wake);      /* (its own close also closes its fd) */
  uv_walk(&c->loop, closeall, NULL);
  closeloop(&c->loop);
  loom__mailbox_release(c->mb);
  loom__buf_free(&c->scratch);
  loom__refs_free(&c->scratch_refs);
  loom__msgcache_free(&c->mcache);
  loom__tbuf_close(&c->trace);   /* its events wait for the collector */
  loom_runtime_release(c->rt);
}

/* }====================================================================== */

/* {======================================================================
** Errors and protected calls
** ======================================================================= */

/* The traceback of an error, kept for its report; none for terminate()'s
** own error while the thread stops (nothing reports it, and a traceback
** costs a spawn-to-exit more than the rest of the exit: luaL_traceback
** searches package.loaded for the name of every frame's function). */
int loom__ctx_msgh (lua_State *L) {
  loom_ctx *c;
  if (lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), LOOM_TERMINATED) == 0 &&
      (c = loom__ctx_get(L)) != NULL && loom__ctx_stopping(c)) {
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TBKEY);   /* (the slot exists: no allocation) */
    lua_settop(L, 1);
    return 1;
  }
  luaL_traceback(L, L, NULL, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TBKEY);
  lua_settop(L, 1);
  return 1;
}

void loom__ctx_uncaught (loom_ctx *c) {
  lua_State *L = c->L;
  if (!c->has_error) {   /* the first error wins */
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRKEY);
    c->has_error = 1;
  }
  lua_pop(L, 1);
  loom__ctx_stop(c);
}

int loom__ctx_pcall (loom_ctx *c, int nargs, int nres) {
  lua_State *L = c->L;
  int base = lua_gettop(L) - nargs, st;
  lua_pushcfunction(L, loom__ctx_msgh);
  lua_insert(L, base);
  c->depth++;
  st = lua_pcall(L, nargs, nres, base);
  c->depth--;
  lua_remove(L, base);
  if (st != LUA_OK) {
    if (st == LUA_ERRMEM) {        /* no handler ran: forget an old traceback */
      lua_pushboolean(L, 0);       /* (the slot exists: no allocation) */
      lua_rawsetp(L, LUA_REGISTRYINDEX, &TBKEY);
    }
    if (loom__ctx_stopping(c)) {   /* the termination unwinding */
      lua_pop(L, 1);
      loom__ctx_stop(c);
    }
    else loom__ctx_uncaught(c);
  }
  return st;
}

int loom__ctx_take_error (lua_State *L, loom_ctx *c) {
  if (!c->has_error) return 0;
  c->has_error = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ERRKEY);
  lua_pushboolean(L, 0);              /* keep the slot: no allocation later */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRKEY);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &TBKEY);
  return 1;
}

void loom__ctx_raise (lua_State *L, loom_ctx *c) {
  if (!loom__ctx_take_error(L, c)) return;
  lua_pop(L, 1);   /* the traceback: the error itself says where */
  lua_error(L);
}

/* }====================================================================== */

/* {======================================================================
** Delivery: messages are taken from the mailbox into c->pend_* and handed
** out one by one, so a nested run (an await inside a handler) keeps their
** order.  A kind's handler sees its message first; then a MESSAGE goes to
** the target's sole listener directly (the 'fast' table) or, like every
** other kind, to the Lua dispatcher (target, kind, value, aux).
** ======================================================================= */

/* A delivered message is freed; a large buffer becomes the runtime's
** spare, whose pages the next large message reuses. */
static void msgdone (loom_ctx *c, loom_msg *m) {
  if (m->data != m->inline_ && m->cap >= LOOM_SPARE_MIN) {
    loom_buf b;
    b.p = m->data;
    b.len = 0;
    b.cap = m->cap;
    m->data = m->inline_;
    loom__runtime_give_spare(c->rt, &b);
    loom__buf_free(&b);
  }
  loom__msg_freec(&c->mcache, m);   /* its block for this thread's next post */
}

static int deliver_batch (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, 1);
  int max = (int)lua_tointeger(L, 2), n = 0;
  uint64_t until = uv_hrtime() + LOOM_DELIVER_NS;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->fast_ref);       /* 1: fast table */
  while (c->pend_head && !c->stopping && (max < 0 || n < max)) {
    loom_msg *m = c->pend_head;
    int kind = m->kind, nargs = 4, bad;
    c->pend_head = m->next;
    if (c->pend_head == NULL) c->pend_tail = NULL;
    c->current = m;
    loom__stat_add(&c->stats->done, 1);
    if (kind == LOOM_MSG_MESSAGE) loom__stat_add(&c->stats->in, 1);
    if (kind > 0 && kind < LOOM_MSG_NKINDS && c->kinds[kind].fn)
      c->kinds[kind].fn(c, m, c->kinds[kind].ud);
    /* decode once: decoding takes the message's references */
    if (kind == LOOM_MSG_MESSAGE &&
        lua_rawgeti(L, 1, (lua_Integer)m->target) == LUA_TFUNCTION) {
      bad = loom__decode_msgx(L, m, c->stop ? &c->stop->flag : NULL);
      if (!bad) nargs = 1;                   /* fast path: listener, value */
      else lua_remove(L, -2);                /* the reason stays */
    }
    else {
      lua_settop(L, 1);
      bad = loom__decode_msgx(L, m, c->stop ? &c->stop->flag : NULL);
    }
    if (bad == -2) {      /* a stream its sender aborted: nobody sees it */
      lua_settop(L, 1);
      c->current = NULL;
      msgdone(c, m);
      continue;
    }
    if (nargs == 4) {                        /* dispatch(target, kind, value, aux) */
      if (bad && kind == LOOM_MSG_MESSAGE) kind = LOOM_MSG_MESSAGEERROR;
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->dispatch_ref);
      lua_insert(L, -2);
      lua_pushinteger(L, (lua_Integer)m->target);
      lua_insert(L, -2);
      lua_pushinteger(L, kind);
      lua_insert(L, -2);
      lua_pushinteger(L, m->aux);
    }
    if (kind == LOOM_MSG_EXIT) {
      /* kept until its handler returns: if that raises (out of memory, in
      ** loom's bookkeeping), the exit is delivered again on the next run,
      ** so a worker's hold on the loop is never lost */
      lua_call(L, nargs, 0);
      c->current = NULL;
      loom__msg_free(m);
    }
    else if (m->flow == 0) {   /* untraced (always, with tracing off) */
      c->current = NULL;
      msgdone(c, m);
      lua_call(L, nargs, 0);
    }
    else {                     /* traced: the delivery lasts as its handler */
      uint64_t flow = m->flow, t0 = uv_hrtime(), target = m->target;
      int64_t size = (int64_t)m->len;
      c->current = NULL;
      msgdone(c, m);
      lua_call(L, nargs, 0);
      if (LOOM_TRACING(c->rt))
        loom__trace(c->rt, &c->trace, LOOM_TR_DELIVER, t0, flow, size,
                    (int64_t)target, NULL, 0);
    }
    n++;
    if (c->poll_deadline && uv_hrtime() >= c->poll_deadline) break;
    if ((n & 15) == 0 && uv_hrtime() >= until) break;   /* the loop must turn */
  }
  lua_pushinteger(L, n);
  return 1;
}

int loom__ctx_deliver (loom_ctx *c, int max) {
  lua_State *L = c->L;
  loom_msg *tail = NULL, *list = NULL, *saved = c->current;
  /* loom_poll's own deliveries (from the async, the spin, its last
  ** call) keep to its count; a callback's nested wait (an await in a
  ** handler) must see its message, and does not */
  int n = 0, counted = c->poll_deadline && c->depth == 0;
  if (counted && c->poll_left >= 0 && (max < 0 || max > c->poll_left)) max = c->poll_left;
  /* taken only once those taken before are delivered, and a bounded
  ** share of each sender's: a worker that floods us while we deliver
  ** another's backlog waits in its own lane, so each sender's first
  ** message is seen within a round (and a flood, say, terminated then),
  ** and what waits here stays bounded (what stays in a lane keeps the
  ** mailbox nonempty: the loop's prepare delivers again before it could
  ** block).  Node takes each port's queue in turn alike. */
  if (c->pend_head == NULL) list = loom__mailbox_take(c->mb, &tail, LOOM_LANE_TAKE);
  if (list) {
    if (c->pend_tail) c->pend_tail->next = list;
    else c->pend_head = list;
    c->pend_tail = tail;
  }
  if (c->pend_head == NULL || c->dispatch_ref == LUA_NOREF) return 0;
  lua_pushcfunction(L, deliver_batch);
  lua_pushlightuserdata(L, c);
  lua_pushinteger(L, max);
  if (loom__ctx_pcall(c, 2, 1) == LUA_OK) {
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n > 0) loom__ctx_expect(c);
    if (counted) {
      c->poll_count += n;
      if (c->poll_left > 0) c->poll_left -= n;
    }
    atomic_store_explicit(&c->stats->mem, (uint64_t)lua_gc(L, LUA_GCCOUNT) * 1024 +
                          (uint64_t)lua_gc(L, LUA_GCCOUNTB), memory_order_relaxed);
  }
  else {
    if (c->current != saved) {
      loom_msg *m = c->current;
      if (m->kind == LOOM_MSG_EXIT) {      /* again, first, on the next run */
        m->next = c->pend_head;
        c->pend_head = m;
        if (c->pend_tail == NULL) c->pend_tail = m;
      }
      else loom__msg_free(m);
    }
    c->current = saved;
    n = -1;
  }
  if (c->pend_head && !c->stopping) loom__wake_send(c->wake);  /* rest later */
  return n;
}

/* the inbox's messages, behind those already taken */
static void takeall (loom_ctx *c) {
  loom_msg *tail, *list = loom__mailbox_take(c->mb, &tail, 0);
  if (list) {
    if (c->pend_tail) c->pend_tail->next = list;
    else c->pend_head = list;
    c->pend_tail = tail;
    loom__wake_send(c->wake);          /* the loop delivers the rest */
  }
}

loom_msg *loom__ctx_extract (loom_ctx *c, uint64_t target) {
  loom_msg *list, *m;
  takeall(c);
  list = loom__msg_extract(&c->pend_head, &c->pend_tail, target);
  for (m = list; m; m = m->next) loom__stat_add(&c->stats->done, 1);
  return list;
}

/* the first MESSAGE or CLOSE for target after *from, or NULL */
static loom_msg **findfor (loom_msg **from, uint64_t target) {
  for (; *from; from = &(*from)->next)
    if ((*from)->target == target &&
        ((*from)->kind == LOOM_MSG_MESSAGE || (*from)->kind == LOOM_MSG_CLOSE))
      return from;
  return NULL;
}

loom_msg *loom__ctx_pull (loom_ctx *c, uint64_t target, double timeout_ms, int *closed) {
  uint64_t deadline = timeout_ms > 0 ? uv_hrtime() + (uint64_t)(timeout_ms * 1e6) : 0;
  *closed = 0;
  for (;;) {
    loom_msg **pp, *m;
    takeall(c);
    if ((pp = findfor(&c->pend_head, target)) != NULL) {
      m = *pp;
      if (m->kind == LOOM_MSG_CLOSE) {
        *closed = 1;
        return NULL;
      }
      *pp = m->next;
      if (c->pend_tail == m) {      /* find the new tail */
        loom_msg *t = c->pend_head;
        while (t && t->next) t = t->next;
        c->pend_tail = t;
      }
      m->next = NULL;
      loom__stat_add(&c->stats->done, 1);
      loom__stat_add(&c->stats->in, 1);
      return m;
    }
    if (timeout_ms == 0 || loom__ctx_stopping(c)) return NULL;
    if (timeout_ms > 0) {
      uint64_t now = uv_hrtime();
      if (now >= deadline) return NULL;
      loom__mailbox_wait(c->mb, c->stop ? &c->stop->flag : NULL,
                         (double)(deadline - now) / 1e6, 1);
    }
    else loom__mailbox_wait(c->mb, c->stop ? &c->stop->flag : NULL, -1, 1);
  }
}

void loom__ctx_method (lua_State *L, lua_CFunction f) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, f, 3);
}

void loom__ctx_require (lua_State *L, const char *fname, const char *name) {
  if (lua_getglobal(L, "require") != LUA_TFUNCTION)
    luaL_error(L, "%s: cannot load %s ('require' is not a function)", fname, name);
  lua_pushstring(L, name);
  lua_call(L, 1, 0);
}

double loom__ctx_timeout (lua_State *L, int idx, const char *fname, int n) {
  lua_Number t;
  if (lua_isnoneornil(L, idx)) return -1;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "bad argument #%d to '%s' (number expected, got %s)", n, fname,
               luaL_typename(L, idx));
  t = lua_tonumber(L, idx);
  if (!(t >= 0))                 /* negative or NaN */
    luaL_error(L, "bad argument #%d to '%s' (timeout must be >= 0 ms, nil or math.huge)",
               n, fname);
  return t > 1e12 ? -1 : (double)t;   /* ~31 years, or math.huge: no limit */
}

loom_msg *loom__ctx_pack (lua_State *L, loom_ctx *c, int idx,
                          const char *who, const char *root, int kind) {
  char err[512];
  c->scratch.len = 0;
  if (loom__encode(L, idx, &c->scratch, &c->scratch_refs, root, err, sizeof err))
    luaL_error(L, "%s: %s", who, err);
  return loom__ctx_packed(L, c, who, root, kind);
}

loom_msg *loom__ctx_packed (lua_State *L, loom_ctx *c, const char *who,
                            const char *root, int kind) {
  loom_msg *m = loom__msg_newc(&c->mcache, kind, 0, &c->scratch, &c->scratch_refs);
  if (m == NULL) {
    loom__refs_clear(&c->scratch_refs);
    luaL_error(L, "%s: cannot clone %s: not enough memory", who, root);
  }
  if (c->scratch.p == NULL) loom__runtime_take_spare(c->rt, &c->scratch);
  return m;
}

/* }====================================================================== */

static int nregs (const luaL_Reg *r) {
  int n = 0;
  if (r) for (; r->name; r++) n++;
  return n;
}

/* Tables made whole at once are sized first: a table grown one key at a
** time is rehashed at every power of two (a spawn makes a few hundred). */
void loom__createmeta (lua_State *L, const char *tname, const luaL_Reg *meta,
                       const luaL_Reg *meth, int nup) {
  int i;
  if (luaL_getmetatable(L, tname) == LUA_TNIL) {   /* luaL_newmetatable's, sized */
    lua_pop(L, 1);
    lua_createtable(L, 0, nregs(meta) + 2);        /* + __name, __index */
    lua_pushstring(L, tname);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, tname);
  }
  for (i = 0; i < nup; i++) lua_pushvalue(L, -nup - 1);
  if (meta) luaL_setfuncs(L, meta, nup);
  else lua_pop(L, nup);
  if (meth) {
    lua_createtable(L, 0, nregs(meth));
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup - 2);
    luaL_setfuncs(L, meth, nup);
    lua_setfield(L, -2, "__index");
  }
  if (nup) {           /* drop the upvalues below the metatable */
    lua_insert(L, -nup - 1);
    lua_pop(L, nup);
  }
}
