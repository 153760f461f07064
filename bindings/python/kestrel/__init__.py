"""kestrel: Python bindings of libkestrel, an embeddable HTTP/1.1 and HTTP/2 server.

* :class:`Server` — the core API: ``handler(request, response)`` per request.
* :mod:`kestrel.wsgi` — serve a WSGI (PEP 3333) application.
* :mod:`kestrel.asgi` — serve an ASGI 3 application (HTTP and lifespan).
* ``python -m kestrel module:app`` — the command line.

Pure ctypes: the native library is bundled in the package (or named by ``KESTREL_LIBRARY``).
"""

from ._native import (
    BindError,
    ClientDisconnected,
    InvalidArgument,
    InvalidHeader,
    KestrelError,
    ResponseStateError,
    library_path,
)
from ._native import version as library_version
from ._http import Headers, Request, Response, Server

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "ClientDisconnected",
    "Headers",
    "InvalidArgument",
    "InvalidHeader",
    "KestrelError",
    "Request",
    "Response",
    "ResponseStateError",
    "Server",
    "library_path",
    "library_version",
    "__version__",
]
