"""HTTPS end to end with real clients (curl, openssl s_client, Python ssl, httpx, h2load): ALPN,
/info's TLS fields, SNI certificate selection, certificate types and PKCS#12, protocol versions,
session resumption, the handshake timeout.

The certificates come from tests/tls/make-certs.sh (the `certs` session fixture). Client
certificates are in test_tls_client_auth.py; reload, the development certificate and bad files
in test_tls_lifecycle.py.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from conftest import Demo
from helpers import (
    HELLO,
    cert_cn,
    curl,
    http_close_request,
    peer_certificate,
    s_client,
    tls_connect,
    tls_context,
    tls_fetch,
)

HOST = "127.0.0.1"


def start(tmp_path_factory, args, expect_urls=1) -> Demo:
    return Demo(args, tmp_path_factory.mktemp("demo"), expect_urls=expect_urls)


def sni_args(certs):
    return [
        "--sni", "a.example.com", str(certs / "a-example.crt"), str(certs / "a-example.key"),
        "--sni", "*.example.com", str(certs / "wildcard-example.crt"), str(certs / "wildcard-example.key"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs, demo_binary):
    """https on 127.0.0.1 (HTTP/1.1 and HTTP/2): default certificate CN=kestrel-default, plus
    a.example.com and *.example.com by SNI."""
    d = start(tmp_path_factory, ["--urls", f"https://{HOST}:0", "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key"), *sni_args(certs)])
    yield d
    d.assert_clean_stop()


@pytest.fixture(scope="module")
def sni_only_server(tmp_path_factory, certs, demo_binary):
    """Only SNI certificates (a.example.com, *.example.com), no default."""
    d = start(tmp_path_factory, ["--urls", f"https://{HOST}:0", *sni_args(certs)])
    yield d
    d.assert_clean_stop()


def protocol_server(tmp_path_factory, certs, protocols):
    return start(tmp_path_factory, ["--urls", f"https://{HOST}:0", "--protocols", protocols, "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key")])


@pytest.fixture(scope="module")
def http1_server(tmp_path_factory, certs, demo_binary):
    d = protocol_server(tmp_path_factory, certs, "http1")
    yield d
    d.assert_clean_stop()


@pytest.fixture(scope="module")
def http2_server(tmp_path_factory, certs, demo_binary):
    d = protocol_server(tmp_path_factory, certs, "http2")
    yield d
    d.assert_clean_stop()


def curl_info(certs, d: Demo, *args, name: str | None = None) -> dict:
    """GET /info with curl, verifying the server against the test CA. With `name`, connects to
    https://NAME:PORT resolved to 127.0.0.1 (so curl sends NAME as SNI and checks the
    certificate against it)."""
    if name is None:
        url = f"https://{HOST}:{d.port}/info"
        extra = []
    else:
        url = f"https://{name}:{d.port}/info"
        extra = ["--resolve", f"{name}:{d.port}:{HOST}"]
    done = curl("--cacert", str(certs / "ca.crt"), *extra, *args, url)
    assert done.returncode == 0, f"curl {args} {url}: rc={done.returncode} {done.stderr}\n{d.stderr()}"
    return json.loads(done.stdout)


def alpn_of(output: str) -> str | None:
    m = re.search(r"^ALPN protocol: (\S+)$", output, re.M)
    return m.group(1) if m else None


# ---- ALPN and /info --------------------------------------------------------------------------


def test_curl_http2_negotiates_h2(server, certs):
    info = curl_info(certs, server, "--http2")
    assert info["protocol"] == "HTTP/2" and info["alpn"] == "h2", info
    assert info["scheme"] == "https", info
    assert info["tls_version"] == "TLSv1.3", info
    assert info["tls_cipher"].startswith("TLS13_"), info
    assert info["sni"] == "", info  # connected by IP: no SNI
    assert info["client_subject"] == "", info


def test_curl_http11_negotiates_http11(server, certs):
    info = curl_info(certs, server, "--http1.1")
    assert info["protocol"] == "HTTP/1.1" and info["alpn"] == "http/1.1", info
    assert info["scheme"] == "https", info


@pytest.mark.parametrize(
    "offer, chosen",
    [("h2", "h2"), ("http/1.1", "http/1.1"), ("h2,http/1.1", "h2")],
)
def test_s_client_alpn(server, offer, chosen):
    rc, out = s_client(HOST, server.port, "-alpn", offer)
    assert rc == 0, out
    assert alpn_of(out) == chosen, out


def test_alpn_without_a_common_protocol_is_refused(server):
    rc, out = s_client(HOST, server.port, "-alpn", "foo,bar")
    assert rc != 0 and "no application protocol" in out and alpn_of(out) is None, out
    rc, out = s_client(HOST, server.port, "-alpn", "foo,http/1.1")
    assert alpn_of(out) == "http/1.1", out


def test_no_alpn_is_served_as_http11(server):
    rc, out = s_client(HOST, server.port, request=http_close_request("/"))
    assert "No ALPN negotiated" in out, out
    assert "HTTP/1.1 200" in out and HELLO.decode() in out, out


def test_httpx_http2_and_http1(server, certs):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with httpx.Client(verify=ctx, http2=True, timeout=10) as c:
        r = c.get(f"https://{HOST}:{server.port}/info")
        assert r.status_code == 200 and r.http_version == "HTTP/2", r
        assert r.json()["alpn"] == "h2"
        # Several requests on the one connection.
        for _ in range(3):
            assert c.get(f"https://{HOST}:{server.port}/").content == HELLO
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with httpx.Client(verify=ctx, http1=True, http2=False, timeout=10) as c:
        r = c.get(f"https://{HOST}:{server.port}/info")
        assert r.status_code == 200 and r.http_version == "HTTP/1.1", r
        assert r.json()["alpn"] == "http/1.1"


def test_http2_post_echo_over_tls(server, certs):
    body = bytes(range(256)) * 1024  # 256 KiB: several DATA frames and TLS records each way
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with httpx.Client(verify=ctx, http2=True, timeout=20) as c:
        r = c.post(f"https://{HOST}:{server.port}/echo", content=body)
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        assert r.content == body


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_info_reports_version_and_cipher(server, certs, version):
    tls_ver = ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
    ctx = tls_context(cafile=certs / "ca.crt", alpn=("http/1.1",), min_version=tls_ver, max_version=tls_ver)
    r = tls_fetch(HOST, server.port, "/info", ctx, sni="a.example.com")
    assert r.status == 200
    info = json.loads(r.body)
    assert info["tls_version"] == version, info
    if version == "TLSv1.2":
        # default.crt and a-example.crt are ECDSA: an ECDHE_ECDSA suite, IANA name.
        assert info["tls_cipher"].startswith("TLS_ECDHE_ECDSA_WITH_"), info
    else:
        assert info["tls_cipher"].startswith("TLS13_"), info
    assert info["alpn"] == "http/1.1" and info["sni"] == "a.example.com", info
    assert info["scheme"] == "https", info


def test_http1_only_endpoint_never_picks_h2(http1_server, certs):
    rc, out = s_client(HOST, http1_server.port, "-alpn", "h2,http/1.1")
    assert alpn_of(out) == "http/1.1", out
    # A client that offers only h2: refused with no_application_protocol, never h2.
    rc, out = s_client(HOST, http1_server.port, "-alpn", "h2")
    assert alpn_of(out) is None, out
    assert "no application protocol" in out, out
    info = curl_info(certs, http1_server, "--http2")
    assert info["protocol"] == "HTTP/1.1" and info["alpn"] == "http/1.1", info


def test_http2_only_endpoint(http2_server, certs):
    rc, out = s_client(HOST, http2_server.port, "-alpn", "h2,http/1.1")
    assert alpn_of(out) == "h2", out
    rc, out = s_client(HOST, http2_server.port, "-alpn", "http/1.1")
    assert alpn_of(out) is None, out
    assert "no application protocol" in out, out
    info = curl_info(certs, http2_server, "--http2")
    assert info["protocol"] == "HTTP/2" and info["alpn"] == "h2", info
    done = curl("--cacert", str(certs / "ca.crt"), "--http1.1", f"https://{HOST}:{http2_server.port}/")
    assert done.returncode != 0 and HELLO.decode() not in done.stdout, done


def test_plaintext_http_on_https_port_is_refused_at_once(server):
    """A cleartext HTTP/1.1 request to an https port: a TLS alert and a close, at once (not after
    the handshake timeout), and no HTTP response."""
    started = time.monotonic()
    with socket.create_connection((HOST, server.port), timeout=5) as s:
        s.sendall(http_close_request("/"))
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert time.monotonic() - started < 2.0
    assert b"HTTP/" not in data, data
    assert data == b"" or data[0] == 0x15, data  # nothing, or an alert record


def test_http_and_https_endpoints_side_by_side(start_demo, certs):
    d = start_demo(["--urls", f"http://{HOST}:0;https://{HOST}:0", "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key")], expect_urls=2)
    plain = next(u for u in d.urls if u.startswith("http://"))
    secure = next(u for u in d.urls if u.startswith("https://"))
    info = httpx.get(plain + "/info", timeout=10).json()
    assert info["scheme"] == "http" and "tls_version" not in info, info
    done = curl("--cacert", str(certs / "ca.crt"), "--http2", secure + "/info")
    info = json.loads(done.stdout)
    assert info["scheme"] == "https" and info["tls_version"] == "TLSv1.3" and info["alpn"] == "h2", info


# ---- SNI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sni, cn",
    [
        (None, "kestrel-default"),
        ("a.example.com", "a.example.com"),  # exact beats the wildcard
        ("b.example.com", "wildcard.example.com"),
        ("A.Example.COM", "a.example.com"),  # DNS names are case-insensitive
        ("x.y.example.com", "kestrel-default"),  # a wildcard covers one label only
        ("example.com", "kestrel-default"),
        ("unknown.test", "kestrel-default"),
        ("localhost", "kestrel-default"),
    ],
)
def test_sni_selects_certificate(server, sni, cn):
    assert cert_cn(peer_certificate(HOST, server.port, sni)) == cn


@pytest.mark.parametrize("name", ["a.example.com", "b.example.com"])
def test_sni_with_curl_verifies_hostname(server, certs, name):
    """curl checks the served certificate against the name: the right one was picked."""
    info = curl_info(certs, server, "--http2", name=name)
    assert info["sni"] == name and info["host"] == f"{name}:{server.port}", info


def test_sni_s_client_subject(server):
    rc, out = s_client(HOST, server.port, "-servername", "a.example.com")
    assert re.search(r"^subject=CN\s*=\s*a\.example\.com$", out, re.M), out
    rc, out = s_client(HOST, server.port, "-servername", "deep.sub.example.com")
    assert re.search(r"^subject=CN\s*=\s*kestrel-default$", out, re.M), out


def test_sni_configured_names_are_case_insensitive(start_demo, certs):
    d = start_demo(["--urls", f"https://{HOST}:0", "--sni", "A.Example.COM", str(certs / "a-example.crt"), str(certs / "a-example.key")], expect_urls=1)
    assert cert_cn(peer_certificate(HOST, d.port, "a.example.com")) == "a.example.com"
    assert curl_info(certs, d, name="a.example.com")["sni"] == "a.example.com"


def test_sni_ip_literal_is_treated_as_no_name(server):
    """Some clients send an IP address as SNI (RFC 6066 forbids it): served like no SNI."""
    rc, out = s_client(HOST, server.port, "-servername", HOST, request=http_close_request("/"))
    assert re.search(r"^subject=CN\s*=\s*kestrel-default$", out, re.M) and "HTTP/1.1 200" in out, out


@pytest.mark.parametrize("sni", [None, "unknown.test", "x.y.example.com", "example.com"])
def test_sni_unknown_name_without_default_is_refused(sni_only_server, sni):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        peer_certificate(HOST, sni_only_server.port, sni)
    rc, out = s_client(HOST, sni_only_server.port, *(["-servername", sni] if sni else []))
    assert rc != 0 and re.search(r"SSL alert number \d+", out) and "Cipher is (NONE)" in out, out
    assert sni_only_server.proc.poll() is None


@pytest.mark.parametrize("sni, cn", [("a.example.com", "a.example.com"), ("c.example.com", "wildcard.example.com")])
def test_sni_only_server_serves_known_names(sni_only_server, certs, sni, cn):
    assert cert_cn(peer_certificate(HOST, sni_only_server.port, sni)) == cn
    info = curl_info(certs, sni_only_server, name=sni)
    assert info["sni"] == sni


# ---- certificate types and PKCS#12 -------------------------------------------------------------

CERT_KINDS = {
    "ecdsa-p256": (["--cert", "localhost-ec.crt", "--key", "localhost-ec.key"], "localhost-ec", "EllipticCurvePublicKey"),
    "rsa-2048": (["--cert", "localhost-rsa.crt", "--key", "localhost-rsa.key"], "localhost-rsa", "RSAPublicKey"),
    "ed25519": (["--cert", "localhost-ed25519.crt", "--key", "localhost-ed25519.key"], "localhost-ed25519", "Ed25519PublicKey"),
    "pkcs12": (["--pfx", "localhost-rsa.pfx", "--password", "pfx-secret"], "localhost-rsa", "RSAPublicKey"),
    "pkcs12-legacy": (["--pfx", "localhost-rsa-legacy.pfx", "--password", "pfx-secret"], "localhost-rsa", "RSAPublicKey"),
}


@pytest.mark.parametrize("kind", list(CERT_KINDS))
def test_certificate_kinds_serve(start_demo, certs, kind):
    args, cn, key_type = CERT_KINDS[kind]
    files = [a for a in args if a.endswith((".crt", ".key", ".pfx"))]
    if not all((certs / f).exists() for f in files):
        pytest.skip(f"{files} not made (this openssl cannot)")
    args = [str(certs / a) if a in files else a for a in args]
    d = start_demo(["--urls", f"https://{HOST}:0", *args], expect_urls=1)
    cert = peer_certificate(HOST, d.port)
    assert cert_cn(cert) == cn
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    expected = {"EllipticCurvePublicKey": ec.EllipticCurvePublicKey, "RSAPublicKey": rsa.RSAPublicKey, "Ed25519PublicKey": ed25519.Ed25519PublicKey}[key_type]
    assert isinstance(cert.public_key(), expected), cert.public_key()
    for version in ("1.2", "1.3"):
        done = curl("--cacert", str(certs / "ca.crt"), f"--tlsv{version}", "--tls-max", version, f"https://localhost:{d.port}/")
        assert done.returncode == 0 and done.stdout == HELLO.decode(), f"TLS {version}: {done}\n{d.stderr()}"
    rc, out = s_client(HOST, d.port, "-tls1_3", "-CAfile", str(certs / "ca.crt"), "-verify_return_error", request=http_close_request())
    assert "Verify return code: 0 (ok)" in out and "HTTP/1.1 200" in out, out


# ---- versions ----------------------------------------------------------------------------------

OLD_CIPHERS = "DEFAULT@SECLEVEL=0"


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls10_and_tls11_refused_by_server(server, flag):
    # The same command form with -tls1_2 works: openssl itself can send these hellos.
    rc, out = s_client(HOST, server.port, "-tls1_2", "-cipher", OLD_CIPHERS)
    assert rc == 0 and re.search(r"^New, TLSv1\.2, Cipher is ECDHE-", out, re.M), out
    rc, out = s_client(HOST, server.port, flag, "-cipher", OLD_CIPHERS)
    assert rc != 0, out
    # The refusal is the server's: an alert came back (not a local "no protocols available").
    assert re.search(r"SSL alert number \d+", out), out
    assert "no protocols available" not in out, out
    assert "Cipher is (NONE)" in out, out
    assert server.proc.poll() is None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_refused_python(server):
    ctx = tls_context(min_version=ssl.TLSVersion.TLSv1_1, max_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers(OLD_CIPHERS)
    with pytest.raises(ssl.SSLError) as e:
        tls_connect(HOST, server.port, ctx).close()
    assert "ALERT" in str(e.value).upper(), e.value


@pytest.fixture(scope="module")
def tls13_server(tmp_path_factory, certs, demo_binary):
    d = start(tmp_path_factory, ["--urls", f"https://{HOST}:0", "--tls13", "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key")])
    yield d
    d.assert_clean_stop()


def test_tls13_only_refuses_tls12(tls13_server, server):
    rc, out = s_client(HOST, tls13_server.port, "-tls1_2")
    assert rc != 0 and "alert protocol version" in out, out
    # The same client against the default endpoint gets TLS 1.2.
    rc, out = s_client(HOST, server.port, "-tls1_2")
    assert rc == 0 and "Protocol  : TLSv1.2" in out, out
    with pytest.raises(ssl.SSLError):
        tls_connect(HOST, tls13_server.port, tls_context(max_version=ssl.TLSVersion.TLSv1_2)).close()


def test_tls13_only_accepts_tls13(tls13_server, certs):
    rc, out = s_client(HOST, tls13_server.port, "-tls1_3", request=http_close_request())
    assert "New, TLSv1.3" in out and "HTTP/1.1 200" in out, out
    info = curl_info(certs, tls13_server, "--http2")
    assert info["tls_version"] == "TLSv1.3", info


# ---- session resumption ------------------------------------------------------------------------


@pytest.mark.parametrize("flag, version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_session_resumption(server, tmp_path, flag, version):
    sess = tmp_path / "session.pem"
    # A request and -ign_eof: s_client reads until the server closes, so TLS 1.3 tickets (sent
    # after the handshake) arrive before it saves the session.
    rc, out = s_client(HOST, server.port, flag, "-alpn", "http/1.1", "-sess_out", str(sess), request=http_close_request())
    assert f"New, {version}," in out and "HTTP/1.1 200" in out, out
    assert sess.exists() and sess.stat().st_size > 0
    for _ in range(2):
        rc, out = s_client(HOST, server.port, flag, "-alpn", "http/1.1", "-sess_in", str(sess), request=http_close_request())
        assert f"Reused, {version}," in out, out
        assert "HTTP/1.1 200" in out, out


# ---- handshake timeout -------------------------------------------------------------------------

HANDSHAKE_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory, certs, demo_binary):
    d = start(
        tmp_path_factory,
        ["--urls", f"https://{HOST}:0", "--handshake-timeout-ms", str(int(HANDSHAKE_TIMEOUT * 1000)),
         "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key")],
    )  # fmt: skip
    yield d
    d.assert_clean_stop()


def time_until_closed(sock: socket.socket, started: float, limit: float = 5.0) -> float:
    """Seconds from `started` until the server closes `sock` (EOF or reset); fails past `limit`."""
    sock.settimeout(limit)
    try:
        data = sock.recv(4096)
        # Whatever arrives must be the end (or an alert record, then the end).
        while data:
            data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        pytest.fail(f"connection still open {limit}s after connecting")
    return time.monotonic() - started


@pytest.mark.parametrize("send", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"], ids=["silent", "partial-hello"])
def test_handshake_timeout_disconnects_stalled_client(timeout_server, send):
    started = time.monotonic()
    with socket.create_connection((HOST, timeout_server.port), timeout=5) as s:
        if send:
            s.sendall(send)
        elapsed = time_until_closed(s, started)
    assert elapsed >= HANDSHAKE_TIMEOUT - 0.05, f"closed after {elapsed:.3f}s, before the {HANDSHAKE_TIMEOUT}s timeout"
    assert elapsed < HANDSHAKE_TIMEOUT + 2.0, f"closed only after {elapsed:.3f}s"


def test_handshake_timeout_does_not_limit_idle_connection(timeout_server):
    """Once the handshake is done the timeout no longer applies."""
    with tls_connect(HOST, timeout_server.port, tls_context(alpn=("http/1.1",))) as s:
        time.sleep(HANDSHAKE_TIMEOUT * 2.5)
        s.sendall(http_close_request("/"))
        data = b""
        s.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, f"closed; got {data!r}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data


def test_handshake_timeout_many_silent_clients(timeout_server):
    """Twenty silent connections at once: every one is closed, none lingers."""
    started = time.monotonic()
    socks = [socket.create_connection((HOST, timeout_server.port), timeout=5) for _ in range(20)]
    try:
        for s in socks:
            elapsed = time_until_closed(s, started)
            assert elapsed < HANDSHAKE_TIMEOUT + 3.0, elapsed
    finally:
        for s in socks:
            s.close()
    # And the server still serves.
    assert tls_fetch(HOST, timeout_server.port, "/").status == 200


def test_default_handshake_timeout_is_not_short(server):
    """Without --handshake-timeout-ms a silent client is not cut off within a second (the
    default is 10 s): the short close above is the option's doing."""
    with socket.create_connection((HOST, server.port), timeout=5) as s:
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            s.recv(1)


# ---- h2load ------------------------------------------------------------------------------------


def test_h2load_over_tls(server):
    h2load = shutil.which("h2load")
    if h2load is None:
        pytest.skip("h2load not installed (apt nghttp2-client)")
    done = subprocess.run([h2load, "-n", "100", "-c", "4", "-t", "1", f"https://{HOST}:{server.port}/"], capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert "Application protocol: h2" in out, out
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    assert m, out
    assert int(m.group(4)) == 100 and int(m.group(5)) == 0 and int(m.group(6)) == 0, out
    assert re.search(r"status codes: 100 2xx", out), out
