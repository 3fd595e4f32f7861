/*
** floor.c: loomfloor, the floor under bench/pingpong.lua (and, at the
** end, the floors under the atomics' adds, the throughput's sender and
** spawn).
**
** Two Lua states exchange messages through loom's own codec (loom__encode,
** loom__decode) over the fastest queue there is: two single-producer
** single-consumer byte rings, lock-free, and both threads spinning with a
** pause instruction while they wait (no yield, no sleep, no syscall).  What
** is left is the Lua-level work of the benchmark (build the table, encode,
** decode on both sides, the echo handler) plus two cache-line hand-offs.
**
**   local f = loomfloor.pair(echo_source [, ring_bytes])
**   f:post(v)       encode v, copy it into the main -> worker ring
**   v = f:recv()    spin until the echo arrives, decode it in place
**   f:close()       stop and join the worker (also __gc and __close)
**
** The worker is an OS thread with a state of its own (luaL_newstate +
** luaL_openlibs), created on that thread.  echo_source runs there with a
** port as its argument, as bench/workers/echo.lua runs with parentPort:
**   local port = ...
**   port:on("message", function(m) port:postMessage(m) end)
** The worker then spins on its ring and calls the handler with each decoded
** message, as loom's delivery fast path calls a sole 'message' listener.
** An error in the worker ends it; the main side's next call raises it.
**
** The main side's post raises when its ring is full (it never waits, so
** the two sides cannot wait on each other); the worker's post waits.
** Messages larger than half the ring raise.  Do not call f:recv() or
** f:close() from a finalizer: a finalizer may run while recv decodes.
*/
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>
#include "loom_lua.h"

/* {======================================================================
** The codec: the only two calls into it.
** ======================================================================= */

/* Encode the value at idx, appending to b; -1 with a message in err. */
static int fl_encode (lua_State *L, int idx, loom_buf *b, char *err, size_t errsz) {
  return loom__encode(L, idx, b, NULL, "msg", err, errsz);
}

/* Push the value in p[0..len); -1 with a message pushed instead. */
static int fl_decode (lua_State *L, const unsigned char *p, size_t len) {
  return loom__decode(L, p, len, NULL, 0);
}

/* }====================================================================== */

int luaopen_loomfloor(lua_State *L);

#define CL 64                       /* cache line */
#define RING_DEFAULT (64u << 10)
#define RING_MIN 4096u
#define RING_MAX (1u << 30)
#define STACK_BYTES (4u << 20)      /* as loom's default worker stack */
#define HDR 8                       /* record header: u32 length, 4 pad */
#define WRAP UINT32_MAX             /* header length: rest of the lap is pad */
#define PAIR_MT "loomfloor.pair"
#define PORT_MT "loomfloor.port"

static inline void relax (void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* {======================================================================
** SPSC byte ring.  head and tail count bytes since the start (never wrap
** in practice); each sits on its own line, and each side keeps its own
** copy of its index and the last value of the other's on a private line.
** A record is an 8-byte header (payload length) and the payload, padded
** to 8.  A record never straddles the end: the producer writes a WRAP
** header there and starts again at 0, published with the record.
** ======================================================================= */

typedef struct ring {
  alignas(CL) atomic_size_t head;   /* written by the producer */
  alignas(CL) atomic_size_t tail;   /* written by the consumer */
  alignas(CL) size_t p_head;        /* producer only: head */
  size_t p_tail;                    /* producer only: tail last seen */
  alignas(CL) size_t c_tail;        /* consumer only: tail */
  size_t c_head;                    /* consumer only: head last seen */
  alignas(CL) unsigned char *data;  /* immutable once made */
  size_t cap;                       /* a power of 2 */
} ring;

static size_t recsize (size_t n) {
  return HDR + ((n + 7) & ~(size_t)7);
}

/* Producer: append n bytes as one record.  1 when the ring has no room
** (when 'gone' is NULL), or when *gone became non-zero while waiting for
** room; else 0.  The caller checked recsize(n) <= cap / 2: then a record
** and the pad before it never take more than the whole ring. */
static int ring_put (ring *r, const void *p, size_t n, const atomic_int *gone) {
  size_t need = recsize(n), pos = r->p_head, off = pos & (r->cap - 1), skip = 0;
  uint32_t len = (uint32_t)n;
  if (r->cap - off < need) skip = r->cap - off;    /* >= HDR: off is 8-aligned */
  while (r->cap - (pos - r->p_tail) < skip + need) {
    r->p_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (r->cap - (pos - r->p_tail) >= skip + need) break;
    if (gone == NULL || atomic_load_explicit(gone, memory_order_acquire)) return 1;
    relax();
  }
  if (skip) {
    uint32_t w = WRAP;
    memcpy(r->data + off, &w, sizeof w);
    pos += skip;
    off = 0;
  }
  memcpy(r->data + off, &len, sizeof len);
  memcpy(r->data + off + HDR, p, n);
  r->p_head = pos + need;
  atomic_store_explicit(&r->head, r->p_head, memory_order_release);
  return 0;
}

/* Consumer: the next record's payload and length, or NULL if none yet. */
static const unsigned char *ring_peek (ring *r, size_t *n) {
  size_t off;
  uint32_t len;
  if (r->c_head == r->c_tail) {
    r->c_head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (r->c_head == r->c_tail) return NULL;
  }
  off = r->c_tail & (r->cap - 1);
  memcpy(&len, r->data + off, sizeof len);
  if (len == WRAP) {                 /* the record follows at 0 */
    r->c_tail += r->cap - off;
    off = 0;
    memcpy(&len, r->data, sizeof len);
  }
  *n = len;
  return r->data + off + HDR;
}

/* Consumer: done with the record ring_peek returned (n bytes). */
static void ring_pop (ring *r, size_t n) {
  r->c_tail += recsize(n);
  atomic_store_explicit(&r->tail, r->c_tail, memory_order_release);
}

/* }====================================================================== */

/* {======================================================================
** A pair: the two rings and the worker.  Made and freed by the main side;
** the worker uses it between its start and its join.
** ======================================================================= */

typedef struct pair {
  ring down;                       /* main -> worker */
  ring up;                         /* worker -> main */
  alignas(CL) atomic_int stop;     /* main: close() was called */
  alignas(CL) atomic_int ready;    /* worker: the echo source ran */
  atomic_int done;                 /* worker: finished; err is set */
  char err[512];                   /* worker's error ("" if none) */
  alignas(CL) loom_buf wbuf;       /* worker only: encoder buffer */
  alignas(CL) loom_buf mbuf;       /* main only: encoder buffer */
  uv_thread_t thread;
  char *src;                       /* echo source, read by the worker */
  size_t srclen;
} pair;

static void pair_free (pair *p) {
  free(p->down.data);
  free(p->up.data);
  loom__buf_free(&p->wbuf);
  loom__buf_free(&p->mbuf);
  free(p->src);
  free(p);
}

static int ring_init (ring *r, size_t cap) {
  atomic_init(&r->head, 0);
  atomic_init(&r->tail, 0);
  r->p_head = r->p_tail = r->c_tail = r->c_head = 0;
  r->cap = cap;
  r->data = (unsigned char *)aligned_alloc(CL, cap);
  return r->data ? 0 : -1;
}

static pair *pair_new (size_t cap, const char *src, size_t srclen) {
  pair *p = (pair *)aligned_alloc(CL, sizeof(pair));   /* sizeof: a multiple of CL */
  int r;
  if (p == NULL) return NULL;
  memset(p, 0, sizeof *p);
  atomic_init(&p->stop, 0);
  atomic_init(&p->ready, 0);
  atomic_init(&p->done, 0);
  p->src = (char *)malloc(srclen + 1);
  r = ring_init(&p->down, cap);
  r |= ring_init(&p->up, cap);
  if (r != 0 || p->src == NULL) {
    pair_free(p);
    return NULL;
  }
  memcpy(p->src, src, srclen);
  p->src[srclen] = '\0';
  p->srclen = srclen;
  return p;
}

/* }====================================================================== */

/* {======================================================================
** Worker side
** ======================================================================= */

typedef struct port {
  pair *p;
  int handler;                     /* registry ref of the 'message' handler */
} port;

/* Methods are closures with the metatable as upvalue 1: checking it costs
** a pointer comparison, as loom's postMessage checks its handle. */
static void *checkself (lua_State *L, const char *what) {
  void *u = lua_touserdata(L, 1);
  if (u == NULL || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, 1, what);
  lua_pop(L, 1);
  return u;
}

/* port:postMessage(v): encode v and append it to the worker -> main ring;
** waits while the ring is full, raises once close() was called. */
static int port_post (lua_State *L) {
  port *pt = (port *)checkself(L, "loomfloor port");
  pair *p = pt->p;
  char err[512];
  luaL_checkany(L, 2);
  p->wbuf.len = 0;
  if (fl_encode(L, 2, &p->wbuf, err, sizeof err)) return luaL_error(L, "%s", err);
  if (recsize(p->wbuf.len) > p->up.cap / 2)
    return luaL_error(L, "message of %d bytes is over half the floor's ring",
                      (int)p->wbuf.len);
  if (ring_put(&p->up, p->wbuf.p, p->wbuf.len, &p->stop))
    return luaL_error(L, "loomfloor: closed");
  return 0;
}

/* port:on("message", fn): fn is called with every message. */
static int port_on (lua_State *L) {
  port *pt = (port *)checkself(L, "loomfloor port");
  const char *ev = luaL_checkstring(L, 2);
  luaL_argcheck(L, strcmp(ev, "message") == 0, 2, "only 'message' is supported");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  luaL_unref(L, LUA_REGISTRYINDEX, pt->handler);
  pt->handler = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* The worker's whole life, in a protected call: set up, run the echo
** source, then spin, decode and call the handler until close(). */
static int worker_run (lua_State *L) {
  pair *p = (pair *)lua_touserdata(L, 1);
  port *pt;
  static const luaL_Reg methods[] = {
    {"postMessage", port_post}, {"post", port_post}, {"on", port_on}, {NULL, NULL}
  };
  const luaL_Reg *m;
  luaL_openlibs(L);
  lua_settop(L, 0);
  pt = (port *)lua_newuserdatauv(L, sizeof *pt, 0);          /* 1 */
  pt->p = p;
  pt->handler = LUA_NOREF;
  luaL_newmetatable(L, PORT_MT);                             /* 2 */
  lua_newtable(L);
  for (m = methods; m->name; m++) {
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, m->func, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_setfield(L, 2, "__index");
  lua_setmetatable(L, 1);
  if (luaL_loadbufferx(L, p->src, p->srclen, "=(floor echo)", "t") != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 0);
  if (pt->handler == LUA_NOREF)
    return luaL_error(L, "the echo source set no 'message' handler (port:on)");
  atomic_store_explicit(&p->ready, 1, memory_order_release);
  for (;;) {
    size_t n;
    const unsigned char *msg;
    while ((msg = ring_peek(&p->down, &n)) == NULL) {
      if (atomic_load_explicit(&p->stop, memory_order_relaxed)) return 0;
      relax();
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, pt->handler);
    if (fl_decode(L, msg, n)) {
      ring_pop(&p->down, n);
      return lua_error(L);
    }
    ring_pop(&p->down, n);
    lua_call(L, 1, 0);
  }
}

static void worker_thread (void *arg) {
  pair *p = (pair *)arg;
  lua_State *L = luaL_newstate();
  if (L == NULL)
    snprintf(p->err, sizeof p->err, "cannot create a Lua state: not enough memory");
  else {
    lua_pushcfunction(L, worker_run);
    lua_pushlightuserdata(L, p);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      const char *e = lua_tostring(L, -1);
      snprintf(p->err, sizeof p->err, "%s", e ? e : "(error object is not a string)");
    }
    lua_close(L);
  }
  atomic_store_explicit(&p->done, 1, memory_order_release);
}

/* }====================================================================== */

/* {======================================================================
** Main side
** ======================================================================= */

typedef struct handle {
  pair *p;                         /* NULL once closed */
  int busy;                        /* inside recv's decode */
} handle;

static handle *checkopen (lua_State *L) {
  handle *h = (handle *)checkself(L, "loomfloor pair");
  if (h->p == NULL) luaL_error(L, "loomfloor pair is closed");
  return h;
}

static void stop (handle *h) {
  pair *p = h->p;
  if (p == NULL) return;
  h->p = NULL;
  atomic_store_explicit(&p->stop, 1, memory_order_release);
  uv_thread_join(&p->thread);
  pair_free(p);
}

static int worker_failed (lua_State *L, pair *p) {
  return luaL_error(L, "loomfloor worker stopped: %s", p->err[0] ? p->err : "(no error)");
}

/* f:post(v) */
static int m_post (lua_State *L) {
  handle *h = checkopen(L);
  pair *p = h->p;
  char err[512];
  luaL_checkany(L, 2);
  p->mbuf.len = 0;
  if (fl_encode(L, 2, &p->mbuf, err, sizeof err)) return luaL_error(L, "%s", err);
  if (recsize(p->mbuf.len) > p->down.cap / 2)
    return luaL_error(L, "message of %d bytes is over half the floor's ring",
                      (int)p->mbuf.len);
  if (atomic_load_explicit(&p->done, memory_order_acquire)) return worker_failed(L, p);
  if (ring_put(&p->down, p->mbuf.p, p->mbuf.len, NULL))
    return luaL_error(L, "loomfloor: the ring is full (receive the echoes first)");
  return 0;
}

/* f:recv(): spins until a message arrives; decodes it in place. */
static int m_recv (lua_State *L) {
  handle *h = checkopen(L);
  pair *p = h->p;
  const unsigned char *msg;
  size_t n;
  int st;
  if (h->busy) return luaL_error(L, "loomfloor: recv() re-entered (from a finalizer?)");
  while ((msg = ring_peek(&p->up, &n)) == NULL) {
    if (atomic_load_explicit(&p->done, memory_order_acquire)) {
      if ((msg = ring_peek(&p->up, &n)) != NULL) break;
      return worker_failed(L, p);
    }
    relax();
  }
  h->busy = 1;
  st = fl_decode(L, msg, n);
  h->busy = 0;
  ring_pop(&p->up, n);
  if (st) return lua_error(L);
  return 1;
}

/* f:close(): stop and join the worker.  Its error, if it had one, was
** raised by post or recv. */
static int m_close (lua_State *L) {
  handle *h = (handle *)checkself(L, "loomfloor pair");
  if (h->busy) return luaL_error(L, "loomfloor: close() inside recv() (from a finalizer?)");
  stop(h);
  return 0;
}

/* __gc: never runs inside this pair's recv (the pair is on its stack). */
static int m_gc (lua_State *L) {
  handle *h = (handle *)lua_touserdata(L, 1);
  stop(h);
  return 0;
}

/* loomfloor.pair(echo_source [, ring_bytes]) */
static int l_pair (lua_State *L) {
  size_t srclen;
  const char *src = luaL_checklstring(L, 1, &srclen);
  lua_Integer cap = luaL_optinteger(L, 2, RING_DEFAULT);
  handle *h;
  pair *p;
  uv_thread_options_t opt;
  int r;
  luaL_argcheck(L, cap >= RING_MIN && cap <= RING_MAX && (cap & (cap - 1)) == 0, 2,
                "ring size must be a power of 2 from 4096 to 2^30");
  h = (handle *)lua_newuserdatauv(L, sizeof *h, 0);
  h->p = NULL;
  h->busy = 0;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setmetatable(L, -2);
  p = pair_new((size_t)cap, src, srclen);
  if (p == NULL) return luaL_error(L, "loomfloor: not enough memory");
  opt.flags = UV_THREAD_HAS_STACK_SIZE;
  opt.stack_size = STACK_BYTES;
  r = uv_thread_create_ex(&p->thread, &opt, worker_thread, p);
  if (r != 0) {
    pair_free(p);
    return luaL_error(L, "loomfloor: cannot start a thread: %s", uv_strerror(r));
  }
  h->p = p;
  while (!atomic_load_explicit(&p->ready, memory_order_acquire)) {
    if (atomic_load_explicit(&p->done, memory_order_acquire)) {
      lua_pushfstring(L, "loomfloor worker failed: %s", p->err);
      stop(h);
      return lua_error(L);
    }
    relax();
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The floor under the atomics (bench/floor_atomics.lua): a Lua call of a C
** function that adds to an int32 at a raw address, checking nothing.  It
** is what any Lua binding of an atomic add costs at least.
**   local cells = loomfloor.cells(n)   n zeroed int32 cells (a userdata:
**                                      keep it while the address is used)
**   local addr = loomfloor.addr(cells) the address, an integer that can
**                                      go to another thread in a message
**   loomfloor.add(addr, i, d)          atomic add d to cell i (1-based);
**                                      returns the old value
**   loomfloor.load(addr, i)
** ======================================================================= */

static int l_cells (lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  void *p;
  luaL_argcheck(L, n > 0 && n <= 1 << 20, 1, "1..2^20 cells");
  p = lua_newuserdatauv(L, (size_t)n * sizeof(int32_t) + CL, 0);
  memset(p, 0, (size_t)n * sizeof(int32_t) + CL);
  return 1;
}

static int l_addr (lua_State *L) {
  uintptr_t a = (uintptr_t)lua_touserdata(L, 1);
  luaL_argcheck(L, a != 0 && lua_type(L, 1) == LUA_TUSERDATA, 1, "cells expected");
  lua_pushinteger(L, (lua_Integer)((a + CL - 1) & ~(uintptr_t)(CL - 1)));   /* own line */
  return 1;
}

static _Atomic int32_t *cell (lua_State *L) {
  return (_Atomic int32_t *)(uintptr_t)lua_tointeger(L, 1) + (lua_tointeger(L, 2) - 1);
}

static int l_add (lua_State *L) {
  lua_pushinteger(L, atomic_fetch_add(cell(L), (int32_t)lua_tointeger(L, 3)));
  return 1;
}

static int l_load (lua_State *L) {
  lua_pushinteger(L, atomic_load(cell(L)));
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The floor under the sender of c. throughput (bench/floor_throughput.lua):
** a minimal encoder, the least any encoder of a Lua value must do: walk it
** through the Lua API (one lua_next pass per table) and write tags and
** bytes, loom's format, into a buffer reused from call to call.  No
** reference table (a cycle or a shared table is not found: only the depth
** stops it), no error path, no clone hooks.
**   n = loomfloor.minencode(v)   the bytes written
**   n = loomfloor.encode(v)      the same value through loom__encode, into
**                                a reused buffer (what a post encodes)
** ======================================================================= */

typedef struct minenc { unsigned char *p; size_t len, cap; } minenc;

static unsigned char *room (minenc *e, size_t n) {
  if (e->cap - e->len < n) {
    size_t ncap = e->cap ? e->cap * 2 : 256;
    unsigned char *np;
    while (ncap - e->len < n) ncap *= 2;
    if ((np = (unsigned char *)realloc(e->p, ncap)) == NULL) return NULL;
    e->p = np;
    e->cap = ncap;
  }
  return e->p + e->len;
}

static int minvalue (lua_State *L, minenc *e, int idx, int depth) {
  unsigned char *w;
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
      if ((w = room(e, 11)) == NULL) return -1;
      if (lua_isinteger(L, idx)) {
        lua_Integer n = lua_tointeger(L, idx);
        uint64_t z;
        if (n >= 0 && n < 64) { *w = (unsigned char)(0x40 + n); e->len++; return 0; }
        z = ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
        *w++ = 0x03;
        e->len++;
        do { *w++ = (unsigned char)((z & 0x7f) | (z > 0x7f ? 0x80 : 0)); e->len++; z >>= 7; } while (z);
      }
      else {
        double d = (double)lua_tonumber(L, idx);
        *w = 0x04;
        memcpy(w + 1, &d, sizeof d);
        e->len += 9;
      }
      return 0;
    case LUA_TSTRING: {
      size_t n;
      const char *str = lua_tolstring(L, idx, &n);
      if ((w = room(e, n + 11)) == NULL) return -1;
      if (n < 128) { *w++ = (unsigned char)(0x80 + n); e->len++; }
      else {
        size_t z = n;
        *w++ = 0x05;
        e->len++;
        do { *w++ = (unsigned char)((z & 0x7f) | (z > 0x7f ? 0x80 : 0)); e->len++; z >>= 7; } while (z);
      }
      memcpy(w, str, n);
      e->len += n;
      return 0;
    }
    case LUA_TTABLE: {
      uint32_t narr = 0, nrec = 0;
      size_t at;
      if (depth > 100 || !lua_checkstack(L, 3) || (w = room(e, 9)) == NULL) return -1;
      *w = 0x06;
      at = e->len + 1;
      e->len += 9;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1;
        if (nrec == 0 && lua_isinteger(L, k) && lua_tointeger(L, k) == (lua_Integer)narr + 1) {
          if (minvalue(L, e, k + 1, depth + 1)) return -1;
          narr++;
        }
        else {
          if (minvalue(L, e, k, depth + 1) || minvalue(L, e, k + 1, depth + 1)) return -1;
          nrec++;
        }
        lua_pop(L, 1);
      }
      memcpy(e->p + at, &narr, 4);
      memcpy(e->p + at + 4, &nrec, 4);
      return 0;
    }
    case LUA_TBOOLEAN:
      if ((w = room(e, 1)) == NULL) return -1;
      *w = lua_toboolean(L, idx) ? 0x02 : 0x01;
      e->len++;
      return 0;
    default:
      if ((w = room(e, 1)) == NULL) return -1;
      *w = 0x00;
      e->len++;
      return 0;
  }
}

/* the two encoders' buffers: the minimal one's own (libc's realloc here),
** loom's grown by loom's buffer code (its heap, mimalloc's or not) */
typedef struct encbufs { minenc m; loom_buf b; } encbufs;

static int encgc (lua_State *L) {
  encbufs *e = (encbufs *)lua_touserdata(L, 1);
  free(e->m.p);
  loom__buf_free(&e->b);
  memset(e, 0, sizeof *e);
  return 0;
}

static int l_minencode (lua_State *L) {
  minenc *e = &((encbufs *)lua_touserdata(L, lua_upvalueindex(1)))->m;
  int top = lua_gettop(L);
  luaL_checkany(L, 1);
  e->len = 0;
  if ((e->p == NULL && room(e, 1) == NULL) || (e->p[e->len++] = 0x10, minvalue(L, e, 1, 0)))
    return luaL_error(L, "minencode: too deep, or not enough memory");
  lua_settop(L, top);
  lua_pushinteger(L, (lua_Integer)e->len);
  return 1;
}

static int l_encode (lua_State *L) {
  loom_buf *b = &((encbufs *)lua_touserdata(L, lua_upvalueindex(1)))->b;
  char err[256];
  luaL_checkany(L, 1);
  b->len = 0;
  if (fl_encode(L, 1, b, err, sizeof err)) return luaL_error(L, "%s", err);
  lua_pushinteger(L, (lua_Integer)b->len);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The floor under a. spawn (bench/floor_spawn.lua): what any worker with a
** thread, a Lua state and an event loop of its own costs to start and to
** stop.  A thread is created; on it luaL_newstate + luaL_openlibs +
** uv_loop_init, then it says it is up (an atomic store its creator spins
** on: the floor of "first echo"), then uv_loop_close + lua_close, and it
** ends; the creator joins it.
**   up_ms, joined_ms = loomfloor.spawn()   both from just before the create
** ======================================================================= */

typedef struct spawnrec {
  atomic_int up;             /* 0, then 1 (ok) or -1 (no state or loop) */
} spawnrec;

static void spawn_body (void *arg) {
  spawnrec *r = (spawnrec *)arg;
  uv_loop_t loop;
  lua_State *L = luaL_newstate();
  int loopok = uv_loop_init(&loop) == 0;
  if (L) luaL_openlibs(L);
  atomic_store_explicit(&r->up, L && loopok ? 1 : -1, memory_order_release);
  if (loopok) uv_loop_close(&loop);
  if (L) lua_close(L);
}

static int l_spawn (lua_State *L) {
  spawnrec r;
  uv_thread_t t;
  uint64_t t0, t1, t2;
  int up;
  atomic_init(&r.up, 0);
  t0 = uv_hrtime();
  if (uv_thread_create(&t, spawn_body, &r)) return luaL_error(L, "spawn: cannot create a thread");
  while ((up = atomic_load_explicit(&r.up, memory_order_acquire)) == 0) relax();
  t1 = uv_hrtime();
  uv_thread_join(&t);
  t2 = uv_hrtime();
  if (up < 0) return luaL_error(L, "spawn: no Lua state or no loop (out of memory?)");
  lua_pushnumber(L, (lua_Number)(t1 - t0) / 1e6);
  lua_pushnumber(L, (lua_Number)(t2 - t0) / 1e6);
  return 2;
}

/* }====================================================================== */

int luaopen_loomfloor (lua_State *L) {
  static const luaL_Reg methods[] = {
    {"post", m_post}, {"recv", m_recv}, {"close", m_close}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"cells", l_cells}, {"addr", l_addr}, {"add", l_add}, {"load", l_load},
    {"spawn", l_spawn}, {NULL, NULL}
  };
  const luaL_Reg *m;
  lua_newtable(L);                          /* module */
  luaL_newmetatable(L, PAIR_MT);            /* its metatable */
  lua_newtable(L);
  for (m = methods; m->name; m++) {
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, m->func, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, m_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, m_close, 1);
  lua_setfield(L, -2, "__close");
  lua_pushcclosure(L, l_pair, 1);
  lua_setfield(L, -2, "pair");
  luaL_setfuncs(L, funcs, 0);
  {                                    /* one buffer for both encoders */
    encbufs *e = (encbufs *)lua_newuserdatauv(L, sizeof *e, 0);
    memset(e, 0, sizeof *e);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, encgc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_minencode, 1);
    lua_setfield(L, -3, "minencode");
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");
  }
  return 1;
}
