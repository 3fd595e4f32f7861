/*
** loop.c: the event loop binding: run, poll, step, timers, the
** setImmediate switch, blocking sleep and the monotonic clock.
*/
#include <stdlib.h>
#include "loom_lua.h"

#define TIMER "loom.Timer"

static void enter (lua_State *L, loom_ctx *c, const char *who) {
  if (c->running)
    luaL_error(L, "%s: the event loop is already running here "
                  "(inside a callback, use await within loom.async)", who);
  c->running = 1;
  c->stopping = 0;
  if (c->pend_head) loom__wake_send(c->wake);   /* left by an earlier error */
}

/* loom.run(): run the loop until nothing keeps it alive. */
static int l_run (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_State *saved;
  enter(L, c, "loom.run");
  saved = loom__ctx_setstate(c, L);
  while (uv_run(&c->loop, UV_RUN_DEFAULT) && !c->stopping)
    ;
  c->L = saved;
  c->running = 0;
  loom__ctx_raise(L, c);
  lua_pushboolean(L, uv_loop_alive(&c->loop));
  return 1;
}

/* core.step(): one turn of await (ctx.c: an expected message is taken
** without a loop turn); true while the loop has work. */
static int l_step (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  int alive;
  lua_State *saved;
  enter(L, c, "await");
  saved = loom__ctx_setstate(c, L);
  alive = loom__ctx_step(c);
  c->L = saved;
  c->running = 0;
  loom__ctx_raise(L, c);
  lua_pushboolean(L, alive && !c->stopping);
  return 1;
}

/* loom.poll([budget_ms]): one non-blocking turn. */
static int l_poll (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_Number budget = luaL_optnumber(L, 1, 0);
  int n;
  luaL_argcheck(L, budget >= 0, 1, "budget must be >= 0");
  if (c->running) return luaL_error(L, "loom.poll: the event loop is already running here");
  if (!(budget < 2e6)) budget = 2e6;     /* no overflow (NaN, huge): ~33 min */
  n = loom__ctx_poll(c, L, (int)(budget * 1000), -1);
  if (n < 0) return lua_error(L);
  lua_pushboolean(L, uv_loop_alive(&c->loop));
  return 1;
}

static int l_now (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_pushnumber(L, (lua_Number)(uv_hrtime() - c->rt->t0) / 1e6);
  return 1;
}

static int l_parallelism (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  return 1;
}

/* core.hold(delta): adjust what keeps the loop alive through messages. */
static int l_hold (lua_State *L) {
  loom__ctx_ref(loom__ctx_check(L), (int)luaL_checkinteger(L, 1));
  return 0;
}

static void noidle (uv_idle_t *h) { (void)h; }

/* core.immediates(on): keep running the setImmediate queue each turn. */
static int l_immediates (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  if (lua_toboolean(L, 1)) {
    uv_ref((uv_handle_t *)c->check);
    uv_idle_start(c->idle, noidle);   /* the poll must not block meanwhile */
  }
  else {
    uv_unref((uv_handle_t *)c->check);
    uv_idle_stop(c->idle);
  }
  return 0;
}

/* loom.sleep outside a coroutine: block this thread, waking early only
** when the worker is terminated (then raise). */
static int l_block (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "time must be >= 0");
  loom__mailbox_wait(c->mb, c->stop ? &c->stop->flag : NULL, ms, 0);
  loom__ctx_checkstop(L, c);
  return 0;
}

/* {======================================================================
** Timers.  The userdata owns a malloc'd uv_timer_t (freed in its close
** callback) and, while active, is anchored in the registry so it cannot
** be collected under libuv.
** ======================================================================= */

typedef struct ltimer {
  uv_timer_t *h;           /* NULL once closed */
  loom_ctx *c;
  int fnref;               /* callback */
  int selfref;             /* anchor while active */
  uint64_t repeat;
} ltimer;

static void unanchor (lua_State *L, ltimer *t) {
  luaL_unref(L, LUA_REGISTRYINDEX, t->selfref);
  t->selfref = LUA_NOREF;
}

static void ontimer (uv_timer_t *h) {
  ltimer *t = (ltimer *)h->data;
  loom_ctx *c = t->c;
  lua_State *L = c->L;
  if (c->stopping) {        /* leaving the loop: fire on the next run */
    uv_timer_start(h, ontimer, 1, t->repeat);   /* (0 would be due again in this pass) */
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->fnref);
  if (t->repeat == 0) unanchor(L, t);   /* may be collected from now on */
  loom__ctx_pcall(c, 0, 0);
}

static void onclose (uv_handle_t *h) { free(h); }

static void timer_close (lua_State *L, ltimer *t) {
  if (t->h == NULL) return;
  if (!t->c->closed) uv_close((uv_handle_t *)t->h, onclose);
  /* else the context's close has freed every handle already */
  t->h = NULL;
  unanchor(L, t);
  luaL_unref(L, LUA_REGISTRYINDEX, t->fnref);
  t->fnref = LUA_NOREF;
}

/* core.timer(fn, ms, repeat) */
static int l_timer (lua_State *L) {
  loom_ctx *c = loom__ctx_check(L);
  lua_Number ms = luaL_checknumber(L, 2);
  int repeat = lua_toboolean(L, 3);
  uint64_t to;
  ltimer *t;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (ms != ms || ms < 0) ms = 0;    /* as Node: bad delays mean 'soon' */
  if (ms > 9.2e15) ms = 9.2e15;
  to = (uint64_t)ms;
  t = (ltimer *)lua_newuserdatauv(L, sizeof *t, 0);
  t->h = NULL;
  t->c = c;
  t->fnref = t->selfref = LUA_NOREF;
  t->repeat = repeat ? (to ? to : 1) : 0;
  luaL_setmetatable(L, TIMER);
  t->h = (uv_timer_t *)malloc(sizeof *t->h);
  if (t->h == NULL) return luaL_error(L, "loom: not enough memory");
  uv_timer_init(&c->loop, t->h);
  t->h->data = t;
  lua_pushvalue(L, 1);
  t->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  t->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_update_time(&c->loop);   /* the thread may have been busy elsewhere */
  uv_timer_start(t->h, ontimer, to, t->repeat);
  return 1;
}

static ltimer *checktimer (lua_State *L) {
  return (ltimer *)luaL_checkudata(L, 1, TIMER);
}

static int t_close (lua_State *L) {
  timer_close(L, checktimer(L));
  return 0;
}

static int t_ref (lua_State *L) {
  ltimer *t = checktimer(L);
  if (t->h) uv_ref((uv_handle_t *)t->h);
  lua_settop(L, 1);
  return 1;
}

static int t_unref (lua_State *L) {
  ltimer *t = checktimer(L);
  if (t->h) uv_unref((uv_handle_t *)t->h);
  lua_settop(L, 1);
  return 1;
}

static int t_hasref (lua_State *L) {
  ltimer *t = checktimer(L);
  lua_pushboolean(L, t->h && uv_has_ref((uv_handle_t *)t->h));
  return 1;
}

static int t_tostring (lua_State *L) {
  ltimer *t = checktimer(L);
  lua_pushfstring(L, "loom.Timer (%s)", t->h && uv_is_active((uv_handle_t *)t->h)
                                            ? "active" : "inactive");
  return 1;
}

static const luaL_Reg timer_meth[] = {
  {"close", t_close},
  {"ref", t_ref},
  {"unref", t_unref},
  {"hasRef", t_hasref},
  {NULL, NULL}
};

static const luaL_Reg timer_meta[] = {
  {"__gc", t_close},
  {"__close", t_close},
  {"__tostring", t_tostring},
  {"__index", NULL},
  {NULL, NULL}
};

/* }====================================================================== */

static const luaL_Reg funcs[] = {
  {"run", l_run},
  {"step", l_step},
  {"poll", l_poll},
  {"now", l_now},
  {"availableParallelism", l_parallelism},
  {"hold", l_hold},
  {"immediates", l_immediates},
  {"block", l_block},
  {"timer", l_timer},
  {NULL, NULL}
};

void loom__loop_open (lua_State *L, loom_ctx *c) {
  loom__createmeta(L, TIMER, timer_meta, timer_meth, 0);
  lua_setfield(L, -2, "Timer");
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, funcs, 1);
}
