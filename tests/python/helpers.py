"""Shared helpers for the kestrel demo tests: raw HTTP/1.1 and HTTP/2 clients, body generators.

Everything here talks to 127.0.0.1 / ::1 / Unix sockets only, and every wait is bounded.
"""

from __future__ import annotations

import hashlib
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

HELLO = b"Hello, World!"
TRAILER_BODY = b"a body followed by a trailer\n"


def fnv1a32(data: bytes) -> str:
    """FNV-1a 32-bit hash as 8 lowercase hex digits (what /trailers sends as x-checksum)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


# --------------------------------------------------------------------------------------------
# Deterministic large bodies
# --------------------------------------------------------------------------------------------

MIB = 1 << 20


class BigBody:
    """A deterministic pseudo-random body of `size` bytes, produced in 1 MiB pieces.

    Each piece starts with its index so reordered or duplicated pieces change the hash.
    """

    def __init__(self, size: int, seed: int = 1234):
        self.size = size
        self._block = random.Random(seed).randbytes(MIB)
        self.sha256 = hashlib.sha256()
        for piece in self.pieces():
            self.sha256.update(piece)
        self.digest = self.sha256.hexdigest()

    def pieces(self):
        sent = 0
        i = 0
        while sent < self.size:
            n = min(MIB, self.size - sent)
            piece = (i.to_bytes(8, "big") + self._block[8:])[:n]
            yield piece
            sent += n
            i += 1


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1
# --------------------------------------------------------------------------------------------


def connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class H1Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def trailer(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.trailers:
            if k == name:
                return v
        return None


class H1Reader:
    """Incremental HTTP/1.1 response reader over a socket (bounded by the socket timeout)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        data = self.sock.recv(256 * 1024)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self._fill():
                raise EOFError(f"connection closed while waiting for {marker!r}; have {bytes(self.buf[:200])!r}")

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self, max_n: int) -> bytes:
        if not self.buf and not self._fill():
            return b""
        out = bytes(self.buf[:max_n])
        del self.buf[:max_n]
        return out

    def read_head(self) -> H1Response:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return H1Response(version, int(status), reason[0] if reason else "", headers)

    def iter_body(self, resp: H1Response, method: str = "GET"):
        """Yields the body of `resp` in pieces (filling resp.trailers for chunked bodies)."""
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if "chunked" in te:
            while True:
                size_line = self.read_until(b"\r\n").decode("latin-1").strip()
                size = int(size_line.split(";")[0], 16)
                if size == 0:
                    while True:
                        line = self.read_until(b"\r\n").decode("latin-1")
                        if line == "\r\n":
                            return
                        k, _, v = line.partition(":")
                        resp.trailers.append((k.strip().lower(), v.strip()))
                remaining = size
                while remaining:
                    piece = self.read_some(remaining)
                    if not piece:
                        raise EOFError("connection closed inside a chunk")
                    remaining -= len(piece)
                    yield piece
                if self.read_exact(2) != b"\r\n":
                    raise ValueError("missing CRLF after chunk")
        elif cl is not None:
            remaining = int(cl)
            while remaining:
                piece = self.read_some(remaining)
                if not piece:
                    raise EOFError(f"connection closed with {remaining} body bytes missing")
                remaining -= len(piece)
                yield piece
        else:
            while True:
                piece = self.read_some(1 << 20)
                if not piece:
                    return
                yield piece

    def read_response(self, method: str = "GET") -> H1Response:
        resp = self.read_head()
        resp.body = b"".join(self.iter_body(resp, method))
        return resp

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True when the peer closes (or resets) the connection within `timeout` with nothing
        more to read than what is already buffered."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def simple_request(method: str, target: str, host: str = "127.0.0.1", headers=(), body: bytes | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def exchange_raw(host: str, port: int, data: bytes, timeout: float = 5.0):
    """Sends `data` on a fresh connection, then returns (everything received, closed_by_peer)."""
    sock = connect(host, port, timeout)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = bytearray()
        deadline = time.monotonic() + timeout
        closed = False
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
        return bytes(out), closed
    finally:
        sock.close()


def echo_full_duplex_h1(host: str, port: int, body: BigBody, content_type: str, chunked: bool, timeout: float = 60.0):
    """POSTs `body` to /echo while reading the echo at the same time (a client that sends the
    whole body before reading would deadlock against any streaming echo once socket buffers
    fill). Returns (response head, received length, sha256 hex)."""
    sock = connect(host, port, timeout)
    sender_error = []

    def send():
        try:
            head = ["POST /echo HTTP/1.1", f"Host: {host}:{port}", f"Content-Type: {content_type}"]
            head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {body.size}")
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for piece in body.pieces():
                if chunked:
                    sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    sock.sendall(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except Exception as e:  # reported by the caller
            sender_error.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        reader = H1Reader(sock)
        resp = reader.read_head()
        digest = hashlib.sha256()
        n = 0
        for piece in reader.iter_body(resp):
            digest.update(piece)
            n += len(piece)
        sender.join(timeout)
        assert not sender.is_alive(), "sender thread did not finish"
        assert not sender_error, f"sending failed: {sender_error[0]!r}"
        return resp, n, digest.hexdigest()
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# Raw HTTP/2 (h2c with prior knowledge)
# --------------------------------------------------------------------------------------------


@dataclass
class H2Stream:
    stream_id: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    informational: list[list[tuple[str, str]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None
    data_len: int = 0
    keep_data: bool = True
    digest: object = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[":status"])

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Client:
    """A minimal HTTP/2 client over a raw socket, built on the `h2` state machine."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, sock: socket.socket | None = None):
        self.host, self.port = host, port
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.sock = sock or connect(host, port, timeout)
        self.timeout = timeout
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        # Let the server send freely: big windows on our side.
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 8 * MIB})
        self.conn.increment_flow_control_window(64 * MIB)
        self.flush()
        self.streams: dict[int, H2Stream] = {}
        self.goaway = None
        self.remote_settings_seen = False
        self.closed = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, headers=(), body: bytes | None = None, end_stream: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", self.authority), (":path", path)]
        hdrs += list(headers)
        self.streams[sid] = H2Stream(sid)
        has_body = body is not None and len(body) > 0
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and not has_body)
        self.flush()
        if has_body:
            self.send_body(sid, body, end_stream=end_stream)
        return sid

    def send_body(self, sid: int, body: bytes, end_stream: bool = True):
        """Sends `body` respecting flow control (reading frames while waiting for window)."""
        view = memoryview(body)
        deadline = time.monotonic() + self.timeout
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("no flow-control window from the server")
                self._read_once(0.5)
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def _handle(self, event):
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = list(event.headers)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            self.streams[event.stream_id].informational.append(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.data_len += len(event.data)
                if st.digest is not None:
                    st.digest.update(event.data)
                if st.keep_data:
                    st.data += event.data
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.streams[event.stream_id].trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self.streams:
                self.streams[event.stream_id].reset = event.error_code
                self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True

    def _read_once(self, timeout: float) -> bool:
        """Reads what is available within `timeout`; False on EOF."""
        if self.closed:
            return False
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._handle(event)
        self.flush()
        return True

    def wait(self, predicate, timeout: float | None = None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting on the HTTP/2 connection")
            if not self._read_once(min(left, 0.5)) and not predicate():
                raise EOFError("connection closed by the server")

    def response(self, sid: int, timeout: float | None = None) -> H2Stream:
        self.wait(lambda: self.streams[sid].ended, timeout)
        return self.streams[sid]

    def get(self, path: str, headers=(), timeout: float | None = None) -> H2Stream:
        return self.response(self.request("GET", path, headers), timeout)

    def echo_full_duplex(self, body: BigBody, content_type: str, timeout: float = 60.0) -> H2Stream:
        """POSTs `body` to /echo while reading the echo; the stream keeps only a running hash."""
        sid = self.request("POST", "/echo", [("content-type", content_type)], end_stream=False)
        st = self.streams[sid]
        st.keep_data = False
        st.digest = hashlib.sha256()
        deadline = time.monotonic() + timeout
        pending = b""
        pieces = body.pieces()
        done_sending = False
        while not st.ended:
            if time.monotonic() > deadline:
                raise TimeoutError(f"echo did not finish: received {st.data_len} of {body.size}")
            if not done_sending:
                if not pending:
                    pending = next(pieces, b"")
                    if not pending:
                        self.conn.end_stream(sid)
                        self.flush()
                        done_sending = True
                        continue
                window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                sent_any = False
                while pending and window > 0:
                    n = min(window, len(pending))
                    self.conn.send_data(sid, pending[:n])
                    pending = pending[n:]
                    sent_any = True
                    window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                if sent_any:
                    self.flush()
                # Read whatever has arrived; wait a little only when we are blocked on window.
                if not self._read_once(0 if window > 0 else 0.5):
                    raise EOFError("connection closed during the echo")
            else:
                if not self._read_once(0.5):
                    break
        return st


class RawH2:
    """HTTP/2 at the frame level (hyperframe + hpack), for what python-h2's state machine
    refuses, e.g. frames after a GOAWAY (hyper's graceful shutdown sends GOAWAY, PING, GOAWAY).
    Answers SETTINGS and PING itself; records every frame received."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, sock: socket.socket):
        import hpack
        import hyperframe.frame as hf

        self.hf = hf
        self.sock = sock
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.frames = []
        self.closed = False
        self.sock.sendall(self.PREFACE + hf.SettingsFrame(0, settings={}).serialize())

    def send_headers(self, stream_id: int, headers, end_stream: bool = True):
        flags = {"END_HEADERS"} | ({"END_STREAM"} if end_stream else set())
        f = self.hf.HeadersFrame(stream_id, self.encoder.encode(headers), flags=flags)
        self.sock.sendall(f.serialize())

    def read_frames(self, timeout: float) -> bool:
        """Reads and parses what arrives within `timeout`; False once the peer closed."""
        if self.closed:
            return False
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        hf = self.hf
        while len(self.buf) >= 9:
            frame, length = hf.Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            if isinstance(frame, hf.HeadersFrame):
                frame.decoded = self.decoder.decode(frame.data)
            elif isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
                self.sock.sendall(hf.SettingsFrame(0, flags={"ACK"}).serialize())
            elif isinstance(frame, hf.PingFrame) and "ACK" not in frame.flags:
                self.sock.sendall(hf.PingFrame(0, frame.opaque_data, flags={"ACK"}).serialize())
            elif isinstance(frame, hf.DataFrame) and frame.flow_controlled_length:
                n = frame.flow_controlled_length
                self.sock.sendall(hf.WindowUpdateFrame(0, n).serialize() + hf.WindowUpdateFrame(frame.stream_id, n).serialize())
            self.frames.append(frame)
        return True

    def wait(self, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out; frames so far: {self.frames}")
            if not self.read_frames(min(left, 0.5)) and not predicate():
                raise EOFError(f"connection closed; frames: {self.frames}")

    def of(self, kind, stream_id=None):
        return [f for f in self.frames if isinstance(f, kind) and (stream_id is None or f.stream_id == stream_id)]

    def stream_ended(self, stream_id: int) -> bool:
        return any(f.stream_id == stream_id and "END_STREAM" in f.flags for f in self.frames if hasattr(f, "flags"))


# --------------------------------------------------------------------------------------------
# TLS clients: Python ssl, openssl s_client, curl (the https tests, test_tls*.py)
# --------------------------------------------------------------------------------------------


def tls_context(
    cafile=None,
    cert=None,
    key=None,
    alpn=("h2", "http/1.1"),
    min_version=None,
    max_version=None,
    verify: bool | None = None,
    check_hostname: bool | None = None,
):
    """A client SSLContext. Verifies against `cafile` when given (verify defaults to whether a CA
    is given; check_hostname defaults to verify); presents `cert`/`key` when given."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    verify = cafile is not None if verify is None else verify
    ctx.check_hostname = verify if check_hostname is None else check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def tls_connect(host: str, port: int, ctx=None, sni: str | None = None, timeout: float = 5.0):
    """A completed TLS connection (SSLSocket) to host:port; `sni` is the name sent (None: none,
    as when connecting by IP). Raises ssl.SSLError / OSError when the handshake fails."""
    ctx = ctx or tls_context()
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def peer_certificate(host: str, port: int, sni: str | None = None, **ctx_args):
    """The certificate the server presents (a cryptography x509.Certificate), unverified."""
    from cryptography import x509

    ctx_args.setdefault("verify", False)
    with tls_connect(host, port, tls_context(**ctx_args), sni) as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def cert_cn(cert) -> str:
    from cryptography.x509.oid import NameOID

    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def cert_sans(cert) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses as strings) of a certificate's subjectAltName."""
    from cryptography import x509

    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def cert_sha256(cert) -> str:
    """SHA-256 fingerprint as colon-separated upper-case hex (openssl's and kestrel's format)."""
    from cryptography.hazmat.primitives import hashes

    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def file_cert(path):
    from cryptography import x509

    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def tls_get(sock, path: str, host: str = "localhost", keep_alive: bool = True) -> H1Response:
    """One HTTP/1.1 GET on an open (TLS) socket; returns the response with its body."""
    headers = [] if keep_alive else [("Connection", "close")]
    sock.sendall(simple_request("GET", path, host, headers))
    reader = H1Reader(sock)
    resp = reader.read_head()
    resp.body = b"".join(reader.iter_body(resp))
    assert not reader.buf, f"unexpected bytes after the response: {bytes(reader.buf[:100])!r}"
    return resp


def tls_fetch(host: str, port: int, path: str = "/", ctx=None, sni: str | None = None, timeout: float = 5.0) -> H1Response:
    """Connects, sends one HTTP/1.1 GET (Connection: close), returns the response. Errors (a
    refused handshake, an alert on the first read) propagate as ssl.SSLError / OSError / EOFError."""
    ctx = ctx or tls_context(alpn=("http/1.1",))
    with tls_connect(host, port, ctx, sni, timeout) as s:
        return tls_get(s, path, sni or host, keep_alive=False)


def s_client(host: str, port: int, *args: str, request: bytes | None = None, timeout: float = 10.0) -> tuple[int, str]:
    """Runs `openssl s_client -connect host:port ARGS`. With `request`, sends it and waits for the
    server to close (-ign_eof); without, closes right after the handshake. Returns (exit code,
    stdout + stderr). Bounded by `timeout`."""
    import subprocess

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = ["openssl", "s_client", "-connect", target, *args]
    if request is not None:
        cmd.append("-ign_eof")
    done = subprocess.run(cmd, input=request or b"", capture_output=True, timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def http_close_request(path: str = "/", host: str = "localhost") -> bytes:
    return simple_request("GET", path, host, [("Connection", "close")])


def curl(*args: str, timeout: float = 15.0):
    """Runs curl (silent, errors shown, bounded) and returns the CompletedProcess (text)."""
    import subprocess

    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "--connect-timeout", "5", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)
