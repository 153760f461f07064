# kestrel-locate.cmake: where to look for libkestrel, kestrel.h and kestrel.hpp. Included by
# kestrelConfig.cmake and kestrelConfigVersion.cmake; sets _kestrel_roots (search prefixes, first
# wins) and _kestrel_cpp_dirs (directories that may hold kestrel.hpp).
#
# Prefixes, in order: the KESTREL_ROOT CMake variable, the KESTREL_ROOT environment variable,
# then the tree this file lives in: three levels up is the repository root when this file is
# bindings/cpp/cmake/ of a checkout (library in target/release/, kestrel.h in include/), and the
# install prefix when it is <prefix>/lib/cmake/kestrel/ (lib/, include/).

get_filename_component(_kestrel_here "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
get_filename_component(_kestrel_up3 "${_kestrel_here}/../../.." ABSOLUTE)

set(_kestrel_roots "")
if(KESTREL_ROOT)
  list(APPEND _kestrel_roots "${KESTREL_ROOT}")
endif()
if(DEFINED ENV{KESTREL_ROOT} AND NOT "$ENV{KESTREL_ROOT}" STREQUAL "")
  list(APPEND _kestrel_roots "$ENV{KESTREL_ROOT}")
endif()
list(APPEND _kestrel_roots "${_kestrel_up3}")

# kestrel.hpp: next to this file in a checkout (bindings/cpp/include), else under a prefix.
set(_kestrel_cpp_dirs "${_kestrel_here}/../include")
foreach(_kestrel_root IN LISTS _kestrel_roots)
  list(APPEND _kestrel_cpp_dirs "${_kestrel_root}/bindings/cpp/include" "${_kestrel_root}/include")
endforeach()
unset(_kestrel_root)
