"""Endpoints: Unix sockets (incl. stale socket files), localhost on both loopbacks, bind and URL
errors."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import run_failing, short_tmpdir
from helpers import HELLO


@pytest.fixture
def sock_dir():
    d = short_tmpdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_stale_socket(path):
    """A socket file nobody listens on: bound, then closed without unlink (like a crash)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    assert path.exists()


# ---- Unix sockets ----------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_unix_socket_routes(unix_server, proto):
    h2 = proto == "h2"
    transport = httpx.HTTPTransport(uds=str(unix_server.socket_path), http1=not h2, http2=h2)
    with httpx.Client(transport=transport, base_url="http://kestrel.local", timeout=30) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.content == HELLO
        assert r.headers["server"] == "kestrel"
        assert r.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
        info = c.get("/info").json()
        assert info["protocol"] == ("HTTP/2" if h2 else "HTTP/1.1")
        assert info["local"] == f"unix:{unix_server.socket_path}"
        assert info["remote"].startswith("unix:")
        assert info["host"] == "kestrel.local"
        body = os.urandom(300_000)
        r = c.post("/echo", content=body, headers={"content-type": "application/x-uds"})
        assert r.content == body and r.headers["content-type"] == "application/x-uds"
        assert len(c.get("/stream?chunks=4&size=1000").content) == 4000
        assert c.get("/status/503").status_code == 503
        assert c.get("/nowhere").status_code == 404
        # keep-alive over the socket
        ids = {c.get("/info").json()["id"].split(":")[0] for _ in range(20)}
        assert len(ids) == 1


def test_unix_url_printed(unix_server):
    assert unix_server.urls == [f"http://unix:{unix_server.socket_path}"]


def test_unix_socket_removed_after_sigint(start_demo, sock_dir):
    path = sock_dir / "k.sock"
    d = start_demo(["--urls", f"http://unix:{path}"], expect_urls=1)
    assert path.exists()
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as c:
        assert c.get("http://x/").content == HELLO
    d.assert_clean_stop()
    assert not path.exists(), "socket file left behind"


def test_stale_socket_file_does_not_prevent_start(start_demo, sock_dir):
    path = sock_dir / "stale.sock"
    make_stale_socket(path)
    d = start_demo(["--urls", f"http://unix:{path}"], expect_urls=1)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as c:
        assert c.get("http://x/").content == HELLO
    d.assert_clean_stop()
    assert not path.exists()


def test_unix_socket_with_live_server_is_refused(demo_binary, sock_dir):
    path = sock_dir / "live.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live.bind(str(path))
        live.listen(8)
        code, out, err = run_failing(demo_binary, ["--urls", f"http://unix:{path}"])
        assert code != 0
        assert "listening on" not in out
        assert str(path) in err, err
        assert "another server is listening" in err, err
        assert path.exists(), "the other server's socket file must not be removed"
    finally:
        live.close()


def test_unix_path_that_is_not_a_socket_is_refused(demo_binary, sock_dir):
    path = sock_dir / "regular-file"
    path.write_text("keep me")
    code, out, err = run_failing(demo_binary, ["--urls", f"http://unix:{path}"])
    assert code != 0
    assert str(path) in err and "not a socket" in err, err
    assert path.read_text() == "keep me"


def test_unix_and_tcp_together(start_demo, sock_dir):
    path = sock_dir / "both.sock"
    d = start_demo(["--urls", f"http://127.0.0.1:0;http://unix:{path}"], expect_urls=2)
    tcp = [u for u in d.urls if not u.startswith("http://unix:")]
    assert d.urls[1] == f"http://unix:{path}" and len(tcp) == 1
    assert httpx.get(tcp[0] + "/").content == HELLO
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as c:
        assert c.get("http://x/").content == HELLO
    d.assert_clean_stop()
    assert not path.exists()


# ---- localhost -------------------------------------------------------------------------------


def test_localhost_binds_both_loopbacks_same_port(localhost_server):
    urls = localhost_server.urls
    assert len(urls) == 2, urls
    parts = [urlsplit(u) for u in urls]
    assert parts[0].hostname == "127.0.0.1"
    assert parts[1].hostname == "::1"
    assert parts[0].port == parts[1].port != 0
    assert urls[1] == f"http://[::1]:{parts[0].port}"


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_localhost_serves_both_addresses(localhost_server, proto):
    h2 = proto == "h2"
    port = urlsplit(localhost_server.url).port
    with httpx.Client(http1=not h2, http2=h2, timeout=10) as c:
        for base, local in ((f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"), (f"http://[::1]:{port}", f"[::1]:{port}")):
            assert c.get(base + "/").content == HELLO
            info = c.get(base + "/info").json()
            assert info["local"] == local
            assert info["remote"].startswith(local.rsplit(":", 1)[0] + ":")


# ---- bind and URL errors -----------------------------------------------------------------------


def test_port_in_use_fails_naming_address(demo_binary):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(8)
        port = taken.getsockname()[1]
        code, out, err = run_failing(demo_binary, ["--urls", f"http://127.0.0.1:{port}"])
        assert code != 0
        assert "listening on" not in out
        assert f"127.0.0.1:{port}" in err, err
        assert os.strerror(errno.EADDRINUSE) in err, err
    finally:
        taken.close()


def test_localhost_port_in_use_on_ipv6_fails_naming_address(demo_binary):
    taken = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::1", 0))
        taken.listen(8)
        port = taken.getsockname()[1]
        code, out, err = run_failing(demo_binary, ["--urls", f"http://localhost:{port}"])
        assert code != 0
        assert "listening on" not in out
        assert f"[::1]:{port}" in err, err
        assert os.strerror(errno.EADDRINUSE) in err, err
        # Nothing stays bound: the IPv4 half was released.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", port))
        finally:
            probe.close()
    finally:
        taken.close()


def test_second_endpoint_in_use_fails_whole_start(demo_binary):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(8)
        port = taken.getsockname()[1]
        code, out, err = run_failing(demo_binary, ["--urls", f"http://127.0.0.1:0;http://127.0.0.1:{port}"])
        assert code != 0
        assert "listening on" not in out
        assert f"127.0.0.1:{port}" in err
    finally:
        taken.close()


@pytest.mark.parametrize(
    "url,why",
    [
        ("ftp://x", "scheme"),
        ("x", "scheme"),
        ("https://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:0/app", "path"),
        ("http://::1:0", "brackets"),
        ("http://unix:relative.sock", "absolute"),
        ("", "no URL"),
    ],
)
def test_bad_url_fails_clearly(demo_binary, url, why):
    code, out, err = run_failing(demo_binary, ["--urls", url])
    assert code != 0
    assert "listening on" not in out
    assert "invalid URL" in err, err
    assert why in err, err
    if url:
        assert url in err, err


@pytest.mark.parametrize("args", [["--dispatch", "sideways"], ["--threads", "0"], ["--bogus"]])
def test_bad_flags_print_usage(demo_binary, args):
    code, out, err = run_failing(demo_binary, args)
    assert code == 2
    assert "usage:" in err
