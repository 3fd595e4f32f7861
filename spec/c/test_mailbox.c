/*
** test_mailbox.c: the lock-free mailbox from C, under contention.
**  - 4 senders push 100,000 messages each while the owner takes: every
**    message arrives once, each sender's in the order it pushed them.
**  - senders push while the owner closes the mailbox at a random moment:
**    each push says 0 (queued) or -1 (refused), and every message is freed
**    exactly once (each holds a reference whose release is counted) by the
**    close, by a sender that saw the close, or by the last release.
**  - a blocked owner (loom__mailbox_wait) is woken by a push.
**  - an owner whose loop sleeps in the poll (woken through its loom_wake,
**    with the context's handshake before each poll) takes every message
**    of 4 senders: no wake-up is lost (a lost one hangs until a 30 s
**    guard fails the test), and two sends before a turn wake it once.
**  - lanes (one producer's ring each): two producers on their rings, a
**    third thread posting into one of the lanes (the locked list) and two
**    on the stack, with the owner sleeping in its loop: every message
**    once, each sender's in order, none lost to a missed wake-up, and
**    the counts right; dropped lanes are freed once empty; a close frees
**    what lanes hold and refuses later posts; a blocked wait is woken by
**    a lane's post; a lane's EXIT comes after the stack pushes made
**    before it; posts racing a close leave nothing in the lane.  Both with the owner's barrier and, as where the
**    kernel has none, with the producers' fence.
**  - spare blocks travel: senders post from their own caches, the owner
**    frees into its cache, full caches go to a shared pool as batches and
**    the senders take them back.  Every reused block carries its new
**    bytes, the pool stays bounded, and what is left is freed with the
**    caches and the pool (ASan and valgrind see no leak).
** Run under ASan, TSan and valgrind in CI, like every C test.
*/
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "loom_int.h"

static int failures = 0, checks = 0;

#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
  fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
  fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

#define SENDERS 4

static int heavy;                   /* lanes rely on the owner's barrier */

static int under_valgrind (void) {
  const char *p = getenv("LD_PRELOAD");
  return p && strstr(p, "vgpreload") != NULL;
}

/* {====== order and count */

typedef struct sender {
  loom_mailbox *mb;
  loom_lane *ln;               /* post through this lane, or NULL: push */
  int who, n, failed;
} sender;

static loom_msg *msg_of (int who, int seq) {
  unsigned char bytes[8];
  loom_buf b;
  loom_msg *m;
  memcpy(bytes, &who, 4);
  memcpy(bytes + 4, &seq, 4);
  b.p = bytes;
  b.len = b.cap = sizeof bytes;
  m = loom__msg_new(LOOM_MSG_MESSAGE, (uint64_t)who, &b, NULL);
  return m;
}

static void send_all (void *arg) {
  sender *s = (sender *)arg;
  int i;
  for (i = 0; i < s->n; i++) {
    loom_msg *m = msg_of(s->who, i);
    if (m == NULL) s->failed++;
    else if ((s->ln ? loom__lane_push(s->mb, s->ln, m, 1) : loom__mailbox_push(s->mb, m)) != 0)
      s->failed++;
  }
}

static void test_order (void) {
  loom_mailbox *mb = loom__mailbox_new();
  sender s[SENDERS];
  uv_thread_t t[SENDERS];
  int next[SENDERS] = {0}, i, got = 0, bad = 0, n = under_valgrind() ? 5000 : 100000;
  CHECK(mb != NULL, "mailbox");
  for (i = 0; i < SENDERS; i++) {
    s[i].mb = mb; s[i].who = i; s[i].n = n; s[i].failed = 0; s[i].ln = NULL;
    CHECK(uv_thread_create(&t[i], send_all, &s[i]) == 0, "thread %d", i);
  }
  while (got < SENDERS * n && !bad) {
    loom_msg *tail, *m = loom__mailbox_take(mb, &tail, 0), *next_m;
    if (m == NULL) continue;
    for (; m; m = next_m) {
      int who, seq;
      next_m = m->next;
      if (next_m == NULL && m != tail) bad = 1;
      memcpy(&who, m->data, 4);
      memcpy(&seq, m->data + 4, 4);
      if (who < 0 || who >= SENDERS || seq != next[who]) bad = 1;
      else next[who]++;
      got++;
      loom__msg_free(m);
    }
  }
  for (i = 0; i < SENDERS; i++) uv_thread_join(&t[i]);
  CHECK(!bad, "each sender's messages in order, the tail last");
  CHECK(got == SENDERS * n, "every message once (%d of %d)", got, SENDERS * n);
  for (i = 0; i < SENDERS; i++) CHECK(s[i].failed == 0, "sender %d: no refused push", i);
  CHECK(atomic_load(&mb->pushed) == (uint64_t)(SENDERS * n), "pushed counts them all");
  CHECK(!loom__mailbox_nonempty(mb), "empty at the end");
  loom__mailbox_release(mb);
}

/* }====== */

/* {====== close while senders push */

static atomic_int made, released;

static void count_release (void *p) {
  (void)p;
  atomic_fetch_add(&released, 1);
}

static const loom_refvt counted_vt = {"counted", count_release};

typedef struct racer {
  loom_mailbox *mb;
  int n, queued, refused;
} racer;

static void race_push (void *arg) {
  racer *r = (racer *)arg;
  int i;
  for (i = 0; i < r->n; i++) {
    loom_refs refs = {NULL, 0, 0};
    loom_buf b = {NULL, 0, 0};
    loom_msg *m;
    if (loom__refs_add(&refs, &counted_vt, NULL)) continue;
    atomic_fetch_add(&made, 1);
    m = loom__msg_new(LOOM_MSG_MESSAGE, 1, &b, &refs);
    loom__refs_free(&refs);
    if (m == NULL) continue;           /* (then refs_free released it) */
    if (loom__mailbox_push(r->mb, m) == 0) r->queued++;
    else r->refused++;
  }
}

static void test_close_race (void) {
  int round, rounds = under_valgrind() ? 5 : 200;
  for (round = 0; round < rounds; round++) {
    loom_mailbox *mb = loom__mailbox_new();
    racer r[SENDERS];
    uv_thread_t t[SENDERS];
    int i, delivered = 0, spins = rand() % 2000;
    atomic_store(&made, 0);
    atomic_store(&released, 0);
    for (i = 0; i < SENDERS; i++) {
      r[i].mb = mb; r[i].n = 200; r[i].queued = r[i].refused = 0;
      uv_thread_create(&t[i], race_push, &r[i]);
    }
    for (i = 0; i < spins; i++) {       /* take some, then close */
      loom_msg *tail, *m = loom__mailbox_take(mb, &tail, 0), *nx;
      for (; m; m = nx) { nx = m->next; delivered++; loom__msg_free(m); }
    }
    loom__mailbox_close(mb);
    for (i = 0; i < SENDERS; i++) uv_thread_join(&t[i]);
    CHECK(loom__mailbox_push(mb, msg_of(0, 0)) == -1, "a push after the close is refused");
    loom__mailbox_release(mb);          /* the last holder: frees what is left */
    if (atomic_load(&made) != atomic_load(&released)) {
      CHECK(0, "round %d: %d messages made, %d released", round, atomic_load(&made),
            atomic_load(&released));
      break;
    }
    {
      int queued = 0;
      for (i = 0; i < SENDERS; i++) queued += r[i].queued;
      if (delivered > queued) {
        CHECK(0, "round %d: %d delivered but %d queued", round, delivered, queued);
        break;
      }
    }
  }
  CHECK(1, "close races: every message freed once");
}

/* }====== */

/* {====== a blocked owner is woken by a push */

static void late_push (void *arg) {
  loom_mailbox *mb = (loom_mailbox *)arg;
  uv_sleep(20);
  loom__mailbox_push(mb, msg_of(0, 7));
}

static void test_wake (void) {
  loom_mailbox *mb = loom__mailbox_new();
  uv_thread_t t;
  atomic_int stop;
  uint64_t t0 = uv_hrtime();
  int got;
  atomic_init(&stop, 0);
  loom__mailbox_awake(mb);               /* the owner runs, then blocks */
  uv_thread_create(&t, late_push, mb);
  got = loom__mailbox_wait(mb, &stop, 10000, 1);
  CHECK(got == 1, "the wait returns with the message");
  CHECK(uv_hrtime() - t0 < (uint64_t)5000 * 1000000, "woken by the push, not the timeout");
  uv_thread_join(&t);
  loom__mailbox_release(mb);
}

/* }====== */

/* {====== a loop woken through its loom_wake */

#define LSENDERS 5                   /* test_lanes' senders (>= SENDERS) */

/* The owner of a mailbox in a libuv loop, as a context is: takes on its
** wake-up and before it blocks, checks each sender's order, and stops
** the loop once it has 'want' (or the guard fires).  lane_max bounds
** each take's share of a lane, as a context's takes are. */
typedef struct owner {
  loom_mailbox *mb;
  loom_wake *wake;
  uv_prepare_t prepare;
  uv_timer_t guard;
  size_t lane_max;
  int got, want, wakes, timedout, disorder, done;
  int next[LSENDERS];
} owner;

static void finish (owner *o) {
  uv_prepare_stop(&o->prepare);
  uv_timer_stop(&o->guard);
  uv_stop(o->prepare.loop);
}

/* Count a taken list and free it; *disorder counts messages out of
** their sender's order (next: each sender's next seq) or a wrong tail. */
static int count_list (loom_msg *m, loom_msg *tail, int *next, int *disorder) {
  loom_msg *nx;
  int n = 0;
  for (; m; m = nx) {
    int who, seq;
    nx = m->next;
    memcpy(&who, m->data, 4);
    memcpy(&seq, m->data + 4, 4);
    if (who < 0 || who >= LSENDERS || seq != next[who]) (*disorder)++;
    else next[who]++;
    if (nx == NULL && m != tail) (*disorder)++;
    n++;
    loom__msg_free(m);
  }
  return n;
}

static void drain (owner *o) {
  loom_msg *tail, *m = loom__mailbox_take(o->mb, &tail, o->lane_max);
  o->got += count_list(m, tail, o->next, &o->disorder);
  if (o->got == o->want && !o->done) {
    o->done = 1;
    finish(o);
  }
}

static void on_wake (void *ud) {
  owner *o = (owner *)ud;
  o->wakes++;
  loom__mailbox_awake(o->mb);
  drain(o);
}

/* before the poll, as ctx.c's: block only once a push will wake us */
static void on_prepare (uv_prepare_t *h) {
  owner *o = (owner *)h->data;
  while (loom__mailbox_sleep(o->mb)) drain(o);
}

static void on_guard (uv_timer_t *h) {
  owner *o = (owner *)h->data;
  o->timedout = 1;
  finish(o);
}

static void test_loop_wake (void) {
  uv_loop_t loop;
  owner o;
  sender s[SENDERS];
  uv_thread_t t[SENDERS];
  int i, n = under_valgrind() ? 5000 : 50000;
  memset(&o, 0, sizeof o);
  uv_loop_init(&loop);
  o.mb = loom__mailbox_new();
  o.want = SENDERS * n;
  memset(s, 0, sizeof s);
  CHECK(loom__wake_init(&o.wake, &loop, on_wake, &o) == 0, "a wake-up is made");
  loom__mailbox_attach(o.mb, o.wake);
  uv_prepare_init(&loop, &o.prepare);
  o.prepare.data = &o;
  uv_prepare_start(&o.prepare, on_prepare);
  uv_timer_init(&loop, &o.guard);
  o.guard.data = &o;
  uv_timer_start(&o.guard, on_guard, 30000, 0);
  for (i = 0; i < SENDERS; i++) {
    s[i].mb = o.mb;
    s[i].who = i;
    s[i].n = n;
    s[i].failed = 0;
    uv_thread_create(&t[i], send_all, &s[i]);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  for (i = 0; i < SENDERS; i++) uv_thread_join(&t[i]);
  CHECK(!o.timedout, "no wake-up lost (%d of %d taken when the guard fired)", o.got, o.want);
  CHECK(o.got == o.want, "every message once (%d of %d)", o.got, o.want);
  CHECK(o.disorder == 0, "each sender's messages in order (%d out)", o.disorder);
  CHECK(o.wakes >= 1 && o.wakes <= o.want, "woken through the fd (%d times)", o.wakes);
  /* a send to itself wakes the next turn */
  loom__wake_send(o.wake);
  loom__wake_send(o.wake);
  o.wakes = 0;
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(o.wakes == 1, "two sends before a turn: one wake-up (%d)", o.wakes);
  loom__mailbox_close(o.mb);
  loom__wake_close(o.wake);
  uv_close((uv_handle_t *)&o.prepare, NULL);
  uv_close((uv_handle_t *)&o.guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0, "every handle closed");
  loom__mailbox_release(o.mb);
}

/* }====== */

/* {====== lanes: rings from one producer each, beside the stack */

static int nlanes (loom_mailbox *mb) {
  int n = 0;
  loom_lane *ln;
  for (ln = atomic_load(&mb->lanes); ln; ln = ln->next) n++;
  return n;
}

/* Two lanes, each with its producer; a third thread posts into the
** second lane (its slow path) and two push onto the stack.  The owner
** sleeps in its loop between takes, as a context does, each take
** bounded to lane_max of a lane's (0: all). */
static void test_lanes (size_t lane_max) {
  uv_loop_t loop;
  owner o;
  sender s[LSENDERS];
  uv_thread_t t[LSENDERS];
  loom_lane *a, *b;
  int i, n = under_valgrind() ? 4000 : 60000;
  memset(&o, 0, sizeof o);
  memset(s, 0, sizeof s);
  uv_loop_init(&loop);
  o.mb = loom__mailbox_new();
  o.lane_max = lane_max;
  a = loom__mailbox_lane(o.mb, heavy);
  b = loom__mailbox_lane(o.mb, heavy);
  CHECK(a && b && nlanes(o.mb) == 2, "two lanes are made");
  o.want = LSENDERS * n;
  CHECK(loom__wake_init(&o.wake, &loop, on_wake, &o) == 0, "a wake-up is made");
  loom__mailbox_attach(o.mb, o.wake);
  uv_prepare_init(&loop, &o.prepare);
  o.prepare.data = &o;
  uv_prepare_start(&o.prepare, on_prepare);
  uv_timer_init(&loop, &o.guard);
  o.guard.data = &o;
  uv_timer_start(&o.guard, on_guard, 30000, 0);
  for (i = 0; i < LSENDERS; i++) {
    s[i].mb = o.mb;
    s[i].who = i;
    s[i].n = n;
    s[i].ln = i == 0 ? a : i <= 2 ? b : NULL;
    uv_thread_create(&t[i], send_all, &s[i]);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  for (i = 0; i < LSENDERS; i++) uv_thread_join(&t[i]);
  drain(&o);
  CHECK(!o.timedout, "lanes: no wake-up lost (%d of %d taken when the guard fired)",
        o.got, o.want);
  CHECK(o.got == o.want, "lanes: every message once (%d of %d)", o.got, o.want);
  CHECK(o.disorder == 0, "lanes: each sender's messages in order (%d out)", o.disorder);
  for (i = 0; i < LSENDERS; i++) CHECK(s[i].failed == 0, "lane sender %d: no refusal", i);
  CHECK(loom__mailbox_pushed(o.mb) == (uint64_t)o.want, "pushed counts every post (%llu)",
        (unsigned long long)loom__mailbox_pushed(o.mb));
  CHECK(atomic_load(&a->tail) > 0, "the first lane's producer posted on its ring");
  CHECK(!loom__mailbox_nonempty(o.mb), "lanes: empty at the end");
  /* a dropped lane goes at the owner's next take once it is empty; one
  ** still holding a message stays until that is taken */
  CHECK(loom__lane_push(o.mb, a, msg_of(0, n), 1) == 0, "a last post");
  loom__lane_drop(a);
  loom__lane_drop(b);
  o.want++;
  drain(&o);
  CHECK(o.got == o.want && o.disorder == 0, "the last post arrives in order");
  CHECK(nlanes(o.mb) == 0, "dropped lanes are freed once empty (%d left)", nlanes(o.mb));
  CHECK(loom__mailbox_pushed(o.mb) == (uint64_t)o.want, "their counts stay (%llu)",
        (unsigned long long)loom__mailbox_pushed(o.mb));
  /* messages left in a lane when the mailbox closes, and posts after it */
  a = loom__mailbox_lane(o.mb, heavy);
  CHECK(loom__lane_push(o.mb, a, msg_of(0, 0), 1) == 0, "queued before the close");
  CHECK(loom__lane_push(o.mb, a, msg_of(3, 0), 0) == 0, "queued on the list before the close");
  loom__mailbox_close(o.mb);
  CHECK(!loom__mailbox_nonempty(o.mb), "the close frees what the lane held");
  CHECK(loom__lane_push(o.mb, a, msg_of(0, 1), 1) == -1, "a lane post after the close is refused");
  loom__wake_close(o.wake);
  uv_close((uv_handle_t *)&o.prepare, NULL);
  uv_close((uv_handle_t *)&o.guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0, "lanes: every handle closed");
  loom__mailbox_release(o.mb);       /* frees the lane left */
}

/* A bounded take: the stack's messages all, at most max of each lane's
** slots, its locked list only after its slots, the mailbox nonempty
** while some stay; each sender's in order across the takes. */
static int take_count (loom_mailbox *mb, size_t max, int *more, int *next, int *disorder) {
  loom_msg *tail, *m = loom__mailbox_take(mb, &tail, max);
  int n = count_list(m, tail, next, disorder);
  *more = loom__mailbox_nonempty(mb);
  return n;
}

static void test_lane_take (void) {
  loom_mailbox *mb = loom__mailbox_new();
  loom_lane *a = loom__mailbox_lane(mb, heavy), *b = loom__mailbox_lane(mb, heavy);
  int i, more = -1, next[LSENDERS] = {0}, disorder = 0, n;
  for (i = 0; i < 150; i++) loom__lane_push(mb, a, msg_of(0, i), 1);   /* 3 segments */
  loom__lane_push(mb, a, msg_of(0, 150), 0);                          /* its list */
  for (i = 0; i < 5; i++) loom__lane_push(mb, b, msg_of(1, i), 1);
  for (i = 0; i < 3; i++) loom__mailbox_push(mb, msg_of(2, i));
  n = take_count(mb, 64, &more, next, &disorder);
  CHECK(n == 3 + 64 + 5 && more == 1, "bounded take: the stack, 64 of a's, b's 5 (%d, more %d)",
        n, more);
  n = take_count(mb, 64, &more, next, &disorder);
  CHECK(n == 64 && more == 1, "bounded take: the next 64 of a's (%d, more %d)", n, more);
  CHECK(loom__mailbox_nonempty(mb), "bounded take: the rest waits");
  n = take_count(mb, 64, &more, next, &disorder);
  CHECK(n == 23 && more == 0, "bounded take: a's last 22 slots, then its list (%d, more %d)",
        n, more);
  CHECK(disorder == 0 && next[0] == 151 && next[1] == 5 && next[2] == 3,
        "bounded take: each sender's in order (%d out)", disorder);
  CHECK(!loom__mailbox_nonempty(mb), "bounded take: empty at the end");
  for (i = 0; i < 10; i++) loom__lane_push(mb, a, msg_of(0, 151 + i), 1);
  n = take_count(mb, 0, &more, next, &disorder);
  CHECK(n == 10 && more == 0 && disorder == 0, "an unbounded take takes all (%d)", n);
  for (i = 0; i < 10; i++) loom__lane_push(mb, a, msg_of(0, 161 + i), 1);
  loom__lane_drop(a);
  loom__lane_drop(b);
  n = take_count(mb, 4, &more, next, &disorder);
  CHECK(n == 4 && more == 1 && nlanes(mb) == 1, "a dropped lane with messages left stays (%d lanes)",
        nlanes(mb));
  while (more) take_count(mb, 4, &more, next, &disorder);
  take_count(mb, 4, &more, next, &disorder);
  CHECK(nlanes(mb) == 0 && disorder == 0 && next[0] == 171, "then goes once empty (%d lanes)",
        nlanes(mb));
  loom__mailbox_release(mb);
}

/* a worker's EXIT (on its lane) comes after what its thread pushed onto
** the stack before it, even when the owner's take looked at the stack
** just before those pushes */
typedef struct exiter { loom_mailbox *mb; loom_lane *ln; int n; } exiter;

static void exit_after_push (void *arg) {
  exiter *e = (exiter *)arg;
  int i;
  for (i = 0; i < e->n; i++) {
    loom_msg *m = msg_of(1, i), *x = msg_of(0, i);
    loom__mailbox_push(e->mb, m);
    x->kind = LOOM_MSG_EXIT;
    loom__lane_push(e->mb, e->ln, x, 1);
  }
}

static void test_lane_exit (void) {
  exiter e;
  uv_thread_t t;
  int pushed = 0, exits = 0, bad = 0, n = under_valgrind() ? 2000 : 100000;
  e.mb = loom__mailbox_new();
  e.ln = loom__mailbox_lane(e.mb, heavy);
  e.n = n;
  uv_thread_create(&t, exit_after_push, &e);
  while (exits < n) {
    loom_msg *tail, *m = loom__mailbox_take(e.mb, &tail, 0), *next;
    for (; m; m = next) {
      int who, seq;
      next = m->next;
      memcpy(&who, m->data, 4);
      memcpy(&seq, m->data + 4, 4);
      if (who == 1) pushed++;
      else {
        if (pushed < seq + 1) bad++;       /* its push not seen before it */
        exits++;
      }
      loom__msg_free(m);
    }
  }
  uv_thread_join(&t);
  CHECK(bad == 0, "each EXIT after the pushes made before it (%d early of %d)", bad, n);
  loom__mailbox_release(e.mb);
}

/* posts racing the close: what a post leaves after the close is freed by
** that post, not kept until the mailbox goes */
typedef struct closer { loom_mailbox *mb; loom_lane *ln; int refused; } closer;

static void post_until_closed (void *arg) {
  closer *c = (closer *)arg;
  int i;
  for (i = 0; i < 1000000 && !c->refused; i++)
    if (loom__lane_push(c->mb, c->ln, msg_of(0, i), 1) != 0) c->refused = 1;
}

static void test_lane_close (void) {
  int round, rounds = under_valgrind() ? 5 : 100, left = 0;
  size_t fast = 0;
  for (round = 0; round < rounds; round++) {
    closer c;
    closer c2;
    uv_thread_t t, t2;
    c.mb = loom__mailbox_new();
    c.ln = loom__mailbox_lane(c.mb, heavy);
    c.refused = 0;
    c2 = c;                          /* the lane's producer, and another thread (the list) */
    uv_thread_create(&t, post_until_closed, &c);
    uv_thread_create(&t2, post_until_closed, &c2);
    {                                /* the owner takes for a while, then closes */
      uint64_t until = uv_hrtime() + (uint64_t)(rand() % 2000) * 1000;
      while (uv_hrtime() < until) {
        loom_msg *tail;
        loom__msg_freelist(loom__mailbox_take(c.mb, &tail, 0));
      }
    }
    loom__mailbox_close(c.mb);
    uv_thread_join(&t);
    uv_thread_join(&t2);
    if (atomic_load(&c.ln->head) != atomic_load(&c.ln->tail) || c.ln->ovf != NULL) left++;
    fast += atomic_load(&c.ln->tail);
    loom__mailbox_release(c.mb);
  }
  CHECK(left == 0, "nothing stays in a lane after its mailbox closed (%d of %d rounds)",
        left, rounds);
  CHECK(fast > 0, "the racing posts used the slots");
}

/* a blocked owner is woken by a lane's fast post */
typedef struct lpost { loom_mailbox *mb; loom_lane *ln; } lpost;

static void late_lane (void *arg) {
  lpost *lp = (lpost *)arg;
  uv_sleep(20);
  loom__lane_push(lp->mb, lp->ln, msg_of(0, 7), 1);
}

static void test_lane_wait (void) {
  lpost lp;
  uv_thread_t t;
  atomic_int stop;
  uint64_t t0 = uv_hrtime();
  loom_msg *tail, *m;
  lp.mb = loom__mailbox_new();
  lp.ln = loom__mailbox_lane(lp.mb, heavy);
  atomic_init(&stop, 0);
  loom__mailbox_awake(lp.mb);
  uv_thread_create(&t, late_lane, &lp);
  CHECK(loom__mailbox_wait(lp.mb, &stop, 10000, 1) == 1, "the wait returns with the lane's message");
  CHECK(uv_hrtime() - t0 < (uint64_t)5000 * 1000000, "woken by the lane post, not the timeout");
  uv_thread_join(&t);
  m = loom__mailbox_take(lp.mb, &tail, 0);
  CHECK(m != NULL && m == tail && m->next == NULL, "one message taken");
  loom__msg_free(m);
  loom__mailbox_release(lp.mb);      /* the lane, never dropped, goes with it */
}

/* }====== */

/* {====== spare blocks through the runtime's pool */

typedef struct poster {
  loom_mailbox *mb;
  loom_msgcache k;
  int who, n, failed;
} poster;

static void post_all (void *arg) {
  poster *s = (poster *)arg;
  int i;
  for (i = 0; i < s->n; i++) {
    unsigned char bytes[8];
    loom_buf b;
    loom_msg *m;
    memcpy(bytes, &s->who, 4);
    memcpy(bytes + 4, &i, 4);
    b.p = bytes;
    b.len = b.cap = sizeof bytes;
    m = loom__msg_newc(&s->k, LOOM_MSG_MESSAGE, (uint64_t)s->who, &b, NULL);
    if (m == NULL || loom__mailbox_push(s->mb, m) != 0) s->failed++;
  }
  loom__msgcache_free(&s->k);      /* (a thread's cache goes when it ends) */
}

static void test_spare_pool (void) {
  loom_mailbox *mb = loom__mailbox_new();
  loom_msgpool pool;
  loom_msgcache own;
  poster s[2];
  uv_thread_t t[2];
  int next[2] = {0, 0}, i, got = 0, bad = 0, maxn = 0, n = under_valgrind() ? 5000 : 200000;
  CHECK(mb != NULL, "mailbox");
  loom__msgpool_init(&pool, NULL);
  memset(&own, 0, sizeof own);
  own.pool = &pool;
  for (i = 0; i < 2; i++) {
    memset(&s[i], 0, sizeof s[i]);
    s[i].mb = mb; s[i].who = i; s[i].n = n; s[i].k.pool = &pool;
    CHECK(uv_thread_create(&t[i], post_all, &s[i]) == 0, "thread %d", i);
  }
  while (got < 2 * n && !bad) {
    loom_msg *tail, *m = loom__mailbox_take(mb, &tail, 0), *next_m;
    for (; m; m = next_m) {
      int who, seq;
      next_m = m->next;
      memcpy(&who, m->data, 4);
      memcpy(&seq, m->data + 4, 4);
      if (m->len != 8 || who < 0 || who > 1 || seq != next[who]) bad = 1;
      else next[who]++;
      got++;
      loom__msg_freec(&own, m);
      if (atomic_load(&pool.n) > maxn) maxn = atomic_load(&pool.n);
    }
  }
  for (i = 0; i < 2; i++) uv_thread_join(&t[i]);
  CHECK(!bad, "each reused block carries its own message, in order");
  CHECK(got == 2 * n, "every message once (%d of %d)", got, 2 * n);
  CHECK(s[0].failed == 0 && s[1].failed == 0, "no refused post");
  CHECK(maxn <= 64 + 2, "the pool stays bounded (%d batches at most)", maxn);
  CHECK(own.n <= LOOM_MSG_KEEP, "a cache keeps at most a batch (%d)", own.n);
  loom__msgcache_free(&own);
  loom__msgpool_fini(&pool);
  CHECK(atomic_load(&pool.top) == NULL, "the pool is empty after fini");
  loom__mailbox_release(mb);
}

/* }====== */

int main (void) {
  srand((unsigned)uv_hrtime());
  heavy = loom__mailbox_barriers();
  test_order();
  test_close_race();
  test_wake();
  test_loop_wake();
  if (!heavy)                         /* seccomp, old kernels: the fence mode only */
    printf("test_mailbox: no membarrier here; the barrier mode is not tested\n");
  test_lanes(0);
  test_lanes(7);
  test_lane_take();
  test_lane_wait();
  test_lane_exit();
  test_lane_close();
  heavy = 0;                         /* as where the kernel has no barrier */
  test_lanes(0);
  test_lanes(7);
  test_lane_take();
  test_lane_wait();
  test_lane_exit();
  test_lane_close();
  test_spare_pool();
  printf("test_mailbox: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
