"""A client that vanishes while the server writes must never kill the host process.

A C host does not ignore SIGPIPE (Rust binaries do, libraries must not change it), so every socket
write in the library has to avoid raising it. The demo runs with SIGPIPE at its default action
(subprocess restores it), so a stray SIGPIPE would end it.
"""

import socket
import struct
import time

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _reset_close(sock: socket.socket) -> None:
    # SO_LINGER 0: close with RST, so the server's next write fails with EPIPE/ECONNRESET.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _h2_get(path: str) -> bytes:
    # HPACK literal header fields without indexing, names as literals (no Huffman).
    def literal(name: bytes, value: bytes) -> bytes:
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    block = (
        literal(b":method", b"GET")
        + literal(b":scheme", b"http")
        + literal(b":authority", b"127.0.0.1")
        + literal(b":path", path.encode())
    )
    settings = _h2_frame(0x4, 0, 0, b"")
    headers = _h2_frame(0x1, 0x4 | 0x1, 1, block)  # END_HEADERS | END_STREAM
    return H2_PREFACE + settings + headers


def test_clients_vanishing_mid_response_do_not_kill_the_host(server):
    big = "/stream?chunks=256&size=65536"  # 16 MiB: far more than the socket buffers hold
    deadline = time.monotonic() + 30
    for i in range(20):
        assert time.monotonic() < deadline
        sock = socket.create_connection((server.host, server.port), timeout=5)
        if i % 2:
            sock.sendall(_h2_get(big))
        else:
            sock.sendall(f"GET {big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.recv(1024)  # the response has started
        _reset_close(sock)
    time.sleep(0.5)
    assert server.proc.poll() is None, f"the demo died (exit {server.proc.returncode})"
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, World!")


def test_h2load_stopping_mid_flight_does_not_kill_the_host(server):
    """h2load -D stops with requests in flight on 16 connections: the server's next writes meet
    closed sockets (this killed the demo with SIGPIPE before writes used MSG_NOSIGNAL)."""
    import shutil
    import subprocess

    h2load = shutil.which("h2load")
    assert h2load, "h2load (apt nghttp2-client) is required; scripts/install-test-deps.sh installs it"
    for _ in range(2):
        subprocess.run(
            [h2load, "-c16", "-m16", "-D1", f"http://{server.host}:{server.port}/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    time.sleep(0.3)
    assert server.proc.poll() is None, f"the demo died (exit {server.proc.returncode})"
