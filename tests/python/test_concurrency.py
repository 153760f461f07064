"""Many concurrent requests: 200 at once over HTTP/1.1 connections and over one h2c connection."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers import HELLO, H1Reader, connect, simple_request

N = 200


def one_request(server, i):
    """One request on its own connection (raw socket); returns (i, status, body)."""
    kind = i % 4
    target = ["/", f"/info?i={i}", "/delay?ms=100", f"/stream?chunks=2&size={i + 1}"][kind]
    sock = connect(server.host, server.port, timeout=20)
    try:
        sock.sendall(simple_request("GET", target, server.authority))
        resp = H1Reader(sock).read_response()
        return i, resp.status, resp.body
    finally:
        sock.close()


def check(i, status, body):
    assert status == 200, (i, status)
    kind = i % 4
    if kind == 0:
        assert body == HELLO
    elif kind == 1:
        assert json.loads(body)["query"] == f"i={i}"
    elif kind == 2:
        assert body == b"delayed 100"
    else:
        assert body == b"x" * (2 * (i + 1))


def test_200_concurrent_connections_threads(server):
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(lambda i: one_request(server, i), range(N), timeout=60))
    elapsed = time.monotonic() - started
    assert len(results) == N
    for r in results:
        check(*r)
    # 50 requests sleep 100 ms each: in parallel, not 5 s in sequence.
    assert elapsed < 15, elapsed


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_200_concurrent_httpx_async(server, proto):
    h2 = proto == "h2"

    async def main():
        limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
        async with httpx.AsyncClient(base_url=server.url, http1=not h2, http2=h2, limits=limits, timeout=30) as c:

            async def get(i):
                kind = i % 4
                target = ["/", f"/info?i={i}", "/delay?ms=100", f"/stream?chunks=2&size={i + 1}"][kind]
                r = await c.get(target)
                if h2:
                    assert r.http_version == "HTTP/2"
                return i, r.status_code, r.content

            return await asyncio.wait_for(asyncio.gather(*(get(i) for i in range(N))), timeout=60)

    started = time.monotonic()
    results = asyncio.run(main())
    elapsed = time.monotonic() - started
    for r in results:
        check(*r)
    assert elapsed < 20, elapsed


def test_concurrent_echo_posts(server):
    bodies = [bytes([i % 256]) * (1000 * (i + 1)) for i in range(40)]

    def post(i):
        with httpx.Client(timeout=30) as c:
            r = c.post(f"{server.url}/echo", content=bodies[i], headers={"content-type": f"x/{i}"})
            return i, r

    with ThreadPoolExecutor(max_workers=40) as pool:
        for i, r in pool.map(post, range(40), timeout=60):
            assert r.status_code == 200
            assert r.headers["content-type"] == f"x/{i}"
            assert r.content == bodies[i]
