"""The C API of libkestrel through ctypes: loading, prototypes, errors, callback trampolines.

Nothing here is public. Two views of the same library are used:

* ``lib`` (a ``ctypes.CDLL``) releases the GIL for the duration of each call. Every function
  that may wait (``next_request`` with a timeout, ``read``, ``write``, ``flush``, ``stop``,
  ``start``, ``free``...) goes through it, so other Python threads run meanwhile.
* ``fast`` (a ``ctypes.PyDLL``) keeps the GIL. Only functions that never wait for another thread
  go through it (reading the request head, setting the status and headers, ``send``, ``end``,
  ``fail``, ``next_request`` with a zero timeout). Skipping the GIL release/re-acquire saves a
  thread switch per call when several Python threads are busy, and is safe because none of
  these functions waits for a lock that a library thread may hold while it calls back into
  Python (the library runs callbacks only after dropping its locks).

Callbacks into Python are ctypes ``CFUNCTYPE`` trampolines created once, at import, and kept for
the life of the process; the Python objects they serve are found through an integer token passed
as the C ``userdata`` and kept in :data:`_registry` until the library calls ``userdata_free``
(exactly once), so nothing the library may still call can be garbage-collected.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import struct
import sys
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Callable

__all__ = ["lib", "fast", "library_path", "KestrelError"]

log = logging.getLogger("kestrel")

# ---------------------------------------------------------------------------------------------
# Result codes, protocols, dispatch modes, log levels (kestrel.h)
# ---------------------------------------------------------------------------------------------

OK = 0
PANIC = 1
NULL_ARGUMENT = 2
INVALID_ARGUMENT = 3
INVALID_URL = 4
INVALID_HEADER = 5
BIND_FAILED = 6
INVALID_STATE = 7
ALREADY_COMPLETED = 8
CANCELLED = 9
WOULD_BLOCK = 10
TIMEOUT = 11
STOPPED = 12
IO_ERROR = 13
BUFFER_TOO_SMALL = 14
NOT_FOUND = 15

PROTOCOLS = {"http1and2": 0, "http1": 1, "http2": 2}
DISPATCH_POOL = 0
DISPATCH_INLINE = 1
DISPATCH_PULL = 2

TO_END = 2**64 - 1

LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR = range(5)
#: kestrel log level -> Python logging level
LOG_LEVELS = {
    LOG_TRACE: 5,
    LOG_DEBUG: logging.DEBUG,
    LOG_INFO: logging.INFO,
    LOG_WARN: logging.WARNING,
    LOG_ERROR: logging.ERROR,
}


def kestrel_log_level(level: int) -> int:
    """The lowest kestrel level whose records a Python logger at ``level`` would emit."""
    for k in (LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR):
        if LOG_LEVELS[k] >= level:
            return k
    return LOG_ERROR


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class KestrelError(Exception):
    """A call into libkestrel failed. ``code`` is the ``kestrel_result``, ``name`` its name."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code

    @property
    def name(self) -> str:
        return result_name(self.code)


class ClientDisconnected(KestrelError, ConnectionError):
    """The request was aborted: the client went away, the stream was reset, or the server
    stopped before the response was complete (``KESTREL_CANCELLED``)."""


class InvalidArgument(KestrelError, ValueError):
    """An argument was out of range (a status outside 200..999, a zero buffer size...)."""


class InvalidHeader(KestrelError, ValueError):
    """A header name or value has forbidden bytes (CR, LF, NUL, other controls)."""


class BindError(KestrelError, OSError):
    """An endpoint could not be bound (port in use, permission, missing directory...)."""


class ResponseStateError(KestrelError, RuntimeError):
    """The call does not fit the response's state (headers after the response started, a
    second completion...)."""


_ERROR_TYPES: dict[int, type[KestrelError]] = {
    CANCELLED: ClientDisconnected,
    INVALID_HEADER: InvalidHeader,
    INVALID_ARGUMENT: InvalidArgument,
    BIND_FAILED: BindError,
    INVALID_STATE: ResponseStateError,
    ALREADY_COMPLETED: ResponseStateError,
}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

_SONAMES = ("libkestrel.so", "libkestrel.so.0", "libkestrel.dylib", "kestrel.dll")


def _candidates() -> list[Path]:
    """Where the library may be, in order: $KESTREL_LIBRARY, the copy bundled in this package,
    then (for a source checkout) the repository's target/release."""
    found: list[Path] = []
    env = os.environ.get("KESTREL_LIBRARY")
    if env:
        return [Path(env)]
    here = Path(__file__).resolve().parent
    found += [here / name for name in _SONAMES]
    # bindings/python/kestrel -> repository root
    root = here.parent.parent.parent
    if (root / "Cargo.toml").is_file():
        found += [root / "target" / "release" / name for name in _SONAMES]
    return found


def _load() -> tuple[ctypes.CDLL, ctypes.PyDLL, Path]:
    candidates = _candidates()
    for path in candidates:
        if path.is_file():
            return ctypes.CDLL(str(path)), ctypes.PyDLL(str(path)), path
    if os.environ.get("KESTREL_LIBRARY"):
        raise ImportError(f"KESTREL_LIBRARY={os.environ['KESTREL_LIBRARY']} does not exist")
    looked = ", ".join(str(p) for p in candidates)
    raise ImportError(
        "libkestrel was not found (looked in: "
        f"{looked}). Install the package with pip so the library is bundled, or set "
        "KESTREL_LIBRARY to the path of libkestrel.so."
    )


lib, fast, library_path = _load()

#: The same two views without ``argtypes``, for the per-request hot path: skipping ctypes'
#: per-argument conversion saves about 130 ns a call. Callers must pass pointers as ctypes
#: objects (``c_void_p``, arrays, ``byref``) or ``bytes``, and integers below 2**31 (libffi
#: widens them to the parameter's 64-bit register; larger values would be refused).
raw_wait = ctypes.CDLL(str(library_path))
raw = ctypes.PyDLL(str(library_path))


class kestrel_str(Structure):
    _fields_ = [("ptr", c_void_p), ("len", c_size_t)]


_p = c_void_p
_u8p = c_char_p  # bytes in; ctypes passes a pointer to the bytes object's buffer
_res = c_uint32

# handler(userdata, request, response) -> result
HANDLER_FN = CFUNCTYPE(c_uint32, c_void_p, c_void_p, c_void_p)
USERDATA_FREE_FN = CFUNCTYPE(None, c_void_p)
THREAD_FN = CFUNCTYPE(None, c_void_p)
LOG_FN = CFUNCTYPE(None, c_void_p, c_uint32, kestrel_str, kestrel_str)
READ_FN = CFUNCTYPE(None, c_void_p, c_uint32, c_size_t)
ABORT_FN = CFUNCTYPE(None, c_void_p)
BODY_FREE_FN = CFUNCTYPE(None, c_void_p)
WRITABLE_FN = CFUNCTYPE(None, c_void_p, c_uint32)

_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "kestrel_version": (c_char_p, []),
    "kestrel_result_name": (c_char_p, [c_uint32]),
    "kestrel_last_error": (_res, [c_void_p, c_size_t, POINTER(c_size_t)]),
    "kestrel_options_new": (_res, [POINTER(c_void_p)]),
    "kestrel_options_free": (None, [_p]),
    "kestrel_options_add_urls": (_res, [_p, _u8p, c_size_t, c_uint32]),
    "kestrel_options_add_listen_fd": (_res, [_p, c_int, c_uint32]),
    "kestrel_options_set_io_threads": (_res, [_p, c_uint32]),
    "kestrel_options_set_dispatch": (_res, [_p, c_uint32]),
    "kestrel_options_set_pool_threads": (_res, [_p, c_uint32]),
    "kestrel_options_set_server_header": (_res, [_p, c_bool]),
    "kestrel_options_set_response_buffer_size": (_res, [_p, c_size_t]),
    "kestrel_options_set_handler": (_res, [_p, HANDLER_FN, _p, USERDATA_FREE_FN]),
    "kestrel_options_set_thread_hooks": (_res, [_p, THREAD_FN, THREAD_FN, _p, USERDATA_FREE_FN]),
    "kestrel_options_set_log_callback": (_res, [_p, LOG_FN, c_uint32, _p, USERDATA_FREE_FN]),
    "kestrel_request_get_head": (_res, [_p, _p]),
    "kestrel_request_read": (_res, [_p, _p, c_size_t, POINTER(c_size_t)]),
    "kestrel_request_read_async": (_res, [_p, _p, c_size_t, READ_FN, _p]),
    "kestrel_request_is_aborted": (c_bool, [_p]),
    "kestrel_request_on_abort": (_res, [_p, ABORT_FN, _p, USERDATA_FREE_FN]),
    "kestrel_response_set_status": (_res, [_p, c_uint16]),
    "kestrel_response_add_header": (_res, [_p, _u8p, c_size_t, _u8p, c_size_t]),
    "kestrel_response_set_header": (_res, [_p, _u8p, c_size_t, _u8p, c_size_t]),
    "kestrel_response_add_trailer": (_res, [_p, _u8p, c_size_t, _u8p, c_size_t]),
    "kestrel_response_remove_header": (_res, [_p, _u8p, c_size_t]),
    "kestrel_response_send": (_res, [_p, _u8p, c_size_t]),
    "kestrel_response_send_owned": (_res, [_p, _p, c_size_t, BODY_FREE_FN, _p]),
    "kestrel_response_write": (_res, [_p, _u8p, c_size_t]),
    "kestrel_response_on_writable": (_res, [_p, WRITABLE_FN, _p]),
    "kestrel_response_flush": (_res, [_p]),
    "kestrel_response_end": (_res, [_p]),
    "kestrel_response_fail": (_res, [_p]),
    "kestrel_response_send_file": (_res, [_p, _u8p, c_size_t, c_uint64, c_uint64]),
    "kestrel_response_send_fd": (_res, [_p, c_int, c_uint64, c_uint64]),
    "kestrel_server_new": (_res, [_p, POINTER(c_void_p)]),
    "kestrel_server_start": (_res, [_p]),
    "kestrel_server_address_count": (c_size_t, [_p]),
    "kestrel_server_address": (_res, [_p, c_size_t, c_void_p, c_size_t, POINTER(c_size_t)]),
    "kestrel_server_stop": (_res, [_p, c_uint32, POINTER(c_size_t)]),
    "kestrel_server_next_request": (_res, [_p, c_int64, POINTER(c_void_p)]),
    "kestrel_server_free": (None, [_p]),
}

for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    for _dll in (lib, fast):
        _fn = getattr(_dll, _name)
        _fn.restype = _restype
        _fn.argtypes = _argtypes
    for _dll in (raw, raw_wait):
        getattr(_dll, _name).restype = _restype

#: Above this, sizes go through the typed functions (see ``raw``).
RAW_MAX = 2**31 - 1


def version() -> str:
    """The version of the loaded libkestrel."""
    return lib.kestrel_version().decode()


def result_name(code: int) -> str:
    """``KESTREL_OK``, ``KESTREL_CANCELLED``... for a result code."""
    return fast.kestrel_result_name(code).decode()


def last_error() -> str:
    """The message of the last failed call on this thread."""
    written = c_size_t(0)
    buf = ctypes.create_string_buffer(512)
    if fast.kestrel_last_error(buf, len(buf), byref(written)) == BUFFER_TOO_SMALL:
        buf = ctypes.create_string_buffer(written.value + 1)
        fast.kestrel_last_error(buf, len(buf), byref(written))
    return buf.value.decode("utf-8", "replace")


def error(code: int, doing: str = "") -> KestrelError:
    """The exception for a failed call, with the library's message for it. Must run on the
    thread that made the call, before any other failing call there."""
    message = last_error() or result_name(code)
    if doing:
        message = f"{doing}: {message}"
    return _ERROR_TYPES.get(code, KestrelError)(message, code)


def check(code: int, doing: str = "") -> None:
    """Raises the exception for ``code`` unless it is ``KESTREL_OK``."""
    if code:
        raise error(code, doing)


# ---------------------------------------------------------------------------------------------
# Reading library memory
# ---------------------------------------------------------------------------------------------

#: The whole address space as a byte memoryview: ``MEMORY[ptr:ptr + n]`` is a zero-copy view of
#: ``n`` bytes the library owns. Slicing it costs far less than ``ctypes.string_at`` (no foreign
#: call), which matters on the per-request path. Only ranges the library hands out are read.
MEMORY = memoryview((ctypes.c_char * sys.maxsize).from_address(0)).cast("B")

if ctypes.sizeof(c_size_t) != 8:  # the head layout below reads uint64_t as one word
    raise ImportError("kestrel's Python binding supports 64-bit platforms only")

HEAD_WORDS = 1 + 10 * 2 + 3
#: ``kestrel_request_head`` is 24 machine words: size, 10 (ptr, len) views, connection_id,
#: headers, header_count.
HEAD_SIZE = HEAD_WORDS * ctypes.sizeof(c_size_t)
HEAD_STRUCT = struct.Struct(f"{HEAD_WORDS}N")
#: The fields a request needs on every request (the connection's addresses and scheme are
#: cached per connection, the id and raw target read on demand): 13 words, skipping the rest
#: with pad bytes, so fewer Python ints are made. Indexes of the tuple it unpacks:
HOT_STRUCT = struct.Struct("8x2N16x4N16x4N48x3N")
(H_METHOD, H_METHOD_LEN, H_PATH, H_PATH_LEN, H_QUERY, H_QUERY_LEN, H_VERSION, H_VERSION_LEN,
 H_AUTHORITY, H_AUTHORITY_LEN, H_CONNECTION, H_HEADERS, H_HEADER_COUNT) = range(13)
assert HOT_STRUCT.size == HEAD_STRUCT.size
#: count -> the ``struct.Struct`` unpacking ``count`` ``kestrel_header``s (4 words each)
HEADER_STRUCTS: dict[int, struct.Struct] = {}


def header_struct(count: int) -> struct.Struct:
    """A cached ``struct.Struct`` unpacking ``count`` ``kestrel_header``s (4 words each)."""
    s = HEADER_STRUCTS.get(count)
    if s is None:
        s = HEADER_STRUCTS[count] = struct.Struct(f"{4 * count}N")
    return s


def _static_range() -> tuple[int, int]:
    """The start and end of the library's first read-only mappings (its constants), with no
    writable mapping inside: strings there never change, so they can be cached by address.
    ``(0, 0)`` when /proc is unavailable."""
    try:
        with open("/proc/self/maps") as f:
            maps = [line.split() for line in f]
    except OSError:
        return 0, 0
    real = os.path.realpath(library_path)
    spans = []
    writable = []
    for m in maps:
        lo, hi = (int(x, 16) for x in m[0].split("-"))
        if "w" in m[1]:
            writable.append(lo)
        elif len(m) >= 6 and m[5] == real:
            spans.append((lo, hi))
    if not spans:
        return 0, 0
    spans.sort()
    lo, hi = spans[0]
    for a, b in spans[1:]:
        if a != hi:
            break  # a gap: stop at the first contiguous run
        hi = b
    for w in writable:
        if lo <= w < hi:
            hi = w
    return lo, hi


#: The library's read-only image: method names (GET...) and standard header names (host...)
#: point there (others are on the heap); :func:`static_bytes` caches them by address.
STATIC_LO, STATIC_HI = _static_range()
_static: dict[int, bytes] = {}


def static_bytes(ptr: int, size: int) -> bytes:
    """The ``size`` bytes at ``ptr``, cached when ``ptr`` is in the library's constants."""
    if STATIC_LO <= ptr < STATIC_HI and size < 65536:
        key = (ptr << 16) | size
        data = _static.get(key)
        if data is None:
            data = _static[key] = MEMORY[ptr : ptr + size].tobytes()
        return data
    return MEMORY[ptr : ptr + size].tobytes()


_static_str: dict[int, str] = {}


def static_str(ptr: int, size: int) -> str:
    """Like :func:`static_bytes`, decoded as latin-1."""
    if STATIC_LO <= ptr < STATIC_HI and size < 65536:
        key = (ptr << 16) | size
        text = _static_str.get(key)
        if text is None:
            text = _static_str[key] = MEMORY[ptr : ptr + size].tobytes().decode("latin-1")
        return text
    return MEMORY[ptr : ptr + size].tobytes().decode("latin-1")


def new_head_buffer() -> ctypes.Array:
    """A ``kestrel_request_head`` buffer with its ``size`` set; one per thread is enough."""
    buf = (c_size_t * HEAD_WORDS)()
    buf[0] = HEAD_SIZE
    return buf


# ---------------------------------------------------------------------------------------------
# Keeping Python objects alive for the library
# ---------------------------------------------------------------------------------------------

#: token -> object, for every userdata the library holds. Tokens are never reused.
_registry: dict[int, Any] = {}
_tokens = itertools.count(1)


def register(obj: Any) -> int:
    """Keeps ``obj`` alive until :func:`release` (or the library's userdata_free) and returns
    the token to pass as userdata."""
    token = next(_tokens)
    _registry[token] = obj
    return token


def registered(token: int | None) -> Any:
    return _registry.get(token or 0)


def release(token: int | None) -> Any:
    return _registry.pop(token or 0, None)


def registry_size() -> int:
    """How many userdata the library still holds (for tests: 0 when everything was freed)."""
    return len(_registry)


def _unraisable(what: str) -> None:
    # A callback must never unwind into the library; report and swallow.
    log.exception("kestrel: exception in %s callback", what)


@USERDATA_FREE_FN
def _userdata_free(userdata: int | None) -> None:
    try:
        release(userdata)
    except BaseException:  # noqa: BLE001 - must not unwind into C
        _unraisable("userdata_free")


@HANDLER_FN
def _handler_trampoline(userdata: int | None, request: int | None, response: int | None) -> int:
    try:
        return _registry[userdata or 0].handle_pool_request(request)
    except BaseException:  # noqa: BLE001
        _unraisable("handler")
        return INVALID_STATE


@THREAD_FN
def _thread_start(userdata: int | None) -> None:
    try:
        _registry[userdata or 0].on_thread_start()
    except BaseException:  # noqa: BLE001
        _unraisable("thread start")


@THREAD_FN
def _thread_stop(userdata: int | None) -> None:
    try:
        _registry[userdata or 0].on_thread_stop()
    except BaseException:  # noqa: BLE001
        _unraisable("thread stop")


@LOG_FN
def _log_trampoline(userdata: int | None, level: int, category: kestrel_str, message: kestrel_str) -> None:
    try:
        cat = bytes(MEMORY[category.ptr : category.ptr + category.len]).decode("utf-8", "replace")
        msg = bytes(MEMORY[message.ptr : message.ptr + message.len]).decode("utf-8", "replace")
        logging.getLogger(cat or "kestrel").log(LOG_LEVELS.get(level, logging.ERROR), "%s", msg)
    except BaseException:  # noqa: BLE001
        pass


@READ_FN
def _read_done(userdata: int | None, result: int, count: int) -> None:
    try:
        callback = release(userdata)
        if callback is not None:
            callback(result, count)
    except BaseException:  # noqa: BLE001
        _unraisable("read")


@WRITABLE_FN
def _writable(userdata: int | None, result: int) -> None:
    try:
        callback = release(userdata)
        if callback is not None:
            callback(result)
    except BaseException:  # noqa: BLE001
        _unraisable("writable")


@ABORT_FN
def _abort_trampoline(userdata: int | None) -> None:
    try:
        callback = registered(userdata)
        if callback is not None:
            callback()
    except BaseException:  # noqa: BLE001
        _unraisable("abort")


# Attaching library threads to the interpreter once (POOL mode): without it, ctypes creates and
# destroys a Python thread state around every callback on a thread Python does not know.
_gil_ensure = ctypes.pythonapi.PyGILState_Ensure
_gil_ensure.restype = c_int
_gil_ensure.argtypes = []
_gil_release = ctypes.pythonapi.PyGILState_Release
_gil_release.restype = None
_gil_release.argtypes = [c_int]
_attached = threading.local()


def attach_thread() -> None:
    """Called inside a callback on a library thread: keeps this thread's Python thread state
    after the callback returns, so later callbacks reuse it (and its thread-locals)."""
    if getattr(_attached, "state", None) is None:
        _attached.state = _gil_ensure()


def detach_thread() -> None:
    """Undoes :func:`attach_thread`; the thread state goes when the current callback returns."""
    state = getattr(_attached, "state", None)
    if state is not None:
        _attached.state = None
        _gil_release(state)


def set_handler(options: int, token: int) -> None:
    check(lib.kestrel_options_set_handler(options, _handler_trampoline, token, _userdata_free), "set_handler")


def set_thread_hooks(options: int, token: int) -> None:
    check(
        lib.kestrel_options_set_thread_hooks(options, _thread_start, _thread_stop, token, _userdata_free),
        "set_thread_hooks",
    )


def set_log_callback(options: int, min_level: int) -> None:
    check(
        lib.kestrel_options_set_log_callback(options, _log_trampoline, min_level, None, USERDATA_FREE_FN()),
        "set_log_callback",
    )


def read_async(request: int, buf: Any, size: int, done: Callable[[int, int], None]) -> int:
    """Starts an asynchronous body read into ``buf``; ``done(result, count)`` runs on an I/O
    thread. ``buf`` must be kept alive by the caller until then. Returns the start's result."""
    token = register(done)
    rc = fast.kestrel_request_read_async(request, buf, size, _read_done, token)
    if rc:
        release(token)
    return rc


def on_writable(response: int, done: Callable[[int], None]) -> int:
    """``done(result)`` once the response buffer has room (maybe at once, on this thread)."""
    token = register(done)
    rc = fast.kestrel_response_on_writable(response, _writable, token)
    if rc:
        release(token)
    return rc


def on_abort(request: int, callback: Callable[[], None]) -> int:
    """Registers ``callback`` to run if the request is aborted (maybe at once, on this thread).
    The library releases it when the request is finished."""
    token = register(callback)
    # userdata_free is called even when the registration fails: the token is released then.
    return fast.kestrel_request_on_abort(request, _abort_trampoline, token, _userdata_free)
