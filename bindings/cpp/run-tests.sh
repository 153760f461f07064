#!/usr/bin/env bash
# Tests of the C++ binding (bindings/cpp), runnable from any directory. Exits non-zero on any
# failure. Assumes `make lib` ran (libkestrel in target/release).
#
#   1. installs what it needs when missing (apt: cmake g++ make libgtest-dev curl valgrind
#      pkg-config);
#   2. builds kestrel.hpp's GoogleTest suite, the examples and a strict header check with
#      -Wall -Wextra -Werror -pedantic (CMake, through the package in cmake/);
#   3. runs the suite (real HTTP to 127.0.0.1), then again under valgrind (definite leaks and
#      memory errors fail), then an AddressSanitizer + UBSan build of it (LeakSanitizer on);
#   4. runs the examples (hello, echo in POOL, INLINE and PULL modes) over HTTP;
#   5. checks the ways to consume the binding: find_package(kestrel) from the checkout (with
#      version checks), from an install prefix (cmake --install), and pkg-config.
#
# Environment: KESTREL_CPP_BUILD (build directory, default bindings/cpp/build), JOBS (2),
# SKIP_VALGRIND=1, SKIP_ASAN=1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${KESTREL_CPP_BUILD:-$HERE/build}
JOBS=${JOBS:-2}
LIB=$ROOT/target/release

log() { echo "[cpp] $*"; }
die() { echo "[cpp] FAILED: $*" >&2; exit 1; }

# ---- 1. dependencies ---------------------------------------------------------------------------
missing=()
for pkg in cmake g++ make libgtest-dev curl valgrind pkg-config; do
    dpkg -s "$pkg" > /dev/null 2>&1 || missing+=("$pkg")
done
if (( ${#missing[@]} > 0 )); then
    log "installing ${missing[*]}"
    SUDO=
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
[[ -f $LIB/libkestrel.so && -f $ROOT/include/kestrel.h ]] || die "no $LIB/libkestrel.so: run 'make lib' first"

TMP=$(mktemp -d /tmp/kestrel-cpp.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# ---- 2. build -------------------------------------------------------------------------------------
log "configuring and building in $BUILD"
cmake -S "$HERE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DKESTREL_CPP_INSTALL_LIBRARY=ON > "$TMP/configure.log" 2>&1 \
    || { cat "$TMP/configure.log"; die "cmake configure"; }
nice cmake --build "$BUILD" -j "$JOBS" > "$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; die "build"; }
TESTS=$BUILD/tests/kestrel_cpp_tests

# The header under clang as well, when clang is there (not installed for this).
if command -v clang++ > /dev/null; then
    clang++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -pedantic -Wshadow -Wconversion -Wold-style-cast \
        -I"$HERE/include" -I"$ROOT/include" "$HERE/tests/header_check.cpp" || die "kestrel.hpp under clang++"
fi

# ---- 3. the suite, natively, under valgrind, under ASan + UBSan ------------------------------
log "GoogleTest suite"
"$TESTS" --gtest_brief=1 || die "GoogleTest suite"

if [[ ${SKIP_VALGRIND:-0} != 1 ]]; then
    log "GoogleTest suite under valgrind"
    # The C tests' suppressions: memcheck false positives inside the library (see that file).
    valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
        --suppressions="$ROOT/tests/c/valgrind.supp" "$TESTS" --gtest_brief=1 || die "GoogleTest suite under valgrind (exit $?)"
fi

if [[ ${SKIP_ASAN:-0} != 1 ]]; then
    log "GoogleTest suite with AddressSanitizer + UBSan"
    cmake -S "$HERE" -B "$BUILD-asan" -DCMAKE_BUILD_TYPE=Debug -DKESTREL_CPP_SANITIZE=ON \
        -DKESTREL_CPP_EXAMPLES=OFF > "$TMP/configure-asan.log" 2>&1 || { cat "$TMP/configure-asan.log"; die "cmake (asan)"; }
    nice cmake --build "$BUILD-asan" -j "$JOBS" --target kestrel_cpp_tests > "$TMP/build-asan.log" 2>&1 \
        || { cat "$TMP/build-asan.log"; die "build (asan)"; }
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$BUILD-asan/tests/kestrel_cpp_tests" --gtest_brief=1 || die "GoogleTest suite with sanitizers"
fi

# ---- 4. the examples over HTTP ----------------------------------------------------------------
# start BIN ARGS...: runs a server on a free port; sets URL and SERVER_PID.
start() {
    local out=$TMP/server-$RANDOM.log i
    : > "$out"
    "$@" --urls "http://127.0.0.1:0" > "$out" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    URL=
    for (( i = 0; i < 100; i++ )); do
        URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$out" | head -n 1)
        [[ -n $URL ]] && return 0
        kill -0 "$SERVER_PID" 2> /dev/null || break
        sleep 0.05
    done
    cat "$out" >&2
    die "$1 did not start"
}
# stop: SIGTERM, and the server must exit 0.
stop() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || die "server exited with $?"
}
expect() {  # expect WHAT GOT WANT
    [[ $2 == "$3" ]] || die "$1: got '$2', want '$3'"
}

log "examples: hello and echo"
for mode in pool inline; do
    start "$BUILD/examples/hello" --dispatch "$mode" --threads 1
    expect "hello ($mode)" "$(curl -sf "$URL/")" "Hello, World!"
    expect "hello 404 ($mode)" "$(curl -s -o /dev/null -w '%{http_code}' "$URL/missing")" "404"
    stop
done
head -c 200000 /dev/urandom > "$TMP/body.bin"
for mode in pool inline pull; do
    start "$BUILD/examples/echo" --dispatch "$mode" --workers 2
    curl -sf --data-binary "@$TMP/body.bin" -H 'content-type: application/octet-stream' "$URL/echo" > "$TMP/echoed.bin"
    cmp -s "$TMP/body.bin" "$TMP/echoed.bin" || die "echo ($mode): body differs"
    streamed=$(curl -sf --raw -H 'TE: trailers' "$URL/stream?n=3" | tr -d '\r')
    [[ $streamed == *"line 3"* && $streamed == *"x-lines: 3"* ]] || die "echo /stream ($mode): '$streamed'"
    stop
done

# ---- 5. consuming the binding -------------------------------------------------------------
log "find_package(kestrel) from the checkout"
# A consumer project: prints the version it found, builds a program, and that program runs.
mkdir -p "$TMP/consumer"
cat > "$TMP/consumer/CMakeLists.txt" << 'EOF'
cmake_minimum_required(VERSION 3.16)
project(consumer LANGUAGES CXX)
find_package(kestrel ${WANT} REQUIRED)
message(STATUS "consumer: kestrel ${kestrel_VERSION} at ${KESTREL_LIBRARY}")
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE kestrel::cpp)
EOF
cat > "$TMP/consumer/main.cpp" << 'EOF'
#include <kestrel.hpp>
#include <cstdio>
int main() {
    try {
        kestrel::Options().urls("not a url");
    } catch (const kestrel::error& e) {
        std::printf("%.*s %s\n", static_cast<int>(kestrel::version().size()), kestrel::version().data(),
                    e.code() == KESTREL_INVALID_URL ? "ok" : "wrong code");
        return 0;
    }
    return 1;
}
EOF
VERSION=$(sed -n 's/^#define KESTREL_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/include/kestrel.h")
MAJOR_MINOR=${VERSION%.*}
consume() {  # consume NAME CMAKE_ARGS...: configure, build and run the consumer
    local dir=$TMP/consumer-$1
    shift
    cmake -S "$TMP/consumer" -B "$dir" "$@" > "$dir.log" 2>&1 || { cat "$dir.log"; die "consumer configure ($*)"; }
    cmake --build "$dir" > "$dir.build.log" 2>&1 || { cat "$dir.build.log"; die "consumer build ($*)"; }
    expect "consumer ($*)" "$("$dir/consumer")" "$VERSION ok"
}
consume prefix-path -DCMAKE_PREFIX_PATH="$HERE" -DWANT="$MAJOR_MINOR"
grep -q "kestrel $VERSION at $LIB/libkestrel.so" "$TMP/consumer-prefix-path.log" || die "found the wrong library"
consume kestrel-dir -Dkestrel_DIR="$HERE/cmake"
if cmake -S "$TMP/consumer" -B "$TMP/consumer-too-new" -DCMAKE_PREFIX_PATH="$HERE" -DWANT=99.0 \
        > "$TMP/too-new.log" 2>&1; then
    die "find_package(kestrel 99.0) succeeded"
fi
grep -q "$VERSION" "$TMP/too-new.log" || die "the version mismatch message does not name $VERSION"
# The examples project on its own, as a consumer.
cmake -S "$HERE/examples" -B "$TMP/examples" -DCMAKE_PREFIX_PATH="$HERE" > "$TMP/examples.log" 2>&1 \
    || { cat "$TMP/examples.log"; die "examples as a standalone project"; }

log "find_package(kestrel) and pkg-config from an install prefix"
cmake --install "$BUILD" --prefix "$TMP/prefix" > "$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; die "cmake --install"; }
for f in include/kestrel.hpp include/kestrel.h lib/libkestrel.so.0 lib/libkestrel.so lib/cmake/kestrel/kestrelConfig.cmake \
         lib/pkgconfig/kestrel.pc; do
    [[ -e $TMP/prefix/$f ]] || die "not installed: $f"
done
consume installed -DCMAKE_PREFIX_PATH="$TMP/prefix" -DWANT="$VERSION"
grep -q "at $TMP/prefix/lib/libkestrel.so" "$TMP/consumer-installed.log" || die "the installed package used another library"
ldd "$TMP/consumer-installed/consumer" | grep -q "$TMP/prefix/lib/libkestrel.so.0" || die "the consumer does not load the installed library"
PKG_CONFIG_PATH=$TMP/prefix/lib/pkgconfig
export PKG_CONFIG_PATH
expect "installed pkg-config version" "$(pkg-config --modversion kestrel)" "$VERSION"
# shellcheck disable=SC2046
c++ -std=c++17 -Wall -Wextra -Werror -pedantic -o "$TMP/pc-installed" "$TMP/consumer/main.cpp" \
    $(pkg-config --cflags --libs kestrel) -Wl,-rpath,"$(pkg-config --variable=libdir kestrel)" || die "pkg-config build (installed)"
expect "pkg-config consumer (installed)" "$("$TMP/pc-installed")" "$VERSION ok"

log "pkg-config from the checkout (target/release/kestrel.pc)"
PKG_CONFIG_PATH=$LIB
# shellcheck disable=SC2046
c++ -std=c++17 -Wall -Wextra -Werror -pedantic -I"$HERE/include" -o "$TMP/pc-tree" "$TMP/consumer/main.cpp" \
    $(pkg-config --cflags --libs kestrel) -Wl,-rpath,"$(pkg-config --variable=libdir kestrel)" || die "pkg-config build (tree)"
expect "pkg-config consumer (tree)" "$("$TMP/pc-tree")" "$VERSION ok"

log "all C++ binding checks passed"
