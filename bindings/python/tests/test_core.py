"""The core API: kestrel.Server with handler(request, response)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

import kestrel
from kestrel import _native

from conftest import URL


def hello(req: kestrel.Request, res: kestrel.Response) -> str:
    return "Hello, World!"


def test_hello_over_http1_and_h2(serve, client) -> None:
    server = serve(kestrel.Server, hello)
    r = client.get(server.url + "/")
    assert r.status_code == 200
    assert r.text == "Hello, World!"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-length"] == "13"
    assert r.headers["server"] == "kestrel"


def test_request_attributes(serve, client) -> None:
    seen = {}

    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        seen.update(
            method=req.method,
            path=req.path,
            query=req.query,
            target=req.target,
            version=req.version,
            http_version=req.http_version,
            scheme=req.scheme,
            authority=req.authority,
            client=req.client,
            local=req.local_addr,
            id=req.id,
            accept=req.headers["ACCEPT"],
            tags=req.headers.getall("x-tag"),
            missing=req.headers.get("x-missing", "default"),
            contains="x-tag" in req.headers,
        )
        res.send(b"ok")

    server = serve(kestrel.Server, handler)
    r = client.get(server.url + "/a%20b/c?x=1&y=%C3%A9", headers=[("accept", "text/x"), ("x-tag", "1"), ("x-tag", "2")])
    assert r.status_code == 200
    port = int(server.url.rsplit(":", 1)[1])
    expected_version = "HTTP/1.1" if r.http_version == "HTTP/1.1" else "HTTP/2"
    assert seen["method"] == "GET"
    assert seen["path"] == "/a%20b/c"  # as sent
    assert seen["query"] == "x=1&y=%C3%A9"
    # HTTP/2 has no request line: the library gives the target in absolute form there.
    assert seen["target"] in ("/a%20b/c?x=1&y=%C3%A9", f"http://127.0.0.1:{port}/a%20b/c?x=1&y=%C3%A9")
    assert seen["version"] == expected_version
    assert seen["http_version"] == expected_version[5:]
    assert seen["scheme"] == "http"
    assert seen["authority"] == f"127.0.0.1:{port}"
    assert seen["client"][0] == "127.0.0.1" and isinstance(seen["client"][1], int)
    assert seen["local"] == f"127.0.0.1:{port}"
    assert ":" in seen["id"]
    assert seen["accept"] == "text/x"
    assert seen["tags"] == ["1", "2"]
    assert seen["missing"] == "default"
    assert seen["contains"] is True


def test_returned_values_become_bodies(serve, h1) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response):
        if req.path == "/bytes":
            return b"\x00\xffraw"
        if req.path == "/str":
            return "héllo"
        if req.path == "/iter":
            return (f"chunk{i};" for i in range(3))
        if req.path == "/none":
            res.status = 204
            return None
        if req.path == "/typed":
            res.send("<p>x</p>", status=201, headers={"x-a": "1"}, content_type="text/html")
            return None
        raise AssertionError(req.path)

    server = serve(kestrel.Server, handler)
    r = h1.get(server.url + "/bytes")
    assert r.content == b"\x00\xffraw" and "content-type" not in r.headers
    r = h1.get(server.url + "/str")
    assert r.content == "héllo".encode() and r.headers["content-type"] == "text/plain; charset=utf-8"
    r = h1.get(server.url + "/iter")
    assert r.text == "chunk0;chunk1;chunk2;" and r.headers["transfer-encoding"] == "chunked"
    r = h1.get(server.url + "/none")
    assert r.status_code == 204 and r.content == b""
    r = h1.get(server.url + "/typed")
    assert (r.status_code, r.text, r.headers["x-a"], r.headers["content-type"]) == (201, "<p>x</p>", "1", "text/html")


def test_request_body_reading(serve, client) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response):
        if req.path == "/json":
            return json.dumps({"got": req.json()})
        if req.path == "/parts":
            first = req.read(3)
            buf = bytearray(4)
            n = req.readinto(buf)
            rest = b"".join(req)
            return b"%s|%s|%s|%d" % (first, bytes(buf[:n]), rest, len(req.read()))
        return req.body()

    server = serve(kestrel.Server, handler)
    assert client.post(server.url + "/json", json={"a": [1, 2]}).json() == {"got": {"a": [1, 2]}}
    assert client.post(server.url + "/parts", content=b"abcdefghij").content == b"abc|defg|hij|0"
    assert client.post(server.url + "/echo", content=b"").content == b""


def test_large_upload_and_download_stream(serve, client) -> None:
    size = 8 * 1024 * 1024

    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        if req.method == "POST":
            total = 0
            for chunk in req:
                total += len(chunk)
            res.send(str(total))
        else:
            block = b"x" * 65536
            for _ in range(size // len(block)):
                res.write(block)
            res.end()

    server = serve(kestrel.Server, handler)

    def body():
        for _ in range(size // 65536):
            yield b"y" * 65536

    assert client.post(server.url + "/", content=body()).text == str(size)
    with client.stream("GET", server.url + "/") as r:
        assert sum(len(c) for c in r.iter_bytes()) == size


def test_exception_gives_500_and_logs_traceback(serve, h1, caplog) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        res.set_header("x-before", "1")
        raise ValueError("boom in handler")

    server = serve(kestrel.Server, handler)
    with caplog.at_level(logging.ERROR, logger="kestrel.application"):
        r = h1.get(server.url + "/")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert "x-before" not in r.headers
    record = next(rec for rec in caplog.records if rec.name == "kestrel.application")
    assert record.exc_info and "boom in handler" in str(record.exc_info[1])


def test_exception_after_start_cuts_the_response_off(serve, h1) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        res.write(b"partial")
        res.flush()
        raise RuntimeError("late failure")

    server = serve(kestrel.Server, handler)
    with pytest.raises(httpx.RemoteProtocolError):
        h1.get(server.url + "/")


def test_response_errors(serve, h1) -> None:
    errors = {}

    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        with pytest.raises(kestrel.InvalidHeader):
            res.set_header("x-bad", "a\r\nb")
        with pytest.raises(ValueError):
            res.status = 99
        res.send(b"done")
        try:
            res.send(b"again")
        except kestrel.ResponseStateError as e:
            errors["again"] = e
        try:
            req.read()
        except kestrel.ResponseStateError as e:
            errors["read"] = e

    server = serve(kestrel.Server, handler)
    assert h1.get(server.url + "/").text == "done"
    assert "already completed" in str(errors["again"])
    assert "already completed" in str(errors["read"])


def test_detached_response_completed_from_another_thread(serve, h1) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        res.detach()
        threading.Timer(0.05, lambda: res.send("later")).start()

    server = serve(kestrel.Server, handler)
    assert h1.get(server.url + "/").text == "later"


def test_blocking_handlers_run_in_parallel_threads(serve) -> None:
    barrier = threading.Barrier(4, timeout=5)

    def handler(req: kestrel.Request, res: kestrel.Response) -> str:
        barrier.wait()  # only returns once four handlers run at the same time
        return "met"

    server = serve(kestrel.Server, handler, threads=4)
    results = []

    def get() -> None:
        results.append(httpx.get(server.url + "/", timeout=10).text)

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["met"] * 4


def test_pool_dispatch_serves_and_releases_its_userdata(serve, client) -> None:
    before = _native.registry_size()
    seen_threads = set()

    def handler(req: kestrel.Request, res: kestrel.Response) -> str:
        seen_threads.add(threading.current_thread().ident)
        return f"pool {req.http_version} {req.read().decode()}"

    server = serve(kestrel.Server, handler, dispatch="pool", threads=2)
    assert _native.registry_size() == before + 2  # the handler and the thread hooks
    for i in range(10):
        r = client.post(server.url + "/", content=str(i))
        assert r.text == f"pool {r.http_version[5:]} {i}"
    server.close()
    assert _native.registry_size() == before  # userdata_free ran for both, exactly once
    assert 1 <= len(seen_threads) <= 2


def test_on_abort_runs_when_the_client_goes_away(serve) -> None:
    aborted = threading.Event()
    entered = threading.Event()

    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        req.on_abort(aborted.set)
        entered.set()
        res.detach()  # never answered: the client gives up

    server = serve(kestrel.Server, handler, stop_timeout=0.5)
    host, port = server.url[7:].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(5)
    assert aborted.wait(5)


def test_stop_from_a_handler(serve, h1) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response) -> str:
        server.stop()
        return "bye"

    server = serve(kestrel.Server, handler)
    assert h1.get(server.url + "/").text == "bye"
    deadline = time.monotonic() + 5
    while server.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.running


def test_graceful_stop_lets_in_flight_requests_finish(serve) -> None:
    entered = threading.Event()

    def handler(req: kestrel.Request, res: kestrel.Response) -> str:
        entered.set()
        time.sleep(0.3)
        return "finished"

    server = serve(kestrel.Server, handler)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", httpx.get(server.url + "/", timeout=10)))
    t.start()
    assert entered.wait(5)
    assert server.stop(timeout=5) == 0
    t.join()
    assert result["r"].text == "finished"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/", timeout=2)


def test_bind_error_and_bad_url(serve) -> None:
    first = serve(kestrel.Server, hello)
    with pytest.raises(kestrel.BindError) as e:
        kestrel.Server(hello, urls=first.url).start()
    assert first.url[7:] in str(e.value)
    with pytest.raises(kestrel.KestrelError) as e:
        kestrel.Server(hello, urls="ftp://nope").start()
    assert e.value.name == "KESTREL_INVALID_URL"


def test_several_urls_and_unix_socket(serve, tmp_path) -> None:
    sock = tmp_path / "k.sock"
    server = serve(kestrel.Server, hello, urls=["http://127.0.0.1:0", f"http://unix:{sock}"])
    assert len(server.addresses) == 2 and server.addresses[1] == f"http://unix:{sock}"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as c:
        assert c.get("http://localhost/").text == "Hello, World!"
    server.close()
    assert not sock.exists()


def test_send_file_by_path_and_descriptor(serve, client, tmp_path) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)

    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        if req.path == "/path":
            res.send_file(path)
        elif req.path == "/range":
            with open(path, "rb") as f:
                res.send_file(f, offset=10, length=100)
        else:
            try:
                res.send_file(tmp_path / "missing")
            except FileNotFoundError:
                res.send("no such file", status=404)

    server = serve(kestrel.Server, handler)
    assert client.get(server.url + "/path").content == data
    assert client.get(server.url + "/range").content == data[10:110]
    r = client.get(server.url + "/missing")
    assert (r.status_code, r.text) == (404, "no such file")


def test_curl_http1_and_h2c(serve) -> None:
    server = serve(kestrel.Server, lambda req, res: f"{req.http_version} {req.headers['user-agent'][:5]}")
    out = subprocess.run(["curl", "-s", server.url + "/"], capture_output=True, text=True, check=True).stdout
    assert out == "1.1 curl/"
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", server.url + "/"], capture_output=True, text=True, check=True).stdout
    assert out == "2 curl/"


def test_context_manager_and_registry_cleanup() -> None:
    before = _native.registry_size()
    with kestrel.Server(hello, urls=URL) as server:
        assert httpx.get(server.url).text == "Hello, World!"
        assert server.running
    assert not server.running
    assert _native.registry_size() == before
    with pytest.raises(RuntimeError):
        server.start()


def test_bytes_like_bodies(serve, h1) -> None:
    def handler(req: kestrel.Request, res: kestrel.Response) -> None:
        res.write(bytearray(b"ba|"))
        res.write(memoryview(b"xxmv|")[2:])
        res.write(memoryview(bytearray(b"rw|")))
        res.write("str|")
        res.end()

    server = serve(kestrel.Server, handler)
    assert h1.get(server.url + "/").text == "ba|mv|rw|str|"
