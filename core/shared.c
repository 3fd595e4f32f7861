/*
** shared.c: shared memory.  A block of zero-filled memory held by every
** thread that has a reference to it (loom.SharedBuffer), typed views over
** it, sequentially consistent atomics, and waiters kept per address
** (wait, notify, and the C half of waitAsync; lua/loom/shared.lua makes
** its Future).  Above the fence, the Lua-free block and its waiter lists;
** below it, the binding: the buffer and view userdata, their clone hooks
** (both travel by reference: a view is a block reference and its kind,
** offset and length), and the WAKE kind that settles a waitAsync on the
** waiting thread's own loop.
**
** Memory model: an element is read and written with relaxed atomic loads
** and stores of its width (v[i]), with sequentially consistent atomic
** read-modify-writes (the methods), or, for buf:read and buf:write, with
** memcpy, which is not atomic (as in JavaScript).  The __atomic builtins
** work on plain memory, so the block's bytes need no _Atomic type.
*/
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "loom_lua.h"

/* {======================================================================
** The block and its waiters (no Lua)
** ======================================================================= */

#define HDR_SIZE ((sizeof(loom_shared) + 15) & ~(size_t)15)

loom_shared *loom__shared_new (size_t size) {
  loom_shared *s;
  if (size > LOOM_SHARED_MAX) return NULL;
  /* libc's: any thread may keep it after its maker exits (loom_int.h) */
  s = (loom_shared *)loom__libc_calloc(1, HDR_SIZE + size);   /* zero-filled, lists empty */
  if (s == NULL) return NULL;
  if (uv_mutex_init(&s->lock)) {
    loom__libc_free(s);
    return NULL;
  }
  atomic_init(&s->refs, 1);
  s->size = size;
  s->data = (unsigned char *)s + HDR_SIZE;
  return s;
}

void loom__shared_retain (loom_shared *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void loom__shared_release (loom_shared *s) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  uv_mutex_destroy(&s->lock);
  loom__libc_free(s);
}

static unsigned bucket (size_t off) {
  return (unsigned)(((uint64_t)(off >> 2) * 0x9E3779B97F4A7C15u) >> 60)
         & (LOOM_WBUCKETS - 1);
}

static int64_t load_elem (const loom_shared *s, size_t off, int width) {
  if (width == 8) return (int64_t)__atomic_load_n((const uint64_t *)(s->data + off), __ATOMIC_SEQ_CST);
  return (int32_t)__atomic_load_n((const uint32_t *)(s->data + off), __ATOMIC_SEQ_CST);
}

int loom__shared_enqueue (loom_shared *s, loom_waiter *w, size_t off,
                          int64_t expected, int width) {
  unsigned b = bucket(off);
  uv_mutex_lock(&s->lock);
  /* the comparison is made under the lock, so a notify that follows a
  ** store the waiter did not see finds the waiter listed */
  if (load_elem(s, off, width) != expected) {
    uv_mutex_unlock(&s->lock);
    return LOOM_WAIT_NOTEQUAL;
  }
  w->off = off;
  w->next = NULL;
  w->prev = s->tail[b];
  if (s->tail[b]) s->tail[b]->next = w;
  else s->head[b] = w;
  s->tail[b] = w;
  w->listed = 1;
  uv_mutex_unlock(&s->lock);
  return LOOM_WAIT_OK;
}

static void unlink_waiter (loom_shared *s, loom_waiter *w) {
  unsigned b = bucket(w->off);
  if (w->prev) w->prev->next = w->next;
  else s->head[b] = w->next;
  if (w->next) w->next->prev = w->prev;
  else s->tail[b] = w->prev;
  w->next = w->prev = NULL;
  w->listed = 0;
}

int loom__shared_dequeue (loom_shared *s, loom_waiter *w) {
  int was;
  uv_mutex_lock(&s->lock);
  was = w->listed;
  if (was) unlink_waiter(s, w);
  uv_mutex_unlock(&s->lock);
  return was;
}

/* A notify that comes while the waiter spins costs the notifier one store
** and no system call (loom__mailbox_signal broadcasts only to threads
** blocked on the mailbox), and the waiter no wake-up through the kernel.  But a spin only
** pays while the notifier runs on another CPU: when both threads share one
** (the machine is busy), each spin burns its whole window while the other
** cannot run.  So the window adapts, as an adaptive mutex's does: a spin
** that ended in a wake-up doubles it (up to spin_max), one that ran out
** halves it (down to SPIN_MIN, which keeps probing). */
#define SPIN_MIN 2000u   /* ns */

int loom__shared_wait (loom_shared *s, size_t off, int64_t expected, int width,
                       loom_mailbox *mb, const atomic_int *stop, double timeout_ms,
                       uint64_t *spin, uint64_t spin_max) {
  loom_waiter w;
  uint64_t start = uv_hrtime();
  memset(&w, 0, sizeof w);
  atomic_init(&w.woken, 0);
  w.mb = mb;
  if (loom__shared_enqueue(s, &w, off, expected, width) != LOOM_WAIT_OK)
    return LOOM_WAIT_NOTEQUAL;
  if (timeout_ms != 0) {
    if (spin && spin_max) {
      uint64_t win = *spin < SPIN_MIN ? SPIN_MIN : *spin > spin_max ? spin_max : *spin;
      uint64_t until = start + win;
      int i, bytimeout = 0;
      if (timeout_ms > 0 && timeout_ms * 1e6 < (double)win) {
        until = start + (uint64_t)(timeout_ms * 1e6);
        bytimeout = 1;
      }
      while (!atomic_load(&w.woken) && !(stop && atomic_load(stop)) && uv_hrtime() < until)
        for (i = 0; i < 64 && !atomic_load_explicit(&w.woken, memory_order_relaxed); i++)
          loom__cpu_relax();
      if (atomic_load(&w.woken)) *spin = win * 2 > spin_max ? spin_max : win * 2;
      else if (!bytimeout && !(stop && atomic_load(stop))) *spin = win / 2;
    }
    if (!atomic_load(&w.woken)) {
      double left = timeout_ms;
      if (timeout_ms > 0) {
        left = timeout_ms - (double)(uv_hrtime() - start) / 1e6;
        if (left < 0) left = 0;
      }
      if (left != 0) loom__mailbox_await(mb, stop, &w.woken, left, 0);
    }
  }
  /* taking the lock here also waits out a notifier still waking us */
  if (!loom__shared_dequeue(s, &w)) return LOOM_WAIT_OK;
  return stop && atomic_load(stop) ? LOOM_WAIT_STOPPED : LOOM_WAIT_TIMEDOUT;
}

size_t loom__shared_notify (loom_shared *s, size_t off, size_t count) {
  unsigned b = bucket(off);
  loom_waiter *w, *next;
  size_t n = 0;
  if (count == 0) return 0;
  uv_mutex_lock(&s->lock);
  for (w = s->head[b]; w && n < count; w = next) {
    next = w->next;
    if (w->off != off) continue;
    unlink_waiter(s, w);
    /* still under the lock (block, then mailbox: the documented order):
    ** the waiter cannot leave, nor its thread close its inbox, before the
    ** wake-up is done */
    if (w->msg) {
      loom_msg *m = w->msg;   /* owns no reference: freeing it on a closed */
      w->msg = NULL;          /* inbox cannot reach back into this block */
      loom__mailbox_push(w->mb, m);
    }
    else {
      atomic_store(&w->woken, 1);   /* read under the mailbox's lock by */
      loom__mailbox_signal(w->mb);  /* loom__mailbox_await: never lost */
    }
    n++;
  }
  uv_mutex_unlock(&s->lock);
  return n;
}

/* }====================================================================== */

/* {====== Lua API
** loom.SharedBuffer(bytes) -> buf; buf:view(kind [, byteOffset [, length]])
** -> v.  Each userdata holds one reference of its block, dropped in __gc.
** ======================================================================= */

#define SBUF "loom.SharedBuffer"
#define SVIEW "loom.SharedView"
#define SWAIT "loom.SharedWait"

enum { K_I8, K_U8, K_I16, K_U16, K_I32, K_U32, K_I64, K_F32, K_F64, K_N };

static const struct kindinfo {
  const char *name;
  unsigned char size, isint;
  lua_Integer min, max;
} kinds[K_N] = {
  {"int8", 1, 1, INT8_MIN, INT8_MAX},
  {"uint8", 1, 1, 0, UINT8_MAX},
  {"int16", 2, 1, INT16_MIN, INT16_MAX},
  {"uint16", 2, 1, 0, UINT16_MAX},
  {"int32", 4, 1, INT32_MIN, INT32_MAX},
  {"uint32", 4, 1, 0, UINT32_MAX},
  {"int64", 8, 1, LUA_MININTEGER, LUA_MAXINTEGER},
  {"float32", 4, 0, 0, 0},
  {"float64", 8, 0, 0, 0},
};

typedef struct sbuf {
  loom_shared *s;              /* one reference; NULL while being made, or
                               ** after a direct call of its __gc */
} sbuf;

typedef struct sview {
  const char *tag;             /* &viewtag: see selfview */
  loom_shared *s;              /* one reference; NULL as sbuf's */
  unsigned char *p;            /* s->data + off */
  size_t off, len;             /* byte offset, length in elements */
  int kind;
} sview;

/* A view in a message: malloc'd, holding one reference of its block. */
typedef struct vref {
  loom_shared *s;
  size_t off, len;
  int kind;
} vref;

static void pushbuf (lua_State *L, loom_shared *s) {   /* takes s's count */
  sbuf *b = (sbuf *)lua_newuserdatauv(L, sizeof *b, 0);
  b->s = NULL;
  luaL_setmetatable(L, SBUF);
  b->s = s;
}

static const char viewtag = 'v';

/* Pushes a view; raises (out of memory) only before it takes s's count. */
static void pushview (lua_State *L, loom_shared *s, int kind, size_t off, size_t len) {
  sview *v = (sview *)lua_newuserdatauv(L, sizeof *v, 0);
  v->tag = &viewtag;
  v->s = NULL;
  luaL_setmetatable(L, SVIEW);
  v->s = s;
  v->p = s->data + off;
  v->off = off;
  v->len = len;
  v->kind = kind;
}

/* A userdata's block is NULL only after a direct call of its __gc: a
** run-time failure of the call, named as luaL_argerror names it. */
static int released (lua_State *L, const char *what) {
  lua_Debug ar;
  const char *name = "?";
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name) name = ar.name;
  return luaL_error(L, "%s: the %s was released (by its __gc)", name, what);
}

static sbuf *checkbuf (lua_State *L, int arg) {
  sbuf *b = (sbuf *)luaL_checkudata(L, arg, SBUF);
  if (b->s == NULL) released(L, "buffer");
  return b;
}

static sview *checkview (lua_State *L, int arg) {
  sview *v = (sview *)luaL_checkudata(L, arg, SVIEW);
  if (v->s == NULL) released(L, "view");
  return v;
}

/* {======================================================================
** Clone hooks: a buffer is its block; a view is a vref
** ======================================================================= */

static void rel_buf (void *p) { loom__shared_release((loom_shared *)p); }

static void rel_view (void *p) {
  vref *r = (vref *)p;
  loom__shared_release(r->s);
  free(r);
}

static const loom_refvt buf_vt = {SBUF, rel_buf};
static const loom_refvt view_vt = {SVIEW, rel_view};

static int enc_buf (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  sbuf *b = (sbuf *)lua_touserdata(L, idx);
  (void)err; (void)errsz;
  loom__shared_retain(b->s);
  *p = b->s;
  return 0;
}

static int dec_buf (lua_State *L, void *p) {
  loom_shared *s = (loom_shared *)p;
  pushbuf(L, s);   /* (out of memory before it takes the count: the
                   ** message still owns it and releases it) */
  return 0;
}

static int enc_view (lua_State *L, int idx, void **p, char *err, size_t errsz) {
  sview *v = (sview *)lua_touserdata(L, idx);
  vref *r = (vref *)malloc(sizeof *r);
  if (r == NULL) {
    snprintf(err, errsz, "not enough memory");
    return -1;
  }
  loom__shared_retain(v->s);
  r->s = v->s;
  r->off = v->off;
  r->len = v->len;
  r->kind = v->kind;
  *p = r;
  return 0;
}

static int dec_view (lua_State *L, void *p) {
  vref *r = (vref *)p;
  pushview(L, r->s, r->kind, r->off, r->len);   /* took r->s's count */
  free(r);
  return 0;
}

static const loom_clonehook buf_hook = {SBUF, &buf_vt, enc_buf, dec_buf};
static const loom_clonehook view_hook = {SVIEW, &view_vt, enc_view, dec_view};

/* }====================================================================== */

/* {======================================================================
** Arguments
** ======================================================================= */

/* A size or offset: an integer in 0..max. */
static size_t checksize (lua_State *L, int arg, size_t max, const char *what) {
  lua_Integer n = luaL_checkinteger(L, arg);
  if (n < 0 || (lua_Unsigned)n > max)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s out of range (0..%I)", what,
                                          (lua_Integer)max));
  return (size_t)n;
}

static size_t optsize (lua_State *L, int arg, size_t max, size_t def, const char *what) {
  return lua_isnoneornil(L, arg) ? def : checksize(L, arg, max, what);
}

/* An operand for an integer kind, range-checked as string.pack does. */
static lua_Integer checkoperand (lua_State *L, int arg, int kind) {
  lua_Integer n = luaL_checkinteger(L, arg);
  const struct kindinfo *k = &kinds[kind];
  if (n < k->min || n > k->max)
    luaL_argerror(L, arg, lua_pushfstring(L, "integer out of range for %s (%I..%I)",
                                          k->name, k->min, k->max));
  return n;
}

/* A 1-based index into v: the byte offset of that element from v->p. */
static size_t checkindex (lua_State *L, const sview *v, int arg) {
  lua_Integer i = luaL_checkinteger(L, arg);
  if (i < 1 || (lua_Unsigned)i > v->len) {
    if (v->len == 0) luaL_argerror(L, arg, "index out of range (the view is empty)");
    luaL_argerror(L, arg, lua_pushfstring(L, "index out of range (1..%I)",
                                          (lua_Integer)v->len));
  }
  return (size_t)(i - 1) * kinds[v->kind].size;
}

/* The self of a view method, on the path of every atomic: a full
** userdata of a view's size whose first field is the address of this
** file's 'viewtag' (which no other userdata holds: no Lua code can write
** a pointer into one) is a view, without luaL_checkudata's registry
** lookup; anything else goes through luaL_checkudata for its error. */
static int istagged (lua_State *L) {
  return lua_type(L, 1) == LUA_TUSERDATA && lua_rawlen(L, 1) == sizeof(sview) &&
         ((sview *)lua_touserdata(L, 1))->tag == &viewtag;
}

static sview *selfview (lua_State *L) {
  sview *v;
  if (!istagged(L)) return checkview(L, 1);
  v = (sview *)lua_touserdata(L, 1);
  if (v->s == NULL) released(L, "view");
  return v;
}

static sview *checkint (lua_State *L) {
  sview *v = selfview(L);
  if (!kinds[v->kind].isint)
    luaL_argerror(L, 1, lua_pushfstring(L, "%s views have no atomic methods",
                                        kinds[v->kind].name));
  return v;
}

static sview *checkwaitable (lua_State *L) {
  sview *v = selfview(L);
  if (v->kind != K_I32 && v->kind != K_I64)
    luaL_argerror(L, 1, lua_pushfstring(L, "an int32 or int64 view expected, got %s",
                                        kinds[v->kind].name));
  return v;
}

/* }====================================================================== */

/* {======================================================================
** Elements and atomics
** ======================================================================= */

/* The raw bits of an element as the Lua integer of its kind. */
static lua_Integer fromraw (int kind, uint64_t raw) {
  switch (kind) {
    case K_I8: return (int8_t)(uint8_t)raw;
    case K_U8: return (uint8_t)raw;
    case K_I16: return (int16_t)(uint16_t)raw;
    case K_U16: return (uint16_t)raw;
    case K_I32: return (int32_t)(uint32_t)raw;
    case K_U32: return (uint32_t)raw;
    default: return (lua_Integer)raw;
  }
}

static uint64_t loadraw (const unsigned char *p, int size, int order) {
  switch (size) {
    case 1: return __atomic_load_n(p, order);
    case 2: return __atomic_load_n((const uint16_t *)p, order);
    case 4: return __atomic_load_n((const uint32_t *)p, order);
    default: return __atomic_load_n((const uint64_t *)p, order);
  }
}

static void storeraw (unsigned char *p, int size, uint64_t x, int order) {
  switch (size) {
    case 1: __atomic_store_n(p, (uint8_t)x, order); break;
    case 2: __atomic_store_n((uint16_t *)p, (uint16_t)x, order); break;
    case 4: __atomic_store_n((uint32_t *)p, (uint32_t)x, order); break;
    default: __atomic_store_n((uint64_t *)p, x, order); break;
  }
}

/* float32 as Math.fround does it: beyond the largest float, rounding to
** nearest gives infinity from the midpoint up (never an undefined cast) */
static float tofloat (lua_Number x) {
  if (x > FLT_MAX || x < -FLT_MAX) {
    if (x != x) return (float)x;
    if (fabs(x) >= 3.4028235677973366e38) return x > 0 ? HUGE_VALF : -HUGE_VALF;
    return x > 0 ? FLT_MAX : -FLT_MAX;
  }
  return (float)x;
}

static void pushelem (lua_State *L, const sview *v, size_t at) {
  const unsigned char *p = v->p + at;
  int size = kinds[v->kind].size;
  uint64_t raw = loadraw(p, size, __ATOMIC_RELAXED);
  if (v->kind == K_F32) {
    uint32_t u = (uint32_t)raw;
    float f;
    memcpy(&f, &u, sizeof f);
    lua_pushnumber(L, (lua_Number)f);
  }
  else if (v->kind == K_F64) {
    double d;
    memcpy(&d, &raw, sizeof d);
    lua_pushnumber(L, (lua_Number)d);
  }
  else lua_pushinteger(L, fromraw(v->kind, raw));
}

/* Store the value at 'arg' (checked) into the element at 'at'. */
static void setelem (lua_State *L, const sview *v, size_t at, int arg) {
  unsigned char *p = v->p + at;
  uint64_t raw;
  if (v->kind == K_F32) {
    float f = tofloat(luaL_checknumber(L, arg));
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    raw = u;
  }
  else if (v->kind == K_F64) {
    double d = (double)luaL_checknumber(L, arg);
    memcpy(&raw, &d, sizeof raw);
  }
  else raw = (uint64_t)checkoperand(L, arg, v->kind);
  storeraw(p, kinds[v->kind].size, raw, __ATOMIC_RELAXED);
}

enum { OP_ADD, OP_SUB, OP_AND, OP_OR, OP_XOR, OP_XCHG };

#define RMW(T, p, op, x) do { T *q_ = (T *)(p); T x_ = (T)(x); switch (op) { \
    case OP_ADD: return __atomic_fetch_add(q_, x_, __ATOMIC_SEQ_CST); \
    case OP_SUB: return __atomic_fetch_sub(q_, x_, __ATOMIC_SEQ_CST); \
    case OP_AND: return __atomic_fetch_and(q_, x_, __ATOMIC_SEQ_CST); \
    case OP_OR: return __atomic_fetch_or(q_, x_, __ATOMIC_SEQ_CST); \
    case OP_XOR: return __atomic_fetch_xor(q_, x_, __ATOMIC_SEQ_CST); \
    default: return __atomic_exchange_n(q_, x_, __ATOMIC_SEQ_CST); } } while (0)

/* Unsigned arithmetic: wraps in two's complement, as Node's does. */
static uint64_t rmw (unsigned char *p, int size, int op, uint64_t x) {
  switch (size) {
    case 1: RMW(uint8_t, p, op, x);
    case 2: RMW(uint16_t, p, op, x);
    case 4: RMW(uint32_t, p, op, x);
    default: RMW(uint64_t, p, op, x);
  }
}

static uint64_t cas (unsigned char *p, int size, uint64_t expected, uint64_t x) {
#define CAS(T) do { T e_ = (T)expected; \
    __atomic_compare_exchange_n((T *)p, &e_, (T)x, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
    return e_; } while (0)
  switch (size) {
    case 1: CAS(uint8_t);
    case 2: CAS(uint16_t);
    case 4: CAS(uint32_t);
    default: CAS(uint64_t);
  }
#undef CAS
}

/* The int32 cell an atomic's (view, index) names, reading nothing but the
** arguments (an int32 view is a counter or a flag, the hot case); NULL
** sends the caller the checked way, which raises for what is wrong. */
static uint32_t *cell32 (lua_State *L) {
  sview *v;
  lua_Integer i;
  int ok;
  if (!istagged(L)) return NULL;
  v = (sview *)lua_touserdata(L, 1);
  if (v->s == NULL || v->kind != K_I32) return NULL;
  i = lua_tointegerx(L, 2, &ok);
  if (!ok || i < 1 || (lua_Unsigned)i > v->len) return NULL;
  return (uint32_t *)(void *)v->p + (i - 1);
}

/* the int32 operand at 'arg', or 0 (the checked way raises for it) */
static int operand32 (lua_State *L, int arg, uint32_t *x) {
  int ok;
  lua_Integer n = lua_tointegerx(L, arg, &ok);
  if (!ok || n < INT32_MIN || n > INT32_MAX) return 0;
  *x = (uint32_t)n;
  return 1;
}

static int atomic_op (lua_State *L, int op) {
  uint32_t *c = cell32(L), y;
  sview *v;
  size_t at;
  uint64_t x;
  if (c && operand32(L, 3, &y)) {    /* an int32 view: the short way */
    lua_pushinteger(L, (int32_t)(uint32_t)rmw((unsigned char *)c, 4, op, y));
    return 1;
  }
  v = checkint(L);
  at = checkindex(L, v, 2);
  x = (uint64_t)checkoperand(L, 3, v->kind);
  lua_pushinteger(L, fromraw(v->kind, rmw(v->p + at, kinds[v->kind].size, op, x)));
  return 1;
}

static int v_add (lua_State *L) { return atomic_op(L, OP_ADD); }
static int v_sub (lua_State *L) { return atomic_op(L, OP_SUB); }
static int v_band (lua_State *L) { return atomic_op(L, OP_AND); }
static int v_bor (lua_State *L) { return atomic_op(L, OP_OR); }
static int v_bxor (lua_State *L) { return atomic_op(L, OP_XOR); }
static int v_exchange (lua_State *L) { return atomic_op(L, OP_XCHG); }

static int v_cas (lua_State *L) {
  sview *v = checkint(L);
  size_t at = checkindex(L, v, 2);
  uint64_t e = (uint64_t)checkoperand(L, 3, v->kind);
  uint64_t x = (uint64_t)checkoperand(L, 4, v->kind);
  lua_pushinteger(L, fromraw(v->kind, cas(v->p + at, kinds[v->kind].size, e, x)));
  return 1;
}

static int v_load (lua_State *L) {
  uint32_t *c = cell32(L);
  sview *v;
  size_t at;
  if (c) {
    lua_pushinteger(L, (int32_t)__atomic_load_n(c, __ATOMIC_SEQ_CST));
    return 1;
  }
  v = checkint(L);
  at = checkindex(L, v, 2);
  lua_pushinteger(L, fromraw(v->kind, loadraw(v->p + at, kinds[v->kind].size,
                                               __ATOMIC_SEQ_CST)));
  return 1;
}

/* returns the value stored, as Atomics.store does */
static int v_store (lua_State *L) {
  uint32_t *c = cell32(L), y;
  sview *v;
  size_t at;
  lua_Integer x;
  if (c && operand32(L, 3, &y)) {
    __atomic_store_n(c, y, __ATOMIC_SEQ_CST);
    lua_pushinteger(L, (int32_t)y);
    return 1;
  }
  v = checkint(L);
  at = checkindex(L, v, 2);
  x = checkoperand(L, 3, v->kind);
  storeraw(v->p + at, kinds[v->kind].size, (uint64_t)x, __ATOMIC_SEQ_CST);
  lua_pushinteger(L, x);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** wait, notify, waitAsync
** ======================================================================= */

static const char *const waitres[] = {"ok", "not-equal", "timed-out"};

/* upvalue 2 of wait: this thread's spin window, adapted by every wait */
static int v_wait (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  sview *v = checkwaitable(L);
  size_t at = checkindex(L, v, 2);
  lua_Integer e = checkoperand(L, 3, v->kind);
  double ms = loom__ctx_timeout(L, 4, "wait", 3);
  uint64_t *spin = (uint64_t *)lua_touserdata(L, lua_upvalueindex(2));
  int r = loom__shared_wait(v->s, v->off + at, (int64_t)e, kinds[v->kind].size,
                            c->mb, c->stop ? &c->stop->flag : NULL, ms, spin,
                            c->rt->spin_ns);
  if (r == LOOM_WAIT_STOPPED) loom__ctx_checkstop(L, c);   /* raises */
  lua_pushstring(L, waitres[r == LOOM_WAIT_STOPPED ? LOOM_WAIT_TIMEDOUT : r]);
  return 1;
}

static int v_notify (lua_State *L) {
  sview *v = checkwaitable(L);
  size_t at = checkindex(L, v, 2), count = SIZE_MAX;
  if (!lua_isnoneornil(L, 3)) {
    lua_Number n = luaL_checknumber(L, 3);
    luaL_argcheck(L, n >= 0, 3, "count must be >= 0 (nil or math.huge: all)");
    if (n != HUGE_VAL) count = (size_t)luaL_checkinteger(L, 3);
  }
  lua_pushinteger(L, (lua_Integer)loom__shared_notify(v->s, v->off + at, count));
  return 1;
}

/* An async waiter: a userdata of the waiting thread, holding one
** reference of its block, and, while it is listed, one hold on the
** thread's loop.  Made closed, then listed; closed by the Lua half once
** settled, by cancel (its timeout), or by __gc (a state that closes with
** waits pending).  The hold is released here, in C, so that no failure of
** the Lua half (out of memory) can leave the loop held forever. */
typedef struct swait {
  loom_waiter w;
  loom_shared *s;              /* NULL once closed */
  loom_ctx *c;
  int held;                    /* holds the loop (c->holds) */
} swait;

static void wait_close (swait *a) {
  if (a->s == NULL) return;
  loom__shared_dequeue(a->s, &a->w);
  loom__msg_free(a->w.msg);    /* the WAKE, unless a notify took it */
  a->w.msg = NULL;
  loom__shared_release(a->s);
  a->s = NULL;
  if (a->held) {
    a->held = 0;
    if (!a->c->closed) loom__ctx_ref(a->c, -1);
  }
}

static int w_close (lua_State *L) {
  wait_close((swait *)luaL_checkudata(L, 1, SWAIT));
  return 0;
}

/* h:cancel() -> true if the wait was still listed (then it timed out, and
** is closed), false if a notify came first (its WAKE is on the way). */
static int w_cancel (lua_State *L) {
  swait *a = (swait *)luaL_checkudata(L, 1, SWAIT);
  int was = a->s != NULL && loom__shared_dequeue(a->s, &a->w);
  if (was) wait_close(a);
  lua_pushboolean(L, was);
  return 1;
}

static const char MAKEKEY = 'm';   /* registry: shared.lua's make(h, id|result, ms) */
static const char WAKEKEY = 'w';   /* registry: shared.lua's onwake(id [, result]) */

/* v:waitAsync(i, expected [, timeout_ms]) -> Future of "ok" | "not-equal"
** | "timed-out".  Bad arguments raise here, at once. */
static int v_waitasync (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  sview *v = checkwaitable(L);
  size_t at = checkindex(L, v, 2);
  lua_Integer e = checkoperand(L, 3, v->kind);
  double ms = loom__ctx_timeout(L, 4, "waitAsync", 3);
  int width = kinds[v->kind].size;
  uint64_t id;
  swait *a;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MAKEKEY) != LUA_TFUNCTION) {
    lua_pop(L, 1);                   /* the Lua half loads on first use */
    loom__ctx_require(L, "waitAsync", "loom.shared");
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MAKEKEY) != LUA_TFUNCTION)
      return luaL_error(L, "waitAsync: loom.shared is not loaded in this state");
  }
  if (load_elem(v->s, v->off + at, width) != (int64_t)e || ms == 0) {
    int r = load_elem(v->s, v->off + at, width) != (int64_t)e ? LOOM_WAIT_NOTEQUAL
                                                              : LOOM_WAIT_TIMEDOUT;
    lua_pushnil(L);
    lua_pushstring(L, waitres[r]);
    lua_call(L, 2, 1);
    return 1;
  }
  a = (swait *)lua_newuserdatauv(L, sizeof *a, 0);   /* closed first */
  memset(a, 0, sizeof *a);
  luaL_setmetatable(L, SWAIT);
  id = loom__runtime_newid(c->rt);
  a->w.msg = loom__msg_new(LOOM_MSG_WAKE, id, NULL, NULL);
  if (a->w.msg == NULL) return luaL_error(L, "waitAsync: not enough memory");
  a->w.mb = c->mb;
  a->c = c;
  loom__shared_retain(v->s);
  a->s = v->s;
  /* the Lua half first (its Future, its timer): if it fails, nothing is
  ** listed yet and the userdata is merely collected */
  lua_pushvalue(L, -1);
  lua_insert(L, -3);                         /* a, make, a */
  lua_pushinteger(L, (lua_Integer)id);
  if (ms < 0) lua_pushnil(L);
  else lua_pushnumber(L, (lua_Number)ms);
  lua_call(L, 3, 1);                         /* a, future */
  if (loom__shared_enqueue(a->s, &a->w, v->off + at, (int64_t)e, width) == LOOM_WAIT_OK) {
    loom__ctx_ref(c, 1);                     /* (cannot fail) */
    a->held = 1;
  }
  else {                                     /* changed meanwhile */
    wait_close(a);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &WAKEKEY);
    lua_pushinteger(L, (lua_Integer)id);
    lua_pushstring(L, waitres[LOOM_WAIT_NOTEQUAL]);
    lua_call(L, 2, 0);
  }
  return 1;
}

/* WAKE kind: a notify took the waiter 'target' of this thread.  If the
** Lua half fails (out of memory), the wake is not lost: it is queued
** again for the next turn (as an EXIT is), then the error is raised as
** this thread's uncaught error.  onwake(id [, result]) is idempotent. */
static void on_wake (loom_ctx *c, loom_msg *m, void *ud) {
  lua_State *L = c->L;
  (void)ud;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &WAKEKEY) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushinteger(L, (lua_Integer)m->target);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    loom_msg *again = loom__msg_new(LOOM_MSG_WAKE, m->target, NULL, NULL);
    if (again) loom__mailbox_push(c->mb, again);
    lua_error(L);
  }
}

/* core.sharedwaits(make, onwake): the Lua half of waitAsync. */
static int l_sharedwaits (lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &WAKEKEY);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &MAKEKEY);
  return 0;
}

/* }====================================================================== */

/* {======================================================================
** The buffer and the view
** ======================================================================= */

static int l_sharedbuffer (lua_State *L) {
  size_t size = checksize(L, 1, LOOM_SHARED_MAX, "size");
  loom_shared *s;
  sbuf *b;
  loom__ctx_checkmake(L, "loom.SharedBuffer");
  pushbuf(L, NULL);                        /* closed first */
  b = (sbuf *)lua_touserdata(L, -1);
  s = loom__shared_new(size);
  if (s == NULL)
    return luaL_error(L, "SharedBuffer: cannot allocate %I bytes: not enough memory",
                      (lua_Integer)size);
  b->s = s;
  return 1;
}

static int b_len (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkbuf(L, 1)->s->size);
  return 1;
}

/* buf:read([pos [, len]]): len bytes from 1-based pos (default: to the end) */
static int b_read (lua_State *L) {
  loom_shared *s = checkbuf(L, 1)->s;
  size_t pos = lua_isnoneornil(L, 2) ? 1 : checksize(L, 2, s->size + 1, "position");
  size_t len;
  luaL_argcheck(L, pos >= 1, 2, "position out of range (1.. #buf + 1)");
  len = optsize(L, 3, s->size - (pos - 1), s->size - (pos - 1), "length");
  lua_pushlstring(L, (const char *)s->data + pos - 1, len);
  return 1;
}

/* buf:write(pos, s): the bytes of s at 1-based pos; true */
static int b_write (lua_State *L) {
  loom_shared *s = checkbuf(L, 1)->s;
  size_t pos = checksize(L, 2, s->size + 1, "position"), len;
  const char *str = luaL_checklstring(L, 3, &len);
  luaL_argcheck(L, pos >= 1, 2, "position out of range (1.. #buf + 1)");
  if (len > s->size - (pos - 1))
    luaL_argerror(L, 3, lua_pushfstring(L, "%I bytes at %I do not fit in %I",
                                        (lua_Integer)len, (lua_Integer)pos,
                                        (lua_Integer)s->size));
  memcpy(s->data + pos - 1, str, len);
  lua_pushboolean(L, 1);
  return 1;
}

static int checkkind (lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  int k;
  for (k = 0; k < K_N; k++)
    if (strcmp(name, kinds[k].name) == 0) return k;
  return luaL_argerror(L, arg, lua_pushfstring(L, "unknown kind '%s' (int8, uint8, "
                       "int16, uint16, int32, uint32, int64, float32, float64)", name));
}

/* buf:view(kind [, byteOffset [, length]]) */
static int b_view (lua_State *L) {
  loom_shared *s = checkbuf(L, 1)->s;
  int kind = checkkind(L, 2);
  size_t es = kinds[kind].size;
  size_t off = optsize(L, 3, s->size, 0, "byte offset"), len, room;
  if (off % es)
    luaL_argerror(L, 3, lua_pushfstring(L, "byte offset %I is not a multiple of %d "
                  "(the size of %s)", (lua_Integer)off, (int)es, kinds[kind].name));
  room = (s->size - off) / es;
  if (lua_isnoneornil(L, 4)) {
    if ((s->size - off) % es)
      luaL_argerror(L, 3, lua_pushfstring(L, "the %I bytes from byte offset %I are "
                    "not a multiple of %d (give a length)", (lua_Integer)(s->size - off),
                    (lua_Integer)off, (int)es));
    len = room;
  }
  else len = checksize(L, 4, room, "length");
  pushview(L, s, kind, off, len);   /* raises only before it points at s */
  loom__shared_retain(s);
  return 1;
}

static int b_gc (lua_State *L) {
  sbuf *b = (sbuf *)luaL_checkudata(L, 1, SBUF);
  loom__shared_release(b->s);
  b->s = NULL;
  return 0;
}

static int b_tostring (lua_State *L) {
  sbuf *b = (sbuf *)luaL_checkudata(L, 1, SBUF);
  if (b->s == NULL) lua_pushliteral(L, SBUF " (released)");
  else lua_pushfstring(L, SBUF " (%I bytes): %p", (lua_Integer)b->s->size, (void *)b->s);
  return 1;
}

static int v_len (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkview(L, 1)->len);
  return 1;
}

/* v[i]: the element (nil outside 1..#v, as a table or Node's typed array
** gives); any other key: a method. */
static int v_index (lua_State *L) {
  sview *v = istagged(L) ? (sview *)lua_touserdata(L, 1)
                         : (sview *)luaL_checkudata(L, 1, SVIEW);
  int isint = 0;
  lua_Integer i = 0;
  if (lua_type(L, 2) == LUA_TNUMBER) i = lua_tointegerx(L, 2, &isint);
  if (isint) {
    if (v->s == NULL) released(L, "view");
    if (i >= 1 && (lua_Unsigned)i <= v->len)
      pushelem(L, v, (size_t)(i - 1) * kinds[v->kind].size);
    else lua_pushnil(L);
    return 1;
  }
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

/* v[i] = x: i in 1..#v, x a value of the view's kind */
static int v_newindex (lua_State *L) {
  sview *v = selfview(L);
  int isint = 0;
  lua_Integer i = 0;
  if (lua_type(L, 2) == LUA_TNUMBER) i = lua_tointegerx(L, 2, &isint);
  if (!isint || i < 1 || (lua_Unsigned)i > v->len) {
    if (v->len == 0) return luaL_argerror(L, 2, "view index out of range (the view is empty)");
    return luaL_argerror(L, 2, lua_pushfstring(L, "view index out of range (1..%I)",
                                               (lua_Integer)v->len));
  }
  setelem(L, v, (size_t)(i - 1) * kinds[v->kind].size, 3);
  return 0;
}

static int v_gc (lua_State *L) {
  sview *v = (sview *)luaL_checkudata(L, 1, SVIEW);
  loom__shared_release(v->s);
  v->s = NULL;
  return 0;
}

static int v_tostring (lua_State *L) {
  sview *v = (sview *)luaL_checkudata(L, 1, SVIEW);
  if (v->s == NULL) lua_pushliteral(L, SVIEW " (released)");
  else lua_pushfstring(L, SVIEW " (%s x %I at %I): %p", kinds[v->kind].name,
                  (lua_Integer)v->len, (lua_Integer)v->off, (void *)v->s);
  return 1;
}

/* core.sharedcount(buf | view): holders of its block now, for the specs */
static int l_sharedcount (lua_State *L) {
  loom_shared *s;
  if (luaL_testudata(L, 1, SBUF)) s = checkbuf(L, 1)->s;
  else s = checkview(L, 1)->s;
  lua_pushinteger(L, atomic_load(&s->refs));
  return 1;
}

/* core.sharedwaiters(view, i): waiters listed on v[i] now, for the specs */
static int l_sharedwaiters (lua_State *L) {
  sview *v = checkview(L, 1);
  size_t off = v->off + checkindex(L, v, 2);
  loom_waiter *w;
  lua_Integer n = 0;
  uv_mutex_lock(&v->s->lock);
  for (w = v->s->head[bucket(off)]; w; w = w->next) n += w->off == off;
  uv_mutex_unlock(&v->s->lock);
  lua_pushinteger(L, n);
  return 1;
}

static const luaL_Reg buf_meth[] = {
  {"read", b_read},
  {"write", b_write},
  {"view", b_view},
  {NULL, NULL}
};

static const luaL_Reg buf_meta[] = {
  {"__len", b_len},
  {"__gc", b_gc},
  {"__tostring", b_tostring},
  {"__index", NULL},
  {NULL, NULL}
};

/* light C functions (no upvalue): the cheapest call Lua makes */
static const luaL_Reg atomic_meth[] = {
  {"add", v_add},
  {"sub", v_sub},
  {"band", v_band},
  {"bor", v_bor},
  {"bxor", v_bxor},
  {"exchange", v_exchange},
  {"compareExchange", v_cas},
  {"load", v_load},
  {"store", v_store},
  {"notify", v_notify},
  {NULL, NULL}
};

static const luaL_Reg view_meth[] = {   /* these need the context */
  {"wait", v_wait},
  {"waitAsync", v_waitasync},
  {NULL, NULL}
};

static const luaL_Reg view_meta[] = {
  {"__len", v_len},
  {"__newindex", v_newindex},
  {"__gc", v_gc},
  {"__tostring", v_tostring},
  {NULL, NULL}
};

static const luaL_Reg wait_meth[] = {
  {"cancel", w_cancel},
  {"close", w_close},
  {NULL, NULL}
};

static const luaL_Reg wait_meta[] = {
  {"__gc", w_close},
  {"__index", NULL},
  {NULL, NULL}
};

void loom__shared_open (lua_State *L, loom_ctx *c) {
  loom__createmeta(L, SBUF, buf_meta, buf_meth, 0);
  loom__serial_addhook(L, -1, &buf_hook);
  lua_pop(L, 1);
  loom__createmeta(L, SWAIT, wait_meta, wait_meth, 0);
  lua_pop(L, 1);
  /* the view: __index is a function (elements, then methods) */
  loom__createmeta(L, SVIEW, view_meta, NULL, 0);
  lua_createtable(L, 0, 16);
  luaL_setfuncs(L, atomic_meth, 0);
  lua_pushlightuserdata(L, c);
  *(uint64_t *)lua_newuserdatauv(L, sizeof(uint64_t), 0) = c->rt->spin_ns;
  luaL_setfuncs(L, view_meth, 2);        /* wait, waitAsync: ctx, the spin */
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "SharedView");     /* core.SharedView: the methods */
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__methods");      /* (where the sweep finds them) */
  lua_pushcclosure(L, v_index, 1);
  lua_setfield(L, -2, "__index");
  loom__serial_addhook(L, -1, &view_hook);
  lua_pop(L, 1);
  loom__ctx_setkind(c, LOOM_MSG_WAKE, on_wake, NULL);
  lua_pushcfunction(L, l_sharedbuffer);
  lua_setfield(L, -2, "SharedBuffer");
  lua_pushcfunction(L, l_sharedwaits);
  lua_setfield(L, -2, "sharedwaits");
  lua_pushcfunction(L, l_sharedcount);
  lua_setfield(L, -2, "sharedcount");
  lua_pushcfunction(L, l_sharedwaiters);
  lua_setfield(L, -2, "sharedwaiters");
}

/* }====================================================================== */
