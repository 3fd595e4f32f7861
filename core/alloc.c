/*
** alloc.c: the allocator of the Lua states loom runs.  With libmimalloc
** (LOOM_HAVE_MIMALLOC):
** - a worker's state is born on an arena of its own (below): its small
**   blocks packed in one region and reused through a list per size
**   class, its big ones on mimalloc's heap of its thread.  Against the
**   state on libc's heap that switched to mimalloc's once its script had
**   run: 28% fewer instructions to boot and echo, 5% less resident
**   memory per idle worker, small messages decoded faster;
** - the state of a plain Lua interpreter that requires loom switches to
**   mimalloc's heap (size classes, no lock: the big clone's decode is
**   about a third faster).  It was made by lauxlib's allocator (libc's
**   realloc), so it holds blocks of libc's: a block's address says whose
**   it is, and libc's go back to libc.
** A host's own lua_Alloc is never replaced.  Without libmimalloc (the
** sanitizer and valgrind builds, which must see every block) the states
** stay on libc's heap.
*/
#define _GNU_SOURCE 1            /* dladdr, RTLD_NODELETE */
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>                  /* malloc_trim */
#endif
#include "loom_lua.h"

#ifdef LOOM_HAVE_MIMALLOC
#include <dlfcn.h>
#include <mimalloc.h>
#endif
/* this file alone calls libc's heap by name (loom_int.h maps loom's own
** malloc, free and realloc to mimalloc's) */
#undef malloc
#undef free
#undef realloc
#undef calloc
#undef posix_memalign

void *loom__libc_malloc (size_t n) { return malloc(n); }
void *loom__libc_realloc (void *p, size_t n) { return realloc(p, n); }
void *loom__libc_calloc (size_t n, size_t size) { return calloc(n, size); }
void loom__libc_free (void *p) { free(p); }

void *loom__libc_memalign (size_t align, size_t n) {
  void *p;
  return posix_memalign(&p, align, n) == 0 ? p : NULL;
}

char *loom__libc_strdup (const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

void *loom__alloc_libc (void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud; (void)osize;
  if (nsize == 0) { free(ptr); return NULL; }
  return realloc(ptr, nsize);
}

#ifdef LOOM_HAVE_MIMALLOC

/* From this size on a block is libc's (which maps such blocks anyway):
** mimalloc 2.0.9 maps blocks of about 1 GiB and more outside the range
** where mi_is_in_heap_region finds its own, and reserves the huge ones
** that libc refuses (plain Lua's "not enough memory") */
#define LOOM_BIG ((size_t)64 << 20)

/* A block of nsize bytes that is libc's, with the first 'keep' bytes of
** p (a block of mimalloc's, freed), or NULL (p stays valid). */
static void *tolibc (void *p, size_t keep, size_t nsize) {
  void *n = malloc(nsize);
  if (n == NULL) return NULL;
  if (keep) memcpy(n, p, keep);
  mi_free(p);
  return n;
}

/* mimalloc's blocks are those mi_is_in_heap_region finds, every other one
** is libc's: each block mimalloc hands out is checked once, and one it
** would not find again goes to libc at once. */
static void *lua_mialloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  void *n;
  size_t keep = osize < nsize ? osize : nsize;
  (void)ud;
  if (ptr == NULL) {
    if (nsize == 0) return NULL;
    if (nsize >= LOOM_BIG) return malloc(nsize);
    n = mi_malloc(nsize);
    return n && !mi_is_in_heap_region(n) ? tolibc(n, 0, nsize) : n;
  }
  if (mi_is_in_heap_region(ptr)) {
    if (nsize == 0) { mi_free(ptr); return NULL; }
    if (nsize >= LOOM_BIG) return tolibc(ptr, keep, nsize);
    n = mi_realloc(ptr, nsize);      /* NULL: ptr stays valid */
    return n && !mi_is_in_heap_region(n) ? tolibc(n, keep, nsize) : n;
  }
  if (nsize == 0) { free(ptr); return NULL; }   /* libc's */
  if (nsize >= LOOM_BIG) return realloc(ptr, nsize);
  if ((n = mi_malloc(nsize)) == NULL) return NULL;   /* ptr stays valid */
  if (!mi_is_in_heap_region(n)) {    /* (never seen: then it stays libc's) */
    mi_free(n);
    return realloc(ptr, nsize);
  }
  memcpy(n, ptr, keep);
  free(ptr);
  return n;
}

/* Blocks of LOOM_BIG bytes and more are libc's, the others mimalloc's:
** Lua gives every block's size, so its size says whose it is. */
static void *bysize (void *ptr, size_t osize, size_t nsize) {
  void *n;
  int wasbig = ptr != NULL && osize >= LOOM_BIG, big = nsize >= LOOM_BIG;
  if (nsize == 0) {
    if (wasbig) free(ptr);
    else mi_free(ptr);
    return NULL;
  }
  if (ptr == NULL) return big ? malloc(nsize) : mi_malloc(nsize);
  if (wasbig == big) {
    n = big ? realloc(ptr, nsize) : mi_realloc(ptr, nsize);
    return n == NULL && nsize <= osize ? ptr : n;    /* a shrink never fails */
  }
  if ((n = big ? malloc(nsize) : mi_malloc(nsize)) == NULL) return NULL;
  memcpy(n, ptr, osize < nsize ? osize : nsize);
  if (wasbig) free(ptr);
  else mi_free(ptr);
  return n;
}
#define NEXT(ptr, osize, nsize) bysize(ptr, osize, nsize)
#else
#define NEXT(ptr, osize, nsize) loom__alloc_libc(NULL, ptr, osize, nsize)
#endif

/* {======================================================================
** A worker state's arena: its blocks of up to ARENA_MAX bytes, bumped
** from one region and, once freed, kept on a list of their size class
** for the next block of that class (no header, no lock, no search).
** What a worker boots (about 90 KiB) lies packed in a few pages, and the
** small tables and strings its messages churn come and go through the
** lists.  A bigger block, and a small one when its list is empty and the
** region is used up, is the next allocator's (mimalloc's with
** LOOM_HAVE_MIMALLOC, libc's otherwise): a block's address says whether
** it is the arena's, and then its size whose it is.  The region goes back
** only when its state has closed.  Lua passes every block's size when it
** frees or resizes it; a C module that frees a Lua block with another
** size breaks the arena as it would break any size-class allocator.
** ======================================================================= */

#define ARENA_MAX 4096    /* 32 classes 16 bytes apart up to 512, then 4 per doubling */
#define ARENA_NCLASS 44

struct loom_arena {  /* one worker's; no lock: only its state's thread uses it */
  char *top, *end;                 /* the region's unused part */
  void *freel[ARENA_NCLASS];       /* freed blocks of each class (LIFO) */
};

/* the class of a block of n bytes, 1 <= n <= ARENA_MAX */
static unsigned sclass (size_t n) {
  unsigned b = 9, q;
  if (n <= 512) return (unsigned)((n - 1) >> 4);
  while ((n - 1) >> (b + 1)) b++;            /* 2^b <= n-1 < 2^(b+1) */
  q = (unsigned)((n - 1) >> (b - 2)) & 3;
  return 32 + (b - 9) * 4 + q;
}

static size_t csize (unsigned c) {
  unsigned b, q;
  if (c < 32) return (size_t)(c + 1) << 4;
  b = 9 + (c - 32) / 4, q = (c - 32) % 4;
  return ((size_t)1 << b) + ((size_t)(q + 1) << (b - 2));
}

loom_arena *loom__arena_new (size_t size) {
  loom_arena *a;
  size_t head = (sizeof(loom_arena) + 15) & ~(size_t)15;
  if (size < head + ARENA_MAX || (a = (loom_arena *)malloc(size)) == NULL) return NULL;
  memset(a->freel, 0, sizeof a->freel);
  a->top = (char *)a + head;         /* malloc's 16-byte alignment, kept */
  a->end = (char *)a + size;
  return a;
}

void loom__arena_free (loom_arena *a) { free(a); }

static int inarena (const loom_arena *a, const void *p) {
  return (uintptr_t)p >= (uintptr_t)a && (uintptr_t)p < (uintptr_t)a->end;
}

static void *anew (loom_arena *a, size_t n) {
  if (n <= ARENA_MAX) {
    unsigned c = sclass(n);
    void *p = a->freel[c];
    if (p != NULL) {
      memcpy(&a->freel[c], p, sizeof p);
      return p;
    }
    if ((size_t)(a->end - a->top) >= csize(c)) {
      p = a->top;
      a->top += csize(c);
      return p;
    }
  }
  return NEXT(NULL, 0, n);
}

static void afree (loom_arena *a, void *p, size_t osize) {
  unsigned c;
  if (osize == 0 || osize > ARENA_MAX) return;   /* not Lua's size: never reused */
  c = sclass(osize);
  memcpy(p, &a->freel[c], sizeof p);
  a->freel[c] = p;
}

void *loom__arena_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  loom_arena *a = (loom_arena *)ud;
  void *n;
  if (ptr == NULL) return nsize ? anew(a, nsize) : NULL;
  if (!inarena(a, ptr)) return NEXT(ptr, osize, nsize);
  if (nsize == 0) { afree(a, ptr, osize); return NULL; }
  if (nsize <= ARENA_MAX && sclass(nsize) == sclass(osize)) return ptr;
  if ((n = anew(a, nsize)) == NULL)       /* ptr stays valid */
    return nsize < osize ? ptr : NULL;    /* a shrink never fails: the block
                                          ** serves the smaller class from now on */
  memcpy(n, ptr, osize < nsize ? osize : nsize);
  afree(a, ptr, osize);
  return n;
}

/* }====================================================================== */

#ifdef LOOM_HAVE_MIMALLOC

/* Keep the file that holds lua_mialloc mapped until the process ends: a
** module's library is closed by the state's finalizers, and the state
** frees its last blocks after them.  0 when it cannot be pinned. */
static int pin_self (void) {
  Dl_info info;
  void *h;
  if (!dladdr((void *)(uintptr_t)lua_mialloc, &info) || info.dli_fname == NULL) return 0;
  h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  if (h == NULL) return 0;
  dlclose(h);                    /* the count it took; NODELETE stays */
  return 1;
}

void loom__alloc_adopt (lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud), dflt;
  lua_State *probe = luaL_newstate();    /* only lauxlib's, never a host's */
  if (probe == NULL) return;
  dflt = lua_getallocf(probe, NULL);
  lua_close(probe);
  if (f == dflt && ud == NULL && pin_self()) lua_setallocf(L, lua_mialloc, NULL);
}

void loom__alloc_collect (void) {
  mi_collect(true);
#ifdef __GLIBC__
  malloc_trim(0);                    /* and libc's: what workers booted */
#endif
}

#else

void loom__alloc_collect (void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

void loom__alloc_adopt (lua_State *L) { (void)L; }

#endif
