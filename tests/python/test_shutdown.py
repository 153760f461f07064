"""Graceful stop on SIGINT/SIGTERM: in-flight requests finish, new connections are refused."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from helpers import HELLO, H1Reader, H2Client, RawH2, connect, simple_request


def wait_refused(host, port, limit=3.0):
    """Connects repeatedly until refused; returns the time of the first refusal (or None)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=1)
        except ConnectionRefusedError:
            return time.monotonic()
        except OSError:
            pass
        else:
            s.close()
        time.sleep(0.02)
    return None


@pytest.mark.parametrize("dispatch", ["pool", "inline"])
def test_sigint_lets_inflight_h1_request_finish(start_demo, dispatch):
    d = start_demo(["--urls", "http://127.0.0.1:0", "--dispatch", dispatch], expect_urls=1)
    sock = connect(d.host, d.port, timeout=15)
    result = {}

    def read():
        try:
            result["resp"] = H1Reader(sock).read_response()
        except Exception as e:
            result["error"] = e
        result["at"] = time.monotonic()

    try:
        sock.sendall(simple_request("GET", "/delay?ms=1500", d.authority))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.3)  # the request is being handled
        stop_at = time.monotonic()
        d.signal(signal.SIGINT)
        refused_at = wait_refused(d.host, d.port)
        reader.join(10)
        assert not reader.is_alive(), "in-flight response never came"
        assert "error" not in result, result.get("error")
        resp = result["resp"]
        assert resp.status == 200
        assert resp.body == b"delayed 1500"
        assert refused_at is not None, "new connections still accepted after SIGINT"
        assert refused_at < result["at"], "new connections were accepted until the in-flight request ended"
        assert refused_at - stop_at < 1.0
        assert d.wait(10) == 0, d.stderr()
        assert "(0 requests aborted)" in d.stderr()
    finally:
        sock.close()


def test_sigint_h2_goaway_and_inflight_stream_finishes(start_demo):
    """HTTP/2: the stop sends GOAWAY (no error) and the in-flight stream still completes."""
    d = start_demo(["--urls", "http://127.0.0.1:0"], expect_urls=1)
    sock = connect(d.host, d.port, timeout=15)
    try:
        c = RawH2(sock)
        c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", d.authority), (":path", "/delay?ms=1500")])
        c.wait(lambda: c.of(c.hf.SettingsFrame), 5)
        time.sleep(0.3)
        d.signal(signal.SIGINT)
        c.wait(lambda: c.of(c.hf.GoAwayFrame), 5)
        assert wait_refused(d.host, d.port) is not None, "new connections still accepted after SIGINT"
        assert not c.stream_ended(1), "the stream ended before its delay"
        c.wait(lambda: c.stream_ended(1), 10)
        goaways = c.of(c.hf.GoAwayFrame)
        assert all(g.error_code == 0 for g in goaways), goaways
        assert goaways[-1].last_stream_id >= 1, goaways
        heads = c.of(c.hf.HeadersFrame, 1)
        assert dict(heads[0].decoded)[":status"] == "200"
        assert b"".join(f.data for f in c.of(c.hf.DataFrame, 1)) == b"delayed 1500"
        c.wait(lambda: c.closed, 5)  # and then the server closes the connection
        assert d.wait(10) == 0, d.stderr()
        assert "(0 requests aborted)" in d.stderr()
    finally:
        sock.close()


def test_idle_http1_connections_do_not_delay_stop(start_demo):
    d = start_demo(["--urls", "http://127.0.0.1:0"], expect_urls=1)
    idle = []
    try:
        for _ in range(5):
            s = connect(d.host, d.port)
            s.sendall(simple_request("GET", "/", d.authority))
            r = H1Reader(s)
            assert r.read_response().body == HELLO
            idle.append(r)
        started = time.monotonic()
        d.signal(signal.SIGINT)
        assert d.wait(10) == 0
        assert time.monotonic() - started < 2, "idle keep-alive connections held up the stop"
        for r in idle:
            assert r.at_eof(2), "idle keep-alive connection not closed"
        assert "(0 requests aborted)" in d.stderr()
    finally:
        for r in idle:
            r.sock.close()


def test_idle_h2_connection_does_not_delay_stop(start_demo):
    """A responsive idle h2 client (answers the shutdown PING) lets the server stop at once."""
    d = start_demo(["--urls", "http://127.0.0.1:0"], expect_urls=1)
    sock = connect(d.host, d.port)
    try:
        c = RawH2(sock)
        c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", d.authority), (":path", "/")])
        c.wait(lambda: c.stream_ended(1), 5)
        started = time.monotonic()
        d.signal(signal.SIGINT)
        c.wait(lambda: c.closed, 5)
        assert d.wait(10) == 0
        assert time.monotonic() - started < 2, "an idle h2 connection held up the stop"
        assert c.of(c.hf.GoAwayFrame)
    finally:
        sock.close()


def test_sigterm_stops_cleanly(start_demo):
    d = start_demo(["--urls", "http://127.0.0.1:0"], expect_urls=1)
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0
    assert "SIGTERM, stopping" in d.stderr()


def test_request_outliving_stop_timeout_is_aborted(start_demo):
    """The demo stops with a 5 s timeout: an 8 s request is aborted (the client gets 500, since
    nothing was sent yet) and the exit is still 0."""
    d = start_demo(["--urls", "http://127.0.0.1:0"], expect_urls=1)
    sock = connect(d.host, d.port, timeout=15)
    try:
        sock.sendall(simple_request("GET", "/delay?ms=8000", d.authority))
        time.sleep(0.3)
        started = time.monotonic()
        d.signal(signal.SIGINT)
        assert d.wait(10) == 0, d.stderr()
        elapsed = time.monotonic() - started
        assert 4.5 < elapsed < 9, elapsed
        assert "(1 requests aborted)" in d.stderr(), d.stderr()
        # Nothing was sent when the timeout passed: the client gets a 500, then the close.
        reader = H1Reader(sock)
        resp = reader.read_response()
        assert resp.status == 500
        with pytest.raises((EOFError, ConnectionResetError)):
            reader.read_response()
    finally:
        sock.close()


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_client_gone_mid_body_releases_connection(start_demo, proto):
    """A client that disconnects in the middle of a POST /echo body must not leave the
    connection behind: the stop that follows is immediate, not the 5 s timeout."""
    d = start_demo(["--urls", "http://127.0.0.1:0"], expect_urls=1)
    if proto == "h1":
        sock = connect(d.host, d.port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 10)
    else:
        c = H2Client(d.host, d.port)
        c.request("POST", "/echo", body=b"a" * 10, end_stream=False)
        sock = c.sock
    time.sleep(0.3)
    sock.close()
    time.sleep(0.3)
    started = time.monotonic()
    d.signal(signal.SIGINT)
    assert d.wait(10) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"stop took {elapsed:.1f}s: the abandoned connection was kept\n{d.stderr()}"
