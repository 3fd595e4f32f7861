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

loom_msg *loom__msg_new (int kind, uint64_t target, loom_buf *b, loom_refs *refs) {
  size_t len = b ? b->len : 0;
  loom_ref *rv = NULL;
  loom_msg *m;
  if (refs && refs->n) {     /* the references get an array of their own */
    rv = (loom_ref *)malloc(refs->n * sizeof *rv);
    if (rv == NULL) return NULL;
  }
  if (len <= MSG_INLINE_MAX) {
    m = (loom_msg *)malloc(sizeof(loom_msg) + len);
    if (m == NULL) { free(rv); return NULL; }
    m->data = m->inline_;
    m->cap = 0;
    if (len) memcpy(m->inline_, b->p, len);
  }
  else {
    m = (loom_msg *)malloc(sizeof(loom_msg));
    if (m == NULL) { free(rv); return NULL; }
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
  if (rv) {
    memcpy(rv, refs->v, refs->n * sizeof *rv);
    m->nrefs = refs->n;
    refs->n = 0;              /* moved: the list no longer owns them */
  }
  return m;
}

void loom__msg_free (loom_msg *m) {
  uint32_t i;
  if (m == NULL) return;
  for (i = 0; i < m->nrefs; i++)
    if (m->refs[i].vt) m->refs[i].vt->release(m->refs[i].p);
  free(m->refs);
  if (m->data != m->inline_) free(m->data);
  free(m);
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
