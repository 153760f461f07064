# kestrel: build, demo, tests.
#   make run    build the library and the demo, then serve http://localhost:5000
#   make test   install test dependencies, then run every test (what CI runs)

CARGO      ?= cargo
CC         ?= cc
CXX        ?= c++
PYTHON     ?= python3
RELEASE    := target/release
LIBDIR     := $(abspath $(RELEASE))
CFLAGS_STRICT := -Wall -Wextra -Werror -pedantic
C_FLAGS    := -std=c99 $(CFLAGS_STRICT) -O2 -g -Iinclude
LINK       := -L$(LIBDIR) -Wl,-rpath,$(LIBDIR) -lkestrel -lpthread
DEMO_ARGS  ?=

export PATH := $(HOME)/.cargo/bin:$(HOME)/go/bin:$(PATH)

.PHONY: all lib demo run test test-deps lint test-rust test-header test-c test-python test-h2spec \
        test-h2spec-tls test-cpp test-dotnet test-python-binding bench bench-tls clean

all: lib demo

lib:
	$(CARGO) build --release --lib
	ln -sf libkestrel.so $(RELEASE)/libkestrel.so.0

demo: lib examples-c/demo examples-c/hello

examples-c/%: examples-c/%.c include/kestrel.h $(RELEASE)/libkestrel.so
	$(CC) $(C_FLAGS) -D_DEFAULT_SOURCE -o $@ $< $(LINK)

run: demo
	./examples-c/demo $(DEMO_ARGS)

SUITES := lint test-rust test-header test-c test-python test-h2spec test-h2spec-tls test-cpp \
          test-dotnet test-python-binding

# make stops at the first failing suite, so the last line is printed only when all passed.
test: test-deps demo $(SUITES)
	@echo "suites: $(words $(SUITES)) passed, 0 failed"

test-deps:
	bash scripts/install-test-deps.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# The header must match what cbindgen generates from the sources (tests/header.rs).
test-rust:
	KESTREL_HEADER_CHECK=1 $(CARGO) test --release

# The header compiles as strict C99 and C++17; only kestrel_* symbols are exported; SONAME set.
test-header: lib
	bash tests/c/check_header.sh

test-c: lib
	$(MAKE) -C tests/c run LIBDIR=$(LIBDIR)

test-python: demo
	$(PYTHON) -m pytest -q tests/python

test-h2spec: demo
	bash tests/h2spec.sh

# h2spec over TLS (ALPN h2) with a generated certificate.
test-h2spec-tls: demo
	bash tests/h2spec.sh --tls

# The C++ binding: GoogleTest (plain, valgrind, ASan), examples, CMake and pkg-config use.
test-cpp: lib
	bash bindings/cpp/run-tests.sh

# The .NET binding under Mono (installed from Debian if missing): its test program and example.
test-dotnet: lib
	bash bindings/dotnet/run-tests.sh

# The Python binding: pip-installs it into a venv (building and bundling the library), then
# pytest with real Flask, Starlette and FastAPI apps.
test-python-binding: lib
	bash bindings/python/run-tests.sh

bench: demo
	bash bench/run.sh

bench-tls: demo
	bash bench/run.sh --tls

clean:
	$(CARGO) clean
	rm -f examples-c/demo examples-c/hello
	$(MAKE) -C tests/c clean
