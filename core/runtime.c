/*
** runtime.c: the runtime object.  Shared by every thread of one runtime:
** its configuration, one id space for threads and endpoints, the bytecode
** of loom's Lua modules (so workers load them without a search), and a
** spare large buffer whose pages are already mapped.  Knows no Lua.
*/
#include <stdlib.h>
#include <string.h>
#include "loom_int.h"

#define LOOM_SPIN_US_DEFAULT 50

loom_runtime *loom_runtime_new (const loom_config *cfg) {
  loom_runtime *rt = (loom_runtime *)calloc(1, sizeof *rt);
  if (rt == NULL) return NULL;
  if (uv_mutex_init(&rt->lock)) { free(rt); return NULL; }
  atomic_init(&rt->refs, 1);
  atomic_init(&rt->next_id, 1);
  if (cfg) rt->cfg = *cfg;
  if (rt->cfg.stack_kb == 0) rt->cfg.stack_kb = 4096;
  rt->t0 = uv_hrtime();
  if (rt->cfg.spin_us == 0) rt->cfg.spin_us = LOOM_SPIN_US_DEFAULT;
  rt->spin_ns = rt->cfg.spin_us > 0 ? (uint64_t)rt->cfg.spin_us * 1000u : 0;
  if (rt->cfg.close_ms <= 0) rt->cfg.close_ms = (int)(LOOM_JOIN_GRACE_NS / 1000000u);
  rt->close_ns = (uint64_t)rt->cfg.close_ms * 1000000u;
  rt->heavy = rt->cfg.lane_barrier > 0 && loom__mailbox_barriers();
  return rt;
}

void loom__runtime_retain (loom_runtime *rt) {
  atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

void loom_runtime_release (loom_runtime *rt) {
  /* acq_rel: the last holder must see every other holder's writes. */
  if (rt == NULL || atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
    return;
  while (rt->boot) {
    loom_boot *b = rt->boot;
    rt->boot = b->next;
    loom__libc_free(b);
  }
  while (rt->bcast) {               /* none once every state has closed */
    loom_bcgroup *g = rt->bcast;
    rt->bcast = g->next;
    while (g->members) {
      loom_bcmember *m = g->members;
      g->members = m->next;
      loom__mailbox_release(m->mb);
      loom__libc_free(m);
    }
    loom__libc_free(g->name);
    loom__libc_free(g);
  }
  while (rt->kept) {
    loom_kept *k = rt->kept;
    rt->kept = k->next;
    if (k->fini) k->fini(k->u.data);
    loom__libc_free(k);
  }
  loom__bytes_free(rt->spare, rt->sparecap);
  uv_mutex_destroy(&rt->lock);
  free(rt);
}

uint64_t loom__runtime_newid (loom_runtime *rt) {
  return (uint64_t)atomic_fetch_add(&rt->next_id, 1);
}

static const loom_boot *findboot (const loom_boot *b, const char *name) {
  for (; b; b = b->next)
    if (strcmp(b->name, name) == 0) return b;
  return NULL;
}

const loom_boot *loom__runtime_boot_find (loom_runtime *rt, const char *name) {
  const loom_boot *head;
  uv_mutex_lock(&rt->lock);
  head = rt->boot;
  uv_mutex_unlock(&rt->lock);
  return findboot(head, name);   /* what head reaches never changes */
}

int loom__runtime_boot_add (loom_runtime *rt, const char *name, const char *code,
                            size_t len, int file) {
  size_t n = strlen(name);
  loom_boot *b;
  const loom_boot *had;
  int r = 1;
  if (len > SIZE_MAX - sizeof *b - n - 1 ||
      (b = (loom_boot *)loom__libc_malloc(sizeof *b + n + 1 + len)) == NULL)
    return -1;
  memcpy(b->name, name, n + 1);
  memcpy(b->name + n + 1, code, len);
  b->code = b->name + n + 1;
  b->len = len;
  b->file = file;
  uv_mutex_lock(&rt->lock);
  had = findboot(rt->boot, name);
  if (had == NULL || (had->file && !file)) {   /* publish at the head */
    b->next = rt->boot;
    rt->boot = b;
    r = 0;
  }
  uv_mutex_unlock(&rt->lock);
  if (r) loom__libc_free(b);
  return r;
}

void loom__runtime_give_spare (loom_runtime *rt, loom_buf *b) {
  unsigned char *old = NULL;
  size_t oldcap = 0;
  if (b->cap < LOOM_SPARE_MIN || b->cap > LOOM_SPARE_MAX) return;
  uv_mutex_lock(&rt->lock);
  if (b->cap > rt->sparecap) {     /* keep the larger one */
    old = rt->spare;
    oldcap = rt->sparecap;
    rt->spare = b->p;
    rt->sparecap = b->cap;
    b->p = NULL;
    b->len = b->cap = 0;
  }
  uv_mutex_unlock(&rt->lock);
  loom__bytes_free(old, oldcap);
}

void loom__runtime_take_spare (loom_runtime *rt, loom_buf *b) {
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

/* under rt->lock */
static loom_bcgroup **bcfind (loom_runtime *rt, const char *name) {
  loom_bcgroup **pp;
  for (pp = &rt->bcast; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->name, name) == 0) break;
  return pp;
}

int loom__runtime_bc_join (loom_runtime *rt, const char *name, uint64_t id,
                           loom_mailbox *mb) {
  /* libc's: the group outlives the thread that joined it (loom_int.h) */
  loom_bcmember *m = (loom_bcmember *)loom__libc_malloc(sizeof *m);
  loom_bcgroup *g = (loom_bcgroup *)loom__libc_calloc(1, sizeof *g), **pp;
  char *nm = loom__libc_strdup(name);
  if (m == NULL || g == NULL || nm == NULL) {
    loom__libc_free(m); loom__libc_free(g); loom__libc_free(nm);
    return -1;
  }
  loom__mailbox_retain(mb);
  m->id = id;
  m->mb = mb;
  uv_mutex_lock(&rt->lock);
  pp = bcfind(rt, name);
  if (*pp == NULL) {              /* a new name: the group we made */
    g->name = nm;
    *pp = g;
    g = NULL;
    nm = NULL;
  }
  m->next = (*pp)->members;
  (*pp)->members = m;
  uv_mutex_unlock(&rt->lock);
  loom__libc_free(g);
  loom__libc_free(nm);
  return 0;
}

void loom__runtime_bc_leave (loom_runtime *rt, const char *name, uint64_t id) {
  loom_bcgroup **pp, *g = NULL;
  loom_bcmember **mp, *m = NULL;
  uv_mutex_lock(&rt->lock);
  pp = bcfind(rt, name);
  if (*pp) {
    for (mp = &(*pp)->members; *mp; mp = &(*mp)->next)
      if ((*mp)->id == id) {
        m = *mp;
        *mp = m->next;
        break;
      }
    if ((*pp)->members == NULL) {  /* the last one out frees the name */
      g = *pp;
      *pp = g->next;
    }
  }
  uv_mutex_unlock(&rt->lock);
  if (m) {
    loom__mailbox_release(m->mb);
    loom__libc_free(m);
  }
  if (g) {
    loom__libc_free(g->name);
    loom__libc_free(g);
  }
}

int loom__runtime_bc_members (loom_runtime *rt, const char *name, uint64_t except,
                              loom_bcmember **out, size_t *n) {
  loom_bcgroup **pp;
  loom_bcmember *m, *v = NULL;
  size_t k = 0, cap = 0;
  uv_mutex_lock(&rt->lock);
  pp = bcfind(rt, name);
  if (*pp)
    for (m = (*pp)->members; m; m = m->next) cap += m->id != except;
  if (cap && (v = (loom_bcmember *)malloc(cap * sizeof *v)) == NULL) {
    uv_mutex_unlock(&rt->lock);
    return -1;
  }
  if (*pp)
    for (m = (*pp)->members; m; m = m->next)
      if (m->id != except) {
        v[k] = *m;
        loom__mailbox_retain(m->mb);
        k++;
      }
  uv_mutex_unlock(&rt->lock);
  *out = v;
  *n = k;
  return 0;
}

void *loom__runtime_keep (loom_runtime *rt, const void *key, size_t size,
                          void (*init)(void *block, const void *key),
                          void (*fini)(void *block)) {
  loom_kept *k;
  uv_mutex_lock(&rt->lock);
  for (k = rt->kept; k; k = k->next)
    if (k->key == key) break;
  /* libc's: kept as long as the runtime, whoever asked first (loom_int.h) */
  if (k == NULL && (k = (loom_kept *)loom__libc_calloc(1, offsetof(loom_kept, u) + size)) != NULL) {
    k->key = key;
    k->fini = fini;
    init(k->u.data, key);
    k->next = rt->kept;
    rt->kept = k;
  }
  uv_mutex_unlock(&rt->lock);
  return k ? k->u.data : NULL;
}
