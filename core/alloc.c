/*
** alloc.c: the allocator of the Lua states loom runs.  With libmimalloc
** (LOOM_HAVE_MIMALLOC), a worker's state and the state of a plain Lua
** interpreter that requires loom allocate from mimalloc's heap of their
** own thread: size classes, no lock, objects of one size side by side
** (the big clone's decode is about a third faster).  Such a state was
** made by lauxlib's allocator (libc's realloc), so it holds blocks of
** libc's when it switches: a block's address says whose it is, and libc's
** go back to libc.  A worker switches once its script has run: what it
** boots (about 150 KiB, kept while it idles) stays packed in libc's heap,
** what its messages churn is mimalloc's.  A host's own lua_Alloc is never
** replaced.  Without libmimalloc nothing here switches anything.
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
/* this file alone calls libc's heap by name: undo loom_int.h's override */
#undef malloc
#undef free
#undef realloc

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

lua_Alloc loom__alloc_fast (void) { return lua_mialloc; }

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

lua_Alloc loom__alloc_fast (void) { return NULL; }

void loom__alloc_adopt (lua_State *L) { (void)L; }

#endif
