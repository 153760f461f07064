"""Every demo route over HTTP/1.1 and h2c (prior knowledge) with httpx, in POOL and INLINE mode."""

from __future__ import annotations

import email.utils
import json
import re
import time
from datetime import datetime, timezone

import httpx
import pytest

from helpers import HELLO, TRAILER_BODY

PROTOCOLS = {"h1": "HTTP/1.1", "h2": "HTTP/2"}


@pytest.fixture(params=["h1", "h2"])
def client(request, server):
    """An httpx client for `server`: HTTP/1.1 or HTTP/2 with prior knowledge."""
    h2 = request.param == "h2"
    with httpx.Client(base_url=server.url, http1=not h2, http2=h2, timeout=30.0) as c:
        c.expected_version = PROTOCOLS[request.param]
        c.server = server
        yield c


def check_common(r: httpx.Response, client):
    assert r.http_version == client.expected_version
    assert r.headers.get("server") == "kestrel"
    date = r.headers.get("date")
    assert date, r.headers
    parsed = email.utils.parsedate_to_datetime(date)
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 60, date


def test_root(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.content == HELLO
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == str(len(HELLO))
    check_common(r, client)


def test_head_root(client):
    r = client.head("/")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == str(len(HELLO))
    check_common(r, client)


@pytest.mark.parametrize(
    "body",
    [b"", b"hello", bytes(range(256)) * 4, b"\x00\r\n\r\n" * 1000, bytes(range(256)) * 4096],
    ids=["empty", "hello", "binary-1k", "crlf-nul", "binary-1M"],
)
def test_echo_small(client, body):
    ctype = "application/x-kestrel-test; charset=binary"
    r = client.post("/echo", content=body, headers={"content-type": ctype})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == ctype
    check_common(r, client)


def test_echo_without_content_type(client):
    r = client.post("/echo", content=b"no type")
    assert r.status_code == 200
    assert r.content == b"no type"
    assert "content-type" not in r.headers


def test_echo_chunked_request_generator(client):
    pieces = [b"first,", b"", b"second," * 1000, bytes(range(256)) * 100, b"last"]

    def gen():
        yield from pieces

    r = client.post("/echo", content=gen(), headers={"content-type": "text/x-pieces"})
    assert r.status_code == 200
    assert r.content == b"".join(pieces)
    assert r.headers["content-type"] == "text/x-pieces"


def test_echo_streamed_response_read_incrementally(client):
    body = bytes(range(256)) * 8192  # 2 MiB
    with client.stream("POST", "/echo", content=body, headers={"content-type": "application/octet-stream"}) as r:
        assert r.status_code == 200
        got = bytearray()
        for piece in r.iter_bytes():
            got += piece
    assert bytes(got) == body


@pytest.mark.parametrize(
    "query,expected",
    [
        ("", 10 * 1024),
        ("?chunks=0&size=100", 0),
        ("?chunks=3&size=1", 3),
        ("?chunks=1&size=1", 1),
        ("?chunks=7&size=1000", 7000),
        ("?chunks=64&size=65536", 64 * 65536),
        ("?chunks=2&size=3000000", 6_000_000),
        ("?size=10", 10 * 10),
    ],
)
def test_stream_exact_length(client, query, expected):
    n = 0
    bad = 0
    with client.stream("GET", "/stream" + query) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        for piece in r.iter_bytes():
            n += len(piece)
            bad += len(piece) - piece.count(b"x")
    assert n == expected
    assert bad == 0


def test_delay(client):
    started = time.monotonic()
    r = client.get("/delay", params={"ms": 300})
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    assert r.text == "delayed 300"
    assert r.headers["content-type"] == "text/plain"
    assert 0.3 <= elapsed < 5, elapsed


def test_delay_default_zero(client):
    r = client.get("/delay")
    assert r.status_code == 200
    assert r.text == "delayed 0"


def test_info(client):
    server = client.server
    r = client.get("/info?a=1&b=two")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    info = r.json()
    assert info["protocol"] == client.expected_version
    assert info["scheme"] == "http"
    assert info["method"] == "GET"
    assert info["path"] == "/info"
    assert info["query"] == "a=1&b=two"
    assert info["host"] == f"127.0.0.1:{server.port}"
    assert info["local"] == f"127.0.0.1:{server.port}"
    stream = r.extensions["network_stream"]
    client_host, client_port = stream.get_extra_info("client_addr")
    assert info["remote"] == f"{client_host}:{client_port}"
    assert re.fullmatch(r"[0-9A-F]{16}:[0-9A-F]{8}", info["id"]), info["id"]


def test_info_ids_on_one_connection(client):
    ids = [client.get("/info").json()["id"] for _ in range(3)]
    conns = {i.split(":")[0] for i in ids}
    assert len(conns) == 1, ids
    assert len(set(ids)) == 3, ids


def test_headers_repeated_joined(client):
    headers = [("x-rep", "a"), ("x-rep", "b"), ("x-rep", "c d"), ("x-one", "1"), ("x-quote", 'say "hi" \\ ok')]
    r = client.get("/headers", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    got = r.json()
    assert got["x-rep"] == "a, b, c d"
    assert got["x-one"] == "1"
    assert got["x-quote"] == 'say "hi" \\ ok'
    assert not any(k.startswith(":") for k in got), got
    if client.expected_version == "HTTP/1.1":
        assert got["host"] == f"127.0.0.1:{client.server.port}"


@pytest.mark.parametrize("code", [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 418, 429, 500, 502, 503, 599])
def test_status(client, code):
    r = client.get(f"/status/{code}")
    assert r.status_code == code
    assert r.content == b""
    assert r.headers.get("server") == "kestrel"


@pytest.mark.parametrize("path", ["/status/99", "/status/1000", "/status/100", "/status/101", "/status/"])
def test_status_invalid_codes_are_400(client, path):
    # The demo answers 400 when the library refuses the code (1xx as a final status, out of
    # range) or when there are no/too many digits.
    assert client.get(path).status_code == 400


def test_status_non_numeric_is_500(client):
    # The handler returns KESTREL_INVALID_ARGUMENT: the library must answer 500.
    assert client.get("/status/abc").status_code == 500


def test_trailers_body(client):
    r = client.get("/trailers")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain"
    assert r.content == TRAILER_BODY


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/nope"), ("GET", "/echo"), ("POST", "/"), ("POST", "/info"), ("DELETE", "/stream"), ("GET", "/status")],
)
def test_unknown_route_404(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 404
    assert r.content == b"not found\n"


def test_keep_alive_many_requests(client):
    remotes = set()
    for i in range(100):
        r = client.get("/info", params={"i": i})
        assert r.status_code == 200
        info = r.json()
        assert info["query"] == f"i={i}"
        remotes.add(info["remote"])
    assert len(remotes) == 1, remotes
    assert json.loads(client.get("/info").text)["remote"] in remotes
