/*
** mkcorpus.c: writes the seed corpus (spec/fuzz/corpus/{decode,roundtrip}).
** Decode seeds: blobs loom__encode makes from representative values (the
** functions are closures of the fixed chunks, so their dumps are trusted),
** the blobs of the roundtrip seeds, and hand-made malformed blobs for each
** of the decoder's errors.  Roundtrip seeds: generator programs (opcodes
** in fuzz_common.h) and a few pseudo-random inputs from a fixed seed.
** Usage: fuzz_mkcorpus DIR  (DIR/decode and DIR/roundtrip must exist).
** The output is the same on every run.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"

static const char *outdir;
static int nfiles;

static void put (const char *kind, const char *name, const void *p, size_t n) {
  char path[1024];
  FILE *f;
  snprintf(path, sizeof path, "%s/%s/seed-%s", outdir, kind, name);
  f = fopen(path, "wb");
  if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
  nfiles++;
}

/* Encode the value on top into a decode seed (popped). */
static void putvalue (lua_State *L, const char *name) {
  loom_buf b = {NULL, 0, 0};
  loom_refs refs = {NULL, 0, 0};
  char err[512];
  if (loom__encode(L, -1, &b, &refs, "v", err, sizeof err)) {
    fprintf(stderr, "mkcorpus: %s: %s\n", name, err);
    exit(1);
  }
  if (b.len <= FZ_MAXLEN) put("decode", name, b.p, b.len);   /* else -max_len cuts it */
  loom__buf_free(&b);
  loom__refs_free(&refs);
  lua_pop(L, 1);
}

/* fzref(k): a by-reference value of token k */
static int l_ref (lua_State *L) {
  fz_push_ref(L, (int)luaL_checkinteger(L, 1));
  return 1;
}

/* fzchunk(k, ...): a closure of chunk k, its upvalues but _ENV set from ... */
static int l_chunk (lua_State *L) {
  int n = lua_gettop(L), i, a = 2;
  const char *name;
  fz_push_closure(L, (int)luaL_checkinteger(L, 1));
  for (i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") == 0) continue;
    if (a > n) break;
    lua_pushvalue(L, a++);
    lua_setupvalue(L, -2, i);
  }
  return 1;
}

/* fzpoint(t): t with the class's metatable */
static int l_point (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  fz_push_class(L);
  lua_setmetatable(L, 1);
  return 1;
}

static const struct { const char *name, *expr; } values[] = {
  {"nil", "nil"}, {"true", "true"}, {"false", "false"},
  {"int-0", "0"}, {"int-63", "63"}, {"int-64", "64"}, {"int-neg", "-1"},
  {"int-max", "math.maxinteger"}, {"int-min", "math.mininteger"},
  {"float", "1.5"}, {"float-integral", "2.0"}, {"float-nan", "0/0"},
  {"float-negzero", "-0.0"}, {"float-inf", "-1/0"},
  {"str-empty", "''"}, {"str-zeros", "'a\\0b\\0\\255'"},
  {"str-127", "string.rep('x', 127)"}, {"str-128", "string.rep('y', 128)"},
  {"str-long", "string.rep('\\0z', 400)"},
  {"table-empty", "{}"}, {"table-array", "{1, 2, 3, 'four', 5.5}"},
  {"table-holes", "{1, nil, 3, nil}"},
  {"table-mixed", "{1, 2.5, 'str', {a = {b = true}}, [7] = -300, x = string.rep('z', 200)}"},
  {"table-keys", "{[1.5] = true, [false] = 0, [-1] = 'b', [0] = 'c', [math.mininteger] = 1}"},
  {"cycle", "(function() local t = {} t.self = t t[1] = t return t end)()"},
  {"shared", "(function() local s = {} return {s, s, k = s, [s] = s} end)()"},
  {"records", "(function() local t = {} for i = 1, 12 do t[i] = {id = i, nm = 'n' .. i} end return t end)()"},
  {"deep-200", "(function() local r = {} local t = r for i = 2, 200 do t.x = {} t = t.x end return r end)()"},
  {"fn-upvalues", "fzchunk(0, 1, {2})"}, {"fn-env", "fzchunk(1, {x = 1})"},
  {"fn-envonly", "fzchunk(2)"}, {"fn-self", "fzchunk(3)"}, {"fn-none", "fzchunk(4)"},
  {"fn-five", "fzchunk(5, 1, 'two', 3.0, {4}, nil)"},
  {"fn-shared", "(function() local t = {} local f = fzchunk(0, t, t) t.f = f return {f, t, fzchunk(1, f)} end)()"},
  {"class", "fzpoint({x = 1, y = 2})"},
  {"class-shared", "(function() local p = fzpoint({}) return {p, p, fzpoint({p})} end)()"},
  {"ref", "fzref(0)"}, {"refs-two", "{fzref(0), fzref(1)}"},
  {"refs-four", "{fzref(0), fzref(1), fzref(2), fzref(3)}"},
  {"ref-shared", "(function() local r = fzref(1) return {r, r, [r] = r} end)()"},
};

#define B(...) {(const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__})}
static const struct { const char *name; struct { const unsigned char *p; size_t n; } b; } blobs[] = {
  {"bad-header", B(0x20, 0x00)},
  {"bad-header-bits", B(0x12, 0x00)},
  {"header-only", B(0x10)},
  {"trailing", B(0x10, 0x00, 0x00)},
  {"bad-tag", B(0x10, 0x0c)},
  {"bad-tag-env", B(0x10, 0x09)},
  {"truncated-table", B(0x10, 0x06, 0x01, 0x00, 0x00)},
  {"truncated-entries", B(0x10, 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40)},
  {"truncated-string", B(0x10, 0x05, 0x05, 'a')},
  {"truncated-short", B(0x10, 0x85, 'a')},
  {"truncated-float", B(0x10, 0x04, 0x01, 0x02, 0x03)},
  {"truncated-varint", B(0x10, 0x03, 0x80)},
  {"huge-table", B(0x10, 0x06, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f)},
  {"dangling-ref", B(0x11, 0x07, 0x05)},
  {"ref-zero", B(0x11, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00)},
  {"ref-nohdr", B(0x10, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x01)},
  {"overlong-varint", B(0x10, 0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)},
  {"key-nil", B(0x10, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x40)},
  {"key-nan", B(0x10, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x7f, 0x40)},
  {"class-unregistered", B(0x10, 0x0a, 0x03, 'a', 'b', 'c', 0x06, 0x00, 0x00, 0x00, 0x00,
                           0x00, 0x00, 0x00, 0x00)},
  {"class-notable", B(0x10, 0x0a, 0x01, 'a', 0x00)},
  {"class-truncated", B(0x10, 0x0a, 0x08, 'f', 'z')},
  {"hook-unknown", B(0x10, 0x0b, 0x02, 'n', 'o', 0x00)},
  {"hook-range", B(0x10, 0x0b, 0x06, 'f', 'z', '.', 'R', 'e', 'f', 0x09)},
  {"hook-twice", B(0x10, 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                   0x0b, 0x06, 'f', 'z', '.', 'R', 'e', 'f', 0x00,
                   0x0b, 0x06, 'f', 'z', '.', 'R', 'e', 'f', 0x00)},
  {"hook-nohook", B(0x10, 0x0b, 0x06, 'f', 'z', '.', 'R', 'e', 'f', 0x02)},
  {"hook-refused", B(0x10, 0x0b, 0x06, 'f', 'z', '.', 'R', 'e', 'f', 0x03)},
  {"hook-truncated", B(0x10, 0x0b, 0x06, 'f', 'z')},
  {"fn-untrusted", B(0x10, 0x08, 0x05, 0x00, 0x00, 0x00, 0x1b, 'L', 'u', 'a', 0x54, 0x00)},
  {"fn-truncated", B(0x10, 0x08, 0xff, 0x00, 0x00, 0x00, 0x1b)},
  {"truncated-nested", B(0x10, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                         0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00)},
};

/* generator programs for the roundtrip target */
static const struct { const char *name; struct { const unsigned char *p; size_t n; } b; } progs[] = {
  {"nil", B(FZ_NIL)}, {"true", B(FZ_TRUE)}, {"false", B(FZ_FALSE)},
  {"smallint", B(FZ_SMALLINT, 71)},
  {"int-max", B(FZ_INTSPECIAL, 16)}, {"int-min", B(FZ_INTSPECIAL, 17)},
  {"int-raw", B(FZ_INTRAW, 1, 2, 3, 4, 5, 6, 7, 0x80)},
  {"float-negzero", B(FZ_FLTSPECIAL, 1)}, {"float-nan", B(FZ_FLTSPECIAL, 2)},
  {"float-snan", B(FZ_FLTSPECIAL, 4)}, {"float-payload", B(FZ_FLTSPECIAL, 5)},
  {"float-denormal", B(FZ_FLTSPECIAL, 13)},
  {"float-raw", B(FZ_FLTRAW, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0xff)},
  {"string-zeros", B(FZ_STRING, 5, 'a', 0, 'b', 0, 'c')},
  {"string-127", B(FZ_STRING, 127)}, {"string-139", B(FZ_STRING, 139)},
  {"string-long", B(FZ_LONGSTRING, 9, 7)},
  {"string-long-zeros", B(FZ_LONGSTRING, 5, 0x80)},
  {"table", B(FZ_TABLE, 3, 2, FZ_SMALLINT, 9, FZ_NIL, FZ_STRING, 1, 'x',
              0, 1, 'k', FZ_TRUE,
              4, 2, FZ_FLTSPECIAL, 2)},
  {"table-bigarray", B(FZ_TABLE, 0x90, 0x82, FZ_SMALLINT, 1, FZ_SMALLINT, 2, FZ_SMALLINT, 3,
                       FZ_INTSPECIAL, 8, FZ_FLTSPECIAL, 9, FZ_STRING, 0, FZ_TRUE,
                       FZ_NIL, FZ_NIL, FZ_SMALLINT, 10, FZ_FALSE,
                       FZ_SMALLINT, 11, FZ_SMALLINT, 12, FZ_SMALLINT, 13, FZ_SMALLINT, 14,
                       FZ_SMALLINT, 15, FZ_SMALLINT, 16,
                       3, 10, FZ_STRING, 1, 'a', 2, 100, FZ_STRING, 1, 'b')},
  {"table-keys", B(FZ_TABLE, 0, 4, 4, 1, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, FZ_TRUE,
                   5, 1, FZ_FALSE, 3, 17, FZ_SMALLINT, 3,
                   7, FZ_TABLE, 0, 0, FZ_STRING, 1, 't')},
  {"cycle", B(FZ_TABLE, 1, 1, FZ_SHARED, 0, 6, 0, FZ_SHARED, 0)},
  {"shared", B(FZ_TABLE, 3, 0, FZ_TABLE, 0, 0, FZ_SHARED, 1, FZ_SHARED, 1)},
  {"shared-key", B(FZ_TABLE, 1, 1, FZ_TABLE, 0, 0, 6, 1, FZ_SHARED, 1)},
  {"function", B(FZ_FUNCTION, 0, FZ_SMALLINT, 5, FZ_SHARED, 0)},
  {"function-env", B(FZ_FUNCTION, 1, FZ_TABLE, 1, 0, FZ_STRING, 2, 'h', 'i')},
  {"function-self", B(FZ_FUNCTION, 3, FZ_SHARED, 0)},
  {"function-five", B(FZ_FUNCTION, 5, FZ_SMALLINT, 1, FZ_NIL, FZ_FLTSPECIAL, 1,
                      FZ_TABLE, 0, 0, FZ_SHARED, 0)},
  {"functions-table", B(FZ_TABLE, 3, 0, FZ_FUNCTION, 2, FZ_FUNCTION, 4, FZ_SHARED, 1)},
  {"chain-200", B(FZ_CHAIN, 6, 0, FZ_SHARED, 0)},
  {"chain-201", B(FZ_CHAIN, 7, 1, FZ_TRUE)},
  {"chain-194", B(FZ_CHAIN, 0, 1, FZ_SHARED, 100)},
  {"class", B(FZ_CLASS, 0, 2, 0, 1, 'x', FZ_SMALLINT, 9, 0, 1, 'y', FZ_SMALLINT, 10)},
  {"class-nested", B(FZ_CLASS, 1, 0, FZ_CLASS, 1, 0, FZ_SHARED, 0)},
  {"plain-metatable", B(FZ_OTHER, 0, 1, 1, FZ_TRUE, 2, 1, FZ_FALSE)},
  {"ref", B(FZ_OTHER, 1)},
  {"refs", B(FZ_TABLE, 4, 1, FZ_OTHER, 1, FZ_OTHER, 3, FZ_OTHER, 5, FZ_SHARED, 1,
             6, 2, FZ_SHARED, 3)},
};

int main (int argc, char **argv) {
  lua_State *L;
  size_t i;
  unsigned long long x = 0x9E3779B97F4A7C15ull;
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_mkcorpus DIR\n");
    return 2;
  }
  outdir = argv[1];
  L = fz_state();
  lua_register(L, "fzref", l_ref);
  lua_register(L, "fzchunk", l_chunk);
  lua_register(L, "fzpoint", l_point);
  for (i = 0; i < sizeof values / sizeof values[0]; i++) {
    char code[512];
    snprintf(code, sizeof code, "return %s", values[i].expr);
    if (luaL_dostring(L, code) != LUA_OK) {
      fprintf(stderr, "mkcorpus: %s: %s\n", values[i].name, lua_tostring(L, -1));
      return 1;
    }
    putvalue(L, values[i].name);
  }
  for (i = 0; i < sizeof blobs / sizeof blobs[0]; i++)
    put("decode", blobs[i].name, blobs[i].b.p, blobs[i].b.n);
  {                                        /* LOOM_MAX_DEPTH + 1 tables */
    static unsigned char deep[1 + 9 * (LOOM_MAX_DEPTH + 1) + 1];
    size_t n = 0;
    deep[n++] = 0x10;
    for (i = 0; i <= LOOM_MAX_DEPTH; i++) {
      static const unsigned char t1[9] = {0x06, 0x01, 0, 0, 0, 0, 0, 0, 0};
      memcpy(deep + n, t1, sizeof t1);
      n += sizeof t1;
    }
    deep[n++] = 0x00;
    put("decode", "nested-too-deep", deep, n);
    deep[9] = 0x10;                        /* the same, one table less */
    put("decode", "nested-200", deep + 9, n - 9);
  }
  {                     /* nested tables each claiming all that is left */
    static unsigned char over[FZ_MAXLEN];
    size_t n = 0;
    over[n++] = 0x10;
    for (i = 0; i < LOOM_MAX_DEPTH - 1; i++) {
      uint32_t narr = (uint32_t)(sizeof over - n - 9), zero = 0;
      over[n++] = 0x06;
      memcpy(over + n, &narr, 4);
      memcpy(over + n + 4, &zero, 4);
      n += 8;
    }
    put("decode", "overclaim", over, sizeof over);
  }
  for (i = 0; i < sizeof progs / sizeof progs[0]; i++) {
    char name[64];
    put("roundtrip", progs[i].name, progs[i].b.p, progs[i].b.n);
    fz_generate(L, progs[i].b.p, progs[i].b.n);
    snprintf(name, sizeof name, "gen-%s", progs[i].name);
    if (strcmp(progs[i].name, "chain-201") == 0) lua_pop(L, 1);   /* too deep */
    else putvalue(L, name);
  }
  for (i = 0; i < 12; i++) {               /* pseudo-random programs */
    unsigned char buf[512];
    size_t n = 16 + (i * 41) % 480, j;
    char name[32];
    for (j = 0; j < n; j++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      buf[j] = (unsigned char)(x >> 24);
    }
    snprintf(name, sizeof name, "random-%02zu", i);
    put("roundtrip", name, buf, n);
  }
  lua_settop(L, 0);
  printf("mkcorpus: %d files\n", nfiles);
  return 0;
}
