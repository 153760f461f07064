"""python -m kestrel: loading apps, interface detection, graceful stop on SIGINT and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

APPS = Path(__file__).resolve().parent / "apps"


class Cli:
    """``python -m kestrel ARGS`` in a subprocess, with the URL it printed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kestrel", *args, "--urls", "http://127.0.0.1:0", "--app-dir", str(APPS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd="/",
        )
        self.lines: list[str] = []
        self.url = ""
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
        assert self.url, "".join(self.lines)

    def finish(self, timeout: float = 15) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out


@pytest.mark.parametrize(
    ("app", "interface", "expected"),
    [
        ("slow_apps:wsgi", "auto", "wsgi /x"),
        ("slow_apps:asgi", "auto", "asgi /x"),
        ("slow_apps:make_wsgi", "wsgi", "wsgi /x"),
        ("flask_app:app", "auto", None),
        ("starlette_app:app", "asgi", None),
    ],
)
def test_serves_apps(app: str, interface: str, expected: str | None) -> None:
    args = [app, "--interface", interface]
    if app.endswith("make_wsgi"):
        args.append("--factory")
    cli = Cli(*args)
    try:
        r = httpx.get(cli.url + "/x")
        if expected is not None:
            assert r.text == expected
        else:
            assert r.status_code == 404  # served by the framework's router
        with httpx.Client(http1=False, http2=True) as c:
            assert c.get(cli.url + "/x").http_version == "HTTP/2"
    finally:
        cli.proc.send_signal(signal.SIGINT)
        code, out = cli.finish()
    assert code == 0, out
    detected = "ASGI" if "asgi" in app or "starlette" in app else "WSGI"
    assert f"as {detected}" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("app", ["slow_apps:wsgi", "slow_apps:asgi"])
def test_signal_stops_gracefully(app: str, sig: signal.Signals) -> None:
    cli = Cli(app)
    result: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", httpx.get(cli.url + "/slow", timeout=10)))
    t.start()
    # Let the request reach the app, then signal while it is in flight.
    import time

    time.sleep(0.2)
    cli.proc.send_signal(sig)
    t.join()
    code, out = cli.finish()
    assert result["r"].text.endswith("/slow")  # the in-flight request was answered
    assert code == 0, out
    assert f"{sig.name} received" in out and "stopped" in out
    if app.endswith("asgi"):
        assert "lifespan startup" in out and "lifespan shutdown" in out


def test_bad_app_spec() -> None:
    for spec, message in [("nocolon", "module:attribute"), ("no_such_module:app", "could not import"), ("slow_apps:missing", "has no attribute")]:
        out = subprocess.run(
            [sys.executable, "-m", "kestrel", spec, "--app-dir", str(APPS)], capture_output=True, text=True, cwd="/", timeout=30
        )
        assert out.returncode != 0
        assert message in out.stderr


def test_bind_failure_exits_non_zero() -> None:
    cli = Cli("slow_apps:wsgi")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "kestrel", "slow_apps:wsgi", "--urls", cli.url, "--app-dir", str(APPS)],
            capture_output=True, text=True, cwd="/", timeout=30,
        )
        assert out.returncode == 1
        assert "could not start" in out.stderr and cli.url[7:] in out.stderr
    finally:
        cli.proc.send_signal(signal.SIGTERM)
        cli.finish()


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "kestrel", "--version"], capture_output=True, text=True, cwd="/", env=dict(os.environ))
    assert out.returncode == 0 and out.stdout.startswith("kestrel 0.1.0 (libkestrel 0.1.0)")
