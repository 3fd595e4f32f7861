/*
** test_arena.c: a worker state's arena (core/alloc.c) through its
** lua_Alloc, as Lua calls it.  Every block is filled with a pattern of its
** own and checked when it is resized or freed, so two live blocks that
** overlap, or a resize that loses bytes, fail here; ASan (make test-asan)
** checks that nothing is written outside the region or the next heap.
**   classes   in a 10 MiB region, every size 1..4096 gets a block of its
**             own, bumped side by side at least its size apart; a freed
**             block comes back for the next block of its class; a resize
**             inside its class keeps the block
**   overflow  past the region and past 4096 bytes blocks are the next
**             heap's; resizes move blocks both ways and keep their bytes
**   random    400,000 random allocations, resizes and frees
**   lua       a Lua state lives on an arena: it boots, churns, closes
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include <lauxlib.h>
#include "loom_lua.h"

static int failures = 0, checks = 0;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
  fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
  fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

#define REGION ((size_t)64 << 10)

/* a block's bytes: the top byte of its seed's hash stepped on by a
** large odd number per byte (two blocks overlapping at any offset would
** have to agree on every byte they share) */
static unsigned char pat (unsigned seed, size_t i) {
  unsigned h = (seed + 1u) * 2654435761u;
  return (unsigned char)((h + (unsigned)i * 2246822519u) >> 24);
}

static void fill (unsigned char *p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++) p[i] = pat(seed, i);
}

static int intact (const unsigned char *p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != pat(seed, i)) return 0;
  return 1;
}

static size_t region = REGION;   /* of the arena the test at hand uses */

static int inside (loom_arena *a, const void *p) {
  return (uintptr_t)p >= (uintptr_t)a && (uintptr_t)p < (uintptr_t)a + region;
}

static void *al (loom_arena *a, void *p, size_t o, size_t n) {
  return loom__arena_alloc(a, p, o, n);
}

#define BIG_REGION ((size_t)10 << 20)
static void classes (void) {
  loom_arena *a = loom__arena_new(BIG_REGION);
  static unsigned char *b[4097];
  size_t n;
  int whole = 1, apart = 1, in = 1;
  region = BIG_REGION;
  CHECK(a != NULL, "arena of 10 MiB");
  if (a == NULL) return;
  CHECK(loom__arena_new(0) == NULL, "size 0 makes no arena");
  CHECK(loom__arena_new(100) == NULL, "a region smaller than its biggest block makes none");
  CHECK(al(a, NULL, LUA_TTABLE, 0) == NULL, "a new block of 0 bytes is NULL");
  /* one block of each size (about 8.5 MiB in all), bumped in order */
  for (n = 1; n <= 4096; n++) {
    b[n] = (unsigned char *)al(a, NULL, LUA_TSTRING, n);
    CHECK(b[n] != NULL, "block of %zu", n);
    if (b[n] == NULL) return;
    fill(b[n], n, (unsigned)n);
    in &= inside(a, b[n]);
    if (((uintptr_t)b[n] & 15) != 0) apart = 0;
    if (n > 1 && (size_t)(b[n] - b[n - 1]) < n - 1) apart = 0;
  }
  CHECK(in, "the region holds them all");
  CHECK(apart, "16-byte aligned, each at least its size after the one before");
  for (n = 1; n <= 4096; n++) whole &= intact(b[n], n, (unsigned)n);
  CHECK(whole, "no two blocks overlap");
  /* LIFO reuse of a class */
  {
    unsigned char *p = b[100], *q;
    al(a, p, 100, 0);
    q = (unsigned char *)al(a, NULL, 0, 97);   /* 97..112: the class of 100 */
    CHECK(q == p, "a freed block comes back for its class");
    b[100] = q;
    fill(q, 100, 100);
    p = b[3000];                                /* 2561..3072 */
    al(a, p, 3000, 0);
    q = (unsigned char *)al(a, NULL, 0, 3072);
    CHECK(q == p, "so does a block of a class above 512");
    b[3000] = q;
    fill(q, 3000, 3000);
  }
  /* a free that gives a size Lua never gave (a C module's mistake) */
  {
    unsigned char *p = b[50], *q;
    al(a, p, 0, 0);
    al(a, b[51], 5000, 0);
    q = (unsigned char *)al(a, NULL, 0, 50);
    CHECK(q != p && q != b[51], "a block freed with a wrong size is never handed out again");
    al(a, q, 50, 0);
    b[50] = b[51] = NULL;
  }
  /* resizes */
  {
    unsigned char *p = b[33], *q;             /* 33..48 */
    q = (unsigned char *)al(a, p, 33, 48);
    CHECK(q == p, "growing inside the class keeps the block");
    q = (unsigned char *)al(a, q, 48, 40);
    CHECK(q == p && intact(q, 33, 33), "shrinking inside the class keeps it and its bytes");
    q = (unsigned char *)al(a, q, 40, 300);
    CHECK(q != NULL && q != p && inside(a, q) && intact(q, 33, 33),
          "growing out of the class moves the bytes to a block of the region");
    fill(q, 300, 33);
    p = q;
    q = (unsigned char *)al(a, q, 300, 20);
    CHECK(q != NULL && q != p && inside(a, q) && intact(q, 20, 33),
          "shrinking out of the class moves them to a smaller block");
    if (q) al(a, q, 20, 0);
    b[33] = NULL;
  }
  for (n = 1; n <= 4096; n++) if (b[n]) al(a, b[n], n, 0);
  loom__arena_free(a);
  region = REGION;
}

static void overflow (void) {
  loom_arena *a = loom__arena_new(REGION);
  unsigned char *p, *q, *big;
  void *fillers[64], *small[256];
  int k = 0, out = 0, ns = 0;
  if (a == NULL) { CHECK(0, "arena"); return; }
  big = (unsigned char *)al(a, NULL, 0, 10000);
  CHECK(big != NULL && !inside(a, big), "a block over 4096 bytes is the next heap's");
  fill(big, 10000, 5);
  /* use the region up */
  while (k < 64 && (p = (unsigned char *)al(a, NULL, 0, 4096)) != NULL) {
    fillers[k++] = p;
    if (!inside(a, p)) { out = 1; break; }
  }
  CHECK(out, "blocks go on past the region");
  do {                            /* and the last of it with small blocks */
    p = (unsigned char *)al(a, NULL, 0, 24);
    if (p && inside(a, p)) small[ns++] = p;
  } while (p && inside(a, p) && ns < 256);
  CHECK(p != NULL && !inside(a, p), "a small block past the region is the next heap's");
  if (p == NULL) return;
  fill(p, 24, 6);
  q = (unsigned char *)al(a, p, 24, 5000);
  CHECK(q != NULL && intact(q, 24, 6), "the next heap's block grows with its bytes");
  fill(q, 5000, 6);
  q = (unsigned char *)al(a, q, 5000, 8);
  CHECK(q != NULL && intact(q, 8, 6), "and shrinks with them");
  al(a, q, 8, 0);
  /* a freed region block comes back though the region is used up */
  al(a, fillers[0], 4096, 0);
  p = (unsigned char *)al(a, NULL, 0, 4000);
  CHECK(p == fillers[0], "the region's freed block serves its class again");
  fill(p, 4000, 7);
  /* from the region to the next heap and back */
  q = (unsigned char *)al(a, p, 4000, 9000);
  CHECK(q != NULL && !inside(a, q) && intact(q, 4000, 7), "a region block grows onto the next heap");
  fill(q, 9000, 7);
  fillers[0] = al(a, NULL, 0, 4096);       /* the freed block goes back to work */
  CHECK(fillers[0] == p, "the block it left is reused");
  big = (unsigned char *)al(a, big, 10000, (size_t)70 << 20);   /* past LOOM_BIG */
  CHECK(big != NULL && intact(big, 10000, 5), "a block grows to 70 MiB with its bytes");
  if (big) {
    big = (unsigned char *)al(a, big, (size_t)70 << 20, 3000);
    CHECK(big != NULL && intact(big, 3000, 5), "and shrinks to 3000 bytes with them");
    al(a, big, 3000, 0);
  }
  al(a, q, 9000, 0);
  while (k-- > 0) al(a, fillers[k], 4096, 0);
  while (ns-- > 0) al(a, small[ns], 24, 0);
  loom__arena_free(a);
}

/* the sizes Lua asks for: mostly small, now and then big */
static size_t pick (unsigned *r) {
  unsigned x;
  *r = *r * 1103515245u + 12345u;
  x = *r >> 8;
  if (x % 50 == 0) return 4097 + x % 20000;
  if (x % 5 == 0) return 1 + x % 4096;
  return 1 + x % 200;
}

#define NLIVE 2000
static void randomly (void) {
  loom_arena *a = loom__arena_new(REGION);
  static unsigned char *ptr[NLIVE];
  static size_t size[NLIVE];
  static unsigned seed[NLIVE];
  unsigned r = 12345;
  int i, bad = 0;
  if (a == NULL) { CHECK(0, "arena"); return; }
  memset(ptr, 0, sizeof ptr);
  for (i = 0; i < 400000 && !bad; i++) {
    int k = (int)((r >> 4) % NLIVE);
    size_t n = pick(&r);
    if (ptr[k] == NULL) {
      ptr[k] = (unsigned char *)al(a, NULL, LUA_TTABLE, n);
      if (ptr[k] == NULL) { bad = 1; break; }
      size[k] = n, seed[k] = (unsigned)i;
      fill(ptr[k], n, seed[k]);
    }
    else if (r & 0x10000) {                /* free */
      if (!intact(ptr[k], size[k], seed[k])) bad = 2;
      al(a, ptr[k], size[k], 0);
      ptr[k] = NULL;
    }
    else {                                 /* resize */
      size_t keep = size[k] < n ? size[k] : n;
      unsigned char *q;
      if (!intact(ptr[k], size[k], seed[k])) { bad = 2; break; }
      q = (unsigned char *)al(a, ptr[k], size[k], n);
      if (q == NULL) { bad = 1; break; }
      if (!intact(q, keep, seed[k])) { bad = 3; break; }
      ptr[k] = q, size[k] = n;
      fill(q, n, seed[k]);
    }
  }
  CHECK(bad == 0, "random operations: %s at %d", bad == 1 ? "no memory" :
        bad == 2 ? "a block's bytes changed" : "a resize lost bytes", i);
  for (i = 0; i < NLIVE; i++) if (ptr[i]) al(a, ptr[i], size[i], 0);
  loom__arena_free(a);
}

static void lua (void) {
  loom_arena *a = loom__arena_new(REGION);
  lua_State *L;
  if (a == NULL) { CHECK(0, "arena"); return; }
  L = lua_newstate(loom__arena_alloc, a);
  CHECK(L != NULL, "a state on the arena");
  if (L == NULL) { loom__arena_free(a); return; }
  luaL_openlibs(L);
  CHECK(luaL_dostring(L,
    "local t = {}\n"
    "for i = 1, 20000 do t[i] = {id = i, name = 'item' .. i, tags = {'a', 'b'}} end\n"
    "for i = 1, 20000, 2 do t[i] = nil end\n"
    "collectgarbage()\n"
    "local s = string.rep('x', 100000) .. #t\n"
    "local n = 0\n"
    "for i = 2, 20000, 2 do n = n + #t[i].name end\n"
    "assert(#s == 100005)\n"
    "return n") == LUA_OK, "a script churns: %s", lua_tostring(L, -1));
  CHECK(lua_tointeger(L, -1) == 84449, "and gets its answer");
  lua_close(L);
  loom__arena_free(a);
}

int main (int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : NULL;
  if (!only || strcmp(only, "classes") == 0) classes();
  if (!only || strcmp(only, "overflow") == 0) overflow();
  if (!only || strcmp(only, "random") == 0) randomly();
  if (!only || strcmp(only, "lua") == 0) lua();
  printf("test_arena: %d checks, %d failures\n", checks, failures);
  return failures != 0;
}
