/*
** loom.h: the whole public C API of loom, Node.js-style workers for Lua 5.4.
**
** Opaque handles, one LOOM_API macro, no process-global mutable state: two
** runtimes can live in one process.  Every hook says when it may be called.
*/
#ifndef LOOM_H
#define LOOM_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_VERSION_MAJOR 0
#define LOOM_VERSION_MINOR 1
#define LOOM_VERSION_PATCH 0
#define LOOM_VERSION "0.1.0"

/* loom's own objects are built with hidden visibility; only the API is
** exported, and calls inside the library go direct, not through the PLT */
#ifdef __GNUC__                /* (clang's too) */
#define LOOM_PUBLIC __attribute__((visibility("default")))
#else
#define LOOM_PUBLIC
#endif
#ifndef LOOM_API
#define LOOM_API extern LOOM_PUBLIC
#endif

/* Errors are negative numbers, as libuv's are; loom_strerror names them. */
#define LOOM_EINVAL (-22)      /* a NULL or malformed argument */
#define LOOM_ENOMEM (-12)      /* out of memory */
#define LOOM_EEXIST (-17)      /* already done (a state attached twice) */
#define LOOM_ENOLOOM (-1001)   /* the state has no runtime: loom_open first */
#define LOOM_ESPAWN (-1002)    /* a worker could not be spawned */
#define LOOM_ECLOSED (-1003)   /* the worker has exited or closed its port */
#define LOOM_ECLONE (-1004)    /* a value cannot be cloned */
#define LOOM_ETIMEDOUT (-110)  /* a bounded wait ended first */

/* A static string for an error code (any thread). */
LOOM_API const char *loom_strerror(int err);

/* A runtime owns every worker, named channel and broadcast group made from
** the states attached to it.  It is shared by all its threads and freed when
** the last of them lets go of it. */
typedef struct loom_runtime loom_runtime;

/* Host hooks, copied by loom_runtime_new.  All may be NULL. */
typedef struct loom_config {
  /* Allocator for every worker state (lua_newstate(alloc, alloc_ud)).
  ** Called from worker threads, concurrently: it must be thread-safe. */
  lua_Alloc alloc;
  void *alloc_ud;
  /* Called on the worker thread with each new worker state, after the
  ** standard libraries are open and before any user code runs: register
  ** engine bindings, set package.path.  Runs unprotected inside a pcall:
  ** raising an error fails the worker ('error' event, exit code 1).  The
  ** state's warning and panic functions are lauxlib's twins (warnings off
  ** until "@on", to stderr): set your own here.  Free or resize a block of
  ** the state's allocator only with the size Lua gave it. */
  void (*on_state)(lua_State *L, void *ud);
  /* Called on the new thread first thing, and on it last thing. */
  void (*thread_start)(void *ud, uint64_t thread_id);
  void (*thread_stop)(void *ud, uint64_t thread_id);
  /* Called on a host thread with a warning loom cannot return to anyone
  ** (a worker stuck in a foreign C call was detached at close).  NULL:
  ** loom writes it to stderr. */
  void (*warn)(void *ud, const char *msg);
  void *ud;                 /* passed to on_state, thread_start, thread_stop, warn */
  size_t stack_kb;          /* default worker thread stack; 0 = 4096 */
  /* After a delivered message, spin this many microseconds for the next
  ** before the loop blocks in the kernel: 0 = the default (50), < 0 =
  ** never spin.  (A state that requires "loom" without loom_open reads
  ** $LOOM_SPIN_US instead.) */
  int spin_us;
  /* How long closing a state waits for the workers it spawned to stop
  ** (terminated, their waits woken), in milliseconds: one deadline for all
  ** of them and, in turn, for their own workers.  A worker still running
  ** then (stuck in a foreign C call) is detached, with a warning.  0 (or
  ** less) = the default, 5000. */
  int close_ms;
  /* 1: a worker's messages are posted with no fence at all, and each
  ** thread issues a process-wide barrier (Linux's membarrier) when its
  ** loop goes to sleep instead.  One-way streams of small messages run a
  ** few percent faster; conversations (pingpong) a few percent slower,
  ** as every sleep interrupts the other CPUs.  0 = off (the default);
  ** ignored where the kernel has no such barrier.  (A state that requires
  ** "loom" without loom_open reads $LOOM_LANE_BARRIER instead.) */
  int lane_barrier;
} loom_config;

/* Make a runtime (NULL when out of memory). The caller holds one reference. */
LOOM_API loom_runtime *loom_runtime_new(const loom_config *cfg);

/* Drop the caller's reference. The runtime is freed once every state
** attached to it is closed. */
LOOM_API void loom_runtime_release(loom_runtime *rt);

/* Attach a host's main state to 'rt' (takes its own reference). Must be
** called before the state first requires "loom"; without it, the first
** require makes a runtime with default hooks.  Returns 0, or LOOM_EEXIST
** when the state already has a runtime, LOOM_EINVAL for NULL arguments.
** Then `require "loom"` works as usual. */
LOOM_API int loom_open(lua_State *L, loom_runtime *rt);

/* Deliver pending events (messages, timers, worker exits) on the host
** thread of 'L', never blocking, for at most budget_us microseconds and
** max_messages messages (<= 0: no limit).  Returns how many events ran, or
** -1 when an uncaught Lua error was raised: it is left on the stack. */
LOOM_API int loom_poll(lua_State *L, int budget_us, int max_messages);

/* How many events wait for loom_poll on the host thread of 'L': messages
** (of every port, worker and channel, in the order they came) queued for
** it and not yet delivered; 0 when none (or no runtime).  A host whose
** frame has time left calls loom_poll again while this is > 0.  On the
** host thread, like loom_poll; workers may be posting meanwhile: the figure
** is a snapshot. */
LOOM_API int loom_pending(lua_State *L);

/* A file descriptor that becomes readable when loom_poll has work, for
** hosts that sleep in their own poll(2); -1 where there is none. */
LOOM_API int loom_backend_fd(lua_State *L);

/* Host userdata by handle.  A host teaches loom one of its userdata types
** (a texture, an entity): in a message the value travels as a handle that
** holds one reference the host counts, and the receiving state makes its
** own userdata for it.  An unregistered userdata still fails to clone with
** the path of the bad value.  The struct must outlive the runtime (static
** storage); every state that sends or receives the type registers the same
** struct (a worker state: from the on_state hook). */
typedef struct loom_hosttype {
  const char *name;         /* 1 to 255 bytes; the same in every state */
  /* The userdata at idx (its metatable is the registered one) becomes
  ** *handle, holding one new reference.  0, or non-zero when it cannot be
  ** sent (write why into err).  Called on the sending thread; must not
  ** call Lua, allocate Lua memory or raise. */
  int (*encode)(lua_State *L, int idx, void **handle, char *err, size_t errsz);
  /* Push the value for handle onto L, taking the reference it holds: 0; or
  ** non-zero with an error message pushed instead (the reference is then
  ** dropped with release).  Called on the receiving thread; may raise. */
  int (*decode)(lua_State *L, void *handle);
  /* Drop the reference a handle holds: the message carrying it was
  ** dropped undelivered (closed port, exited worker, failed decode).  Any
  ** thread, any time until the runtime is freed. */
  void (*release)(void *handle);
} loom_hosttype;

/* Register t for the userdata whose metatable is at mtidx in L.  L must
** have a runtime (loom_open, or a worker state).  0, or LOOM_EINVAL (a
** NULL or incomplete t, no table at mtidx), LOOM_ENOLOOM, LOOM_ENOMEM. */
LOOM_API int loom_register_type(lua_State *L, int mtidx, const loom_hosttype *t);

/* Workers spawned from C.  All of these run on the host thread of L (the
** state the worker was spawned from), never inside another thread.  A
** loom_child is the host's handle: valid until loom_child_release. */
typedef struct loom_child loom_child;

typedef struct loom_spawn_opts {
  const char *code;         /* Lua source to run (text only), or NULL ... */
  size_t code_len;          /* (0: strlen(code)) */
  const char *file;         /* ... a Lua file to run, or NULL ... */
  int fn_idx;               /* ... or the Lua function at this index of L
                            ** (say, the host's own bytecode, loaded with
                            ** luaL_loadbufferx): cloned, upvalues and all,
                            ** as loom.Worker(fn) clones it; 0: none */
  const char *name;         /* or NULL */
  const char *data;         /* workerData: a string the worker reads, or NULL ... */
  size_t data_len;
  int data_idx;             /* ... or the value at this index of L, cloned; 0: none */
  double max_memory_mb;     /* 0: no limit */
  int stack_kb;             /* 0: the runtime's default */
} loom_spawn_opts;

enum { LOOM_EV_ONLINE = 1, LOOM_EV_MESSAGE, LOOM_EV_ERROR, LOOM_EV_EXIT };

/* Called on the host thread, from loom_poll (or loom.run), for each event
** of a child: ONLINE; MESSAGE with the worker's value on top of L; ERROR
** with the error value on top of L; EXIT with the exit code.  The
** callback must leave the stack as it found it; an error it raises is
** raised from loom_poll.  After EXIT no event comes.  Inside it the host
** may post to, terminate and release any child (this one included: no
** callback follows a release) and spawn more; it must not close the
** state (as in Lua, a state is not closed from inside a call of its
** own): return, and lua_close it after loom_poll returns.  A worker
** whose on_state hook raises gets ERROR with that error, then EXIT 1. */
typedef void (*loom_child_cb)(void *ud, loom_child *w, int event, lua_State *L,
                              long long exit_code);

/* Spawn a worker from L (which has required "loom").  0 and *out, or
** LOOM_EINVAL (not exactly one of code, file and fn_idx; both data and
** data_idx; NULL out), LOOM_ENOLOOM, LOOM_ENOMEM, or LOOM_ESPAWN (the
** worker could not be made, or fn_idx/data_idx cannot be cloned: the
** reason is pushed onto L as a string).  L's stack is kept. */
LOOM_API int loom_spawn(lua_State *L, const loom_spawn_opts *o, loom_child_cb cb,
                        void *ud, loom_child **out);
/* Post the value at idx of the host state (cloned) / a string of n bytes
** (the worker receives a Lua string).  0, LOOM_ECLOSED (the worker has
** exited or closed its port), LOOM_EINVAL, or LOOM_ECLONE (the value
** cannot be cloned: the reason is pushed onto the host state). */
LOOM_API int loom_child_post(loom_child *w, int idx);
LOOM_API int loom_child_post_bytes(loom_child *w, const void *p, size_t n);
/* Ask the worker to stop (its Lua code raises; its waits wake up); EXIT
** follows with code 1. */
LOOM_API void loom_child_terminate(loom_child *w);
/* The host lets go of the handle: no more callbacks; the worker runs on
** until it ends (or its parent state closes). */
LOOM_API void loom_child_release(loom_child *w);
/* A bounded wait for the worker's end: runs loom_poll (so every event,
** of this child and others, reaches its callback) until EXIT has come or
** timeout_ms have passed.  0 once it has exited, LOOM_ETIMEDOUT, or -1
** when a callback raised (the error is on the stack, as from loom_poll).
** Not from inside a callback. */
LOOM_API int loom_child_wait(loom_child *w, int timeout_ms);

/* The Lua module "loom.core". */
LOOM_API int luaopen_loom_core(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif
