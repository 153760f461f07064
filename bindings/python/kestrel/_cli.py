"""The command line: ``python -m kestrel module:app [options]``.

Serves a WSGI or ASGI application until SIGINT (Ctrl-C) or SIGTERM, then stops gracefully.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from typing import Any, Sequence

from . import __version__, library_version

log = logging.getLogger("kestrel")

LOG_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
              "info": logging.INFO, "debug": logging.DEBUG, "trace": 5}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kestrel",
        description="Serve a WSGI or ASGI application with kestrel (HTTP/1.1 and h2c).",
    )
    p.add_argument("app", help="the application, as module:attribute (e.g. myapp:app or pkg.web:create_app)")
    p.add_argument("--interface", choices=("auto", "asgi", "wsgi"), default="auto",
                   help="ASGI 3 or WSGI; auto: ASGI if the app is a coroutine function or has an async "
                        "__call__, else WSGI (default: auto)")
    p.add_argument("--urls", default=os.environ.get("KESTREL_URLS", "http://127.0.0.1:8000"),
                   help="endpoints, ';'-separated Kestrel-style URLs: http://127.0.0.1:8000, "
                        "http://[::]:80, http://+:8080, http://unix:/run/app.sock "
                        "(default: $KESTREL_URLS or http://127.0.0.1:8000)")
    p.add_argument("--threads", type=int, default=None,
                   help="WSGI: application threads (default 4); ASGI: threads taking requests "
                        "to the event loop (default 1)")
    p.add_argument("--io-threads", type=int, default=None, help="network threads (default: one per core)")
    p.add_argument("--protocols", choices=("http1and2", "http1", "http2"), default="http1and2",
                   help="HTTP versions served (default: HTTP/1.1 and h2c on the same port)")
    p.add_argument("--root-path", default="", help="the URL prefix the app is mounted at behind a proxy")
    p.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto", help="ASGI lifespan (default: auto)")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="ASGI event loop (default: uvloop if installed)")
    p.add_argument("--factory", action="store_true", help="app is a factory: call it to get the application")
    p.add_argument("--stop-timeout", type=float, default=5.0,
                   help="seconds in-flight requests get to finish at shutdown (default: 5)")
    p.add_argument("--log-level", choices=tuple(LOG_LEVELS), default="info", help="default: info")
    p.add_argument("--no-server-header", action="store_true", help="do not send 'Server: kestrel'")
    p.add_argument("--app-dir", default=".", help="directory added to sys.path first (default: .)")
    p.add_argument("--version", action="version", version=f"kestrel {__version__} (libkestrel {library_version()})")
    return p


def load_app(spec: str, factory: bool = False) -> Any:
    """Imports ``module:attribute`` (attribute may be dotted)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: app must be given as module:attribute, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if e.name and module_name.startswith(e.name):
            raise SystemExit(f"error: could not import module {module_name!r}: {e}") from e
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"error: module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        obj = obj()
    return obj


def detect_interface(app: Any) -> str:
    """``"asgi"`` for a coroutine function or an object with an async ``__call__``."""
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = getattr(app, "__call__", None)  # noqa: B004 - the method itself is inspected
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    return "wsgi"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.addLevelName(5, "TRACE")
    logging.basicConfig(level=LOG_LEVELS[args.log_level], format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    sys.path.insert(0, os.path.abspath(args.app_dir))
    app = load_app(args.app, args.factory)
    interface = detect_interface(app) if args.interface == "auto" else args.interface
    options: dict[str, Any] = {
        "io_threads": args.io_threads,
        "protocols": args.protocols,
        "root_path": args.root_path,
        "stop_timeout": args.stop_timeout,
        "server_header": not args.no_server_header,
    }
    if args.threads is not None:
        options["threads"] = args.threads
    if interface == "asgi":
        from .asgi import ASGIServer

        server: Any = ASGIServer(app, args.urls, lifespan=args.lifespan, loop=args.loop, **options)
    else:
        from .wsgi import WSGIServer

        server = WSGIServer(app, args.urls, **options)
    log.info("kestrel %s (libkestrel %s) serving %s as %s", __version__, library_version(), args.app, interface.upper())
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - report start failures in one line
        log.error("could not start: %s", e)
        return 1
    server.serve_forever()
    return 0
