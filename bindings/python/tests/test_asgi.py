"""The ASGI 3 adapter, with raw ASGI apps and real Starlette and FastAPI applications."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time

import httpx
import pytest

from kestrel.asgi import ASGIServer

import fastapi_app
import starlette_app


@pytest.fixture(params=["asyncio", "auto"])
def loop_kind(request) -> str:
    """Each test using it runs on asyncio and on the default (uvloop when installed)."""
    return request.param


def test_starlette_app_with_lifespan_state(serve, client, loop_kind) -> None:
    starlette_app.events.clear()
    server = serve(ASGIServer, starlette_app.app, loop=loop_kind)
    assert type(server.loop).__module__.split(".")[0] == ("uvloop" if loop_kind == "auto" else "asyncio")
    assert starlette_app.events == ["startup"]
    url = server.url
    assert client.get(url + "/").text == "hello from lifespan"
    r = client.post(url + "/echo", content=b"echo me", headers={"content-type": "application/x-test"})
    assert (r.text, r.headers["content-type"]) == ("echo me", "application/x-test")
    r = client.get(url + "/stream?n=4&size=3")
    assert r.text == "000111222333"
    r = client.get(url + "/info?a=1&b=%20")
    info = r.json()
    assert info["http_version"] == r.http_version.replace("HTTP/", "")
    assert info["query"] == "a=1&b=%20"
    assert info["client"][0] == "127.0.0.1"
    assert info["host"] == url[7:]  # h2's :authority is given as a host header
    server.close()
    assert starlette_app.events == ["startup", "shutdown"]


def test_streaming_request_body(serve, client) -> None:
    server = serve(ASGIServer, starlette_app.app)

    def gen():
        for _ in range(64):
            yield b"q" * 16384

    r = client.post(server.url + "/count", content=gen())
    assert r.json()["total"] == 64 * 16384
    r = client.post(server.url + "/count", content=b"k" * 300_000)
    assert r.json()["total"] == 300_000
    assert client.post(server.url + "/count", content=b"").json() == {"total": 0, "chunks": 0}


def test_large_streaming_response(serve, client) -> None:
    server = serve(ASGIServer, starlette_app.app)
    with client.stream("GET", server.url + "/stream?n=100&size=65536") as r:
        total = sum(len(c) for c in r.iter_bytes())
    assert total == 100 * 65536


def test_exception_is_500_and_logged(serve, h1, caplog) -> None:
    server = serve(ASGIServer, starlette_app.app)
    with caplog.at_level(logging.ERROR):
        r = h1.get(server.url + "/boom")
        # Starlette answers 500 itself, then re-raises: the log line may follow the response.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(
            rec.exc_info and "starlette endpoint failed" in str(rec.exc_info[1]) for rec in caplog.records
        ):
            time.sleep(0.02)
    assert r.status_code == 500
    assert any(rec.exc_info and "starlette endpoint failed" in str(rec.exc_info[1]) for rec in caplog.records)


def test_file_response_uses_pathsend(serve, client, tmp_path) -> None:
    blob = os.urandom(250_000)
    (tmp_path / "f.bin").write_bytes(blob)
    server = serve(ASGIServer, starlette_app.app)
    r = client.get(server.url + "/file", params={"path": str(tmp_path / "f.bin")})
    assert r.content == blob


def test_disconnect_reaches_the_app(serve) -> None:
    starlette_app.events.clear()
    server = serve(ASGIServer, starlette_app.app)
    host, port = server.url[7:].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while "disconnected" not in starlette_app.events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "disconnected" in starlette_app.events


def test_fastapi_app(serve, client, loop_kind) -> None:
    server = serve(ASGIServer, fastapi_app.app, loop=loop_kind)
    url = server.url
    r = client.get(url + "/items/42", params={"q": "x", "x_token": "t"})
    assert r.json() == {"item_id": 42, "q": "x", "token": "t"}
    r = client.post(url + "/items", json={"name": "pen", "price": 1.5, "tags": ["a"]})
    assert r.json() == {"name": "pen", "total": 3.0, "tags": ["a"]}
    r = client.post(url + "/items", json={"name": "pen"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "price"]
    r = client.get(url + "/items/notanint")
    assert r.status_code == 422
    assert client.get(url + "/sync").json()["thread"] != "kestrel-asgi-loop"
    r = client.get(url + "/missing")
    assert (r.status_code, r.json()) == (404, {"detail": "no such thing"})
    r = client.get(url + "/crash")
    assert r.status_code == 500
    assert client.get(url + "/numbers").text == "0\n1\n2\n3\n4\n"


async def scope_app(scope, receive, send):
    if scope["type"] == "lifespan":
        return  # unsupported: the server goes on without it
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    shown = {k: v for k, v in scope.items() if k not in ("asgi", "extensions", "state")}
    shown["asgi"] = scope["asgi"]["version"]
    shown["body"] = body
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), (b"x-multi", b"1"), (b"x-multi", b"2")]})
    await send({"type": "http.response.body", "body": repr(shown).encode()})


def test_scope(serve, client) -> None:
    server = serve(ASGIServer, scope_app, root_path="/mount")
    port = int(server.url.rsplit(":", 1)[1])
    r = client.post(server.url + "/caf%C3%A9/a%2Fb?x=%20y", content=b"data", headers={"X-Custom": "Yes"})
    assert r.headers.get_list("x-multi") == ["1", "2"]
    scope = eval(r.text)  # noqa: S307 - our own repr
    assert scope["type"] == "http" and scope["asgi"] == "3.0"
    assert scope["http_version"] == ("1.1" if r.http_version == "HTTP/1.1" else "2")
    assert scope["method"] == "POST" and scope["scheme"] == "http"
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/café/a/b"
    assert scope["raw_path"] == b"/mount/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=%20y"
    assert scope["server"] == ("127.0.0.1", port)
    assert scope["client"][0] == "127.0.0.1"
    assert (b"x-custom", b"Yes") in scope["headers"]
    assert all(k == k.lower() for k, _ in scope["headers"])
    assert scope["body"] == b"data"


def test_raw_app_errors(serve, h1, caplog) -> None:
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/no-response":
            return
        if path == "/half":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            return
        if path == "/bad-order":
            await send({"type": "http.response.body", "body": b"x"})
        if path == "/raise-after-start":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-gone", b"1")]})
            raise ValueError("after start, before body")
        if path == "/trailers":
            await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
            await send({"type": "http.response.body", "body": b"body", "more_body": False})
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"42")], "more_trailers": False})
            return

    server = serve(ASGIServer, app)
    with caplog.at_level(logging.ERROR):
        assert h1.get(server.url + "/no-response").status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):
            h1.get(server.url + "/half")
        assert h1.get(server.url + "/bad-order").status_code == 500
        r = h1.get(server.url + "/raise-after-start")
        assert r.status_code == 500 and "x-gone" not in r.headers
    messages = " ".join(rec.getMessage() for rec in caplog.records)
    assert "without starting a response" in messages and "without completing the response" in messages
    with httpx.Client(http1=False, http2=True) as c:
        assert c.get(server.url + "/trailers").text == "body"


def test_websocket_upgrade_is_rejected(serve, h1) -> None:
    async def app(scope, receive, send):
        raise AssertionError("must not be called")

    server = serve(ASGIServer, app, lifespan="off")
    r = h1.get(server.url + "/ws", headers={"upgrade": "websocket", "connection": "upgrade"})
    assert r.status_code == 501


def test_lifespan_failure_stops_the_start() -> None:
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = ASGIServer(app, urls="http://127.0.0.1:0")
    with pytest.raises(RuntimeError, match="no database"):
        server.start()
    server.close()


def test_many_concurrent_requests(serve, loop_kind) -> None:
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.05)  # every request waits at once: the loop interleaves them
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    server = serve(ASGIServer, app, loop=loop_kind, lifespan="off")
    results = []
    start = time.monotonic()

    def worker(i: int) -> None:
        with httpx.Client(timeout=10) as c:
            results.extend(c.get(f"{server.url}/{i}-{j}").text for j in range(5))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"/{i}-{j}" for i in range(20) for j in range(5))
    assert time.monotonic() - start < 4  # 100 requests of 50 ms, 20 at a time, not one by one


def test_graceful_stop_finishes_in_flight_requests(serve) -> None:
    entered = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        entered.set()
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    server = serve(ASGIServer, app)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", httpx.get(server.url + "/", timeout=10)))
    t.start()
    assert entered.wait(5)
    server.close()
    t.join()
    assert result["r"].text == "finished"


def test_stop_from_the_app(serve, h1) -> None:
    refused = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        server.stop()  # scheduled: stopping here would wait for this very request
        try:
            server.close()
        except RuntimeError as e:
            refused.append(str(e))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"bye"})

    server = serve(ASGIServer, app, lifespan="off")
    assert h1.get(server.url + "/").text == "bye"
    deadline = time.monotonic() + 5
    while server.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.running
    assert refused and "would wait for this thread" in refused[0]


def test_client_leaving_mid_stream(serve, h1) -> None:
    # Starlette cancels the streaming task when the client goes: writes in flight must settle
    # before the response is failed (the fixture also checks every callback was released).
    server = serve(ASGIServer, starlette_app.app)
    for _ in range(3):
        with httpx.Client(timeout=10) as c, c.stream("GET", server.url + "/stream?n=2000&size=65536") as r:
            got = 0
            for chunk in r.iter_bytes():
                got += len(chunk)
                if got > 1_000_000:
                    break
    assert h1.get(server.url + "/").text == "hello from lifespan"  # still serving


def test_methods_and_header_names_standard_or_not(serve, h1) -> None:
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        names = sorted(k.decode() for k, _ in scope["headers"] if k in (b"accept", b"accept-language", b"x-odd-name"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"{scope['method']} {names}".encode()})

    server = serve(ASGIServer, app, lifespan="off")
    for method in ("GET", "PURGE", "PROPFIND", "GET"):
        r = h1.request(method, server.url + "/", headers={"accept": "x", "x-odd-name": "1", "accept-language": "en"})
        assert r.text == f"{method} ['accept', 'accept-language', 'x-odd-name']"
