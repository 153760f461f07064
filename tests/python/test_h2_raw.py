"""HTTP/2 with prior knowledge over a raw socket, frame by frame (python `h2`)."""

from __future__ import annotations

import json
import time

import h2.events
import hyperframe.frame as hf
import pytest

from helpers import HELLO, TRAILER_BODY, H2Client, fnv1a32


@pytest.fixture
def h2c(server):
    c = H2Client(server.host, server.port)
    yield c
    c.close()


def test_preface_and_settings(h2c):
    h2c.wait(lambda: h2c.remote_settings_seen, 5)
    # The server's advertised limits (set in src/server.rs).
    settings = h2c.conn.remote_settings
    assert settings.max_concurrent_streams == 100
    assert settings.initial_window_size == 768 * 1024


def test_root(h2c):
    st = h2c.get("/")
    assert st.status == 200
    assert bytes(st.data) == HELLO
    assert st.header("content-type") == "text/plain"
    assert st.header("server") == "kestrel"
    assert st.header("date")
    assert st.trailers == []


def test_trailers_checksum(h2c):
    st = h2c.get("/trailers")
    assert st.status == 200
    assert st.header("content-type") == "text/plain"
    body = bytes(st.data)
    assert body == TRAILER_BODY
    trailers = dict(st.trailers)
    assert "x-checksum" in trailers, st.trailers
    assert trailers["x-checksum"] == fnv1a32(body)
    assert st.header("x-checksum") is None, "the checksum must come after the body, not in the head"


def test_trailers_frame_sequence(server):
    """HEADERS (no END_STREAM), DATA, then a trailing HEADERS frame carrying END_STREAM."""
    c = H2Client(server.host, server.port)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.streams[sid] = None
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", c.authority), (":path", "/trailers")], end_stream=True)
        c.flush()
        seen = []
        deadline = time.monotonic() + 10
        ended = False
        while not ended and time.monotonic() < deadline:
            data = c.sock.recv(65536)
            assert data, "connection closed"
            for ev in c.conn.receive_data(data):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, h2.events.DataReceived):
                    c.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                seen.append(type(ev).__name__)
                if isinstance(ev, h2.events.TrailersReceived):
                    assert ev.stream_ended is not None, "trailers must end the stream"
                ended = ended or isinstance(ev, h2.events.StreamEnded)
            c.flush()
        assert ended
        kinds = [k for k in seen if k != "StreamEnded"]
        assert kinds[0] == "ResponseReceived"
        assert kinds[-1] == "TrailersReceived"
        assert set(kinds[1:-1]) == {"DataReceived"}
    finally:
        c.close()


def test_info(h2c, server):
    st = h2c.get("/info?x=1")
    assert st.status == 200
    info = json.loads(bytes(st.data))
    assert info["protocol"] == "HTTP/2"
    assert info["method"] == "GET"
    assert info["path"] == "/info"
    assert info["query"] == "x=1"
    assert info["host"] == h2c.authority
    host, port = h2c.sock.getsockname()[:2]
    assert info["remote"] == f"{host}:{port}"
    assert info["local"] == f"{server.host}:{server.port}"


def test_headers_repeated(h2c):
    st = h2c.get("/headers", [("x-rep", "1"), ("x-rep", "2"), ("x-other", "o")])
    assert st.status == 200
    got = json.loads(bytes(st.data))
    assert got["x-rep"] == "1, 2"
    assert got["x-other"] == "o"


def test_echo(h2c):
    body = bytes(range(256)) * 3000  # 768000 bytes: more than the default 64 KiB window
    sid = h2c.request("POST", "/echo", [("content-type", "application/x-raw")], body=body)
    st = h2c.response(sid)
    assert st.status == 200
    assert st.header("content-type") == "application/x-raw"
    assert bytes(st.data) == body


def test_status_and_404(h2c):
    assert h2c.get("/status/418").status == 418
    st = h2c.get("/missing")
    assert st.status == 404
    assert bytes(st.data) == b"not found\n"


def test_stream_exact(h2c):
    st = h2c.get("/stream?chunks=33&size=12345")
    assert st.status == 200
    assert len(st.data) == 33 * 12345
    assert st.data.count(b"x") == len(st.data)


def test_many_concurrent_streams_one_connection(h2c):
    started = time.monotonic()
    sids = [h2c.request("GET", "/delay?ms=300") for _ in range(40)]
    sids += [h2c.request("GET", f"/info?n={i}") for i in range(40)]
    for sid in sids:
        h2c.response(sid, timeout=15)
    elapsed = time.monotonic() - started
    for sid in sids[:40]:
        assert h2c.streams[sid].status == 200
        assert bytes(h2c.streams[sid].data) == b"delayed 300"
    for i, sid in enumerate(sids[40:]):
        assert json.loads(bytes(h2c.streams[sid].data))["query"] == f"n={i}"
    # 40 delays of 300 ms in parallel, not in sequence (12 s).
    assert elapsed < 5, elapsed


def test_h2_head_response_carries_no_data(server):
    """HEAD must not carry content (RFC 9110 §9.3.2): HEADERS with content-length: 13 and
    END_STREAM, no DATA (RFC-conforming clients treat DATA there as a PROTOCOL_ERROR)."""
    c = H2Client(server.host, server.port)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "HEAD"), (":scheme", "http"), (":authority", c.authority), (":path", "/")], end_stream=True)
        c.flush()
        # Read raw frames without h2's validation, to see what the server really sends.
        buf = b""
        frames = []
        deadline = time.monotonic() + 5
        end = False
        while not end and time.monotonic() < deadline:
            c.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = c.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            buf += data
            while len(buf) >= 9:
                frame, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) < 9 + length:
                    break
                frame.parse_body(memoryview(buf[9 : 9 + length]))
                buf = buf[9 + length :]
                if frame.stream_id == sid:
                    frames.append(frame)
                    if "END_STREAM" in frame.flags:
                        end = True
        data_bytes = sum(len(f.data) for f in frames if isinstance(f, hf.DataFrame))
        assert data_bytes == 0, f"HEAD response carried {data_bytes} bytes of DATA: {frames}"
    finally:
        c.close()
