# find_package(loom): the targets loom::loom (static) and loom::shared.
# They link Lua 5.4 and libuv as found when loom was built.
include("${CMAKE_CURRENT_LIST_DIR}/loomTargets.cmake")
