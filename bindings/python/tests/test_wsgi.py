"""The WSGI (PEP 3333) adapter, with raw WSGI apps and a real Flask application."""

from __future__ import annotations

import logging
import os
import sys
import threading

import httpx
import pytest

from kestrel.wsgi import FileWrapper, WSGIServer

import flask_app


def test_flask_app(serve, client, tmp_path) -> None:
    server = serve(WSGIServer, flask_app.app)
    url = server.url
    r = client.get(url + "/")
    assert (r.status_code, r.text) == (200, "Hello from Flask")
    r = client.post(url + "/json", json={"a": 1})
    assert r.json() == {"got": {"a": 1}, "length": len(b'{"a":1}')}
    r = client.post(url + "/form", data={"name": "kes"}, files={"file": ("f.txt", b"x" * 100_000)})
    assert r.json() == {"name": "kes", "file": "f.txt", "size": 100_000}
    r = client.get(url + "/stream?n=4")
    assert r.text == "line 0\nline 1\nline 2\nline 3\n"
    blob = os.urandom(150_000)
    (tmp_path / "b.bin").write_bytes(blob)
    r = client.get(url + "/file", params={"path": str(tmp_path / "b.bin")})
    assert r.content == blob and r.headers["content-length"] == str(len(blob))
    r = client.get(url + "/nope")
    assert r.status_code == 404
    r = client.get(url + "/info?x=1")
    info = r.json()
    assert info["path"] == "/info" and info["remote"] == "127.0.0.1"
    assert info["protocol"] == ("HTTP/1.1" if r.http_version == "HTTP/1.1" else "HTTP/2")
    assert info["url"] == url + "/info?x=1"


def test_flask_exception_is_500_and_logged(serve, h1, caplog) -> None:
    flask_app.app.config["PROPAGATE_EXCEPTIONS"] = True  # let the server see it
    try:
        server = serve(WSGIServer, flask_app.app)
        with caplog.at_level(logging.ERROR, logger="kestrel.application"):
            r = h1.get(server.url + "/boom")
    finally:
        flask_app.app.config["PROPAGATE_EXCEPTIONS"] = None
    assert (r.status_code, r.text) == (500, "Internal Server Error")
    assert any(rec.exc_info and "flask view failed" in str(rec.exc_info[1]) for rec in caplog.records)


def environ_app(environ, start_response):
    """Answers with a repr of the interesting environ entries."""
    keys = [
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
        "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "HTTP_HOST", "HTTP_X_MULTI",
        "HTTP_COOKIE", "wsgi.url_scheme", "wsgi.version", "wsgi.multithread", "wsgi.multiprocess",
        "wsgi.run_once", "wsgi.input_terminated",
    ]
    out = {k: environ.get(k) for k in keys}
    assert environ["wsgi.errors"] is sys.stderr
    out["body"] = environ["wsgi.input"].read()
    out["types"] = sorted({type(v).__name__ for k, v in environ.items() if k.isupper()})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(out).encode()]


def test_environ(serve, client) -> None:
    server = serve(WSGIServer, environ_app, root_path="/app")
    port = server.url.rsplit(":", 1)[1]
    r = client.post(
        server.url + "/app/caf%C3%A9/x%2Fy?q=%20&z",
        content=b"payload",
        headers=[("content-type", "text/x"), ("x-multi", "a"), ("x-multi", "b"), ("cookie", "a=1"), ("cookie", "b=2")],
    )
    env = eval(r.text)  # noqa: S307 - our own repr
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/app"
    # PEP 3333: unquoted bytes, decoded as latin-1 (so the UTF-8 é arrives as two characters)
    assert env["PATH_INFO"] == "/caf\xc3\xa9/x/y"
    assert env["QUERY_STRING"] == "q=%20&z"
    assert env["CONTENT_TYPE"] == "text/x"
    assert env["CONTENT_LENGTH"] == "7"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", port)
    assert env["SERVER_PROTOCOL"] == ("HTTP/1.1" if r.http_version == "HTTP/1.1" else "HTTP/2")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{port}"
    assert env["HTTP_X_MULTI"] == "a,b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.version"] == (1, 0)
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False and env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["body"] == b"payload"
    assert env["types"] == ["str"]  # every CGI variable is a native string


def input_app(environ, start_response):
    """Exercises wsgi.input: read(n), readline, readlines, iteration."""
    stream = environ["wsgi.input"]
    mode = environ["PATH_INFO"]
    if mode == "/readline":
        parts = [stream.readline(), stream.readline(3), stream.readline(), stream.read(2)]
        parts += stream.readlines()
    elif mode == "/iter":
        parts = list(stream)
    elif mode == "/read":
        parts = []
        while True:
            chunk = stream.read(1000)
            if not chunk:
                break
            parts.append(chunk)
        parts = [b"%d chunks %d bytes" % (len(parts), sum(map(len, parts)))]
    else:
        parts = [stream.read()]
    start_response("200 OK", [])
    return [repr(parts).encode()]


def test_wsgi_input(serve, client) -> None:
    server = serve(WSGIServer, input_app)
    body = b"line one\nline two\nthird\nfourth\nlast"
    r = client.post(server.url + "/readline", content=body)
    assert eval(r.text) == [b"line one\n", b"lin", b"e two\n", b"th", b"ird\n", b"fourth\n", b"last"]  # noqa: S307
    assert eval(client.post(server.url + "/iter", content=body).text) == body.splitlines(keepends=True)  # noqa: S307

    def chunked():  # no Content-Length: chunked on HTTP/1.1, plain DATA frames on h2
        for _i in range(50):
            yield b"z" * 999

    assert eval(client.post(server.url + "/read", content=chunked()).text) == [b"50 chunks 49950 bytes"]  # noqa: S307
    assert eval(client.get(server.url + "/all").text) == [b""]  # noqa: S307


def test_start_response_exc_info_and_write(serve, h1) -> None:
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/replace":
            start_response("200 OK", [("x-first", "1")])
            try:
                raise KeyError("oops")
            except KeyError:
                start_response("503 Service Unavailable", [("x-second", "2")], sys.exc_info())
            return [b"replaced"]
        if path == "/too-late":
            write = start_response("200 OK", [])
            write(b"already ")
            try:
                raise KeyError("late")
            except KeyError:
                start_response("500 Oops", [], sys.exc_info())  # re-raises: the head went out
            return [b"never"]
        if path == "/write":
            write = start_response("201 Created", [("Content-Type", "text/plain")])
            write(b"from write, ")
            return [b"then ", b"iterable"]
        raise AssertionError(path)

    server = serve(WSGIServer, app)
    r = h1.get(server.url + "/replace")
    assert (r.status_code, r.text, r.headers.get("x-second"), r.headers.get("x-first")) == (503, "replaced", "2", None)
    r = h1.get(server.url + "/write")
    assert (r.status_code, r.text) == (201, "from write, then iterable")
    with pytest.raises(httpx.RemoteProtocolError):  # cut off, not passed off as complete
        h1.get(server.url + "/too-late")


def test_iterable_close_is_called(serve, h1) -> None:
    closed = threading.Event()

    class Body:
        def __init__(self) -> None:
            self.parts = [b"a", b"b", b"c"]

        def __iter__(self):
            return iter(self.parts)

        def close(self) -> None:
            closed.set()

    class Failing(Body):
        def __iter__(self):
            yield b"x"
            raise RuntimeError("generator failed")

    def app(environ, start_response):
        start_response("200 OK", [])
        return Failing() if environ["PATH_INFO"] == "/fail" else Body()

    server = serve(WSGIServer, app)
    assert h1.get(server.url + "/").text == "abc"
    assert closed.wait(2)
    closed.clear()
    with pytest.raises(httpx.RemoteProtocolError):
        h1.get(server.url + "/fail")
    assert closed.wait(2)


def test_file_wrapper_sends_regular_files(serve, client, tmp_path) -> None:
    blob = os.urandom(300_000)
    (tmp_path / "f").write_bytes(blob)

    def app(environ, start_response):
        f = open(tmp_path / "f", "rb")  # noqa: SIM115 - closed by the server
        f.seek(100)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)

    server = serve(WSGIServer, app)
    r = client.get(server.url + "/")
    assert r.content == blob[100:] and r.headers["content-length"] == str(len(blob) - 100)


def test_file_wrapper_iterates_other_objects() -> None:
    import io

    assert list(FileWrapper(io.BytesIO(b"abcdef"), 4)) == [b"abcd", b"ef"]


def test_bad_application_behaviour_gives_500(serve, h1, caplog) -> None:
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/no-start":
            return [b"body without start_response"]
        if environ["PATH_INFO"] == "/bad-header":
            start_response("200 OK", [("x-ok", "1"), ("x-bad", "a\nb")])
            return [b"x"]
        start_response("nonsense", [])
        return []

    server = serve(WSGIServer, app)
    with caplog.at_level(logging.ERROR, logger="kestrel.application"):
        for path in ("/no-start", "/bad-header", "/bad-status"):
            r = h1.get(server.url + path)
            assert (r.status_code, r.text) == (500, "Internal Server Error"), path
            assert "x-ok" not in r.headers
    assert len([rec for rec in caplog.records if rec.exc_info]) == 3


@pytest.mark.parametrize("dispatch", ["pull", "pool"])
def test_concurrent_requests(serve, dispatch) -> None:
    server = serve(WSGIServer, flask_app.app, threads=4, dispatch=dispatch)
    results = []

    def get() -> None:
        with httpx.Client(timeout=10) as c:
            results.extend(c.get(server.url + "/slow?s=0.3").text for _ in range(2))

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["slow done"] * 8


def test_methods_and_header_names_standard_or_not(serve, h1) -> None:
    # Standard methods and header names come from the library's constants (cached by
    # address), others from the request: both must read right, request after request.
    def app(environ, start_response):
        start_response("200 OK", [])
        return [f"{environ['REQUEST_METHOD']} {environ.get('HTTP_ACCEPT')} {environ.get('HTTP_X_ODD_NAME')}".encode()]

    server = serve(WSGIServer, app)
    for method, accept, odd in [("GET", "a/b", "1"), ("PURGE", "c/d", "2"), ("PROPFIND", "e/f", "3"), ("GET", "g/h", "4")]:
        r = h1.request(method, server.url + "/", headers={"accept": accept, "x-odd-name": odd})
        assert r.text == f"{method} {accept} {odd}"
