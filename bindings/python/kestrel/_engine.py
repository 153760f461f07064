"""The server engine shared by the core API and the WSGI and ASGI adapters.

An engine owns one native ``kestrel_server`` and gets each request to Python, in one of two
ways (``dispatch``):

* ``"pull"`` (default): ``threads`` Python threads loop on ``kestrel_server_next_request``,
  which waits with the GIL released.
* ``"pool"``: the library's own handler threads call a ctypes callback. Each thread is attached
  to the interpreter once, by the library's thread hooks, instead of around every call.

Both hand the request handle to :meth:`Engine.serve_request` on the thread that took it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from ctypes import byref, c_size_t, c_void_p, create_string_buffer
from typing import Any, Iterable

from . import _native as n

log = logging.getLogger("kestrel")
app_log = logging.getLogger("kestrel.application")

_live: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # The library calls into Python from its threads: stop them before the interpreter goes.
    for engine in list(_live):
        try:
            engine.close(timeout=1.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _urls_text(urls: str | Iterable[str]) -> str:
    if isinstance(urls, str):
        return urls
    return ";".join(urls)


class Engine:
    """Owns a native server and the threads that take its requests. Subclasses implement
    :meth:`serve_request`."""

    #: Python handler threads (pull mode) or library handler threads (pool mode).
    threads: int

    def __init__(
        self,
        urls: str | Iterable[str] = "http://localhost:5000",
        *,
        threads: int = 1,
        io_threads: int | None = None,
        dispatch: str = "pull",
        protocols: str = "http1and2",
        server_header: bool = True,
        response_buffer_size: int | None = None,
        listen_fds: Iterable[int] = (),
        stop_timeout: float = 5.0,
        batch_scheduling: bool = True,
    ) -> None:
        if dispatch not in ("pull", "pool"):
            raise ValueError(f"dispatch must be 'pull' or 'pool', not {dispatch!r}")
        if protocols not in n.PROTOCOLS:
            raise ValueError(f"protocols must be one of {sorted(n.PROTOCOLS)}, not {protocols!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.urls = _urls_text(urls)
        self.threads = threads
        self.io_threads = io_threads
        self.dispatch = dispatch
        self.protocols = protocols
        self.server_header = server_header
        self.response_buffer_size = response_buffer_size
        self.listen_fds = tuple(listen_fds)
        self.stop_timeout = stop_timeout
        self.batch_scheduling = batch_scheduling
        self._server: int | None = None
        self._workers: list[threading.Thread] = []
        self._addresses: list[str] = []
        #: set once the native server stopped
        self._stopped = threading.Event()
        #: set by stop() (from any thread) and by signals: ends serve_forever
        self._stop_requested = threading.Event()
        self._closed = False
        self._state_lock = threading.Lock()
        self._stop_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def _build_options(self) -> int:
        out = c_void_p()
        n.check(n.lib.kestrel_options_new(byref(out)), "kestrel_options_new")
        options = out.value
        try:
            text = self.urls.encode()
            if text:
                n.check(
                    n.lib.kestrel_options_add_urls(options, text, len(text), n.PROTOCOLS[self.protocols]),
                    f"invalid urls {self.urls!r}",
                )
            for fd in self.listen_fds:
                n.check(n.lib.kestrel_options_add_listen_fd(options, fd, n.PROTOCOLS[self.protocols]), "listen fd")
            if self.io_threads is not None:
                n.check(n.lib.kestrel_options_set_io_threads(options, self.io_threads), "io_threads")
            n.check(n.lib.kestrel_options_set_server_header(options, self.server_header), "server_header")
            if self.response_buffer_size is not None:
                n.check(
                    n.lib.kestrel_options_set_response_buffer_size(options, self.response_buffer_size),
                    "response_buffer_size",
                )
            level = logging.getLogger("kestrel").getEffectiveLevel()
            n.set_log_callback(options, n.kestrel_log_level(level))
            if self.dispatch == "pull":
                n.check(n.lib.kestrel_options_set_dispatch(options, n.DISPATCH_PULL), "dispatch")
            else:
                n.check(n.lib.kestrel_options_set_dispatch(options, n.DISPATCH_POOL), "dispatch")
                n.check(n.lib.kestrel_options_set_pool_threads(options, self.threads), "threads")
                # One registration serves the handler and the hooks; each releases its own token.
                n.set_handler(options, n.register(self))
                n.set_thread_hooks(options, n.register(_PoolHooks(self)))
        except BaseException:
            n.lib.kestrel_options_free(options)
            raise
        return options

    def start(self) -> Engine:
        """Binds every endpoint and starts serving. Raises :class:`kestrel.BindError` if an
        address cannot be bound (nothing stays bound then)."""
        with self._state_lock:
            if self._closed:
                raise RuntimeError("the server was closed")
            if self._server is not None:
                raise RuntimeError("the server is already started")
            self.before_start()
            try:
                options = self._build_options()
                out = c_void_p()
                # kestrel_server_new consumes the options on every path.
                n.check(n.lib.kestrel_server_new(options, byref(out)), "kestrel_server_new")
                server = out.value
                rc = n.lib.kestrel_server_start(server)
                if rc:
                    err = n.error(rc, "start")
                    n.lib.kestrel_server_free(server)
                    raise err
            except BaseException:
                self.after_stop()
                raise
            self._server = server
            self._addresses = self._read_addresses()
            _live.add(self)
            if self.dispatch == "pull":
                for i in range(self.threads):
                    t = threading.Thread(target=self._pull_loop, name=f"kestrel-worker-{i}", daemon=True)
                    t.start()
                    self._workers.append(t)
            self.after_start()
        return self

    def _read_addresses(self) -> list[str]:
        count = n.fast.kestrel_server_address_count(self._server)
        out = []
        buf = create_string_buffer(512)
        written = c_size_t()
        for i in range(count):
            rc = n.fast.kestrel_server_address(self._server, i, buf, len(buf), byref(written))
            if rc == n.BUFFER_TOO_SMALL:
                buf = create_string_buffer(written.value + 1)
                rc = n.fast.kestrel_server_address(self._server, i, buf, len(buf), byref(written))
            n.check(rc, "address")
            out.append(buf.value.decode())
        return out

    @property
    def addresses(self) -> list[str]:
        """The bound addresses as URLs with their real ports (``http://127.0.0.1:41234``)."""
        return list(self._addresses)

    @property
    def url(self) -> str:
        """The first bound address (handy with port 0)."""
        if not self._addresses:
            raise RuntimeError("the server is not started")
        return self._addresses[0]

    @property
    def running(self) -> bool:
        return self._server is not None and not self._stopped.is_set()

    def stop(self, timeout: float | None = None) -> int:
        """Stops gracefully: stops accepting, lets in-flight requests finish for up to
        ``timeout`` seconds (default: ``stop_timeout``), then aborts the rest. Returns the
        number of requests aborted. Callable from any thread, also from a handler (then the
        stop is only scheduled)."""
        server = self._server
        if server is None or self._stopped.is_set():
            return 0
        timeout = self.stop_timeout if timeout is None else timeout
        if self.serves_requests_on_this_thread():
            # Waiting here for in-flight requests would wait for this very thread.
            threading.Thread(target=self.stop, args=(timeout,), name="kestrel-stop", daemon=True).start()
            return 0
        self._stop_requested.set()
        with self._stop_lock:
            if self._stopped.is_set():
                return 0
            self.before_stop()
            aborted = c_size_t(0)
            n.check(n.lib.kestrel_server_stop(server, max(0, int(timeout * 1000)), byref(aborted)), "stop")
            self._stopped.set()
        return aborted.value

    def serves_requests_on_this_thread(self) -> bool:
        """Whether the calling thread is one that serves this server's requests."""
        return _on_library_thread() or threading.current_thread() in self._workers

    def close(self, timeout: float | None = None) -> None:
        """Stops (gracefully, see :meth:`stop`), waits for the handler threads and releases the
        native server. Idempotent."""
        if self.serves_requests_on_this_thread():
            raise RuntimeError("close() would wait for this thread: call stop() from a handler")
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        server = self._server
        if server is None:
            return
        try:
            self.stop(timeout)
        finally:
            self._stopped.set()
            grace = (self.stop_timeout if timeout is None else timeout) + 5.0
            stuck = []
            for t in self._workers:
                t.join(grace)
                if t.is_alive():
                    stuck.append(t.name)
            self.after_stop()
            _live.discard(self)
            if stuck:
                # A handler never returned: freeing the server under it would be unsafe.
                log.warning("handler threads still busy after stop, native server not freed: %s", stuck)
            else:
                self._server = None
                n.lib.kestrel_server_free(server)

    def serve_forever(self, *, handle_signals: bool = True) -> None:
        """Starts (if needed) and serves until :meth:`stop` or :meth:`close` is called, or,
        in the main thread, until SIGINT (Ctrl-C) or SIGTERM; then stops gracefully and
        closes."""
        if self._server is None:
            self.start()
        previous: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: Any) -> None:
                if self._stop_requested.is_set():
                    return
                log.info("%s received, stopping (up to %.1f s)", signal.Signals(signum).name, self.stop_timeout)
                self._stop_requested.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            while not self._stop_requested.wait(1.0):
                pass
        except KeyboardInterrupt:
            log.info("interrupted, stopping")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()

    def __enter__(self) -> Engine:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hooks for subclasses ---------------------------------------------------------------

    def before_start(self) -> None:
        """Runs before binding (ASGI: the event loop and lifespan startup)."""

    def after_start(self) -> None:
        """Runs once serving."""

    def before_stop(self) -> None:
        """Runs when a stop begins."""

    def after_stop(self) -> None:
        """Runs once every handler thread has finished (ASGI: lifespan shutdown)."""

    def serve_request(self, handle: int) -> None:
        """Serves one request. Must complete it (now, or later from any thread)."""
        raise NotImplementedError

    # -- getting requests -------------------------------------------------------------------

    def prepare_thread(self) -> None:
        """Runs first on every thread that serves requests (see ``batch_scheduling``)."""
        if self.batch_scheduling:
            set_batch_scheduling()

    def _pull_loop(self) -> None:
        self.prepare_thread()
        next_request = n.lib.kestrel_server_next_request  # waits with the GIL released
        out = c_void_p()
        ref = byref(out)
        server = self._server
        serve = self._serve_safely
        while True:
            rc = next_request(server, -1, ref)
            if rc:
                if rc != n.STOPPED:
                    log.error("next_request failed: %s", n.error(rc))
                return
            serve(out.value)

    def _serve_safely(self, handle: int) -> None:
        try:
            self.serve_request(handle)
        except BaseException:  # noqa: BLE001 - a worker thread must survive
            app_log.exception("unhandled error serving a request")
            n.fast.kestrel_response_fail(handle)

    # Pool mode: called by the native handler trampoline on a library thread.
    def handle_pool_request(self, handle: int) -> int:
        self._serve_safely(handle)
        return n.OK


class _PoolHooks:
    """Thread hooks for pool mode: attach each library handler thread to the interpreter once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def on_thread_start(self) -> None:
        _library_thread.flag = True
        n.attach_thread()
        self.engine.prepare_thread()

    def on_thread_stop(self) -> None:
        n.detach_thread()


_library_thread = threading.local()


def set_batch_scheduling() -> bool:
    """Puts the calling thread in Linux's ``SCHED_BATCH`` class: when the library's network
    thread hands it a request, it does not preempt that thread but runs when the network
    thread next waits, by which time more requests are usually queued. Handing requests over
    in batches saves most thread switches when both share a core (about 1.5x the throughput of
    a hello-world on one core). Returns False where unsupported."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # type: ignore[attr-defined]
        return True
    except (AttributeError, OSError):
        return False


def _on_library_thread() -> bool:
    return getattr(_library_thread, "flag", False)
