/*
** message.c: byte buffers and messages, and where their memory comes from.
** A message moves sender -> mailbox -> receiver and is freed by the
** receiver.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_int.h"

/* {======================================================================
** Buffers and messages
** ======================================================================= */

int loom__buf_reserve (loom_buf *b, size_t extra) {
  size_t need, cap;
  unsigned char *np;
  if (b->cap - b->len >= extra) return 0;
  if (extra > SIZE_MAX / 2 - b->len) return -1;
  need = b->len + extra;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  if (cap >= ((size_t)8 << 20) && cap / 2 + cap / 4 >= need)
    cap = need + need / 8;   /* large: grow by 1/8, not to the next power of 2 */
  np = (unsigned char *)realloc(b->p, cap);
  if (np == NULL) return -1;
  b->p = np;
  b->cap = cap;
  return 0;
}

void loom__buf_free (loom_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

#define MSG_INLINE_MAX 4096   /* larger payloads move their buffer */

loom_msg *loom__msg_new (int kind, uint64_t target, int aux, loom_buf *b) {
  size_t len = b ? b->len : 0;
  loom_msg *m;
  if (len <= MSG_INLINE_MAX) {
    m = (loom_msg *)malloc(sizeof(loom_msg) + len);
    if (m == NULL) return NULL;
    m->data = m->inline_;
    if (len) memcpy(m->inline_, b->p, len);
  }
  else {
    m = (loom_msg *)malloc(sizeof(loom_msg));
    if (m == NULL) return NULL;
    m->data = b->p;  /* the buffer now belongs to the message */
    m->cap = b->cap;
    b->p = NULL;
    b->len = b->cap = 0;
  }
  m->next = NULL;
  m->target = target;
  m->kind = kind;
  m->aux = aux;
  m->len = len;
  return m;
}

void loom__msg_free (loom_msg *m) {
  if (m == NULL) return;
  if (m->data != m->inline_) free(m->data);
  free(m);
}

void loom__msg_release (loom_runtime *rt, loom_msg *m) {
  if (m->data != m->inline_ && m->cap >= LOOM_SPARE_MIN) {
    unsigned char *old = NULL;
    uv_mutex_lock(&rt->lock);
    if (m->cap > rt->sparecap) {     /* keep the larger one */
      old = rt->spare;
      rt->spare = m->data;
      rt->sparecap = m->cap;
      m->data = m->inline_;
    }
    uv_mutex_unlock(&rt->lock);
    free(old);
  }
  loom__msg_free(m);
}

void loom__buf_take_spare (loom_runtime *rt, loom_buf *b) {
  uv_mutex_lock(&rt->lock);
  if (rt->spare) {
    b->p = rt->spare;
    b->cap = rt->sparecap;
    b->len = 0;
    rt->spare = NULL;
    rt->sparecap = 0;
  }
  uv_mutex_unlock(&rt->lock);
}

/* }====================================================================== */
