/*
** stream.c: a message whose bytes arrive in chunks.  The sender posts the
** message as soon as its first chunk is encoded and appends the others
** as it goes; the receiver decodes each chunk as it arrives, so the two
** threads overlap on a large value.  One sender appends, one receiver
** reads; the stream ends done (with the value's references) or aborted
** (the encoder failed: the receiver drops the partial value, which no
** user code has seen).  Knows no Lua.
*/
#include <stdlib.h>
#include "loom_int.h"

#define SPIN_NS 20000u          /* a reader spins this long, then sleeps */
#define SLEEP_NS 1000000u       /* a sleeping reader looks at its stop flag */

loom_stream *loom__stream_new (void) {
  loom_stream *s = (loom_stream *)calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  if (uv_mutex_init(&s->lock)) { free(s); return NULL; }
  if (uv_cond_init(&s->cond)) {
    uv_mutex_destroy(&s->lock);
    free(s);
    return NULL;
  }
  atomic_init(&s->refs, 2);     /* the sender's and the message's */
  atomic_init(&s->state, LOOM_STREAM_OPEN);
  atomic_init(&s->waiting, 0);
  atomic_init(&s->first.next, NULL);
  s->tail = &s->first;
  s->head = &s->first;
  return s;
}

static void freechunks (loom_chunk *c) {
  while (c) {
    loom_chunk *next = atomic_load_explicit(&c->next, memory_order_relaxed);
    loom__bytes_free(c->p, c->cap);
    free(c);
    c = next;
  }
}

void loom__stream_release (loom_stream *s) {
  uint32_t i;
  /* acq_rel: the last holder sees the other's writes (chunks, head) */
  if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (s->head == &s->first)
    freechunks(atomic_load_explicit(&s->first.next, memory_order_relaxed));
  else freechunks(s->head);
  for (i = 0; i < s->nrefs; i++)
    if (s->refs_v[i].vt) s->refs_v[i].vt->release(s->refs_v[i].p);
  free(s->refs_v);
  uv_cond_destroy(&s->cond);
  uv_mutex_destroy(&s->lock);
  free(s);
}

/* the reader may sleep: wake it (it set 'waiting' before its last look,
** the writer published before this load: one of the two sees the other) */
static void wake (loom_stream *s) {
  if (atomic_load(&s->waiting)) {
    uv_mutex_lock(&s->lock);
    uv_cond_signal(&s->cond);
    uv_mutex_unlock(&s->lock);
  }
}

int loom__stream_append (loom_stream *s, loom_buf *b) {
  loom_chunk *c;
  if (b->len == 0) return 0;
  if ((c = (loom_chunk *)malloc(sizeof *c)) == NULL) return -1;
  atomic_init(&c->next, NULL);
  c->p = b->p;
  c->len = b->len;
  c->cap = b->cap;
  b->p = NULL;
  b->len = b->cap = 0;
  atomic_store(&s->tail->next, c);    /* publishes the chunk's bytes */
  s->tail = c;
  wake(s);
  return 0;
}

void loom__stream_end (loom_stream *s, int ok, loom_refs *refs) {
  if (ok && refs && refs->n) {        /* moved: the stream owns them now */
    s->refs_v = refs->v;
    s->nrefs = (uint32_t)refs->n;
    refs->v = NULL;
    refs->n = refs->cap = 0;
  }
  atomic_store(&s->state, ok ? LOOM_STREAM_DONE : LOOM_STREAM_ABORTED);
  wake(s);
  loom__stream_release(s);            /* the sender's count */
}

/* Wait until ready(s) or the stream is no longer open; 0, or -2 when
** *stop was set first. */
static int waitfor (loom_stream *s, int (*ready)(loom_stream *), const atomic_int *stop) {
  uint64_t start = uv_hrtime();
  while (!ready(s)) {
    if (stop && atomic_load_explicit(stop, memory_order_relaxed)) return -2;
    if (uv_hrtime() - start < SPIN_NS) {
      loom__cpu_relax();
      continue;
    }
    uv_mutex_lock(&s->lock);
    atomic_store(&s->waiting, 1);
    if (!ready(s)) uv_cond_timedwait(&s->cond, &s->lock, SLEEP_NS);
    atomic_store(&s->waiting, 0);
    uv_mutex_unlock(&s->lock);
  }
  return 0;
}

/* (sequentially consistent: under the lock, after 'waiting' is stored) */
static int hasnext (loom_stream *s) {
  return atomic_load(&s->head->next) != NULL || atomic_load(&s->state) != LOOM_STREAM_OPEN;
}

static int ended (loom_stream *s) {
  return atomic_load(&s->state) != LOOM_STREAM_OPEN;
}

int loom__stream_next (loom_stream *s, const unsigned char **p, size_t *len,
                       const atomic_int *stop) {
  for (;;) {
    loom_chunk *c;
    int st;
    if (waitfor(s, hasnext, stop)) return -2;
    st = atomic_load_explicit(&s->state, memory_order_acquire);
    if (st == LOOM_STREAM_ABORTED) return -1;
    /* loaded after the state: a chunk appended before the end is seen */
    c = atomic_load_explicit(&s->head->next, memory_order_acquire);
    if (c == NULL) {
      if (st == LOOM_STREAM_DONE) return 0;
      continue;
    }
    if (s->head != &s->first) {       /* the chunk read before: done with it */
      loom__bytes_free(s->head->p, s->head->cap);
      free(s->head);
    }
    s->head = c;
    if (c->len) {
      *p = c->p;
      *len = c->len;
      return 1;
    }
  }
}

int loom__stream_refs (loom_stream *s, loom_ref **rv, uint32_t *nrv, const atomic_int *stop) {
  if (waitfor(s, ended, stop)) return -2;
  if (atomic_load_explicit(&s->state, memory_order_acquire) != LOOM_STREAM_DONE) return -1;
  *rv = s->refs_v;
  *nrv = s->nrefs;
  return 0;
}
