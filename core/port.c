/*
** port.c: port pairs, two entangled endpoints, as Node's MessageChannel.
** A message posted on one end is pushed, under the pair's lock, into the
** inbox of the other end's thread, addressed to that end's id; closing
** pushes a CLOSE to both ends under the same lock, so each end sees it
** after every message posted before.  A worker's parentPort and its
** Worker handle are the two ends of the pair made at spawn; their ends
** never move, so that pair posts through a lane per direction (see
** mailbox.c) without the lock.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

loom_pair *loom__pair_new (loom_runtime *rt, loom_mailbox *mb0, loom_mailbox *mb1,
                           int fixed) {
  /* libc's, as a port in flight (xport): any thread may keep either end
  ** after the pair's maker exits (loom_int.h) */
  loom_pair *p = (loom_pair *)loom__libc_memalign(64, sizeof *p);
  if (p == NULL) return NULL;
  memset(p, 0, sizeof *p);
  if (uv_mutex_init(&p->lock)) { loom__libc_free(p); return NULL; }
  atomic_init(&p->refs, 1);
  p->id[0] = loom__runtime_newid(rt);
  p->id[1] = loom__runtime_newid(rt);
  loom__mailbox_retain(mb0);
  loom__mailbox_retain(mb1);
  p->mb[0] = mb0;
  p->mb[1] = mb1;
  atomic_init(&p->closed, 0);
  if (fixed) {                       /* no lane (no memory): the locked path */
    p->lane[0] = loom__mailbox_lane(mb0, rt->heavy);
    p->lane[1] = loom__mailbox_lane(mb1, rt->heavy);
  }
  return p;
}

void loom__pair_retain (loom_pair *p) {
  atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void loom__pair_release (loom_pair *p) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  loom__lane_drop(p->lane[0]);       /* before the mailboxes may go */
  loom__lane_drop(p->lane[1]);
  loom__mailbox_release(p->mb[0]);
  loom__mailbox_release(p->mb[1]);
  loom__msg_freelist(p->wait[0]);
  loom__msg_freelist(p->wait[1]);
  uv_mutex_destroy(&p->lock);
  loom__libc_free(p);
}

/* Under p->lock: m (taken) to end 'to': its thread's inbox, or the
** waiting list while that end is in transit.  0, or -1 (m freed). */
static int route (loom_pair *p, int to, loom_msg *m) {
  m->target = p->id[to];
  if (p->lane[to]) return loom__lane_push(p->mb[to], p->lane[to], m, 0);
  if (p->mb[to]) return loom__mailbox_push(p->mb[to], m);
  m->next = NULL;
  if (p->waitt[to]) p->waitt[to]->next = m;
  else p->wait[to] = m;
  p->waitt[to] = m;
  return 0;
}

int loom__pair_post (loom_pair *p, int from, loom_msg *m, int force) {
  int to = 1 - from, r = -1;
  m->target = p->id[to];
  if (p->lane[to]) {                 /* a fixed pair: no lock (see loom_pair) */
    if (force || !atomic_load_explicit(&p->closed, memory_order_relaxed))
      return loom__lane_push(p->mb[to], p->lane[to], m, 1);
    loom__msg_free(m);
    return -1;
  }
  uv_mutex_lock(&p->lock);
  if (!p->closed || force) {
    r = route(p, to, m);              /* frees m when it fails */
    m = NULL;
  }
  uv_mutex_unlock(&p->lock);
  loom__msg_free(m);
  return r;
}

void loom__pair_close (loom_pair *p, loom_msg *m0, loom_msg *m1) {
  uv_mutex_lock(&p->lock);
  if (!p->closed) {
    atomic_store(&p->closed, 1);
    route(p, 0, m0);
    route(p, 1, m1);
    m0 = m1 = NULL;
  }
  uv_mutex_unlock(&p->lock);
  loom__msg_free(m0);
  loom__msg_free(m1);
}

void loom__pair_shut (loom_pair *p) {
  uv_mutex_lock(&p->lock);
  atomic_store(&p->closed, 1);
  uv_mutex_unlock(&p->lock);
}

loom_mailbox *loom__pair_unbind (loom_pair *p, int e) {
  loom_mailbox *mb;
  uv_mutex_lock(&p->lock);
  mb = p->mb[e];
  p->mb[e] = NULL;
  uv_mutex_unlock(&p->lock);
  return mb;
}

void loom__pair_bind (loom_pair *p, int e, loom_mailbox *mb, loom_msg *carried) {
  loom_msg *m, **last = &carried;
  loom__mailbox_retain(mb);
  uv_mutex_lock(&p->lock);
  LOOM_ASSERT(p->mb[e] == NULL && p->lane[e] == NULL);
  while (*last) last = &(*last)->next;
  *last = p->wait[e];                 /* what was carried, then what waited */
  p->wait[e] = p->waitt[e] = NULL;
  p->mb[e] = mb;
  while ((m = carried) != NULL) {
    carried = m->next;
    route(p, e, m);
  }
  uv_mutex_unlock(&p->lock);
}

/* {======================================================================
** Lua API: the port userdata behind a MessagePort (and a Worker), the
** transfer of MessagePorts inside messages, and pulling without the loop
** ======================================================================= */

#define PORT "loom.Port"
#define XFER_MAX 64                 /* ports in one transfer list */

static const char XFERKEY = 'x';    /* registry: this state's xferset */
static const char WRAPKEY = 'w';    /* registry: port.wrap, Lua side */

/* A full userdata of the state holding one end.  'pair' is one reference,
** dropped in __gc (NULL once transferred away, and while a received port
** is being made: 'pending'); 'c' is borrowed: the state's context, which
** outlives every userdata of the state.  Owner thread only. */
typedef struct lport {
  loom_pair *pair;
  uint64_t id;                 /* the id messages to this end carry */
  int end;
  int movable;                 /* a MessageChannel's port: transferable */
  int gone;                    /* transferred: every use raises */
  int big;                     /* its last message was large: stream the next's root */
  int pending;                 /* received, not yet bound to this thread */
  loom_msg *taken;             /* pulled by receive, being decoded */
  loom_ctx *c;
} lport;

static lport *newport (lua_State *L, loom_ctx *c, uint64_t id, int end) {
  lport *lp = (lport *)lua_newuserdatauv(L, sizeof *lp, 0);
  memset(lp, 0, sizeof *lp);
  lp->end = end;
  lp->id = id;
  lp->c = c;
  luaL_setmetatable(L, PORT);
  return lp;
}

void loom__port_push (lua_State *L, loom_ctx *c, loom_pair *p, int end) {
  lport *lp = newport(L, c, p->id[end], end);
  loom__pair_retain(p);              /* only once nothing can raise */
  lp->pair = p;
}

static lport *checkport (lua_State *L, int idx) {
  lport *lp = (lport *)luaL_checkudata(L, idx, PORT);
  if (lp->gone) luaL_error(L, "port was transferred");
  if (lp->pair == NULL && !lp->pending) luaL_error(L, "port is closed");
  return lp;
}

static int port_gc (lua_State *L) {
  lport *lp = (lport *)luaL_checkudata(L, 1, PORT);
  loom__msg_free(lp->taken);
  lp->taken = NULL;
  loom__pair_release(lp->pair);
  lp->pair = NULL;
  return 0;
}

/* port:close(): both ends get a CLOSE after what was posted to them. */
static int port_close (lua_State *L) {
  lport *lp = checkport(L, 1);
  loom_msg *m0 = loom__msg_new(LOOM_MSG_CLOSE, 0, NULL, NULL);
  loom_msg *m1 = loom__msg_new(LOOM_MSG_CLOSE, 0, NULL, NULL);
  if (m0 == NULL || m1 == NULL) {
    loom__msg_free(m0);
    loom__msg_free(m1);
    return luaL_error(L, "close: not enough memory");
  }
  loom__pair_close(lp->pair, m0, m1);
  return 0;
}

/* port:id(): the endpoint id messages to this end carry */
static int port_id (lua_State *L) {
  lport *lp = checkport(L, 1);
  lua_pushinteger(L, (lua_Integer)lp->id);
  return 1;
}

/* {------------------------------------------------------------------
** Transfer.  A post with a transfer list checks it (xfer_begin); the
** cloner meets each listed MessagePort and makes an xport for it, one
** count of the pair (xp_encode); once the message exists, each end is
** unbound from this thread and what was queued for it here moves into
** its xport (xfer_commit); the receiver's decoder binds the end to its
** own thread and makes a MessagePort of it (xp_decode).  An xport
** dropped undelivered closes the pair: the other end gets 'close'.
** ------------------------------------------------------------------- */

/* A port in flight, owned by the message reference holding it. */
typedef struct xport {
  loom_pair *pair;             /* one count */
  int end;
  int committed;               /* unbound from the sender's thread */
  loom_msg *carried;           /* what was queued for it there, in order */
  loom_msg *close0, *close1;   /* made beforehand: a lost port closes */
} xport;

static void xp_release (void *p) {
  xport *x = (xport *)p;
  if (x->committed) {          /* lost in flight: close both ends */
    loom__pair_close(x->pair, x->close0, x->close1);
    x->close0 = x->close1 = NULL;
  }
  loom__msg_free(x->close0);
  loom__msg_free(x->close1);
  loom__msg_freelist(x->carried);
  loom__pair_release(x->pair);
  loom__libc_free(x);
}

static const loom_refvt xp_vt = {"loom.MessagePort", xp_release};

/* The transfer list of the post being made: a userdata in the registry.
** Owner thread only.  'n' is 0 outside a post. */
typedef struct xferset {
  int n;
  struct {
    lport *lp;
    xport *x;                  /* made by the cloner; owned by the message */
    loom_msg *queued;          /* the Lua side's queue, cloned again */
  } e[XFER_MAX];
} xferset;

static void xfer_clear (xferset *xs) {
  int i;
  for (i = 0; i < xs->n; i++) {
    loom__msg_freelist(xs->e[i].queued);
    xs->e[i].queued = NULL;
    xs->e[i].x = NULL;
  }
  xs->n = 0;
}

static int xferset_gc (lua_State *L) {
  xfer_clear((xferset *)lua_touserdata(L, 1));
  return 0;
}

static xferset *getxfer (lua_State *L) {
  xferset *xs;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &XFERKEY);
  xs = (xferset *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return xs;
}

static int xp_encode (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  xferset *xs = getxfer(L);
  lport *lp;
  xport *x;
  int i;
  lua_pushliteral(L, "_port");
  lua_rawget(L, idx);
  lp = (lport *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  for (i = 0; xs && lp && i < xs->n; i++)
    if (xs->e[i].lp == lp) break;
  if (xs == NULL || lp == NULL || i == xs->n) {
    snprintf(err, errsz, "MessagePort not in the transfer list");
    return -1;
  }
  x = (xport *)loom__libc_calloc(1, sizeof *x);
  if (x == NULL) {
    snprintf(err, errsz, "not enough memory");
    return -1;
  }
  x->close0 = loom__msg_new(LOOM_MSG_CLOSE, 0, NULL, NULL);
  x->close1 = loom__msg_new(LOOM_MSG_CLOSE, 0, NULL, NULL);
  if (x->close0 == NULL || x->close1 == NULL) {
    loom__msg_free(x->close0);
    loom__msg_free(x->close1);
    loom__libc_free(x);
    snprintf(err, errsz, "not enough memory");
    return -1;
  }
  loom__pair_retain(lp->pair);
  x->pair = lp->pair;
  x->end = lp->end;
  xs->e[i].x = x;
  *p = x;
  return 0;
}

static int xp_decode (lua_State *L, void *p) {
  xport *x = (xport *)p;
  loom_ctx *c = loom__ctx_get(L);
  lport *lp;
  if (!x->committed || c == NULL) {
    lua_pushliteral(L, "the port was not transferred");
    return -1;
  }
  /* the MessagePort first, unbound: if making it raises, the message
  ** still owns x (and closes the pair when freed) */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &WRAPKEY);
  lp = newport(L, c, x->pair->id[x->end], x->end);
  lp->movable = 1;
  lp->pending = 1;
  lua_call(L, 1, 1);
  /* nothing raises from here on: bind the end to this thread */
  loom__pair_bind(x->pair, x->end, c->mb, x->carried);
  lp->pair = x->pair;
  lp->pending = 0;
  loom__msg_free(x->close0);
  loom__msg_free(x->close1);
  loom__libc_free(x);
  return 0;
}

static const loom_clonehook xp_hook = {"loom.MessagePort", &xp_vt, xp_encode, xp_decode};

/* Check the transfer list at tidx (nil: none) of a post from 'self' (or
** NULL) and clone what the Lua side still queues for each port. */
static xferset *xfer_begin (lua_State *L, loom_ctx *c, int tidx, lport *self,
                            const char *who) {
  xferset *xs = getxfer(L);
  lua_Integer i, n;
  int j;
  xfer_clear(xs);
  if (lua_isnoneornil(L, tidx)) return xs;
  if (!lua_istable(L, tidx))
    luaL_error(L, "%s: transfer must be a table (got %s)", who, luaL_typename(L, tidx));
  n = (lua_Integer)lua_rawlen(L, tidx);
  if (n > XFER_MAX) luaL_error(L, "%s: transfer: more than %d ports", who, XFER_MAX);
  for (i = 1; i <= n; i++) {
    lport *lp = NULL;
    if (lua_rawgeti(L, tidx, i) == LUA_TTABLE) {
      lua_pushliteral(L, "_port");
      lua_rawget(L, -2);
      lp = (lport *)luaL_testudata(L, -1, PORT);
      lua_pop(L, 1);
    }
    if (lp == NULL)
      luaL_error(L, "%s: transfer[%d]: a MessagePort expected, got %s", who, (int)i,
                 luaL_typename(L, -1));
    if (lp->gone) luaL_error(L, "%s: transfer[%d]: port was already transferred", who, (int)i);
    if (lp->pair == NULL || lp->pending) luaL_error(L, "%s: transfer[%d]: port is closed", who, (int)i);
    if (!lp->movable)
      luaL_error(L, "%s: transfer[%d]: a worker's own port cannot be transferred", who, (int)i);
    if (self && lp->pair == self->pair)
      luaL_error(L, "%s: transfer[%d]: cannot transfer a port through its own channel", who, (int)i);
    for (j = 0; j < xs->n; j++)
      if (xs->e[j].lp == lp) luaL_error(L, "%s: transfer[%d]: port listed twice", who, (int)i);
    lua_getfield(L, -1, "_closing");
    if (lua_toboolean(L, -1)) luaL_error(L, "%s: transfer[%d]: port is closed", who, (int)i);
    lua_pop(L, 1);
    xs->e[xs->n].lp = lp;
    xs->e[xs->n].x = NULL;
    xs->e[xs->n].queued = NULL;
    xs->n++;
    /* values delivered to its Lua queue but not yet read travel too */
    if (lua_getfield(L, -1, "_queue") == LUA_TTABLE) {
      lua_Integer k, qn = (lua_Integer)lua_rawlen(L, -1);
      loom_msg **tail = &xs->e[xs->n - 1].queued;
      for (k = 1; k <= qn; k++) {
        loom_msg *m;
        lua_rawgeti(L, -1, k);
        m = loom__ctx_pack(L, c, lua_gettop(L), who, "msg", LOOM_MSG_MESSAGE);
        m->target = lp->id;
        *tail = m;
        tail = &m->next;
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 2);
  }
  return xs;
}

/* After the message m exists: every listed port must be in it (else m is
** freed and this raises); unbind each from this thread, move what was
** queued for it into its xport, and tell the Lua side (obj:_transferred). */
static void xfer_commit (lua_State *L, loom_ctx *c, xferset *xs, int tidx,
                         loom_msg *m, const char *who) {
  int i, n = xs->n;
  for (i = 0; i < n; i++) {
    if (xs->e[i].x == NULL) {
      xfer_clear(xs);
      loom__msg_free(m);
      luaL_error(L, "%s: transfer[%d]: that port is not in the message", who, i + 1);
    }
  }
  for (i = 0; i < n; i++) {
    lport *lp = xs->e[i].lp;
    xport *x = xs->e[i].x;
    loom_msg *carried = xs->e[i].queued, **tail = &carried;
    loom_mailbox *mb = loom__pair_unbind(lp->pair, lp->end);
    while (*tail) tail = &(*tail)->next;
    *tail = loom__ctx_extract(c, lp->id);   /* after the unbind: all of them */
    loom__mailbox_release(mb);
    xs->e[i].queued = NULL;
    x->carried = carried;
    x->committed = 1;
    loom__pair_release(lp->pair);
    lp->pair = NULL;
    lp->gone = 1;
  }
  xs->n = 0;
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, tidx, i + 1);
    if (lua_getfield(L, -1, "_transferred") == LUA_TFUNCTION) {
      lua_insert(L, -2);
      lua_call(L, 1, 0);
    }
    else lua_pop(L, 2);
  }
}

/* The messages of a post or a spawn that carries ports: tidx is the
** transfer list.  (Used by the Worker's 'transfer' option too.) */
loom_msg *loom__port_packx (lua_State *L, loom_ctx *c, int idx, int tidx,
                            const char *who, const char *root) {
  xferset *xs;
  loom_msg *m;
  if (lua_isnoneornil(L, tidx)) return loom__ctx_pack(L, c, idx, who, root, LOOM_MSG_MESSAGE);
  xs = xfer_begin(L, c, tidx, NULL, who);
  m = loom__ctx_pack(L, c, idx, who, root, LOOM_MSG_MESSAGE);
  xfer_commit(L, c, xs, tidx, m, who);
  return m;
}

/* The postMessage of one endpoint object: upvalues ctx, port, owner.
** (owner, value [, transfer]) -> true | false, "closed" */
/* what postMessage returns: true, or false, "closed" (failed: the other
** end was closed) */
static int posted (lua_State *L, loom_ctx *c, int failed) {
  if (failed) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "closed");
    return 2;
  }
  loom__stat_add(&c->stats->out, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* {====== streamed posts: a large value leaves in chunks as it is encoded */

typedef struct spost {
  loom_ctx *c;
  lport *lp;
  loom_stream *s;              /* once the first chunk left */
  int closed;                  /* the other end was closed */
} spost;

/* the encoder's chunk: the first one posts the message */
static int post_chunk (void *ud, loom_buf *b) {
  spost *sp = (spost *)ud;
  if (sp->s == NULL) {
    loom_stream *s = loom__stream_new();
    loom_msg *m = s ? loom__msg_newstream(&sp->c->mcache, LOOM_MSG_MESSAGE, s) : NULL;
    if (m == NULL) {
      if (s) {                         /* both counts */
        loom__stream_release(s);
        loom__stream_release(s);
      }
      return -1;
    }
    if (loom__stream_append(s, b)) {
      loom__msg_free(m);               /* the message's count */
      loom__stream_release(s);         /* and the sender's */
      return -1;
    }
    sp->s = s;                         /* ended by post_stream, whatever happens */
    if (loom__pair_post(sp->lp->pair, sp->lp->end, m, 0)) {
      sp->closed = 1;
      return -2;
    }
  }
  else if (loom__stream_append(sp->s, b)) return -1;
  return loom__buf_reserve(b, STREAM_CHUNK + STREAM_CHUNK / 4) ? -1 : 0;
}

/* postMessage(v) without a transfer list: chunks leave once the encoded
** bytes pass STREAM_CHUNK at a point where they may (see serial.c); a
** value that never gets there is an ordinary message.  Returns what
** l_post returns. */
static int post_stream (lua_State *L, loom_ctx *c, lport *lp) {
  char err[512];
  spost sp;
  loom_flush fl;
  int r;
  sp.c = c;
  sp.lp = lp;
  sp.s = NULL;
  sp.closed = 0;
  fl.fn = post_chunk;
  fl.ud = &sp;
  fl.root = lp->big;
  fl.chunk = 0;
  c->scratch.len = 0;
  r = loom__encode_ex(L, 2, &c->scratch, &c->scratch_refs, "msg", err, sizeof err, &fl);
  if (sp.s == NULL) {
    loom_msg *m;
    /* large, but held back by a table around it: stream its root next time */
    lp->big = c->scratch.len >= STREAM_CHUNK;
    if (r) return luaL_error(L, "postMessage: %s", err);
    m = loom__ctx_packed(L, c, "postMessage", "msg", LOOM_MSG_MESSAGE);
    if (loom__pair_post(lp->pair, lp->end, m, 0)) r = -1;
  }
  else {
    lp->big = 1;
    if (r == 0 && loom__stream_append(sp.s, &c->scratch)) {
      r = -1;
      snprintf(err, sizeof err, "cannot clone msg: not enough memory");
    }
    if (r) loom__refs_clear(&c->scratch_refs);
    loom__stream_end(sp.s, r == 0, &c->scratch_refs);
    if (c->scratch.p == NULL) loom__runtime_take_spare(c->rt, &c->scratch);
    if (sp.closed) r = -1;
    else if (r) return luaL_error(L, "postMessage: %s", err);
  }
  return posted(L, c, r);
}

/* }====== */

static int l_post (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lport *lp = (lport *)lua_touserdata(L, lua_upvalueindex(2));
  loom_msg *m;
  uint64_t t0 = 0;
  if (!lua_rawequal(L, 1, lua_upvalueindex(3))) {
    const char *want = "loom.MessagePort";
    if (luaL_getmetafield(L, lua_upvalueindex(3), "__name") == LUA_TSTRING)
      want = lua_tostring(L, -1);
    return luaL_error(L, "bad argument #1 to 'postMessage' (%s expected, got %s)",
                      want, luaL_typename(L, 1));
  }
  if (lp->gone) return luaL_error(L, "postMessage: port was transferred");
  if (lp->pair == NULL) return luaL_error(L, "postMessage: port is closed");
  if (LOOM_TRACING(c->rt)) t0 = uv_hrtime();
  /* a table may be large: it may stream (not while tracing: a post's
  ** event spans its clone) */
  else if (lua_type(L, 2) == LUA_TTABLE && lua_isnoneornil(L, 3))
    return post_stream(L, c, lp);
  if (lua_isnoneornil(L, 3))
    m = loom__ctx_pack(L, c, 2, "postMessage", "msg", LOOM_MSG_MESSAGE);
  else {
    xferset *xs = xfer_begin(L, c, 3, lp, "postMessage");
    lua_settop(L, 3);
    m = loom__ctx_pack(L, c, 2, "postMessage", "msg", LOOM_MSG_MESSAGE);
    xfer_commit(L, c, xs, 3, m, "postMessage");
  }
  if (t0) {     /* the post lasts from before the clone to after the push */
    uint64_t flow = m->flow = loom__trace_flow(&c->trace);
    int64_t size = (int64_t)m->len;
    int r = loom__pair_post(lp->pair, lp->end, m, 0);
    loom__trace(c->rt, &c->trace, LOOM_TR_POST, t0, r ? 0 : flow, size,
                (int64_t)lp->pair->id[1 - lp->end], NULL, 0);
    return posted(L, c, r);
  }
  return posted(L, c, loom__pair_post(lp->pair, lp->end, m, 0));
}

/* core.poster(port, owner): the postMessage method of owner, a closure
** that finds its port without a table lookup */
static int l_poster (lua_State *L) {
  checkport(L, 1);
  luaL_checkany(L, 2);
  loom__ctx_method(L, l_post);
  return 1;
}

/* core.channel() -> port1, port2: the two ends of a new pair, both in
** this thread */
static int l_channel (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lport *a, *b;
  loom_pair *p;
  loom__ctx_checkmake(L, "loom.MessageChannel");
  a = newport(L, c, 0, 0);
  b = newport(L, c, 0, 1);
  p = loom__pair_new(c->rt, c->mb, c->mb, 0);
  if (p == NULL) return luaL_error(L, "MessageChannel: not enough memory");
  a->pair = p;                       /* each end's __gc drops one count */
  a->id = p->id[0];
  a->movable = 1;
  loom__pair_retain(p);
  b->pair = p;
  b->id = p->id[1];
  b->movable = 1;
  return 2;
}

/* core.receive(port, timeout_ms, fname) -> true, v | false, "empty" |
** "timeout" | "closed": the next message for this port, without the loop
** and without listeners (what the Lua side queued was looked at first) */
static int l_receive (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  const char *fname = luaL_optstring(L, 3, "receive");
  lport *lp = (lport *)luaL_checkudata(L, 1, PORT);
  double t = loom__ctx_timeout(L, 2, fname, 1);
  int closed, r;
  loom_msg *m;
  if (lp->gone) return luaL_error(L, "%s: port was transferred", fname);
again:
  lua_settop(L, 1);
  lua_pushboolean(L, 1);                       /* 2: the result, if any */
  if (lp->pair == NULL) closed = 1, m = NULL;
  else m = loom__ctx_pull(c, lp->id, t, &closed);
  if (m == NULL) {
    loom__ctx_checkstop(L, c);
    lua_pushboolean(L, 0);
    if (closed) lua_pushliteral(L, "closed");
    else if (t == 0) lua_pushliteral(L, "empty");
    else lua_pushliteral(L, "timeout");
    return 2;
  }
  loom__msg_free(lp->taken);
  lp->taken = m;                 /* a decode that raises leaves it here */
  if (m->flow && LOOM_TRACING(c->rt))   /* delivered by hand: an instant */
    loom__trace(c->rt, &c->trace, LOOM_TR_DELIVER, 0, m->flow, (int64_t)m->len,
                (int64_t)lp->id, NULL, 0);
  if ((r = loom__decode_msgx(L, m, c->stop ? &c->stop->flag : NULL)) == -2) {
    lua_settop(L, 1);            /* its sender failed: the next one, if any */
    lp->taken = NULL;
    loom__msg_free(m);
    goto again;
  }
  if (r) return luaL_error(L, "%s: %s", fname, lua_tostring(L, -1));
  lp->taken = NULL;
  loom__msg_free(m);
  return 2;
}

/* core.porthook(MessagePort, wrap): teach the cloner MessagePorts (by
** transfer), and how a received one becomes an object (wrap(port)) */
static int l_porthook (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &WRAPKEY);
  loom__serial_addhook(L, 1, &xp_hook);
  return 0;
}

static const luaL_Reg port_meth[] = {
  {"close", port_close},
  {"id", port_id},
  {NULL, NULL}
};

static const luaL_Reg port_meta[] = {
  {"__gc", port_gc},
  {"__index", NULL},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"poster", l_poster},
  {"channel", l_channel},
  {"receive", l_receive},
  {"porthook", l_porthook},
  {NULL, NULL}
};

void loom__port_open (lua_State *L, loom_ctx *c) {
  xferset *xs;
  loom__createmeta(L, PORT, port_meta, port_meth, 0);
  lua_pop(L, 1);
  xs = (xferset *)lua_newuserdatauv(L, sizeof *xs, 0);
  xs->n = 0;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, xferset_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &XFERKEY);
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
}

/* }====================================================================== */
