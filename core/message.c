/*
** message.c: messages.  A message is an encoded value (bytes) and the
** references its bytes point at; it moves sender -> mailbox -> receiver
** and whoever frees it releases the references still in it, so a value
** dropped undelivered (closed mailbox, dead worker) leaks nothing.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_int.h"

#define MSG_INLINE_MAX 4096   /* larger payloads move their buffer */

#define POOL_MAX 64            /* batches a runtime's pool keeps */

/* A block of room LOOM_MSG_REUSE circulates: it is kept in the cache of
** the thread that took delivery of it, and in the runtime's pool, so it
** outlives the worker that made it.  Such blocks are libc's.  On
** mimalloc's heap of a worker, one of them left alive keeps the worker's
** segment abandoned, and mimalloc 2.0.9 then walks its abandoned list
** 1024 times at every later thread exit: 220k instructions, a fifth of
** what a worker that boots, echoes once and exits costs.  Every other
** block is freed by the thread that reads it and stays on mimalloc's. */
static loom_msg *newblock (size_t room) {
  size_t n = sizeof(loom_msg) + room;
  return (loom_msg *)(room == LOOM_MSG_REUSE ? loom__libc_malloc(n) : malloc(n));
}

static void freeblock (loom_msg *m) {
  if (m->room == LOOM_MSG_REUSE) loom__libc_free(m);
  else free(m);
}

static void freeblocks (loom_msg *m) {
  while (m) {
    loom_msg *next = m->next;
    freeblock(m);
    m = next;
  }
}

/* a batch of spare blocks for this thread: one it took before, or every
** batch the pool has */
static int refill (loom_msgcache *k) {
  loom_msg *b = k->batches;
  if (b == NULL && k->pool && atomic_load_explicit(&k->pool->top, memory_order_relaxed)) {
    loom_msg *x;
    int n = 0;
    b = atomic_exchange_explicit(&k->pool->top, NULL, memory_order_acquire);
    for (x = b; x; x = x->batch) n++;
    atomic_fetch_sub_explicit(&k->pool->n, n, memory_order_relaxed);
  }
  if (b == NULL) return 0;
  k->batches = b->batch;
  k->head = b;
  k->n = LOOM_MSG_KEEP;
  return 1;
}

loom_msg *loom__msg_newc (loom_msgcache *k, int kind, uint64_t target, loom_buf *b,
                          loom_refs *refs) {
  size_t len = b ? b->len : 0;
  loom_ref *rv = NULL;
  loom_msg *m;
  if (refs && refs->n) {     /* the references get an array of their own */
    rv = (loom_ref *)malloc(refs->n * sizeof *rv);
    if (rv == NULL) return NULL;
  }
  if (len <= LOOM_MSG_REUSE && k && (k->head || refill(k))) {
    m = k->head;             /* a block this thread took delivery of */
    k->head = m->next;
    k->n--;
    m->data = m->inline_;
    m->cap = 0;
    if (len) memcpy(m->inline_, b->p, len);
  }
  else if (len <= MSG_INLINE_MAX) {
    /* small ones get the room any small one needs, so the block can be reused */
    size_t room = len <= LOOM_MSG_REUSE ? LOOM_MSG_REUSE : len;
    m = newblock(room);
    if (m == NULL) { free(rv); return NULL; }
    m->room = (uint32_t)room;
    m->data = m->inline_;
    m->cap = 0;
    if (len) memcpy(m->inline_, b->p, len);
  }
  else {
    m = newblock(0);
    if (m == NULL) { free(rv); return NULL; }
    m->room = 0;
    m->data = b->p;  /* the buffer now belongs to the message */
    m->cap = b->cap;
    b->p = NULL;
    b->len = b->cap = 0;
  }
  m->next = NULL;
  m->target = target;
  m->kind = kind;
  m->aux = 0;
  m->flow = 0;
  m->len = len;
  m->refs = rv;
  m->nrefs = 0;
  m->stream = NULL;
  if (rv) {
    memcpy(rv, refs->v, refs->n * sizeof *rv);
    m->nrefs = refs->n;
    refs->n = 0;              /* moved: the list no longer owns them */
  }
  return m;
}

loom_msg *loom__msg_new (int kind, uint64_t target, loom_buf *b, loom_refs *refs) {
  return loom__msg_newc(NULL, kind, target, b, refs);
}

void loom__msg_freec (loom_msgcache *k, loom_msg *m) {
  uint32_t i;
  if (m == NULL) return;
  if (m->stream) {
    loom__stream_release(m->stream);
    m->stream = NULL;
  }
  for (i = 0; i < m->nrefs; i++)
    if (m->refs[i].vt) m->refs[i].vt->release(m->refs[i].p);
  free(m->refs);
  if (m->data != m->inline_) loom__bytes_free(m->data, m->cap);
  if (k && m->room == LOOM_MSG_REUSE) {
    if (k->n >= LOOM_MSG_KEEP) {   /* full: the cache goes to the pool whole */
      loom_msg *b = k->head, *top;
      loom_msgpool *pool = k->pool;
      if (pool == NULL || atomic_load_explicit(&pool->n, memory_order_relaxed) >= POOL_MAX) {
        freeblock(m);
        return;
      }
      atomic_fetch_add_explicit(&pool->n, 1, memory_order_relaxed);
      top = atomic_load_explicit(&pool->top, memory_order_relaxed);
      do b->batch = top;
      while (!atomic_compare_exchange_weak_explicit(&pool->top, &top, b,
                                                    memory_order_release,
                                                    memory_order_relaxed));
      k->head = NULL;
      k->n = 0;
    }
    m->refs = NULL;
    m->nrefs = 0;
    m->next = k->head;
    k->head = m;
    k->n++;
  }
  else freeblock(m);
}

void loom__msg_free (loom_msg *m) { loom__msg_freec(NULL, m); }

loom_msg *loom__msg_newstream (loom_msgcache *k, int kind, loom_stream *s) {
  loom_msg *m = loom__msg_newc(k, kind, 0, NULL, NULL);
  if (m) m->stream = s;
  return m;
}

void loom__msgcache_free (loom_msgcache *k) {
  freeblocks(k->head);
  k->head = NULL;
  k->n = 0;
  while (k->batches) {
    loom_msg *b = k->batches;
    k->batches = b->batch;
    freeblocks(b);
  }
}

void loom__msgpool_init (void *pool, const void *key) {
  loom_msgpool *p = (loom_msgpool *)pool;
  (void)key;
  atomic_init(&p->top, NULL);
  atomic_init(&p->n, 0);
}

void loom__msgpool_fini (void *pool) {
  loom_msgpool *p = (loom_msgpool *)pool;
  loom_msg *b = atomic_exchange(&p->top, NULL);
  while (b) {
    loom_msg *next = b->batch;
    freeblocks(b);
    b = next;
  }
}

void loom__msg_freelist (loom_msg *m) {
  while (m) {
    loom_msg *next = m->next;
    loom__msg_free(m);
    m = next;
  }
}

loom_msg *loom__msg_extract (loom_msg **head, loom_msg **tail, uint64_t target) {
  loom_msg *out = NULL, **o = &out, **pp, *last = NULL;
  for (pp = head; *pp; ) {
    loom_msg *m = *pp;
    if (m->target == target) {
      *pp = m->next;
      m->next = NULL;
      *o = m;
      o = &m->next;
    }
    else {
      last = m;
      pp = &m->next;
    }
  }
  *tail = last;
  return out;
}
