/*
** frozen.c: frozen shared tables.  loom.freeze(t) encodes t once into an
** immutable shared block (shared.c's, refcounted) and returns a read-only
** proxy of it; a proxy is sent by reference (the block and the offset of
** its table: O(1), whatever the size), and reading ft[k], #ft, pairs or
** ipairs decodes only what it touches, in any thread at once (nothing in
** the block is ever written after it is made, so readers need no lock).
**
** The image, 8-byte aligned, root table at offset 0:
**   slot  16 bytes: u8 tag, 3 pad, u32 len (strings), u64 val
**         tags: 0 empty (a free hash slot), 1 false, 2 true, 3 integer,
**         4 float (bits), 5 string (val: offset of its bytes, len),
**         6 table (val: offset of its node)
**   node  u32 narr, u32 hcap (0 or a power of 2), u64 nrec, then narr
**         value slots (keys 1..narr), then hcap {key slot, value slot}
**         pairs, open addressing with linear probing, load <= 1/2
** Tables met twice are encoded once (cycles and sharing survive);
** metatables are not frozen (reads are raw, as rawget).  Keys may be
** strings, numbers, booleans or tables (a table key is found by pairs
** only).  A nested table reads as a proxy of its node (a "part"), made
** on each read; __eq makes ft.a == ft.a, and a cycle comes back round.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

#define FROZEN "loom.Frozen"
#define BUILDER "loom.FrozenBuilder"

enum { F_EMPTY, F_FALSE, F_TRUE, F_INT, F_FLT, F_STR, F_TAB };

typedef struct fslot {
  uint8_t tag, pad[3];
  uint32_t len;
  uint64_t val;
} fslot;

typedef struct fnode {
  uint32_t narr, hcap;
  uint64_t nrec;
} fnode;

#define MAXSTR 0xffffffffu
#define MAXCOUNT 0x3fffffffu

static uint64_t mix (uint64_t x) {      /* splitmix64's finalizer */
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9u;
  x ^= x >> 27; x *= 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

static uint64_t strhash (const char *s, size_t n) {   /* FNV-1a, mixed */
  uint64_t h = 0xcbf29ce484222325u;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3u;
  return mix(h ^ n);
}

/* {======================================================================
** Reading an image
** ======================================================================= */

static const fnode *nodeat (const loom_shared *s, size_t off) {
  return (const fnode *)(s->data + off);
}

static const fslot *arr (const fnode *n) { return (const fslot *)(n + 1); }

static const fslot *hpair (const fnode *n, size_t j) {   /* key slot; value = +1 */
  return arr(n) + n->narr + 2 * j;
}

/* The hash of the key at idx (a string, number or boolean; 0 if none). */
static int keyhash (lua_State *L, int idx, uint64_t *h) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *p = lua_tolstring(L, idx, &n);
      *h = strhash(p, n);
      return 1;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) *h = mix((uint64_t)lua_tointeger(L, idx));
      else {
        double d = (double)lua_tonumber(L, idx);
        uint64_t u;
        memcpy(&u, &d, sizeof u);
        *h = mix(u ^ 0x5555555555555555u);
      }
      return 1;
    case LUA_TBOOLEAN:
      *h = mix(lua_toboolean(L, idx) ? 2 : 1);
      return 1;
    default:
      return 0;
  }
}

static int samekey (lua_State *L, int idx, const loom_shared *s, const fslot *k) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *p = lua_tolstring(L, idx, &n);
      return k->tag == F_STR && k->len == n && memcmp(s->data + k->val, p, n) == 0;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return k->tag == F_INT && (lua_Integer)k->val == lua_tointeger(L, idx);
      if (k->tag == F_FLT) {
        double d = (double)lua_tonumber(L, idx), e;
        memcpy(&e, &k->val, sizeof e);
        return d == e;
      }
      return 0;
    case LUA_TBOOLEAN:
      return k->tag == (lua_toboolean(L, idx) ? F_TRUE : F_FALSE);
    default:
      return 0;
  }
}

/* The value slot for the key at idx in node n, or NULL. */
static const fslot *lookup (lua_State *L, const loom_shared *s, const fnode *n, int idx) {
  uint64_t h;
  size_t j, mask;
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    if (i >= 1 && (lua_Unsigned)i <= n->narr) return arr(n) + (i - 1);
  }
  if (n->hcap == 0 || !keyhash(L, idx, &h)) return NULL;
  mask = n->hcap - 1;
  for (j = h & mask; hpair(n, j)->tag != F_EMPTY; j = (j + 1) & mask)
    if (samekey(L, idx, s, hpair(n, j))) return hpair(n, j) + 1;
  return NULL;
}

/* A proxy.  A root (loom.freeze's result, or one decoded from a message)
** holds one count of the block and has a __gc; a part (a nested table
** read from it) holds none and no __gc: its user value keeps its root
** alive, and it is valid while its root's block is (root->s).  So reading
** never touches the block's refcount, which the threads reading one table
** at once would otherwise fight over.  Parts are made afresh on each read;
** __eq makes two proxies of one table equal (ft.a == ft.a). */
typedef struct fproxy {
  const char *tag;             /* &frozentag: see toproxy */
  loom_shared *s;              /* root: one count, NULL once released */
  size_t node;                 /* offset of its table's node */
  struct fproxy *root;         /* itself, for a root */
} fproxy;

static const char frozentag = 'z';
static const char PARTKEY = 'p';   /* registry: the parts' metatable */

/* A proxy at idx, or NULL: a full userdata of a proxy's size whose first
** field is this file's 'frozentag' (no Lua code can write a pointer into
** a userdata, so no other one holds it) is a proxy. */
static fproxy *toproxy (lua_State *L, int idx) {
  fproxy *p = (fproxy *)lua_touserdata(L, idx);
  if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) != sizeof(fproxy) ||
      p->tag != &frozentag) return NULL;
  return p;
}

static void pushroot (lua_State *L, loom_shared *s, size_t node) {   /* takes s's count */
  fproxy *p = (fproxy *)lua_newuserdatauv(L, sizeof *p, 0);
  p->tag = &frozentag;
  p->s = NULL;
  p->node = node;
  p->root = p;
  luaL_setmetatable(L, FROZEN);
  p->s = s;
}

/* A part for 'node' of the tree of the proxy at pidx. */
static void pushpart (lua_State *L, int pidx, size_t node) {
  fproxy *parent = (fproxy *)lua_touserdata(L, pidx);
  fproxy *p = (fproxy *)lua_newuserdatauv(L, sizeof *p, 1);
  p->tag = &frozentag;
  p->s = parent->s;
  p->node = node;
  p->root = parent->root;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &PARTKEY);
  lua_setmetatable(L, -2);
  if (parent->root == parent) lua_pushvalue(L, pidx);   /* the root itself */
  else lua_getiuservalue(L, pidx, 1);                   /* the parent's root */
  lua_setiuservalue(L, -2, 1);
}

/* Push the value of slot k; a table is a part of the proxy at pidx. */
static void pushslot (lua_State *L, const fproxy *p, int pidx, const fslot *k) {
  const loom_shared *s = p->s;
  switch (k->tag) {
    case F_FALSE: lua_pushboolean(L, 0); break;
    case F_TRUE: lua_pushboolean(L, 1); break;
    case F_INT: lua_pushinteger(L, (lua_Integer)k->val); break;
    case F_FLT: {
      double d;
      memcpy(&d, &k->val, sizeof d);
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case F_STR: lua_pushlstring(L, (const char *)s->data + k->val, k->len); break;
    case F_TAB: pushpart(L, lua_absindex(L, pidx), (size_t)k->val); break;
    default: lua_pushnil(L); break;
  }
}

static fproxy *checkproxy (lua_State *L, int arg) {
  fproxy *p = toproxy(L, arg);
  if (p == NULL) luaL_typeerror(L, arg, FROZEN);
  if (p->root->s == NULL) {
    lua_Debug ar;
    const char *name = "?";
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name) name = ar.name;
    luaL_error(L, "%s: the frozen table was released (by its __gc)", name);
  }
  return p;
}

static int f_index (lua_State *L) {
  fproxy *p = checkproxy(L, 1);
  const fslot *k;
  if (lua_type(L, 2) == LUA_TNUMBER && !lua_isinteger(L, 2)) {
    int isint;
    lua_Integer i = lua_tointegerx(L, 2, &isint);   /* ft[1.0] is ft[1], as in a table */
    if (isint) {
      lua_pushinteger(L, i);
      lua_replace(L, 2);
    }
  }
  k = lookup(L, p->s, nodeat(p->s, p->node), 2);
  if (k) pushslot(L, p, 1, k);
  else lua_pushnil(L);
  return 1;
}

static int f_len (lua_State *L) {
  fproxy *p = checkproxy(L, 1);
  lua_pushinteger(L, (lua_Integer)nodeat(p->s, p->node)->narr);
  return 1;
}

/* next(ft, k) over the array part, then the hash slots in order */
static int f_next (lua_State *L) {
  fproxy *p = checkproxy(L, 1);
  const fnode *n = nodeat(p->s, p->node);
  size_t pos = 0, j;
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) {
    const fslot *k = lookup(L, p->s, n, 2);
    const fproxy *kp = toproxy(L, 2);
    if (k == NULL && kp && kp->s == p->s) {   /* a table key: by its node */
      for (j = 0; j < n->hcap && k == NULL; j++)
        if (hpair(n, j)->tag == F_TAB && hpair(n, j)->val == kp->node) k = hpair(n, j) + 1;
    }
    if (k == NULL) return luaL_error(L, "next: the key is not in this frozen table");
    if (k >= arr(n) && k < arr(n) + n->narr) pos = (size_t)(k - arr(n)) + 1;
    else pos = n->narr + (size_t)((k - 1) - hpair(n, 0)) / 2 + 1;
  }
  if (pos < n->narr) {
    lua_pushinteger(L, (lua_Integer)pos + 1);
    pushslot(L, p, 1, arr(n) + pos);
    return 2;
  }
  for (j = pos - n->narr; j < n->hcap; j++) {
    const fslot *k = hpair(n, j);
    if (k->tag == F_EMPTY) continue;
    pushslot(L, p, 1, k);
    pushslot(L, p, 1, k + 1);
    return 2;
  }
  lua_pushnil(L);
  return 1;
}

static int f_pairs (lua_State *L) {
  checkproxy(L, 1);
  lua_pushcfunction(L, f_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int f_newindex (lua_State *L) {
  lua_Debug ar;
  if (toproxy(L, 1) == NULL) luaL_typeerror(L, 1, FROZEN);
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name &&
      strcmp(ar.name, "newindex") != 0)   /* called by name, not by t[k] = v */
    return luaL_error(L, "%s: attempt to modify a frozen table", ar.name);
  return luaL_error(L, "attempt to modify a frozen table");
}

/* roots only (a part has no __gc) */
static int f_gc (lua_State *L) {
  fproxy *p = toproxy(L, 1);
  if (p == NULL) return luaL_typeerror(L, 1, FROZEN);
  if (p->root == p) {
    loom__shared_release(p->s);
    p->s = NULL;
  }
  return 0;
}

/* two proxies of one table (of one block) are equal */
static int f_eq (lua_State *L) {
  fproxy *p = checkproxy(L, 1), *q = toproxy(L, 2);
  lua_pushboolean(L, q != NULL && q->root->s == p->root->s && q->node == p->node);
  return 1;
}

static int f_tostring (lua_State *L) {
  fproxy *p = toproxy(L, 1);
  if (p == NULL) return luaL_typeerror(L, 1, FROZEN);
  if (p->root->s == NULL) lua_pushliteral(L, FROZEN " (released)");
  else {
    const fnode *n = nodeat(p->s, p->node);
    lua_pushfstring(L, FROZEN " (%I array, %I hash): %p", (lua_Integer)n->narr,
                    (lua_Integer)n->nrec, (const void *)(p->s->data + p->node));
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Freezing: a builder userdata owns the growing image, so an error
** raised anywhere leaks nothing (its __gc frees it)
** ======================================================================= */

typedef struct builder {
  loom_buf b;
  int seen;                    /* stack index of table -> node offset */
  int depth;
  struct { int kind; int idx; lua_Integer n; } path[LOOM_MAX_DEPTH + 2];
} builder;

enum { P_ARR, P_KEY, P_VAL };

static int bl_gc (lua_State *L) {
  builder *bl = (builder *)lua_touserdata(L, 1);
  loom__buf_free(&bl->b);
  return 0;
}

/* Raise "loom.freeze: cannot freeze value.a[3]: why". */
static int bad (lua_State *L, builder *bl, const char *why) {
  luaL_Buffer B;
  int i;
  luaL_buffinit(L, &B);
  luaL_addstring(&B, "loom.freeze: cannot freeze value");
  for (i = 0; i < bl->depth; i++) {
    int idx = bl->path[i].idx;
    if (bl->path[i].kind == P_ARR) {
      lua_pushfstring(L, "[%I]", bl->path[i].n);
      luaL_addvalue(&B);
    }
    else if (lua_type(L, idx) == LUA_TSTRING) {
      size_t n, j;
      const char *k = lua_tolstring(L, idx, &n);
      int ident = n > 0 && n < 64 && !(k[0] >= '0' && k[0] <= '9');
      for (j = 0; j < n && ident; j++)
        ident = (k[j] == '_' || (k[j] >= 'a' && k[j] <= 'z') || (k[j] >= 'A' && k[j] <= 'Z') ||
                 (k[j] >= '0' && k[j] <= '9'));
      if (ident) lua_pushfstring(L, ".%s", k);
      else lua_pushliteral(L, "[?]");
      luaL_addvalue(&B);
      if (bl->path[i].kind == P_KEY) luaL_addstring(&B, " (a key)");
    }
    else if (lua_type(L, idx) == LUA_TNUMBER || lua_type(L, idx) == LUA_TBOOLEAN) {
      luaL_addchar(&B, '[');
      luaL_tolstring(L, idx, NULL);
      luaL_addvalue(&B);
      luaL_addchar(&B, ']');
      if (bl->path[i].kind == P_KEY) luaL_addstring(&B, " (a key)");
    }
    else {
      luaL_addstring(&B, bl->path[i].kind == P_KEY ? "[<key>]" : "[?]");
    }
  }
  luaL_addstring(&B, ": ");
  luaL_addstring(&B, why);
  luaL_pushresult(&B);
  return lua_error(L);
}

static size_t reserve (lua_State *L, builder *bl, size_t n, size_t align) {
  size_t off = (bl->b.len + align - 1) & ~(align - 1);
  if (off - bl->b.len > SIZE_MAX - n || loom__buf_reserve(&bl->b, off - bl->b.len + n))
    luaL_error(L, "loom.freeze: not enough memory");
  memset(bl->b.p + bl->b.len, 0, off - bl->b.len + n);
  bl->b.len = off + n;
  if (bl->b.len > LOOM_SHARED_MAX) luaL_error(L, "loom.freeze: the table is too large");
  return off;
}

static fslot *slotat (builder *bl, size_t off) { return (fslot *)(bl->b.p + off); }

static size_t freeze_table (lua_State *L, builder *bl, int idx);

/* Encode the value at idx into the slot at offset 'at'. */
static void freeze_value (lua_State *L, builder *bl, int idx, size_t at) {
  uint8_t tag;
  uint64_t val = 0;
  uint32_t len = 0;
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: tag = lua_toboolean(L, idx) ? F_TRUE : F_FALSE; break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        tag = F_INT;
        val = (uint64_t)lua_tointeger(L, idx);
      }
      else {
        double d = (double)lua_tonumber(L, idx);
        tag = F_FLT;
        memcpy(&val, &d, sizeof val);
      }
      break;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      if (n > MAXSTR) bad(L, bl, "a string longer than 4 GiB");
      val = reserve(L, bl, n, 1);
      memcpy(bl->b.p + val, s, n);
      tag = F_STR;
      len = (uint32_t)n;
      break;
    }
    case LUA_TTABLE:
      tag = F_TAB;
      val = freeze_table(L, bl, idx);
      break;
    case LUA_TUSERDATA:
      if (toproxy(L, idx))
        bad(L, bl, "a frozen table (freeze the plain table it was made from)");
      /* fall through */
    default:
      bad(L, bl, luaL_typename(L, idx));
      return;
  }
  slotat(bl, at)->tag = tag;
  slotat(bl, at)->len = len;
  slotat(bl, at)->val = val;
}

static size_t freeze_table (lua_State *L, builder *bl, int idx) {
  size_t off, narr = 0, nrec = 0, hcap = 0, i;
  idx = lua_absindex(L, idx);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, bl->seen) == LUA_TNUMBER) {   /* met before */
    off = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return off;
  }
  lua_pop(L, 1);
  if (bl->depth >= LOOM_MAX_DEPTH) {
    char why[64];
    snprintf(why, sizeof why, "nested deeper than %d levels", LOOM_MAX_DEPTH);
    bad(L, bl, why);
  }
  luaL_checkstack(L, 8, "loom.freeze: nested too deep");
  while (narr < MAXCOUNT) {
    int t = lua_rawgeti(L, idx, (lua_Integer)narr + 1);
    lua_pop(L, 1);
    if (t == LUA_TNIL) break;
    narr++;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!(lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 &&
          (lua_Unsigned)lua_tointeger(L, -1) <= narr)) nrec++;
  }
  if (nrec > MAXCOUNT) luaL_error(L, "loom.freeze: a table with too many keys");
  if (nrec) for (hcap = 2; hcap < 2 * nrec; hcap *= 2) ;
  if (narr + 2 * hcap > (SIZE_MAX - sizeof(fnode)) / sizeof(fslot))
    luaL_error(L, "loom.freeze: not enough memory");
  off = reserve(L, bl, sizeof(fnode) + (narr + 2 * hcap) * sizeof(fslot), 8);
  ((fnode *)(bl->b.p + off))->narr = (uint32_t)narr;
  ((fnode *)(bl->b.p + off))->hcap = (uint32_t)hcap;
  ((fnode *)(bl->b.p + off))->nrec = nrec;
  lua_pushvalue(L, idx);
  lua_pushinteger(L, (lua_Integer)off);
  lua_rawset(L, bl->seen);
  bl->depth++;
  for (i = 0; i < narr; i++) {
    bl->path[bl->depth - 1].kind = P_ARR;
    bl->path[bl->depth - 1].n = (lua_Integer)i + 1;
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    freeze_value(L, bl, -1, off + sizeof(fnode) + i * sizeof(fslot));
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    uint64_t h;
    size_t j, mask = hcap - 1, kat;
    int kidx = lua_absindex(L, -2);
    if (lua_isinteger(L, kidx) && lua_tointeger(L, kidx) >= 1 &&
        (lua_Unsigned)lua_tointeger(L, kidx) <= narr) {
      lua_pop(L, 1);
      continue;
    }
    bl->path[bl->depth - 1].idx = kidx;
    if (lua_type(L, kidx) == LUA_TTABLE) {   /* found by pairs only */
      h = mix((uint64_t)(uintptr_t)lua_topointer(L, kidx));
    }
    else if (!keyhash(L, kidx, &h)) {
      bl->path[bl->depth - 1].kind = P_KEY;
      bad(L, bl, luaL_typename(L, kidx));
    }
    for (j = h & mask; ; j = (j + 1) & mask) {
      kat = off + sizeof(fnode) + (narr + 2 * j) * sizeof(fslot);
      if (slotat(bl, kat)->tag == F_EMPTY) break;
    }
    bl->path[bl->depth - 1].kind = P_KEY;
    freeze_value(L, bl, kidx, kat);
    bl->path[bl->depth - 1].kind = P_VAL;
    freeze_value(L, bl, -1, kat + sizeof(fslot));
    lua_pop(L, 1);
  }
  bl->depth--;
  return off;
}

/* loom.freeze(t) -> a frozen proxy of t (a proxy is returned as it is) */
static int l_freeze (lua_State *L) {
  builder *bl;
  loom_shared *s;
  if (toproxy(L, 1)) {
    checkproxy(L, 1);
    lua_settop(L, 1);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  loom__ctx_checkmake(L, "loom.freeze");
  lua_settop(L, 1);
  bl = (builder *)lua_newuserdatauv(L, sizeof *bl, 0);      /* 2 */
  memset(&bl->b, 0, sizeof bl->b);
  bl->depth = 0;
  luaL_setmetatable(L, BUILDER);
  lua_newtable(L);                                          /* 3: seen */
  bl->seen = 3;
  freeze_table(L, bl, 1);
  pushroot(L, NULL, 0);                                     /* 4 */
  s = loom__shared_new(bl->b.len);
  if (s == NULL) return luaL_error(L, "loom.freeze: not enough memory");
  memcpy(s->data, bl->b.p, bl->b.len);
  loom__buf_free(&bl->b);
  ((fproxy *)lua_touserdata(L, 4))->s = s;
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Clone hook: a proxy is its block and its node
** ======================================================================= */

typedef struct fref {
  loom_shared *s;
  size_t node;
} fref;

static void rel_frozen (void *p) {
  fref *r = (fref *)p;
  loom__shared_release(r->s);
  free(r);
}

static const loom_refvt frozen_vt = {FROZEN, rel_frozen};

static int enc_frozen (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  fproxy *f = (fproxy *)lua_touserdata(L, idx);   /* a root or a part */
  fref *r;
  if (f->root->s == NULL) {
    snprintf(err, errsz, FROZEN " (released by its __gc)");
    return -1;
  }
  r = (fref *)malloc(sizeof *r);
  if (r == NULL) {
    snprintf(err, errsz, "not enough memory");
    return -1;
  }
  loom__shared_retain(f->s);
  r->s = f->s;
  r->node = f->node;
  *p = r;
  return 0;
}

static int dec_frozen (lua_State *L, void *p) {
  fref *r = (fref *)p;
  pushroot(L, r->s, r->node);     /* took r->s's count */
  free(r);
  return 0;
}

static const loom_clonehook frozen_hook = {FROZEN, &frozen_vt, enc_frozen, dec_frozen};

/* core.frozencount(ft): holders of its block now, for the specs */
static int l_frozencount (lua_State *L) {
  lua_pushinteger(L, atomic_load(&checkproxy(L, 1)->s->refs));
  return 1;
}

static const luaL_Reg frozen_meta[] = {
  {"__index", f_index},
  {"__newindex", f_newindex},
  {"__len", f_len},
  {"__pairs", f_pairs},
  {"__eq", f_eq},
  {"__gc", f_gc},
  {"__tostring", f_tostring},
  {NULL, NULL}
};

void loom__frozen_open (lua_State *L) {
  loom__createmeta(L, FROZEN, frozen_meta, NULL, 0);
  loom__serial_addhook(L, -1, &frozen_hook);
  /* the parts': the same, without __gc */
  lua_createtable(L, 0, 8);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "__gc") == 0)
      lua_pop(L, 1);
    else {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  loom__serial_addhook(L, -1, &frozen_hook);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &PARTKEY);
  lua_pop(L, 1);
  luaL_newmetatable(L, BUILDER);
  lua_pushcfunction(L, bl_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_freeze);
  lua_setfield(L, -2, "freeze");
  lua_pushcfunction(L, l_frozencount);
  lua_setfield(L, -2, "frozencount");
}

/* }====================================================================== */
