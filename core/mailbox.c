/*
** mailbox.c: one inbox per thread running loom.  A sender pushes onto a
** lock-free stack (one CAS) and takes the lock only to wake an owner that
** may be asleep or blocked; the owner takes the whole stack with one
** exchange and reverses it, so each sender's messages keep their order.
** Knows no Lua.  The mutex (adaptive where glibc has one) guards the
** owner's wake-up and the blocking waiters' handshake, never a push.
** A lane (loom_int.h says who owns what) is one sender's queue into the
** mailbox: a post there is a few plain stores and one fence, with no
** lock and no count shared with other senders; with the runtime's
** lane_barrier, not even the fence (the sender never waits for the lines
** it just wrote to reach the other CPU), and the owner pays instead, with
** a process-wide barrier each time it goes to sleep.
*/
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE          /* PTHREAD_MUTEX_ADAPTIVE_NP */
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "loom_int.h"
#if defined(__linux__)
#include <linux/membarrier.h>        /* the commands are enum members */
#include <sys/syscall.h>
#include <unistd.h>
#define CMD_BARRIER  MEMBARRIER_CMD_PRIVATE_EXPEDITED
#define CMD_REGISTER MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
#else
#define CMD_BARRIER  0
#define CMD_REGISTER 0
#endif

/* Every running thread of the process passes a full barrier before this
** returns.  0, or -1 where there is no such call (nothing was done). */
static int barrier (int cmd) {
#if defined(__linux__) && defined(__NR_membarrier)
  return syscall(__NR_membarrier, cmd, 0, 0) == 0 ? 0 : -1;
#else
  (void)cmd;
  return -1;
#endif
}

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

/* {------------------------------------------------------------------
** Lanes
** ------------------------------------------------------------------- */

static void lane_free (loom_lane *ln) {
  loom_seg *g = ln->cseg, *next;
  size_t i = atomic_load(&ln->head) - ln->cbase;   /* may be a full segment */
  for (; g; g = next, i = 0) {       /* what was never taken, then the segments */
    loom_msg *m;
    for (; i < LOOM_LANE_SLOTS && (m = atomic_load(&g->slot[i])) != NULL; i++)
      loom__msg_free(m);
    next = atomic_load(&g->next);
    free(g);
  }
  free(atomic_load(&ln->spare));
  loom__msg_freelist(ln->ovf);
  uv_mutex_destroy(&ln->lock);
  free(ln);
}

static void seg_clear (loom_seg *g) {
  int i;
  atomic_init(&g->next, NULL);
  for (i = 0; i < LOOM_LANE_SLOTS; i++) atomic_init(&g->slot[i], NULL);
}

static loom_seg *seg_new (void) {
  loom_seg *g = (loom_seg *)malloc(sizeof *g);
  if (g) seg_clear(g);
  return g;
}

int loom__mailbox_barriers (void) {
  /* idempotent, and kept by the process (the kernel's state, not ours) */
  return barrier(CMD_REGISTER) == 0;
}

loom_lane *loom__mailbox_lane (loom_mailbox *mb, int heavy) {
  loom_lane *ln = NULL;
  loom_seg *g = seg_new();
  if (g == NULL || posix_memalign((void **)&ln, 64, sizeof *ln) != 0) {
    free(g);
    return NULL;
  }
  memset(ln, 0, sizeof *ln);
  if (uv_mutex_init(&ln->lock)) {
    free(g);
    free(ln);
    return NULL;
  }
  atomic_init(&ln->tail, 0);
  atomic_init(&ln->head, 0);
  atomic_init(&ln->producer, 0);
  atomic_init(&ln->spare, NULL);
  atomic_init(&ln->over, 0);
  atomic_init(&ln->dropped, 0);
  ln->pseg = ln->cseg = g;
  ln->fence = !heavy;
  uv_mutex_lock(&mb->lock);
  /* seq_cst: an owner that read 0 had stored 'awake' before, so this
  ** lane's first posts see it asleep */
  if (!ln->fence) atomic_store(&mb->heavy, 1);
  ln->next = atomic_load_explicit(&mb->lanes, memory_order_relaxed);
  atomic_store_explicit(&mb->lanes, ln, memory_order_release);
  uv_mutex_unlock(&mb->lock);
  return ln;
}

void loom__lane_drop (loom_lane *ln) {
  if (ln) atomic_store_explicit(&ln->dropped, 1, memory_order_release);
}

static uintptr_t self_id (void) {
  uv_thread_t t = uv_thread_self();
  uintptr_t id = 0;
  memcpy(&id, &t, sizeof t < sizeof id ? sizeof t : sizeof id);
  return id ? id : 1;
}

/* A post made: wake the owner if it may sleep or wait (see push). */
static void wake_owner (loom_mailbox *mb) {
  if (!atomic_load_explicit(&mb->awake, memory_order_relaxed) ||
      atomic_load_explicit(&mb->waiters, memory_order_relaxed) > 0) {
    uv_mutex_lock(&mb->lock);
    if (mb->wake && !atomic_load(&mb->awake)) loom__wake_send(mb->wake);
    if (atomic_load(&mb->waiters) > 0) uv_cond_signal(&mb->cond);
    uv_mutex_unlock(&mb->lock);
  }
}

/* Producer: its segment is full; link the next one (the owner's spare, or
** a new one).  0: no memory. */
static int next_seg (loom_lane *ln) {
  loom_seg *g = atomic_load_explicit(&ln->spare, memory_order_relaxed) ?
                atomic_exchange_explicit(&ln->spare, NULL, memory_order_acquire) : NULL;
  if (g != NULL) seg_clear(g);       /* a spare: the owner is done with it */
  else if ((g = seg_new()) == NULL) return 0;
  atomic_store_explicit(&ln->pseg->next, g, memory_order_release);
  ln->pseg = g;
  return 1;
}

static void lane_flush (loom_lane *ln);

int loom__lane_push (loom_mailbox *mb, loom_lane *ln, loom_msg *m, int fast) {
  uintptr_t me = fast ? self_id() : 0, who;
  size_t t;
  if (atomic_load_explicit(&mb->closed, memory_order_relaxed)) {
    loom__msg_free(m);
    return -1;
  }
  who = atomic_load_explicit(&ln->producer, memory_order_relaxed);
  if (who == 0 && fast) {            /* the first fast post claims the ring */
    uintptr_t none = 0;
    atomic_compare_exchange_strong(&ln->producer, &none, me);
    who = atomic_load_explicit(&ln->producer, memory_order_relaxed);
  }
  t = atomic_load_explicit(&ln->tail, memory_order_relaxed);
  if (fast && who == me && !atomic_load_explicit(&ln->over, memory_order_relaxed) &&
      (t % LOOM_LANE_SLOTS != 0 || t == 0 || next_seg(ln))) {
    atomic_store_explicit(&ln->pseg->slot[t % LOOM_LANE_SLOTS], m, memory_order_release);
    atomic_store_explicit(&ln->tail, t + 1, memory_order_relaxed);
    /* the store of the slot before the loads in wake_owner: the owner's
    ** barrier orders them, or (without one) this fence does */
    if (ln->fence) loom__fence();
    else atomic_signal_fence(memory_order_seq_cst);
  }
  else {                             /* not the producer, or no segment */
    m->next = NULL;
    uv_mutex_lock(&ln->lock);
    if (ln->ovft) ln->ovft->next = m;
    else ln->ovf = m;
    ln->ovft = m;
    atomic_store(&ln->over, 1);
    uv_mutex_unlock(&ln->lock);
    atomic_fetch_add_explicit(&mb->pushed, 1, memory_order_relaxed);
    loom__fence();
  }
  /* closed meanwhile?  The close stored the flag, then (its barrier, or
  ** our fence) looked at the lane under its lock: it took this message,
  ** or this load sees the flag and frees it (queued, as a push just
  ** before a close is: 0) */
  /* (not from a close's CLOSE, posted under a pair's lock: freeing
  ** others' messages there could close their ports under it; what it
  ** leaves goes with the mailbox) */
  if (atomic_load(&mb->closed)) {
    if (fast) lane_flush(ln);
    return 0;
  }
  wake_owner(mb);
  return 0;
}

static void append (loom_msg *m, loom_msg **head, loom_msg **tail) {
  m->next = NULL;
  if (*tail) (*tail)->next = m;
  else *head = m;
  *tail = m;
}

/* Owner: append the stack's messages, in order. */
static void take_stack (loom_mailbox *mb, loom_msg **head, loom_msg **tail) {
  /* no write to the stack's line when it is empty: its pushers read it */
  loom_msg *m = atomic_load_explicit(&mb->top, memory_order_relaxed) ?
                atomic_exchange(&mb->top, NULL) : NULL, *list = NULL, *last = m, *next;
  if (m == NULL) return;
  for (; m; m = next) {
    next = m->next;
    m->next = list;
    list = m;
  }
  if (*tail) (*tail)->next = list;
  else *head = list;
  *tail = last;
}

/* A lane's message, appended by the owner (mb) or, once the mailbox is
** closed, by whoever frees it (NULL).  A worker's EXIT comes after what
** its thread pushed onto the stack before it (on other ports): those
** pushes happened before the EXIT was published, so the stack is taken
** again first. */
static void lane_append (loom_mailbox *mb, loom_msg *m, loom_msg **head, loom_msg **tail) {
  if (mb && m->kind == LOOM_MSG_EXIT) take_stack(mb, head, tail);
  append(m, head, tail);
}

/* The next filled slot's segment: cseg, moved on past a full one when
** the producer has linked the next (the full one goes back as the
** spare).  NULL: the next segment is not linked yet. */
static loom_seg *cur_seg (loom_lane *ln, size_t h, int move) {
  if (h - ln->cbase == LOOM_LANE_SLOTS) {
    loom_seg *next = atomic_load_explicit(&ln->cseg->next, memory_order_acquire);
    if (next == NULL || !move) return next;
    free(atomic_exchange_explicit(&ln->spare, ln->cseg, memory_order_release));
    ln->cseg = next;
    ln->cbase = h;
  }
  return ln->cseg;
}

/* Append the filled slots, in order, to the list, at most max of them
** (0: all); 1 if it stopped at max with more filled.  The owner, or
** under the lane's lock once the mailbox is closed. */
static int take_ring (loom_mailbox *mb, loom_lane *ln, loom_msg **head, loom_msg **tail,
                      size_t max) {
  size_t h = atomic_load_explicit(&ln->head, memory_order_relaxed), h0 = h;
  loom_seg *g;
  loom_msg *m;
  int more = 0;
  while ((g = cur_seg(ln, h, 1)) != NULL &&
         (m = atomic_load_explicit(&g->slot[h - ln->cbase], memory_order_acquire)) != NULL) {
    if (max && h - h0 == max) {
      more = 1;
      break;
    }
    lane_append(mb, m, head, tail);
    h++;
  }
  if (h != h0) atomic_store_explicit(&ln->head, h, memory_order_relaxed);
  return more;
}

/* Under the lane's lock: the slots (still from before the list), then
** the list; the producer may fill slots again. */
static void take_list (loom_mailbox *mb, loom_lane *ln, loom_msg **head, loom_msg **tail) {
  loom_msg *m, *next;
  take_ring(mb, ln, head, tail, 0);
  for (m = ln->ovf; m; m = next) {
    next = m->next;
    lane_append(mb, m, head, tail);
  }
  ln->ovf = ln->ovft = NULL;
  atomic_store(&ln->over, 0);
}

/* Owner: append what the lane holds, in order (with max, at most max of
** its slots, and the locked list only once they are all taken).  1 if
** it is dropped and now empty (the owner may free it). */
static int take_lane (loom_mailbox *mb, loom_lane *ln, loom_msg **head, loom_msg **tail,
                      size_t max) {
  int dropped = atomic_load_explicit(&ln->dropped, memory_order_acquire);
  if (take_ring(mb, ln, head, tail, max)) return 0;    /* some stay */
  if (atomic_load_explicit(&ln->over, memory_order_acquire)) {
    uv_mutex_lock(&ln->lock);
    take_list(mb, ln, head, tail);
    uv_mutex_unlock(&ln->lock);
  }
  return dropped;
}

/* The mailbox is closed: free what the lane holds (the close, and any
** post that finds the close after publishing). */
static void lane_flush (loom_lane *ln) {
  loom_msg *head = NULL, *tail = NULL;
  uv_mutex_lock(&ln->lock);
  take_list(NULL, ln, &head, &tail);
  uv_mutex_unlock(&ln->lock);
  loom__msg_freelist(head);
}

static int lane_nonempty (loom_lane *ln) {
  size_t h = atomic_load_explicit(&ln->head, memory_order_relaxed);
  loom_seg *g = cur_seg(ln, h, 0);
  if (g != NULL && (g != ln->cseg ||          /* a next segment: filled soon */
      atomic_load_explicit(&g->slot[h - ln->cbase], memory_order_acquire) != NULL))
    return 1;
  return atomic_load_explicit(&ln->over, memory_order_acquire);
}

/* Owner, about to look before it sleeps (its 'awake' or 'waiters'
** stored): the fast posts' stores of tail before this look (see push). */
static void sleep_barrier (loom_mailbox *mb) {
  /* registered by the runtime (loom_runtime_new), so it does not fail;
  ** otherwise a fence: the stack's pushers' CAS pairs with it */
  if (atomic_load(&mb->heavy)) (void)barrier(CMD_BARRIER);
  else loom__fence();
}

int loom__mailbox_nonempty (loom_mailbox *mb) {
  loom_lane *ln;
  if (atomic_load_explicit(&mb->top, memory_order_acquire) != NULL) return 1;
  if (atomic_load_explicit(&mb->closed, memory_order_relaxed)) return 0;  /* lanes: flushers' */
  for (ln = atomic_load_explicit(&mb->lanes, memory_order_acquire); ln; ln = ln->next)
    if (lane_nonempty(ln)) return 1;
  return 0;
}

uint64_t loom__mailbox_pushed (loom_mailbox *mb) {
  uint64_t n;
  loom_lane *ln;
  uv_mutex_lock(&mb->lock);
  n = (uint64_t)atomic_load_explicit(&mb->pushed, memory_order_relaxed);
  for (ln = atomic_load(&mb->lanes); ln; ln = ln->next)
    n += (uint64_t)atomic_load_explicit(&ln->tail, memory_order_relaxed);
  uv_mutex_unlock(&mb->lock);
  return n;
}

/* {------------------------------------------------------------------
** The mailbox
** ------------------------------------------------------------------- */

loom_mailbox *loom__mailbox_new (void) {
  loom_mailbox *mb = NULL;
  if (posix_memalign((void **)&mb, 64, sizeof *mb) != 0) return NULL;
  memset(mb, 0, sizeof *mb);
  atomic_init(&mb->heavy, 0);
  atomic_init(&mb->lanes, NULL);
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
  loom_lane *ln;
  /* acq_rel: the last holder must see every other holder's writes. */
  if (mb == NULL || atomic_fetch_sub_explicit(&mb->refs, 1, memory_order_acq_rel) != 1)
    return;
  loom__msg_freelist(atomic_exchange(&mb->top, NULL));
  while ((ln = atomic_load(&mb->lanes)) != NULL) {
    atomic_store(&mb->lanes, ln->next);
    lane_free(ln);
  }
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
  sleep_barrier(mb);                 /* the flag before the looks: see lane_push */
  {
    loom_lane *ln;
    for (ln = atomic_load(&mb->lanes); ln; ln = ln->next) lane_flush(ln);
  }
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

/* Owner: free the dropped lanes that are empty (their pair is gone). */
static void retire (loom_mailbox *mb) {
  loom_lane *ln, *prev = NULL, *next;
  uv_mutex_lock(&mb->lock);
  for (ln = atomic_load_explicit(&mb->lanes, memory_order_relaxed); ln; ln = next) {
    next = ln->next;
    if (atomic_load_explicit(&ln->dropped, memory_order_acquire) && !lane_nonempty(ln)) {
      if (prev) prev->next = next;
      else atomic_store_explicit(&mb->lanes, next, memory_order_relaxed);
      atomic_fetch_add_explicit(&mb->pushed,
          atomic_load_explicit(&ln->tail, memory_order_relaxed), memory_order_relaxed);
      lane_free(ln);
    }
    else prev = ln;
  }
  uv_mutex_unlock(&mb->lock);
}

loom_msg *loom__mailbox_take (loom_mailbox *mb, loom_msg **tail, size_t lane_max) {
  loom_msg *list = NULL;
  loom_lane *ln;
  int dropped = 0;
  *tail = NULL;
  take_stack(mb, &list, tail);
  if (atomic_load_explicit(&mb->closed, memory_order_relaxed)) return list;  /* lanes flushed */
  for (ln = atomic_load_explicit(&mb->lanes, memory_order_acquire); ln; ln = ln->next)
    dropped |= take_lane(mb, ln, &list, tail, lane_max);
  if (dropped) retire(mb);
  return list;
}

int loom__mailbox_sleep (loom_mailbox *mb) {
  atomic_store(&mb->awake, 0);
  sleep_barrier(mb);
  if (loom__mailbox_nonempty(mb)) {
    atomic_store_explicit(&mb->awake, 1, memory_order_relaxed);
    return 1;
  }
  return 0;
}

void loom__mailbox_awake (loom_mailbox *mb) {
  /* stored only when it changes: every post reads this line */
  if (!atomic_load_explicit(&mb->awake, memory_order_relaxed))
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
  /* counted before the look (see push), and the barrier made before the
  ** lock: posters that see the count take the lock to signal */
  atomic_fetch_add(&mb->waiters, 1);
  if (for_msg) sleep_barrier(mb);
  uv_mutex_lock(&mb->lock);
  while (!(for_msg && loom__mailbox_nonempty(mb)) && !(stop && atomic_load(stop)) &&
         !(flag && atomic_load(flag))) {
    if (timeout_ms < 0) uv_cond_wait(&mb->cond, &mb->lock);
    else {
      uint64_t now = uv_hrtime();
      if (now >= deadline) break;
      uv_cond_timedwait(&mb->cond, &mb->lock, deadline - now);
    }
  }
  atomic_fetch_sub(&mb->waiters, 1);
  got = loom__mailbox_nonempty(mb);
  uv_mutex_unlock(&mb->lock);
  return got;
}
