/*
** host.c: workers spawned from C (loom_spawn and the loom_child calls of
** loom.h).  A loom_child is a thin C face of a loom.Worker made in the
** host's state: the worker's events reach the host's callback through
** listeners that are C closures, and posts go through its postMessage, so
** a child has every guarantee a Lua Worker has (order, joins, terminate,
** close).  Everything runs on the host thread of the state, in protected
** calls: a failure is an error code, never a longjmp into the host.
** Sits beside entry.c, on top: it uses loom only through its Lua API.
*/
#include <poll.h>
#include <string.h>
#include "loom_lua.h"

/* A full userdata in the host state: anchored in the registry (selfref)
** while the host holds it, and by the Worker's listeners until they are
** collected.  Host thread only. */
struct loom_child {
  lua_State *L;                /* the host state */
  int selfref, wref;           /* registry: this userdata, the loom.Worker */
  loom_child_cb cb;            /* NULL once released */
  void *ud;
  int exited;
};

/* A listener: upvalues (child, event).  (value...) */
static int on_event (lua_State *L) {
  loom_child *w = (loom_child *)lua_touserdata(L, lua_upvalueindex(1));
  int ev = (int)lua_tointeger(L, lua_upvalueindex(2));
  long long code = 0;
  if (ev == LOOM_EV_EXIT) {
    w->exited = 1;
    code = (long long)lua_tointeger(L, 1);
    lua_settop(L, 0);
  }
  else if (ev == LOOM_EV_ONLINE) lua_settop(L, 0);
  else lua_settop(L, 1);       /* the value, or the error */
  if (w->cb) w->cb(w->ud, w, ev, L, code);
  return 0;
}

/* the loom module of L, or an error */
static void getloom (lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "loom") != LUA_TTABLE)
    luaL_error(L, "loom_spawn: the state has not required \"loom\"");
  lua_remove(L, -2);
}

/* (opts, fn or nil, data or nil) -> child */
static int spawn_p (lua_State *L) {
  const loom_spawn_opts *o = (const loom_spawn_opts *)lua_touserdata(L, 1);
  static const char *const events[] = {"online", "message", "error", "exit"};
  loom_child *w;
  int i;
  getloom(L);                                          /* 4 */
  w = (loom_child *)lua_newuserdatauv(L, sizeof *w, 0);   /* 5 */
  memset(w, 0, sizeof *w);
  w->selfref = w->wref = LUA_NOREF;
  lua_getfield(L, 4, "Worker");                        /* 6 */
  if (o->code) lua_pushlstring(L, o->code, o->code_len ? o->code_len : strlen(o->code));
  else if (o->file) lua_pushstring(L, o->file);
  else lua_pushvalue(L, 2);                            /* the function */
  lua_createtable(L, 0, 4);
  if (o->code) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "eval");
  }
  if (o->name) {
    lua_pushstring(L, o->name);
    lua_setfield(L, -2, "name");
  }
  if (o->data) {
    lua_pushlstring(L, o->data, o->data_len);
    lua_setfield(L, -2, "workerData");
  }
  else if (!lua_isnil(L, 3)) {
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "workerData");
  }
  if (o->max_memory_mb > 0 || o->stack_kb > 0) {
    lua_createtable(L, 0, 2);
    if (o->max_memory_mb > 0) {
      lua_pushnumber(L, o->max_memory_mb);
      lua_setfield(L, -2, "maxMemoryMb");
    }
    if (o->stack_kb > 0) {
      lua_pushinteger(L, o->stack_kb);
      lua_setfield(L, -2, "stackSizeKb");
    }
    lua_setfield(L, -2, "resourceLimits");
  }
  lua_call(L, 2, 1);                                   /* 6: the Worker */
  for (i = 0; i < 4; i++) {
    lua_getfield(L, 6, "on");
    lua_pushvalue(L, 6);
    lua_pushstring(L, events[i]);
    lua_pushvalue(L, 5);
    lua_pushinteger(L, i + 1);                         /* LOOM_EV_* */
    lua_pushcclosure(L, on_event, 2);
    lua_call(L, 3, 0);
  }
  w->L = L;                    /* its callback is set by the caller */
  lua_pushvalue(L, 6);
  w->wref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 5);
  w->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 5);
  return 1;
}

/* a protected call's status as a loom error code (the message stays) */
static int status (int st, int otherwise) {
  return st == LUA_OK ? 0 : st == LUA_ERRMEM ? LOOM_ENOMEM : otherwise;
}

int loom_spawn (lua_State *L, const loom_spawn_opts *o, loom_child_cb cb, void *ud,
                loom_child **out) {
  loom_child *w;
  int st, top;
  if (L == NULL || o == NULL || out == NULL) return LOOM_EINVAL;
  *out = NULL;
  top = lua_gettop(L);
  if ((o->code != NULL) + (o->file != NULL) + (o->fn_idx != 0) != 1 ||
      (o->data != NULL && o->data_idx != 0) ||
      (o->fn_idx != 0 && (lua_absindex(L, o->fn_idx) < 1 || lua_absindex(L, o->fn_idx) > top ||
                          !lua_isfunction(L, o->fn_idx))) ||
      (o->data_idx != 0 && (lua_absindex(L, o->data_idx) < 1 ||
                            lua_absindex(L, o->data_idx) > top)))
    return LOOM_EINVAL;
  if (loom__ctx_get(L) == NULL) return LOOM_ENOLOOM;
  if (!lua_checkstack(L, 6)) return LOOM_ENOMEM;
  lua_pushcfunction(L, spawn_p);
  lua_pushlightuserdata(L, (void *)o);
  if (o->fn_idx) lua_pushvalue(L, o->fn_idx < 0 ? o->fn_idx - 2 : o->fn_idx);
  else lua_pushnil(L);
  if (o->data_idx) lua_pushvalue(L, o->data_idx < 0 ? o->data_idx - 3 : o->data_idx);
  else lua_pushnil(L);
  st = lua_pcall(L, 3, 1, 0);
  if (st != LUA_OK) return status(st, LOOM_ESPAWN);    /* the reason stays */
  w = (loom_child *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  w->cb = cb;
  w->ud = ud;
  *out = w;
  return 0;
}

/* (child, value or (p, n)) -> ok, why */
static int post_p (lua_State *L) {
  loom_child *w = (loom_child *)lua_touserdata(L, 1);
  if (lua_islightuserdata(L, 2))
    lua_pushlstring(L, (const char *)lua_touserdata(L, 2), (size_t)lua_tointeger(L, 3));
  else lua_pushvalue(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->wref);
  lua_getfield(L, -1, "postMessage");
  lua_insert(L, -3);                                   /* post, w, value */
  lua_insert(L, -2);
  lua_call(L, 2, 1);
  return 1;
}

static int post (loom_child *w, int nargs) {
  lua_State *L = w->L;
  int st = lua_pcall(L, nargs, 1, 0), ok;
  if (st != LUA_OK) return status(st, LOOM_ECLONE);
  ok = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ok ? 0 : LOOM_ECLOSED;
}

int loom_child_post (loom_child *w, int idx) {
  lua_State *L;
  if (w == NULL || w->wref == LUA_NOREF) return LOOM_EINVAL;
  L = w->L;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 4)) return LOOM_ENOMEM;
  lua_pushcfunction(L, post_p);
  lua_pushlightuserdata(L, w);
  lua_pushvalue(L, idx);
  return post(w, 2);
}

int loom_child_post_bytes (loom_child *w, const void *p, size_t n) {
  lua_State *L;
  if (w == NULL || w->wref == LUA_NOREF || (p == NULL && n > 0)) return LOOM_EINVAL;
  L = w->L;
  if (!lua_checkstack(L, 4)) return LOOM_ENOMEM;
  lua_pushcfunction(L, post_p);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, (void *)(p ? p : ""));
  lua_pushinteger(L, (lua_Integer)n);
  return post(w, 3);
}

static int terminate_p (lua_State *L) {
  loom_child *w = (loom_child *)lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->wref);
  lua_getfield(L, -1, "terminate");
  lua_insert(L, -2);
  lua_call(L, 1, 0);            /* its Future fulfils with the exit code */
  return 0;
}

void loom_child_terminate (loom_child *w) {
  lua_State *L;
  if (w == NULL || w->wref == LUA_NOREF) return;
  L = w->L;
  if (!lua_checkstack(L, 2)) return;
  lua_pushcfunction(L, terminate_p);
  lua_pushlightuserdata(L, w);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
}

int loom_child_wait (loom_child *w, int timeout_ms) {
  uint64_t until;
  if (w == NULL || w->wref == LUA_NOREF || timeout_ms < 0) return LOOM_EINVAL;
  until = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  for (;;) {
    loom_ctx *c;
    if (w->exited) return 0;
    if (uv_hrtime() >= until) return LOOM_ETIMEDOUT;
    if (loom_poll(w->L, 1000, 0) < 0) return -1;
    if (w->exited) return 0;
    /* nothing came: sleep on the loop until something does, or 1 ms */
    c = loom__ctx_get(w->L);
    if (c == NULL || c->closed) return LOOM_ECLOSED;
    if (loom_pending(w->L) == 0) {
      struct pollfd p;
      p.fd = uv_backend_fd(&c->loop);
      p.events = POLLIN;
      p.revents = 0;
      (void)poll(&p, 1, 1);
    }
  }
}

void loom_child_release (loom_child *w) {
  if (w == NULL || w->wref == LUA_NOREF) return;
  w->cb = NULL;
  luaL_unref(w->L, LUA_REGISTRYINDEX, w->wref);
  w->wref = LUA_NOREF;
  luaL_unref(w->L, LUA_REGISTRYINDEX, w->selfref);    /* may be collected now */
}
