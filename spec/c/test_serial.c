/*
** test_serial.c: the cloner from C.  Round trips through loom__encode and
** loom__decode, and every truncation or corruption of valid blobs decodes
** to an error, never a crash (run under ASan/valgrind in CI).  Streamed
** encodings go through a real loom_stream with a chunk after every entry
** (a chunk boundary wherever the encoder may put one) or every few
** hundred bytes, and decode to the same value; a stream aborted after its
** first chunks decodes to "drop it" (-2), and its references are freed.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "loom_lua.h"

static int failures = 0, checks = 0;

#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
  fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
  fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* Encode the Lua expression 'expr', decode it, and run 'check' (a Lua
** function of (orig, copy) returning true) on the result. */
static void roundtrip (lua_State *L, const char *expr, const char *check) {
  loom_buf b = {NULL, 0, 0};
  char err[512], code[2048];
  int top = lua_gettop(L);
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != LUA_OK) {
    CHECK(0, "cannot run %s: %s", expr, lua_tostring(L, -1));
    lua_settop(L, top);
    return;
  }
  CHECK(loom__encode(L, -1, &b, NULL, "value", err, sizeof err) == 0, "encode %s: %s", expr, err);
  CHECK(loom__decode(L, b.p, b.len, NULL, 0) == 0, "decode %s: %s", expr, lua_tostring(L, -1));
  snprintf(code, sizeof code, "return function(orig, copy) %s end", check);
  if (luaL_dostring(L, code) != LUA_OK) {
    CHECK(0, "bad check %s", lua_tostring(L, -1));
  }
  else {
    lua_insert(L, -3);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK)
      CHECK(0, "check for %s raised %s", expr, lua_tostring(L, -1));
    else
      CHECK(lua_toboolean(L, -1), "check failed for %s: %s", expr, check);
  }
  lua_settop(L, top);
  loom__buf_free(&b);
}

static void expect_error (lua_State *L, const char *expr, const char *msg) {
  loom_buf b = {NULL, 0, 0};
  char err[512], code[1024];
  int top = lua_gettop(L);
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != LUA_OK) {
    CHECK(0, "cannot run %s", expr);
    lua_settop(L, top);
    return;
  }
  err[0] = '\0';
  CHECK(loom__encode(L, -1, &b, NULL, "msg", err, sizeof err) != 0, "encode of %s should fail", expr);
  CHECK(strcmp(err, msg) == 0, "error for %s: got '%s', want '%s'", expr, err, msg);
  CHECK(lua_gettop(L) == top + 1, "stack left unbalanced by a failed encode");
  lua_settop(L, top);
  loom__buf_free(&b);
}

/* Every prefix and every single-byte corruption of a blob holding no
** function must decode to a value or an error: never crash, never hang. */
static void mangle (lua_State *L, const char *expr) {
  loom_buf b = {NULL, 0, 0};
  char err[512], code[1024];
  size_t i;
  int top = lua_gettop(L), errors = 0;
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != LUA_OK || loom__encode(L, -1, &b, NULL, "v", err, sizeof err)) {
    CHECK(0, "cannot encode %s", expr);
    lua_settop(L, top);
    return;
  }
  for (i = 0; i < b.len; i++) {           /* truncations */
    if (loom__decode(L, b.p, i, NULL, 0) != 0) errors++;
    lua_settop(L, top + 1);
  }
  CHECK(errors == (int)b.len, "every truncation of %s must fail (%d of %zu did)", expr, errors, b.len);
  for (i = 0; i < b.len; i++) {           /* corruptions */
    static const unsigned char vals[] = {0x00, 0x03, 0x05, 0x06, 0x07, 0x08, 0x7f, 0x80, 0xff};
    size_t k;
    unsigned char saved = b.p[i];
    for (k = 0; k < sizeof vals; k++) {
      if (vals[k] == 0x08) continue;       /* would load forged bytecode */
      b.p[i] = vals[k];
      (void)loom__decode(L, b.p, b.len, NULL, 0);
      lua_settop(L, top + 1);
    }
    b.p[i] = saved;
  }
  lua_settop(L, top);
  loom__buf_free(&b);
}

/* An allocator that refuses to hold more than *ud bytes. */
static size_t held;
static void *capped (void *ud, void *p, size_t osize, size_t nsize) {
  size_t cap = *(size_t *)ud, was = p ? osize : 0;
  void *np;
  if (nsize == 0) {
    free(p);
    held -= was;
    return NULL;
  }
  if (held - was + nsize > cap) return NULL;
  np = realloc(p, nsize);
  if (np) held = held - was + nsize;
  return np;
}

static int decode_arg (lua_State *L) {
  const unsigned char *b = (const unsigned char *)lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  lua_settop(L, 0);
  (void)loom__decode(L, b, n, NULL, 0);
  return 1;
}

/* Nested tables that each claim every byte left: each passes the check
** against the bytes left, but together they promise LOOM_MAX_DEPTH times
** more entries than the blob holds.  Preallocating them all took ~3000
** times the blob (3 GB for 1 MB) before the decoder found it truncated. */
static void overclaim (void) {
  size_t n = 256 * 1024, at = 0, cap = 64u << 20;
  unsigned char *b = (unsigned char *)calloc(n, 1);
  lua_State *L = lua_newstate(capped, &cap);
  int i, st;
  held = 0;
  b[at++] = 0x10;
  for (i = 0; i < LOOM_MAX_DEPTH - 1; i++) {
    uint32_t narr = (uint32_t)(n - at - 9), zero = 0;
    b[at++] = 0x06;
    memcpy(b + at, &narr, 4);
    memcpy(b + at + 4, &zero, 4);
    at += 8;
  }
  lua_pushcfunction(L, decode_arg);
  lua_pushlightuserdata(L, b);
  lua_pushinteger(L, (lua_Integer)n);
  st = lua_pcall(L, 2, 1, 0);
  CHECK(st == LUA_OK, "over-claiming tables: status %d (%s)", st, lua_tostring(L, -1));
  CHECK(st == LUA_OK && strcmp(lua_tostring(L, -1), "cannot decode message: truncated table") == 0,
        "over-claiming tables: %s", lua_tostring(L, -1));
  lua_close(L);
  free(b);
}

/* {====== streamed encodings */

static int tostream (void *ud, loom_buf *b) {
  return loom__stream_append((loom_stream *)ud, b);
}

/* Encode expr as a streamed message (chunk: bytes before a chunk may
** leave; root: stream the root table), decode it, run check(orig, copy).
** Returns the number of chunks the encoder made. */
static int streamed (lua_State *L, const char *expr, const char *check, size_t chunk, int root) {
  loom_stream *s = loom__stream_new();
  loom_msg *m = s ? loom__msg_newstream(NULL, LOOM_MSG_MESSAGE, s) : NULL;
  loom_buf b = {NULL, 0, 0};
  loom_refs refs = {NULL, 0, 0};
  loom_flush fl;
  loom_chunk *c;
  char err[512], code[2048];
  int top = lua_gettop(L), r, chunks = 0;
  CHECK(m != NULL, "a stream");
  if (m == NULL) return 0;
  fl.fn = tostream;
  fl.ud = s;
  fl.root = root;
  fl.chunk = chunk;
  snprintf(code, sizeof code, "return %s", expr);
  CHECK(luaL_dostring(L, code) == LUA_OK, "cannot run %s", expr);
  r = loom__encode_ex(L, -1, &b, &refs, "value", err, sizeof err, &fl);
  CHECK(r == 0, "streamed encode of %s: %s", expr, err);
  for (c = atomic_load(&s->first.next); c; c = atomic_load(&c->next)) chunks++;
  if (r == 0) loom__stream_append(s, &b);
  loom__stream_end(s, r == 0, &refs);
  r = loom__decode_msgx(L, m, NULL);
  CHECK(r == 0, "streamed decode of %s: %s", expr, lua_tostring(L, -1));
  if (r == 0) {
    snprintf(code, sizeof code, "return function(orig, copy) %s end", check);
    CHECK(luaL_dostring(L, code) == LUA_OK, "bad check");
    lua_insert(L, -3);
    CHECK(lua_pcall(L, 2, 1, 0) == LUA_OK && lua_toboolean(L, -1), "streamed %s: check failed (%s)",
          expr, lua_tostring(L, -1));
  }
  lua_settop(L, top);
  loom__msg_free(m);
  loom__buf_free(&b);
  loom__refs_free(&refs);
  return chunks;
}

#define BIG "(function() local t = {} for i = 1, 3000 do t[i] = {id = i, s = 'x' .. i} end " \
            "t.k, t[-5] = 'hash', {1, 2} t[777] = t t[1500] = t[2] " \
            "local inner = {} for i = 1, 600 do inner[i] = i * 0.5 end t[2000] = {deep = inner} return t end)()"
#define BIGCHECK "if #copy ~= 3000 or copy.k ~= 'hash' or copy[-5][2] ~= 2 then return false end " \
                 "if copy[777] ~= copy or copy[1500] ~= copy[2] then return false end " \
                 "if #copy[2000].deep ~= 600 or copy[2000].deep[600] ~= 300 then return false end " \
                 "for i = 1, 3000 do local e = copy[i] if i ~= 777 and i ~= 1500 and i ~= 2000 " \
                 "and (e.id ~= i or e.s ~= 'x' .. i) then return false end end return true"

/* The header byte of expr encoded for streaming when no chunk left
** (what postMessage does with a small table) */
static int streamhdr (lua_State *L, const char *expr) {
  loom_stream *s = loom__stream_new();
  loom_buf b = {NULL, 0, 0};
  loom_refs refs = {NULL, 0, 0};
  loom_flush fl;
  char err[512], code[256];
  int r, h = -1;
  fl.fn = tostream;
  fl.ud = s;
  fl.root = 0;
  fl.chunk = (size_t)1 << 30;
  snprintf(code, sizeof code, "return %s", expr);
  CHECK(luaL_dostring(L, code) == LUA_OK, "cannot run %s", expr);
  r = loom__encode_ex(L, -1, &b, &refs, "value", err, sizeof err, &fl);
  CHECK(r == 0 && b.len > 0 && atomic_load(&s->first.next) == NULL, "%s in one piece", expr);
  if (r == 0 && b.len > 0) h = b.p[0];
  lua_pop(L, 1);
  loom__stream_end(s, 0, &refs);
  loom__stream_release(s);
  loom__buf_free(&b);
  loom__refs_free(&refs);
  return h;
}

static void test_streamed (lua_State *L) {
  int n;
  /* a streamed encoding that stayed in one piece says whether its value
  ** refers back (the header's bit 0x01): without, the receiver keeps no
  ** table of references */
  CHECK((streamhdr(L, "{id = 1, name = 'item', tags = {'a', 'b'}}") & 0x01) == 0,
        "no back-reference: header unmarked");
  CHECK((streamhdr(L, "(function() local s = {} return {s, s} end)()") & 0x01) != 0,
        "a back-reference: header marked");
  streamed(L, "(function() local s = {} return {a = s, b = {s}} end)()",
           "return copy.a == copy.b[1] and copy.a ~= orig.a", (size_t)1 << 30, 0);
  /* a chunk after every entry, after every few hundred bytes, never */
  n = streamed(L, BIG, BIGCHECK, 1, 0);
  CHECK(n > 3000, "a chunk after every entry (%d chunks)", n);
  n = streamed(L, BIG, BIGCHECK, 300, 1);
  CHECK(n > 100, "a chunk every few hundred bytes (%d)", n);
  n = streamed(L, BIG, BIGCHECK, (size_t)1 << 30, 0);
  CHECK(n == 0, "one piece when the chunk is never full (%d)", n);
  /* the root streamed around a large array, and small values */
  streamed(L, "{op = 'echo', data = " BIG "}", "return copy.op == 'echo' and #copy.data == 3000", 1, 1);
  streamed(L, "{1, 2, 3}", "return #copy == 3 and copy[3] == 3", 1, 1);
  streamed(L, "{}", "return next(copy) == nil", 1, 1);
  streamed(L, "{x = {y = {}}}", "return type(copy.x.y) == 'table'", 1, 1);
  streamed(L, "'a string'", "return copy == 'a string'", 1, 1);
  /* a small table around a large array, not streamed: no chunk inside */
  n = streamed(L, "{op = 'echo', data = " BIG "}", "return #copy.data == 3000", 1, 0);
  CHECK(n == 0, "no chunk while a table around waits for its counts (%d)", n);
  {  /* aborted after chunks left: the decoder says drop it, and frees all */
    loom_stream *s = loom__stream_new();
    loom_msg *m = loom__msg_newstream(NULL, LOOM_MSG_MESSAGE, s);
    loom_buf b = {NULL, 0, 0};
    loom_refs refs = {NULL, 0, 0};
    loom_flush fl;
    char err[512];
    int r;
    fl.fn = tostream;
    fl.ud = s;
    fl.root = 1;
    fl.chunk = 64;
    CHECK(luaL_dostring(L, "local t = {} for i = 1, 2000 do t[i] = {i} end t[1900] = io.stdout "
                           "return t") == LUA_OK, "the bad value");
    r = loom__encode_ex(L, -1, &b, &refs, "value", err, sizeof err, &fl);
    CHECK(r != 0 && strstr(err, "cannot clone value[1900]: userdata") != NULL, "the error: %s", err);
    CHECK(atomic_load(&s->first.next) != NULL, "chunks left before the error");
    loom__stream_end(s, 0, &refs);
    CHECK(loom__decode_msgx(L, m, NULL) == -2, "an aborted stream: drop it");
    CHECK(strstr(lua_tostring(L, -1), "could not be cloned") != NULL, "says why: %s",
          lua_tostring(L, -1));
    lua_settop(L, 0);
    loom__msg_free(m);
    loom__buf_free(&b);
    loom__refs_free(&refs);
  }
}

/* }====== */

int main (void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  /* scalars */
  roundtrip(L, "nil", "return copy == nil");
  roundtrip(L, "true", "return copy == true");
  roundtrip(L, "false", "return copy == false");
  roundtrip(L, "0", "return math.type(copy) == 'integer' and copy == 0");
  roundtrip(L, "63", "return math.type(copy) == 'integer' and copy == 63");
  roundtrip(L, "64", "return copy == 64");
  roundtrip(L, "-1", "return copy == -1");
  roundtrip(L, "math.maxinteger", "return copy == math.maxinteger");
  roundtrip(L, "math.mininteger", "return copy == math.mininteger");
  roundtrip(L, "1.5", "return math.type(copy) == 'float' and copy == 1.5");
  roundtrip(L, "2.0", "return math.type(copy) == 'float' and copy == 2.0");
  roundtrip(L, "0/0", "return copy ~= copy");
  roundtrip(L, "1/0", "return copy == math.huge");
  roundtrip(L, "-1/0", "return copy == -math.huge");
  roundtrip(L, "-0.0", "return copy == 0 and 1/copy == -math.huge");
  roundtrip(L, "''", "return copy == ''");
  roundtrip(L, "'\\0a\\255\\0'", "return copy == orig and #copy == 4");
  roundtrip(L, "string.rep('x', 127)", "return copy == orig");
  roundtrip(L, "string.rep('y', 128)", "return copy == orig");
  roundtrip(L, "string.rep('\\1\\2', 100000)", "return copy == orig");
  /* tables */
  roundtrip(L, "{}", "return type(copy) == 'table' and next(copy) == nil and copy ~= orig");
  roundtrip(L, "{1, 2, 3, n = 'x', [1.5] = true, [false] = 0}",
            "return #copy == 3 and copy[3] == 3 and copy.n == 'x' and copy[1.5] == true and copy[false] == 0");
  roundtrip(L, "{1, nil, 3}", "return copy[1] == 1 and copy[2] == nil and copy[3] == 3");
  roundtrip(L, "{[10] = 'a', [-1] = 'b', [0] = 'c'}", "return copy[10] == 'a' and copy[-1] == 'b' and copy[0] == 'c'");
  roundtrip(L, "(function() local t = {}; t.self = t; return t end)()", "return copy.self == copy");
  roundtrip(L, "(function() local s = {}; return {a = s, b = s, {s}} end)()",
            "return copy.a == copy.b and copy[1][1] == copy.a and copy.a ~= orig.a");
  roundtrip(L, "(function() local k = {}; return {[k] = k} end)()",
            "local k = next(copy); return type(k) == 'table' and copy[k] == k");
  roundtrip(L, "setmetatable({x = 1}, {__index = function() return 42 end})",
            "return copy.x == 1 and getmetatable(copy) == nil");
  /* many records sharing key names, and sharing across them */
  roundtrip(L, "(function() local t = {} for i = 1, 300 do t[i] = {id = i, name = 'n' .. i, [string.rep('k', 40)] = i, [string.rep('q', 41)] = -i} end return t end)()",
            "for i = 1, 300 do local r = copy[i]; if r.id ~= i or r.name ~= 'n' .. i or r[string.rep('k', 40)] ~= i or r[string.rep('q', 41)] ~= -i then return false end end return #copy == 300");
  roundtrip(L, "(function() local t = {} for i = 1, 100 do t[i] = {['k' .. (i % 70)] = {x = i}} end t.self = t return t end)()",
            "for i = 1, 100 do if copy[i]['k' .. (i % 70)].x ~= i then return false end end return copy.self == copy");
  /* functions */
  roundtrip(L, "function(a, b) return a + b end", "return copy(2, 3) == 5");
  roundtrip(L, "(function() local n = 10; return function(a) return a * n end end)()",
            "return copy(4) == 40");
  roundtrip(L, "(function() local function fact(n) return n <= 1 and 1 or n * fact(n - 1) end return fact end)()",
            "return copy(10) == 3628800");
  roundtrip(L, "function() return string.format('%d', 7) end", "return copy() == '7'");
  /* nesting at the bound */
  roundtrip(L, "(function() local t = {}; local r = t; for i = 1, 190 do t.x = {}; t = t.x end; return r end)()",
            "local d = 0; local t = copy; while t.x do d = d + 1; t = t.x end; return d == 190");
  /* failures name the path */
  expect_error(L, "io.stdout", "cannot clone msg: userdata");
  expect_error(L, "{items = {1, 2, {handle = io.stdout}}}", "cannot clone msg.items[3].handle: userdata");
  expect_error(L, "{print}", "cannot clone msg[1]: C function");
  expect_error(L, "{co = coroutine.create(print)}", "cannot clone msg.co: thread");
  expect_error(L, "{['a b'] = {io.stdout}}", "cannot clone msg[\"a b\"][1]: userdata");
  expect_error(L, "{[io.stdout] = 1}", "cannot clone msg{key [userdata]}: userdata");
  expect_error(L, "(function() local h = io.stdout; return {f = function() return h end} end)()",
               "cannot clone msg.f(upvalue 'h'): userdata");
  {
    char want[128];
    snprintf(want, sizeof want, "cannot clone msg%s: nested deeper than %d levels",
             "", LOOM_MAX_DEPTH);
    /* depth error: check only the tail, the path is long */
    {
      loom_buf b = {NULL, 0, 0};
      char err[512];
      (void)luaL_dostring(L, "local t = {}; local r = t; for i = 1, 10000 do t[1] = {}; t = t[1] end; return r");
      CHECK(loom__encode(L, -1, &b, NULL, "msg", err, sizeof err) != 0, "deep encode must fail");
      CHECK(strstr(err, "nested deeper than") != NULL, "depth message: %s", err);
      CHECK(strstr(err, "...") != NULL, "long path is cut: %s", err);
      lua_pop(L, 1);
      loom__buf_free(&b);
    }
  }
  /* malformed blobs */
  mangle(L, "{1, 2.5, 'str', {a = {b = true}}, [7] = -300, x = string.rep('z', 200)}");
  mangle(L, "(function() local t = {}; t[1] = t; t.s = {t, t}; return t end)()");
  mangle(L, "(function() local t = {} for i = 1, 20 do t[i] = {id = i, nm = 'n' .. i} end return t end)()");
  {
    static const unsigned char bad1[] = {0x10, 0x06, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f};
    static const unsigned char bad2[] = {0x11, 0x07, 0x05};
    static const unsigned char bad3[] = {0x10, 0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK(loom__decode(L, bad1, sizeof bad1, NULL, 0) != 0, "huge table header");
    lua_pop(L, 1);
    CHECK(loom__decode(L, bad2, sizeof bad2, NULL, 0) != 0, "dangling reference");
    lua_pop(L, 1);
    CHECK(loom__decode(L, bad3, sizeof bad3, NULL, 0) != 0, "overlong varint");
    lua_pop(L, 1);
    CHECK(loom__decode(L, bad1, 0, NULL, 0) != 0, "empty blob");
    lua_pop(L, 1);
  }
  {  /* varints: one encoding per value (LEB128, minimal) */
    static const unsigned char zero[] = {0x10, 0x03, 0x00};
    static const unsigned char zero_long[] = {0x10, 0x03, 0x80, 0x00};
    static const unsigned char max_ok[] = {0x10, 0x03, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const unsigned char too_big[] = {0x10, 0x03, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    CHECK(loom__decode(L, zero, sizeof zero, NULL, 0) == 0 && lua_tointeger(L, -1) == 0, "0");
    lua_pop(L, 1);
    CHECK(loom__decode(L, zero_long, sizeof zero_long, NULL, 0) != 0, "0 as two bytes");
    CHECK(strstr(lua_tostring(L, -1), "overlong") != NULL, "says overlong: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    CHECK(loom__decode(L, max_ok, sizeof max_ok, NULL, 0) == 0 &&
          lua_tointeger(L, -1) == LUA_MAXINTEGER, "maxinteger in ten bytes");
    lua_pop(L, 1);
    CHECK(loom__decode(L, too_big, sizeof too_big, NULL, 0) != 0, "a 65th bit");
    lua_pop(L, 1);
  }
  overclaim();
  test_streamed(L);
  CHECK(lua_gettop(L) == 0, "stack balanced at the end (%d)", lua_gettop(L));
  lua_close(L);
  printf("test_serial: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
