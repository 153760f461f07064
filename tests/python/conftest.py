"""Fixtures that run examples-c/demo (the C demo embedding libkestrel) for the Python tests.

`make demo` builds the binary. Each fixture starts the demo on an OS-chosen port (or a Unix
socket), reads the `listening on URL` lines it prints, waits until it answers, and on teardown
sends SIGINT and checks that it exits 0 within 10 s.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples-c" / "demo"
STOP_TIMEOUT = 10.0
START_TIMEOUT = 10.0
LISTENING = re.compile(r"^listening on (\S+)$")


def demo_path() -> Path:
    if not (DEMO.is_file() and os.access(DEMO, os.X_OK)):
        pytest.skip(f"{DEMO} is missing: run `make demo` from {REPO} first")
    return DEMO


class Demo:
    """One running demo process."""

    def __init__(self, args: list[str], workdir: Path, expect_urls: int | None = None):
        self.args = [str(demo_path()), *args]
        self.workdir = Path(workdir)
        self.stderr_path = self.workdir / f"demo-stderr-{os.getpid()}-{id(self)}.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        self.urls: list[str] = []
        self.returncode: int | None = None
        try:
            self.urls = self._read_urls(expect_urls)
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    # ---- startup ----

    def _read_urls(self, expect: int | None) -> list[str]:
        """Reads `listening on` lines: at least one (or `expect`), then a short grace period for
        more (the demo prints them all before one fflush)."""
        sel = selectors.DefaultSelector()
        fd = self.proc.stdout.fileno()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT
        grace_until = None
        try:
            while True:
                lines = [l for l in buf.decode(errors="replace").splitlines() if LISTENING.match(l.strip())]
                complete = buf.endswith(b"\n")
                if lines and complete:
                    if expect is not None and len(lines) >= expect:
                        return [LISTENING.match(l.strip()).group(1) for l in lines]
                    if expect is None:
                        grace_until = grace_until or time.monotonic() + 0.1
                        if time.monotonic() >= grace_until:
                            return [LISTENING.match(l.strip()).group(1) for l in lines]
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"demo printed no complete `listening on` lines in {START_TIMEOUT}s: {buf!r}\n{self.stderr()}")
                wait = min(deadline - now, 0.05 if grace_until else 0.5)
                if sel.select(wait):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        rc = self.proc.wait(timeout=5)
                        raise RuntimeError(f"demo exited ({rc}) before listening; stdout={buf!r}\nstderr:\n{self.stderr()}")
                    buf += chunk
        finally:
            sel.close()

    def _wait_ready(self):
        if self.url.startswith("https://"):
            return self._wait_accepting()
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            try:
                with self.open_socket(timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError as e:
                last = e
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo exited ({self.proc.returncode}) during startup:\n{self.stderr()}")
            time.sleep(0.05)
        raise TimeoutError(f"demo at {self.url} not ready: {last!r}\n{self.stderr()}")

    def _wait_accepting(self):
        """For https endpoints: the port accepts connections. (What a TLS handshake then gets
        depends on the certificates and client-certificate mode, which is each test's business.)"""
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            try:
                with self.open_socket(timeout=2):
                    return
            except OSError as e:
                last = e
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo exited ({self.proc.returncode}) during startup:\n{self.stderr()}")
            time.sleep(0.05)
        raise TimeoutError(f"demo at {self.url} not accepting: {last!r}\n{self.stderr()}")

    def wait_stderr(self, text: str, timeout: float = 5.0, count: int = 1) -> str:
        """Waits until stderr holds `text` at least `count` times; returns stderr (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            err = self.stderr()
            if err.count(text) >= count:
                return err
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} (x{count}) not in the demo's stderr within {timeout}s:\n{err}")
            time.sleep(0.02)

    # ---- addresses ----

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def is_unix(self) -> bool:
        return self.url.startswith("http://unix:")

    @property
    def unix_path(self) -> str:
        return self.url[len("http://unix:"):]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    @property
    def authority(self) -> str:
        return urlsplit(self.url).netloc

    def open_socket(self, timeout: float = 10.0) -> socket.socket:
        if self.is_unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unix_path)
            return s
        return socket.create_connection((self.host, self.port), timeout=timeout)

    # ---- shutdown ----

    def stderr(self) -> str:
        try:
            self._stderr.flush()
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGINT, then wait up to `timeout`; returns the exit code (kills and raises on timeout)."""
        self.signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"demo did not exit within {timeout}s of SIGINT\n{self.stderr()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.close_files()

    def close_files(self):
        for f in (self.proc.stdout, self._stderr):
            try:
                f.close()
            except OSError:
                pass

    def assert_clean_stop(self):
        started = time.monotonic()
        rc = self.stop()
        elapsed = time.monotonic() - started
        err = self.stderr()
        self.close_files()
        assert rc == 0, f"demo exited {rc} after SIGINT\n{err}"
        assert elapsed < STOP_TIMEOUT, elapsed
        assert "stopping" in err and "stopped" in err, err


def run_failing(demo_binary, args, timeout=10.0):
    """Runs the demo expecting it to exit by itself; returns (code, stdout, stderr)."""
    proc = subprocess.Popen([str(demo_binary), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(2)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"demo {args} did not exit by itself; stdout={out!r} stderr={err!r}")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind 0, read, release); the demo sets SO_REUSEADDR."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound and listened on right now (SO_REUSEADDR, as the demo does)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
        return True


def short_tmpdir() -> Path:
    """A short directory under /tmp: Unix socket paths must fit in 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="kestrel-", dir="/tmp"))


# ---- fixtures ----


@pytest.fixture(scope="session")
def demo_binary() -> Path:
    return demo_path()


@pytest.fixture
def start_demo(tmp_path):
    """Factory: start_demo(args, expect_urls=None) -> Demo. Whatever the test leaves running is
    stopped (SIGINT, then SIGKILL) at teardown; exit status is the test's business."""
    started: list[Demo] = []

    def start(args: list[str], expect_urls: int | None = None) -> Demo:
        d = Demo(args, tmp_path, expect_urls)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.signal(signal.SIGINT)
            try:
                d.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        d.kill()


@pytest.fixture(scope="module", params=["pool", "inline"])
def server(request, tmp_path_factory, demo_binary) -> Demo:
    """The demo on http://127.0.0.1:0 in each dispatch mode; clean SIGINT exit at teardown."""
    d = Demo(["--urls", "http://127.0.0.1:0", "--dispatch", request.param], tmp_path_factory.mktemp("demo"), expect_urls=1)
    d.dispatch = request.param
    yield d
    d.assert_clean_stop()


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory, demo_binary) -> Demo:
    """One demo in POOL mode, for tests that need no dispatch matrix."""
    d = Demo(["--urls", "http://127.0.0.1:0", "--dispatch", "pool"], tmp_path_factory.mktemp("demo"), expect_urls=1)
    d.dispatch = "pool"
    yield d
    d.assert_clean_stop()


@pytest.fixture(scope="module", params=["pool", "inline"])
def unix_server(request, tmp_path_factory, demo_binary) -> Demo:
    """The demo on a Unix socket; at teardown it must exit 0 and remove the socket file."""
    sock_dir = short_tmpdir()
    path = sock_dir / "demo.sock"
    try:
        d = Demo(["--urls", f"http://unix:{path}", "--dispatch", request.param], tmp_path_factory.mktemp("demo"), expect_urls=1)
    except BaseException:
        shutil.rmtree(sock_dir, ignore_errors=True)
        raise
    d.dispatch = request.param
    d.socket_path = path
    yield d
    try:
        d.assert_clean_stop()
        assert not path.exists(), f"{path} left behind after SIGINT"
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def localhost_server(tmp_path_factory, demo_binary) -> Demo:
    """The demo on http://localhost:0: one line for 127.0.0.1 and one for [::1], same port."""
    d = Demo(["--urls", "http://localhost:0"], tmp_path_factory.mktemp("demo"))
    yield d
    d.assert_clean_stop()


MAKE_CERTS = REPO / "tests" / "tls" / "make-certs.sh"


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    """The directory of test certificates made by tests/tls/make-certs.sh (once per session)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificates")
    out = tmp_path_factory.mktemp("certs")
    done = subprocess.run(["bash", str(MAKE_CERTS), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"make-certs.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "library_bug: a failing test that documents a library bug")
