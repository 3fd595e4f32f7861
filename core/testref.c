/*
** testref.c: a by-reference type for tests, the smallest user of the
** clone hooks: a refcounted block that counts its holders.  A message
** carrying one holds one count until it is decoded or freed, so a test
** can see that a message dropped undelivered released what it carried.
** (core.testref() -> ref; ref:count() -> holders now.)
*/
#include <stdlib.h>
#include "loom_lua.h"

#define TESTREF "loom.TestRef"

/* Shared by every thread holding it; freed at count 0 (atomic). */
typedef struct tblock {
  atomic_int refs;
} tblock;

static void tb_release (void *p) {
  tblock *b = (tblock *)p;
  /* acq_rel: the last holder must see every other holder's writes. */
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) free(b);
}

static const loom_refvt tb_vt = {TESTREF, tb_release};

/* A full userdata: one count of b, dropped in __gc. */
typedef struct tref {
  tblock *b;
} tref;

static void push (lua_State *L, tblock *b) {
  tref *r = (tref *)lua_newuserdatauv(L, sizeof *r, 0);
  r->b = NULL;
  luaL_setmetatable(L, TESTREF);
  r->b = b;
}

static int tb_encode (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  tref *r = (tref *)lua_touserdata(L, idx);
  (void)err; (void)errsz;
  atomic_fetch_add_explicit(&r->b->refs, 1, memory_order_relaxed);
  *p = r->b;
  return 0;
}

static int tb_decode (lua_State *L, void *p) {
  push(L, (tblock *)p);
  return 0;
}

static const loom_clonehook tb_hook = {TESTREF, &tb_vt, tb_encode, tb_decode};

static int l_testref (lua_State *L) {
  tblock *b;
  loom__ctx_checkmake(L, "testref");
  push(L, NULL);
  b = (tblock *)malloc(sizeof *b);
  if (b == NULL) return luaL_error(L, "testref: not enough memory");
  atomic_init(&b->refs, 1);
  ((tref *)lua_touserdata(L, -1))->b = b;
  return 1;
}

static int tr_count (lua_State *L) {
  tref *r = (tref *)luaL_checkudata(L, 1, TESTREF);
  lua_pushinteger(L, atomic_load(&r->b->refs));
  return 1;
}

static int tr_gc (lua_State *L) {
  tref *r = (tref *)luaL_checkudata(L, 1, TESTREF);
  if (r->b) tb_release(r->b);
  r->b = NULL;
  return 0;
}

static const luaL_Reg meth[] = {
  {"count", tr_count},
  {NULL, NULL}
};

static const luaL_Reg meta[] = {
  {"__gc", tr_gc},
  {"__index", NULL},
  {NULL, NULL}
};

void loom__testref_open (lua_State *L) {
  loom__createmeta(L, TESTREF, meta, meth, 0);
  loom__serial_addhook(L, -1, &tb_hook);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_testref);
  lua_setfield(L, -2, "testref");
}
