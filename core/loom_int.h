/*
** loom_int.h: the Lua-free layers of loom, shared by its translation units.
**   L0 basics: byte buffers, owned references, wake-ups, the assert macro.
**   L1 cores:  messages, mailboxes, the runtime, the stop flag, workers and
**              port pairs.  They use no loom Lua layer (the stop flag calls
**              lua_sethook, which is how terminate reaches running Lua).
** The per-state layers (context, cloner, worker states) and the bindings
** are declared in loom_lua.h.  core/README.md draws the map.
** Names: loom_ public (loom.h), loom__ internal, static helpers unprefixed.
** Lock order: a port pair's, a channel's or a shared block's lock may be
** held while taking a mailbox lock, a pair's while taking a lane's; no
** other two of loom's locks (runtime, mailbox, lane, pair, channel,
** shared block, stop) are ever held together, and
** none is held while Lua code runs or an error is raised.  Tracing's
** two (trace.c): the tracer's lock may be held while taking one thread's
** trace buffer lock, never the other way round.
*/
#ifndef LOOM_INT_H
#define LOOM_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "loom.h"

#define LOOM_MAX_DEPTH 200     /* nesting bound of the cloner, both ways */

/* A full (sequentially consistent) fence.  GCC refuses fences under
** TSan, which does not model them: there a seq_cst exchange stands in,
** which is a full barrier on the machine too. */
static inline void loom__fence (void) {
#if defined(__SANITIZE_THREAD__)
  atomic_int x;
  atomic_init(&x, 0);
  (void)atomic_exchange(&x, 1);
#else
  atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* A spinning thread's pause between two looks at a flag. */
static inline void loom__cpu_relax (void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

#ifdef LOOM_DEBUG
#include <assert.h>
#define LOOM_ASSERT(c) assert(c)
#else
#define LOOM_ASSERT(c) ((void)0)
#endif

/* {======================================================================
** L0: growable byte buffer (buf.c).  Owned by whoever holds the struct.
** ======================================================================= */
typedef struct loom_buf {
  unsigned char *p;
  size_t len, cap;
} loom_buf;

/* A buffer's capacity says whose its memory is: from LOOM_BUF_LIBC bytes
** on it is libc's (the C heap, below), since it may become the runtime's
** spare and circulate between threads long after its maker exited;
** smaller ones are the C heap's.  Every buffer's memory, wherever it
** moves (a message's bytes, a stream's chunk, the spare), is freed by
** loom__bytes_free with its capacity. */
#define LOOM_BUF_LIBC ((size_t)1 << 20)
int loom__buf_reserve(loom_buf *b, size_t extra);   /* 0 or -1 (no memory) */
void loom__buf_free(loom_buf *b);
void loom__bytes_free(void *p, size_t cap);
/* A lua_Writer appending to the loom_buf ud (lua_dump into a buffer). */
int loom__buf_writer(lua_State *L, const void *p, size_t sz, void *ud);

/* {======================================================================
** L0: owned references (buf.c).  A by-reference value inside a message
** (a shared buffer, a channel, a transferred port, a host object) is one
** reference {vt, p}: whoever holds the loom_ref owns one count of p and
** must pass it on or call vt->release(p) exactly once.
** ======================================================================= */
typedef struct loom_refvt {
  const char *name;            /* the clone hook that made it */
  void (*release)(void *p);    /* drop one count; any thread */
} loom_refvt;

typedef struct loom_ref {
  const loom_refvt *vt;        /* NULL: slot empty (taken by a decoder) */
  void *p;
} loom_ref;

typedef struct loom_refs {     /* a growable list, owned by its holder */
  loom_ref *v;
  uint32_t n, cap;
} loom_refs;

int loom__refs_add(loom_refs *r, const loom_refvt *vt, void *p);  /* 0 / -1 */
/* Release every reference still held and empty the list (keeps memory). */
void loom__refs_clear(loom_refs *r);
void loom__refs_free(loom_refs *r);                 /* clear, then free */

/* {======================================================================
** L1: messages (message.c).  A message moves sender -> mailbox ->
** receiver and is freed by the receiver after decoding: exactly one thread
** owns it at a time, and with it the references it carries.
** ======================================================================= */
enum {
  LOOM_MSG_MESSAGE = 1,   /* a cloned value for an endpoint */
  LOOM_MSG_ONLINE,        /* worker -> parent: running user code */
  LOOM_MSG_ERROR,         /* worker -> parent: {err, traceback} */
  LOOM_MSG_EXIT,          /* worker -> parent: aux = exit code */
  LOOM_MSG_CLOSE,         /* a port pair was closed: after every message */
  LOOM_MSG_READY,         /* a channel has values for a subscriber */
  LOOM_MSG_MESSAGEERROR,  /* never sent: a MESSAGE that failed to decode */
  LOOM_MSG_WAKE,          /* notify -> a waitAsync's thread: target = its id */
  LOOM_MSG_NKINDS
};

typedef struct loom_msg {
  struct loom_msg *next;
  uint64_t target;        /* endpoint id in the receiving thread */
  int kind;
  lua_Integer aux;        /* EXIT: the exit code */
  uint64_t flow;          /* trace: the flow id of its post, 0 untraced */
  size_t len, cap;        /* cap: size of an owned buffer */
  unsigned char *data;    /* points at inline_[] or at an owned buffer */
  loom_ref *refs;         /* owned references the blob points at, or NULL */
  uint32_t nrefs;
  uint32_t room;          /* bytes inline_[] can hold (a reused block: >= len) */
  struct loom_msg *batch; /* a spare block that heads a batch: the next one */
  struct loom_stream *stream;   /* its bytes arrive in chunks, or NULL */
  unsigned char inline_[];
} loom_msg;

/* {======================================================================
** L1: streams (stream.c): a message whose bytes arrive in chunks, shared
** by one sender (append, end) and one receiver (next, refs).  refs is an
** atomic count (2 at creation: the sender's and the message's); each
** chunk's 'next' is published by an atomic store and read with acquire,
** so a chunk's bytes are the reader's once it sees the chunk; state is
** atomic (the end is stored after the last chunk); refs_v/nrefs are
** written by the sender before the end is stored.  tail is the sender's
** alone and head the reader's alone; the last holder frees what is left.
** lock and cond serve only the reader's sleep (with 'waiting', the same
** handshake as a mailbox's).
** ======================================================================= */
typedef struct loom_chunk {
  _Atomic(struct loom_chunk *) next;
  size_t len, cap;
  unsigned char *p;             /* a loom_buf's memory (loom__bytes_free) */
} loom_chunk;

enum { LOOM_STREAM_OPEN, LOOM_STREAM_DONE, LOOM_STREAM_ABORTED };

typedef struct loom_stream {
  atomic_int refs;
  atomic_int state;
  atomic_int waiting;           /* the reader may sleep on cond */
  loom_chunk first;             /* its next: the first chunk */
  loom_chunk *tail;             /* the sender's: the last chunk */
  loom_chunk *head;             /* the reader's: the chunk being decoded */
  loom_ref *refs_v;             /* the value's references, once done */
  uint32_t nrefs;
  uv_mutex_t lock;
  uv_cond_t cond;
} loom_stream;

/* A new open stream (two counts), or NULL: no memory. */
loom_stream *loom__stream_new(void);
void loom__stream_release(loom_stream *s);
/* Sender: move b's bytes in as the next chunk (b is left empty); 0, or -1
** when out of memory (then b keeps them). */
int loom__stream_append(loom_stream *s, loom_buf *b);
/* Sender: the end, done (ok: refs moved in) or aborted; drops the
** sender's count. */
void loom__stream_end(loom_stream *s, int ok, loom_refs *refs);
/* Reader: the next chunk's bytes (1), the end of a done stream (0), an
** aborted stream (-1), or *stop set while waiting (-2).  The chunk stays
** the reader's until the next call. */
int loom__stream_next(loom_stream *s, const unsigned char **p, size_t *len,
                      const atomic_int *stop);
/* Reader: the value's references, once the stream is done (0); -1
** aborted, -2 *stop set while waiting.  The reader may take them (vt NULL). */
int loom__stream_refs(loom_stream *s, loom_ref **rv, uint32_t *nrv, const atomic_int *stop);

/* A thread's spare message blocks (one owner thread, no lock): a message
** the thread took delivery of gives its block back here, and the thread's
** next small post reuses it, warm in this CPU's cache, instead of a
** malloc/free pair split across two threads. */
typedef struct loom_msgcache {
  loom_msg *head;
  int n;
  loom_msg *batches;         /* full batches taken from the pool, by 'batch' */
  struct loom_msgpool *pool; /* the runtime's, or NULL */
} loom_msgcache;

/* A runtime's spare message blocks, shared by its threads: a thread whose
** cache is full hands it over as one batch (one CAS), and a thread that
** posts more than it receives takes every batch at once (one exchange),
** so a one-way stream reuses its blocks instead of a malloc in the sender
** and a free in the receiver, split across two threads.  'top' is a
** lock-free stack of batches (a batch: LOOM_MSG_KEEP blocks linked by
** 'next', the next batch in its first block's 'batch'); 'n' counts them,
** to bound what the pool keeps (atomic, approximate under races).  Kept
** by the runtime (loom__runtime_keep), freed with it. */
typedef struct loom_msgpool {
  _Atomic(loom_msg *) top;
  atomic_int n;
} loom_msgpool;
#define LOOM_MSG_KEEP 64      /* blocks a thread keeps, and a batch */
#define LOOM_MSG_REUSE 64     /* payloads up to this reuse blocks */

/* A message holding a copy of (or, when large, the storage of) 'b', and
** the references of 'refs' (moved: 'refs' is left empty).  Small payloads
** are copied and 'b' keeps its memory; large ones are moved and 'b' is
** left empty.  NULL when out of memory (then 'refs' still holds them). */
loom_msg *loom__msg_new(int kind, uint64_t target, loom_buf *b, loom_refs *refs);
/* Free a message and release every reference it still holds. */
void loom__msg_free(loom_msg *m);
/* The same two through a thread's cache (its owner only; k may be NULL). */
loom_msg *loom__msg_newc(loom_msgcache *k, int kind, uint64_t target, loom_buf *b,
                         loom_refs *refs);
void loom__msg_freec(loom_msgcache *k, loom_msg *m);
void loom__msgcache_free(loom_msgcache *k);
/* The runtime's pool (the init and fini of loom__runtime_keep). */
void loom__msgpool_init(void *pool, const void *key);
void loom__msgpool_fini(void *pool);
void loom__msg_freelist(loom_msg *m);
/* A message whose bytes are stream s (its count taken), or NULL. */
loom_msg *loom__msg_newstream(loom_msgcache *k, int kind, loom_stream *s);
#define LOOM_SPARE_MIN LOOM_BUF_LIBC   /* buffers worth keeping (libc's) */
#define LOOM_SPARE_MAX (32u << 20)  /* larger ones are given back at once */

/* {======================================================================
** L0: a thread's figures for worker:stats().  Written by that thread
** alone (each a running count or a snapshot it stores, relaxed), read by
** its parent at any time; every figure is atomic, but no two are promised
** to be read at the same instant.
** ======================================================================= */
typedef struct loom_tstats {
  atomic_uint_fast64_t in;       /* MESSAGEs delivered to it */
  atomic_uint_fast64_t out;      /* MESSAGEs it posted */
  atomic_uint_fast64_t done;     /* messages of every kind it took out */
  atomic_uint_fast64_t mem;      /* bytes of its Lua state, lately */
  atomic_uint_fast64_t idle;     /* ns its loop spent idle in the poll */
  atomic_uint_fast64_t asleep;   /* uv_hrtime() it went into the poll, 0: out */
  atomic_uint_fast64_t start, end;   /* uv_hrtime(): its life (end 0: running) */
  atomic_uint_fast64_t cpu;      /* ns of CPU, stored when it ends */
} loom_tstats;

/* The owner's update of its own figure (one writer: no read-modify-write). */
static inline void loom__stat_add (atomic_uint_fast64_t *v, uint64_t n) {
  atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* {======================================================================
** L0: a thread's wake-up (wake.c).  Made, watched and closed by its
** owner's loop; sent from any thread that reaches it (a mailbox keeps it
** under its lock and forgets it before the owner closes it).  On Linux an
** eventfd, elsewhere a uv_async_t; 'fn' runs on the owner's loop, after
** the sends before it are counted.
** ======================================================================= */
typedef struct loom_wake loom_wake;
typedef void (*loom_wakefn)(void *ud);

int loom__wake_init(loom_wake **w, uv_loop_t *loop, loom_wakefn fn, void *ud);
void loom__wake_send(loom_wake *w);            /* any thread */
uv_handle_t *loom__wake_handle(loom_wake *w);  /* owner: for ref/unref */
void loom__wake_close(loom_wake *w);           /* owner: freed by the loop */

/* {======================================================================
** L1: mailbox (mailbox.c): one per thread that runs loom.  Shared by its
** owner (the only taker) and every sender; freed when its atomic refcount
** drops to 0.  'top' is a lock-free stack of the queued messages, newest
** first: senders push with a CAS, the owner takes all with an exchange
** (and reverses them into order).  'lock' guards wake, the waiters'
** handshake (a waiter counts itself in 'waiters' before it looks, looks
** again under the lock, and uncounts itself under it) and changes to the
** list of lanes; 'cond' is signalled on a push while waiters > 0, and broadcast
** on interrupt.
**
** A lane is one sender thread's queue into a mailbox (a fixed port pair's
** direction: a Worker handle and its parentPort never move).  It belongs
** to the mailbox (freed with it, or by the owner once dropped and empty).
** Its producer (the first thread that posts on the fast path; 'producer'
** is set by a CAS) fills the slots of a chain of segments, each slot
** published by its own release store (the owner polls the slot itself:
** one cache line crosses per message, as with the stack's top); a full
** segment is followed by the spare one the owner gave back (its slots
** cleared), or a new one.  The owner takes filled slots in order (acquire)
** and gives each emptied segment back; once the mailbox is closed, whoever frees what a lane
** holds (the close, or a post that finds the close) does so under the
** lane's lock.  Any other post (and the producer's own when no segment
** can be had) goes to the overflow list under the lane's lock, which sets
** 'over'; the producer fills slots only while 'over' is clear, and the
** owner clears it, under the lock, once it has taken the slots and then
** the list, so each thread's posts on a lane keep their order.  The
** owner takes the stack before the lanes, and again before a lane's EXIT,
** so a worker's posts on other ports come before its exit; posts on
** different ports otherwise carry no order between them (as in Node).
** 'tail' counts the producer's fast posts; the rest count in the
** mailbox's 'pushed'.  The owner's look before it sleeps and a fast post's look at
** 'awake' need a store-load order: the producer fences ('fence'; one
** locked instruction, where the stack's push has a CAS), or, when the
** runtime asks for it (loom_config.lane_barrier), it does not and the
** owner issues a process-wide barrier (membarrier) each time it goes to
** sleep.
** ======================================================================= */
#define LOOM_LANE_SLOTS 64     /* a segment's; a lane grows by segments */

typedef struct loom_seg {
  _Atomic(struct loom_seg *) next;   /* linked (release) before its slot 0 is filled */
  _Atomic(loom_msg *) slot[LOOM_LANE_SLOTS];   /* NULL until filled (release) */
} loom_seg;

typedef struct loom_lane {
  /* the producer's line: written by it alone */
  _Alignas(64) atomic_size_t tail;   /* fast posts, ever (a count: relaxed) */
  loom_seg *pseg;                    /* the segment it fills */
  atomic_uintptr_t producer;         /* 0 until the first fast post claims it */
  int fence;                         /* immutable: no owner's barrier, fence */
  /* read by both on every post or take, written seldom */
  _Alignas(64) atomic_int over;      /* posts go to ovf until the owner clears it
                                        (set and cleared under lock) */
  atomic_int dropped;                /* its pair is gone: no more posts */
  /* the owner's line (after a close: under lock, by whoever flushes) */
  _Alignas(64) atomic_size_t head;   /* slots taken, ever */
  size_t cbase;                      /* the number of cseg's first slot */
  loom_seg *cseg;                    /* the segment it takes from */
  _Atomic(loom_seg *) spare;         /* owner -> producer: one emptied segment */
  uv_mutex_t lock;                   /* ovf, ovft and 'over' */
  loom_msg *ovf, *ovft;
  struct loom_lane *next;            /* the mailbox's list: see loom_mailbox */
} loom_lane;

typedef struct loom_mailbox {
  /* what every post reads, written by the owner only when it changes */
  _Alignas(64) atomic_int closed;   /* pushes fail once set (never cleared) */
  atomic_int awake;       /* 1: the owner will look before it blocks */
  atomic_int waiters;     /* owner threads blocked on 'cond' */
  /* what pushes onto the stack write */
  _Alignas(64) _Atomic(loom_msg *) top;   /* queued messages, newest first */
  atomic_uint_fast64_t pushed;   /* messages ever queued but lanes' fast ones */
  _Alignas(64) atomic_int refs;
  atomic_int heavy;       /* a lane relies on the owner's barrier (set once) */
  uv_mutex_t lock;
  uv_cond_t cond;
  loom_wake *wake;        /* owner's wake-up, NULL unless attached */
  /* lanes, newest first: linked (under lock) by any thread, unlinked
  ** (under lock) only by the owner, who alone walks it without the lock */
  _Atomic(loom_lane *) lanes;
} loom_mailbox;

/* Owner only: is a message queued?  (The owner's lock-free spin.) */
int loom__mailbox_nonempty(loom_mailbox *mb);
/* Any thread: messages ever queued (for the queue's length). */
uint64_t loom__mailbox_pushed(loom_mailbox *mb);
/* Any thread: a new lane into mb, or NULL (no memory: post by push).
** 'heavy': loom__mailbox_barriers() said yes (else its posts fence). */
loom_lane *loom__mailbox_lane(loom_mailbox *mb, int heavy);
/* Once per runtime: 1 if the process can issue the owners' barrier. */
int loom__mailbox_barriers(void);
/* Any thread: queue 'm' through lane 'ln' of mb (see above); 'fast': the
** ring may be used (a post; a CLOSE goes to the list).  Returns 0, or -1
** when the mailbox is closed (then 'm' is freed). */
int loom__lane_push(loom_mailbox *mb, loom_lane *ln, loom_msg *m, int fast);
/* The lane's last holder: no post will follow; the owner frees it. */
void loom__lane_drop(loom_lane *ln);

loom_mailbox *loom__mailbox_new(void);
void loom__mailbox_retain(loom_mailbox *mb);
void loom__mailbox_release(loom_mailbox *mb);
/* Owner only: start waking 'wake' on every push. */
void loom__mailbox_attach(loom_mailbox *mb, loom_wake *wake);
/* Owner only: refuse further pushes, free queued messages, forget wake. */
void loom__mailbox_close(loom_mailbox *mb);
/* Any thread: queue 'm' (taking ownership) and wake the owner.  Returns 0,
** or -1 when the mailbox is closed (then 'm' is freed). */
int loom__mailbox_push(loom_mailbox *mb, loom_msg *m);
/* Unlink from the list at *head every message addressed to 'target', in
** order (a list, NULL if none); *tail is set to the list's new last
** message (NULL when emptied). */
loom_msg *loom__msg_extract(loom_msg **head, loom_msg **tail, uint64_t target);

/* Owner only: take the queued messages, in order (NULL if none); the
** last one in *tail.  lane_max > 0 takes at most that many of each
** lane's (all of the stack's), so that one sender's backlog cannot hold
** back the others' first messages (what stays keeps the mailbox
** nonempty); 0 takes every one. */
loom_msg *loom__mailbox_take(loom_mailbox *mb, loom_msg **tail, size_t lane_max);
/* Owner only: about to block in the loop.  Returns 1 if a message came
** in meanwhile (then it does not block); else pushes will wake it. */
int loom__mailbox_sleep(loom_mailbox *mb);
/* Owner only: running again; pushes need not wake it until it sleeps. */
void loom__mailbox_awake(loom_mailbox *mb);
/* Any thread: wake the owner's loop and its blocking waits. */
void loom__mailbox_interrupt(loom_mailbox *mb);
/* Any thread: wake the owner's blocking waits only (not its loop). */
void loom__mailbox_signal(loom_mailbox *mb);
/* Owner only: wait until 'stop' becomes non-zero, timeout_ms passes
** (< 0: no limit) or, if for_msg, a message is queued.  Returns 1 if a
** message is queued. */
int loom__mailbox_wait(loom_mailbox *mb, const atomic_int *stop,
                       double timeout_ms, int for_msg);
/* The same, returning also (0) as soon as *flag is non-zero: a waker sets
** the flag, then calls loom__mailbox_signal (or _interrupt). */
int loom__mailbox_await(loom_mailbox *mb, const atomic_int *stop,
                        const atomic_int *flag, double timeout_ms, int for_msg);

/* {======================================================================
** L1: channels (channel.c, above its fence): multi-producer multi-consumer
** queues of messages, shared by reference.  A channel is shared by every
** thread holding it and freed when its atomic refcount drops to 0 (named
** ones: their runtime's list holds one count until it is freed).  'lock' guards
** every field below it.  A waiter lives on the stack of the thread blocked
** in it, linked while it waits: whoever unlinks it sets *flag and
** signals its mailbox (loom__mailbox_signal).  A subscriber is a thread serving the channel
** from its loop: a push sends it one READY (then none until it drains).
** Lock order: a channel's lock may be held while taking a mailbox lock.
** ======================================================================= */
typedef struct loom_chanwait {
  struct loom_chanwait *next;
  loom_mailbox *mb;            /* whose wait to interrupt (borrowed) */
  atomic_int *flag;            /* set when woken */
} loom_chanwait;

typedef struct loom_chansub {
  struct loom_chansub *next;
  loom_mailbox *mb;            /* retained */
  uint64_t id;                 /* the endpoint READY is addressed to */
  int notified;                /* a READY is on its way, not yet drained */
} loom_chansub;

typedef struct loom_chan {
  atomic_int refs;
  uv_mutex_t lock;
  loom_msg *head, *tail;
  size_t n, cap;               /* cap 0: unbounded */
  int closed;
  loom_chanwait *poppers, *pushers;
  loom_chansub *subs;
  atomic_int ready;            /* head != NULL or closed: for a lock-free spin */
  char *name;                  /* named: in its runtime's list */
  struct loom_chan *next;      /* that list (its own lock, channel.c) */
} loom_chan;

enum { LOOM_CHAN_OK, LOOM_CHAN_EMPTY, LOOM_CHAN_FULL, LOOM_CHAN_CLOSED };

loom_chan *loom__chan_new(size_t cap, const char *name);   /* NULL: no memory */
void loom__chan_retain(loom_chan *q);
void loom__chan_release(loom_chan *q);
/* Queue m (taken on LOOM_CHAN_OK only).  When full (not closed), and w is
** not NULL, w is linked among the pushers before the lock is let go. */
int loom__chan_push(loom_chan *q, loom_msg *m, loom_chanwait *w);
/* Take the oldest message into *m (OK), or EMPTY / CLOSED (closed and
** drained).  When empty and w is not NULL, w is linked among the poppers.
** 'sub' (or NULL): the subscriber draining it, told again on the next push
** once it found the channel empty. */
int loom__chan_pop(loom_chan *q, loom_msg **m, loom_chanwait *w, loom_chansub *sub);
/* Unlink w if still linked (after its wait ended). */
void loom__chan_unwait(loom_chan *q, loom_chanwait *w);
size_t loom__chan_len(loom_chan *q);
/* Close: pushes fail from now on; every waiter wakes, subscribers get a
** READY.  What is queued can still be popped. */
void loom__chan_close(loom_chan *q);
/* Start / stop telling the thread of mb (endpoint id) of pushes. */
loom_chansub *loom__chan_subscribe(loom_chan *q, loom_mailbox *mb, uint64_t id);
void loom__chan_unsubscribe(loom_chan *q, loom_chansub *sub);
/* The channel named 'name' in rt (made with capacity cap if new),
** retained for the caller; NULL when out of memory.  *cap_out: its
** capacity.  The runtime holds one count of each until it is freed. */
loom_chan *loom__chan_named(loom_runtime *rt, const char *name, size_t cap,
                            size_t *cap_out);

/* {======================================================================
** L1: runtime (runtime.c): shared by every thread of one runtime and
** refcounted (atomic).  cfg, t0, spin_ns, open_core and worker_main are
** immutable once the first state is attached (the entry layer sets the
** last two, so the cores below never name what is above them).  next_id
** and trace are atomic (trace is read relaxed by every trace point: a
** thread that sees the switch late records or misses a few events).  'lock' guards the
** head of boot and spare/sparecap; a boot entry never changes once
** published, so a reader that took the head under the lock walks the list
** without it.
** ======================================================================= */
typedef struct loom_boot {
  struct loom_boot *next;
  const char *code;       /* in this block, after the name */
  size_t len;
  int file;               /* code is the path of the module's source file
                          ** (one the main state has not run), not bytecode */
  char name[];
} loom_boot;

/* A BroadcastChannel name's members: the runtime's list (its lock). */
typedef struct loom_bcmember {
  struct loom_bcmember *next;
  uint64_t id;                      /* the endpoint messages go to */
  loom_mailbox *mb;                 /* its thread's inbox (retained) */
} loom_bcmember;

typedef struct loom_bcgroup {
  struct loom_bcgroup *next;
  char *name;
  loom_bcmember *members;
} loom_bcgroup;

struct loom_runtime {
  atomic_int refs;
  atomic_uint_fast64_t next_id;     /* threads and endpoints; 0 = main */
  uv_mutex_t lock;
  loom_config cfg;
  uint64_t t0;                      /* uv_hrtime() at creation */
  uint64_t spin_ns;                 /* from cfg.spin_us */
  int heavy;                        /* lanes rely on their owner's barrier (cfg.lane_barrier) */
  uint64_t close_ns;                /* from cfg.close_ms */
  int (*open_core)(lua_State *L);   /* luaopen_loom_core, for workers */
  void (*worker_main)(void *w);     /* the body of a worker thread */
  loom_boot *boot;                  /* bytecode of loom's Lua modules */
  unsigned char *spare;             /* a large message buffer to reuse */
  size_t sparecap;
  loom_bcgroup *bcast;              /* BroadcastChannel names in use */
  struct loom_kept *kept;           /* blocks kept for the runtime's life */
  atomic_int trace;                 /* tracing is on (trace.c sets it) */
};

/* A block kept as long as the runtime, one per key (a host type's
** wrappers): the runtime's list, under its lock. */
typedef struct loom_kept {
  struct loom_kept *next;
  const void *key;
  void (*fini)(void *block);        /* called before it is freed, or NULL */
  union { max_align_t align; unsigned char data[1]; } u;
} loom_kept;

void loom__runtime_retain(loom_runtime *rt);
uint64_t loom__runtime_newid(loom_runtime *rt);
/* Keep a copy of 'code' as the bytecode (file: the path of the source
** file, NUL included in len) of module 'name' unless one is there already
** (bytecode shadows a file: published in front of it).  The copy is
** libc's: a worker may be the first to load a module, and the runtime
** keeps it after that worker exits (the C heap, below).  0 kept, 1
** already known, -1 no memory; the caller keeps 'code' in every case. */
int loom__runtime_boot_add(loom_runtime *rt, const char *name, const char *code,
                           size_t len, int file);
/* The published entry for 'name', or NULL. */
const loom_boot *loom__runtime_boot_find(loom_runtime *rt, const char *name);
/* The block kept for 'key' (size bytes, made and passed to init(block,
** key) under the runtime's lock the first time), or NULL when out of
** memory.  Freed with the runtime, after fini(block) if fini is given: so
** a concept above the runtime keeps per-runtime state without the runtime
** naming it. */
void *loom__runtime_keep(loom_runtime *rt, const void *key, size_t size,
                         void (*init)(void *block, const void *key),
                         void (*fini)(void *block));
/* BroadcastChannel names: join (0, or -1 when out of memory), leave, and
** the members of a name but 'except', each mailbox retained for the
** caller (a malloc'd array, *out; -1 when out of memory). */
int loom__runtime_bc_join(loom_runtime *rt, const char *name, uint64_t id,
                          loom_mailbox *mb);
void loom__runtime_bc_leave(loom_runtime *rt, const char *name, uint64_t id);
int loom__runtime_bc_members(loom_runtime *rt, const char *name, uint64_t except,
                             loom_bcmember **out, size_t *n);
/* Keep a large buffer for reuse (its pages are already faulted in). */
void loom__runtime_give_spare(loom_runtime *rt, loom_buf *b);
/* Give 'b' (empty) the runtime's spare buffer, if there is one. */
void loom__runtime_take_spare(loom_runtime *rt, loom_buf *b);

/* {======================================================================
** L1: the stop flag of a thread (stop.c), and how terminate() reaches the
** Lua code it runs.  Lives in shared memory (inside its worker); set from
** any thread, read by every loop and wait of its thread.  'lock' guards L
** and running; 'flag' is atomic.
** ======================================================================= */
typedef struct loom_stop {
  atomic_int flag;             /* non-zero: stop running Lua code */
  uv_mutex_t lock;
  lua_State *L;                /* NULL while no Lua code may run */
  lua_State *running;          /* the coroutine being run, or L */
} loom_stop;

#define LOOM_TERMINATED "loom: worker terminated"

int loom__stop_init(loom_stop *s);
void loom__stop_destroy(loom_stop *s);
/* Any thread: set the flag and make the thread's running Lua raise. */
void loom__stop_request(loom_stop *s);
/* The thread itself, after its own code set a hook: if a stop was
** requested, put the terminating hook back. */
void loom__stop_rearm(loom_stop *s);
static inline int loom__stop_isset(const loom_stop *s) {
  return s && atomic_load(&((loom_stop *)s)->flag);
}
/* The thread itself: Lua code may now run in L (returns 1 if a stop was
** requested already), or no longer (detach, before lua_close). */
int loom__stop_attach(loom_stop *s, lua_State *L);
void loom__stop_detach(loom_stop *s);
/* The thread itself: Lua code runs in 'co' now; returns what ran before,
** for loom__stop_untrack. */
lua_State *loom__stop_track(loom_stop *s, lua_State *co);
void loom__stop_untrack(loom_stop *s, lua_State *prev, lua_State *L);

/* {======================================================================
** L1: port pairs (port.c, above its fence): two entangled endpoints.  A
** pair is shared by the threads holding its ends; freed when the atomic
** refcount drops to 0.  id[] is immutable; 'lock' guards mb[], wait[],
** waitt[] and closed, and is held while a message is pushed, so a CLOSE
** comes after every message posted before it.  A fixed pair posts through
** its lanes without the lock instead: a CLOSE goes to the lane's list,
** after the ring (in order for the thread that closes; a post racing a
** close from the other end's thread may arrive after the CLOSE, and is
** dropped there as for any closed end).  An end moving to another
** thread (a transferred MessagePort) is unbound (mb NULL): what is posted
** to it meanwhile waits in the pair, and is pushed, in order, behind what
** the end carried, when the receiving thread binds it.
** ======================================================================= */
typedef struct loom_pair {
  _Alignas(64) uv_mutex_t lock;
  atomic_int refs;
  uint64_t id[2];              /* endpoint ids, one runtime-wide space */
  loom_mailbox *mb[2];         /* the inbox of each end's thread (retained);
                                  NULL while that end is in transit */
  loom_msg *wait[2], *waitt[2];   /* posted to an end in transit, in order */
  loom_lane *lane[2];          /* a fixed pair's rings into mb[i], or NULL:
                                  immutable; the mailbox owns them */
  atomic_int closed;           /* changes under lock; read by lane posts */
  char pad_[64];
} loom_pair;

/* A pair whose end i delivers into mb[i] (retained).  'fixed': its ends
** never move (a Worker handle and its parentPort), so each direction may
** post through a lane.  NULL: no memory. */
loom_pair *loom__pair_new(loom_runtime *rt, loom_mailbox *mb0, loom_mailbox *mb1,
                          int fixed);
void loom__pair_retain(loom_pair *p);
void loom__pair_release(loom_pair *p);
/* Send 'm' from end 'from' to the other end.  Returns 0, or -1 when the
** pair (or the receiving mailbox) is closed: then 'm' is freed.  'force'
** sends even on a closed pair (a worker's ONLINE, ERROR and EXIT). */
int loom__pair_post(loom_pair *p, int from, loom_msg *m, int force);
/* Close the pair: posts fail from now on, and each end gets a CLOSE after
** every message already posted to it.  'm0', 'm1' are the two CLOSE
** messages, made beforehand so that closing cannot fail; both are taken. */
void loom__pair_close(loom_pair *p, loom_msg *m0, loom_msg *m1);
/* Close without telling the ends (the worker end's thread has ended). */
void loom__pair_shut(loom_pair *p);
/* Unbind end e from its thread: posts to it wait in the pair from now on.
** Returns the mailbox it delivered to (the pair's reference, now the
** caller's). */
loom_mailbox *loom__pair_unbind(loom_pair *p, int e);
/* Bind end e to mb (retained): pushes 'carried' (a list, taken) and then
** what waited, in order, and delivers there from now on. */
void loom__pair_bind(loom_pair *p, int e, loom_mailbox *mb, loom_msg *carried);

/* {======================================================================
** L1: workers (worker.c, above its fence): the Lua-free lifecycle.  A
** worker is a thread with an inbox, a stop flag and a port pair to its
** parent; its body (state.c) builds and runs a Lua state in it.
** ======================================================================= */
typedef struct loom_worker loom_worker;

enum { LOOM_SRC_FILE, LOOM_SRC_CODE, LOOM_SRC_FUNC };

typedef struct loom_worker_opts {
  int kind;                    /* LOOM_SRC_* */
  const char *source;          /* file contents, code, or a cloned function */
  size_t srclen;
  const char *chunkname;       /* "@path" for files, or NULL */
  const char *name;            /* or NULL */
  loom_msg *wdata, *argv, *env;   /* cloned values (moved in), or NULL */
  const char *path, *cpath;    /* package.path / cpath, or NULL */
  size_t mem_limit;            /* bytes, 0: none */
  size_t stack_kb;             /* thread stack, 0: the runtime's default */
} loom_worker_opts;

/* Shared by the parent (its handle, its children list) and the worker
** thread; freed when the atomic refcount drops to 0.
** Immutable once the thread starts: rt, id, name, kind, source, chunkname,
** path, cpath, mem_limit, stack_kb, pair, inbox.  The thread alone, from
** its start: wdata, argv, env (decoded there, which takes their
** references) and exitmsg (sent as its last act; freed with the worker if
** the thread never ran).  'stop' has its own rules (above).  Parent thread only: thread, started, joined,
** held, exited, next.  Worker thread only: everything it reaches through its context. */
struct loom_worker {
  atomic_int refs;
  loom_runtime *rt;
  uint64_t id;
  char *name;
  int kind;
  char *source;                /* file contents, code, or cloned function */
  size_t srclen;
  char *chunkname;             /* "@path" for files */
  loom_msg *wdata, *argv, *env;   /* cloned workerData, argv, environment */
  char *path, *cpath;          /* the parent's package.path and cpath */
  size_t mem_limit;
  size_t stack_kb;
  loom_mailbox *inbox;         /* this worker's inbox */
  loom_pair *pair;             /* end 0: parent's Worker, end 1: parentPort */
  loom_msg *exitmsg;           /* made at spawn, so an exit is never lost */
  loom_stop stop;
  /* Any thread: the deadline (uv_hrtime()) of the parent's close, stored
  ** before it terminates this worker, so that this worker's own close of
  ** its children keeps to it; 0: none. */
  _Atomic uint64_t deadline;
  loom_tstats stats;           /* the worker thread's figures (their rules) */
  uv_thread_t thread;
  int started, joined;
  int held, exited;            /* its handle holds the parent's loop; EXIT came */
  loom_worker *next;           /* in the parent's children list */
};

/* Make a worker (not started) from 'o', whose parent thread's inbox is
** 'parent'.  The messages in 'o' are taken whatever happens.  Returns 0 or
** a negative libuv error code (UV_ENOMEM). */
int loom__worker_new(loom_runtime *rt, loom_mailbox *parent,
                     const loom_worker_opts *o, loom_worker **out);
/* Start its thread running rt->worker_main(w) (the thread gets its own
** reference).  Returns 0 or a negative libuv error code. */
int loom__worker_start(loom_worker *w);
void loom__worker_release(loom_worker *w);
/* Any thread: stop it (its Lua code raises; its waits wake up). */
void loom__worker_terminate(loom_worker *w);
/* Parent thread: join the thread, waiting until 'deadline' (uv_hrtime()
** nanoseconds; 0: no limit).  A thread still running then is detached: it
** frees what it owns when it ends.  Returns 0, or -1 when detached. */
int loom__worker_join(loom_worker *w, uint64_t deadline);
#define LOOM_JOIN_GRACE_NS (5 * (uint64_t)1000000000)   /* cfg.close_ms's default */

/* {======================================================================
** L1: shared memory (shared.c, above its fence).  A block is shared by
** every thread holding it (buffers, views, messages, waiters) and freed
** when its atomic refcount drops to 0.  size and data are immutable; the
** bytes are read and written by anyone (atomics where the API says so);
** 'lock' guards the waiter lists.  A waiter is owned by the thread that
** waits (on its stack for a blocking wait, in a userdata for waitAsync);
** while it is listed its links, 'msg' and 'listed' are guarded by the
** block's lock, and a notifier wakes it while holding that lock, so a
** waiter that has taken the lock after waking is never touched again.
** frozen.c keeps a frozen table's image in a block too: written once by
** the thread that froze it, before any other holder exists; read-only
** from then on, so its readers take no lock.
** ======================================================================= */
#define LOOM_WBUCKETS 16       /* waiter lists per block, by address */

typedef struct loom_waiter {
  struct loom_waiter *next, *prev;
  size_t off;                  /* byte offset of the waited element */
  loom_mailbox *mb;            /* the waiting thread's inbox */
  loom_msg *msg;               /* async: the WAKE to push; NULL: blocking */
  atomic_int woken;            /* blocking: set by notify, then its mailbox signalled */
  int listed;
} loom_waiter;

typedef struct loom_shared {
  atomic_int refs;
  uv_mutex_t lock;
  size_t size;
  unsigned char *data;         /* 16-byte aligned, zero-filled */
  loom_waiter *head[LOOM_WBUCKETS], *tail[LOOM_WBUCKETS];
} loom_shared;

#define LOOM_SHARED_MAX ((size_t)1 << 39)   /* 512 GiB */

enum { LOOM_WAIT_OK, LOOM_WAIT_NOTEQUAL, LOOM_WAIT_TIMEDOUT, LOOM_WAIT_STOPPED };

/* A zero-filled block of 'size' bytes (one reference), or NULL. */
loom_shared *loom__shared_new(size_t size);
void loom__shared_retain(loom_shared *s);
void loom__shared_release(loom_shared *s);
/* Under the lock: if the 'width'-byte (4 or 8) element at 'off' holds
** 'expected', list 'w' (its mb and msg set by the caller) and return
** LOOM_WAIT_OK; else LOOM_WAIT_NOTEQUAL. */
int loom__shared_enqueue(loom_shared *s, loom_waiter *w, size_t off,
                         int64_t expected, int width);
/* Take 'w' off its list: 1 if it was still listed, 0 if a notify took it. */
int loom__shared_dequeue(loom_shared *s, loom_waiter *w);
/* Owner thread of mb: block until notified, 'stop' is set or timeout_ms
** passes (< 0: no limit), spinning first for *spin ns (kept between 2 us
** and spin_max, 0: never spin), which the outcome adapts: the caller
** keeps one per thread.  LOOM_WAIT_*. */
int loom__shared_wait(loom_shared *s, size_t off, int64_t expected, int width,
                      loom_mailbox *mb, const atomic_int *stop, double timeout_ms,
                      uint64_t *spin, uint64_t spin_max);
/* Wake up to 'count' waiters of 'off', first come first woken: blocking
** ones through their flag, async ones by pushing their WAKE.  Returns how
** many were woken. */
size_t loom__shared_notify(loom_shared *s, size_t off, size_t count);


/* {======================================================================
** L1: tracing (trace.c, above its fence).  Each thread running loom
** records events into its own buffer (loom_tbuf, in its context) in
** fixed-size chunks; a full chunk joins that buffer's own list, so the
** hot path takes only the thread's own lock, which no other thread takes
** except a collector (the main thread draining, or trace.stop) for the
** moment it moves the chunks out.  The runtime's tracer (a block kept by
** the runtime) lists the buffers that recorded something and keeps the
** chunks of threads that have ended.  Out of memory drops events and
** counts them; so does a thread whose undrained chunks pass
** LOOM_TRACE_MAXBYTES.
** ======================================================================= */
enum {                         /* event kinds (names: loom__trace_kindname) */
  LOOM_TR_SPAWN = 1, LOOM_TR_ONLINE, LOOM_TR_TERMINATE, LOOM_TR_EXIT,
  LOOM_TR_ERROR, LOOM_TR_POST, LOOM_TR_DELIVER, LOOM_TR_PUSH, LOOM_TR_POP,
  LOOM_TR_QUEUED, LOOM_TR_STARTED, LOOM_TR_FINISHED, LOOM_TR_FAILED,
  LOOM_TR_CANCELLED, LOOM_TR_NKINDS
};

#define LOOM_TRACE_CHUNK (32u << 10)       /* bytes of records per chunk */
#define LOOM_TRACE_TEXT 240                /* longest text kept per event */
#define LOOM_TRACE_MAXBYTES (64u << 20)    /* undrained, per thread */

/* One event in a chunk, followed by 'len' bytes of text, padded to 8. */
typedef struct loom_trec {
  uint64_t ts, dur;            /* ns since the runtime's t0; dur 0: instant */
  uint64_t flow;               /* links post -> delivery, queued -> run; 0 none */
  int64_t a, b;                /* figures of the kind (size, target, code, id) */
  uint32_t kind, len;
} loom_trec;

/* A chunk: owned by its buffer until a collector takes it (then by the
** collector). */
typedef struct loom_tchunk {
  struct loom_tchunk *next;
  uint64_t tid;                /* the thread that recorded it */
  uint64_t dropped;            /* events that thread lost before these */
  size_t len;                  /* bytes of records used in data[] */
  char tname[64];
  union { uint64_t align; unsigned char data[1]; } u;   /* LOOM_TRACE_CHUNK bytes */
} loom_tchunk;

struct loom_tracer;

/* A thread's trace buffer, inside its context.  Owned by that thread; a
** collector reaches it through the tracer's list.  'lock' guards cur,
** full, fullt, bytes and dropped.  tid and tname: set by the owner before
** its first event, read-only after.  tr, next, prev: under the tracer's
** lock (tr is written once, by the owner, when it registers, and read
** without the lock by the owner only).  seq: owner only. */
typedef struct loom_tbuf {
  uv_mutex_t lock;
  int ready;                   /* lock initialised */
  loom_tchunk *cur;            /* being filled, or NULL */
  loom_tchunk *full, *fullt;   /* full chunks, oldest first */
  size_t bytes;                /* in full..fullt */
  uint64_t dropped;            /* lost since the last chunk was made */
  uint64_t seq;                /* flow ids: tid << 32 | seq */
  uint64_t tid;
  char tname[64];
  struct loom_tracer *tr;      /* NULL until the first event */
  struct loom_tbuf *next, *prev;
} loom_tbuf;

/* Trace points test this first: one relaxed load when tracing is off.
** Built with -DLOOM_NO_TRACE, the points compile to nothing (the bench's
** baseline). */
#ifdef LOOM_NO_TRACE
#define LOOM_TRACING(rt) ((void)(rt), 0)
#else
#define LOOM_TRACING(rt) atomic_load_explicit(&(rt)->trace, memory_order_relaxed)
#endif

/* Owner: set up (never fails: a buffer whose lock could not be made
** records nothing) and name it; close it (what it holds goes to the
** tracer, where the next collection finds it). */
void loom__tbuf_init(loom_tbuf *tb, uint64_t tid, const char *name);
void loom__tbuf_name(loom_tbuf *tb, uint64_t tid, const char *name);
void loom__tbuf_close(loom_tbuf *tb);
/* Owner: a new flow id (never 0). */
uint64_t loom__trace_flow(loom_tbuf *tb);
/* Owner: record one event.  t0: uv_hrtime() when it began (the event
** lasts until now), or 0 for an instant now.  text may be NULL. */
void loom__trace(loom_runtime *rt, loom_tbuf *tb, int kind, uint64_t t0,
                 uint64_t flow, int64_t a, int64_t b, const char *text,
                 size_t len);
/* Tracing on or off for every thread of rt.  0, or -1 when out of memory
** (the tracer could not be made). */
int loom__trace_enable(loom_runtime *rt, int on);
/* Any thread: take every recorded chunk (each thread's in order, its
** partial one last); *dropped: events lost meanwhile.  NULL if none. */
loom_tchunk *loom__trace_take(loom_runtime *rt, uint64_t *dropped);
void loom__tchunk_freelist(loom_tchunk *c);
const char *loom__trace_kindname(int kind);

/* {======================================================================
** The C heap: with libmimalloc (LOOM_HAVE_MIMALLOC), every malloc, free,
** realloc and strdup of loom's C files is mimalloc's: per-thread heaps, and
** a message allocated by its sender and freed by its receiver costs no
** lock.  Every file includes this header after the system ones, and loom
** frees only what loom allocated (never memory of Lua or libuv), so the
** two heaps never meet.  The Lua states' heaps are alloc.c's (which
** alone undoes this override, to give libc's blocks back to libc).
** ======================================================================= */
#ifdef LOOM_HAVE_MIMALLOC
#include <mimalloc-override.h>
#endif
/* ... except the blocks these give, which are libc's with or without it
** (alloc.c): for what outlives the thread that made it, by design.  On
** mimalloc's heap of a worker, one such block left alive keeps the
** worker's segment abandoned when its thread exits, and mimalloc 2.0.9
** then walks its abandoned list 1024 times at every later thread exit
** (about 220k instructions each).  So the message blocks that circulate
** between threads' caches, and the objects with an identity that any
** thread may keep (shared blocks, channels, port pairs and ports in
** flight, BroadcastChannel groups, blocks the runtime keeps, trace
** chunks) are libc's; each is freed by loom__libc_free in the file that
** made it. */
void *loom__libc_malloc(size_t n);
void *loom__libc_realloc(void *p, size_t n);
void *loom__libc_calloc(size_t n, size_t size);
void *loom__libc_memalign(size_t align, size_t n);
char *loom__libc_strdup(const char *s);
void loom__libc_free(void *p);
/* }====================================================================== */

#endif
