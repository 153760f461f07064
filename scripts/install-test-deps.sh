#!/usr/bin/env bash
# Install what kestrel's test suite and benchmarks need on Debian 12.
# Idempotent: each step is skipped when its tools are already present, so a
# second run takes well under a second. Runs as root (or via sudo for apt).
#
# Prints where h2spec is (it lives in $(go env GOPATH)/bin, usually not on
# PATH); the Makefile can also use `scripts/install-test-deps.sh --h2spec-path`.
set -euo pipefail

log() { echo "[deps] $*" >&2; }
die() { echo "[deps] ERROR: $*" >&2; exit 1; }
have() { command -v "$1" > /dev/null 2>&1; }

SUDO=
if [[ $EUID -ne 0 ]]; then
    have sudo || die "not root and no sudo: cannot install packages"
    SUDO=sudo
fi

# ---- apt -------------------------------------------------------------------
# command -> Debian package providing it
declare -A APT_CMDS=(
    [wrk]=wrk
    [h2load]=nghttp2-client
    [nginx]=nginx-light
    [h2o]=h2o
    [valgrind]=valgrind
    [curl]=curl
    [openssl]=openssl
    [clang]=clang
    [taskset]=util-linux
    [ss]=iproute2
    [pgrep]=procps
)

apt_missing=()
for cmd in "${!APT_CMDS[@]}"; do
    have "$cmd" || apt_missing+=("${APT_CMDS[$cmd]}")
done
# ASan runtime for clang -fsanitize=address (no command to probe).
if ! compgen -G '/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.asan-x86_64.a' > /dev/null; then
    apt_missing+=(libclang-rt-14-dev)
fi
# A python3 is needed below; only fall back to Debian's when none exists.
have python3 || apt_missing+=(python3 python3-venv)

APT_UPDATED=0
# apt_install PKG...: one `apt-get update` per run, quiet unless it fails.
apt_install() {
    log "apt: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if (( ! APT_UPDATED )); then
        $SUDO apt-get update -qq > /tmp/install-test-deps.apt.log 2>&1 \
            || { tail -n 20 /tmp/install-test-deps.apt.log >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    # Package services (nginx, h2o) must not start: tests run their own.
    # policy-rc.d exit 101 = "action forbidden"; removed again afterwards.
    local policy=/usr/sbin/policy-rc.d added_policy=0 status=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" > /dev/null
        $SUDO chmod 755 "$policy"
        added_policy=1
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "$@" \
        >> /tmp/install-test-deps.apt.log 2>&1 || status=$?
    if (( added_policy )); then $SUDO rm -f "$policy"; fi
    if (( status )); then
        tail -n 20 /tmp/install-test-deps.apt.log >&2
        die "apt-get install failed (full log: /tmp/install-test-deps.apt.log)"
    fi
}

if (( ${#apt_missing[@]} )); then
    apt_install "${apt_missing[@]}"
fi

# ---- Python ----------------------------------------------------------------
# Use whatever python3 is first on PATH (pyenv on the dev box). Debian's own
# python3 refuses system-wide pip installs (PEP 668); for it, use a venv in
# /opt/kestrel-venv, which the caller must then put first on PATH.
PY=python3
PY_MODULES='import pytest, httpx, h2, cryptography'
if ! $PY -c "$PY_MODULES" 2> /dev/null; then
    stdlib=$($PY -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    if [[ -e $stdlib/EXTERNALLY-MANAGED ]]; then
        venv=/opt/kestrel-venv
        if [[ ! -x $venv/bin/python3 ]]; then
            $PY -c 'import ensurepip' 2> /dev/null || apt_install python3-venv
            $SUDO $PY -m venv "$venv" || die "could not create $venv"
        fi
        PY=$venv/bin/python3
    fi
    if ! $PY -c "$PY_MODULES" 2> /dev/null; then
        log "pip: installing pytest httpx[http2] h2 cryptography into $($PY -c 'import sys; print(sys.prefix)')"
        $SUDO $PY -m pip install --quiet --disable-pip-version-check \
            pytest 'httpx[http2]' h2 cryptography || die "pip install failed"
    fi
    $PY -c "$PY_MODULES" || die "python modules still not importable with $PY"
    [[ $PY == python3 ]] || log "NOTE: put $(dirname "$PY") first on PATH for the tests"
fi

# ---- h2spec ----------------------------------------------------------------
# The Go toolchain: prefer an existing one (e.g. /usr/local/go), else Debian's.
if ! have go && [[ -x /usr/local/go/bin/go ]]; then
    export PATH=$PATH:/usr/local/go/bin
fi
if ! have go; then
    apt_install golang-go ca-certificates
fi
GOBIN_DIR=$(go env GOBIN)
[[ -n $GOBIN_DIR ]] || GOBIN_DIR=$(go env GOPATH)/bin
H2SPEC=$GOBIN_DIR/h2spec

if [[ ! -x $H2SPEC ]] && have h2spec; then
    H2SPEC=$(command -v h2spec)
fi
if [[ ! -x $H2SPEC ]]; then
    log "go: installing h2spec"
    gotmp=$(mktemp -d)
    trap 'rm -rf "$gotmp"' EXIT
    # @master needs the module proxy to resolve a branch, which some proxies
    # refuse (403). Fall back to the last release, v2.2.1, built inside a
    # throwaway module with its dependencies pinned to versions that still
    # build with old Go toolchains (Debian 12 ships Go 1.19). v2.2.1 has no
    # go.mod, hence "+incompatible".
    if ! (cd "$gotmp" && go install github.com/summerwind/h2spec/cmd/h2spec@master) \
        > "$gotmp/master.log" 2>&1; then
        log "go: h2spec@master unavailable ($(grep -m1 -o '[0-9]\{3\} [A-Za-z]*' "$gotmp/master.log" || echo error)), building v2.2.1"
        mkdir -p "$gotmp/build"
        cat > "$gotmp/build/go.mod" <<'EOF'
module h2spec-build

go 1.19

require (
	github.com/fatih/color v1.13.0
	github.com/spf13/cobra v1.5.0
	github.com/summerwind/h2spec v2.2.1+incompatible
	golang.org/x/net v0.17.0
)
EOF
        # Build-tagged file: records the dependency for `go mod tidy` without
        # importing a main package into a build.
        printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/summerwind/h2spec/cmd/h2spec"\n' \
            > "$gotmp/build/tools.go"
        if ! (cd "$gotmp/build" && go mod tidy && mkdir -p "$GOBIN_DIR" \
                && go build -o "$H2SPEC" github.com/summerwind/h2spec/cmd/h2spec) \
                > "$gotmp/build.log" 2>&1; then
            tail -n 20 "$gotmp/master.log" "$gotmp/build.log" >&2
            die "could not build h2spec"
        fi
    fi
    [[ -x $H2SPEC ]] || die "h2spec not found at $H2SPEC after install"
fi

if [[ ${1:-} == --h2spec-path ]]; then
    echo "$H2SPEC"
elif ! have h2spec; then
    log "h2spec: $H2SPEC (not on PATH; add $(dirname "$H2SPEC"))"
fi
