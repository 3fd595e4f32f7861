/*
** broadcast.c: BroadcastChannel.  Every open BroadcastChannel of a name,
** in every thread of the runtime, is a member of that name's group (the
** runtime keeps the groups, runtime.c); a post clones the value once for
** each member but the sender and pushes it to that member's thread,
** addressed to its endpoint id, so each receiver gets one sender's
** messages in the order posted.  Closing leaves the group: what was not
** delivered yet is dropped by the Lua side (lua/loom/broadcast.lua).
** Binding only: the Lua-free half is the runtime's group list.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

#define BCAST "loom.BroadcastRef"

/* A full userdata of one thread: a member of 'name' while joined.  Owner
** thread only. */
typedef struct lbc {
  loom_runtime *rt;            /* borrowed: the state's */
  char *name;                  /* malloc'd */
  uint64_t id;
  int joined;
} lbc;

static void leave (lbc *b) {
  if (b->joined) loom__runtime_bc_leave(b->rt, b->name, b->id);
  b->joined = 0;
}

static int bc_gc (lua_State *L) {
  lbc *b = (lbc *)luaL_checkudata(L, 1, BCAST);
  leave(b);
  free(b->name);
  b->name = NULL;
  return 0;
}

/* core.bc_open(name) -> ref, id */
static int l_open (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  const char *name = luaL_checkstring(L, 1);
  lbc *b;
  loom__ctx_checkmake(L, "loom.BroadcastChannel");
  b = (lbc *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, BCAST);
  b->rt = c->rt;
  b->id = loom__runtime_newid(c->rt);
  if ((b->name = strdup(name)) == NULL ||
      loom__runtime_bc_join(c->rt, name, b->id, c->mb) != 0)
    return luaL_error(L, "BroadcastChannel: not enough memory");
  b->joined = 1;
  lua_pushinteger(L, (lua_Integer)b->id);
  return 2;
}

/* core.bc_close(ref): leave the group; posts fail from now on */
static int l_close (lua_State *L) {
  leave((lbc *)luaL_checkudata(L, 1, BCAST));
  return 0;
}

/* The members a post is sending to: a userdata, so that a clone that
** raises halfway still releases every mailbox (its __gc). */
typedef struct sendjob {
  loom_bcmember *v;
  size_t n;
} sendjob;

static void job_free (sendjob *j) {
  size_t i;
  for (i = 0; i < j->n; i++) loom__mailbox_release(j->v[i].mb);
  free(j->v);
  j->v = NULL;
  j->n = 0;
}

static int job_gc (lua_State *L) {
  job_free((sendjob *)lua_touserdata(L, 1));
  return 0;
}

/* The postMessage of one BroadcastChannel: upvalues ctx, ref, owner.
** (owner, value) -> true | false, "closed" */
static int l_post (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lbc *b = (lbc *)lua_touserdata(L, lua_upvalueindex(2));
  sendjob *j;
  size_t i;
  if (!lua_rawequal(L, 1, lua_upvalueindex(3)))
    return luaL_error(L, "bad argument #1 to 'postMessage' (loom.BroadcastChannel expected, got %s)",
                      luaL_typename(L, 1));
  lua_settop(L, 2);
  if (!b->joined) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "closed");
    return 2;
  }
  j = (sendjob *)lua_newuserdatauv(L, sizeof *j, 0);   /* 3 */
  j->v = NULL;
  j->n = 0;
  luaL_setmetatable(L, "loom.BroadcastJob");
  if (loom__runtime_bc_members(c->rt, b->name, b->id, &j->v, &j->n))
    return luaL_error(L, "postMessage: not enough memory");
  if (j->n == 0) {   /* nobody else listens: the value must still be cloneable */
    loom_msg *m = loom__ctx_pack(L, c, 2, "postMessage", "msg", LOOM_MSG_MESSAGE);
    loom__msg_free(m);
  }
  for (i = 0; i < j->n; i++) {   /* one clone each: they own what they carry */
    loom_msg *m = loom__ctx_pack(L, c, 2, "postMessage", "msg", LOOM_MSG_MESSAGE);
    m->target = j->v[i].id;
    loom__mailbox_push(j->v[i].mb, m);    /* dropped if that thread is gone */
  }
  job_free(j);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.bc_poster(ref, owner): the postMessage method of owner */
static int l_poster (lua_State *L) {
  luaL_checkudata(L, 1, BCAST);
  luaL_checkany(L, 2);
  loom__ctx_method(L, l_post);
  return 1;
}

static const luaL_Reg meta[] = {
  {"__gc", bc_gc},
  {NULL, NULL}
};

static const luaL_Reg jobmeta[] = {
  {"__gc", job_gc},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"bc_open", l_open},
  {"bc_close", l_close},
  {"bc_poster", l_poster},
  {NULL, NULL}
};

void loom__broadcast_open (lua_State *L, loom_ctx *c) {
  loom__createmeta(L, BCAST, meta, NULL, 0);
  lua_pop(L, 1);
  loom__createmeta(L, "loom.BroadcastJob", jobmeta, NULL, 0);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
}
