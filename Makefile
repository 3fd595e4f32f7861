# Thin driver over CMake (as luv does).  `make demo` and `make test` are
# the two commands a newcomer needs; both install missing Debian packages.
BUILD ?= build
JOBS ?= 2
LUA ?= lua5.4
BUSTED ?= /usr/bin/busted
CMAKE_FLAGS ?=
LUA_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;"
LUA_ENV_VG = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" LUA_CPATH="$(CURDIR)/$(VALGRIND_BUILD)/?.so;;"

.PHONY: test-valgrind-all all deps build test test-nospin demo bench bench-embed lint test-asan test-tsan test-valgrind fuzz fuzz-build fuzz-corpus check rock clean

all: build

deps:
	@.ci/deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# every test: the C tests and each busted spec, through ctest
test: build
	cd $(BUILD) && ctest --output-on-failure -j 1

# the same suite with the spin off: every wake-up goes through the kernel
test-nospin: build
	cd $(BUILD) && LOOM_SPIN_US=0 ctest --output-on-failure -j 1

# the primes below 5,000,000 with a task pool and a progress bar (a few
# seconds on 2 cores; examples/primes.lua alone counts to 20,000,000)
demo: build
	$(LUA_ENV) $(LUA) examples/primes.lua 5000000

bench: build
	$(LUA_ENV) $(LUA) bench/run.lua

# luacheck (Debian's lua-check) over every Lua file; .luacheckrc says why
# each of its few exceptions is there
lint:
	@.ci/deps lua-check
	luacheck -q lua spec examples bench

# the C API's costs for an engine (bench/embed.c): loom_poll on an empty
# queue, a flood per ms of budget, C round trips against the Lua one
bench-embed: build
	cd $(BUILD) && ./loom_bench_embed

# the same suite under AddressSanitizer+UBSan and under ThreadSanitizer
test-asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan CMAKE_FLAGS=-DLOOM_SANITIZE=address
test-tsan:
	@$(MAKE) --no-print-directory test BUILD=build-tsan CMAKE_FLAGS=-DLOOM_SANITIZE=thread

# every spec under valgrind: no errors, no lost blocks.  The bad-input
# sweep (4,800 calls, many in workers and child processes) takes most of
# an hour there, so this target leaves it out (VALGRIND_EXCLUDE=) and
# test-valgrind-all runs it too; it runs under ASan and TSan in CI.
# It runs on a build without mimalloc (build-valgrind), whose blocks
# valgrind could not see; the sanitizer builds leave it out for the same
# reason: the suite runs on both heaps.
VALGRIND_SPECS ?= spec
VALGRIND_EXCLUDE ?= --exclude-pattern=sweep_spec
VALGRIND_BUILD ?= build-valgrind
VALGRIND_CTESTS ?= test_serial test_embed test_mailbox test_stream test_arena
test-valgrind:
	@.ci/deps valgrind
	@$(MAKE) --no-print-directory build BUILD=$(VALGRIND_BUILD) CMAKE_FLAGS=-DLOOM_MIMALLOC=OFF
	$(LUA_ENV_VG) valgrind -q --fair-sched=yes --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
	  $(LUA) $(BUSTED) -o plainTerminal $(VALGRIND_EXCLUDE) $(VALGRIND_SPECS)
	@# the C tests too (test_alloc's failure sweep is ASan's: hours under valgrind)
	@for t in $(VALGRIND_CTESTS); do \
	  valgrind -q --fair-sched=yes --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
	    $(VALGRIND_BUILD)/$$t || exit 3; done
test-valgrind-all:
	@$(MAKE) --no-print-directory test-valgrind VALGRIND_EXCLUDE=

# the libFuzzer targets (spec/fuzz/README.md), built with clang in
# build-fuzz, each run FUZZ_SECONDS on a scratch copy of its seed corpus;
# fails on any crash (the input is kept in build-fuzz/artifacts).  Leaks
# are checked at exit, not per input: the Lua state outlives the inputs.
FUZZ_SECONDS ?= 60
FUZZ_BUILD ?= build-fuzz
FUZZ_FLAGS ?= -max_len=4096 -timeout=20 -detect_leaks=0 -print_final_stats=1
fuzz-build: deps
	@.ci/deps clang libclang-rt-14-dev
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOOM_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_decode fuzz_roundtrip fuzz_mkcorpus

fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/artifacts
	@set -e; for t in decode roundtrip; do \
	  dir=$$(mktemp -d); cp spec/fuzz/corpus/$$t/* "$$dir"/; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  if ! $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
	      -artifact_prefix=$(CURDIR)/$(FUZZ_BUILD)/artifacts/$$t- "$$dir" 2>"$$dir.log"; then \
	    grep -Ev '^(#|INFO:)' "$$dir.log" | head -60; rm -rf "$$dir" "$$dir.log"; \
	    echo "fuzz_$$t failed: the input is in $(FUZZ_BUILD)/artifacts"; exit 1; \
	  fi; \
	  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::)' "$$dir.log"; rm -rf "$$dir" "$$dir.log"; \
	done

# rewrite the generated seeds (seed-*; other files there are kept)
fuzz-corpus: fuzz-build
	$(FUZZ_BUILD)/fuzz_mkcorpus spec/fuzz/corpus

check: test test-nospin test-asan test-tsan test-valgrind

# install with luarocks from this checkout (offline)
rock: deps
	luarocks --lua-version=5.4 make rocks/loom-scm-1.rockspec

clean:
	rm -rf build build-asan build-tsan build-fuzz
