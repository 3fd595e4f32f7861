/*
** fuzz_common.c: the state, the trusted chunks, the counted references,
** the value generator and the deep compare of the fuzz targets.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"

void fz_fail (const char *fmt, ...) {
  va_list ap;
  fputs("fuzz: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

/* registry keys */
static const char CHUNKSKEY = 'c';   /* [k] = the main function of chunk k */
static const char CLASSMTKEY = 'p';  /* the class's metatable */
static const char MADEKEY = 'm';     /* [n] = n-th value the decoder made */

#define REFMT "fz.Ref"

/* {======================================================================
** Counted references
** ======================================================================= */

typedef struct token {
  int id;
  long count;      /* holders: lists and userdata */
} token;

static token tokens[FZ_NTOKENS];

static void tk_release (void *p) {
  token *t = (token *)p;
  if (t->count <= 0) fz_fail("token %d released once too often", t->id);
  t->count--;
}

static const loom_refvt vt_ref = {REFMT, tk_release};
static const loom_refvt vt_other = {"fz.Other", tk_release};

typedef struct refud {
  token *t;        /* one count, or NULL */
} refud;

static void push_ud (lua_State *L, token *t) {
  refud *u = (refud *)lua_newuserdatauv(L, sizeof *u, 0);
  u->t = NULL;
  luaL_setmetatable(L, REFMT);
  u->t = t;
}

static int ref_gc (lua_State *L) {
  refud *u = (refud *)luaL_checkudata(L, 1, REFMT);
  if (u->t) tk_release(u->t);
  u->t = NULL;
  return 0;
}

static int ref_encode (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  refud *u = (refud *)lua_touserdata(L, idx);
  if (u == NULL || u->t == NULL) {
    snprintf(err, errsz, "empty reference");
    return -1;
  }
  u->t->count++;
  *p = u->t;
  return 0;
}

static int ref_decode (lua_State *L, void *p) {
  token *t = (token *)p;
  if (t->id == FZ_TOKEN_BAD) {
    lua_pushliteral(L, "refused");
    return -1;
  }
  push_ud(L, t);
  return 0;
}

static const loom_clonehook ref_hook = {REFMT, &vt_ref, ref_encode, ref_decode};

void fz_push_ref (lua_State *L, int token) {
  tokens[token].count++;
  push_ud(L, &tokens[token]);
}

void fz_refs_fill (loom_ref *v) {
  int k;
  for (k = 0; k < FZ_NREFS; k++) {
    v[k].vt = k == 2 ? &vt_other : &vt_ref;
    v[k].p = &tokens[k];
    tokens[k].count++;
  }
}

void fz_refs_copy (loom_ref *dst, const loom_ref *src, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    dst[i] = src[i];
    if (dst[i].vt) ((token *)dst[i].p)->count++;
  }
}

void fz_refs_drop (loom_ref *v, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    if (v[i].vt) v[i].vt->release(v[i].p);
    v[i].vt = NULL;
  }
}

void fz_check_tokens (void) {
  int k;
  for (k = 0; k < FZ_NTOKENS; k++)
    if (tokens[k].count != 0)
      fz_fail("token %d: %ld counts held with nothing alive", k, tokens[k].count);
}

/* }====================================================================== */

/* {======================================================================
** The state and its trusted chunks
** ======================================================================= */

/* Each returns a closure; their upvalues: (a, b), (_ENV, t), (_ENV),
** (f: itself), none, (e, d, c, b, a, _ENV). */
static const char *const chunks[FZ_NCHUNKS] = {
  "local a, b = ... return function() return a, b end",
  "local t = ... return function(x) return type(t), x end",
  "return function(...) return select('#', ...) end",
  "local f f = function(n) if n > 0 then return f(n - 1) end return n end return f",
  "return function() return 1 end",
  "local a, b, c, d, e = ... return function() return e, d, c, b, a, print end",
};

static loom_buf dumps[FZ_NCHUNKS];

static void dump (lua_State *L, int idx, loom_buf *b) {
  b->len = 0;
  lua_pushvalue(L, idx);
  if (lua_dump(L, loom__buf_writer, b, 0) != 0) fz_fail("lua_dump failed");
  lua_pop(L, 1);
}

/* The decoder asks before it loads bytecode (serial.c, LOOM_FUZZING). */
int loom__fuzz_trusted (const unsigned char *p, size_t len) {
  int k;
  for (k = 0; k < FZ_NCHUNKS; k++)
    if (dumps[k].len == len && memcmp(dumps[k].p, p, len) == 0) return 1;
  return 0;
}

void fz_push_closure (lua_State *L, int chunk) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CHUNKSKEY);
  lua_rawgeti(L, -1, chunk + 1);
  lua_remove(L, -2);
  lua_call(L, 0, 1);
}

void fz_push_class (lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CLASSMTKEY);
}

/* The state's allocator counts what Lua holds, and its peak. */
static size_t heap_now, heap_peak;

static void *fz_alloc (void *ud, void *p, size_t osize, size_t nsize) {
  size_t was = p ? osize : 0;
  void *np;
  (void)ud;
  if (nsize == 0) {
    free(p);
    heap_now -= was;
    return NULL;
  }
  np = realloc(p, nsize);
  if (np) {
    heap_now = heap_now - was + nsize;
    if (heap_now > heap_peak) heap_peak = heap_now;
  }
  return np;
}

static int fz_panic (lua_State *L) {
  fz_fail("Lua panic: %s", lua_tostring(L, -1));
  return 0;
}

size_t fz_heap_mark (void) {
  heap_peak = heap_now;
  return heap_now;
}

size_t fz_heap_peak (void) { return heap_peak; }

lua_State *fz_state (void) {
  static lua_State *L = NULL;
  int k;
  if (L) return L;
  for (k = 0; k < FZ_NTOKENS; k++) tokens[k].id = k;
  L = lua_newstate(fz_alloc, NULL);
  if (L == NULL) fz_fail("no state");
  lua_atpanic(L, fz_panic);
  luaL_openlibs(L);
  /* the class, through loom.registerClass */
  lua_newtable(L);
  loom__serial_open(L);
  lua_getfield(L, -1, "registerClass");
  lua_pushliteral(L, "fz.Point");
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "fz.Point");
  lua_setfield(L, -2, "__name");
  lua_call(L, 2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CLASSMTKEY);
  lua_pop(L, 1);
  /* the clone hook */
  luaL_newmetatable(L, REFMT);
  lua_pushcfunction(L, ref_gc);
  lua_setfield(L, -2, "__gc");
  loom__serial_addhook(L, -1, &ref_hook);
  lua_pop(L, 1);
  /* the chunks and the dumps of their closures */
  lua_createtable(L, FZ_NCHUNKS, 0);
  for (k = 0; k < FZ_NCHUNKS; k++) {
    char name[32];
    snprintf(name, sizeof name, "=fz.chunk%d", k);
    if (luaL_loadbufferx(L, chunks[k], strlen(chunks[k]), name, "t") != LUA_OK)
      fz_fail("chunk %d: %s", k, lua_tostring(L, -1));
    lua_rawseti(L, -2, k + 1);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CHUNKSKEY);
  for (k = 0; k < FZ_NCHUNKS; k++) {
    fz_push_closure(L, k);
    dump(L, -1, &dumps[k]);
    lua_pop(L, 1);
  }
  return L;
}

/* }====================================================================== */

/* {======================================================================
** What the decoder made
** ======================================================================= */

static int made_on;
static lua_Integer made_n, made_fn;

void loom__fuzz_made (lua_State *L) {
  if (!made_on) return;
  if (!lua_checkstack(L, 2)) fz_fail("made: no stack");
  if (lua_type(L, -1) == LUA_TFUNCTION) made_fn++;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &MADEKEY);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, ++made_n);
  lua_pop(L, 1);
}

void fz_made_begin (lua_State *L) {
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &MADEKEY);
  made_n = made_fn = 0;
  made_on = 1;
}

void fz_made_end (lua_State *L) {
  (void)L;
  made_on = 0;
}

lua_Integer fz_made_functions (void) { return made_fn; }

/* }====================================================================== */

/* {======================================================================
** Deep compare.  The encoder numbers tables, functions and by-reference
** values in the order it first meets them (one lua_next pass over a
** table: the values of the leading run of keys 1, 2, 3..., then key/value
** pairs; then a function's upvalues, but for a cell met before and a value
** that is the globals), and the decoder makes them in
** that order: walking the original the encoder's way pairs each of its
** objects with one the decoder made.  Then every pair must match: same
** entries (keys and values translated through the pairing: sharing and
** cycles must be the same), scalars of the same subtype and bits.
** ======================================================================= */

typedef struct cmp {
  lua_State *L;
  int ids;          /* stack index: original object -> id */
  int olist;        /* id -> original object */
  int clist;        /* id -> the decoder's object (the made list) */
  int ups;          /* upvalue cells met: lua_upvalueid -> true */
  lua_Integer n;
  loom_buf b1, b2;  /* dumps */
} cmp;

static int isref (lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA;
}

static void number (cmp *c, int idx, int depth) {
  lua_State *L = c->L;
  const char *name;
  int i;
  if (!isref(L, idx)) return;
  idx = lua_absindex(L, idx);
  if (depth > LOOM_MAX_DEPTH + 1) fz_fail("compare: deeper than the encoder goes");
  if (!lua_checkstack(L, 8)) fz_fail("compare: no stack");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, c->ids) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++c->n);
  lua_rawset(L, c->ids);
  lua_pushvalue(L, idx);
  lua_rawseti(L, c->olist, c->n);
  switch (lua_type(L, idx)) {
    case LUA_TTABLE: {
      lua_Integer narr = 0;
      int inhash = 0;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        if (!inhash && lua_isinteger(L, -2) && lua_tointeger(L, -2) == narr + 1) {
          narr++;
          number(c, -1, depth + 1);
        }
        else {
          inhash = 1;
          number(c, -2, depth + 1);
          number(c, -1, depth + 1);
        }
        lua_pop(L, 1);
      }
      break;
    }
    case LUA_TFUNCTION:
      for (i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
        void *id = lua_upvalueid(L, idx, i);
        (void)name;
        lua_pushlightuserdata(L, id);
        if (lua_rawget(L, c->ups) == LUA_TNIL) {
          lua_pop(L, 1);
          lua_pushlightuserdata(L, id);
          lua_pushboolean(L, 1);
          lua_rawset(L, c->ups);
          lua_pushglobaltable(L);
          if (!lua_rawequal(L, -1, -2)) number(c, -2, depth + 1);
          lua_pop(L, 1);
        }
        else lua_pop(L, 1);
        lua_pop(L, 1);
      }
      break;
    default: break;    /* a by-reference userdata: nothing inside */
  }
}

static void scalar (lua_State *L, int o, int x, const char *where) {
  int t = lua_type(L, o);
  if (lua_type(L, x) != t)
    fz_fail("%s: %s became %s", where, lua_typename(L, t), luaL_typename(L, x));
  switch (t) {
    case LUA_TNIL: return;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, o) != lua_toboolean(L, x)) fz_fail("%s: boolean differs", where);
      return;
    case LUA_TNUMBER:
      if (lua_isinteger(L, o) != lua_isinteger(L, x))
        fz_fail("%s: number subtype differs", where);
      if (lua_isinteger(L, o)) {
        if (lua_tointeger(L, o) != lua_tointeger(L, x))
          fz_fail("%s: integer %lld became %lld", where, (long long)lua_tointeger(L, o),
                  (long long)lua_tointeger(L, x));
      }
      else {
        double a = (double)lua_tonumber(L, o), b = (double)lua_tonumber(L, x);
        if (memcmp(&a, &b, sizeof a) != 0)
          fz_fail("%s: float %a became %a (bits differ)", where, a, b);
      }
      return;
    case LUA_TSTRING: {
      size_t n1, n2;
      const char *s1 = lua_tolstring(L, o, &n1), *s2 = lua_tolstring(L, x, &n2);
      if (n1 != n2 || memcmp(s1, s2, n1) != 0)
        fz_fail("%s: string of %zu bytes became one of %zu (or its bytes differ)", where, n1, n2);
      return;
    }
    default: fz_fail("%s: unexpected %s", where, lua_typename(L, t));
  }
}

/* Push what the decoder made for the original value at o. */
static void translate (cmp *c, int o) {
  lua_State *L = c->L;
  if (!isref(L, o)) {
    lua_pushvalue(L, o);
    return;
  }
  lua_pushvalue(L, o);
  if (lua_rawget(L, c->ids) != LUA_TNUMBER) fz_fail("compare: an object was not numbered");
  lua_rawgeti(L, c->clist, lua_tointeger(L, -1));
  lua_remove(L, -2);
}

/* The original value at o against the copy's value at x. */
static void same (cmp *c, int o, int x, const char *where) {
  lua_State *L = c->L;
  o = lua_absindex(L, o);
  x = lua_absindex(L, x);
  if (!isref(L, o)) {
    scalar(L, o, x, where);
    return;
  }
  translate(c, o);
  if (!lua_rawequal(L, -1, x))
    fz_fail("%s: a %s is not the copy paired with it (sharing or cycles differ)",
            where, luaL_typename(L, o));
  lua_pop(L, 1);
}

static lua_Integer count (lua_State *L, int idx) {
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    n++;
    lua_pop(L, 1);
  }
  return n;
}

static void pair (cmp *c, lua_Integer id) {
  lua_State *L = c->L;
  int o, x, top = lua_gettop(L);
  char where[96];
  lua_rawgeti(L, c->olist, id);
  lua_rawgeti(L, c->clist, id);
  o = top + 1;
  x = top + 2;
  snprintf(where, sizeof where, "object %lld (%s)", (long long)id, luaL_typename(L, o));
  if (lua_type(L, o) != lua_type(L, x))
    fz_fail("%s: the decoder made a %s there", where, luaL_typename(L, x));
  switch (lua_type(L, o)) {
    case LUA_TTABLE: {
      int oclass, xmt;
      if (lua_getmetatable(L, o)) {
        fz_push_class(L);
        oclass = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
      }
      else oclass = 0;
      xmt = lua_getmetatable(L, x);
      if (xmt) {
        fz_push_class(L);
        if (!lua_rawequal(L, -1, -2)) fz_fail("%s: copy has a metatable not the class's", where);
        lua_pop(L, 2);
      }
      if (oclass != xmt) fz_fail("%s: class %s", where, oclass ? "lost" : "gained");
      if (count(L, o) != count(L, x))
        fz_fail("%s: %lld entries became %lld", where, (long long)count(L, o),
                (long long)count(L, x));
      lua_pushnil(L);
      while (lua_next(L, o)) {
        translate(c, top + 3);
        if (lua_rawget(L, x) == LUA_TNIL) fz_fail("%s: a key is missing", where);
        same(c, top + 4, top + 5, where);
        lua_pop(L, 2);
      }
      break;
    }
    case LUA_TFUNCTION: {
      const char *n1, *n2;
      int i;
      if (lua_iscfunction(L, x)) fz_fail("%s: became a C function", where);
      dump(L, o, &c->b1);
      dump(L, x, &c->b2);
      if (c->b1.len != c->b2.len || memcmp(c->b1.p, c->b2.p, c->b1.len) != 0)
        fz_fail("%s: bytecode differs", where);
      for (i = 1; ; i++) {
        n1 = lua_getupvalue(L, o, i);
        n2 = lua_getupvalue(L, x, i);
        if (n1 == NULL || n2 == NULL) {
          if (n1 || n2) fz_fail("%s: number of upvalues differs", where);
          break;
        }
        if (strcmp(n1, n2) != 0) fz_fail("%s: upvalue %d's name differs", where, i);
        lua_pushglobaltable(L);
        if (lua_rawequal(L, -1, -3)) {    /* the globals: the copy's too */
          if (!lua_rawequal(L, -1, -2)) fz_fail("%s: upvalue %d is not the globals", where, i);
          lua_pop(L, 1);
        }
        else {
          lua_pop(L, 1);
          same(c, -2, -1, where);
        }
        lua_pop(L, 2);
      }
      break;
    }
    case LUA_TUSERDATA: {
      refud *u1 = (refud *)luaL_testudata(L, o, REFMT);
      refud *u2 = (refud *)luaL_testudata(L, x, REFMT);
      if (u1 == NULL || u2 == NULL || u1->t != u2->t || u2->t == NULL)
        fz_fail("%s: reference differs", where);
      break;
    }
    default: fz_fail("%s: not an object", where);
  }
  lua_settop(L, top);
}

void fz_compare (lua_State *L, int orig, int copy) {
  cmp c;
  lua_Integer i;
  int top = lua_gettop(L);
  orig = lua_absindex(L, orig);
  copy = lua_absindex(L, copy);
  luaL_checkstack(L, 16, "compare");
  c.L = L;
  c.n = 0;
  memset(&c.b1, 0, sizeof c.b1);
  memset(&c.b2, 0, sizeof c.b2);
  lua_newtable(L);
  c.ids = lua_gettop(L);
  lua_newtable(L);
  c.olist = lua_gettop(L);
  lua_newtable(L);
  c.ups = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &MADEKEY);
  c.clist = lua_gettop(L);
  if (!lua_istable(L, c.clist)) fz_fail("compare: no made list");
  number(&c, orig, 0);
  if (c.n != made_n)
    fz_fail("compare: the original has %lld objects, the decoder made %lld",
            (long long)c.n, (long long)made_n);
  same(&c, orig, copy, "root");
  for (i = 1; i <= c.n; i++) pair(&c, i);
  loom__buf_free(&c.b1);
  loom__buf_free(&c.b2);
  lua_settop(L, top);
}

/* }====================================================================== */

/* {======================================================================
** The generator (opcodes in fuzz_common.h)
** ======================================================================= */

#define GEN_BUDGET 2000            /* values per input */
#define GEN_BIGBYTES (1 << 17)     /* bytes of long strings per input */

typedef struct gen {
  lua_State *L;
  const uint8_t *p, *end;
  int objs;                  /* stack index: [n] = object made */
  lua_Integer nobj;
  int budget;
  size_t bigbytes;
} gen;

static unsigned byte1 (gen *g) {
  return g->p < g->end ? *g->p++ : 0;
}

static uint64_t bytes8 (gen *g) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < 8; i++) v |= (uint64_t)byte1(g) << (8 * i);
  return v;
}

static void remember (gen *g) {
  lua_pushvalue(g->L, -1);
  lua_rawseti(g->L, g->objs, ++g->nobj);
}

static const lua_Integer intspecial[] = {
  0, 1, -1, 63, 64, -64, 127, 128, 255, 256, -65536, 2147483647, -2147483647 - 1,
  4294967295LL, 9007199254740992LL, -9007199254740992LL,
  LUA_MAXINTEGER, LUA_MININTEGER, LUA_MAXINTEGER - 1, LUA_MININTEGER + 1
};
#define NINTSPECIAL (sizeof intspecial / sizeof intspecial[0])

static const uint64_t fltspecial[] = {
  UINT64_C(0x0000000000000000),   /* 0.0 */
  UINT64_C(0x8000000000000000),   /* -0.0 */
  UINT64_C(0x7ff8000000000000),   /* NaN */
  UINT64_C(0xfff8000000000000),   /* -NaN */
  UINT64_C(0x7ff0000000000001),   /* signalling NaN */
  UINT64_C(0x7ff8deadbeef0001),   /* NaN with a payload */
  UINT64_C(0x7ff0000000000000),   /* inf */
  UINT64_C(0xfff0000000000000),   /* -inf */
  UINT64_C(0x3ff8000000000000),   /* 1.5 */
  UINT64_C(0x4000000000000000),   /* 2.0: integral float */
  UINT64_C(0xc000000000000000),   /* -2.0 */
  UINT64_C(0x3fb999999999999a),   /* 0.1 */
  UINT64_C(0x0010000000000000),   /* DBL_MIN */
  UINT64_C(0x0000000000000001),   /* smallest denormal */
  UINT64_C(0x7fefffffffffffff),   /* DBL_MAX */
  UINT64_C(0x43e0000000000000),   /* 2^63 */
  UINT64_C(0xc3e0000000000000),   /* -2^63 */
  UINT64_C(0x4340000000000000),   /* 2^53 */
};
#define NFLTSPECIAL (sizeof fltspecial / sizeof fltspecial[0])

static const size_t longlens[] = {128, 129, 255, 256, 300, 1000, 16383, 16384, 65536, 100000};

static void pushbits (lua_State *L, uint64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  lua_pushnumber(L, (lua_Number)d);
}

static void pushshort (gen *g) {
  char tmp[140];
  size_t n = byte1(g) % 140, i;
  for (i = 0; i < n; i++) tmp[i] = (char)byte1(g);
  lua_pushlstring(g->L, tmp, n);
}

static void pushlong (gen *g) {
  size_t n = longlens[byte1(g) % (sizeof longlens / sizeof longlens[0])], i;
  unsigned c = byte1(g);
  luaL_Buffer lb;
  char *s;
  if (g->bigbytes + n > GEN_BIGBYTES) n = 128;
  g->bigbytes += n;
  s = luaL_buffinitsize(g->L, &lb, n);
  for (i = 0; i < n; i++) s[i] = (char)((c + i * (c | 1)) & (c & 0x80 ? 0x0f : 0xff));
  luaL_pushresultsize(&lb, n);
}

static void gen_value (gen *g, int depth);

static void pushshared (gen *g) {
  lua_State *L = g->L;
  unsigned b = byte1(g);
  if (g->nobj == 0) {
    lua_newtable(L);
    remember(g);
  }
  else lua_rawgeti(L, g->objs, 1 + (lua_Integer)b % g->nobj);
}

static void gen_key (gen *g, int depth) {
  lua_State *L = g->L;
  switch (byte1(g) % 8) {
    case 0: case 1: pushshort(g); break;
    case 2: lua_pushinteger(L, (lua_Integer)(byte1(g) % 80) - 8); break;
    case 3: lua_pushinteger(L, intspecial[byte1(g) % NINTSPECIAL]); break;
    case 4: {
      unsigned b = byte1(g);
      pushbits(L, (b & 1) ? bytes8(g) : fltspecial[(b >> 1) % NFLTSPECIAL]);
      break;
    }
    case 5: lua_pushboolean(L, byte1(g) & 1); break;
    case 6: pushshared(g); break;
    default: gen_value(g, depth); break;
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "nil");
  }
  else if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)) {
    lua_pop(L, 1);
    lua_pushnumber(L, 0.25);
  }
}

/* kind: 0 plain, 1 the class, 2 a plain metatable (not sent) */
static void gen_table (gen *g, int depth, int kind) {
  lua_State *L = g->L;
  unsigned a = byte1(g), h = byte1(g);
  int narr = (a & 0x80) ? (int)(a & 0x7f) : (int)(a % 5);
  int nrec = (h & 0x80) ? (int)(h & 0x3f) : (int)(h % 5), i;
  lua_createtable(L, narr, nrec);
  remember(g);
  for (i = 1; i <= narr; i++) {
    gen_value(g, depth + 1);
    lua_rawseti(L, -2, i);
  }
  for (i = 0; i < nrec; i++) {
    gen_key(g, depth + 1);
    gen_value(g, depth + 1);
    lua_rawset(L, -3);
  }
  if (kind == 1) {
    fz_push_class(L);
    lua_setmetatable(L, -2);
  }
  else if (kind == 2) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "plain");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
  }
}

static void gen_chain (gen *g, int depth) {
  lua_State *L = g->L;
  int n = LOOM_MAX_DEPTH - 6 + (int)(byte1(g) % 12), i;
  unsigned how = byte1(g);
  lua_newtable(L);                 /* the root, then the current table */
  remember(g);
  lua_pushvalue(L, -1);
  for (i = 1; i < n; i++) {
    lua_newtable(L);
    remember(g);
    lua_pushvalue(L, -1);
    if (how & 1) lua_setfield(L, -3, "x");
    else lua_rawseti(L, -3, 1);
    lua_remove(L, -2);
  }
  gen_value(g, depth + n);
  if (how & 1) lua_setfield(L, -2, "y");
  else lua_rawseti(L, -2, 2);
  lua_pop(L, 1);
}

static void gen_function (gen *g, int depth) {
  lua_State *L = g->L;
  const char *name;
  int i;
  fz_push_closure(L, (int)(byte1(g) % FZ_NCHUNKS));
  remember(g);
  for (i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
    int env = strcmp(name, "_ENV") == 0;
    lua_pop(L, 1);
    if (env) continue;
    gen_value(g, depth + 1);
    lua_setupvalue(L, -2, i);
  }
}

static void gen_value (gen *g, int depth) {
  lua_State *L = g->L;
  if (!lua_checkstack(L, 8)) fz_fail("generator: no stack");
  if (g->budget <= 0 || depth > LOOM_MAX_DEPTH + 16 || g->p >= g->end) {
    lua_pushnil(L);
    return;
  }
  g->budget--;
  switch (byte1(g) % FZ_NOPS) {
    case FZ_NIL: lua_pushnil(L); break;
    case FZ_FALSE: lua_pushboolean(L, 0); break;
    case FZ_TRUE: lua_pushboolean(L, 1); break;
    case FZ_SMALLINT: lua_pushinteger(L, (lua_Integer)(byte1(g) % 80) - 8); break;
    case FZ_INTSPECIAL: lua_pushinteger(L, intspecial[byte1(g) % NINTSPECIAL]); break;
    case FZ_INTRAW: {
      uint64_t u = bytes8(g);
      lua_Integer i;
      memcpy(&i, &u, sizeof i);
      lua_pushinteger(L, i);
      break;
    }
    case FZ_FLTSPECIAL: pushbits(L, fltspecial[byte1(g) % NFLTSPECIAL]); break;
    case FZ_FLTRAW: pushbits(L, bytes8(g)); break;
    case FZ_STRING: pushshort(g); break;
    case FZ_LONGSTRING: pushlong(g); break;
    case FZ_TABLE: gen_table(g, depth, 0); break;
    case FZ_SHARED: pushshared(g); break;
    case FZ_FUNCTION: gen_function(g, depth); break;
    case FZ_CHAIN: gen_chain(g, depth); break;
    case FZ_CLASS: gen_table(g, depth, 1); break;
    default: {
      unsigned b = byte1(g);
      if (b & 1) {
        int t = (int)((b >> 1) % FZ_NTOKENS);
        fz_push_ref(L, t == FZ_TOKEN_BAD ? 0 : t);
        remember(g);
      }
      else gen_table(g, depth, 2);
      break;
    }
  }
}

void fz_generate (lua_State *L, const uint8_t *data, size_t size) {
  gen g;
  g.L = L;
  g.p = data;
  g.end = data + size;
  g.nobj = 0;
  g.budget = GEN_BUDGET;
  g.bigbytes = 0;
  lua_newtable(L);
  g.objs = lua_gettop(L);
  gen_value(&g, 0);
  lua_remove(L, g.objs);
}

/* }====================================================================== */
