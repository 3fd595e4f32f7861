/*
** test_stream.c: a streamed message's chunks between two threads.
**  - a writer appends 2,000 chunks of 1 to 5,000 bytes (a pattern that
**    names each byte's chunk and offset) while the reader takes them:
**    every byte arrives once, in order, and the end comes after the last;
**  - the writer aborts after some chunks: the reader gets them, then -1;
**  - a reader waiting on a stream nobody writes is ended by its stop flag;
**  - a reader that drops the stream early (the message freed undelivered)
**    leaves the writer's chunks to the last release: nothing leaks.
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

#define CHUNKS 2000

static unsigned char byte_at (int chunk, size_t off) {
  return (unsigned char)(chunk * 31 + off * 7);
}

static size_t size_of (int chunk) { return 1 + (size_t)(chunk * 2654435761u % 5000); }

typedef struct writer {
  loom_stream *s;
  int n;           /* chunks to write */
  int abort_;      /* end aborted instead of done */
  int failed;
} writer;

static void write_all (void *arg) {
  writer *w = (writer *)arg;
  int i;
  for (i = 0; i < w->n; i++) {
    loom_buf b = {NULL, 0, 0};
    size_t k, n = size_of(i);
    if (loom__buf_reserve(&b, n)) { w->failed++; continue; }
    for (k = 0; k < n; k++) b.p[k] = byte_at(i, k);
    b.len = n;
    if (loom__stream_append(w->s, &b)) { w->failed++; loom__buf_free(&b); }
  }
  loom__stream_end(w->s, !w->abort_, NULL);
}

static void test_order (int abort_) {
  loom_stream *s = loom__stream_new();
  writer w;
  uv_thread_t t;
  int chunk = 0, bad = 0, r;
  const unsigned char *p;
  size_t len;
  CHECK(s != NULL, "stream");
  w.s = s; w.n = CHUNKS; w.abort_ = abort_; w.failed = 0;
  CHECK(uv_thread_create(&t, write_all, &w) == 0, "writer");
  while ((r = loom__stream_next(s, &p, &len, NULL)) == 1) {
    size_t k;
    if (len != size_of(chunk)) bad = 1;
    for (k = 0; k < len && !bad; k++)
      if (p[k] != byte_at(chunk, k)) bad = 1;
    chunk++;
  }
  uv_thread_join(&t);
  CHECK(w.failed == 0, "the writer appended every chunk");
  CHECK(!bad, "every chunk's bytes, in order");
  if (abort_) {
    CHECK(r == -1, "an aborted stream ends with -1 (got %d)", r);
    CHECK(chunk <= CHUNKS, "no more chunks than written (%d)", chunk);
  }
  else {
    CHECK(r == 0, "the end after the last chunk (got %d)", r);
    CHECK(chunk == CHUNKS, "every chunk (%d of %d)", chunk, CHUNKS);
    CHECK(loom__stream_next(s, &p, &len, NULL) == 0, "the end again");
  }
  loom__stream_release(s);      /* the reader's count: the last one */
}

typedef struct stopper {
  atomic_int *flag;
} stopper;

static void stop_soon (void *arg) {
  stopper *st = (stopper *)arg;
  uv_sleep(30);
  atomic_store(st->flag, 1);
}

static void test_stop (void) {
  loom_stream *s = loom__stream_new();
  atomic_int flag;
  stopper st;
  uv_thread_t t;
  const unsigned char *p;
  size_t len;
  loom_ref *rv;
  uint32_t nrv;
  uint64_t t0 = uv_hrtime();
  atomic_init(&flag, 0);
  st.flag = &flag;
  uv_thread_create(&t, stop_soon, &st);
  CHECK(loom__stream_next(s, &p, &len, &flag) == -2, "a stop ends the wait for a chunk");
  CHECK(uv_hrtime() - t0 < (uint64_t)10e9, "and soon");
  uv_thread_join(&t);
  CHECK(loom__stream_refs(s, &rv, &nrv, &flag) == -2, "and the wait for the references");
  loom__stream_end(s, 0, NULL);      /* the writer gives up */
  loom__stream_release(s);
}

static void test_drop (void) {
  loom_stream *s = loom__stream_new();
  writer w;
  uv_thread_t t;
  const unsigned char *p;
  size_t len;
  w.s = s; w.n = 200; w.abort_ = 0; w.failed = 0;
  uv_thread_create(&t, write_all, &w);
  CHECK(loom__stream_next(s, &p, &len, NULL) == 1, "a first chunk");
  loom__stream_release(s);           /* dropped while the writer goes on */
  uv_thread_join(&t);
  CHECK(w.failed == 0, "the writer went on");
}

int main (void) {
  test_order(0);
  test_order(1);
  test_stop();
  test_drop();
  printf("test_stream: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
