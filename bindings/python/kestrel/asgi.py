"""Serving an ASGI 3 application (``http`` and ``lifespan`` scopes).

::

    from kestrel.asgi import ASGIServer
    ASGIServer(app, urls="http://127.0.0.1:8000").serve_forever()

The application runs on an asyncio event loop (uvloop when installed and ``loop="auto"``) in a
thread of its own. Requests reach the loop from a pull thread that waits in the library with
the GIL released; under load the loop also takes queued requests itself without waiting, so
most requests cost no thread switch. Request bodies are read asynchronously (the library calls
back when bytes arrive); streamed response bodies wait for buffer room asynchronously, then
are written on a small writer pool, so the loop never blocks on a slow client.

Supported: ``http.request`` / ``http.disconnect`` receive events, ``http.response.start`` /
``http.response.body`` (with ``more_body``) / ``http.response.trailers`` send events, the
``http.response.pathsend`` extension (files sent by the library), HTTP/1.1 and HTTP/2
(``http_version`` ``"2"``), lifespan startup/shutdown with ``state``. WebSocket upgrades are
answered ``501 Not Implemented`` for now.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
from ctypes import byref, c_char, c_void_p
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import unquote

from . import _native as n
from ._engine import Engine
from ._http import split_host_port
from ._native import MEMORY, ClientDisconnected

__all__ = ["ASGIServer", "serve"]

log = logging.getLogger("kestrel")
app_log = logging.getLogger("kestrel.application")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_READ_SIZE = 64 * 1024
_ERROR_BODY = b"Internal Server Error"
#: the cache behind _native.static_bytes, read directly on the hot path
_STATIC_NAMES = n._static

#: header names that need a look in the scope builder
_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"upgrade"))
_EXTENSIONS = {"http.response.trailers": {}, "http.response.pathsend": {}}
#: scope["asgi"], shared by every scope (servers commonly share it; apps only read it)
_ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """A new event loop: ``"uvloop"``, ``"asyncio"``, or ``"auto"`` (uvloop if installed)."""
    if kind not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"loop must be 'auto', 'asyncio' or 'uvloop', not {kind!r}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _Lifespan:
    """Runs the application's lifespan scope: startup before serving, shutdown after."""

    def __init__(self, app: ASGIApp, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failed: str | None = None
        self.unsupported = False
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failed is not None:
            raise RuntimeError(f"ASGI lifespan startup failed: {self.failed}")

    async def shutdown(self) -> None:
        if self.unsupported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()
        if self.failed is not None:
            log.error("ASGI lifespan shutdown failed: %s", self.failed)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as e:  # noqa: BLE001
            if self.started.is_set() or self.mode == "on":
                self.failed = self.failed or repr(e)
                log.error("exception in ASGI lifespan", exc_info=e)
            else:
                self.unsupported = True
                log.info("ASGI 'lifespan' protocol appears unsupported (%r); serving without it", e)
        finally:
            self.started.set()
            self.stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failed = message.get("message", "") or "lifespan.startup.failed"
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self.failed = message.get("message", "") or "lifespan.shutdown.failed"
            self.stopped.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")


def _encode(value: bytes | str) -> bytes:
    return value if type(value) is bytes else value.encode("latin-1") if isinstance(value, str) else bytes(value)


# _HTTP.state
_INIT, _STARTED, _STREAMING, _DONE = range(4)


class _HTTP:
    """One HTTP request served to the application: its ``receive`` and ``send``."""

    __slots__ = (
        "server",
        "handle",
        "scope",
        "state",
        "status",
        "headers",
        "trailers",
        "body_left",
        "body_done",
        "waiters",
        "reading",
        "writing",
        "aborted",
        "task",
    )

    def __init__(self, server: ASGIServer, handle: c_void_p, scope: Scope, body_left: int) -> None:
        self.server = server
        #: the request handle, valid until the response is completed (state _DONE)
        self.handle = handle
        self.scope = scope
        self.state = _INIT
        #: from http.response.start, until the head is handed to the library
        self.status = 200
        self.headers: Any = ()
        self.trailers = False
        #: request body bytes still expected: -1 unknown, 0 none
        self.body_left = body_left
        #: set once receive() returned the last http.request event
        self.body_done = False
        #: receive() calls waiting for http.disconnect; None until the abort hook is set
        self.waiters: list[asyncio.Future[None]] | None = None
        #: a body read the library has not called back yet (resolved only by the callback)
        self.reading: asyncio.Future[Any] | None = None
        #: a body write running on a writer thread
        self.writing: concurrent.futures.Future[int] | None = None
        self.aborted = False
        self.task: asyncio.Task[None] | None = None

    # -- receive ----------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.body_done:
            if self.body_left == 0:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            chunk = await self._read()
            if chunk:
                if self.body_left > 0:
                    self.body_left = max(0, self.body_left - len(chunk))
                    more = self.body_left > 0
                else:
                    more = True
                if not more:
                    self.body_done = True
                return {"type": "http.request", "body": chunk, "more_body": more}
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._disconnected()
        return {"type": "http.disconnect"}

    def _read(self) -> asyncio.Future[bytes]:
        loop = self.server.loop
        fut: asyncio.Future[bytes] = loop.create_future()
        if self.state == _DONE:
            fut.set_exception(ClientDisconnected("the response was completed", n.CANCELLED))
            return fut
        size = _READ_SIZE if self.body_left < 0 else max(1, min(self.body_left, _READ_SIZE))
        buf = (c_char * size)()

        def done(rc: int, count: int, buf: Any = buf) -> None:  # on an I/O thread
            loop.call_soon_threadsafe(self._read_done, fut, rc, buf[:count] if rc == 0 else b"")

        rc = n.read_async(self.handle, buf, size, done)
        if rc:
            fut.set_exception(n.error(rc, "reading the request body"))
            return fut
        self.reading = fut
        # The app may cancel its wait; the read itself goes on until the library calls back,
        # and the request must not be completed before that (see _settle).
        return asyncio.shield(fut)

    def _read_done(self, fut: asyncio.Future[bytes], rc: int, data: bytes) -> None:
        self.reading = None
        if rc:
            self.aborted = self.aborted or rc == n.CANCELLED
            fut.set_exception(ClientDisconnected("the client went away while sending the body", rc))
            fut.exception()  # the app may have stopped waiting (shield): not "never retrieved"
        else:
            fut.set_result(data)

    def _disconnected(self) -> asyncio.Future[None]:
        """A new future resolved when the client goes away or the response is complete. Each
        caller gets its own: cancelling one wait (Starlette polls with a cancelled scope) must
        not cancel the others."""
        loop = self.server.loop
        fut: asyncio.Future[None] = loop.create_future()
        if self.state == _DONE or self.aborted:
            fut.set_result(None)
            return fut
        if self.waiters is None:
            self.waiters = []

            def aborted() -> None:  # on an I/O thread, or here at once
                loop.call_soon_threadsafe(self._gone)

            n.on_abort(self.handle, aborted)
        self.waiters.append(fut)
        return fut

    def _gone(self, aborted: bool = True) -> None:
        """On the loop: the client left (or the response is complete); wakes receive()."""
        if aborted and self.state != _DONE:
            self.aborted = True
        waiters, self.waiters = self.waiters, []
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    # -- send -------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        state = self.state
        if kind == "http.response.body":
            if state == _STARTED and not self.trailers and not message.get("more_body", False):
                # The common case, kept to one native call for the body: the whole response.
                body = message.get("body", b"")
                if self.reading is not None or self.writing is not None:
                    await self._settle()
                self._send_head()
                self.state = _DONE
                size = len(body)
                if type(body) is not bytes:
                    body = bytes(body)
                rc = (n.raw.kestrel_response_send if size <= n.RAW_MAX else n.fast.kestrel_response_send)(
                    self.handle, body, size
                )
                if self.waiters:
                    self._gone(False)
                if rc:
                    self._raise(rc)
                return
            await self._body(message)
        elif kind == "http.response.start":
            if state != _INIT:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = message.get("headers", ())
            self.trailers = bool(message.get("trailers", False))
            self.state = _STARTED
        elif kind == "http.response.trailers":
            await self._trailers(message)
        elif kind == "http.response.pathsend":
            await self._pathsend(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an http scope")

    def _raise(self, rc: int) -> None:
        if rc == n.CANCELLED:
            self.aborted = True
        raise n.error(rc, "sending the response")

    def _check_open(self, what: str) -> None:
        if self.state == _DONE:
            if self.aborted:
                raise ClientDisconnected("the client went away", n.CANCELLED)
            raise RuntimeError(f"{what} after the response was completed")
        if self.state == _INIT:
            raise RuntimeError(f"{what} before http.response.start")

    async def _body(self, message: Message) -> None:
        self._check_open("http.response.body")
        body = message.get("body", b"")
        if self.state == _STARTED:
            self._send_head()
            self.state = _STREAMING
        if body:
            await self._write(body)
        if not message.get("more_body", False) and not self.trailers:
            await self._complete(n.raw.kestrel_response_end)

    async def _trailers(self, message: Message) -> None:
        self._check_open("http.response.trailers")
        if not self.trailers:
            raise RuntimeError("http.response.trailers without trailers=True in http.response.start")
        if self.state == _STARTED:
            self._send_head()
            self.state = _STREAMING
        add = n.fast.kestrel_response_add_trailer
        for k, v in message.get("headers", ()):
            k, v = _encode(k), _encode(v)
            n.check(add(self.handle, k, len(k), v, len(v)), "trailer")
        if not message.get("more_trailers", False):
            await self._complete(n.raw.kestrel_response_end)

    async def _pathsend(self, message: Message) -> None:
        if self.state != _STARTED:
            raise RuntimeError("http.response.pathsend must follow http.response.start directly")
        self._send_head()
        path = os.fsencode(message["path"])
        rc = n.lib.kestrel_response_send_file(self.handle, path, len(path), 0, n.TO_END)
        if rc in (n.IO_ERROR, n.INVALID_ARGUMENT):
            raise OSError(str(n.error(rc, f"sending {message['path']!r}")))
        await self._complete(None, rc=rc)

    def _send_head(self) -> None:
        handle = self.handle
        if self.status != 200:
            rc = n.raw.kestrel_response_set_status(handle, self.status)
            if rc:
                raise n.error(rc, f"status {self.status}")
        add = n.raw.kestrel_response_add_header
        for k, v in self.headers:
            if type(k) is not bytes or type(v) is not bytes:
                k, v = _encode(k), _encode(v)
            rc = add(handle, k, len(k), v, len(v))
            if rc:
                raise n.error(rc, f"header {k!r}")

    async def _write(self, data: bytes) -> None:
        # Wait for buffer room without holding a thread, then write on a writer thread: the
        # library's write may still wait for the chunk to fit.
        if self.reading is not None:
            await self._settle()
        loop = self.server.loop
        room: asyncio.Future[int] = loop.create_future()

        def writable(rc: int) -> None:  # here at once, or on an I/O thread
            if threading.get_ident() == self.server.loop_thread_id:
                room.set_result(rc)
            else:
                loop.call_soon_threadsafe(_resolve, room, rc)

        rc = n.on_writable(self.handle, writable)
        if rc == 0:
            rc = await room
        if rc == 0:
            data = bytes(data) if type(data) is not bytes else data
            self.writing = self.server.writer.submit(_write_blocking, self.handle, data)
            error = await asyncio.wrap_future(self.writing, loop=loop)
            if error is not None:
                if error.code == n.CANCELLED:
                    self.aborted = True
                raise error
            return
        if rc:
            self._raise(rc)

    async def _settle(self) -> None:
        """Waits for a body read or write still in flight: completing the response frees the
        request under it."""
        while True:
            pending: list[asyncio.Future[Any]] = []
            if self.reading is not None:
                pending.append(self.reading)
            if self.writing is not None and not self.writing.done():
                pending.append(asyncio.wrap_future(self.writing, loop=self.server.loop))
            if not pending:
                return
            await asyncio.wait(pending)

    async def _complete(self, call: Any, *args: Any, rc: int = 0) -> None:
        if self.reading is not None or self.writing is not None:
            await self._settle()
        self.state = _DONE
        if call is not None:
            rc = call(self.handle, *args)
        if self.waiters:
            self._gone(False)
        if rc:
            self._raise(rc)

    # -- the end of the call -------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
            if self.state != _DONE:
                if self.state == _INIT:
                    app_log.error("ASGI application returned without starting a response")
                    await self._error_page()
                else:
                    app_log.error("ASGI application returned without completing the response")
                    await self._cut_off()
        except BaseException as e:  # noqa: BLE001
            await self._failed(e)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.server._inflight.discard(self)

    async def _failed(self, e: BaseException) -> None:
        if self.aborted or isinstance(e, ClientDisconnected):
            app_log.debug("client went away: %r", e)
        elif isinstance(e, asyncio.CancelledError):
            app_log.warning("request %s cancelled at shutdown", self.scope.get("path"))
        else:
            app_log.error("exception in ASGI application", exc_info=e)
        if self.state == _DONE:
            return
        if self.state == _STREAMING:
            await self._cut_off()
        else:
            await self._error_page()

    async def _cut_off(self) -> None:
        """Fails a started response (the client must not take it for a whole one)."""
        try:
            await self._complete(n.raw.kestrel_response_fail)
        except n.KestrelError:
            pass  # the client is gone already

    async def _error_page(self) -> None:
        handle = self.handle
        for k, _ in self.headers:
            k = _encode(k)
            n.raw.kestrel_response_remove_header(handle, k, len(k))
        n.raw.kestrel_response_set_status(handle, 500)
        n.raw.kestrel_response_set_header(handle, b"content-type", 12, b"text/plain; charset=utf-8", 25)
        try:
            await self._complete(n.raw.kestrel_response_send, _ERROR_BODY, len(_ERROR_BODY))
        except n.KestrelError:
            pass


def _write_blocking(handle: c_void_p, data: bytes) -> n.KestrelError | None:
    """On a writer thread: writes body bytes, waiting for buffer room; returns the error (made
    here: the library's message is per thread)."""
    rc = n.lib.kestrel_response_write(handle, data, len(data))
    return n.error(rc, "write") if rc else None


def _resolve(fut: asyncio.Future[Any], value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


class ASGIServer(Engine):
    """Serves an ASGI 3 application.

    ``lifespan``: ``"auto"`` (run the lifespan scope; an application that raises at once is
    served without it), ``"on"`` (a failure stops the start) or ``"off"``. ``root_path``: the
    URL prefix the application is mounted at behind a proxy. ``loop``: ``"auto"``, ``"asyncio"``
    or ``"uvloop"``. ``write_threads``: the pool that writes streamed bodies. See
    :class:`kestrel.Server` for ``urls``, ``io_threads`` and the other options; ``threads``
    (default 1) is the number of threads taking requests from the library for the loop.
    """

    def __init__(
        self,
        app: ASGIApp,
        urls: Any = "http://localhost:5000",
        *,
        lifespan: str = "auto",
        root_path: str = "",
        loop: str = "auto",
        write_threads: int = 8,
        **options: Any,
    ) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
        options.setdefault("threads", 1)
        super().__init__(urls, **options)
        self.app = app
        self.lifespan_mode = lifespan
        self.root_path = root_path.rstrip("/")
        self.loop_kind = loop
        self.write_threads = write_threads
        #: the lifespan state, shallow-copied into each request's scope
        self.state: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.loop_thread_id = 0
        self.writer: concurrent.futures.ThreadPoolExecutor = None  # type: ignore[assignment]
        self._loop_thread: threading.Thread | None = None
        self._lifespan: _Lifespan | None = None
        self._incoming: collections.deque[int] = collections.deque()
        self._wakeup = False
        self._inflight: set[_HTTP] = set()
        self._idle: asyncio.Event | None = None
        #: connection id -> (server, client, scheme)
        self._connections: dict[int, tuple[Any, Any, str]] = {}
        self._headbuf = n.new_head_buffer()  # used on the loop thread only
        #: the native server as a ``c_void_p`` for raw calls on the loop, once started
        self._server_box: c_void_p | None = None
        self._create_task: Any = None
        self._websocket_warned = False

    # -- lifecycle ------------------------------------------------------------------------------

    def before_start(self) -> None:
        self.loop = new_event_loop(self.loop_kind)
        self._create_task = self.loop.create_task
        self.writer = concurrent.futures.ThreadPoolExecutor(self.write_threads, thread_name_prefix="kestrel-asgi-write")
        ready = threading.Event()
        self._loop_thread = threading.Thread(target=self._run_loop, args=(ready,), name="kestrel-asgi-loop", daemon=True)
        self._loop_thread.start()
        ready.wait()
        if self.lifespan_mode != "off":
            self._lifespan = _Lifespan(self.app, self.lifespan_mode, self.state)
            try:
                asyncio.run_coroutine_threadsafe(self._lifespan.startup(), self.loop).result()
            except BaseException:
                self._lifespan = None
                self.after_stop()
                raise

    def after_start(self) -> None:
        self._server_box = c_void_p(self._server)

    def serves_requests_on_this_thread(self) -> bool:
        return threading.get_ident() == self.loop_thread_id or super().serves_requests_on_this_thread()

    def _run_loop(self, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        self.prepare_thread()
        self.loop_thread_id = threading.get_ident()
        self._idle = asyncio.Event()
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def after_stop(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(self.stop_timeout + 10)
        except Exception:  # noqa: BLE001
            log.exception("ASGI shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(10)
        if self.writer is not None:
            self.writer.shutdown(wait=True)

    async def _shutdown(self) -> None:
        # The library stopped: requests still running get errors on their next call.
        self._drain()
        tasks = {x.task for x in self._inflight if x.task is not None}
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self._server_box = None  # the native server is about to be freed
        if self._lifespan is not None:
            lifespan, self._lifespan = self._lifespan, None
            try:
                await asyncio.wait_for(lifespan.shutdown(), self.stop_timeout)
            except asyncio.TimeoutError:
                log.error("ASGI lifespan shutdown timed out")

    # -- getting requests to the loop ---------------------------------------------------------

    def serve_request(self, handle: int) -> None:
        # On a pull thread: queue the request and wake the loop unless a wake-up is pending.
        self._incoming.append(handle)
        if not self._wakeup:
            self._wakeup = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: only at teardown
                self._incoming.remove(handle)
                n.fast.kestrel_response_fail(handle)

    def _drain(self) -> None:
        """On the loop: starts every queued request, then takes what the library has queued
        (timeout 0: no wait). While requests keep coming it runs again on the next loop
        iteration instead of being woken through the loop's self-pipe."""
        self._wakeup = False
        incoming = self._incoming
        start = self._start
        started = 0
        while incoming:
            start(c_void_p(incoming.popleft()))
            started += 1
        server = self._server_box
        if server is not None:
            poll = n.raw.kestrel_server_next_request
            while started < 256:
                handle = c_void_p()  # each request keeps its own box for the raw calls
                if poll(server, 0, byref(handle)):
                    break
                start(handle)
                started += 1
        if started and not self._wakeup:
            self._wakeup = True
            self.loop.call_soon(self._drain)

    def _start(self, handle: c_void_p) -> None:
        try:
            x = self._exchange(handle)
        except BaseException:  # noqa: BLE001
            app_log.exception("could not read a request")
            n.fast.kestrel_response_fail(handle)
            return
        if x is not None:
            x.task = self._create_task(x.run(self.app))
            self._inflight.add(x)

    def _connection(self, w: tuple[int, ...]) -> tuple[Any, Any, str]:
        """``(server, client, scheme)`` of a request's connection, cached by connection id."""
        mem = MEMORY
        local = str(mem[w[17] : w[17] + w[18]], "latin-1")
        remote = str(mem[w[15] : w[15] + w[16]], "latin-1")
        entry = (
            split_host_port(local),
            None if remote.startswith("unix:") else split_host_port(remote),
            str(mem[w[3] : w[3] + w[4]], "latin-1"),
        )
        if len(self._connections) >= 1024:
            self._connections.clear()  # ids are never reused: old entries are only garbage
        self._connections[w[21]] = entry
        return entry

    def _exchange(self, handle: c_void_p) -> _HTTP | None:
        """Reads the head of a request into an ASGI scope."""
        head = self._headbuf
        rc = n.raw.kestrel_request_get_head(handle, head)
        if rc:
            raise n.error(rc, "get_head")
        h = n.HOT_STRUCT.unpack(head)
        mem = MEMORY
        count = h[12]
        body_left = 0
        lo, hi = n.STATIC_LO, n.STATIC_HI
        if count:
            words = (n.HEADER_STRUCTS.get(count) or n.header_struct(count)).unpack_from(mem, h[11])
            headers = []
            append = headers.append
            static = _STATIC_NAMES
            for i in range(0, 4 * count, 4):
                p = words[i]
                if lo <= p < hi:  # a standard name: a constant of the library, cached
                    k = static.get((p << 16) | words[i + 1]) or n.static_bytes(p, words[i + 1])
                else:
                    k = mem[p : p + words[i + 1]].tobytes()
                append((k, mem[words[i + 2] : words[i + 2] + words[i + 3]].tobytes()))
            for k, v in headers:
                if k in _SPECIAL:
                    if k == b"content-length":
                        try:
                            body_left = int(v)
                        except ValueError:
                            body_left = -1
                    elif k == b"transfer-encoding":
                        body_left = -1
                    elif v.lower() == b"websocket":
                        self._reject_websocket(handle)
                        return None
        else:
            headers = []
        if h[7] == 8 and mem[h[6] + 7] == 0x31:  # b"HTTP/1.1", the usual case
            version = "1.1"
        else:
            version = mem[h[6] : h[6] + h[7]].tobytes().decode("latin-1")[5:]
            if version == "2":
                # HTTP/2 can carry a body without Content-Length; :authority stands for Host.
                if body_left == 0 and not any(k == b"content-length" for k, _ in headers):
                    body_left = -1
                if h[9] and not any(k == b"host" for k, _ in headers):
                    headers.append((b"host", mem[h[8] : h[8] + h[9]].tobytes()))
        raw_path = mem[h[2] : h[2] + h[3]].tobytes()
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        elif not path.isascii():
            path = raw_path.decode("utf-8", "replace")
        if self.root_path:
            path = self.root_path + path
            raw_path = self.root_path.encode() + raw_path
        server, client, scheme = self._connections.get(h[10]) or self._connection(n.HEAD_STRUCT.unpack(head))
        scope = {
            "type": "http",
            "asgi": _ASGI_VERSION,
            "http_version": version,
            "server": server,
            "client": client,
            "scheme": scheme,
            "method": n.static_str(h[0], h[1]),
            "root_path": self.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": mem[h[4] : h[4] + h[5]].tobytes() if h[5] else b"",
            "headers": headers,
            "extensions": _EXTENSIONS,
        }
        if self.state:
            scope["state"] = self.state.copy()
        return _HTTP(self, handle, scope, body_left)

    def _reject_websocket(self, handle: int) -> None:
        if not self._websocket_warned:
            self._websocket_warned = True
            log.warning("WebSocket upgrade requests are not supported yet: answered 501")
        body = b"WebSocket is not supported by this server yet"
        n.fast.kestrel_response_set_status(handle, 501)
        n.fast.kestrel_response_set_header(handle, b"content-type", 12, b"text/plain", 10)
        n.fast.kestrel_response_send(handle, body, len(body))


def serve(app: ASGIApp, urls: Any = "http://localhost:5000", **options: Any) -> None:
    """Serves ``app`` until Ctrl-C or SIGTERM (see :class:`ASGIServer` for the options)."""
    ASGIServer(app, urls, **options).serve_forever()
