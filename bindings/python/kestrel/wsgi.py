"""Serving a WSGI (PEP 3333) application.

::

    from kestrel.wsgi import WSGIServer
    WSGIServer(app, urls="http://127.0.0.1:8000", threads=4).serve_forever()

Each request runs on one of ``threads`` Python threads. ``wsgi.input`` streams the request
body (``read``, ``readline``, ``readlines``, iteration) straight from the connection;
``start_response`` honours ``exc_info``; the ``write()`` callable and iterables with ``close()``
work as the PEP says; ``wsgi.file_wrapper`` sends real files without reading them in Python.
A list (or tuple) result is sent in one piece with Content-Length; any other iterable is
streamed, chunked on HTTP/1.1 unless the application set Content-Length.
"""

from __future__ import annotations

import logging
import sys
from ctypes import byref, c_char, c_size_t, c_void_p
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import unquote_to_bytes

from . import _native as n
from ._engine import Engine
from ._http import _HeadBuffers, split_host_port
from ._native import MEMORY

__all__ = ["WSGIServer", "WSGIInput", "FileWrapper"]

log = logging.getLogger("kestrel")
app_log = logging.getLogger("kestrel.application")

_CHUNK = 64 * 1024
_ERROR_BODY = b"Internal Server Error"


class WSGIInput:
    """``wsgi.input``: the request body, read from the connection as the application asks.

    ``read(size)`` returns at most ``size`` bytes, fewer only at the end of the body;
    ``read()`` returns the rest. ``readline`` stops after ``b"\\n"``."""

    __slots__ = ("_handle", "_buf", "_eof", "_chunk", "_got")

    def __init__(self, handle: Any, has_body: bool = True) -> None:
        self._handle = handle
        self._buf = bytearray()
        self._eof = not has_body
        self._chunk: Any = None
        self._got: Any = None

    def _fill(self) -> bool:
        """Reads the next chunk into the buffer; False at the end of the body."""
        if self._eof:
            return False
        if self._chunk is None:
            self._chunk = (c_char * _CHUNK)()
            self._got = c_size_t(0)
        rc = n.lib.kestrel_request_read(self._handle, self._chunk, _CHUNK, byref(self._got))
        if rc:
            self._eof = True
            raise n.error(rc, "reading the request body")
        count = self._got.value
        if count == 0:
            self._eof = True
            return False
        self._buf += memoryview(self._chunk)[:count]
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        while len(self._buf) < size and self._fill():
            pass
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                take = end + 1
                break
            if 0 <= limit <= len(self._buf):
                take = limit
                break
            start = len(self._buf)
            if not self._fill():
                take = len(self._buf)
                break
        if 0 <= limit < take:
            take = limit
        out = bytes(self._buf[:take])
        del self._buf[:take]
        return out

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        """Nothing to release: the server owns the stream."""


class FileWrapper:
    """``wsgi.file_wrapper``: a file the server sends by descriptor when it is a regular file
    (the library reads it, not Python), else by iteration in ``block_size`` chunks."""

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            data = read(self.block_size)
            if not data:
                return
            yield data


def _fd_of(wrapper: FileWrapper) -> tuple[int, int] | None:
    """``(fd, offset)`` when the wrapped object is a regular file read from its position."""
    import os
    import stat

    f = wrapper.filelike
    try:
        fd = f.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fd, f.tell()
    except (AttributeError, OSError, ValueError):
        return None


#: status line -> code, for the status lines applications use again and again
_STATUS_CODES: dict[str, int] = {}


class _Call:
    """The state of one WSGI call: what start_response received and whether the head went."""

    __slots__ = ("handle", "status", "headers", "sent", "completed", "applied")

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.status: int = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.sent = False
        self.completed = False
        #: names of the headers handed to the library so far (to undo them for an error page)
        self.applied: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.headers is not None:
            raise AssertionError("start_response was already called (pass exc_info to replace the head)")
        code = _STATUS_CODES.get(status)
        if code is None:
            if not isinstance(status, str) or len(status) < 3 or not status[:3].isdigit():
                raise ValueError(f"invalid WSGI status {status!r}")
            code = int(status[:3])
            if len(_STATUS_CODES) < 256:
                _STATUS_CODES[status] = code
        self.status = code
        self.headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return self.write

    def send_head(self) -> None:
        """Hands the status and headers to the library (before the first body byte)."""
        if self.headers is None:
            raise AssertionError("the application did not call start_response before the body")
        handle = self.handle
        if self.status != 200:
            n.check(n.raw.kestrel_response_set_status(handle, self.status), "status")
        add = n.raw.kestrel_response_add_header
        applied = self.applied
        for k, v in self.headers:
            rc = add(handle, k, len(k), v, len(v))
            applied.append(k)
            if rc:
                raise n.error(rc, f"header {k.decode('latin-1')!r}")
        self.sent = True

    def write(self, data: bytes) -> None:
        """The ``write()`` callable start_response returns: writes the body unbuffered."""
        if not self.sent:
            self.send_head()
        if data:
            if type(data) is not bytes:
                data = bytes(data)
            size = len(data)
            write = n.raw_wait.kestrel_response_write if size <= n.RAW_MAX else n.lib.kestrel_response_write
            rc = write(self.handle, data, size)
            if rc:
                raise n.error(rc, "write")

    def send(self, body: bytes) -> None:
        """Completes with a whole body (the head goes with it)."""
        self.send_head()
        self.completed = True
        size = len(body)
        send = n.raw.kestrel_response_send if size <= n.RAW_MAX else n.fast.kestrel_response_send
        rc = send(self.handle, body, size)
        if rc:
            raise n.error(rc, "send")

    def end(self) -> None:
        if not self.sent:
            self.send_head()
        self.completed = True
        rc = n.raw.kestrel_response_end(self.handle)
        if rc:
            raise n.error(rc, "end")


class WSGIServer(Engine):
    """Serves a WSGI application. ``root_path`` is the URL prefix it is mounted at (it
    becomes ``SCRIPT_NAME`` and is removed from ``PATH_INFO``). ``threads`` (default 4) Python
    threads run the application; see :class:`kestrel.Server` for the other options."""

    def __init__(self, app: Callable[..., Iterable[bytes]], urls: Any = "http://localhost:5000", *, root_path: str = "", **options: Any) -> None:
        options.setdefault("threads", 4)
        super().__init__(urls, **options)
        self.app = app
        self.root_path = root_path.rstrip("/")
        self._head = _HeadBuffers()
        #: connection id -> the environ entries that stay the same on a connection
        self._connections: dict[int, dict[str, Any]] = {}
        self._base = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.threads > 1,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SCRIPT_NAME": self.root_path,
            # Set for every request (placeholders here size the copied dict once for all).
            "REQUEST_METHOD": "",
            "PATH_INFO": "",
            "QUERY_STRING": "",
            "SERVER_PROTOCOL": "",
            "wsgi.input": _NO_BODY,
        }

    def _connection(self, w: tuple[int, ...]) -> dict[str, Any]:
        """The environ entries of a request's connection (addresses, scheme), cached."""
        mem = MEMORY
        env = self._base.copy()
        env["wsgi.url_scheme"] = str(mem[w[3] : w[3] + w[4]], "latin-1")
        host, port = split_host_port(str(mem[w[15] : w[15] + w[16]], "latin-1"))
        env["REMOTE_ADDR"] = host
        env["REMOTE_PORT"] = "" if port is None else str(port)
        host, port = split_host_port(str(mem[w[17] : w[17] + w[18]], "latin-1"))
        env["SERVER_NAME"] = host
        env["SERVER_PORT"] = "" if port is None else str(port)
        if len(self._connections) >= 1024:
            self._connections.clear()  # ids are never reused: old entries are only garbage
        self._connections[w[21]] = env
        return env

    def environ(self, handle: Any, head: Any = None) -> dict[str, Any]:
        """The PEP 3333 environ of a request (``handle``: a ``c_void_p``)."""
        if head is None:
            head = self._head.get()
        rc = n.raw.kestrel_request_get_head(handle, head)
        if rc:
            raise n.error(rc, "get_head")
        h = n.HOT_STRUCT.unpack(head)
        mem = MEMORY
        env = self._connections.get(h[10]) or self._connection(n.HEAD_STRUCT.unpack(head))
        env = env.copy()
        path = mem[h[2] : h[2] + h[3]].tobytes()
        if b"%" in path:
            path = unquote_to_bytes(path)  # PEP 3333: the unquoted bytes, as latin-1 characters
        path = path.decode("latin-1")
        root = self.root_path
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :]
        if h[7] == 8 and mem[h[6] + 7] == 0x31:  # b"HTTP/1.1", the usual case
            version = "HTTP/1.1"
        else:
            version = mem[h[6] : h[6] + h[7]].tobytes().decode("latin-1")
        env["REQUEST_METHOD"] = n.static_str(h[0], h[1])
        env["PATH_INFO"] = path
        env["QUERY_STRING"] = mem[h[4] : h[4] + h[5]].tobytes().decode("latin-1") if h[5] else ""
        env["SERVER_PROTOCOL"] = version
        count = h[12]
        has_body = False
        if count:
            words = (n.HEADER_STRUCTS.get(count) or n.header_struct(count)).unpack_from(mem, h[11])
            keys = _HEADER_KEYS
            static_keys = _STATIC_KEYS
            lo, hi = n.STATIC_LO, n.STATIC_HI
            for i in range(0, 4 * count, 4):
                p, size = words[i], words[i + 1]
                value = mem[words[i + 2] : words[i + 2] + words[i + 3]].tobytes().decode("latin-1")
                # Standard names are constants of the library: their keys are cached by address.
                key = static_keys.get((p << 16) | size) if lo <= p < hi else None
                if key is None:
                    name = mem[p : p + size].tobytes()
                    key = keys.get(name)
                    if key is None:
                        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                        if len(keys) < 512:
                            keys[name] = key
                    if lo <= p < hi and size < 65536:
                        static_keys[(p << 16) | size] = key
                if key == "CONTENT_LENGTH":
                    has_body = value != "0"
                elif key == "HTTP_TRANSFER_ENCODING":
                    has_body = True
                if key in env:
                    # Repeated headers are joined with commas (cookies with semicolons).
                    env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
                else:
                    env[key] = value
        if version == "HTTP/2":
            # HTTP/2 may carry a body without either header; the read finds its end.
            has_body = True
            if "HTTP_HOST" not in env and h[9]:
                env["HTTP_HOST"] = mem[h[8] : h[8] + h[9]].tobytes().decode("latin-1")
        env["wsgi.input"] = WSGIInput(handle) if has_body else _NO_BODY
        return env

    def _pull_loop(self) -> None:
        self.prepare_thread()
        next_request = n.raw_wait.kestrel_server_next_request  # waits with the GIL released
        out = c_void_p()
        ref = byref(out)
        server = c_void_p(self._server)
        head = n.new_head_buffer()
        serve = self.serve_handle
        while True:
            rc = next_request(server, -1, ref)
            if rc:
                if rc != n.STOPPED:
                    log.error("next_request failed: %s", n.error(rc))
                return
            serve(out, head)

    def serve_request(self, handle: int) -> None:
        self.serve_handle(c_void_p(handle), None)

    def serve_handle(self, handle: Any, head: Any) -> None:
        """Serves the request ``handle`` (a ``c_void_p``) to the application."""
        call = _Call(handle)
        result: Any = None
        try:
            env = self.environ(handle, head)
            result = self.app(env, call.start_response)
            if (type(result) is list or type(result) is tuple) and not call.sent:
                # The whole body is here: one piece, with Content-Length.
                body = result[0] if len(result) == 1 else b"".join(result)
                call.send(body if type(body) is bytes else bytes(body))
            elif isinstance(result, FileWrapper) and not call.sent and (where := _fd_of(result)):
                self._send_fd(call, *where)
            else:
                for chunk in result:
                    if chunk:
                        call.write(chunk)
                call.end()
        except BaseException as e:  # noqa: BLE001
            self._failed(call, e)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException:  # noqa: BLE001
                    app_log.exception("exception in the close() of a WSGI result")
            if not call.completed:
                call.completed = True
                n.raw.kestrel_response_fail(handle)

    def _send_fd(self, call: _Call, fd: int, offset: int) -> None:
        call.send_head()
        call.completed = True
        rc = n.lib.kestrel_response_send_fd(call.handle, fd, offset, n.TO_END)
        if rc:
            raise n.error(rc, "sending the file")

    def _failed(self, call: _Call, e: BaseException) -> None:
        if isinstance(e, n.ClientDisconnected):
            app_log.debug("client went away: %s", e)
            return
        app_log.error("exception in WSGI application", exc_info=e)
        if call.completed or call.sent:
            return  # cut off by the caller's fail()
        handle = call.handle
        call.completed = True
        for k in call.applied:
            n.raw.kestrel_response_remove_header(handle, k, len(k))
        n.raw.kestrel_response_set_status(handle, 500)
        n.raw.kestrel_response_set_header(handle, b"content-type", 12, b"text/plain; charset=utf-8", 25)
        n.raw.kestrel_response_send(handle, _ERROR_BODY, len(_ERROR_BODY))


#: ``wsgi.input`` of requests without a body (it has no state to share)
_NO_BODY = WSGIInput(None, has_body=False)

#: (address << 16 | length) of a header name among the library's constants -> environ key
_STATIC_KEYS: dict[int, str] = {}

#: header name -> environ key
_HEADER_KEYS: dict[bytes, str] = {b"content-length": "CONTENT_LENGTH", b"content-type": "CONTENT_TYPE"}


def serve(app: Callable[..., Iterable[bytes]], urls: Any = "http://localhost:5000", **options: Any) -> None:
    """Serves ``app`` until Ctrl-C or SIGTERM (see :class:`WSGIServer` for the options)."""
    WSGIServer(app, urls, **options).serve_forever()
