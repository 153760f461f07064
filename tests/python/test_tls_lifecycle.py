"""HTTPS lifecycle: certificate reload (SIGHUP and file watching), the development certificate,
start failures on bad certificate files (nothing left bound), the expired-certificate warning."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import time

import httpx
import pytest

from conftest import port_is_free, free_port, run_failing
from helpers import (
    HELLO,
    cert_cn,
    cert_sans,
    cert_sha256,
    curl,
    peer_certificate,
    s_client,
    tls_connect,
    tls_context,
    tls_fetch,
    tls_get,
)

HOST = "127.0.0.1"


# ---- reload ------------------------------------------------------------------------------------


def install(certs, name: str, dst_dir, atomic: bool = False, stem: str = "server"):
    """Puts certs/NAME.crt and .key at DST_DIR/STEM.crt and .key: overwritten in place, or written
    beside and renamed over (what certificate tools do) when `atomic`."""
    for ext in ("crt", "key"):
        dst = dst_dir / f"{stem}.{ext}"
        if atomic:
            tmp = dst_dir / f".{stem}.{ext}.tmp"
            shutil.copyfile(certs / f"{name}.{ext}", tmp)
            os.replace(tmp, dst)
        else:
            shutil.copyfile(certs / f"{name}.{ext}", dst)


def served_cn(port: int, sni: str | None = None) -> str:
    return cert_cn(peer_certificate(HOST, port, sni))


def wait_for_cn(port: int, cn: str, timeout: float = 5.0) -> float:
    """Polls new connections until they get certificate `cn`; returns the seconds it took."""
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < timeout:
        seen = served_cn(port)
        if seen == cn:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"new connections still get {seen!r}, not {cn!r}, after {timeout}s")


@pytest.fixture
def live_dir(tmp_path):
    d = tmp_path / "live"
    d.mkdir()
    return d


def test_sighup_reload_serves_new_certificate_keeps_open_connections(start_demo, certs, live_dir):
    install(certs, "localhost-ec", live_dir)
    d = start_demo(["--urls", f"https://{HOST}:0", "--cert", str(live_dir / "server.crt"), "--key", str(live_dir / "server.key")], expect_urls=1)
    assert served_cn(d.port) == "localhost-ec"

    # Connections opened before the reload: HTTP/1.1 keep-alive (Python ssl) and HTTP/2 (httpx).
    h1 = tls_connect(HOST, d.port, tls_context(cafile=certs / "ca.crt", alpn=("http/1.1",)), sni="localhost")
    h2 = httpx.Client(verify=ssl.create_default_context(cafile=str(certs / "ca.crt")), http2=True, timeout=10)
    try:
        assert tls_get(h1, "/").body == HELLO
        before = h2.get(f"https://localhost:{d.port}/info").json()
        assert before["protocol"] == "HTTP/2"

        install(certs, "localhost-new", live_dir)
        d.signal(signal.SIGHUP)
        d.wait_stderr("certificates reloaded")
        assert served_cn(d.port) == "localhost-new"
        info = json.loads(tls_fetch(HOST, d.port, "/info", tls_context(cafile=certs / "ca.crt", alpn=("http/1.1",)), sni="localhost").body)
        assert info["tls_version"] == "TLSv1.3"

        # The old connections still work, on their old certificate.
        for _ in range(2):
            assert tls_get(h1, "/").status == 200
        assert cert_cn(x509_of(h1)) == "localhost-ec"
        after = h2.get(f"https://localhost:{d.port}/info").json()
        assert after["remote"] == before["remote"], (before, after)  # same connection
    finally:
        h1.close()
        h2.close()
    assert "error" not in d.stderr().lower(), d.stderr()


def x509_of(sock):
    from cryptography import x509

    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))


def test_sighup_reload_with_bad_file_keeps_old_certificate(start_demo, certs, live_dir):
    install(certs, "localhost-ec", live_dir)
    d = start_demo(["--urls", f"https://{HOST}:0", "--cert", str(live_dir / "server.crt"), "--key", str(live_dir / "server.key")], expect_urls=1)
    shutil.copyfile(certs / "garbage.pem", live_dir / "server.crt")
    d.signal(signal.SIGHUP)
    err = d.wait_stderr("reload failed")
    assert "server.crt" in err and "KESTREL_TLS_ERROR" in err, err
    assert served_cn(d.port) == "localhost-ec"
    assert curl("--cacert", str(certs / "ca.crt"), f"https://localhost:{d.port}/").stdout == HELLO.decode()

    # A key that does not match the (good, new) certificate: refused too.
    shutil.copyfile(certs / "localhost-new.crt", live_dir / "server.crt")
    d.signal(signal.SIGHUP)
    err = d.wait_stderr("reload failed", count=2)
    assert "does not match" in err, err
    assert served_cn(d.port) == "localhost-ec"

    # Fixed files: the next reload works.
    install(certs, "localhost-new", live_dir)
    d.signal(signal.SIGHUP)
    d.wait_stderr("certificates reloaded")
    assert served_cn(d.port) == "localhost-new"


def test_sighup_reload_is_all_or_nothing(start_demo, certs, live_dir):
    """A good new default certificate with a broken SNI certificate: nothing changes."""
    install(certs, "localhost-ec", live_dir)
    install(certs, "a-example", live_dir, stem="a")
    d = start_demo(["--urls", f"https://{HOST}:0", "--cert", str(live_dir / "server.crt"), "--key", str(live_dir / "server.key"),
                    "--sni", "a.example.com", str(live_dir / "a.crt"), str(live_dir / "a.key")], expect_urls=1)  # fmt: skip
    assert served_cn(d.port, "a.example.com") == "a.example.com"
    install(certs, "localhost-new", live_dir)
    shutil.copyfile(certs / "garbage.pem", live_dir / "a.key")
    d.signal(signal.SIGHUP)
    err = d.wait_stderr("reload failed")
    assert "a.key" in err, err
    assert served_cn(d.port) == "localhost-ec"
    assert served_cn(d.port, "a.example.com") == "a.example.com"


def test_watch_picks_up_replaced_files_without_sighup(start_demo, certs, live_dir):
    install(certs, "localhost-ec", live_dir)
    d = start_demo(["--urls", f"https://{HOST}:0", "--watch-ms", "100", "--cert", str(live_dir / "server.crt"), "--key", str(live_dir / "server.key")], expect_urls=1)
    assert served_cn(d.port) == "localhost-ec"
    keep = tls_connect(HOST, d.port, tls_context(alpn=("http/1.1",)))
    try:
        assert tls_get(keep, "/").status == 200
        install(certs, "localhost-new", live_dir, atomic=True)
        took = wait_for_cn(d.port, "localhost-new")
        assert took < 3.0, took
        assert tls_get(keep, "/").status == 200
    finally:
        keep.close()
    assert "certificates reloaded" not in d.stderr()  # the demo's SIGHUP message: no signal was sent

    # A broken replacement is logged and ignored; the files fixed again are picked up.
    shutil.copyfile(certs / "garbage.pem", live_dir / ".server.crt.tmp")
    os.replace(live_dir / ".server.crt.tmp", live_dir / "server.crt")
    err = d.wait_stderr("cannot be used")
    assert "server.crt" in err, err
    assert served_cn(d.port) == "localhost-new"
    install(certs, "localhost-ec", live_dir, atomic=True)
    wait_for_cn(d.port, "localhost-ec")


def test_without_watch_replaced_files_are_not_picked_up(start_demo, certs, live_dir):
    install(certs, "localhost-ec", live_dir)
    d = start_demo(["--urls", f"https://{HOST}:0", "--cert", str(live_dir / "server.crt"), "--key", str(live_dir / "server.key")], expect_urls=1)
    install(certs, "localhost-new", live_dir, atomic=True)
    time.sleep(0.4)
    assert served_cn(d.port) == "localhost-ec"


# ---- development certificate -------------------------------------------------------------------

FINGERPRINT = re.compile(r"SHA-256 fingerprint ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory, demo_binary):
    from conftest import Demo

    d = Demo(["--urls", "https://localhost:0"], tmp_path_factory.mktemp("demo"), expect_urls=2)
    yield d
    d.assert_clean_stop()


def test_dev_certificate_fingerprint_logged_matches_served(dev_server):
    assert sorted(u.split("://")[1].rsplit(":", 1)[0] for u in dev_server.urls) == ["127.0.0.1", "[::1]"], dev_server.urls
    err = dev_server.stderr()
    m = FINGERPRINT.search(err)
    assert m and "warn" in err and "development certificate" in err, err
    for host in ("127.0.0.1", "::1"):
        assert cert_sha256(peer_certificate(host, dev_server.port, "localhost")) == m.group(1)
        assert cert_sha256(peer_certificate(host, dev_server.port)) == m.group(1)


def test_dev_certificate_names(dev_server):
    cert = peer_certificate(HOST, dev_server.port)
    dns, ips = cert_sans(cert)
    assert "localhost" in dns, dns
    assert {"127.0.0.1", "::1"} <= ips, ips


@pytest.mark.parametrize("host, sni", [("127.0.0.1", "localhost"), ("127.0.0.1", None), ("::1", None), ("::1", "localhost")])
def test_dev_certificate_verifies_for_loopback_names(dev_server, tmp_path, host, sni):
    """Trusting the served certificate itself, a hostname-checking client accepts it for each
    loopback name."""
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = peer_certificate(HOST, dev_server.port).public_bytes(Encoding.PEM)
    ca = tmp_path / "dev.pem"
    ca.write_bytes(pem)
    ctx = tls_context(cafile=ca, alpn=("http/1.1",))
    name = sni or host  # Python checks the certificate against server_hostname; IPs send no SNI
    r = tls_fetch(host, dev_server.port, "/", ctx, sni=name)
    assert r.status == 200 and r.body == HELLO
    url_host = "[::1]" if host == "::1" else (sni or host)
    extra = ["--resolve", f"localhost:{dev_server.port}:{host}"] if sni else []
    done = curl("--cacert", str(ca), *extra, f"https://{url_host}:{dev_server.port}/")
    assert done.returncode == 0 and done.stdout == HELLO.decode(), done


@pytest.mark.parametrize("sni", ["example.com", "localhost.example.com", "other"])
def test_dev_certificate_refuses_other_names(dev_server, sni):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        peer_certificate(HOST, dev_server.port, sni)
    rc, out = s_client(HOST, dev_server.port, "-servername", sni)
    assert rc != 0 and re.search(r"SSL alert number \d+", out), out


def test_dev_certificate_on_loopback_ip_endpoints(start_demo):
    """https://127.0.0.1 and https://[::1] without a certificate: one development certificate,
    logged once, served on both."""
    d = start_demo(["--urls", "https://127.0.0.1:0;https://[::1]:0"], expect_urls=2)
    err = d.stderr()
    prints = set(FINGERPRINT.findall(err))
    assert len(prints) == 1, err
    for url in d.urls:
        host = "::1" if "[::1]" in url else "127.0.0.1"
        port = int(url.rsplit(":", 1)[1])
        assert cert_sha256(peer_certificate(host, port)) in prints


def test_dev_certificate_survives_sighup(start_demo):
    d = start_demo(["--urls", f"https://{HOST}:0"], expect_urls=1)
    before = cert_sha256(peer_certificate(HOST, d.port))
    d.signal(signal.SIGHUP)
    d.wait_stderr("certificates reloaded")
    assert cert_sha256(peer_certificate(HOST, d.port)) == before
    assert FINGERPRINT.search(d.stderr()).group(1) == before


def test_no_dev_cert_fails_start(demo_binary):
    code, out, err = run_failing(demo_binary, ["--urls", "https://localhost:0", "--no-dev-cert"])
    assert code != 0
    assert "listening on" not in out
    assert "no certificate" in err and "development certificate" in err and "KESTREL_TLS_ERROR" in err, err


def test_any_address_without_certificate_fails_start(demo_binary):
    code, out, err = run_failing(demo_binary, ["--urls", "https://0.0.0.0:0"])
    assert code != 0
    assert "listening on" not in out
    assert "0.0.0.0" in err and "no certificate" in err and "localhost" in err, err


# ---- bad files ---------------------------------------------------------------------------------

# case: (args (file names relative to the certs dir; "missing-*" do not exist), words the error must hold)
BAD = {
    "missing-cert": (["--cert", "missing-server.crt", "--key", "localhost-ec.key"], ["cannot read", "certificate file", "missing-server.crt", "No such file"]),
    "missing-key": (["--cert", "localhost-ec.crt", "--key", "missing-server.key"], ["cannot read", "key file", "missing-server.key"]),
    "garbage-cert": (["--cert", "garbage.pem", "--key", "localhost-ec.key"], ["garbage.pem", "CERTIFICATE"]),
    "garbage-key": (["--cert", "localhost-ec.crt", "--key", "garbage.pem"], ["garbage.pem", "private key"]),
    "key-for-cert-as-cert": (["--cert", "localhost-ec.key", "--key", "localhost-ec.key"], ["localhost-ec.key", "CERTIFICATE"]),
    "encrypted-key": (["--cert", "localhost-ec.crt", "--key", "localhost-ec-encrypted.key"], ["localhost-ec-encrypted.key", "encrypted"]),
    "key-mismatch": (["--cert", "localhost-ec.crt", "--key", "mismatch.key"], ["mismatch.key", "does not match"]),
    "key-mismatch-rsa": (["--cert", "localhost-rsa.crt", "--key", "localhost-ec.key"], ["localhost-rsa.crt", "does not match"]),
    "pfx-wrong-password": (["--pfx", "localhost-rsa.pfx", "--password", "not-the-password"], ["localhost-rsa.pfx", "wrong password"]),
    "pfx-no-password": (["--pfx", "localhost-rsa.pfx"], ["localhost-rsa.pfx", "password"]),
    "pfx-garbage": (["--pfx", "garbage.pem", "--password", "x"], ["garbage.pem", "PKCS#12"]),
    "pfx-missing": (["--pfx", "missing.pfx", "--password", "x"], ["cannot read", "missing.pfx"]),
    "sni-garbage-cert": (["--cert", "localhost-ec.crt", "--key", "localhost-ec.key", "--sni", "a.example.com", "garbage.pem", "a-example.key"], ["garbage.pem"]),
    "sni-missing-key": (["--cert", "localhost-ec.crt", "--key", "localhost-ec.key", "--sni", "a.example.com", "a-example.crt", "missing-a.key"], ["missing-a.key"]),
    "client-ca-missing": (["--cert", "localhost-ec.crt", "--key", "localhost-ec.key", "--client-cert", "require", "--client-ca", "missing-ca.crt"], ["client CA", "missing-ca.crt"]),
    "client-ca-garbage": (["--cert", "localhost-ec.crt", "--key", "localhost-ec.key", "--client-cert", "require", "--client-ca", "garbage.pem"], ["garbage.pem"]),
    "client-cert-without-ca": (["--cert", "localhost-ec.crt", "--key", "localhost-ec.key", "--client-cert", "require"], ["client CA"]),
}
FILE_ARGS = ("--cert", "--key", "--pfx", "--client-ca")


def resolve_args(certs, args):
    out = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in FILE_ARGS:
            out += [a, str(certs / args[i + 1])]
            i += 2
        elif a == "--sni":
            out += [a, args[i + 1], str(certs / args[i + 2]), str(certs / args[i + 3])]
            i += 4
        else:
            out.append(a)
            i += 1
    return out


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_fail_start_and_leave_nothing_bound(demo_binary, certs, case):
    args, words = BAD[case]
    http_port, https_port = free_port(), free_port()
    # The http endpoint comes first: a start that bound it before reading the certificates must
    # still release it.
    urls = f"http://{HOST}:{http_port};https://{HOST}:{https_port}"
    code, out, err = run_failing(demo_binary, ["--urls", urls, *resolve_args(certs, args)])
    assert code != 0, (out, err)
    assert "listening on" not in out, out
    assert "KESTREL_TLS_ERROR" in err, err
    for w in words:
        assert w in err, f"{w!r} not in: {err}"
    assert port_is_free(http_port) and port_is_free(https_port)


def test_bad_sni_name_is_refused(demo_binary, certs):
    args = ["--cert", "localhost-ec.crt", "--key", "localhost-ec.key", "--sni", "*.*.example.com", "a-example.crt", "a-example.key"]
    code, out, err = run_failing(demo_binary, ["--urls", f"https://{HOST}:0", *resolve_args(certs, args)])
    assert code != 0 and "listening on" not in out
    assert "*.*.example.com" in err and "KESTREL_INVALID_ARGUMENT" in err, err


def test_expired_server_certificate_starts_with_warning(start_demo, certs):
    d = start_demo(["--urls", f"https://{HOST}:0", "--cert", str(certs / "server-expired.crt"), "--key", str(certs / "server-expired.key")], expect_urls=1)
    err = d.wait_stderr("expired")
    assert "warn" in err and "CN=localhost-expired" in err, err
    assert served_cn(d.port) == "localhost-expired"
    done = curl("--cacert", str(certs / "ca.crt"), f"https://localhost:{d.port}/")
    assert done.returncode != 0 and "expired" in done.stderr, done
    # A client that does not check still gets answers.
    done = curl("-k", f"https://localhost:{d.port}/")
    assert done.returncode == 0 and done.stdout == HELLO.decode(), done
