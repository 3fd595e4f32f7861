/*
** serial.c: the cloner.  Lua values to one contiguous blob and back.
**
** Blob = header byte, then one value.  Header: 0x10 | (1 if the blob holds
** back-references).  Values (tag byte, then payload):
**   00 nil  01 false  02 true
**   03 integer: zigzag LEB128        04 float: 8 raw bytes (NaN, -0.0 exact)
**   05 string: LEB128 length, bytes  06 table: u32 narr, u32 nrec, narr
**   values, nrec key/value pairs     07 back-reference: LEB128 index
**   08 function: u32 length, bytecode, u8 nups, nups values (09: the
**      receiver's globals; 0c: LEB128 function number, u8 index: the same
**      upvalue cell as that function's, shared)
**   0a class: u8 length, name, then a table (loom.registerClass)
**   0b by reference: u8 length, hook name, LEB128 index into the message's
**      references (a clone hook's value: shared memory, a port, a host
**      object)
**   40..7f small integers 0..63      80..ff strings of length 0..127
** Tables and functions are numbered in the order they are first met; a
** second meeting writes a back-reference, so cycles and sharing survive.
** The encoder never calls back into Lua code and never allocates Lua
** memory until it has finished or failed, so it cannot be re-entered.
** The cloner knows no runtime and no context: a state, a buffer and a
** list of references are all it uses.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

enum {
  T_NIL = 0x00, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE, T_REF,
  T_FUNC, T_ENV, T_CLASS, T_HOOK, T_UPREF, T_STREAMTABLE, T_END,
  T_SMALLINT = 0x40, T_SMALLINT_MAX = 63,
  T_SHORTSTR = 0x80, T_SHORTSTR_MAX = 127
};

#define HDR_VERSION 0x10
#define CLASS_MAXLEN 255

#define HDR_HASREF 0x01

/* registry: classes[name] = metatable and classes[metatable] = name */
static const char CLASSKEY = 'k';
/* registry: hooks[metatable] = hooks[name] = light pointer to the hook */
static const char HOOKKEY = 'h';

void loom__serial_addhook (lua_State *L, int mtidx, const loom_clonehook *h) {
  mtidx = lua_absindex(L, mtidx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HOOKKEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HOOKKEY);
  }
  lua_pushvalue(L, mtidx);
  lua_pushlightuserdata(L, (void *)h);
  lua_rawset(L, -3);
  lua_pushstring(L, h->name);
  lua_pushlightuserdata(L, (void *)h);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* registry: a function(name) that loads the module teaching this thread
** the hook of that name (loom's Lua half loads some only on first use) */
static const char LAZYKEY = 'z';

/* The hook of that name, or NULL. */
static const loom_clonehook *hooknamed (lua_State *L, const unsigned char *name, size_t n) {
  const loom_clonehook *h = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HOOKKEY) == LUA_TTABLE) {
    lua_pushlstring(L, (const char *)name, n);
    lua_rawget(L, -2);
    h = (const loom_clonehook *)lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return h;
}

/* (declared with the context's functions: spawn and the bindings use it too) */
int loom__ctx_inclose (lua_State *L) {
  lua_Debug ar;
  int level = 0;
  while (lua_getstack(L, level + 1, &ar)) level++;
  if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "n", &ar)) return 0;
  return ar.namewhat && strcmp(ar.namewhat, "metamethod") == 0 &&
         ar.name && strcmp(ar.name, "__gc") == 0;
}

/* registry: a function() that opens the C concepts this thread has not
** opened yet, each with its hooks (entry.c: a worker opens some lazily) */
static const char OPENKEY = 'o';

void loom__serial_setopener (lua_State *L) {
  lua_rawsetp(L, LUA_REGISTRYINDEX, &OPENKEY);
}

/* The hook of that name, opening the C concepts first, then loading its
** module, if this thread has neither (the error, if one fails, is in
** errbuf), or NULL. */
static const loom_clonehook *hookload (lua_State *L, const unsigned char *name, size_t n,
                                       char *errbuf, size_t errlen) {
  const loom_clonehook *h = hooknamed(L, name, n);
  if (h != NULL) return h;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &OPENKEY) == LUA_TFUNCTION) {
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {         /* it unsets itself */
      snprintf(errbuf, errlen, "%.*s: cannot open its type: %s", (int)n, name,
               lua_isstring(L, -1) ? lua_tostring(L, -1) : "error object is not a string");
      lua_pop(L, 1);
      return NULL;
    }
    if ((h = hooknamed(L, name, n)) != NULL) return h;
  }
  else lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LAZYKEY) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_pushlstring(L, (const char *)name, n);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    snprintf(errbuf, errlen, "%.*s: cannot load its module: %s", (int)n, name,
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "error object is not a string");
    lua_pop(L, 1);
    return NULL;
  }
  return hooknamed(L, name, n);
}

/* The hook for the metatable on top (popped), or NULL.  No allocation. */
static const loom_clonehook *hookof (lua_State *L) {
  const loom_clonehook *h = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HOOKKEY) == LUA_TTABLE) {
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    h = (const loom_clonehook *)lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return h;
}


/* {======================================================================
** Encoder
** ======================================================================= */

enum { P_ARR, P_VAL, P_KEY, P_UPV };   /* kinds of path segment */

#define SEEN_LINEAR 16   /* first tables: a list, no hashing, no clearing */

typedef struct pathseg {
  int kind;
  int idx;                 /* P_VAL, P_KEY: stack index of the key */
  lua_Integer n;           /* P_ARR: array index */
  const char *name;        /* P_UPV: upvalue name */
} pathseg;

typedef struct seenslot {
  const void *key;         /* NULL: empty */
  uint32_t id;
} seenslot;

typedef struct enc {
  lua_State *L;
  loom_buf *b;
  loom_refs *refs;         /* NULL: by-reference values cannot go here */
  const char *root;
  char *err;
  size_t errsz;
  uint32_t nref;           /* tables and functions numbered so far */
  int hasref;
  int depth;
  const void *genv;        /* this state's globals: sent as T_ENV */
  struct upseen {          /* upvalues met so far, to keep them shared */
    const void *id;        /* lua_upvalueid */
    uint32_t fn;           /* reference number of the function */
    int n;                 /* its upvalue index */
  } *ups;
  size_t nups, upcap;
  seenslot *slots;         /* open addressing, malloc'd; NULL: use 'small' */
  size_t cap, count;
  seenslot small[SEEN_LINEAR];
  const loom_flush *fl;     /* a streamed message: where chunks go, or NULL */
  int unpatched;           /* open tables whose counts are not written yet */
  int sent;                /* a chunk left: the header is gone from b */
  pathseg path[LOOM_MAX_DEPTH + 2];
} enc;

static size_t hashp (const void *p, size_t cap) {
  uint64_t h = (uint64_t)(uintptr_t)p;
  h ^= h >> 29;
  h *= UINT64_C(0x9E3779B97F4A7C15);
  return (size_t)(h >> 32) & (cap - 1);
}

static int grow (enc *e, size_t ncap) {
  size_t j;
  seenslot *ns = (seenslot *)calloc(ncap, sizeof(seenslot));
  if (ns == NULL) return -1;
  if (e->slots == NULL) {             /* from the list: ids are 1..count */
    for (j = 0; j < e->count; j++) {
      size_t k = hashp(e->small[j].key, ncap);
      while (ns[k].key) k = (k + 1) & (ncap - 1);
      ns[k].key = e->small[j].key;
      ns[k].id = (uint32_t)j + 1;
    }
  }
  else {
    for (j = 0; j < e->cap; j++) {
      if (e->slots[j].key) {
        size_t k = hashp(e->slots[j].key, ncap);
        while (ns[k].key) k = (k + 1) & (ncap - 1);
        ns[k] = e->slots[j];
      }
    }
    free(e->slots);
  }
  e->slots = ns;
  e->cap = ncap;
  return 0;
}

/* Look 'p' up; if absent, insert it with the next id.  Returns 1 if it
** was there (id in *id), 0 if inserted, -1 when out of memory. */
static int seen (enc *e, const void *p, uint32_t *id) {
  size_t i;
  if (e->slots == NULL) {
    for (i = 0; i < e->count; i++)
      if (e->small[i].key == p) { *id = (uint32_t)i + 1; return 1; }
    if (e->count < SEEN_LINEAR) {
      e->small[e->count++].key = p;
      *id = ++e->nref;
      return 0;
    }
    if (grow(e, SEEN_LINEAR * 4)) return -1;
  }
  else if ((e->count + 1) * 2 > e->cap && grow(e, e->cap * 2)) return -1;
  i = hashp(p, e->cap);
  while (e->slots[i].key) {
    if (e->slots[i].key == p) { *id = e->slots[i].id; return 1; }
    i = (i + 1) & (e->cap - 1);
  }
  e->slots[i].key = p;
  e->slots[i].id = *id = ++e->nref;
  e->count++;
  return 0;
}

static int isident (const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > 40 || !(s[0] == '_' || ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z')))
    return 0;
  for (i = 1; i < n; i++) {
    char ch = s[i];
    if (!(ch == '_' || (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'z')))
      return 0;
  }
  return 1;
}

/* Append the printed form of the key at stack index 'idx' to out. */
static int putkey (lua_State *L, int idx, char *out, size_t sz) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      if (isident(s, n)) return snprintf(out, sz, ".%s", s);
      return snprintf(out, sz, "[\"%.*s%s\"]", (int)(n > 24 ? 24 : n), s,
                      n > 24 ? "..." : "");
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        return snprintf(out, sz, "[%lld]", (long long)lua_tointeger(L, idx));
      return snprintf(out, sz, "[%.14g]", (double)lua_tonumber(L, idx));
    case LUA_TBOOLEAN:
      return snprintf(out, sz, "[%s]", lua_toboolean(L, idx) ? "true" : "false");
    default:
      return snprintf(out, sz, "[%s]", lua_typename(L, lua_type(L, idx)));
  }
}

/* Write "cannot clone <path>: <what>" into e->err. */
static int fail (enc *e, const char *what) {
  char path[400];
  size_t len = 0;
  int i, n;
  path[0] = '\0';
  for (i = 0; i < e->depth; i++) {
    pathseg *s = &e->path[i];
    char seg[96];
    switch (s->kind) {
      case P_ARR: n = snprintf(seg, sizeof seg, "[%lld]", (long long)s->n); break;
      case P_VAL: n = putkey(e->L, s->idx, seg, sizeof seg); break;
      case P_KEY: {
        char k[80];
        putkey(e->L, s->idx, k, sizeof k);
        n = snprintf(seg, sizeof seg, "{key %s}", k[0] == '.' ? k + 1 : k);
        break;
      }
      default: n = snprintf(seg, sizeof seg, "(upvalue '%s')", s->name); break;
    }
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof seg) n = (int)sizeof seg - 1;
    if (len + (size_t)n >= sizeof path - 4) {  /* keep the head, mark the cut */
      memcpy(path + len, "...", 4);
      len += 3;
      break;
    }
    memcpy(path + len, seg, (size_t)n + 1);
    len += (size_t)n;
  }
  snprintf(e->err, e->errsz, "cannot clone %s%s: %s", e->root, path, what);
  return -1;
}

static int nomem (enc *e) { return fail(e, "not enough memory"); }

/* room for n more bytes: the test inline, the growth in buf.c */
#define RESERVE(e, n) ((e)->b->cap - (e)->b->len >= (n) ? 0 \
                       : loom__buf_reserve((e)->b, (n)) ? nomem(e) : 0)

static int putbytes (enc *e, const void *p, size_t n) {
  if (RESERVE(e, n)) return -1;
  memcpy(e->b->p + e->b->len, p, n);
  e->b->len += n;
  return 0;
}

static int putbyte (enc *e, int c) {
  if (e->b->len == e->b->cap && loom__buf_reserve(e->b, 1)) return nomem(e);
  e->b->p[e->b->len++] = (unsigned char)c;
  return 0;
}

static int putvarint (enc *e, uint64_t v) {
  unsigned char tmp[10];
  int n = 0;
  do {
    unsigned char byte = v & 0x7f;
    v >>= 7;
    tmp[n++] = byte | (v ? 0x80 : 0);
  } while (v);
  return putbytes(e, tmp, (size_t)n);
}

static int putu32 (enc *e, uint32_t v) {
  return putbytes(e, &v, sizeof v);
}

static int value (enc *e, int idx);

static int ref_or_number (enc *e, int idx, int *isnew) {
  uint32_t id;
  int r = seen(e, lua_topointer(e->L, idx), &id);
  *isnew = 1;
  if (r < 0) return nomem(e);
  *isnew = (r == 0);
  if (r == 1) {
    e->hasref = 1;
    if (putbyte(e, T_REF)) return -1;
    return putvarint(e, id);
  }
  return 0;
}

/* A clone hook's value: one reference in the list, its index in the blob. */
static int byref (enc *e, int idx, const loom_clonehook *h) {
  size_t n = strlen(h->name);
  void *p;
  char why[160];
  int isnew;
  if (ref_or_number(e, idx, &isnew) || !isnew) return isnew ? -1 : 0;
  if (e->refs == NULL) {
    snprintf(why, sizeof why, "%s (by-reference values cannot be cloned here)", h->name);
    return fail(e, why);
  }
  why[0] = '\0';
  if (h->encode(e->L, idx, &p, why, sizeof why)) return fail(e, why[0] ? why : h->name);
  if (loom__refs_add(e->refs, h->vt, p)) {
    h->vt->release(p);
    return nomem(e);
  }
  if (loom__buf_reserve(e->b, n + 2)) return nomem(e);
  e->b->p[e->b->len++] = T_HOOK;
  e->b->p[e->b->len++] = (unsigned char)n;
  memcpy(e->b->p + e->b->len, h->name, n);
  e->b->len += n;
  return putvarint(e, e->refs->n - 1);
}


static int enter (enc *e) {
  if (e->depth >= LOOM_MAX_DEPTH) {
    char what[64];
    snprintf(what, sizeof what, "nested deeper than %d levels", LOOM_MAX_DEPTH);
    return fail(e, what);
  }
  if (!lua_checkstack(e->L, 4)) return fail(e, "Lua stack overflow (or not enough memory)");
  return 0;
}

/* A streamed table (a large array, or a streamed message's root): its
** sizes up front as hints (the array's border, the rest counted), then
** the array section and the other pairs, each closed by T_END, so that
** a chunk may leave between any two entries once no table around them
** waits for its counts. */
static int flushed (enc *e) {
  int r;
  if (e->unpatched || e->b->len < (e->fl->chunk ? e->fl->chunk : STREAM_CHUNK)) return 0;
  if ((r = e->fl->fn(e->fl->ud, e->b)) == 0) {
    e->sent = 1;
    return 0;
  }
  return r == -2 ? fail(e, "the port is closed") : nomem(e);
}

/* A table's entries in one pass: the run of keys 1, 2, 3... met before
** any other key is the array section; every other pair goes to the hash
** section.  (Not #t: its border can be far beyond the entries a sparse
** table holds.)  Streamed (see stable): T_END closes each section, and a
** chunk may leave after any entry. */
static int entries (enc *e, int idx, int streamed, uint32_t *narr, uint32_t *nrec) {
  lua_State *L = e->L;
  pathseg *seg = &e->path[e->depth++];
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kidx = lua_gettop(L) - 1;
    if (*nrec == 0 && lua_isinteger(L, kidx) &&
        lua_tointeger(L, kidx) == (lua_Integer)*narr + 1) {
      seg->kind = P_ARR;
      seg->n = (lua_Integer)*narr + 1;
      if (value(e, kidx + 1)) return -1;
      if (++*narr == UINT32_MAX) return fail(e, "table too large");
    }
    else {
      if (streamed && *nrec == 0 && putbyte(e, T_END)) return -1;
      seg->idx = kidx;
      seg->kind = P_KEY;
      if (value(e, kidx)) return -1;
      seg->kind = P_VAL;
      if (value(e, kidx + 1)) return -1;
      if (++*nrec == UINT32_MAX) return fail(e, "table too large");
    }
    lua_pop(L, 1);
    if (streamed && flushed(e)) return -1;
  }
  e->depth--;
  if (streamed && *nrec == 0 && putbyte(e, T_END)) return -1;
  return streamed ? putbyte(e, T_END) : 0;
}

static int stable (enc *e, int idx) {
  lua_State *L = e->L;
  uint32_t narr = 0, nrec = 0, hrec = 0;
  lua_Unsigned border = lua_rawlen(L, idx);
  if (border == 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)border);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (hrec < UINT32_MAX) hrec++;
  }
  if (RESERVE(e, 9)) return -1;
  e->b->p[e->b->len] = T_STREAMTABLE;
  narr = border > UINT32_MAX ? UINT32_MAX : (uint32_t)border;
  memcpy(e->b->p + e->b->len + 1, &narr, sizeof narr);
  memcpy(e->b->p + e->b->len + 1 + sizeof narr, &hrec, sizeof hrec);
  e->b->len += 9;
  narr = 0;
  return entries(e, idx, 1, &narr, &nrec);
}

static int table (enc *e, int idx) {
  lua_State *L = e->L;
  uint32_t narr = 0, nrec = 0;
  size_t sizepos;
  int isnew;
  if (lua_getmetatable(L, idx)) {
    const loom_clonehook *h = hookof(L);
    if (h) return byref(e, idx, h);
  }
  if (ref_or_number(e, idx, &isnew) || !isnew) return isnew ? -1 : 0;
  if (enter(e)) return -1;
  if (e->fl && ((e->depth == 0 && e->fl->root) || lua_rawlen(L, idx) >= STREAM_MIN)) {
    if (!lua_getmetatable(L, idx)) return stable(e, idx);
    lua_pop(L, 1);                 /* (a class's table is never streamed) */
  }
  if (lua_getmetatable(L, idx)) {          /* sent only as a registered class */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLASSKEY) == LUA_TTABLE) {
      lua_pushvalue(L, -2);
      if (lua_rawget(L, -2) == LUA_TSTRING) {
        size_t n;
        const char *name = lua_tolstring(L, -1, &n);
        if (loom__buf_reserve(e->b, n + 2)) return nomem(e);
        e->b->p[e->b->len++] = T_CLASS;
        e->b->p[e->b->len++] = (unsigned char)n;
        memcpy(e->b->p + e->b->len, name, n);
        e->b->len += n;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  if (RESERVE(e, 9)) return -1;
  e->b->p[e->b->len] = T_TABLE;
  sizepos = e->b->len + 1;         /* the counts, written when known */
  e->b->len += 9;
  e->unpatched++;                  /* no chunk may leave before the counts */
  if (entries(e, idx, 0, &narr, &nrec)) return -1;
  e->unpatched--;
  memcpy(e->b->p + sizepos, &narr, sizeof narr);
  memcpy(e->b->p + sizepos + sizeof narr, &nrec, sizeof nrec);
  return 0;
}

static int userdata (enc *e, int idx) {
  const loom_clonehook *h;
  if (lua_getmetatable(e->L, idx) && (h = hookof(e->L)) != NULL)
    return byref(e, idx, h);
  return fail(e, "userdata");
}

/* The first function that holds upvalue cell 'id' (its number and index),
** or NULL after recording this one's: closures that shared a cell share
** it after the clone too (lua_upvaluejoin), as Lanes keeps them. */
static const struct upseen *upvalue_seen (enc *e, const void *id, uint32_t fn,
                                          int n, int *nomemory) {
  size_t i;
  *nomemory = 0;
  for (i = 0; i < e->nups; i++)
    if (e->ups[i].id == id) return &e->ups[i];
  if (e->nups == e->upcap) {
    size_t ncap = e->upcap ? e->upcap * 2 : 16;
    struct upseen *nu = (struct upseen *)realloc(e->ups, ncap * sizeof *nu);
    if (nu == NULL) { *nomemory = 1; return NULL; }
    e->ups = nu;
    e->upcap = ncap;
  }
  e->ups[e->nups].id = id;
  e->ups[e->nups].fn = fn;
  e->ups[e->nups].n = n;
  e->nups++;
  return NULL;
}

/* Is the value at idx this state's globals or, for an upvalue named
** _ENV, an environment built over them: __index tables that reach them,
** or an __index function (a test runner's environment; what it reads
** cannot be known without calling it)?  Then the receiver's own globals
** stand in for it.  Any other table (a sandbox such as local _ENV =
** {...}) is cloned as a value: a sandboxed function stays sandboxed.
** Does not allocate ("__index" is a string every state has). */
static int isglobals (enc *e, int idx, int derived) {
  lua_State *L = e->L;
  int i, top = lua_gettop(L), r = 0;
  if (e->genv == NULL) {             /* looked up at the first function */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    e->genv = lua_topointer(L, -1);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, idx);
  for (i = 0; i < 16 && lua_type(L, -1) == LUA_TTABLE; i++) {
    int t;
    if (lua_topointer(L, -1) == e->genv) { r = 1; break; }
    if (!derived || (t = luaL_getmetafield(L, -1, "__index")) == LUA_TNIL) break;
    if (t == LUA_TFUNCTION) { r = 1; break; }
  }
  lua_settop(L, top);
  return r;
}

static int function (enc *e, int idx) {
  lua_State *L = e->L;
  size_t lenpos, start;
  uint32_t len, fn;
  int isnew, n, i;
  pathseg *seg;
  if (lua_iscfunction(L, idx)) return fail(e, "C function");
  if (ref_or_number(e, idx, &isnew) || !isnew) return isnew ? -1 : 0;
  fn = e->nref;                    /* the number just given to it */
  if (enter(e)) return -1;
  if (putbyte(e, T_FUNC)) return -1;
  lenpos = e->b->len;
  if (putu32(e, 0)) return -1;
  start = e->b->len;
  lua_pushvalue(L, idx);
  if (lua_dump(L, loom__buf_writer, e->b, 0) != 0) return nomem(e);
  lua_pop(L, 1);
  if (e->b->len - start > UINT32_MAX) return fail(e, "function too large");
  len = (uint32_t)(e->b->len - start);
  memcpy(e->b->p + lenpos, &len, sizeof len);
  for (n = 0; lua_getupvalue(L, idx, n + 1) != NULL; n++) lua_pop(L, 1);
  if (n > 255) return fail(e, "too many upvalues");
  if (putbyte(e, n)) return -1;
  seg = &e->path[e->depth++];
  seg->kind = P_UPV;
  for (i = 1; i <= n; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    const struct upseen *up;
    int r, nomemory;
    seg->name = name;
    up = upvalue_seen(e, lua_upvalueid(L, idx, i), fn, i, &nomemory);
    if (nomemory) return nomem(e);
    if (up) {                      /* a cell met before: join it */
      e->hasref = 1;
      r = putbyte(e, T_UPREF) || putvarint(e, up->fn) || putbyte(e, up->n);
    }
    else if (isglobals(e, lua_gettop(L), strcmp(name, "_ENV") == 0))
      r = putbyte(e, T_ENV);       /* the globals: the receiver's own */
    else r = value(e, lua_gettop(L));
    if (r) return -1;
    lua_pop(L, 1);
  }
  e->depth--;
  return 0;
}

static int value (enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return putbyte(e, T_NIL);
    case LUA_TBOOLEAN: return putbyte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
    case LUA_TNUMBER: {
      if (lua_isinteger(L, idx)) {
        lua_Integer n = lua_tointeger(L, idx);
        if (n >= 0 && n <= T_SMALLINT_MAX) return putbyte(e, T_SMALLINT + (int)n);
        if (putbyte(e, T_INT)) return -1;
        return putvarint(e, ((uint64_t)n << 1) ^ (uint64_t)(n >> 63));
      }
      else {
        double d = (double)lua_tonumber(L, idx);
        if (putbyte(e, T_FLOAT)) return -1;
        return putbytes(e, &d, sizeof d);
      }
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      if (n <= T_SHORTSTR_MAX) {
        if (RESERVE(e, n + 1)) return -1;
        e->b->p[e->b->len++] = (unsigned char)(T_SHORTSTR + n);
        memcpy(e->b->p + e->b->len, s, n);
        e->b->len += n;
        return 0;
      }
      else if (putbyte(e, T_STR) || putvarint(e, n)) return -1;
      return putbytes(e, s, n);
    }
    case LUA_TTABLE: return table(e, idx);
    case LUA_TFUNCTION: return function(e, idx);
    case LUA_TUSERDATA: return userdata(e, idx);
    default: return fail(e, lua_typename(L, lua_type(L, idx)));
  }
}

int loom__encode (lua_State *L, int idx, loom_buf *b, loom_refs *refs,
                  const char *root, char *err, size_t errsz) {
  return loom__encode_ex(L, idx, b, refs, root, err, errsz, NULL);
}

int loom__encode_ex (lua_State *L, int idx, loom_buf *b, loom_refs *refs,
                     const char *root, char *err, size_t errsz, const loom_flush *fl) {
  enc e;
  int top = lua_gettop(L), r;
  size_t hdr;
  uint32_t nrefs = refs ? refs->n : 0;
  e.L = L;
  e.b = b;
  e.refs = refs;
  e.root = root;
  e.err = err;
  e.errsz = errsz;
  e.nref = 0;
  e.hasref = 0;
  e.depth = 0;
  e.cap = 0;
  e.count = 0;
  e.slots = NULL;
  e.ups = NULL;
  e.nups = e.upcap = 0;
  e.genv = NULL;
  e.fl = fl;
  e.unpatched = 0;
  e.sent = 0;
  hdr = b->len;
  /* a streamed blob's header may leave before its end: marked up front,
  ** and unmarked at the end if it did not leave (a small message posted
  ** by postMessage: its receiver then keeps no table of references) */
  r = putbyte(&e, fl ? HDR_VERSION | HDR_HASREF : HDR_VERSION);
  if (r == 0) r = value(&e, lua_absindex(L, idx));
  if (r == 0 && !e.sent) b->p[hdr] = e.hasref ? HDR_VERSION | HDR_HASREF : HDR_VERSION;
  if (r != 0 && refs) {           /* give back what this value took */
    uint32_t i;
    for (i = nrefs; i < refs->n; i++) refs->v[i].vt->release(refs->v[i].p);
    refs->n = nrefs;
  }
  if (e.slots) free(e.slots);
  if (e.ups) free(e.ups);
  lua_settop(L, top);
  return r;
}

/* }====================================================================== */

/* {======================================================================
** Decoder: bounds-checked; a malformed blob gives an error, never a crash.
** Bytecode inside a blob is trusted: only loom's own encoder makes blobs.
** ======================================================================= */

typedef struct dec {
  lua_State *L;
  const unsigned char *p, *end;
  loom_ref *rv;              /* the message's references */
  uint32_t nrv;
  int refs;                 /* stack index of the reference table, or 0 */
  lua_Integer nref;
  uint64_t owed;            /* bytes the open tables' entries still need */
  loom_stream *stream;      /* the rest of the bytes come from here, or NULL */
  const atomic_int *stop;   /* a wait for the stream ends when this is set */
  int aborted;              /* the stream was aborted: drop the value */
  int depth;
  const char *err;
  char errbuf[CLASS_MAXLEN + 64];
} dec;

static int bad (dec *d, const char *why) {
  d->err = why;
  return -1;
}

static int getvarint (dec *d, uint64_t *v) {
  uint64_t r = 0;
  int shift = 0;
  while (d->p < d->end && shift < 64) {
    unsigned char byte = *d->p++;
    r |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      /* canonical only: one value, one encoding (the encoder writes these) */
      if (byte == 0 && shift > 0) return bad(d, "overlong varint");
      if (shift == 63 && byte > 1) return bad(d, "varint out of range");
      *v = r;
      return 0;
    }
    shift += 7;
  }
  return bad(d, "bad varint");
}

static int getu32 (dec *d, uint32_t *v) {
  if ((size_t)(d->end - d->p) < sizeof *v) return bad(d, "truncated");
  memcpy(v, d->p, sizeof *v);
  d->p += sizeof *v;
  return 0;
}

static void addref (dec *d) {
#ifdef LOOM_FUZZING
  loom__fuzz_made(d->L);      /* the fuzz targets see each numbered value */
#endif
  if (d->refs) {
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->refs, ++d->nref);
  }
}

static int dvalue (dec *d);

static int dtable (dec *d) {
  lua_State *L = d->L;
  uint32_t narr, nrec, i;
  uint64_t need, left;
  if (getu32(d, &narr) || getu32(d, &nrec)) return -1;
  /* every entry takes at least one byte, and so does every entry the
  ** tables around this one still expect: refuse sizes the bytes left
  ** cannot hold before preallocating them (else nested tables could each
  ** claim all that is left, and take thousands of times the blob) */
  need = (uint64_t)narr + nrec * 2ull;
  left = (uint64_t)(d->end - d->p);
  if (d->owed > left || need > left - d->owed) return bad(d, "truncated table");
  if (d->depth >= LOOM_MAX_DEPTH) return bad(d, "nested too deep");
  if (!lua_checkstack(L, 4)) return bad(d, "Lua stack overflow (or not enough memory)");
  d->depth++;
  d->owed += need;
  lua_createtable(L, (int)narr, (int)nrec);
  addref(d);
  for (i = 1; i <= narr; i++) {
    d->owed--;
    if (dvalue(d)) return -1;
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  for (i = 0; i < nrec; i++) {
    d->owed--;
    if (dvalue(d)) return -1;
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER &&
                             lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      return bad(d, "bad table key");
    d->owed--;
    if (dvalue(d)) return -1;
    lua_rawset(L, -3);
  }
  d->depth--;
  return 0;
}

/* The error for what loom__stream_next/refs said (r != 0 and r != 1) */
static int streambad (dec *d, int r) {
  if (r == -1) d->aborted = 1;
  return bad(d, r == -1 ? "the sender's value could not be cloned" : "terminated");
}

/* At the end of the bytes at hand: the stream's next chunk, if any.  A
** chunk ends only between two entries of a streamed table, never inside
** a table whose counts were read (d->owed). */
static int more (dec *d) {
  const unsigned char *p;
  size_t n;
  int r;
  if (d->stream == NULL || d->owed) return bad(d, "truncated");
  r = loom__stream_next(d->stream, &p, &n, d->stop);
  if (r == 1) {
    d->p = p;
    d->end = p + n;
    return 0;
  }
  return r == 0 ? bad(d, "truncated") : streambad(d, r);
}

#define HINT_MAX (1u << 24)      /* a streamed table's presize, at most */

static int dstable (dec *d) {
  lua_State *L = d->L;
  uint32_t harr, hrec, carr = 0, crec = 0;
  lua_Integer i = 0;
  if (getu32(d, &harr) || getu32(d, &hrec)) return -1;
  if (harr > HINT_MAX) harr = HINT_MAX;
  if (hrec > HINT_MAX) hrec = HINT_MAX;
  if (d->stream == NULL) {
    /* one piece (not from a stream, which only loom's encoder makes): the
    ** presize is claimed from the bytes left as dtable's counts are, so
    ** nested tables cannot each claim all of them; the claim is given
    ** back entry by entry, and what the hints overstated at the end */
    uint64_t left = (uint64_t)(d->end - d->p);
    left = d->owed > left ? 0 : left - d->owed;
    if (harr > left) harr = (uint32_t)left;
    if (hrec > (left - harr) / 2) hrec = (uint32_t)((left - harr) / 2);
    carr = harr;
    crec = hrec;
    d->owed += carr + 2ull * crec;
  }
  if (d->depth >= LOOM_MAX_DEPTH) return bad(d, "nested too deep");
  if (!lua_checkstack(L, 4)) return bad(d, "Lua stack overflow (or not enough memory)");
  d->depth++;
  lua_createtable(L, (int)harr, (int)hrec);
  addref(d);
  for (;;) {
    if (d->p == d->end && more(d)) return -1;
    if (*d->p == T_END) break;
    if (carr) carr--, d->owed--;
    if (dvalue(d)) return -1;
    lua_rawseti(L, -2, ++i);
  }
  d->p++;
  for (;;) {
    if (d->p == d->end && more(d)) return -1;
    if (*d->p == T_END) break;
    if (crec) crec--, d->owed -= 2;
    if (dvalue(d)) return -1;
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER &&
                             lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      return bad(d, "bad table key");
    if (dvalue(d)) return -1;
    lua_rawset(L, -3);
  }
  d->p++;
  d->owed -= carr + 2ull * crec;
  d->depth--;
  return 0;
}

static int dfunction (dec *d) {
  lua_State *L = d->L;
  uint32_t len;
  int nups, i, st;
  if (getu32(d, &len)) return -1;
  if ((size_t)(d->end - d->p) < len) return bad(d, "truncated function");
  if (d->depth >= LOOM_MAX_DEPTH) return bad(d, "nested too deep");
  if (!lua_checkstack(L, 4)) return bad(d, "Lua stack overflow (or not enough memory)");
#ifdef LOOM_FUZZING
  /* A fuzzer's blob is not loom's, and bytecode is trusted (above): only
  ** the dumps the fuzz target made itself may reach the loader. */
  if (!loom__fuzz_trusted(d->p, len)) return bad(d, "functions not decoded while fuzzing");
#endif
  st = luaL_loadbufferx(L, (const char *)d->p, len, "=(cloned function)", "b");
  if (st != LUA_OK) {
    lua_pop(L, 1);
    return bad(d, st == LUA_ERRMEM ? "not enough memory" : "bad function");
  }
  d->p += len;
  addref(d);
  if (d->p >= d->end) return bad(d, "truncated function");
  nups = *d->p++;
  d->depth++;
  for (i = 1; i <= nups; i++) {
    if (d->p < d->end && *d->p == T_UPREF) {   /* join a cell met before */
      uint64_t fn;
      int n;
      d->p++;
      if (getvarint(d, &fn)) return -1;
      if (d->p >= d->end) return bad(d, "truncated function");
      n = *d->p++;
      if (!d->refs || fn < 1 || fn > (uint64_t)d->nref) return bad(d, "bad reference");
      lua_rawgeti(L, d->refs, (lua_Integer)fn);
      if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
          lua_getupvalue(L, -1, n) == NULL)
        return bad(d, "bad upvalue reference");
      lua_pop(L, 1);
      if (lua_getupvalue(L, -2, i) == NULL) return bad(d, "bad upvalue reference");
      lua_pop(L, 1);
      lua_upvaluejoin(L, -2, i, -1, n);
      lua_pop(L, 1);
      continue;
    }
    if (d->p < d->end && *d->p == T_ENV) {
      d->p++;
      lua_pushglobaltable(L);
    }
    else if (dvalue(d)) return -1;
    if (lua_setupvalue(L, -2, i) == NULL) lua_pop(L, 1);
  }
  d->depth--;
  return 0;
}

static int dhook (dec *d) {
  lua_State *L = d->L;
  const loom_clonehook *h = NULL;
  const unsigned char *name;
  uint64_t i;
  size_t n;
  if (d->p >= d->end) return bad(d, "truncated reference");
  n = *d->p++;
  if ((size_t)(d->end - d->p) < n) return bad(d, "truncated reference");
  name = d->p;
  d->p += n;
  if (getvarint(d, &i)) return -1;
  if (d->stream && d->rv == NULL) {   /* known once the sender is done */
    int r = loom__stream_refs(d->stream, &d->rv, &d->nrv, d->stop);
    if (r) return streambad(d, r);
  }
  if (i >= d->nrv || d->rv[i].vt == NULL) return bad(d, "bad reference");
  if (loom__ctx_inclose(L)) {     /* it would never be released */
    snprintf(d->errbuf, sizeof d->errbuf, "%.*s: not received while the state closes "
             "(in a finalizer)", (int)n, name);
    return bad(d, d->errbuf);
  }
  /* a hook's decode may push a few values and call Lua (a MessagePort's) */
  if (!lua_checkstack(L, 8)) return bad(d, "Lua stack overflow (or not enough memory)");
  d->errbuf[0] = '\0';
  h = hookload(L, name, n, d->errbuf, sizeof d->errbuf);
  if (h == NULL && d->errbuf[0]) return bad(d, d->errbuf);
  if (h == NULL || h->vt != d->rv[i].vt) {
    snprintf(d->errbuf, sizeof d->errbuf,
             "type '%.*s' has no clone hook in this thread", (int)n, name);
    return bad(d, d->errbuf);
  }
  if (h->decode(L, d->rv[i].p)) {
    snprintf(d->errbuf, sizeof d->errbuf, "%.*s: %s", (int)n, name,
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "cannot decode");
    lua_pop(L, 1);
    return bad(d, d->errbuf);
  }
  d->rv[i].vt = NULL;            /* taken: the value owns the count now */
  addref(d);
  return 0;
}

static int dvalue (dec *d) {
  lua_State *L = d->L;
  int t;
  if (d->p >= d->end) return bad(d, "truncated");
  t = *d->p++;
  if (t >= T_SHORTSTR) {
    size_t n = (size_t)(t - T_SHORTSTR);
    if ((size_t)(d->end - d->p) < n) return bad(d, "truncated string");
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    return 0;
  }
  if (t >= T_SMALLINT) {
    if (t > T_SMALLINT + T_SMALLINT_MAX) return bad(d, "bad tag");
    lua_pushinteger(L, t - T_SMALLINT);
    return 0;
  }
  switch (t) {
    case T_NIL: lua_pushnil(L); return 0;
    case T_FALSE: lua_pushboolean(L, 0); return 0;
    case T_TRUE: lua_pushboolean(L, 1); return 0;
    case T_INT: {
      uint64_t u;
      if (getvarint(d, &u)) return -1;
      lua_pushinteger(L, (lua_Integer)((u >> 1) ^ (0 - (u & 1))));
      return 0;
    }
    case T_FLOAT: {
      double x;
      if ((size_t)(d->end - d->p) < sizeof x) return bad(d, "truncated float");
      memcpy(&x, d->p, sizeof x);
      d->p += sizeof x;
      lua_pushnumber(L, (lua_Number)x);
      return 0;
    }
    case T_STR: {
      uint64_t n;
      if (getvarint(d, &n)) return -1;
      if ((uint64_t)(d->end - d->p) < n) return bad(d, "truncated string");
      lua_pushlstring(L, (const char *)d->p, (size_t)n);
      d->p += n;
      return 0;
    }
    case T_TABLE: return dtable(d);
    case T_STREAMTABLE: return dstable(d);
    case T_CLASS: {
      size_t n;
      const unsigned char *name;
      if (d->p >= d->end) return bad(d, "truncated class");
      n = *d->p++;
      name = d->p;
      if ((size_t)(d->end - d->p) < n + 1 || d->p[n] != T_TABLE)
        return bad(d, "bad class");
      d->p += n + 1;
      if (dtable(d)) return -1;
      if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLASSKEY) != LUA_TTABLE ||
          (lua_pushlstring(L, (const char *)name, n), lua_rawget(L, -2)) != LUA_TTABLE) {
        snprintf(d->errbuf, sizeof d->errbuf,
                 "class '%.*s' is not registered in this thread", (int)n, name);
        return bad(d, d->errbuf);
      }
      lua_setmetatable(L, -3);
      lua_pop(L, 1);
      return 0;
    }
    case T_FUNC: return dfunction(d);
    case T_HOOK: return dhook(d);
    case T_REF: {
      uint64_t id;
      if (getvarint(d, &id)) return -1;
      if (!d->refs || id < 1 || id > (uint64_t)d->nref) return bad(d, "bad reference");
      lua_rawgeti(L, d->refs, (lua_Integer)id);
      return 0;
    }
    default: return bad(d, "bad tag");
  }
}

static int decode (lua_State *L, const unsigned char *p, size_t len, loom_ref *refs,
                   uint32_t nrefs, loom_stream *stream, const atomic_int *stop) {
  dec d;
  int top = lua_gettop(L);
  d.L = L;
  d.rv = refs;
  d.nrv = nrefs;
  d.p = p;
  d.end = p ? p + len : NULL;   /* (a stream's bytes: its first chunk, below) */
  d.refs = 0;
  d.nref = 0;
  d.owed = 0;
  d.stream = stream;
  d.stop = stop;
  d.aborted = 0;
  d.depth = 0;
  d.err = NULL;
  luaL_checkstack(L, 4, "loom: decoding");
  if (stream && p == NULL ? more(&d) : len < 1) {
    if (d.err == NULL) bad(&d, "bad header");
  }
  else if ((d.p[0] & ~HDR_HASREF) != HDR_VERSION) bad(&d, "bad header");
  else {
    if (d.p[0] & HDR_HASREF) {
      lua_newtable(L);
      d.refs = lua_gettop(L);
    }
    d.p++;
    if (dvalue(&d) == 0) {
      if (d.p != d.end) bad(&d, "trailing bytes");
      else if (stream) {       /* the end: nothing may follow the value */
        int r = loom__stream_next(stream, &p, &len, stop);
        if (r == 1) bad(&d, "trailing bytes");
        else if (r) streambad(&d, r);
      }
    }
  }
  if (d.err) {
    lua_settop(L, top);
    lua_pushfstring(L, "cannot decode message: %s", d.err);
    return d.aborted ? -2 : -1;
  }
  if (d.refs) lua_remove(L, d.refs);
  return 0;
}

int loom__decode (lua_State *L, const unsigned char *p, size_t len,
                  loom_ref *refs, uint32_t nrefs) {
  return decode(L, p, len, refs, nrefs, NULL, NULL);
}

/* }====================================================================== */

/* {======================================================================
** Lua API
** ======================================================================= */

int loom__errblob (loom_buf *b, const char *err) {
  size_t n = strlen(err);
  uint32_t two = 2, zero = 0;
  unsigned char hdr[1 + 1 + 2 * sizeof(uint32_t) + 1 + 10];
  size_t h = 0;
  uint64_t v = n;
  hdr[h++] = HDR_VERSION;
  hdr[h++] = T_TABLE;
  memcpy(hdr + h, &two, sizeof two); h += sizeof two;
  memcpy(hdr + h, &zero, sizeof zero); h += sizeof zero;
  hdr[h++] = T_STR;
  do {                                   /* LEB128 length */
    unsigned char byte = v & 0x7f;
    v >>= 7;
    hdr[h++] = byte | (v ? 0x80 : 0);
  } while (v);
  if (loom__buf_reserve(b, h + n + 1)) return -1;
  memcpy(b->p + b->len, hdr, h);
  memcpy(b->p + b->len + h, err, n);
  b->len += h + n;
  b->p[b->len++] = T_SHORTSTR;           /* the traceback: "" */
  return 0;
}

int loom__decode_msgx (lua_State *L, loom_msg *m, const atomic_int *stop) {
  if (m->stream) return decode(L, NULL, 0, NULL, 0, m->stream, stop);
  if (m->len == 0) {
    lua_pushnil(L);
    return 0;
  }
  return loom__decode(L, m->data, m->len, m->refs, m->nrefs);
}

int loom__decode_msg (lua_State *L, loom_msg *m) {
  return loom__decode_msgx(L, m, NULL);
}

/* The reusable buffers of loom.clone, a full userdata (its upvalue), as
** lua-cjson keeps its configuration: no context, no global. */
typedef struct clonebuf {
  loom_buf b;
  loom_refs refs;
  int closed;            /* finalized: a later clone keeps no buffer */
} clonebuf;

static int clonebuf_gc (lua_State *L) {
  clonebuf *cb = (clonebuf *)lua_touserdata(L, 1);
  loom__buf_free(&cb->b);
  loom__refs_free(&cb->refs);
  cb->closed = 1;
  return 0;
}

static int decodebuf (lua_State *L) {
  clonebuf *j = (clonebuf *)lua_touserdata(L, 1);
  if (loom__decode(L, j->b.p, j->b.len, j->refs.v, j->refs.n)) return lua_error(L);
  return 1;
}

/* loom.clone(v): the same clone a message makes, on one thread.  The
** blob is taken out of the reusable buffer before decoding: a finalizer
** run by the decoder's allocations may clone too. */
static int l_clone (lua_State *L) {
  clonebuf *cb = (clonebuf *)lua_touserdata(L, lua_upvalueindex(1));
  char err[512];
  clonebuf j;                          /* the blob being decoded */
  int st;
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  cb->b.len = 0;
  if (loom__encode(L, 1, &cb->b, &cb->refs, "value", err, sizeof err)) {
    if (cb->closed) loom__buf_free(&cb->b);   /* nobody would free it later */
    return luaL_error(L, "loom.clone: %s", err);
  }
  j.b = cb->b;
  j.refs = cb->refs;
  memset(&cb->b, 0, sizeof cb->b);
  memset(&cb->refs, 0, sizeof cb->refs);
  lua_pushcfunction(L, decodebuf);
  lua_pushlightuserdata(L, &j);
  st = lua_pcall(L, 1, 1, 0);
  loom__refs_clear(&j.refs);           /* whatever the decoder did not take */
  if (cb->b.p == NULL && j.b.cap <= LOOM_SPARE_MAX && !cb->closed) {   /* keep them */
    cb->b = j.b;
    cb->refs = j.refs;
  }
  else {
    loom__buf_free(&j.b);
    loom__refs_free(&j.refs);
  }
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* loom.registerClass(name, mt): tables with metatable mt are sent with
** their class name; the receiving thread gives them its own metatable
** registered under that name.  Each thread registers its classes. */
static int l_registerclass (lua_State *L) {
  size_t n;
  luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, n > 0 && n <= CLASS_MAXLEN, 1, "class name must be 1 to 255 bytes");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLASSKEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CLASSKEY);
  }
  lua_pushvalue(L, 1);                 /* forget what name had */
  if (lua_rawget(L, 3) == LUA_TTABLE) {
    lua_pushnil(L);
    lua_rawset(L, 3);
  }
  else lua_pop(L, 1);
  lua_pushvalue(L, 2);                 /* and the name mt had */
  if (lua_rawget(L, 3) == LUA_TSTRING) {
    lua_pushnil(L);
    lua_rawset(L, 3);
  }
  else lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, 3);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  lua_rawset(L, 3);
  lua_settop(L, 2);
  return 1;
}

/* core.lazyhooks(fn): fn(name) loads the module of a hook not known yet */
static int l_lazyhooks (lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LAZYKEY);
  return 0;
}

void loom__serial_open (lua_State *L) {
  clonebuf *cb = (clonebuf *)lua_newuserdatauv(L, sizeof *cb, 0);
  memset(cb, 0, sizeof *cb);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, clonebuf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushcclosure(L, l_clone, 1);
  lua_setfield(L, -2, "clone");
  lua_pushcfunction(L, l_registerclass);
  lua_setfield(L, -2, "registerClass");
  lua_pushcfunction(L, l_lazyhooks);
  lua_setfield(L, -2, "lazyhooks");
}

/* }====================================================================== */
