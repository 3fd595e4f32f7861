/*
** wake.c: a thread's wake-up.  Any thread sends; the owner's loop runs
** the callback.  Knows no Lua.
**
** On Linux it is an eventfd in the owner's loop (a uv_poll_t), and a send
** is one write().  libuv's uv_async_send marks the handle busy around its
** own write, and the woken loop spins (997 pauses, then sched_yield, over
** and over) until the mark clears.  When the wake-up makes the kernel run
** the woken thread on the sender's own CPU, the sender is preempted inside
** that window and the woken thread spins against it: on 2 busy cores this
** was a third of a pool's main thread time (perf), and the worker it had
** preempted lost the same.  An eventfd has no such window: the write is
** the whole send.  'pending' spares the senders that come while a write
** is unread a syscall each: the owner reads the count, then clears the
** flag, then runs the callback (which takes the mailbox).  A sender that
** found the flag set made its push before that clear, so the callback
** sees its message; one that set it writes again.
** Elsewhere: uv_async_t.
*/
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include "loom_int.h"

#if defined(__linux__)
#include <sys/eventfd.h>
#include <unistd.h>
#define LOOM_EVENTFD 1
#endif

/* Owned by the owner's loop (handle, callback); 'fd' is read by senders,
** who reach the wake only through a mailbox that forgets it (under the
** mailbox's lock) before the owner closes it. */
struct loom_wake {
  union {
    uv_handle_t handle;
#ifdef LOOM_EVENTFD
    uv_poll_t poll;
#else
    uv_async_t async;
#endif
  } h;
  int fd;                 /* the eventfd; -1 off Linux */
  atomic_int pending;     /* 1: a write is unread (seq_cst; Linux) */
  loom_wakefn fn;
  void *ud;
};

static void onclose (uv_handle_t *h) {
  loom_wake *w = (loom_wake *)h->data;
#ifdef LOOM_EVENTFD
  if (w->fd >= 0) close(w->fd);
#endif
  free(w);
}

#ifdef LOOM_EVENTFD

static void on_readable (uv_poll_t *p, int status, int events) {
  loom_wake *w = (loom_wake *)p->data;
  uint64_t n;
  (void)status; (void)events;
  /* the count, the flag, then the callback (which takes the mailbox) */
  while (read(w->fd, &n, sizeof n) < 0 && errno == EINTR) {}
  atomic_store(&w->pending, 0);
  w->fn(w->ud);
}

/* The handle, watching a new eventfd: 0 or an error; *inloop is set once
** the handle is the loop's (then only the loop's close may free w). */
static int start (loom_wake *w, uv_loop_t *loop, int *inloop) {
  int r;
  w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->fd < 0) return uv_translate_sys_error(errno);
  if ((r = uv_poll_init(loop, &w->h.poll, w->fd)) != 0) {
    close(w->fd);          /* (a poll that failed to init holds nothing) */
    return r;
  }
  w->h.poll.data = w;
  *inloop = 1;
  return uv_poll_start(&w->h.poll, UV_READABLE, on_readable);
}

void loom__wake_send (loom_wake *w) {
  uint64_t one = 1;
  if (atomic_load(&w->pending) || atomic_exchange(&w->pending, 1))
    return;      /* (both after the caller's push, in one total order) */
  /* EAGAIN only at a count of 2^64 - 2: the owner is woken anyway */
  while (write(w->fd, &one, sizeof one) < 0 && errno == EINTR) {}
}

#else

static void on_async (uv_async_t *a) {
  loom_wake *w = (loom_wake *)a->data;
  w->fn(w->ud);
}

static int start (loom_wake *w, uv_loop_t *loop, int *inloop) {
  int r = uv_async_init(loop, &w->h.async, on_async);
  w->h.async.data = w;
  *inloop = r == 0;
  return r;
}

void loom__wake_send (loom_wake *w) {
  uv_async_send(&w->h.async);
}

#endif

int loom__wake_init (loom_wake **pw, uv_loop_t *loop, loom_wakefn fn, void *ud) {
  loom_wake *w = (loom_wake *)malloc(sizeof *w);
  int r, inloop = 0;
  *pw = NULL;
  if (w == NULL) return UV_ENOMEM;
  w->fd = -1;
  atomic_init(&w->pending, 0);
  w->fn = fn;
  w->ud = ud;
  if ((r = start(w, loop, &inloop)) != 0) {
    if (inloop) uv_close(&w->h.handle, onclose);   /* the loop's close frees it */
    else free(w);
    return r;
  }
  *pw = w;
  return 0;
}

uv_handle_t *loom__wake_handle (loom_wake *w) {
  return &w->h.handle;
}

void loom__wake_close (loom_wake *w) {
  if (w && !uv_is_closing(&w->h.handle)) uv_close(&w->h.handle, onclose);
}
