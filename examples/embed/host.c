/*
** examples/embed/host.c: a C program shaped like a game.  It owns a 60 fps
** loop, spawns Lua workers from C (procedural generation: each fills
** "chunks" of a world), hands them an engine object (a tile atlas) by
** handle, and pumps loom_poll with a 1 ms budget per frame while the
** workers flood it with results.  At the end it reports frame times,
** missed frames and messages delivered, and checks that no message was
** lost and that every handle was released.
**
**   build/embed_host [frames]        (make test runs it with 90 frames)
**
** Links libloom, which carries loom's Lua half: no Lua file is needed.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lualib.h>
#include <lauxlib.h>
#include "loom.h"

#define WORKERS 2
#define CHUNKS 4000              /* results each worker sends */
#define FRAME_NS 16666667LL      /* 60 fps */
#define BUDGET_US 1000           /* loom_poll's share of a frame */

static long long now_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* {==================================================================
** The engine object: a tile atlas, refcounted; a Lua userdata holds one
** reference, a handle in flight holds one.
** =================================================================== */
typedef struct atlas {
  _Atomic int refs;
  int tiles;
} atlas;

static atlas the_atlas = {0, 256};

static void atlas_release (void *h) { ((atlas *)h)->refs--; }

static int atlas_encode (lua_State *L, int idx, void **h, char *err, size_t errsz) {
  atlas *a = *(atlas **)lua_touserdata(L, idx);
  (void)err; (void)errsz;
  a->refs++;
  *h = a;
  return 0;
}

static void pushatlas (lua_State *L, atlas *a) {
  atlas **u = (atlas **)lua_newuserdatauv(L, sizeof *u, 0);
  *u = a;
  luaL_setmetatable(L, "Atlas");
}

static int atlas_decode (lua_State *L, void *h) {
  pushatlas(L, (atlas *)h);
  return 0;
}

static const loom_hosttype ATLAS = {"engine.Atlas", atlas_encode, atlas_decode, atlas_release};

static int atlas_gc (lua_State *L) {
  atlas **u = (atlas **)luaL_checkudata(L, 1, "Atlas");
  if (*u) atlas_release(*u);
  *u = NULL;
  return 0;
}

static int atlas_tiles (lua_State *L) {
  atlas **u = (atlas **)luaL_checkudata(L, 1, "Atlas");
  lua_pushinteger(L, (*u)->tiles);
  return 1;
}

/* the engine's binding, in the host state and in every worker state */
static void bind_engine (lua_State *L, void *ud) {
  (void)ud;
  luaL_newmetatable(L, "Atlas");
  lua_pushcfunction(L, atlas_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, atlas_tiles);
  lua_setfield(L, -2, "tiles");
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  if (loom_register_type(L, -1, &ATLAS) != 0) luaL_error(L, "cannot register Atlas");
  lua_pop(L, 1);
}

/* }================================================================== */

/* What a worker runs: take the atlas and a seed, generate CHUNKS chunks,
** post each as soon as it is made, then end. */
static const char GENERATOR[] =
  "local loom = require 'loom'\n"
  "local port = loom.parentPort\n"
  "port:once('message', function(job)\n"
  "  local tiles, x = job.atlas:tiles(), job.seed\n"
  "  for i = 1, job.chunks do\n"
  "    local cells = {}\n"
  "    for c = 1, 8 do x = (x * 1103515245 + 12345) % 2147483648; cells[c] = x % tiles end\n"
  "    port:postMessage({ id = i, cells = cells })\n"
  "  end\n"
  "  port:close()\n"
  "end)\n";

typedef struct game {
  int delivered[WORKERS], exited[WORKERS];
  long long checksum;
} game;

typedef struct who { game *g; int i; } who;

static void on_worker (void *ud, loom_child *w, int ev, lua_State *L, long long code) {
  who *k = (who *)ud;
  (void)w;
  if (ev == LOOM_EV_MESSAGE) {
    k->g->delivered[k->i]++;
    lua_getfield(L, -1, "cells");
    lua_rawgeti(L, -1, 1);
    k->g->checksum += lua_tointeger(L, -1);
    lua_pop(L, 2);
  }
  else if (ev == LOOM_EV_ERROR)
    fprintf(stderr, "worker %d: %s\n", k->i, lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  else if (ev == LOOM_EV_EXIT) k->g->exited[k->i] = 1 + (int)code;
}

static int cmp (const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

int main (int argc, char **argv) {
  int frames = argc > 1 ? atoi(argv[1]) : 600, f, i, missed = 0, total = 0, ok = 1, done;
  int busy = 0, most = 0;          /* frames that delivered; most in one */
  long long *pump, *frame, *work, start;
  loom_config cfg;
  loom_runtime *rt;
  lua_State *L;
  loom_child *kids[WORKERS];
  who whos[WORKERS];
  game g;
  if (frames < 1) frames = 1;
  pump = (long long *)calloc((size_t)frames, sizeof *pump);
  frame = (long long *)calloc((size_t)frames, sizeof *frame);
  work = (long long *)calloc((size_t)frames, sizeof *work);
  if (!pump || !frame || !work) return 2;
  memset(&g, 0, sizeof g);
  memset(&cfg, 0, sizeof cfg);
  cfg.on_state = bind_engine;                    /* every worker gets the binding */
  if ((rt = loom_runtime_new(&cfg)) == NULL) return 2;
  L = luaL_newstate();
  luaL_openlibs(L);
  if (loom_open(L, rt) != 0) return 2;
  loom_runtime_release(rt);
  bind_engine(L, NULL);
  if (luaL_dostring(L, "loom = require 'loom'") != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 2;
  }
  for (i = 0; i < WORKERS; i++) {
    loom_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.code = GENERATOR;
    o.name = i ? "generator-2" : "generator-1";
    whos[i].g = &g;
    whos[i].i = i;
    if (loom_spawn(L, &o, on_worker, &whos[i], &kids[i]) != 0) return 2;
    /* the job: a table holding the atlas (by handle) and a seed */
    lua_createtable(L, 0, 3);
    the_atlas.refs++;
    pushatlas(L, &the_atlas);
    lua_setfield(L, -2, "atlas");
    lua_pushinteger(L, 1000 + i);
    lua_setfield(L, -2, "seed");
    lua_pushinteger(L, CHUNKS);
    lua_setfield(L, -2, "chunks");
    if (loom_child_post(kids[i], -1) != 0) return 2;
    lua_pop(L, 1);
  }
  start = now_ns();
  for (f = 0; f < frames; f++) {
    long long t0 = now_ns(), t1, spent;
    int before = g.delivered[0] + g.delivered[1], n;
    if (loom_poll(L, BUDGET_US, 0) < 0) {
      fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
      return 2;
    }
    t1 = now_ns();
    pump[f] = t1 - t0;
    n = g.delivered[0] + g.delivered[1] - before;
    if (n > 0) work[busy++] = t1 - t0;
    if (n > most) most = n;
    /* the game's own work of the frame would go here */
    spent = now_ns() - t0;
    if (spent < FRAME_NS) {
      struct timespec ts = {0, (long)(FRAME_NS - spent)};
      nanosleep(&ts, NULL);
    }
    frame[f] = now_ns() - t0;
    if (frame[f] > FRAME_NS * 3 / 2) missed++;
  }
  /* after the last frame: drain what is left, as a loading screen would */
  for (i = 0; i < 200000; i++) {
    for (f = 0, done = 1; f < WORKERS; f++) done &= g.exited[f] != 0;
    if (done) break;
    if (loom_poll(L, 10000, 0) < 0) return 2;
    {
      struct timespec ts = {0, 200000};
      nanosleep(&ts, NULL);
    }
  }
  for (i = 0; i < WORKERS; i++) {
    total += g.delivered[i];
    loom_child_release(kids[i]);
  }
  qsort(pump, (size_t)frames, sizeof *pump, cmp);
  qsort(work, (size_t)busy, sizeof *work, cmp);
  qsort(frame, (size_t)frames, sizeof *frame, cmp);
  printf("embed host: %d frames in %.2f s, %d missed (> 1.5 frames); frame p50 %.2f ms, max %.2f ms\n",
         frames, (now_ns() - start) / 1e9, missed, frame[frames / 2] / 1e6, frame[frames - 1] / 1e6);
  printf("embed host: loom_poll p50 %.3f ms, p99 %.3f ms, max %.3f ms (budget %.3f ms)\n",
         pump[frames / 2] / 1e6, pump[frames * 99 / 100] / 1e6, pump[frames - 1] / 1e6, BUDGET_US / 1e3);
  printf("embed host: %d frames delivered messages, at most %d in one; their loom_poll p50 %.3f ms\n",
         busy, most, busy ? work[busy / 2] / 1e6 : 0.0);
  printf("embed host: %d of %d messages delivered, checksum %lld\n", total, WORKERS * CHUNKS, g.checksum);
  lua_close(L);
  if (total != WORKERS * CHUNKS) { fprintf(stderr, "FAIL: messages lost\n"); ok = 0; }
  for (i = 0; i < WORKERS; i++)
    if (g.exited[i] != 1) { fprintf(stderr, "FAIL: worker %d exit %d\n", i, g.exited[i] - 1); ok = 0; }
  if (the_atlas.refs != 0) { fprintf(stderr, "FAIL: %d atlas holders left\n", (int)the_atlas.refs); ok = 0; }
  /* the budget holds, with a tolerance for a noisy machine (or a
  ** sanitizer): the polls that delivered took at most 3 budgets at the
  ** median, and no single poll took the flood whole */
  if (busy && work[busy / 2] > 3LL * BUDGET_US * 1000) {
    fprintf(stderr, "FAIL: loom_poll over its budget\n");
    ok = 0;
  }
  if (busy < 2 || most >= WORKERS * CHUNKS / 2) {
    fprintf(stderr, "FAIL: the flood went through %d poll(s), up to %d at once\n", busy, most);
    ok = 0;
  }
  free(pump);
  free(frame);
  free(work);
  printf("embed host: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
