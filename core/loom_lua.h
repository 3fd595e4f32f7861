/*
** loom_lua.h: the layers of loom that touch a lua_State.
**   L2 per-state services: the thread context (ctx.c), the cloner
**      (serial.c), building and running a worker state (state.c).
**   L3 bindings: loop.c, worker.c and port.c below their fences.
**   L4 entry: entry.c (luaopen_loom_core, loom_open, loom_poll).
** Each layer calls only the layers below it.
*/
#ifndef LOOM_LUA_H
#define LOOM_LUA_H

#include <lua.h>
#include <lauxlib.h>
#include "loom_int.h"

/* {======================================================================
** L2: the thread context (ctx.c).  One per thread running loom, owned by
** that thread alone: other threads reach it only through its mailbox and
** its stop flag.  The main thread's lives in a userdata of its state; a
** worker's on its thread's stack, until after lua_close.
**
** Flags, all changed on the owner thread only:
**   running   inside uv_run or loom_poll (loom.run, await, poll)
**   once      inside one turn of await: whatever was delivered may be
**             what the caller waits for, so the poll must not block
**   stopping  leave uv_run now: an uncaught error, loom.exit, terminate;
**             cleared when the loop is entered again
**   has_error an uncaught error waits at registry[ERRKEY]
**   exiting   worker: loom.exit / os.exit was called (exit_code)
**   closed    its state is closing: loom functions raise
** ======================================================================= */
typedef struct loom_ctx loom_ctx;

/* Before Lua dispatch, a kind's handler sees the message (EXIT: join). */
typedef void (*loom_kindfn)(loom_ctx *c, loom_msg *m, void *ud);

struct loom_ctx {
  loom_runtime *rt;
  lua_State *L;               /* the running thread: callbacks run on it */
  uv_loop_t loop;
  loom_wake *wake;            /* wakes the loop when the mailbox fills */
  uv_check_t *check;          /* runs setImmediate callbacks */
  uv_idle_t *idle;            /* keeps the poll from blocking meanwhile */
  uv_prepare_t *prepare;      /* spins on the mailbox before the poll */
  loom_mailbox *mb;           /* this thread's inbox (one reference) */
  loom_stop *stop;            /* this thread's stop flag; NULL on main */
  void *self;                 /* the loom_worker running here, or NULL */
  uint64_t thread_id;
  uint64_t spin_until;        /* uv_hrtime() until which to spin */
  uint64_t spin_win;          /* the window now: adapts (see loom__ctx_spin) */
  uint64_t missed_at;         /* when a window last closed with nothing */
  uint64_t last_turn;         /* uv_hrtime() of await's last real turn */
  int fast_turns;             /* await's direct deliveries since then */
  int holds;                  /* things keeping the loop alive via wake */
  int running, once, stopping, has_error, exiting, closed;
  lua_Integer exit_code;      /* worker: code given to loom.exit */
  loom_msg *pend_head, *pend_tail;  /* taken from mb, not yet delivered */
  loom_msg *current;          /* being delivered; freed if that raises */
  loom_buf scratch;           /* encoder buffer, reused */
  loom_refs scratch_refs;     /* references met by the encoder, reused */
  loom_msgcache mcache;       /* blocks of delivered messages, for the next posts */
  loom_tbuf trace;            /* this thread's trace events (trace.c) */
  loom_tstats *stats;         /* its figures: the worker's, or 'own' */
  loom_tstats own;
  int dispatch_ref;           /* Lua dispatch(target, kind, value, aux) */
  int fast_ref;               /* table target -> sole 'message' listener */
  int immediate_ref;          /* Lua function running setImmediate queue */
  uint64_t poll_deadline;     /* uv_hrtime() bound of loom_poll, or 0 */
  int poll_left;              /* inside loom_poll: messages it may still deliver (-1: any) */
  int poll_count;             /* inside loom_poll: messages it delivered */
  int depth;                  /* Lua callbacks running (loom__ctx_pcall) */
  struct { loom_kindfn fn; void *ud; } kinds[LOOM_MSG_NKINDS];
};

#define LOOM_SPIN_ROUNDS 64         /* deliveries before the loop turns */
#define LOOM_SPIN_TURN_NS 1000000u  /* or this long */
#define LOOM_DELIVER_NS 1000000u    /* one delivery call's bound */
#define LOOM_LANE_TAKE 1024         /* of one sender's lane, per take */

/* Set up c for L: loop, handles, and 'mb' as inbox (retained), or a new
** inbox when mb is NULL.  0, or a negative libuv error code (then c holds
** nothing). */
int loom__ctx_init(loom_ctx *c, loom_runtime *rt, lua_State *L,
                   loom_mailbox *mb);
/* Point the registry of L at c and make the error slots (no allocation
** is needed later to store an uncaught error).  Never raises: 0, or -1
** when out of memory, and then L does not know c. */
int loom__ctx_install(lua_State *L, loom_ctx *c);
/* After lua_close (or in the main state's last finalizer): free the
** queued messages, the loop, the handles, the inbox reference. */
void loom__ctx_close(loom_ctx *c);
/* The context registered in L, or NULL. */
loom_ctx *loom__ctx_get(lua_State *L);
/* The context in upvalue 1 of a loom function; raises once it is closed
** (a finalizer may call loom after the context's own finalizer ran). */
loom_ctx *loom__ctx_check(lua_State *L);
/* Is the running code a finalizer that no Lua code called: one run by
** lua_close (or by a collection the host started from C)?  Lua finalizes
** nothing made while a state closes, so loom makes nothing there that
** needs a finalizer (what it would make could never be released). */
int loom__ctx_inclose(lua_State *L);
/* Raises "what: the state is closing ..." when loom__ctx_inclose. */
void loom__ctx_checkmake(lua_State *L, const char *what);
/* Run callbacks on L (the running coroutine) from now; returns the one
** before, for restoring. */
lua_State *loom__ctx_setstate(loom_ctx *c, lua_State *L);
static inline int loom__ctx_stopping(const loom_ctx *c) {
  return loom__stop_isset(c->stop);
}
/* Leave uv_run as soon as possible. */
void loom__ctx_stop(loom_ctx *c);
/* Raise the termination error if this thread is being stopped. */
void loom__ctx_checkstop(lua_State *L, loom_ctx *c);
void loom__ctx_ref(loom_ctx *c, int delta);   /* holds += delta */
/* A message is expected soon: spin up to rt->spin_ns before blocking. */
void loom__ctx_expect(loom_ctx *c);
/* Spin until a message is queued (1), or the window closes or a stop is
** requested (0).  Never yields the CPU: the window is short. */
int loom__ctx_spin(loom_ctx *c);
/* One turn of await, taking an expected message without a loop turn when
** one is queued or arrives within the spin window (at most
** LOOM_SPIN_ROUNDS times or LOOM_SPIN_TURN_NS between real turns, so
** timers, immediates and I/O still run).  Returns uv_run's answer. */
int loom__ctx_step(loom_ctx *c);
/* One non-blocking turn on L's thread: due timers, wake-ups, immediates,
** then queued messages within budget_us and max (<= 0: no limit).  The
** count delivered, or -1 with an uncaught error pushed. */
int loom__ctx_poll(loom_ctx *c, lua_State *L, int budget_us, int max);
/* Deliver queued messages, for at most LOOM_DELIVER_NS (the rest on the
** next turn): returns count, or -1 when one raised and the error is
** stored as uncaught (then stopping is set). */
int loom__ctx_deliver(loom_ctx *c, int max);
void loom__ctx_setkind(loom_ctx *c, int kind, loom_kindfn fn, void *ud);
/* Record the error on top of the stack as uncaught and stop the loop. */
void loom__ctx_uncaught(loom_ctx *c);
/* Message handler: saves the traceback beside the error. */
int loom__ctx_msgh(lua_State *L);
/* Call the function below nargs arguments under loom__ctx_msgh; on error
** the error is made uncaught.  Returns the lua_pcall status. */
int loom__ctx_pcall(loom_ctx *c, int nargs, int nres);
/* Push the pending uncaught error and its traceback (2 values); 0 if none. */
int loom__ctx_take_error(lua_State *L, loom_ctx *c);
/* Encode the value at idx into a new message of 'kind'; raises, naming
** the function 'who', with the path of the bad value or "not enough
** memory". */
loom_msg *loom__ctx_pack(lua_State *L, loom_ctx *c, int idx,
                         const char *who, const char *root, int kind);
/* Its second half: the message of what c->scratch holds (encoded). */
loom_msg *loom__ctx_packed(lua_State *L, loom_ctx *c, const char *who,
                           const char *root, int kind);
/* From a binding function whose upvalue 1 is the context, called with
** (userdata, owner): push f as a C closure over (context, userdata,
** owner), a method of owner that reaches its userdata with no lookup
** (postMessage, a Channel's push and pop). */
void loom__ctx_method(lua_State *L, lua_CFunction f);
/* require(name) through the state's global require: a part of loom's Lua
** half that C needs now (it loads on first use); raises "fname: cannot
** load name ('require' is not a function)" when there is none. */
void loom__ctx_require(lua_State *L, const char *fname, const char *name);
/* The timeout argument at idx of the function fname (its n-th argument as
** its caller counts): nil, math.huge or more than ~31 years -> -1 (no
** limit), else >= 0 ms (0 polls); a negative, NaN or non-number raises. */
double loom__ctx_timeout(lua_State *L, int idx, const char *fname, int n);
/* Raise the pending uncaught error, if any. */
void loom__ctx_raise(lua_State *L, loom_ctx *c);
/* Take out every undelivered message for endpoint 'target' (taken from
** the inbox or still in it), in order: a list, NULL if none. */
loom_msg *loom__ctx_extract(loom_ctx *c, uint64_t target);
/* The first undelivered MESSAGE for 'target', unlinked, waiting for one
** up to timeout_ms (< 0: no limit; 0: do not wait).  NULL when there is
** none by then, when the thread is being stopped, or when a CLOSE for
** 'target' comes first (*closed = 1; the CLOSE stays queued). */
loom_msg *loom__ctx_pull(loom_ctx *c, uint64_t target, double timeout_ms, int *closed);

/* {======================================================================
** L2: the cloner (serial.c).  Knows no context: a lua_State, a buffer and
** a list of references are all it needs.
** ======================================================================= */
/* A clone hook teaches the cloner a by-reference type, keyed in each state
** by the type's metatable (and by name, to decode).  Both threads of a
** message must register the same name.
**   encode: the value at idx becomes one reference (one count of it is
**           taken).  0, or -1 with a reason in err.  Must not call Lua
**           code, allocate Lua memory or raise.
**   decode: push the value for reference r, taking its count (0), or
**           return -1 with an error message pushed instead (the count is
**           then released by the message).  May allocate and raise. */
typedef struct loom_clonehook {
  const char *name;            /* <= 255 bytes */
  const loom_refvt *vt;
  int (*encode)(lua_State *L, int idx, void **p, char *err, size_t errsz);
  int (*decode)(lua_State *L, void *p);
} loom_clonehook;

/* Register h (static storage) for the metatable at mtidx in L. */
void loom__serial_addhook(lua_State *L, int mtidx, const loom_clonehook *h);
/* Encode the value at 'idx' into 'b' (appending) and the references it
** meets into 'refs' (may be NULL: then a hooked value is an error).  On
** failure returns -1 with a message like "cannot clone msg.x[3]:
** userdata" in err, having released the references it added. */
int loom__encode(lua_State *L, int idx, loom_buf *b, loom_refs *refs,
                 const char *root, char *err, size_t errsz);
/* A streamed message's encoding: fn(ud, b) takes b's bytes whenever a
** chunk is ready (b is left empty), and returns 0, -1 (no memory) or -2
** (the receiver is closed: the encoding fails).  root: the value's root
** table is streamed whatever its size (the port's last message was
** large); else only large arrays are.  The blob's header leaves first. */
typedef struct loom_flush {
  int (*fn)(void *ud, loom_buf *b);
  void *ud;
  int root;
  size_t chunk;                    /* bytes before a chunk leaves; 0: STREAM_CHUNK */
} loom_flush;
#define STREAM_CHUNK (64u << 10)   /* bytes of a chunk, about */
#define STREAM_MIN 256             /* a table with this many array entries streams */
/* loom__encode, with chunks going to fl (NULL: none). */
int loom__encode_ex(lua_State *L, int idx, loom_buf *b, loom_refs *refs,
                    const char *root, char *err, size_t errsz, const loom_flush *fl);
/* Decode one value and push it, taking the references it uses from refs
** (their slots are emptied).  Returns 0, or -1 with a message pushed
** instead when the data is malformed (never reads out of bounds). */
int loom__decode(lua_State *L, const unsigned char *p, size_t len,
                 loom_ref *refs, uint32_t nrefs);
/* Append the blob of {err, ""} to b without a lua_State (a worker whose
** state could not be made still reports why).  0 or -1 (no memory). */
int loom__errblob(loom_buf *b, const char *err);
/* Decode a message's payload (nil when empty).  A streamed message's
** chunks are waited for (until *stop is set, if stop is given); -2 (with
** the reason pushed): its sender failed to encode it, and the message is
** to be dropped unseen. */
int loom__decode_msgx(lua_State *L, loom_msg *m, const atomic_int *stop);
int loom__decode_msg(lua_State *L, loom_msg *m);
void loom__serial_open(lua_State *L);   /* clone, registerClass into t */
/* Pops a function() that opens the C concepts this thread has not opened
** (their hooks with them), called before a hook's name goes to the Lua
** loader of core.lazyhooks; nil unsets it. */
void loom__serial_setopener(lua_State *L);
#ifdef LOOM_FUZZING
/* Built with -DLOOM_FUZZING, the decoder calls these, which a fuzz target
** defines (spec/fuzz): loads bytecode only if loom__fuzz_trusted says the
** bytes are a dump the target made, and shows each table, function and
** by-reference value it makes, top of the stack, to loom__fuzz_made. */
int loom__fuzz_trusted(const unsigned char *p, size_t len);
void loom__fuzz_made(lua_State *L);
#endif

/* {======================================================================
** L2: worker states (state.c)
** ======================================================================= */
/* The body of a worker thread: build its state, run it, report, close. */
void loom__state_main(void *w);

/* alloc.c: the Lua states' heaps.  _libc: lauxlib's allocator's twin;
** _adopt: L switches to mimalloc's heap of the calling thread (giving
** blocks of libc's back to libc) if its allocator is lauxlib's (a plain
** interpreter's, never a host's; nothing without libmimalloc). */
void *loom__alloc_libc(void *ud, void *ptr, size_t osize, size_t nsize);
void loom__alloc_adopt(lua_State *L);
/* A worker state's arena of small blocks, the rest on mimalloc's heap (on
** libc's without libmimalloc): _new(size) makes one of 'size' bytes (NULL:
** too small to hold its biggest block, size 0 among them, or no memory),
** _alloc is the state's lua_Alloc with the arena
** as ud, _free frees it once the state has closed.  Only the thread that
** runs the state uses its arena.  No arena where a sanitizer or valgrind
** must see every block of the states (they build without libmimalloc). */
typedef struct loom_arena loom_arena;
#ifdef LOOM_HAVE_MIMALLOC
#define LOOM_ARENA_SIZE ((size_t)256 << 10)
#else
#define LOOM_ARENA_SIZE 0
#endif
loom_arena *loom__arena_new(size_t size);
void *loom__arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
void loom__arena_free(loom_arena *a);
/* Give the calling thread's free heap memory back to the system now (and
** the heaps of exited threads), so the resident set shows what is live. */
void loom__alloc_collect(void);

/* {======================================================================
** L3: bindings.  Each adds its functions to the table on top; every
** function gets the context as upvalue 1.
** ======================================================================= */
void loom__loop_open(lua_State *L, loom_ctx *c);
void loom__worker_open(lua_State *L, loom_ctx *c);
void loom__port_open(lua_State *L, loom_ctx *c);
void loom__channel_open(lua_State *L, loom_ctx *c);
void loom__broadcast_open(lua_State *L, loom_ctx *c);
void loom__testref_open(lua_State *L);   /* core.testref, for the specs */
/* SharedBuffer and its views (shared.c, below its fence); core.SharedView
** is the views' method table, core.sharedwaits the hook of shared.lua. */
void loom__shared_open(lua_State *L, loom_ctx *c);
void loom__frozen_open(lua_State *L);   /* loom.freeze (frozen.c) */
void loom__trace_open(lua_State *L, loom_ctx *c);   /* trace.c's binding */
/* A port userdata for end 'end' of p, holding a reference of its own
** (taken once the userdata exists: raising leaves p as it was). */
void loom__port_push(lua_State *L, loom_ctx *c, loom_pair *p, int end);
/* Encode the value at idx into a MESSAGE whose transfer list is at tidx
** (nil: none): listed MessagePorts move into it.  Raises like
** loom__ctx_pack, and on a bad transfer list. */
loom_msg *loom__port_packx(lua_State *L, loom_ctx *c, int idx, int tidx,
                           const char *who, const char *root);

/* loom's Lua modules built into the library (libloom), so that a host
** needs none on disk: a list ending with a NULL name.  loom.core as a Lua
** module (core.so) has none: NULL (core/noembed.c). */
typedef struct loom_embedded {
  const char *name;
  const char *src;
  size_t len;
} loom_embedded;
const loom_embedded *loom__embedded(void);

/* Build a metatable: meta[] on it, meth[] as its __index (either NULL). */
void loom__createmeta(lua_State *L, const char *tname, const luaL_Reg *meta,
                      const luaL_Reg *meth, int nup);

#endif
