/*
** loom_int.h: declarations shared between loom's translation units.
** Names: loom_ public (loom.h), loom__ internal, static helpers unprefixed.
*/
#ifndef LOOM_INT_H
#define LOOM_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <lua.h>
#include <lauxlib.h>
#include "loom.h"

#define LOOM_MAX_DEPTH 200     /* nesting bound of the cloner, both ways */

/* {======================================================================
** Growable byte buffer.  Owned by whoever holds the struct.
** ======================================================================= */
typedef struct loom_buf {
  unsigned char *p;
  size_t len, cap;
} loom_buf;

int loom__buf_reserve(loom_buf *b, size_t extra);   /* 0 or -1 (no memory) */
void loom__buf_free(loom_buf *b);

/* {======================================================================
** Messages.  A message moves sender -> mailbox -> receiver and is freed
** by the receiver after decoding: exactly one thread owns it at a time.
** ======================================================================= */
enum {
  LOOM_MSG_MESSAGE = 1,   /* a cloned value for a port */
  LOOM_MSG_ONLINE,        /* worker -> parent: running user code */
  LOOM_MSG_ERROR,         /* worker -> parent: {err, traceback} */
  LOOM_MSG_EXIT           /* worker -> parent: aux = exit code */
};

typedef struct loom_msg {
  struct loom_msg *next;
  uint64_t target;        /* endpoint id in the receiving thread */
  int kind;
  int aux;
  size_t len, cap;        /* cap: size of an owned buffer */
  unsigned char *data;    /* points at inline[] or at an owned buffer */
  unsigned char inline_[];
} loom_msg;

/* A message holding a copy of (or, when large, the storage of) 'b'.
** Small payloads are copied and 'b' keeps its memory; large ones are
** moved and 'b' is left empty.  NULL when out of memory. */
loom_msg *loom__msg_new(int kind, uint64_t target, int aux, loom_buf *b);
void loom__msg_free(loom_msg *m);
/* Free a delivered message, keeping a large buffer as the runtime's spare
** (its pages are already faulted in: the next large message reuses it). */
void loom__msg_release(loom_runtime *rt, loom_msg *m);
/* Give 'b' (empty) the runtime's spare buffer, if there is one. */
void loom__buf_take_spare(loom_runtime *rt, loom_buf *b);
#define LOOM_SPARE_MIN (1u << 20)   /* buffers worth keeping */

/* {======================================================================
** Mailbox: one per thread that runs loom.  Shared by its owner (the only
** reader) and every sender; freed when its atomic refcount drops to 0.
** 'lock' guards head, tail, async, closed and waiters; 'cond' is
** broadcast on every push and on every interrupt, for blocking waits.
** ======================================================================= */
typedef struct loom_mailbox {
  atomic_int refs;
  uv_mutex_t lock;
  uv_cond_t cond;
  loom_msg *head, *tail;
  uv_async_t *async;      /* owner's wake-up, NULL unless attached */
  int closed;             /* pushes fail once set */
  int waiters;            /* owner threads blocked on 'cond' */
  atomic_int nonempty;    /* head != NULL, for the owner's lock-free spin */
  atomic_int awake;       /* 1: the owner will look before it blocks */
} loom_mailbox;

loom_mailbox *loom__mailbox_new(void);
void loom__mailbox_retain(loom_mailbox *mb);
void loom__mailbox_release(loom_mailbox *mb);
/* Owner only: start waking 'async' on every push. */
void loom__mailbox_attach(loom_mailbox *mb, uv_async_t *async);
/* Owner only: refuse further pushes, drop queued messages, forget async. */
void loom__mailbox_close(loom_mailbox *mb);
/* Any thread: queue 'm' (taking ownership) and wake the owner.  Returns 0,
** or -1 when the mailbox is closed (then 'm' is freed). */
int loom__mailbox_push(loom_mailbox *mb, loom_msg *m);
/* Owner only: take every queued message, in order (NULL if none). */
loom_msg *loom__mailbox_take(loom_mailbox *mb);
/* Owner only: about to block in the loop.  Returns 1 if a message came
** in meanwhile (then it does not block); else pushes will wake it. */
int loom__mailbox_sleep(loom_mailbox *mb);
/* Owner only: running again; pushes need not wake it until it sleeps. */
void loom__mailbox_awake(loom_mailbox *mb);
/* Any thread: wake the owner's loop and its blocking waits. */
void loom__mailbox_interrupt(loom_mailbox *mb);
/* Owner only: wait until 'stop' becomes non-zero, timeout_ms passes
** (< 0: no limit) or, if for_msg, a message is queued.  Returns 1 if a
** message is queued. */
int loom__mailbox_wait(loom_mailbox *mb, const atomic_int *stop,
                       double timeout_ms, int for_msg);

#define LOOM_BOOT_MAX 4       /* Lua modules kept as bytecode for workers */

/* {======================================================================
** Runtime: shared by every thread of one runtime; refcounted (atomic).
** 'lock' guards boot, spare and sparecap.  cfg, t0 and spin_ns are
** immutable after creation.
** ======================================================================= */
struct loom_runtime {
  atomic_int refs;
  atomic_uint_fast64_t next_id;     /* thread ids; 0 is the main thread */
  uv_mutex_t lock;
  loom_config cfg;
  uint64_t t0;                      /* uv_hrtime() at creation */
  uint64_t spin_ns;                 /* LOOM_SPIN_NS, or $LOOM_SPIN_US */
  struct {                          /* bytecode of loom's Lua modules */
    char name[32];
    char *code;
    size_t len;
  } boot[LOOM_BOOT_MAX];
  int nboot;
  unsigned char *spare;             /* a large message buffer to reuse */
  size_t sparecap;
};

void loom__runtime_retain(loom_runtime *rt);

/* {======================================================================
** Thread context: one per thread running loom, owned by that thread alone
** (other threads reach it only through its mailbox and its worker).
** ======================================================================= */
typedef struct loom_worker loom_worker;

typedef struct loom_ctx {
  loom_runtime *rt;
  lua_State *L;
  uv_loop_t loop;
  uv_async_t *async;          /* wakes the loop when the mailbox fills */
  uv_check_t *check;          /* runs setImmediate callbacks */
  uv_idle_t *idle;            /* keeps the poll from blocking meanwhile */
  uv_prepare_t *prepare;      /* spins on the mailbox before the poll */
  uint64_t spin_until;        /* uv_hrtime() until which to spin */
  loom_mailbox *mb;           /* this thread's inbox */
  loom_worker *self;          /* NULL on the main thread */
  loom_worker *children;      /* workers spawned here, not yet joined */
  uint64_t thread_id;
  int holds;                  /* things keeping the loop alive via async */
  int running;                /* inside uv_run */
  int once;                   /* inside uv_run(UV_RUN_ONCE): one turn only */
  int stopping;               /* an uncaught error or exit: leave uv_run */
  int has_error;              /* uncaught error stored at registry[ERRKEY] */
  int exit_code;              /* worker: code given to loom.exit */
  int exiting;                /* worker: loom.exit was called */
  loom_msg *pend_head, *pend_tail;  /* taken from mb, not yet delivered */
  loom_msg *current;          /* being delivered; freed if that raises */
  loom_buf scratch;           /* encoder buffer, reused */
  int dispatch_ref;           /* Lua dispatch(target, kind, value, aux) */
  int fast_ref;               /* table target -> sole 'message' listener */
  int immediate_ref;          /* Lua function running setImmediate queue */
  int closed;                 /* main thread: its state is closing */
  uint64_t poll_deadline;     /* uv_hrtime() bound of loom_poll, or 0 */
} loom_ctx;

loom_ctx *loom__ctx(lua_State *L);                   /* raises if none */
/* The context in upvalue 1 of a loom function; raises once it is closed
** (a finalizer may call loom after the context's own finalizer ran). */
loom_ctx *loom__ctxup(lua_State *L);
#define CTX(L) loom__ctxup(L)
/* Run the loop from L (the running thread): callbacks run on it. */
lua_State *loom__enter_thread(loom_ctx *c, lua_State *L);
/* Set up c for L: loop, handles, and 'mb' as inbox (retained), or a new
** inbox when mb is NULL.  0, or -1 (then c holds nothing). */
int loom__ctx_init(loom_ctx *c, loom_runtime *rt, lua_State *L,
                   loom_mailbox *mb);
void loom__ctx_install(lua_State *L, loom_ctx *c);   /* registry pointer */
void loom__ctx_close(loom_ctx *c);   /* after lua_close: loop, mailbox */
void loom__hold(loom_ctx *c, int delta);
/* Expect a message soon: spin up to 'ns' before the loop blocks. */
void loom__expect(loom_ctx *c);
#define LOOM_SPIN_NS 50000u          /* after a message was delivered */
/* Deliver queued messages: returns count, or -1 when one raised and the
** error is stored as uncaught (then stopping is set). */
int loom__deliver(loom_ctx *c, int max);
/* Record the error on top of the stack as uncaught and stop the loop. */
void loom__uncaught(loom_ctx *c);
int loom__msgh(lua_State *L);
/* Push the pending uncaught error and its traceback (2 values); 0 if none. */
int loom__take_error(lua_State *L, loom_ctx *c);
/* Worker states: package.preload for "loom" and "loom.core". */
void loom__preload(lua_State *L, loom_ctx *c);        /* message handler: saves traceback */
/* Call the function below nargs arguments under loom__msgh; on error the
** error is made uncaught.  Returns the lua_pcall status. */
int loom__pcall(loom_ctx *c, int nargs, int nres);

/* {======================================================================
** Cloner (serial.c)
** ======================================================================= */
/* Encode the value at 'idx' into 'b' (appending).  On failure returns -1
** with a message like "cannot clone msg.x[3]: userdata" in err. */
int loom__encode(lua_State *L, int idx, loom_buf *b, const char *root,
                 char *err, size_t errsz);
/* Decode one value and push it.  Returns 0, or -1 with a message pushed
** instead when the data is malformed (never reads out of bounds). */
int loom__decode(lua_State *L, const unsigned char *p, size_t len);
/* Encode value at idx into a message; raises with the path on failure. */
loom_msg *loom__pack(lua_State *L, loom_ctx *c, int idx, const char *root,
                     int kind, uint64_t target);
int loom__open_serial(lua_State *L);   /* adds clone to the table on top */

/* {======================================================================
** Workers (worker.c) and the loop (loop.c)
** ======================================================================= */
int loom__open_worker(lua_State *L);
int loom__open_loop(lua_State *L);
void loom__worker_on_exit(loom_ctx *c, uint64_t id);  /* join the thread */
void loom__children_stop(loom_ctx *c);  /* terminate and join every child */
/* Worker only: non-zero once terminate() was called on this worker. */
int loom__terminating(loom_ctx *c);
const atomic_int *loom__stopflag(loom_ctx *c);
/* Raise the termination error if this worker is being stopped. */
void loom__check_terminate(lua_State *L, loom_ctx *c);

#endif
