# Thin driver over CMake (as luv does).  `make demo` and `make test` are
# the two commands a newcomer needs; both install missing Debian packages.
BUILD ?= build
JOBS ?= 2
LUA ?= lua5.4
BUSTED ?= /usr/bin/busted
CMAKE_FLAGS ?=
LUA_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;"

.PHONY: all deps build test test-nospin demo bench test-asan test-tsan test-valgrind check rock clean

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

demo: build
	$(LUA_ENV) $(LUA) examples/demo.lua

bench: build
	$(LUA_ENV) $(LUA) bench/run.lua

# the same suite under AddressSanitizer+UBSan and under ThreadSanitizer
test-asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan CMAKE_FLAGS=-DLOOM_SANITIZE=address
test-tsan:
	@$(MAKE) --no-print-directory test BUILD=build-tsan CMAKE_FLAGS=-DLOOM_SANITIZE=thread

# every spec under valgrind: no errors, no lost blocks
VALGRIND_SPECS ?= spec
test-valgrind: build
	@.ci/deps valgrind
	$(LUA_ENV) valgrind -q --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
	  $(LUA) $(BUSTED) -o plainTerminal $(VALGRIND_SPECS)

check: test test-nospin test-asan test-tsan test-valgrind

# install with luarocks from this checkout (offline)
rock: deps
	luarocks --lua-version=5.4 make rocks/loom-scm-1.rockspec

clean:
	rm -rf build build-asan build-tsan
