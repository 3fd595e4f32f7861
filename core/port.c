/*
** port.c: port pairs, two entangled endpoints, as Node's MessageChannel.
** A message posted on one end is pushed, under the pair's lock, into the
** inbox of the other end's thread, addressed to that end's id; closing
** pushes a CLOSE to both ends under the same lock, so each end sees it
** after every message posted before.  A worker's parentPort and its
** Worker handle are the two ends of the pair made at spawn.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

loom_pair *loom__pair_new (loom_runtime *rt, loom_mailbox *mb0, loom_mailbox *mb1) {
  loom_pair *p = (loom_pair *)calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  if (uv_mutex_init(&p->lock)) { free(p); return NULL; }
  atomic_init(&p->refs, 1);
  p->id[0] = loom__runtime_newid(rt);
  p->id[1] = loom__runtime_newid(rt);
  loom__mailbox_retain(mb0);
  loom__mailbox_retain(mb1);
  p->mb[0] = mb0;
  p->mb[1] = mb1;
  return p;
}

void loom__pair_retain (loom_pair *p) {
  atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void loom__pair_release (loom_pair *p) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  loom__mailbox_release(p->mb[0]);
  loom__mailbox_release(p->mb[1]);
  uv_mutex_destroy(&p->lock);
  free(p);
}

int loom__pair_post (loom_pair *p, int from, loom_msg *m, int force) {
  int to = 1 - from, r = -1;
  m->target = p->id[to];
  uv_mutex_lock(&p->lock);
  if (!p->closed || force) {
    r = loom__mailbox_push(p->mb[to], m);   /* frees m when it fails */
    m = NULL;
  }
  uv_mutex_unlock(&p->lock);
  loom__msg_free(m);
  return r;
}

void loom__pair_close (loom_pair *p, loom_msg *m0, loom_msg *m1) {
  uv_mutex_lock(&p->lock);
  if (!p->closed) {
    p->closed = 1;
    m0->target = p->id[0];
    m1->target = p->id[1];
    loom__mailbox_push(p->mb[0], m0);
    loom__mailbox_push(p->mb[1], m1);
    m0 = m1 = NULL;
  }
  uv_mutex_unlock(&p->lock);
  loom__msg_free(m0);
  loom__msg_free(m1);
}

void loom__pair_shut (loom_pair *p) {
  uv_mutex_lock(&p->lock);
  p->closed = 1;
  uv_mutex_unlock(&p->lock);
}

/* {======================================================================
** Lua API: the port userdata behind a MessagePort (and a Worker)
** ======================================================================= */

#define PORT "loom.Port"

/* A full userdata of the state holding one end.  'pair' is one reference,
** dropped in __gc; 'c' is borrowed: the state's context, which outlives
** every userdata of the state. */
typedef struct lport {
  loom_pair *pair;
  int end;
  loom_ctx *c;
} lport;

void loom__port_push (lua_State *L, loom_ctx *c, loom_pair *p, int end) {
  lport *lp = (lport *)lua_newuserdatauv(L, sizeof *lp, 0);
  lp->pair = NULL;
  lp->end = end;
  lp->c = c;
  luaL_setmetatable(L, PORT);
  loom__pair_retain(p);              /* only once nothing can raise */
  lp->pair = p;
}

static lport *checkport (lua_State *L, int idx) {
  lport *lp = (lport *)luaL_checkudata(L, idx, PORT);
  if (lp->pair == NULL) luaL_error(L, "port is closed");
  return lp;
}

static int port_gc (lua_State *L) {
  lport *lp = (lport *)luaL_checkudata(L, 1, PORT);
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
  lua_pushinteger(L, (lua_Integer)lp->pair->id[lp->end]);
  return 1;
}

/* A transfer list: nothing can be transferred yet, so only an empty one. */
static void checktransfer (lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_argexpected(L, lua_istable(L, idx), idx, "transfer list (table)");
  lua_pushnil(L);
  if (lua_next(L, idx)) {
    lua_pop(L, 2);
    luaL_argerror(L, idx, "transfer: nothing in this list can be transferred");
  }
}

/* The postMessage of one endpoint object: upvalues ctx, port, owner.
** (owner, value [, transfer]) -> true | false, "closed" */
static int l_post (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lport *lp = (lport *)lua_touserdata(L, lua_upvalueindex(2));
  loom_msg *m;
  if (!lua_rawequal(L, 1, lua_upvalueindex(3))) {
    const char *want = "loom.MessagePort";
    if (luaL_getmetafield(L, lua_upvalueindex(3), "__name") == LUA_TSTRING)
      want = lua_tostring(L, -1);
    return luaL_error(L, "bad argument #1 to 'postMessage' (%s expected, got %s)",
                      want, luaL_typename(L, 1));
  }
  checktransfer(L, 3);
  if (lp->pair == NULL) return luaL_error(L, "postMessage: port is closed");
  m = loom__ctx_pack(L, c, 2, "postMessage", "msg", LOOM_MSG_MESSAGE);
  if (loom__pair_post(lp->pair, lp->end, m, 0)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "closed");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.poster(port, owner): the postMessage method of owner, a closure
** that finds its port without a table lookup */
static int l_poster (lua_State *L) {
  checkport(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_pushcclosure(L, l_post, 3);
  return 1;
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
  {NULL, NULL}
};

void loom__port_open (lua_State *L, loom_ctx *c) {
  loom__createmeta(L, PORT, port_meta, port_meth, 0);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
}

/* }====================================================================== */
