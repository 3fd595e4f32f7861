/*
** channel.c: Channel, a multi-producer multi-consumer queue of cloned
** values shared by reference (every thread holding it sees the same
** queue), with a capacity, blocking push and pop with timeouts, close,
** names (one per runtime), serving from an event loop, and select over
** several channels and ports.
**
** A blocked thread waits on its own mailbox (loom__mailbox_await), with a
** waiter linked into the channel: whoever frees it (a pop for a pusher, a
** push for a popper, a close for all) unlinks it, sets its flag and
** signals that mailbox.  terminate() interrupts the same mailbox, so
** every wait here is woken by it.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

loom_chan *loom__chan_new (size_t cap, const char *name) {
  /* libc's, as its subscriptions: any thread may keep it (loom_int.h) */
  loom_chan *q = (loom_chan *)loom__libc_calloc(1, sizeof *q);
  if (q == NULL) return NULL;
  if (name && (q->name = loom__libc_strdup(name)) == NULL) { loom__libc_free(q); return NULL; }
  if (uv_mutex_init(&q->lock)) { loom__libc_free(q->name); loom__libc_free(q); return NULL; }
  atomic_init(&q->refs, 1);
  q->cap = cap;
  return q;
}

void loom__chan_retain (loom_chan *q) {
  atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
}

void loom__chan_release (loom_chan *q) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (q == NULL || atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
    return;
  while (q->subs) {             /* none left once every holder is gone */
    loom_chansub *s = q->subs;
    q->subs = s->next;
    loom__mailbox_release(s->mb);
    loom__libc_free(s);
  }
  loom__msg_freelist(q->head);
  uv_mutex_destroy(&q->lock);
  loom__libc_free(q->name);
  loom__libc_free(q);
}

/* Under q->lock: wake the first waiter of *list, or all of them. */
static void wake (loom_chanwait **list, int all) {
  loom_chanwait *w;
  while ((w = *list) != NULL) {
    *list = w->next;
    w->next = NULL;
    atomic_store(w->flag, 1);
    loom__mailbox_signal(w->mb);   /* it waits in loom__mailbox_await */
    if (!all) break;
  }
}

static void link (loom_chanwait **list, loom_chanwait *w) {
  w->next = NULL;
  while (*list) list = &(*list)->next;
  *list = w;                    /* at the end: first come, first woken */
}

/* Under q->lock: tell one subscriber not yet told, round robin. */
static void notify (loom_chan *q) {
  loom_chansub *s, **pp;
  for (pp = &q->subs; (s = *pp) != NULL; pp = &s->next) {
    if (!s->notified) {
      loom_msg *m = loom__msg_new(LOOM_MSG_READY, s->id, NULL, NULL);
      if (m == NULL) return;    /* told on the next push */
      s->notified = 1;
      loom__mailbox_push(s->mb, m);
      *pp = s->next;            /* to the end: the next push tells another */
      s->next = NULL;
      while (*pp) pp = &(*pp)->next;
      *pp = s;
      return;
    }
  }
}

int loom__chan_push (loom_chan *q, loom_msg *m, loom_chanwait *w) {
  int r = LOOM_CHAN_OK;
  uv_mutex_lock(&q->lock);
  if (q->closed) r = LOOM_CHAN_CLOSED;
  else if (q->cap && q->n >= q->cap) r = LOOM_CHAN_FULL;
  else {
    m->next = NULL;
    if (q->tail) q->tail->next = m;
    else q->head = m;
    q->tail = m;
    q->n++;
    atomic_store_explicit(&q->ready, 1, memory_order_release);
    if (q->poppers) wake(&q->poppers, 0);
    else if (q->subs) notify(q);
  }
  if (r == LOOM_CHAN_FULL && w) link(&q->pushers, w);
  uv_mutex_unlock(&q->lock);
  return r;
}

int loom__chan_pop (loom_chan *q, loom_msg **m, loom_chanwait *w, loom_chansub *sub) {
  int r = LOOM_CHAN_OK;
  uv_mutex_lock(&q->lock);
  if ((*m = q->head) != NULL) {
    q->head = (*m)->next;
    if (q->head == NULL) {
      q->tail = NULL;
      atomic_store_explicit(&q->ready, q->closed, memory_order_relaxed);
    }
    (*m)->next = NULL;
    q->n--;
    if (q->pushers) wake(&q->pushers, 0);
    if (q->head && q->subs && !q->poppers) notify(q);  /* others may help */
  }
  else {
    r = q->closed ? LOOM_CHAN_CLOSED : LOOM_CHAN_EMPTY;
    if (sub) sub->notified = 0;            /* drained: tell it again */
    if (w && !q->closed) link(&q->poppers, w);
  }
  uv_mutex_unlock(&q->lock);
  return r;
}

void loom__chan_unwait (loom_chan *q, loom_chanwait *w) {
  loom_chanwait **pp;
  uv_mutex_lock(&q->lock);
  for (pp = &q->poppers; *pp; pp = &(*pp)->next)
    if (*pp == w) { *pp = w->next; goto done; }
  for (pp = &q->pushers; *pp; pp = &(*pp)->next)
    if (*pp == w) { *pp = w->next; break; }
done:
  uv_mutex_unlock(&q->lock);
}

size_t loom__chan_len (loom_chan *q) {
  size_t n;
  uv_mutex_lock(&q->lock);
  n = q->n;
  uv_mutex_unlock(&q->lock);
  return n;
}

void loom__chan_close (loom_chan *q) {
  loom_chansub *s;
  uv_mutex_lock(&q->lock);
  if (!q->closed) {
    q->closed = 1;
    atomic_store(&q->ready, 1);
    wake(&q->poppers, 1);
    wake(&q->pushers, 1);
    for (s = q->subs; s; s = s->next) {    /* each drains, then sees it */
      loom_msg *m = loom__msg_new(LOOM_MSG_READY, s->id, NULL, NULL);
      if (m) loom__mailbox_push(s->mb, m);
      s->notified = 1;
    }
  }
  uv_mutex_unlock(&q->lock);
}

loom_chansub *loom__chan_subscribe (loom_chan *q, loom_mailbox *mb, uint64_t id) {
  loom_chansub *s = (loom_chansub *)loom__libc_calloc(1, sizeof *s), **pp;
  if (s == NULL) return NULL;
  loom__mailbox_retain(mb);
  s->mb = mb;
  s->id = id;
  uv_mutex_lock(&q->lock);
  for (pp = &q->subs; *pp; pp = &(*pp)->next) ;
  *pp = s;
  if (q->head || q->closed) {   /* values (or the close) already there */
    loom_msg *m = loom__msg_new(LOOM_MSG_READY, id, NULL, NULL);
    if (m) {
      s->notified = 1;
      loom__mailbox_push(mb, m);
    }
  }
  uv_mutex_unlock(&q->lock);
  return s;
}

void loom__chan_unsubscribe (loom_chan *q, loom_chansub *sub) {
  loom_chansub **pp;
  uv_mutex_lock(&q->lock);
  for (pp = &q->subs; *pp; pp = &(*pp)->next)
    if (*pp == sub) { *pp = sub->next; break; }
  uv_mutex_unlock(&q->lock);
  loom__mailbox_release(sub->mb);
  loom__libc_free(sub);
}

/* Named channels: one list per runtime, kept by it (loom__runtime_keep),
** under its own lock; the list holds one count of each channel. */
typedef struct namedlist {
  uv_mutex_t lock;
  int ok;                      /* the lock was made */
  loom_chan *list;
} namedlist;

static const char NAMEDKEY = 'n';

static void named_init (void *block, const void *key) {
  namedlist *n = (namedlist *)block;
  (void)key;
  n->ok = uv_mutex_init(&n->lock) == 0;
  n->list = NULL;
}

static void named_fini (void *block) {
  namedlist *n = (namedlist *)block;
  while (n->list) {
    loom_chan *q = n->list;
    n->list = q->next;
    loom__chan_release(q);
  }
  if (n->ok) uv_mutex_destroy(&n->lock);
}

static loom_chan *findnamed (namedlist *n, const char *name) {
  loom_chan *q;
  for (q = n->list; q; q = q->next)
    if (strcmp(q->name, name) == 0) break;
  return q;
}

loom_chan *loom__chan_named (loom_runtime *rt, const char *name, size_t cap,
                             size_t *cap_out) {
  namedlist *n = (namedlist *)loom__runtime_keep(rt, &NAMEDKEY, sizeof *n, named_init, named_fini);
  loom_chan *q, *made = NULL;
  if (n == NULL || !n->ok) return NULL;
  uv_mutex_lock(&n->lock);
  if ((q = findnamed(n, name)) == NULL) {   /* first use: make it, unlocked */
    uv_mutex_unlock(&n->lock);
    if ((made = loom__chan_new(cap, name)) == NULL) return NULL;
    uv_mutex_lock(&n->lock);
    if ((q = findnamed(n, name)) == NULL) { /* another thread was quicker? */
      q = made;
      made = NULL;
      q->next = n->list;
      n->list = q;                          /* the list's count */
    }
  }
  loom__chan_retain(q);
  *cap_out = q->cap;
  uv_mutex_unlock(&n->lock);
  loom__chan_release(made);
  return q;
}

/* {======================================================================
** Lua API: the channel userdata behind a loom.Channel (lua/loom/channel.lua
** wraps it), its clone hook, and the wait of loom.select
** ======================================================================= */

#define CHAN "loom.ChannelRef"

static const char WRAPKEY = 'w';    /* registry: channel.wrap, Lua side */

/* A full userdata: one count of q (NULL while a received one is made),
** and this thread's subscription, if it serves q from its loop.  Owner
** thread only. */
typedef struct lchan {
  loom_chan *q;
  loom_chansub *sub;
  loom_msg *taken;             /* popped, being decoded */
  loom_ctx *c;
} lchan;

static lchan *newchan (lua_State *L, loom_ctx *c) {
  lchan *lq = (lchan *)lua_newuserdatauv(L, sizeof *lq, 0);
  lq->q = NULL;
  lq->sub = NULL;
  lq->taken = NULL;
  lq->c = c;
  luaL_setmetatable(L, CHAN);
  return lq;
}

static lchan *checkchan (lua_State *L, int idx) {
  lchan *lq = (lchan *)luaL_checkudata(L, idx, CHAN);
  if (lq->q == NULL) luaL_error(L, "channel is not usable here");
  return lq;
}

static int chan_gc (lua_State *L) {
  lchan *lq = (lchan *)luaL_checkudata(L, 1, CHAN);
  if (lq->sub) loom__chan_unsubscribe(lq->q, lq->sub);
  lq->sub = NULL;
  loom__msg_free(lq->taken);
  lq->taken = NULL;
  loom__chan_release(lq->q);
  lq->q = NULL;
  return 0;
}

/* The clone hook, on the Lua class's metatable: a Channel travels as one
** count of its queue. */
static void cq_release (void *p) { loom__chan_release((loom_chan *)p); }
static const loom_refvt cq_vt = {"loom.Channel", cq_release};

static int cq_encode (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  lchan *lq;
  lua_pushliteral(L, "_q");
  lua_rawget(L, idx);
  lq = (lchan *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lq == NULL || lq->q == NULL) {
    snprintf(err, errsz, "a broken loom.Channel");
    return -1;
  }
  loom__chan_retain(lq->q);
  *p = lq->q;
  return 0;
}

static int cq_decode (lua_State *L, void *p) {
  lchan *lq;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &WRAPKEY);
  lq = newchan(L, loom__ctx_get(L));
  lua_pushvalue(L, -1);
  lua_insert(L, -3);            /* ud, wrap, ud */
  lua_call(L, 1, 1);            /* may raise: the message still owns p */
  lua_remove(L, -2);
  lq->q = (loom_chan *)p;       /* the count is ours now */
  return 0;
}

static const loom_clonehook cq_hook = {"loom.Channel", &cq_vt, cq_encode, cq_decode};

/* ms left until deadline (ns), never negative; -1 stays -1 */
static double left (double timeout, uint64_t deadline) {
  uint64_t now;
  if (timeout < 0) return -1;
  now = uv_hrtime();
  return now >= deadline ? 0 : (double)(deadline - now) / 1e6;
}

static int fail2 (lua_State *L, const char *why) {
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

/* core.chan_new(capacity) -> ref */
static int l_new (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_Integer cap = luaL_optinteger(L, 1, 0);
  lchan *lq;
  loom__ctx_checkmake(L, "loom.Channel");
  luaL_argcheck(L, cap >= 0, 1, "capacity must be a positive integer");
  lq = newchan(L, c);
  lq->q = loom__chan_new((size_t)cap, NULL);
  if (lq->q == NULL) return luaL_error(L, "Channel: not enough memory");
  return 1;
}

/* core.chan_named(name, capacity or nil) -> ref, capacity */
static int l_named (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  const char *name = luaL_checkstring(L, 1);
  lua_Integer cap = luaL_optinteger(L, 2, 0);
  size_t got;
  lchan *lq;
  loom__ctx_checkmake(L, "loom.Channel.named");
  luaL_argcheck(L, cap >= 0, 2, "capacity must be a positive integer");
  lq = newchan(L, c);
  lq->q = loom__chan_named(c->rt, name, (size_t)cap, &got);
  if (lq->q == NULL) return luaL_error(L, "Channel.named: not enough memory");
  lua_pushinteger(L, (lua_Integer)got);
  return 2;
}

/* The methods of one Channel object are C closures over (ctx, ref,
** owner), as a port's postMessage is: no table lookup on the way in. */
static lchan *selfchan (lua_State *L, const char *fname) {
  lchan *lq = (lchan *)lua_touserdata(L, lua_upvalueindex(2));
  if (!lua_rawequal(L, 1, lua_upvalueindex(3)))
    luaL_error(L, "bad argument #1 to '%s' (loom.Channel expected, got %s)", fname,
               luaL_typename(L, 1));
  if (lq->q == NULL) luaL_error(L, "%s: channel is not usable here", fname);
  return lq;
}

/* q:push(v [, timeout]) -> true | nil, "full" | "timeout" | "closed" */
static int l_push (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lchan *lq = selfchan(L, "push");
  double t = loom__ctx_timeout(L, 3, "push", 2);
  uint64_t deadline = t > 0 ? uv_hrtime() + (uint64_t)(t * 1e6) : 0, t0 = 0;
  loom_msg *m;
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "bad argument #1 to 'push' (nil cannot be pushed)");
  lua_settop(L, 2);
  if (LOOM_TRACING(c->rt)) t0 = uv_hrtime();
  m = loom__ctx_pack(L, c, 2, "push", "value", LOOM_MSG_MESSAGE);
  if (t0) m->flow = loom__trace_flow(&c->trace);
  for (;;) {
    atomic_int flag;
    loom_chanwait w;
    uint64_t flow = 0;
    int64_t size = 0;
    int r;
    atomic_init(&flag, 0);
    w.mb = c->mb;
    w.flag = &flag;
    if (t0) flow = m->flow, size = (int64_t)m->len;
    r = loom__chan_push(lq->q, m, t == 0 ? NULL : &w);
    if (r == LOOM_CHAN_OK) {
      if (t0) loom__trace(c->rt, &c->trace, LOOM_TR_PUSH, t0, flow, size, 0, NULL, 0);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (r == LOOM_CHAN_CLOSED || t == 0) {
      loom__msg_free(m);
      return fail2(L, r == LOOM_CHAN_CLOSED ? "closed" : "full");
    }
    if (!loom__ctx_stopping(c))
      loom__mailbox_await(c->mb, c->stop ? &c->stop->flag : NULL, &flag, left(t, deadline), 0);
    loom__chan_unwait(lq->q, &w);
    if (loom__ctx_stopping(c)) {
      loom__msg_free(m);
      loom__ctx_checkstop(L, c);
    }
    if (t > 0 && !atomic_load(&flag) && uv_hrtime() >= deadline) {
      loom__msg_free(m);
      return fail2(L, "timeout");
    }
  }
}

/* Decode m and push its value.  m waits in lq->taken meanwhile: a decode
** that raises (out of memory, a hook's Lua) leaves it there, freed by the
** next pop or the userdata's __gc. */
static int pushvalue (lua_State *L, lchan *lq, loom_msg *m, const char *who) {
  loom__msg_free(lq->taken);
  lq->taken = m;
  if (m->flow) {
    loom_ctx *c = loom__ctx_get(L);
    if (c && LOOM_TRACING(c->rt))
      loom__trace(c->rt, &c->trace, LOOM_TR_POP, 0, m->flow, (int64_t)m->len, 0, NULL, 0);
  }
  if (loom__decode_msg(L, m)) return luaL_error(L, "%s: %s", who, lua_tostring(L, -1));
  lq->taken = NULL;
  if (lq->c && !lq->c->closed) loom__msg_freec(&lq->c->mcache, m);   /* for the next post */
  else loom__msg_free(m);
  return 1;
}

/* Before blocking: spin up to the runtime's spin window for a value (a
** sleeping thread costs a futex wake-up per value to the pusher).  1 if
** one may be there. */
static int spin (loom_ctx *c, loom_chan *q) {
  const atomic_int *stop = c->stop ? &c->stop->flag : NULL;
  uint64_t until = uv_hrtime() + c->rt->spin_ns;
  do {
    int i;
    for (i = 0; i < 64; i++) {
      if (atomic_load_explicit(&q->ready, memory_order_acquire)) return 1;
      if (stop && atomic_load_explicit(stop, memory_order_relaxed)) return 0;
      loom__cpu_relax();
    }
  } while (uv_hrtime() < until);
  return 0;
}

static int pop (lua_State *L, lchan *lq, double t, const char *who) {
  loom_ctx *c = loom__ctx_check(L);
  uint64_t deadline = t > 0 ? uv_hrtime() + (uint64_t)(t * 1e6) : 0;
  int spun = 0;
  for (;;) {
    atomic_int flag;
    loom_chanwait w;
    loom_msg *m;
    int r;
    atomic_init(&flag, 0);
    w.mb = c->mb;
    w.flag = &flag;
    if (t != 0 && !spun && c->rt->spin_ns) {   /* first without a waiter, then spin */
      r = loom__chan_pop(lq->q, &m, NULL, lq->sub);
      if (r == LOOM_CHAN_EMPTY) {
        spun = 1;
        spin(c, lq->q);
        continue;
      }
    }
    else r = loom__chan_pop(lq->q, &m, t == 0 ? NULL : &w, lq->sub);
    if (r == LOOM_CHAN_OK) return pushvalue(L, lq, m, who);
    if (r == LOOM_CHAN_CLOSED) return fail2(L, "closed");
    if (t == 0) return fail2(L, "empty");
    if (!loom__ctx_stopping(c))
      loom__mailbox_await(c->mb, c->stop ? &c->stop->flag : NULL, &flag, left(t, deadline), 0);
    loom__chan_unwait(lq->q, &w);
    loom__ctx_checkstop(L, c);
    if (t > 0 && !atomic_load(&flag) && uv_hrtime() >= deadline) return fail2(L, "timeout");
  }
}

/* q:pop([timeout]) -> v | nil, "timeout" | "closed" */
static int l_pop (lua_State *L) {
  lchan *lq = selfchan(L, "pop");
  double t = loom__ctx_timeout(L, 2, "pop", 1);
  if (t == 0) {                      /* pop(0): nothing there is a timeout */
    int n = pop(L, lq, 0, "pop");
    if (n == 2 && strcmp(lua_tostring(L, -1), "empty") == 0) {
      lua_pop(L, 1);
      lua_pushliteral(L, "timeout");
    }
    return n;
  }
  return pop(L, lq, t, "pop");
}

/* q:tryPop() -> v | nil, "empty" | "closed" */
static int l_trypop (lua_State *L) {
  return pop(L, selfchan(L, "tryPop"), 0, "tryPop");
}

/* core.chan_bind(ref, owner) -> push, pop, tryPop of owner */
static int l_bind (lua_State *L) {
  static const lua_CFunction fs[] = {l_push, l_pop, l_trypop};
  int i;
  luaL_checkudata(L, 1, CHAN);      /* a received one is not filled yet */
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  for (i = 0; i < 3; i++) loom__ctx_method(L, fs[i]);
  return 3;
}

static int l_len (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)loom__chan_len(checkchan(L, 1)->q));
  return 1;
}

static int l_close (lua_State *L) {
  loom__chan_close(checkchan(L, 1)->q);
  return 0;
}

static int l_same (lua_State *L) {
  lua_pushboolean(L, checkchan(L, 1)->q == checkchan(L, 2)->q);
  return 1;
}

/* core.chan_serve(ref, on) -> id: start (on) or stop getting a READY,
** for a new endpoint id in this thread, when values come */
static int l_serve (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lchan *lq = checkchan(L, 1);
  if (!lua_toboolean(L, 2)) {
    if (lq->sub) loom__chan_unsubscribe(lq->q, lq->sub);
    lq->sub = NULL;
    return 0;
  }
  if (lq->sub == NULL) {
    lq->sub = loom__chan_subscribe(lq->q, c->mb, loom__runtime_newid(c->rt));
    if (lq->sub == NULL) return luaL_error(L, "on: not enough memory");
  }
  lua_pushinteger(L, (lua_Integer)lq->sub->id);
  return 1;
}

/* core.chan_drain(ref) -> v | nil, "empty" | "closed": for the event
** loop's server (its subscription is told again once it found nothing) */
static int l_drain (lua_State *L) {
  return pop(L, checkchan(L, 1), 0, "Channel 'message' event");
}

/* core.chan_wait(refs, ports, timeout) -> true: some channel in the list
** refs was pushed to or closed, or (if ports) a message came into this
** thread's inbox; false: the timeout passed.  For loom.select, after it
** found nothing ready: it looks again. */
static int l_wait (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  int ports = lua_toboolean(L, 2), n, i, woke = 0;
  double t = loom__ctx_timeout(L, 3, "select", 2);
  atomic_int flag;
  loom_chanwait ws[64];
  lchan *qs[64];
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n <= 64, 1, "at most 64 channels");
  atomic_init(&flag, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    qs[i] = checkchan(L, -1);
    lua_pop(L, 1);
  }
  for (i = 0; i < n; i++) {         /* linked: a push from now on wakes us */
    int r;
    ws[i].mb = c->mb;
    ws[i].flag = &flag;
    uv_mutex_lock(&qs[i]->q->lock);
    r = qs[i]->q->head ? LOOM_CHAN_OK : qs[i]->q->closed ? LOOM_CHAN_CLOSED : LOOM_CHAN_EMPTY;
    if (r == LOOM_CHAN_EMPTY) link(&qs[i]->q->poppers, &ws[i]);
    uv_mutex_unlock(&qs[i]->q->lock);
    if (r != LOOM_CHAN_EMPTY) { woke = 1; n = i; break; }
  }
  if (!woke) {
    int got = loom__mailbox_await(c->mb, c->stop ? &c->stop->flag : NULL, &flag, t, ports);
    woke = got || atomic_load(&flag);
  }
  for (i = 0; i < n; i++) loom__chan_unwait(qs[i]->q, &ws[i]);
  /* a push that woke us may have been meant for another popper: pass it on */
  if (atomic_load(&flag)) {
    for (i = 0; i < n; i++) {
      uv_mutex_lock(&qs[i]->q->lock);
      if (qs[i]->q->head && qs[i]->q->poppers) wake(&qs[i]->q->poppers, 0);
      uv_mutex_unlock(&qs[i]->q->lock);
    }
  }
  loom__ctx_checkstop(L, c);
  lua_pushboolean(L, woke);
  return 1;
}

/* core.chanhook(Channel, wrap): teach the cloner Channels */
static int l_chanhook (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &WRAPKEY);
  loom__serial_addhook(L, 1, &cq_hook);
  return 0;
}

static const luaL_Reg chan_meta[] = {
  {"__gc", chan_gc},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"chan_new", l_new},
  {"chan_named", l_named},
  {"chan_bind", l_bind},
  {"chan_drain", l_drain},
  {"chan_len", l_len},
  {"chan_close", l_close},
  {"chan_same", l_same},
  {"chan_serve", l_serve},
  {"chan_wait", l_wait},
  {"chanhook", l_chanhook},
  {NULL, NULL}
};

void loom__channel_open (lua_State *L, loom_ctx *c) {
  loom__createmeta(L, CHAN, chan_meta, NULL, 0);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
}

/* }====================================================================== */
