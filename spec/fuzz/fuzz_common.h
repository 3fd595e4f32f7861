/*
** fuzz_common.h: what the fuzz targets (and the seed maker) share: one
** lua_State with a registered class and a clone hook, the fixed chunks
** whose dumps are the only bytecode the decoder may load (LOOM_FUZZING),
** a generator of Lua values driven by bytes, and a deep compare.
** spec/fuzz/README.md says why and how.
*/
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <lualib.h>
#include "loom_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print "fuzz: <what>" and abort(): libFuzzer then saves the input. */
void fz_fail(const char *fmt, ...);

/* The state, made on first use: openlibs, the class "fz.Point"
** (loom.registerClass) and the clone hook "fz.Ref". */
lua_State *fz_state(void);
/* What Lua holds now, made the peak too; the peak since. */
size_t fz_heap_mark(void);
size_t fz_heap_peak(void);
/* Push the class's metatable. */
void fz_push_class(lua_State *L);

/* By-reference values: FZ_NTOKENS counted tokens.  A "fz.Ref" userdata
** holds one count of its token; a reference in a list holds one.  The
** hook refuses to decode FZ_TOKEN_BAD. */
#define FZ_NTOKENS 8
#define FZ_TOKEN_BAD 3
void fz_push_ref(lua_State *L, int token);         /* takes a new count */
/* The decode target's list: tokens 0..FZ_NREFS-1, slot 2 with a type
** that has no hook in this state. */
#define FZ_NREFS 4
void fz_refs_fill(loom_ref *v);
/* A copy of a list for one more decode (each reference counted again). */
void fz_refs_copy(loom_ref *dst, const loom_ref *src, uint32_t n);
/* Release what a decode did not take. */
void fz_refs_drop(loom_ref *v, uint32_t n);
/* After a full GC with nothing of ours alive: every count must be 0. */
void fz_check_tokens(void);

/* Fixed chunks: each returns a new closure (its upvalues vary). */
#define FZ_NCHUNKS 6
void fz_push_closure(lua_State *L, int chunk);

/* Number what the next decodes make (loom__fuzz_made), or stop. */
void fz_made_begin(lua_State *L);
void fz_made_end(lua_State *L);
lua_Integer fz_made_functions(void);    /* functions made since begin */

/* The value at 'copy' was decoded (fz_made_begin before that decode)
** from a blob loom__encode made from the value at 'orig': abort unless
** they are the same, structurally and in their sharing. */
void fz_compare(lua_State *L, int orig, int copy);

/* Push the Lua value that 'data' describes (spec/fuzz/README.md).
** Deterministic: the same bytes give the same value. */
void fz_generate(lua_State *L, const uint8_t *data, size_t size);

/* Generator opcodes: an input is a sequence of these and their operands. */
enum {
  FZ_NIL, FZ_FALSE, FZ_TRUE,
  FZ_SMALLINT,      /* b: the integer b % 80 - 8 */
  FZ_INTSPECIAL,    /* b: one of the edge integers (mininteger...) */
  FZ_INTRAW,        /* 8 bytes, little-endian */
  FZ_FLTSPECIAL,    /* b: NaN, -0.0, inf, denormals... */
  FZ_FLTRAW,        /* 8 bytes: any bit pattern */
  FZ_STRING,        /* n = b % 140, then n bytes */
  FZ_LONGSTRING,    /* b: length (one of 128..100000), c: pattern */
  FZ_TABLE,         /* a, h: array and hash sizes; then the values, and
                       the hash part's key/value pairs (keys: FZ_KEY...) */
  FZ_SHARED,        /* b: a table/function/reference made before (or
                       still being made: a cycle) */
  FZ_FUNCTION,      /* b: chunk; then a value per upvalue but _ENV */
  FZ_CHAIN,         /* b: a chain of LOOM_MAX_DEPTH - 6 + b % 12 tables
                       (key c & 1 ? "x" : 1), then the innermost value */
  FZ_CLASS,         /* a table (as FZ_TABLE) with the class metatable */
  FZ_OTHER,         /* b even: a table with a plain metatable (dropped);
                       odd: a "fz.Ref" userdata of token b / 2 */
  FZ_NOPS
};
#define FZ_MAXLEN 4096    /* -max_len of the targets */

#endif
