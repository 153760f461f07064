"""Shared fixtures: servers on free ports and real HTTP clients (httpx over HTTP/1.1 and h2c)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))

import kestrel  # noqa: E402

#: where run-tests.sh installed the package; when set, kestrel must be imported from there
INSTALLED = os.environ.get("KESTREL_TEST_EXPECT_INSTALLED") == "1"
URL = "http://127.0.0.1:0"


def pytest_report_header(config: Any) -> str:
    return f"kestrel {kestrel.__file__}, libkestrel {kestrel.library_version()} at {kestrel.library_path}"


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """``serve(ServerClass, app_or_handler, **options)`` starts a server on a free port and
    closes it at the end of the test."""
    started: list[Any] = []
    held = kestrel._native.registry_size()
    # asyncio reports tasks that died with an unretrieved exception through its logger.
    asyncio_errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = asyncio_errors.append  # type: ignore[method-assign]
    logging.getLogger("asyncio").addHandler(handler)

    def start(cls: type, target: Any, **options: Any) -> Any:
        options.setdefault("urls", URL)
        options.setdefault("io_threads", 2)
        server = cls(target, **options)
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()
        logging.getLogger("asyncio").removeHandler(handler)
    assert not asyncio_errors, [r.getMessage() for r in asyncio_errors]
    # Every callback registration was released by the library (userdata_free ran).
    assert kestrel._native.registry_size() == held, "userdata still registered after close"


@pytest.fixture
def h1() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def h2() -> Iterator[httpx.Client]:
    """HTTP/2 with prior knowledge (h2c)."""
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        yield client


@pytest.fixture(params=["h1", "h2"])
def client(request: Any) -> Iterator[httpx.Client]:
    """Each test using it runs over HTTP/1.1 and over h2c."""
    if request.param == "h1":
        with httpx.Client(timeout=10) as c:
            yield c
    else:
        with httpx.Client(http1=False, http2=True, timeout=10) as c:
            yield c
