/*
** buf.c: growable byte buffers and lists of owned references, the two
** halves of every encoded value.  Knows no Lua and no thread.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_int.h"

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
  if (b->p == NULL || (b->cap >= LOOM_BUF_LIBC) == (cap >= LOOM_BUF_LIBC))
    np = (unsigned char *)(cap >= LOOM_BUF_LIBC ? loom__libc_realloc(b->p, cap)
                                                : realloc(b->p, cap));
  else {                     /* grows past LOOM_BUF_LIBC: moves to libc */
    np = (unsigned char *)loom__libc_malloc(cap);
    if (np == NULL) return -1;
    memcpy(np, b->p, b->len);
    free(b->p);
  }
  if (np == NULL) return -1;
  b->p = np;
  b->cap = cap;
  return 0;
}

void loom__bytes_free (void *p, size_t cap) {
  if (cap >= LOOM_BUF_LIBC) loom__libc_free(p);
  else free(p);
}

void loom__buf_free (loom_buf *b) {
  loom__bytes_free(b->p, b->cap);
  b->p = NULL;
  b->len = b->cap = 0;
}

int loom__buf_writer (lua_State *L, const void *p, size_t sz, void *ud) {
  loom_buf *b = (loom_buf *)ud;
  (void)L;
  if (loom__buf_reserve(b, sz)) return 1;
  memcpy(b->p + b->len, p, sz);
  b->len += sz;
  return 0;
}

int loom__refs_add (loom_refs *r, const loom_refvt *vt, void *p) {
  if (r->n == r->cap) {
    uint32_t ncap = r->cap ? r->cap * 2 : 4;
    loom_ref *nv;
    if (ncap < r->cap) return -1;
    nv = (loom_ref *)realloc(r->v, ncap * sizeof *nv);
    if (nv == NULL) return -1;
    r->v = nv;
    r->cap = ncap;
  }
  r->v[r->n].vt = vt;
  r->v[r->n].p = p;
  r->n++;
  return 0;
}

void loom__refs_clear (loom_refs *r) {
  uint32_t i;
  for (i = 0; i < r->n; i++)
    if (r->v[i].vt) r->v[i].vt->release(r->v[i].p);
  r->n = 0;
}

void loom__refs_free (loom_refs *r) {
  loom__refs_clear(r);
  free(r->v);
  r->v = NULL;
  r->cap = 0;
}
