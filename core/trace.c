/*
** trace.c: tracing.  Every thread running loom records its events (a
** worker spawned, online, terminated, its exit; a message posted and
** delivered; a channel pushed and popped; a pool task queued, started,
** finished, failed, cancelled) into its own buffer, a list of fixed-size
** chunks in its context.  Recording takes only that thread's own lock;
** another thread takes it only to move the chunks out (the main thread
** draining them for the writer, lua/loom/trace.lua).  Tracing off costs
** each trace point one relaxed load of the runtime's flag.
** Invariant: a chunk holds whole records; a thread's chunks are taken in
** the order it filled them, its partial one last, so the events of one
** thread reach the writer in the order they were recorded.
** The core knows no Lua; the binding reads its context's fields but calls
** nothing of ctx.c (which records through the core): no circle.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

/* The runtime's tracer: a block the runtime keeps (freed with it, after
** tracer_fini).  'lock' guards every field below it; a thread's buffer
** lock may be taken while holding it, never the other way round. */
typedef struct loom_tracer {
  uv_mutex_t lock;
  int ready;                          /* lock initialised */
  loom_tbuf *bufs;                    /* buffers that recorded something */
  loom_tchunk *orphans, *orphanst;    /* chunks of closed buffers, in order */
  uint64_t dropped;                   /* events closed buffers lost */
} loom_tracer;

static const char TRACERKEY = 'T';

static const char *const kindnames[LOOM_TR_NKINDS] = {
  NULL, "worker.spawn", "worker.online", "worker.terminate", "worker.exit",
  "worker.error", "message.post", "message.deliver", "channel.push",
  "channel.pop", "task.queued", "task.started", "task.finished",
  "task.failed", "task.cancelled",
};

const char *loom__trace_kindname (int kind) {
  return kind > 0 && kind < LOOM_TR_NKINDS ? kindnames[kind] : "?";
}

void loom__tchunk_freelist (loom_tchunk *c) {
  while (c) {
    loom_tchunk *next = c->next;
    loom__libc_free(c);
    c = next;
  }
}

static void tracer_init (void *block, const void *key) {
  loom_tracer *tr = (loom_tracer *)block;
  (void)key;
  tr->ready = uv_mutex_init(&tr->lock) == 0;
}

/* With the runtime: every thread has closed its buffer by then. */
static void tracer_fini (void *block) {
  loom_tracer *tr = (loom_tracer *)block;
  loom__tchunk_freelist(tr->orphans);
  tr->orphans = tr->orphanst = NULL;
  if (tr->ready) uv_mutex_destroy(&tr->lock);
}

static loom_tracer *gettracer (loom_runtime *rt) {
  loom_tracer *tr = (loom_tracer *)loom__runtime_keep(rt, &TRACERKEY, sizeof *tr,
                                                      tracer_init, tracer_fini);
  return tr && tr->ready ? tr : NULL;
}

void loom__tbuf_init (loom_tbuf *tb, uint64_t tid, const char *name) {
  memset(tb, 0, sizeof *tb);
  tb->ready = uv_mutex_init(&tb->lock) == 0;
  loom__tbuf_name(tb, tid, name);
}

void loom__tbuf_name (loom_tbuf *tb, uint64_t tid, const char *name) {
  size_t n = name ? strlen(name) : 0;
  tb->tid = tid;
  if (n >= sizeof tb->tname) n = sizeof tb->tname - 1;
  if (n) memcpy(tb->tname, name, n);
  tb->tname[n] = '\0';
}

/* Append the list a..at to the list (*head, *tail). */
static void append (loom_tchunk **head, loom_tchunk **tail, loom_tchunk *a,
                    loom_tchunk *at) {
  if (a == NULL) return;
  if (*tail) (*tail)->next = a;
  else *head = a;
  *tail = at;
}

/* Under tr->lock and tb->lock: move what tb holds to (*head, *tail). */
static uint64_t drain (loom_tbuf *tb, loom_tchunk **head, loom_tchunk **tail) {
  uint64_t d = tb->dropped;
  append(head, tail, tb->full, tb->fullt);
  tb->full = tb->fullt = NULL;
  tb->bytes = 0;
  if (tb->cur && tb->cur->len) {
    tb->cur->next = NULL;
    append(head, tail, tb->cur, tb->cur);
    tb->cur = NULL;
  }
  tb->dropped = 0;
  return d;
}

void loom__tbuf_close (loom_tbuf *tb) {
  loom_tracer *tr = tb->tr;
  if (!tb->ready) return;
  if (tr) {
    uv_mutex_lock(&tr->lock);
    uv_mutex_lock(&tb->lock);
    tr->dropped += drain(tb, &tr->orphans, &tr->orphanst);
    if (tb->prev) tb->prev->next = tb->next;
    else tr->bufs = tb->next;
    if (tb->next) tb->next->prev = tb->prev;
    uv_mutex_unlock(&tb->lock);
    uv_mutex_unlock(&tr->lock);
  }
  loom__libc_free(tb->cur);      /* an empty one, if any */
  tb->cur = NULL;
  tb->tr = NULL;
  uv_mutex_destroy(&tb->lock);
  tb->ready = 0;
}

uint64_t loom__trace_flow (loom_tbuf *tb) {
  if (++tb->seq > 0xffffffffu) tb->seq = 1;
  return tb->tid << 32 | tb->seq;
}

/* Owner, once: join the tracer's list.  -1 when out of memory. */
static int enlist (loom_runtime *rt, loom_tbuf *tb) {
  loom_tracer *tr = gettracer(rt);
  if (tr == NULL) return -1;
  uv_mutex_lock(&tr->lock);
  tb->tr = tr;
  tb->prev = NULL;
  tb->next = tr->bufs;
  if (tr->bufs) tr->bufs->prev = tb;
  tr->bufs = tb;
  uv_mutex_unlock(&tr->lock);
  return 0;
}

/* Under tb->lock: a fresh chunk carrying the count of events lost. */
static loom_tchunk *newchunk (loom_tbuf *tb) {
  /* libc's: the collector may take it after its thread exits (loom_int.h) */
  loom_tchunk *c = (loom_tchunk *)loom__libc_malloc(offsetof(loom_tchunk, u) + LOOM_TRACE_CHUNK);
  if (c == NULL) return NULL;
  c->next = NULL;
  c->tid = tb->tid;
  c->dropped = tb->dropped;
  tb->dropped = 0;
  c->len = 0;
  memcpy(c->tname, tb->tname, sizeof c->tname);
  return c;
}

void loom__trace (loom_runtime *rt, loom_tbuf *tb, int kind, uint64_t t0,
                  uint64_t flow, int64_t a, int64_t b, const char *text,
                  size_t len) {
  uint64_t now = uv_hrtime();
  size_t need;
  loom_trec *r;
  loom_tchunk *c;
  if (!tb->ready || (tb->tr == NULL && enlist(rt, tb))) return;
  if (text == NULL) len = 0;
  if (len > LOOM_TRACE_TEXT) len = LOOM_TRACE_TEXT;
  need = sizeof *r + ((len + 7) & ~(size_t)7);
  if (t0 == 0 || t0 > now) t0 = now;
  uv_mutex_lock(&tb->lock);
  c = tb->cur;
  if (c && c->len + need > LOOM_TRACE_CHUNK) {      /* full: onto the list */
    if (tb->bytes + LOOM_TRACE_CHUNK > LOOM_TRACE_MAXBYTES) {
      tb->dropped++;               /* nobody drains: keep what we have */
      uv_mutex_unlock(&tb->lock);
      return;
    }
    append(&tb->full, &tb->fullt, c, c);
    tb->bytes += LOOM_TRACE_CHUNK;
    c = tb->cur = NULL;
  }
  if (c == NULL && (c = tb->cur = newchunk(tb)) == NULL) {
    tb->dropped++;                 /* out of memory: lose this one, count it */
    uv_mutex_unlock(&tb->lock);
    return;
  }
  r = (loom_trec *)(void *)(c->u.data + c->len);
  r->ts = t0 - rt->t0;
  r->dur = now - t0;
  r->flow = flow;
  r->a = a;
  r->b = b;
  r->kind = (uint32_t)kind;
  r->len = (uint32_t)len;
  if (len) memcpy(r + 1, text, len);
  c->len += need;
  uv_mutex_unlock(&tb->lock);
}

int loom__trace_enable (loom_runtime *rt, int on) {
  if (on && gettracer(rt) == NULL) return -1;
  atomic_store_explicit(&rt->trace, on ? 1 : 0, memory_order_relaxed);
  return 0;
}

loom_tchunk *loom__trace_take (loom_runtime *rt, uint64_t *dropped) {
  loom_tracer *tr = gettracer(rt);
  loom_tchunk *head = NULL, *tail = NULL, *c;
  loom_tbuf *tb;
  uint64_t d = 0;
  *dropped = 0;
  if (tr == NULL) return NULL;
  uv_mutex_lock(&tr->lock);
  append(&head, &tail, tr->orphans, tr->orphanst);
  tr->orphans = tr->orphanst = NULL;
  d = tr->dropped;
  tr->dropped = 0;
  for (tb = tr->bufs; tb; tb = tb->next) {
    uv_mutex_lock(&tb->lock);
    d += drain(tb, &head, &tail);
    uv_mutex_unlock(&tb->lock);
  }
  uv_mutex_unlock(&tr->lock);
  for (c = head; c; c = c->next) d += c->dropped;
  *dropped = d;
  return head;
}

/* {======================================================================
** Lua API: the switch, the collector's take, trace points from Lua (the
** pool's tasks), and the kinds' names
** ======================================================================= */

/* The context in upvalue 1, as loom__ctx_check gives it: read here, not
** called, since ctx.c records through this file's core. */
static loom_ctx *getctx (lua_State *L) {
  loom_ctx *c = (loom_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (c->closed)
    luaL_error(L, "loom is closed in this state (called from a finalizer "
                  "that ran after loom's own)");
  return c;
}

/* core.trace_enable(on) -> true | nil, "not enough memory" */
static int l_enable (lua_State *L) {
  loom_ctx *c = getctx(L);
  if (loom__trace_enable(c->rt, lua_toboolean(L, 1))) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not enough memory");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tracing (lua_State *L) {
  loom_ctx *c = getctx(L);
  lua_pushboolean(L, LOOM_TRACING(c->rt));
  return 1;
}

/* The chunks being turned into Lua tables: freed by __gc if that raises. */
typedef struct takebox {
  loom_tchunk *list;
} takebox;

static int takebox_gc (lua_State *L) {
  takebox *b = (takebox *)lua_touserdata(L, 1);
  loom__tchunk_freelist(b->list);
  b->list = NULL;
  return 0;
}

static void setnum (lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void setint (lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* The event r of chunk c as a table: event, tid, thread, ts, dur (us),
** flow, and the figures of its kind. */
static void pushevent (lua_State *L, const loom_tchunk *c, const loom_trec *r) {
  const char *text = (const char *)(r + 1);
  const char *cut = r->len ? (const char *)memchr(text, '\0', r->len) : NULL;
  size_t n1 = cut ? (size_t)(cut - text) : r->len;
  lua_createtable(L, 0, 10);
  lua_pushstring(L, loom__trace_kindname((int)r->kind));
  lua_setfield(L, -2, "event");
  setint(L, "tid", (lua_Integer)c->tid);
  lua_pushstring(L, c->tname);
  lua_setfield(L, -2, "thread");
  setnum(L, "ts", (lua_Number)r->ts / 1e3);
  setnum(L, "dur", (lua_Number)r->dur / 1e3);
  if (r->flow) setint(L, "flow", (lua_Integer)r->flow);
  switch (r->kind) {
    case LOOM_TR_SPAWN: case LOOM_TR_TERMINATE:
      setint(L, "worker", (lua_Integer)r->a);
      break;
    case LOOM_TR_EXIT:
      setint(L, "code", (lua_Integer)r->a);
      break;
    case LOOM_TR_POST: case LOOM_TR_DELIVER:
      setint(L, "to", (lua_Integer)r->b);
      /* FALLTHROUGH */
    case LOOM_TR_PUSH: case LOOM_TR_POP:
      setint(L, "size", (lua_Integer)r->a);
      break;
    case LOOM_TR_QUEUED: case LOOM_TR_STARTED: case LOOM_TR_FINISHED:
    case LOOM_TR_FAILED: case LOOM_TR_CANCELLED:
      setint(L, "task", (lua_Integer)r->a);
      setint(L, "pool", (lua_Integer)r->b);
      break;
    default: break;
  }
  if (r->len) {                /* "name" or "name\0detail" */
    if (n1 || r->kind != LOOM_TR_ERROR) {
      lua_pushlstring(L, text, n1);
      lua_setfield(L, -2, "name");
    }
    if (cut || r->kind == LOOM_TR_ERROR) {
      const char *d = cut ? cut + 1 : text;
      lua_pushlstring(L, d, r->len - (size_t)(d - text));
      lua_setfield(L, -2, r->kind == LOOM_TR_CANCELLED ? "reason" : "error");
    }
  }
}

/* core.trace_take() -> list of events (oldest first per thread), dropped */
static int l_take (lua_State *L) {
  loom_ctx *c = getctx(L);
  uint64_t dropped;
  takebox *b = (takebox *)lua_newuserdatauv(L, sizeof *b, 0);
  const loom_tchunk *k;
  lua_Integer n = 0;
  b->list = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, takebox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  b->list = loom__trace_take(c->rt, &dropped);
  lua_newtable(L);
  for (k = b->list; k; k = k->next) {
    size_t off = 0;
    while (off < k->len) {
      const loom_trec *r = (const loom_trec *)(const void *)(k->u.data + off);
      pushevent(L, k, r);
      lua_rawseti(L, -2, ++n);
      off += sizeof *r + ((r->len + 7) & ~(uint32_t)7);
    }
  }
  loom__tchunk_freelist(b->list);
  b->list = NULL;
  lua_pushinteger(L, (lua_Integer)dropped);
  return 2;
}

/* core.trace_point(kind, flow, a, b [, name [, detail [, t0]]]): an event
** from Lua (the pool's); t0 in loom.now() ms when it began.  Nothing
** when tracing is off. */
static int l_point (lua_State *L) {
  loom_ctx *c = getctx(L);
  lua_Integer kind;
  size_t n1 = 0, n2 = 0;
  const char *s1, *s2;
  uint64_t t0 = 0;
  char text[LOOM_TRACE_TEXT];
  if (!LOOM_TRACING(c->rt)) return 0;
  kind = luaL_checkinteger(L, 1);
  luaL_argcheck(L, kind > 0 && kind < LOOM_TR_NKINDS, 1, "unknown trace event kind");
  s1 = luaL_optlstring(L, 5, NULL, &n1);
  s2 = luaL_optlstring(L, 6, NULL, &n2);
  if (!lua_isnoneornil(L, 7)) {
    lua_Number ms = luaL_checknumber(L, 7);
    if (ms > 0) t0 = c->rt->t0 + (uint64_t)(ms * 1e6);
  }
  if (n1 > sizeof text) n1 = sizeof text;
  if (s1) memcpy(text, s1, n1);
  if (s2) {                    /* name \0 detail */
    size_t room = sizeof text - n1;
    if (room > 0) { text[n1++] = '\0'; room--; }
    if (n2 > room) n2 = room;
    memcpy(text + n1, s2, n2);
    n1 += n2;
  }
  loom__trace(c->rt, &c->trace, (int)kind, t0,
              (uint64_t)luaL_optinteger(L, 2, 0), (int64_t)luaL_optinteger(L, 3, 0),
              (int64_t)luaL_optinteger(L, 4, 0), text, n1);
  return 0;
}

/* core.trace_uid() -> a number no other thread, endpoint or pool of the
** runtime has (a pool's flows: uid << 32 | task id) */
static int l_uid (lua_State *L) {
  loom_ctx *c = getctx(L);
  lua_pushinteger(L, (lua_Integer)loom__runtime_newid(c->rt));
  return 1;
}

static const luaL_Reg funcs[] = {
  {"trace_enable", l_enable},
  {"tracing", l_tracing},
  {"trace_take", l_take},
  {"trace_point", l_point},
  {"trace_uid", l_uid},
  {NULL, NULL}
};

void loom__trace_open (lua_State *L, loom_ctx *c) {
  int k;
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
  lua_createtable(L, 0, LOOM_TR_NKINDS);   /* core.TRACE: name -> kind */
  for (k = 1; k < LOOM_TR_NKINDS; k++) {
    lua_pushinteger(L, k);
    lua_setfield(L, -2, kindnames[k]);
  }
  lua_setfield(L, -2, "TRACE");
}

/* }====================================================================== */
