"""~50 MB bodies through /echo (full duplex) and /stream, on HTTP/1.1 and h2c.

httpx sends a whole request body before it reads the response, so against a streaming echo it
deadlocks once the socket buffers and the server's 64 KiB response buffer are full (a few MB).
The 50 MB echoes therefore use raw clients that send and receive at the same time; httpx covers
bodies of a few MB (test_routes.py) and the 50 MB download below.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from helpers import BigBody, H2Client, MIB, echo_full_duplex_h1

SIZE = 50 * MIB
CTYPE = "application/x-kestrel-big; v=1"


@pytest.fixture(scope="module")
def big_body():
    return BigBody(SIZE)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_echo_50mb_http1(server, big_body, chunked):
    resp, n, digest = echo_full_duplex_h1(server.host, server.port, big_body, CTYPE, chunked=chunked, timeout=60)
    assert resp.status == 200
    assert resp.header("content-type") == CTYPE
    assert n == big_body.size
    assert digest == big_body.digest


def test_echo_50mb_h2(server, big_body):
    c = H2Client(server.host, server.port, timeout=60)
    try:
        st = c.echo_full_duplex(big_body, CTYPE, timeout=60)
        assert st.reset is None, f"stream reset with error {st.reset}"
        assert st.status == 200
        assert st.header("content-type") == CTYPE
        assert st.data_len == big_body.size
        assert st.digest.hexdigest() == big_body.digest
    finally:
        c.close()


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_stream_50mb_httpx(server, proto):
    h2 = proto == "h2"
    digest = hashlib.sha256()
    n = 0
    with httpx.Client(http1=not h2, http2=h2, timeout=60) as c:
        with c.stream("GET", f"{server.url}/stream?chunks=50&size={MIB}") as r:
            assert r.status_code == 200
            for piece in r.iter_raw():
                n += len(piece)
                digest.update(piece)
    assert n == 50 * MIB
    assert digest.hexdigest() == hashlib.sha256(b"x" * (50 * MIB)).hexdigest()
