#!/bin/sh
# Install loom from the build tree $1 into a scratch prefix, then build a
# consumer against it twice (find_package and pkg-config) and run both.
# $2: the source tree, $3: the C compiler.
set -eu
build=$1 src=$2 cc=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/loom.h"
lib=$(ls -d "$tmp"/prefix/lib*/ | head -1)
test -f "$lib/libloom.a" && test -e "$lib/libloom.so"
# find_package(loom) -> loom::loom, loom::shared
cmake -S "$src/spec/c/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
"$tmp/consumer/consumer" "$src/lua"
# the library carries loom's Lua half: no loom Lua file on disk is needed
"$tmp/consumer/consumer" /nonexistent/loom-lua
LD_LIBRARY_PATH="$lib" "$tmp/consumer/consumer_shared" "$src/lua"
# pkg-config loom
PKG_CONFIG_PATH="$lib/pkgconfig" pkg-config --exists loom
# shellcheck disable=SC2046
"$cc" -o "$tmp/consumer_pc" "$src/spec/c/consumer/consumer.c" \
      $(PKG_CONFIG_PATH="$lib/pkgconfig" pkg-config --cflags --libs --static loom)
LD_LIBRARY_PATH="$lib" "$tmp/consumer_pc" "$src/lua"
echo "install_test: ok"
