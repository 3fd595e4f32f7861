/*
** stop.c: the stop flag of a thread, and how terminate() reaches the Lua
** code it runs.  loom__stop_request sets an atomic flag, then arms a count
** hook (count 1) on the thread's main state and on the coroutine it is
** running, and the caller wakes every loom wait of that thread.  The hook
** raises at every instruction, so a pcall that catches the error is
** interrupted again in its caller, up to the top.  'lock' makes sure the
** state is not being closed meanwhile.
**
** Known limit: lua_sethook is meant to be callable asynchronously, but
** ldebug.c has a signal handler on the same thread in mind.  From another
** thread, its walk over the running state's CallInfo list (settraps) races
** with the worker returning from frames; a GC step that shrinks that list
** (luaE_shrinkCI) in the same nanoseconds could make the walk touch a
** freed frame.  On x86-64 (total store order) the hook is otherwise seen
** reliably; a weakly ordered CPU could miss one arming (the Lua side arms
** again every 20 ms until the exit arrives).  The alternatives (a
** process-wide signal handler, or a hook armed all the time, 1.4x slower
** loops) are worse for a library; this is the technique lua.c and LuaLanes
** use.
*/
#include "loom_int.h"

static void onhook (lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_pushliteral(L, LOOM_TERMINATED);
  lua_error(L);
}

static void arm (lua_State *L) {
  lua_sethook(L, onhook, LUA_MASKCOUNT, 1);
}

int loom__stop_init (loom_stop *s) {
  atomic_init(&s->flag, 0);
  s->L = s->running = NULL;
  return uv_mutex_init(&s->lock) ? -1 : 0;
}

void loom__stop_destroy (loom_stop *s) {
  uv_mutex_destroy(&s->lock);
}

void loom__stop_request (loom_stop *s) {
  /* seq_cst, before the lock: a thread that attaches or tracks a
  ** coroutine after this store sees the flag under the lock and arms
  ** itself; one that did so before is armed here. */
  atomic_store(&s->flag, 1);
  uv_mutex_lock(&s->lock);
  if (s->L) {
    arm(s->L);
    if (s->running && s->running != s->L) arm(s->running);
  }
  uv_mutex_unlock(&s->lock);
}

void loom__stop_rearm (loom_stop *s) {
  if (!atomic_load(&s->flag)) return;
  uv_mutex_lock(&s->lock);
  if (s->L) {
    arm(s->L);
    if (s->running && s->running != s->L) arm(s->running);
  }
  uv_mutex_unlock(&s->lock);
}

int loom__stop_attach (loom_stop *s, lua_State *L) {
  int set;
  uv_mutex_lock(&s->lock);
  s->L = s->running = L;
  set = atomic_load(&s->flag);
  uv_mutex_unlock(&s->lock);
  return set;
}

void loom__stop_detach (loom_stop *s) {
  lua_State *L;
  uv_mutex_lock(&s->lock);
  L = s->L;
  s->L = s->running = NULL;        /* terminate() leaves the state alone */
  uv_mutex_unlock(&s->lock);
  if (L) lua_sethook(L, NULL, 0, 0);
}

lua_State *loom__stop_track (loom_stop *s, lua_State *co) {
  lua_State *prev;
  uv_mutex_lock(&s->lock);
  prev = s->running;
  s->running = co;
  if (atomic_load(&s->flag)) arm(co);
  uv_mutex_unlock(&s->lock);
  return prev;
}

void loom__stop_untrack (loom_stop *s, lua_State *prev, lua_State *L) {
  uv_mutex_lock(&s->lock);
  s->running = prev;
  if (atomic_load(&s->flag)) arm(L);   /* it may not have been */
  uv_mutex_unlock(&s->lock);
}
