/*
** mailbox.c: one inbox per thread running loom.  A sender pushes onto a
** lock-free stack (one CAS) and takes the lock only to wake an owner that
** may be asleep or blocked; the owner takes the whole stack with one
** exchange and reverses it, so each sender's messages keep their order.
** Knows no Lua.  The mutex (adaptive where glibc has one) guards the
** owner's wake-up and the blocking waiters' handshake, never a push.
*/
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE          /* PTHREAD_MUTEX_ADAPTIVE_NP */
#endif
#include <pthread.h>
#include <stdlib.h>
#include "loom_int.h"

static int mutex_init (uv_mutex_t *m) {
#if defined(__GLIBC__) && defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
  pthread_mutexattr_t a;
  int r;
  if (pthread_mutexattr_init(&a)) return -1;
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
  r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return r ? -1 : 0;
#else
  return uv_mutex_init(m);
#endif
}

loom_mailbox *loom__mailbox_new (void) {
  loom_mailbox *mb = (loom_mailbox *)calloc(1, sizeof *mb);
  if (mb == NULL) return NULL;
  if (mutex_init(&mb->lock)) { free(mb); return NULL; }
  if (uv_cond_init(&mb->cond)) {
    uv_mutex_destroy(&mb->lock);
    free(mb);
    return NULL;
  }
  atomic_init(&mb->top, NULL);
  atomic_init(&mb->pushed, 0);
  atomic_init(&mb->closed, 0);
  atomic_init(&mb->awake, 0);
  atomic_init(&mb->waiters, 0);
  atomic_init(&mb->refs, 1);
  return mb;
}

void loom__mailbox_retain (loom_mailbox *mb) {
  atomic_fetch_add_explicit(&mb->refs, 1, memory_order_relaxed);
}

void loom__mailbox_release (loom_mailbox *mb) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (mb == NULL || atomic_fetch_sub_explicit(&mb->refs, 1, memory_order_acq_rel) != 1)
    return;
  loom__msg_freelist(atomic_exchange(&mb->top, NULL));
  uv_cond_destroy(&mb->cond);
  uv_mutex_destroy(&mb->lock);
  free(mb);
}

void loom__mailbox_attach (loom_mailbox *mb, loom_wake *wake) {
  uv_mutex_lock(&mb->lock);
  mb->wake = wake;
  if (loom__mailbox_nonempty(mb)) loom__wake_send(wake);   /* posted before we were ready */
  uv_mutex_unlock(&mb->lock);
}

void loom__mailbox_close (loom_mailbox *mb) {
  atomic_store(&mb->closed, 1);      /* before the exchange: see push */
  uv_mutex_lock(&mb->lock);
  mb->wake = NULL;
  uv_mutex_unlock(&mb->lock);
  loom__msg_freelist(atomic_exchange(&mb->top, NULL));
}

int loom__mailbox_push (loom_mailbox *mb, loom_msg *m) {
  loom_msg *top;
  if (atomic_load(&mb->closed)) {
    loom__msg_free(m);
    return -1;
  }
  top = atomic_load_explicit(&mb->top, memory_order_relaxed);
  do m->next = top;                  /* (the CAS publishes it: seq_cst) */
  while (!atomic_compare_exchange_weak(&mb->top, &top, m));
  atomic_fetch_add_explicit(&mb->pushed, 1, memory_order_relaxed);
  /* Closed meanwhile?  Then nobody will take what is left: whoever
  ** exchanges the stack after the flag frees what it holds (the close, or
  ** this sender), so no message stays behind.  'm' may be gone already,
  ** or delivered before the close: it was queued, as one queued just
  ** before a close is (0), and is freed undelivered if it was not. */
  if (atomic_load(&mb->closed)) {
    loom__msg_freelist(atomic_exchange(&mb->top, NULL));
    return 0;
  }
  /* Wake the owner only if it may be asleep or blocked: the push is
  ** ordered before these loads, and the owner stores 'awake' (or, under
  ** the lock, 'waiters') before it looks at 'top' (all sequentially
  ** consistent), so one of the two sees the other.  The send is made
  ** under the lock: once the owner has closed the mailbox its loop (and
  ** the wake-up's fd) may be gone. */
  if (!atomic_load(&mb->awake) || atomic_load(&mb->waiters) > 0) {
    uv_mutex_lock(&mb->lock);
    if (mb->wake && !atomic_load(&mb->awake)) loom__wake_send(mb->wake);
    if (atomic_load(&mb->waiters) > 0) uv_cond_signal(&mb->cond);
    uv_mutex_unlock(&mb->lock);
  }
  return 0;
}

loom_msg *loom__mailbox_take (loom_mailbox *mb, loom_msg **tail) {
  loom_msg *m = atomic_exchange(&mb->top, NULL), *list = NULL, *next;
  *tail = m;                         /* the newest is the last in order */
  for (; m; m = next) {
    next = m->next;
    m->next = list;
    list = m;
  }
  return list;
}

int loom__mailbox_sleep (loom_mailbox *mb) {
  atomic_store(&mb->awake, 0);
  if (atomic_load(&mb->top) != NULL) {
    atomic_store_explicit(&mb->awake, 1, memory_order_relaxed);
    return 1;
  }
  return 0;
}

void loom__mailbox_awake (loom_mailbox *mb) {
  atomic_store_explicit(&mb->awake, 1, memory_order_relaxed);
}

void loom__mailbox_interrupt (loom_mailbox *mb) {
  uv_mutex_lock(&mb->lock);
  if (mb->wake) loom__wake_send(mb->wake);
  uv_cond_broadcast(&mb->cond);
  uv_mutex_unlock(&mb->lock);
}

void loom__mailbox_signal (loom_mailbox *mb) {
  uv_mutex_lock(&mb->lock);
  if (atomic_load(&mb->waiters) > 0) uv_cond_broadcast(&mb->cond);
  uv_mutex_unlock(&mb->lock);
}

int loom__mailbox_wait (loom_mailbox *mb, const atomic_int *stop,
                        double timeout_ms, int for_msg) {
  return loom__mailbox_await(mb, stop, NULL, timeout_ms, for_msg);
}

int loom__mailbox_await (loom_mailbox *mb, const atomic_int *stop,
                         const atomic_int *flag, double timeout_ms, int for_msg) {
  uint64_t deadline = 0;
  int got;
  if (timeout_ms > 1e12) timeout_ms = -1;   /* ~31 years: no limit */
  if (timeout_ms >= 0)
    deadline = uv_hrtime() + (uint64_t)(timeout_ms * 1e6);
  uv_mutex_lock(&mb->lock);
  atomic_fetch_add(&mb->waiters, 1);   /* before the look at 'top': see push */
  while (!(for_msg && atomic_load(&mb->top)) && !(stop && atomic_load(stop)) &&
         !(flag && atomic_load(flag))) {
    if (timeout_ms < 0) uv_cond_wait(&mb->cond, &mb->lock);
    else {
      uint64_t now = uv_hrtime();
      if (now >= deadline) break;
      uv_cond_timedwait(&mb->cond, &mb->lock, deadline - now);
    }
  }
  atomic_fetch_sub(&mb->waiters, 1);
  got = atomic_load(&mb->top) != NULL;
  uv_mutex_unlock(&mb->lock);
  return got;
}
