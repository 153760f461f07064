# kestrelConfig.cmake: `find_package(kestrel)` for libkestrel and its C++ wrapper.
#
# Imported targets:
#   kestrel::kestrel  libkestrel (shared, or static if only libkestrel.a is found) and kestrel.h
#   kestrel::cpp      the header-only C++17 wrapper kestrel.hpp; links kestrel::kestrel
#
# Found in a source checkout (this file is bindings/cpp/cmake/; run `make lib` first, which
# builds target/release/libkestrel.so) or in an install prefix (<prefix>/lib/cmake/kestrel/).
# Point CMake here with -Dkestrel_DIR=<this directory>, or put the checkout's bindings/cpp (or the
# install prefix) in CMAKE_PREFIX_PATH. KESTREL_ROOT (CMake or environment variable: a checkout or
# a prefix) is searched first; the cache variables KESTREL_LIBRARY, KESTREL_INCLUDE_DIR and
# KESTREL_CPP_INCLUDE_DIR override everything.
#
# Sets kestrel_FOUND, kestrel_VERSION (from kestrel.h), KESTREL_LIBRARY, KESTREL_INCLUDE_DIR and
# KESTREL_CPP_INCLUDE_DIR.

include("${CMAKE_CURRENT_LIST_DIR}/kestrel-locate.cmake")

find_path(KESTREL_INCLUDE_DIR kestrel.h
  HINTS ${_kestrel_roots} PATH_SUFFIXES include
  DOC "Directory of kestrel.h")
find_library(KESTREL_LIBRARY NAMES kestrel
  HINTS ${_kestrel_roots} PATH_SUFFIXES target/release lib lib64
  DOC "libkestrel")
find_path(KESTREL_CPP_INCLUDE_DIR kestrel.hpp
  HINTS ${_kestrel_cpp_dirs}
  DOC "Directory of kestrel.hpp")
mark_as_advanced(KESTREL_INCLUDE_DIR KESTREL_LIBRARY KESTREL_CPP_INCLUDE_DIR)

set(_kestrel_missing "")
foreach(_kestrel_var KESTREL_LIBRARY KESTREL_INCLUDE_DIR KESTREL_CPP_INCLUDE_DIR)
  if(NOT ${_kestrel_var})
    list(APPEND _kestrel_missing ${_kestrel_var})
  endif()
endforeach()
if(_kestrel_missing)
  set(kestrel_FOUND FALSE)
  set(kestrel_NOT_FOUND_MESSAGE
    "kestrel: not found: ${_kestrel_missing} (searched ${_kestrel_roots}; build the library with "
    "`make lib` in the checkout, or set KESTREL_ROOT)")
  return()
endif()

if(NOT DEFINED kestrel_VERSION OR kestrel_VERSION STREQUAL "")
  file(STRINGS "${KESTREL_INCLUDE_DIR}/kestrel.h" _kestrel_line REGEX "^#define KESTREL_VERSION_STRING \"[^\"]*\"")
  string(REGEX REPLACE ".*\"([^\"]*)\".*" "\\1" kestrel_VERSION "${_kestrel_line}")
  unset(_kestrel_line)
endif()

if(NOT TARGET kestrel::kestrel)
  if(KESTREL_LIBRARY MATCHES "\\.a$")
    include(CMakeFindDependencyMacro)
    find_dependency(Threads)
    add_library(kestrel::kestrel STATIC IMPORTED)
    # What the Rust standard library needs (kestrel.pc's Libs.private).
    set_property(TARGET kestrel::kestrel PROPERTY
      INTERFACE_LINK_LIBRARIES Threads::Threads ${CMAKE_DL_LIBS} m)
  else()
    add_library(kestrel::kestrel SHARED IMPORTED)
  endif()
  set_target_properties(kestrel::kestrel PROPERTIES
    IMPORTED_LOCATION "${KESTREL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${KESTREL_INCLUDE_DIR}")
endif()

if(NOT TARGET kestrel::cpp)
  add_library(kestrel::cpp INTERFACE IMPORTED)
  set_target_properties(kestrel::cpp PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${KESTREL_CPP_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES kestrel::kestrel
    INTERFACE_COMPILE_FEATURES cxx_std_17)
endif()

if(NOT kestrel_FIND_QUIETLY)
  message(STATUS "Found kestrel ${kestrel_VERSION}: ${KESTREL_LIBRARY}")
endif()
unset(_kestrel_missing)
unset(_kestrel_var)
