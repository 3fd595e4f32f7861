/*
** fuzz_roundtrip.c: libFuzzer target for encode-then-decode.  The input
** drives a generator (fuzz_common.c) that builds a Lua value: nil,
** booleans, edge integers and floats (NaN payloads, -0.0, infinities),
** strings with zeros, long strings, tables with array and hash parts,
** sharing and cycles, chains deeper than LOOM_MAX_DEPTH, closures of
** fixed chunks with upvalues, class tables, by-reference values.  The
** value is encoded (only "nested deeper than" may fail; half the inputs
** as a streamed message is, its chunks put back together), decoded, and must
** be the same value (fz_compare: structure, sharing, subtypes, bits).
** Then truncations of the blob must all fail to decode: every one for a
** blob up to TRUNC_ALL bytes, a sample of 32 above (they cost: each
** one decodes a part of the value).
**
** The decoder is built with -DLOOM_FUZZING as for fuzz_decode; the
** closures here are of the fixed chunks, so their dumps are trusted.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"

#define TRUNC_ALL 64       /* every truncation of a blob up to this size */
#define TRUNC_ENDS 8       /* else the first and last TRUNC_ENDS cuts */
#define TRUNC_INSIDE 16    /* and TRUNC_INSIDE evenly between */

static void truncated (lua_State *L, const loom_buf *b, const loom_refs *refs, size_t cut) {
  loom_ref tmp[64], *v = refs->n <= 64 ? tmp : (loom_ref *)malloc(refs->n * sizeof *v);
  if (v == NULL) fz_fail("no memory");
  fz_refs_copy(v, refs->v, refs->n);
  if (loom__decode(L, b->p, cut, v, refs->n) == 0)
    fz_fail("a truncation to %zu of %zu bytes decoded", cut, b->len);
  if (lua_gettop(L) != 2) fz_fail("failed decode left the stack at %d", lua_gettop(L));
  lua_pop(L, 1);
  fz_refs_drop(v, refs->n);
  if (v != tmp) free(v);
}

/* a streamed encoding's chunks, put back together: the decoder reads a
** streamed blob in one piece as it reads it chunk by chunk */
static int gather (void *ud, loom_buf *b) {
  loom_buf *all = (loom_buf *)ud;
  if (loom__buf_reserve(all, b->len)) return -1;
  memcpy(all->p + all->len, b->p, b->len);
  all->len += b->len;
  b->len = 0;
  return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  static unsigned long runs = 0;
  static int verbose = -1;
  lua_State *L = fz_state();
  int r;
  loom_buf b = {NULL, 0, 0};
  loom_refs refs = {NULL, 0, 0};
  char err[512];
  fz_generate(L, data, size);
  if (size > 0 && (data[0] & 1)) {   /* half the inputs: a streamed message's encoding */
    loom_buf all = {NULL, 0, 0};
    loom_flush fl;
    fl.fn = gather;
    fl.ud = &all;
    fl.root = (data[0] & 2) != 0;
    fl.chunk = (size_t)(data[0] >> 2);     /* 0: 64 KiB; else a chunk after about every entry */
    r = loom__encode_ex(L, 1, &b, &refs, "v", err, sizeof err, &fl);
    if (r == 0 && gather(&all, &b)) fz_fail("no memory");
    loom__buf_free(&b);
    b = all;
  }
  else r = loom__encode(L, 1, &b, &refs, "v", err, sizeof err);
  if (verbose < 0) verbose = getenv("FUZZ_VERBOSE") != NULL;
  if (verbose)     /* FUZZ_VERBOSE=1 fuzz_roundtrip FILE...: what each made */
    fprintf(stderr, "%zu bytes: a %s, %s %zu bytes, %u references\n", size, luaL_typename(L, 1),
            r ? err : "blob of", b.len, refs.n);
  if (r) {
    if (strstr(err, "nested deeper than") == NULL) fz_fail("encode failed: %s", err);
    if (refs.n != 0) fz_fail("a failed encode kept %u references", refs.n);
    if (lua_gettop(L) != 1) fz_fail("failed encode left the stack at %d", lua_gettop(L));
  }
  else {
    size_t cut;
    if (lua_gettop(L) != 1) fz_fail("encode left the stack at %d", lua_gettop(L));
    {
      loom_refs dec = {NULL, 0, 0};     /* a copy: the truncations need the list */
      if (refs.n) {
        dec.v = (loom_ref *)malloc(refs.n * sizeof *dec.v);
        if (dec.v == NULL) fz_fail("no memory");
        fz_refs_copy(dec.v, refs.v, refs.n);
        dec.n = dec.cap = refs.n;
      }
      fz_made_begin(L);
      if (loom__decode(L, b.p, b.len, dec.v, dec.n) != 0)
        fz_fail("decode of a fresh blob failed: %s", lua_tostring(L, -1));
      fz_made_end(L);
      loom__refs_free(&dec);
    }
    if (lua_gettop(L) != 2) fz_fail("decode left the stack at %d", lua_gettop(L));
    fz_compare(L, 1, 2);
    lua_settop(L, 1);
    if (b.len <= TRUNC_ALL)
      for (cut = 0; cut < b.len; cut++) truncated(L, &b, &refs, cut);
    else {
      /* the inside cuts start at an offset the input picks: over many
      ** inputs, every cut of a blob is tried, and a crash reproduces */
      size_t span = b.len - 2 * TRUNC_ENDS, step = span / TRUNC_INSIDE, at;
      at = TRUNC_ENDS + (size > 0 ? (size_t)data[size - 1] * 131 % step : 0);
      for (cut = 0; cut < TRUNC_ENDS; cut++) {
        truncated(L, &b, &refs, cut);
        truncated(L, &b, &refs, b.len - 1 - cut);
      }
      for (cut = 0; cut < TRUNC_INSIDE; cut++, at += step) truncated(L, &b, &refs, at);
    }
  }
  loom__buf_free(&b);
  loom__refs_free(&refs);
  fz_made_begin(L);        /* drop the last list */
  fz_made_end(L);
  lua_settop(L, 0);
  if (++runs % 256 == 0) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    fz_check_tokens();
  }
  return 0;
}
