/*
** mailbox.c: one inbox per thread running loom.  Senders append under the
** mailbox lock and wake the owner's uv_async_t (libuv coalesces many sends
** into one callback); the owner takes the whole queue in one lock.
** Knows no Lua.  The mutex is adaptive where glibc has one: senders
** contend for it only for the few instructions of a push.
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
  loom__msg_freelist(mb->head);
  uv_cond_destroy(&mb->cond);
  uv_mutex_destroy(&mb->lock);
  free(mb);
}

void loom__mailbox_attach (loom_mailbox *mb, uv_async_t *async) {
  uv_mutex_lock(&mb->lock);
  mb->async = async;
  if (mb->head) uv_async_send(async);   /* posted before we were ready */
  uv_mutex_unlock(&mb->lock);
}

void loom__mailbox_close (loom_mailbox *mb) {
  loom_msg *list;
  uv_mutex_lock(&mb->lock);
  mb->closed = 1;
  mb->async = NULL;
  list = mb->head;
  mb->head = mb->tail = NULL;
  atomic_store_explicit(&mb->nonempty, 0, memory_order_relaxed);
  uv_mutex_unlock(&mb->lock);
  loom__msg_freelist(list);
}

int loom__mailbox_push (loom_mailbox *mb, loom_msg *m) {
  m->next = NULL;
  uv_mutex_lock(&mb->lock);
  if (mb->closed) {
    uv_mutex_unlock(&mb->lock);
    loom__msg_free(m);
    return -1;
  }
  if (mb->tail) mb->tail->next = m;
  else {
    mb->head = m;
    atomic_store(&mb->nonempty, 1);
  }
  mb->tail = m;
  atomic_fetch_add_explicit(&mb->pushed, 1, memory_order_relaxed);
  /* Wake the owner only if it may be asleep: 'nonempty' is stored before
  ** 'awake' is loaded, and the owner stores 'awake' before it loads
  ** 'nonempty' (both sequentially consistent), so one of the two sees the
  ** other.  The send stays under the lock: once the owner has closed the
  ** mailbox its loop (and the async's fd) may be gone. */
  if (mb->async && !atomic_load(&mb->awake)) uv_async_send(mb->async);
  if (mb->waiters) uv_cond_signal(&mb->cond);
  uv_mutex_unlock(&mb->lock);
  return 0;
}

loom_msg *loom__mailbox_take (loom_mailbox *mb, loom_msg **tail) {
  loom_msg *list;
  uv_mutex_lock(&mb->lock);
  list = mb->head;
  *tail = mb->tail;
  mb->head = mb->tail = NULL;
  atomic_store_explicit(&mb->nonempty, 0, memory_order_relaxed);
  uv_mutex_unlock(&mb->lock);
  return list;
}

int loom__mailbox_sleep (loom_mailbox *mb) {
  atomic_store(&mb->awake, 0);
  if (atomic_load(&mb->nonempty)) {
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
  if (mb->async) uv_async_send(mb->async);
  uv_cond_broadcast(&mb->cond);
  uv_mutex_unlock(&mb->lock);
}

void loom__mailbox_signal (loom_mailbox *mb) {
  uv_mutex_lock(&mb->lock);
  if (mb->waiters) uv_cond_broadcast(&mb->cond);
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
  mb->waiters++;
  while (!(for_msg && mb->head) && !(stop && atomic_load(stop)) &&
         !(flag && atomic_load(flag))) {
    if (timeout_ms < 0) uv_cond_wait(&mb->cond, &mb->lock);
    else {
      uint64_t now = uv_hrtime();
      if (now >= deadline) break;
      uv_cond_timedwait(&mb->cond, &mb->lock, deadline - now);
    }
  }
  mb->waiters--;
  got = mb->head != NULL;
  uv_mutex_unlock(&mb->lock);
  return got;
}
