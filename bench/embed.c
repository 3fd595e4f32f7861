/*
** bench/embed.c: what the C API costs an engine that owns its loop.
**
**   poll_empty_ns   one loom_poll on an empty queue (the target:
**                   under 1 us)
**   flood           a worker posts small messages as fast as it can; the
**                   host calls loom_poll with a 1 ms budget, as once a
**                   frame: messages delivered per ms spent in loom_poll,
**                   and how far past its budget the slowest call ran
**   rtt             a round trip host -> worker -> host: the host posts,
**                   an echo worker posts it back, the host's callback sees
**                   it from loom_poll (polled in a busy loop), three ways
**                   interleaved in one process: bytes from C
**                   (loom_child_post_bytes), a value from C
**                   (loom_child_post of {seq, payload}), and the same
**                   round trip in Lua (w:postMessage and an 'message'
**                   listener driven by loom.run: bench/pingpong.lua's loop)
**
** Prints a table and one JSON line.  Usage: loom_bench_embed [round trips]
** (default 100000; `make bench-embed`).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lualib.h>
#include <lauxlib.h>
#include "loom.h"

static double now_us (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die (const char *what, lua_State *L) {
  fprintf(stderr, "loom_bench_embed: %s: %s\n", what,
          L && lua_isstring(L, -1) ? lua_tostring(L, -1) : "failed");
  exit(1);
}

static void run (lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) die("script", L);
}

/* {==================================================================
** Workers spawned from C: a counter of what came back
** =================================================================== */
typedef struct counter {
  long messages;
  int exited;
} counter;

static void on_child (void *ud, loom_child *w, int ev, lua_State *L, long long code) {
  counter *k = (counter *)ud;
  (void)w; (void)L; (void)code;
  if (ev == LOOM_EV_MESSAGE) k->messages++;
  else if (ev == LOOM_EV_EXIT) k->exited = 1;
}

static loom_child *spawn (lua_State *L, const char *code, counter *k) {
  loom_spawn_opts o;
  loom_child *w = NULL;
  memset(&o, 0, sizeof o);
  o.code = code;
  if (loom_spawn(L, &o, on_child, k, &w) != 0) die("spawn", L);
  return w;
}

static void poll_until (lua_State *L, counter *k, long messages) {
  while (k->messages < messages)
    if (loom_poll(L, 1000, 0) < 0) die("poll", L);
}

/* }================================================================== */

static const char ECHO[] =
  "local port = require('loom').parentPort\n"
  "port:on('message', function(m) port:postMessage(m) end)\n"
  "port:postMessage('up')\n";

static const char FLOOD[] =
  "local port = require('loom').parentPort\n"
  "for i = 1, 200000 do port:postMessage(i) end\n";

/* the Lua twin of the C round trip, in the host's own state */
static const char LUA_RTT[] =
  "local loom = require 'loom'\n"
  "local n = ...\n"
  "if not W then\n"
  "  W = loom.Worker(\"local port = require('loom').parentPort\\n\" ..\n"
  "    \"port:on('message', function(m) port:postMessage(m) end)\", { eval = true })\n"
  "end\n"
  "local w, i, t0 = W, 0, loom.now()\n"
  "local done = loom.Future.new()\n"
  "local function onmsg(m)\n"
  "  if m.seq ~= i then error('bad echo') end\n"
  "  i = i + 1\n"
  "  if i < n then w:postMessage({ seq = i, payload = 'x' })\n"
  "  else w:off('message', onmsg); done:resolve() end\n"
  "end\n"
  "w:on('message', onmsg)\n"
  "w:postMessage({ seq = 0, payload = 'x' })\n"
  "done:await()\n"
  "return (loom.now() - t0) * 1000 / n\n";

static double c_rtt (lua_State *L, loom_child *w, counter *k, long n, int value) {
  double t0 = now_us();
  long i;
  for (i = 0; i < n; i++) {
    long want = k->messages + 1;
    int r;
    if (value) {
      lua_createtable(L, 0, 2);
      lua_pushinteger(L, i);
      lua_setfield(L, -2, "seq");
      lua_pushliteral(L, "x");
      lua_setfield(L, -2, "payload");
      r = loom_child_post(w, -1);
      lua_pop(L, 1);
    }
    else r = loom_child_post_bytes(w, "x", 1);
    if (r != 0) die("post", L);
    poll_until(L, k, want);
  }
  return (now_us() - t0) / (double)n;
}

static double lua_rtt (lua_State *L, long n) {
  double us;
  if (luaL_loadstring(L, LUA_RTT) != LUA_OK) die("load", L);
  lua_pushinteger(L, n);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) die("Lua round trip", L);
  us = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return us;
}

static int cmpd (const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median3 (double *v) {
  qsort(v, 3, sizeof *v, cmpd);
  return v[1];
}

int main (int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000, flood_n = 200000, i;
  lua_State *L = luaL_newstate();
  loom_runtime *rt = loom_runtime_new(NULL);
  counter echo = {0, 0}, flood = {0, 0};
  loom_child *w;
  double cb[3], cv[3], lu[3], t0, inpoll = 0, worst = 0, empty_ns;
  int r;
  if (n < 100) n = 100;
  if (!L || !rt) die("out of memory", NULL);
  luaL_openlibs(L);
  if (loom_open(L, rt) != 0) die("loom_open", NULL);
  loom_runtime_release(rt);
  run(L, "loom = require 'loom'");

  /* round trips, interleaved: bytes from C, a value from C, Lua */
  w = spawn(L, ECHO, &echo);
  poll_until(L, &echo, 1);                              /* 'up' */
  c_rtt(L, w, &echo, n / 10, 0);                        /* warm up */
  c_rtt(L, w, &echo, n / 10, 1);
  lua_rtt(L, n / 10);
  for (r = 0; r < 3; r++) {
    cb[r] = c_rtt(L, w, &echo, n, 0);
    cv[r] = c_rtt(L, w, &echo, n, 1);
    lu[r] = lua_rtt(L, n);
  }
  loom_child_terminate(w);
  while (!echo.exited) if (loom_poll(L, 1000, 0) < 0) die("poll", L);
  loom_child_release(w);
  run(L, "W:terminate():await(); W = nil");

  /* a flood (FLOOD's 200,000), delivered 1 ms of budget at a time */
  w = spawn(L, FLOOD, &flood);
  while (flood.messages < flood_n) {
    double t = now_us(), d;
    if (loom_poll(L, 1000, 0) < 0) die("poll", L);
    d = now_us() - t;
    inpoll += d;
    if (d > worst) worst = d;
  }
  while (!flood.exited) if (loom_poll(L, 1000, 0) < 0) die("poll", L);
  loom_child_release(w);

  /* the empty queue */
  for (i = 0; i < 1000; i++) loom_poll(L, 1000, 0);
  t0 = now_us();
  for (i = 0; i < 1000000; i++) loom_poll(L, 1000, 0);
  empty_ns = (now_us() - t0) * 1000 / 1e6;

  printf("loom_poll, empty queue          %8.0f ns\n", empty_ns);
  printf("flood: delivered per ms of poll %8.0f messages (slowest call %.0f us, budget 1000)\n",
         flood_n / (inpoll / 1000), worst);
  printf("round trip, bytes from C        %8.2f us\n", median3(cb));
  printf("round trip, a value from C      %8.2f us\n", median3(cv));
  printf("round trip, Lua (the reference) %8.2f us\n", median3(lu));
  printf("C bytes / Lua = %.2f, C value / Lua = %.2f (below 1: C is faster)\n",
         median3(cb) / median3(lu), median3(cv) / median3(lu));
  printf("{\"bench\":\"embed\",\"poll_empty_ns\":%.1f,\"flood_per_ms\":%.0f,"
         "\"flood_slowest_poll_us\":%.0f,\"rtt_c_bytes_us\":%.3f,\"rtt_c_value_us\":%.3f,"
         "\"rtt_lua_us\":%.3f,\"round_trips\":%ld}\n", empty_ns, flood_n / (inpoll / 1000),
         worst, median3(cb), median3(cv), median3(lu), n);
  lua_close(L);
  return 0;
}
