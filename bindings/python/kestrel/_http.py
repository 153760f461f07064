"""The core API: :class:`Server` calls ``handler(request, response)`` for every request."""

from __future__ import annotations

import json as _json
import logging
import os
from ctypes import byref, c_char, c_size_t
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

from . import _native as n
from ._engine import Engine
from ._native import MEMORY, ResponseStateError

app_log = logging.getLogger("kestrel.application")

BytesLike = Union[bytes, bytearray, memoryview]
Body = Union[str, BytesLike]

_READ_CHUNK = 64 * 1024


def _raw(buf: memoryview, ptr: int, size: int) -> bytes:
    return buf[ptr : ptr + size].tobytes()


def split_host_port(addr: str) -> tuple[str, int | None]:
    """``"127.0.0.1:5000"`` -> ``("127.0.0.1", 5000)``; ``"[::1]:80"`` -> ``("::1", 80)``;
    ``"unix:/run/x.sock"`` -> ``("/run/x.sock", None)``."""
    if addr.startswith("unix:"):
        return addr[5:], None
    host, _, port = addr.rpartition(":")
    if host.startswith("["):
        host = host[1:-1]
    try:
        return host, int(port)
    except ValueError:
        return addr, None


class Headers(Mapping[str, str]):
    """Request headers: a read-only, case-insensitive mapping of ``str`` to ``str`` (values
    decoded as ISO-8859-1, as HTTP defines them). ``headers["accept"]`` is the first value;
    :meth:`getall` gives every value; iteration yields lower-case names once each;
    :attr:`raw` is the list of ``(name, value)`` byte pairs as received."""

    __slots__ = ("raw", "_index")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._index: dict[str, list[str]] | None = None

    def _build(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name, value in self.raw:
            index.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        self._index = index
        return index

    def __getitem__(self, name: str) -> str:
        return (self._index or self._build())[name.lower()][0]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        values = (self._index or self._build()).get(name.lower())
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in order (empty if absent)."""
        return list((self._index or self._build()).get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in (self._index or self._build())

    def __iter__(self) -> Iterator[str]:
        return iter(self._index or self._build())

    def __len__(self) -> int:
        return len(self._index or self._build())

    def items(self) -> Any:  # type: ignore[override]
        """``(name, value)`` pairs, one per value, in order received."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def parse_head(handle: int, headbuf: Any) -> tuple[int, ...]:
    """Fills ``headbuf`` with the request head in one call and returns its 24 words."""
    rc = n.fast.kestrel_request_get_head(handle, headbuf)
    if rc:
        raise n.error(rc, "get_head")
    return n.HEAD_STRUCT.unpack(headbuf)


def raw_headers(w: tuple[int, ...]) -> list[tuple[bytes, bytes]]:
    """The ``(name, value)`` byte pairs of a head unpacked by :func:`parse_head`."""
    count = w[23]
    if not count:
        return []
    words = n.header_struct(count).unpack_from(MEMORY, w[22])
    mem = MEMORY
    return [
        (mem[words[i] : words[i] + words[i + 1]].tobytes(), mem[words[i + 2] : words[i + 2] + words[i + 3]].tobytes())
        for i in range(0, 4 * count, 4)
    ]


class _Exchange:
    """The state one request and its response share: the native handle while it is valid."""

    __slots__ = ("handle", "completed", "started", "header_names", "aborted", "detached", "__weakref__")

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.completed = False
        self.started = False
        self.aborted = False
        self.detached = False
        #: lower-case names of the response headers set so far
        self.header_names: set[str] = set()

    def live(self) -> int:
        """The handle, or an error once the response was completed (the handle may be gone)."""
        if self.completed:
            raise ResponseStateError("the response was already completed", n.ALREADY_COMPLETED)
        return self.handle

    def complete(self, rc: int, doing: str) -> None:
        """Records a completing call: whatever its result, the handle is no longer ours."""
        self.completed = True
        self.started = True
        if rc == n.CANCELLED:
            self.aborted = True
        if rc:
            raise n.error(rc, doing)


class Request:
    """An HTTP request. Attributes are decoded as ISO-8859-1 strings (lossless for any byte);
    the body streams with :meth:`read`, :meth:`readinto` or iteration, and is valid until the
    response is completed."""

    __slots__ = (
        "_x",
        "method",
        "scheme",
        "path",
        "query",
        "target",
        "version",
        "authority",
        "remote_addr",
        "local_addr",
        "id",
        "connection_id",
        "headers",
        "_eof",
        "_buf",
    )

    def __init__(self, exchange: _Exchange, w: tuple[int, ...]) -> None:
        mem = MEMORY
        self._x = exchange
        self.method: str = str(mem[w[1] : w[1] + w[2]], "latin-1")
        self.scheme: str = str(mem[w[3] : w[3] + w[4]], "latin-1")
        #: the path as sent, not percent-decoded
        self.path: str = str(mem[w[5] : w[5] + w[6]], "latin-1")
        #: the query string without ``?`` (empty when absent)
        self.query: str = str(mem[w[7] : w[7] + w[8]], "latin-1")
        #: the raw request target (``/path?query``)
        self.target: str = str(mem[w[9] : w[9] + w[10]], "latin-1")
        #: ``HTTP/1.0``, ``HTTP/1.1`` or ``HTTP/2``
        self.version: str = str(mem[w[11] : w[11] + w[12]], "latin-1")
        #: the Host header (HTTP/1.x) or ``:authority`` (HTTP/2); empty when absent
        self.authority: str = str(mem[w[13] : w[13] + w[14]], "latin-1")
        #: the client's address: ``127.0.0.1:50000``, ``[::1]:50000`` or ``unix:``
        self.remote_addr: str = str(mem[w[15] : w[15] + w[16]], "latin-1")
        #: the server's address of the connection
        self.local_addr: str = str(mem[w[17] : w[17] + w[18]], "latin-1")
        #: ``<connection id>:<request number>`` in hexadecimal
        self.id: str = str(mem[w[19] : w[19] + w[20]], "latin-1")
        self.connection_id: int = w[21]
        self.headers = Headers(raw_headers(w))
        self._eof = False
        self._buf = b""

    @property
    def http_version(self) -> str:
        """``"1.0"``, ``"1.1"`` or ``"2"``."""
        return self.version[5:]

    @property
    def client(self) -> tuple[str, int | None]:
        """The client's ``(host, port)``."""
        return split_host_port(self.remote_addr)

    @property
    def aborted(self) -> bool:
        """Whether the client went away (or the stream was reset, or the server stopped)."""
        x = self._x
        if x.completed:
            return x.aborted
        return bool(n.fast.kestrel_request_is_aborted(x.handle))

    def on_abort(self, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` once if the request is aborted (at once if it already was).
        It runs on a library I/O thread: keep it short and non-blocking."""
        rc = n.on_abort(self._x.live(), callback)
        n.check(rc, "on_abort")

    # -- body ---------------------------------------------------------------------------------

    def readinto(self, buffer: Any) -> int:
        """Reads body bytes into a writable buffer, waiting until some arrive; 0 at the end."""
        view = memoryview(buffer).cast("B")
        if self._buf:
            k = min(len(view), len(self._buf))
            view[:k] = self._buf[:k]
            self._buf = self._buf[k:]
            return k
        if self._eof or not len(view):
            return 0
        target = (c_char * len(view)).from_buffer(view)
        got = c_size_t(0)
        rc = n.lib.kestrel_request_read(self._x.live(), target, len(view), byref(got))
        if rc:
            raise n.error(rc, "reading the request body")
        if got.value == 0:
            self._eof = True
        return got.value

    def read(self, size: int = -1) -> bytes:
        """Reads up to ``size`` bytes (all of the rest when negative); ``b""`` at the end."""
        if size is None or size < 0:
            return b"".join(self)
        if size == 0:
            return b""
        if self._buf:
            out, self._buf = self._buf[:size], self._buf[size:]
            return out
        buf = bytearray(size)
        k = self.readinto(buf)
        del buf[k:]
        return bytes(buf)

    def __iter__(self) -> Iterator[bytes]:
        """Yields the body in chunks as they arrive."""
        while True:
            chunk = self.read(_READ_CHUNK)
            if not chunk:
                return
            yield chunk

    def body(self) -> bytes:
        """The whole (rest of the) body."""
        return self.read()

    def text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The whole body decoded."""
        return self.read().decode(encoding, errors)

    def json(self) -> Any:
        """The whole body parsed as JSON."""
        return _json.loads(self.read())

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version} from {self.remote_addr}>"


def _as_bytes(data: Body) -> bytes | bytearray | memoryview:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview):
        return data if data.contiguous else data.tobytes()
    raise TypeError(f"a body must be str or bytes-like, not {type(data).__name__}")


def _latin1(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return str(value).encode("latin-1")


def _ptr_len(data: bytes | bytearray | memoryview) -> tuple[Any, int]:
    """ctypes arguments for a byte buffer: bytes pass as-is, other buffers through a view."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data).cast("B")
    if view.readonly:
        data = view.tobytes()
        return data, len(data)
    return (c_char * len(view)).from_buffer(view), len(view)


class Response:
    """The response to a :class:`Request`. Set the status and headers, then complete it once:
    :meth:`send` (a whole body), :meth:`write` chunks then :meth:`end`, :meth:`send_file`, or
    :meth:`fail`. ``str`` bodies are encoded as UTF-8 (and get ``text/plain; charset=utf-8``
    unless a Content-Type was set)."""

    __slots__ = ("_x", "_status")

    def __init__(self, exchange: _Exchange) -> None:
        self._x = exchange
        self._status = 200

    # -- head -----------------------------------------------------------------------------------

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, code: int) -> None:
        n.check(n.fast.kestrel_response_set_status(self._x.live(), int(code)), "status")
        self._status = int(code)

    def add_header(self, name: str | bytes, value: str | bytes | int) -> None:
        """Adds a header (repeats allowed). ``str`` must be ISO-8859-1 encodable."""
        k, v = _latin1(name), _latin1(value)
        n.check(n.fast.kestrel_response_add_header(self._x.live(), k, len(k), v, len(v)), f"header {name!r}")
        self._x.header_names.add(k.decode("latin-1").lower())

    def set_header(self, name: str | bytes, value: str | bytes | int) -> None:
        """Sets a header, replacing earlier values."""
        k, v = _latin1(name), _latin1(value)
        n.check(n.fast.kestrel_response_set_header(self._x.live(), k, len(k), v, len(v)), f"header {name!r}")
        self._x.header_names.add(k.decode("latin-1").lower())

    def remove_header(self, name: str | bytes) -> None:
        """Removes every value of a header."""
        k = _latin1(name)
        n.check(n.fast.kestrel_response_remove_header(self._x.live(), k, len(k)), f"header {name!r}")
        self._x.header_names.discard(k.decode("latin-1").lower())

    def add_trailer(self, name: str | bytes, value: str | bytes) -> None:
        """Adds a trailer, sent after the body (HTTP/2; HTTP/1.1 clients that sent
        ``TE: trailers``, for trailers added before the response started)."""
        k, v = _latin1(name), _latin1(value)
        n.check(n.fast.kestrel_response_add_trailer(self._x.live(), k, len(k), v, len(v)), f"trailer {name!r}")

    def update(
        self,
        status: int | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Sets the status, adds headers and sets the Content-Type, in one call."""
        if status is not None:
            self.status = status
        if headers is not None:
            for k, v in headers.items() if isinstance(headers, Mapping) else headers:
                self.add_header(k, v)
        if content_type is not None:
            self.set_header("content-type", content_type)

    # -- state ----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the head was sent (the status and headers can no longer change)."""
        return self._x.started

    @property
    def completed(self) -> bool:
        """Whether the response was completed (sent, ended, failed)."""
        return self._x.completed

    def detach(self) -> Response:
        """Lets the handler return without completing the response; complete it later, from any
        thread, with :meth:`send`, :meth:`end` or :meth:`fail`. Until then the request stays in
        flight (a stop aborts it at its timeout)."""
        self._x.detached = True
        return self

    def _text_type(self, body: Body) -> None:
        if isinstance(body, str) and "content-type" not in self._x.header_names:
            self.set_header("content-type", "text/plain; charset=utf-8")

    # -- completing -------------------------------------------------------------------------

    def send(
        self,
        body: Body = b"",
        *,
        status: int | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Completes the response with ``body`` as the whole body (with Content-Length)."""
        x = self._x
        if status is not None or headers is not None or content_type is not None:
            self.update(status, headers, content_type)
        self._text_type(body)
        data, size = _ptr_len(_as_bytes(body))
        x.complete(n.fast.kestrel_response_send(x.live(), data, size), "send")

    def write(self, data: Body) -> None:
        """Writes body bytes, starting the response if needed (chunked on HTTP/1.1 unless a
        Content-Length was set). Waits, with the GIL released, while the response buffer is
        full. Raises :class:`kestrel.ClientDisconnected` once the client went away."""
        x = self._x
        handle = x.live()
        if not x.started:
            self._text_type(data)
            x.started = True
        buf, size = _ptr_len(_as_bytes(data))
        if size:
            rc = n.lib.kestrel_response_write(handle, buf, size)
            if rc:
                if rc == n.CANCELLED:
                    x.aborted = True
                raise n.error(rc, "write")

    def flush(self) -> None:
        """Starts the response if needed and waits until everything written so far was handed
        to the connection."""
        x = self._x
        x.started = True
        n.check(n.lib.kestrel_response_flush(x.live()), "flush")

    def end(self) -> None:
        """Completes the response: ends a written body (trailers follow), or sends the head
        with an empty body."""
        x = self._x
        x.complete(n.fast.kestrel_response_end(x.live()), "end")

    def fail(self) -> None:
        """Completes the request as failed: a 500 when nothing was sent yet, otherwise the
        response is cut off so the client cannot take it for a whole one."""
        x = self._x
        if not x.completed:
            rc = n.fast.kestrel_response_fail(x.handle)
            # Failing a request the client already left is what was asked: not an error.
            x.complete(0 if rc == n.CANCELLED else rc, "fail")
            x.aborted = x.aborted or rc == n.CANCELLED

    def send_file(self, file: str | os.PathLike[str] | Any, offset: int = 0, length: int | None = None) -> None:
        """Completes the response with a file (a path, or an open file object with a
        ``fileno()``), from ``offset``, ``length`` bytes (the rest by default), with
        Content-Length. Raises ``FileNotFoundError``/``OSError`` for a missing or
        irregular file, leaving the response open."""
        x = self._x
        handle = x.live()
        count = n.TO_END if length is None else length
        if hasattr(file, "fileno"):
            rc = n.lib.kestrel_response_send_fd(handle, file.fileno(), offset, count)
        else:
            path = os.fsencode(file)
            rc = n.lib.kestrel_response_send_file(handle, path, len(path), offset, count)
        if rc == n.IO_ERROR:
            err = n.error(rc)
            if isinstance(file, (str, bytes, os.PathLike)) and not os.path.exists(file):
                raise FileNotFoundError(2, str(err), os.fsdecode(file))
            raise OSError(str(err))
        if rc == n.INVALID_ARGUMENT:
            raise ValueError(str(n.error(rc)))
        x.complete(rc, "send_file")

    def __repr__(self) -> str:
        state = "completed" if self._x.completed else "started" if self._x.started else "open"
        return f"<Response {self._status} {state}>"


Handler = Callable[[Request, Response], Any]


class Server(Engine):
    """An HTTP server calling ``handler(request, response)`` for each request.

    ``handler`` completes ``response`` itself, or returns the body (``str``, bytes, or an
    iterable of them, written as they come) or ``None`` (an empty body, or the end of what it
    wrote). An exception becomes a 500 (or a cut-off response if it had started) and its
    traceback is logged on the ``kestrel.application`` logger.

    ``urls`` are Kestrel-style URLs (``http://127.0.0.1:8000``, ``http://[::1]:0``,
    ``http://+:80``, ``http://unix:/run/app.sock``), a ``;``-separated string or a list.
    ``threads`` Python threads run handlers (blocking is fine: the GIL is released while the
    library waits); ``io_threads`` sets the library's network threads. See :class:`Engine`
    for the other options.

    Use it as a context manager (``with Server(h, urls=...) as s:``) or call
    :meth:`serve_forever`, which stops gracefully on Ctrl-C and SIGTERM.
    """

    def __init__(self, handler: Handler, urls: str | Iterable[str] = "http://localhost:5000", **options: Any) -> None:
        options.setdefault("threads", 4)
        super().__init__(urls, **options)
        self.handler = handler
        self._head = _HeadBuffers()

    def serve_request(self, handle: int) -> None:
        x = _Exchange(handle)
        res = Response(x)
        try:
            req = Request(x, parse_head(handle, self._head.get()))
            result = self.handler(req, res)
            if not x.completed and not x.detached:
                _finish(res, result)
        except BaseException as e:  # noqa: BLE001
            _handler_failed(x, res, e)
        finally:
            if not x.completed and not x.detached:
                res.fail()


def _finish(res: Response, result: Any) -> None:
    """Completes a response from what the handler returned."""
    if result is None:
        res.end()
    elif isinstance(result, (str, bytes, bytearray, memoryview)):
        if res.started:
            res.write(result)
            res.end()
        else:
            res.send(result)
    else:
        try:
            for chunk in result:
                res.write(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        res.end()


def _handler_failed(x: _Exchange, res: Response, e: BaseException) -> None:
    if isinstance(e, n.ClientDisconnected) or x.aborted:
        app_log.debug("request aborted: %s", e)
        res.fail()
        return
    app_log.error("exception in handler", exc_info=e)
    if x.completed:
        return
    if not x.started:
        try:
            handle = x.handle
            for name in list(x.header_names):
                k = name.encode("latin-1")
                n.fast.kestrel_response_remove_header(handle, k, len(k))
            body = b"Internal Server Error"
            n.fast.kestrel_response_set_status(handle, 500)
            n.fast.kestrel_response_set_header(handle, b"content-type", 12, b"text/plain; charset=utf-8", 25)
            x.complete(n.fast.kestrel_response_send(handle, body, len(body)), "send")
            return
        except n.KestrelError:
            pass
    res.fail()


class _HeadBuffers:
    """One ``kestrel_request_head`` buffer per thread."""

    def __init__(self) -> None:
        import threading

        self._local = threading.local()

    def get(self) -> Any:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = n.new_head_buffer()
        return buf
