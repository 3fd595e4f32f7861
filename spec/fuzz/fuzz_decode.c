/*
** fuzz_decode.c: libFuzzer target for the decoder.  The input is a blob;
** loom__decode must push a value or an error message, never crash, never
** read out of bounds (ASan), never take a reference twice or leak one
** (the counted tokens).  A blob that decodes must clone again: encoding
** the value and decoding that gives the same value (fz_compare).
**
** The decoder trusts the bytecode inside a blob (serial.c): this target's
** copy of serial.c is built with -DLOOM_FUZZING, so only the dumps of the
** fixed chunks in fuzz_common.c reach luaL_loadbufferx; any other function
** is refused with "functions not decoded while fuzzing".
**
** The decoder gets FZ_NREFS references (fuzz_common.h) rather than none,
** so a blob can reach the by-reference paths: a good one, a type without
** a hook, one the hook refuses, one taken twice.  And a decode must hold
** no more Lua heap than HEAP_PER_BYTE times the blob (and HEAP_SLACK).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"

#define PREFIX "cannot decode message: "

/* A decode may hold at most this much Lua heap per byte of blob (a table
** entry, a hash node rounded up, a short string's header), and this much
** more: no blob may make the decoder allocate more than it holds. */
#define HEAP_PER_BYTE 64
#define HEAP_SLACK 65536

static void reclone (lua_State *L, int hasfunc) {
  loom_buf b = {NULL, 0, 0};
  loom_refs refs = {NULL, 0, 0};
  char err[512];
  if (loom__encode(L, 1, &b, &refs, "v", err, sizeof err)) {
    /* the value's order is not the blob's: a shared table can sit
    ** deeper now; a function's upvalue can hold the globals (T_ENV or
    ** what the loader puts in upvalue 1), which holds C functions */
    if (strstr(err, "nested deeper than") == NULL && !hasfunc)
      fz_fail("a decoded value does not encode: %s", err);
    if (refs.n != 0) fz_fail("a failed encode kept %u references", refs.n);
  }
  else {
    if (lua_gettop(L) != 1) fz_fail("encode left the stack at %d", lua_gettop(L));
    fz_made_begin(L);
    if (loom__decode(L, b.p, b.len, refs.v, refs.n) != 0)
      fz_fail("a re-encoded value does not decode: %s", lua_tostring(L, -1));
    fz_made_end(L);
    if (lua_gettop(L) != 2) fz_fail("decode left the stack at %d", lua_gettop(L));
    fz_compare(L, 1, 2);
  }
  loom__buf_free(&b);
  loom__refs_free(&refs);
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  static unsigned long runs = 0;
  static int verbose = -1;
  lua_State *L = fz_state();
  loom_ref refs[FZ_NREFS];
  size_t base;
  int r;
  fz_refs_fill(refs);
  fz_made_begin(L);
  base = fz_heap_mark();
  r = loom__decode(L, data, size, refs, FZ_NREFS);
  if (fz_heap_peak() - base > HEAP_PER_BYTE * size + HEAP_SLACK)
    fz_fail("decoding %zu bytes took %zu bytes of Lua heap", size, fz_heap_peak() - base);
  fz_made_end(L);
  fz_refs_drop(refs, FZ_NREFS);
  if (lua_gettop(L) != 1) fz_fail("decode left the stack at %d", lua_gettop(L));
  if (verbose < 0) verbose = getenv("FUZZ_VERBOSE") != NULL;
  if (verbose)     /* FUZZ_VERBOSE=1 fuzz_decode FILE...: what each did */
    fprintf(stderr, "%zu bytes: %s\n", size, r ? lua_tostring(L, 1) : luaL_typename(L, 1));
  if (r != 0) {
    if (lua_type(L, 1) != LUA_TSTRING || strncmp(lua_tostring(L, 1), PREFIX, strlen(PREFIX)) != 0)
      fz_fail("decode failed without its message");
  }
  else reclone(L, fz_made_functions() != 0);
  fz_made_begin(L);        /* drop the last list */
  fz_made_end(L);
  lua_settop(L, 0);
  if (++runs % 256 == 0) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    fz_check_tokens();
  }
  return 0;
}
