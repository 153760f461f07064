#!/usr/bin/env bash
# Checks of the shipped C interface, run from the repository root (the top Makefile runs
# `bash tests/c/check_header.sh` after `make lib`):
#   (a) include/kestrel.h compiles as strict C99 (gcc, and clang when present) and as strict C++17
#       (g++), and a program using it links and runs;
#   (b) the shared library exports only kestrel_* symbols, and every function the header declares;
#   (c) its SONAME is libkestrel.so.0;
#   (d) target/release/kestrel.pc exists and works with pkg-config (when pkg-config is installed);
#   (e) every function declared in the header is called by at least one tests/c/*.c program.
# Exits non-zero if any check fails; prints every offender.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
HEADER=include/kestrel.h
LIBDIR=${LIBDIR:-target/release}
LIB=$LIBDIR/libkestrel.so
STRICT=(-Wall -Wextra -Werror -pedantic)

failures=0
pass() { echo "ok:   $*"; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
have() { command -v "$1" > /dev/null 2>&1; }

[[ -f $HEADER ]] || { echo "FAIL: $HEADER not found" >&2; exit 1; }
[[ -f $LIB ]] || { echo "FAIL: $LIB not found (run make lib first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The functions the header declares: a declaration starts at column 0 with its return type
# (typedefs of callback types excluded), the name is the kestrel_* identifier before '('.
mapfile -t declared < <(grep -E '^[A-Za-z].*\bkestrel_[a-z0-9_]+\(' "$HEADER" | grep -v '^typedef' |
    grep -oE '\bkestrel_[a-z0-9_]+\(' | tr -d '(' | sort -u)
if (( ${#declared[@]} < 10 )); then
    fail "found only ${#declared[@]} function declarations in $HEADER"
else
    pass "$HEADER declares ${#declared[@]} functions"
fi

# ---- (a) the header compiles as C99 and C++17 ------------------------------------------------
# Uses every type and macro so that a broken definition cannot hide; the C++ build also checks
# that the declarations have C linkage (the program links against the C library).
cat > "$tmp/use_header.c" << 'EOF'
#include <kestrel.h>
#include <kestrel.h> /* include guard */
#include <stdio.h>
#include <string.h>

static kestrel_result on_request(void *userdata, kestrel_request *request, kestrel_response *response) {
    (void)userdata;
    (void)request;
    return kestrel_response_send(response, NULL, 0);
}

int main(void) {
    kestrel_str s = {"", 0};
    kestrel_header h = {{"a", 1}, {"b", 1}};
    kestrel_request_head head;
    kestrel_handler_fn handler = on_request;
    kestrel_userdata_free_fn free_fn = NULL;
    kestrel_thread_fn thread_fn = NULL;
    kestrel_log_fn log_fn = NULL;
    kestrel_read_fn read_fn = NULL;
    kestrel_abort_fn abort_fn = NULL;
    kestrel_body_free_fn body_free_fn = NULL;
    kestrel_writable_fn writable_fn = NULL;
    kestrel_protocols protocols = KESTREL_PROTOCOLS_HTTP1_AND_HTTP2 + KESTREL_PROTOCOLS_HTTP1 + KESTREL_PROTOCOLS_HTTP2;
    kestrel_dispatch dispatch = KESTREL_DISPATCH_POOL + KESTREL_DISPATCH_INLINE + KESTREL_DISPATCH_PULL;
    kestrel_log_level level = KESTREL_LOG_TRACE + KESTREL_LOG_DEBUG + KESTREL_LOG_INFO + KESTREL_LOG_WARN + KESTREL_LOG_ERROR;
    kestrel_result codes[] = {KESTREL_OK, KESTREL_PANIC, KESTREL_NULL_ARGUMENT, KESTREL_INVALID_ARGUMENT,
                              KESTREL_INVALID_URL, KESTREL_INVALID_HEADER, KESTREL_BIND_FAILED, KESTREL_INVALID_STATE,
                              KESTREL_ALREADY_COMPLETED, KESTREL_CANCELLED, KESTREL_WOULD_BLOCK, KESTREL_TIMEOUT,
                              KESTREL_STOPPED, KESTREL_IO_ERROR, KESTREL_BUFFER_TOO_SMALL, KESTREL_NOT_FOUND};
    uint64_t to_end = KESTREL_TO_END;
    kestrel_options *options = NULL;
    memset(&head, 0, sizeof head);
    head.size = sizeof head;
    (void)s; (void)h; (void)free_fn; (void)thread_fn; (void)log_fn; (void)read_fn; (void)abort_fn;
    (void)body_free_fn; (void)writable_fn; (void)protocols; (void)dispatch; (void)level; (void)to_end;
    if (strcmp(kestrel_version(), KESTREL_VERSION_STRING) != 0) return 1;
    if (KESTREL_VERSION_MAJOR < 0 || KESTREL_VERSION_MINOR < 0 || KESTREL_VERSION_PATCH < 0) return 1;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (strcmp(kestrel_result_name(codes[i]), "KESTREL_UNKNOWN") == 0) return 1;
    }
    if (kestrel_options_new(&options) != KESTREL_OK) return 1;
    if (kestrel_options_set_handler(options, handler, NULL, NULL) != KESTREL_OK) return 1;
    kestrel_options_free(options);
    puts("header program ok");
    return 0;
}
EOF
cp "$tmp/use_header.c" "$tmp/use_header.cpp"
LINK=(-L"$LIBDIR" -Wl,-rpath,"$(cd "$LIBDIR" && pwd)" -lkestrel -lpthread)

compile_and_run() { # compiler, label, source, flags...
    local cc=$1 label=$2 src=$3
    shift 3
    if "$cc" "$@" "${STRICT[@]}" -Iinclude -o "$tmp/prog" "$src" "${LINK[@]}" > "$tmp/out" 2>&1 &&
        "$tmp/prog" > /dev/null; then
        pass "$label"
    else
        cat "$tmp/out" >&2
        fail "$label"
    fi
}

compile_and_run gcc "header compiles, links and runs as C99 (gcc)" "$tmp/use_header.c" -std=c99
if have clang; then
    compile_and_run clang "header compiles, links and runs as C99 (clang)" "$tmp/use_header.c" -std=c99
else
    echo "skip: clang not installed"
fi
if have g++; then
    compile_and_run g++ "header compiles, links and runs as C++17 (g++)" "$tmp/use_header.cpp" -std=c++17
else
    fail "g++ not installed: cannot check the header as C++17"
fi
if have clang++; then
    compile_and_run clang++ "header compiles, links and runs as C++17 (clang++)" "$tmp/use_header.cpp" -std=c++17
fi

# ---- (b) exported symbols --------------------------------------------------------------------
mapfile -t exported < <(nm -D --defined-only "$LIB" | awk 'NF >= 3 {print $3}' | sed 's/@.*//' | sort -u)
offenders=()
for sym in "${exported[@]}"; do
    [[ $sym == kestrel_* ]] || offenders+=("$sym")
done
if (( ${#offenders[@]} )); then
    fail "$LIB exports ${#offenders[@]} symbols outside kestrel_*:"
    printf '      %s\n' "${offenders[@]}" | head -50 >&2
else
    pass "$LIB exports only kestrel_* symbols (${#exported[@]})"
fi
missing=()
for fn in "${declared[@]}"; do
    printf '%s\n' "${exported[@]}" | grep -qx "$fn" || missing+=("$fn")
done
extra=()
for sym in "${exported[@]}"; do
    [[ $sym == kestrel_* ]] || continue
    printf '%s\n' "${declared[@]}" | grep -qx "$sym" || extra+=("$sym")
done
if (( ${#missing[@]} )); then
    fail "declared in $HEADER but not exported: ${missing[*]}"
else
    pass "every declared function is exported"
fi
if (( ${#extra[@]} )); then
    fail "exported but not declared in $HEADER: ${extra[*]}"
else
    pass "every exported kestrel_* symbol is declared"
fi

# ---- (c) SONAME ------------------------------------------------------------------------------
soname=$(readelf -d "$LIB" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [[ $soname == libkestrel.so.0 ]]; then
    pass "SONAME is $soname"
else
    fail "SONAME is '${soname:-<none>}', expected libkestrel.so.0"
fi
if [[ -e $LIBDIR/libkestrel.so.0 ]]; then
    pass "$LIBDIR/libkestrel.so.0 exists"
else
    fail "$LIBDIR/libkestrel.so.0 is missing (the SONAME must resolve at run time)"
fi

# ---- (d) pkg-config ----------------------------------------------------------------------------
PC=$LIBDIR/kestrel.pc
if [[ -f $PC ]]; then
    pass "$PC exists"
    if have pkg-config; then
        if flags=$(PKG_CONFIG_PATH=$LIBDIR pkg-config --cflags --libs kestrel 2> "$tmp/pc.err"); then
            pass "pkg-config --cflags --libs kestrel: $flags"
            [[ $(PKG_CONFIG_PATH=$LIBDIR pkg-config --modversion kestrel) == "$(sed -n 's/#define KESTREL_VERSION_STRING "\(.*\)"/\1/p' "$HEADER")" ]] &&
                pass "pkg-config version matches KESTREL_VERSION_STRING" ||
                fail "pkg-config --modversion differs from KESTREL_VERSION_STRING"
            # A program built only with the pkg-config flags (no -I/-L of our own).
            libdir=$(PKG_CONFIG_PATH=$LIBDIR pkg-config --variable=libdir kestrel)
            # shellcheck disable=SC2086
            if gcc -std=c99 "${STRICT[@]}" -o "$tmp/pcprog" "$tmp/use_header.c" $flags -Wl,-rpath,"$libdir" > "$tmp/out" 2>&1 &&
                "$tmp/pcprog" > /dev/null; then
                pass "a program built with the pkg-config flags links and runs"
            else
                cat "$tmp/out" >&2
                fail "a program built with the pkg-config flags does not link or run"
            fi
        else
            cat "$tmp/pc.err" >&2
            fail "pkg-config --cflags --libs kestrel failed"
        fi
    else
        echo "skip: pkg-config not installed"
    fi
else
    fail "$PC is missing"
fi

# ---- (e) every declared function is called by a test program -----------------------------------
# Comment lines are ignored; a call is the name followed by '('.
code=$(cat tests/c/*.c | grep -vE '^\s*(/\*|\*|//)')
uncalled=()
for fn in "${declared[@]}"; do
    grep -qE "\\b$fn[[:space:]]*\\(" <<< "$code" || uncalled+=("$fn")
done
if (( ${#uncalled[@]} )); then
    fail "${#uncalled[@]} declared functions are not called by any tests/c/*.c program:"
    printf '      %s\n' "${uncalled[@]}" >&2
else
    pass "all ${#declared[@]} declared functions are called by tests/c/*.c"
fi

if (( failures )); then
    echo "check_header.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "check_header.sh: all checks passed"
