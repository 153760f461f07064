"""Client certificates (mTLS) end to end: --client-cert require|allow with --client-ca, with curl,
openssl s_client, Python ssl and httpx, over TLS 1.2 (the server checks the certificate inside the
handshake) and TLS 1.3 (the client finishes first and sees the server's alert on its first read).
"""

from __future__ import annotations

import json
import re
import ssl

import httpx
import pytest

from conftest import Demo
from helpers import HELLO, curl, http_close_request, s_client, tls_connect, tls_context, tls_fetch

HOST = "127.0.0.1"
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# What each kind of client certificate is; None: no certificate.
CLIENTS = {"none": None, "trusted": "client", "expired": "client-expired", "untrusted": "client-untrusted"}


def mtls_server(tmp_path_factory, certs, mode) -> Demo:
    args = ["--urls", f"https://{HOST}:0", "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key"),
            "--client-cert", mode, "--client-ca", str(certs / "ca.crt")]  # fmt: skip
    return Demo(args, tmp_path_factory.mktemp("demo"), expect_urls=1)


@pytest.fixture(scope="module")
def require_server(tmp_path_factory, certs, demo_binary):
    d = mtls_server(tmp_path_factory, certs, "require")
    yield d
    d.assert_clean_stop()


@pytest.fixture(scope="module")
def allow_server(tmp_path_factory, certs, demo_binary):
    d = mtls_server(tmp_path_factory, certs, "allow")
    yield d
    d.assert_clean_stop()


def client_ctx(certs, who: str, version: str, alpn=("http/1.1",)):
    name = CLIENTS[who]
    return tls_context(
        cafile=certs / "ca.crt",
        cert=certs / f"{name}.crt" if name else None,
        key=certs / f"{name}.key" if name else None,
        alpn=alpn,
        min_version=VERSIONS[version],
        max_version=VERSIONS[version],
    )


def fetch_info(certs, d: Demo, who: str, version: str) -> dict:
    r = tls_fetch(HOST, d.port, "/info", client_ctx(certs, who, version), sni="localhost")
    assert r.status == 200, r
    return json.loads(r.body)


def assert_refused(certs, d: Demo, who: str, version: str):
    """The connection fails in the handshake or on the first read, with no response."""
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError)) as e:
        tls_fetch(HOST, d.port, "/info", client_ctx(certs, who, version), sni="localhost")
    assert d.proc.poll() is None
    return e.value


def curl_client(certs, d: Demo, who: str, *args):
    name = CLIENTS[who]
    cert = ["--cert", str(certs / f"{name}.crt"), "--key", str(certs / f"{name}.key")] if name else []
    return curl("--cacert", str(certs / "ca.crt"), *cert, *args, f"https://localhost:{d.port}/info")


def s_client_as(certs, d: Demo, who: str, *args):
    name = CLIENTS[who]
    cert = ["-cert", str(certs / f"{name}.crt"), "-key", str(certs / f"{name}.key")] if name else []
    return s_client(HOST, d.port, *cert, *args, request=http_close_request("/info"))


# ---- require ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_require_trusted_certificate_accepted(require_server, certs, version):
    info = fetch_info(certs, require_server, "trusted", version)
    assert info["client_subject"] == "CN=alice, O=Example", info
    assert info["tls_version"] == f"TLSv{version}", info


@pytest.mark.parametrize("http", ["--http2", "--http1.1"])
def test_require_trusted_certificate_curl(require_server, certs, http):
    done = curl_client(certs, require_server, "trusted", http)
    assert done.returncode == 0, done
    info = json.loads(done.stdout)
    assert "CN=alice" in info["client_subject"] and "O=Example" in info["client_subject"], info


def test_require_trusted_certificate_httpx_h2(require_server, certs):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    with httpx.Client(verify=ctx, http2=True, timeout=10) as c:
        r = c.get(f"https://localhost:{require_server.port}/info")
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        assert r.json()["client_subject"] == "CN=alice, O=Example"
        assert c.get(f"https://localhost:{require_server.port}/").content == HELLO


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("who", ["none", "expired", "untrusted"])
def test_require_refuses(require_server, certs, who, version):
    assert_refused(certs, require_server, who, version)


@pytest.mark.parametrize("who", ["none", "expired", "untrusted"])
def test_require_refuses_in_tls12_handshake(require_server, certs, who):
    """In TLS 1.2 the server checks the client's certificate before its Finished: the handshake
    itself fails."""
    with pytest.raises(ssl.SSLError):
        tls_connect(HOST, require_server.port, client_ctx(certs, who, "1.2"), sni="localhost").close()


@pytest.mark.parametrize(
    "who, alert",
    [("none", "certificate required"), ("expired", "certificate expired"), ("untrusted", "unknown ca")],
)
def test_require_refusal_alert_s_client(require_server, certs, who, alert):
    """The server says why (TLS 1.3 alerts seen by s_client), and no response comes back."""
    rc, out = s_client_as(certs, require_server, who, "-tls1_3")
    assert re.search(r"alert " + alert, out), out
    assert "HTTP/1.1 200" not in out, out
    # The same command with the trusted certificate is answered.
    rc, out = s_client_as(certs, require_server, "trusted", "-tls1_3")
    assert "HTTP/1.1 200" in out and "CN=alice" in out, out


@pytest.mark.parametrize("who", ["none", "expired", "untrusted"])
def test_require_refuses_curl(require_server, certs, who):
    done = curl_client(certs, require_server, who, "--http2")
    assert done.returncode != 0 and "client_subject" not in done.stdout, done


# ---- allow ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_allow_without_certificate(allow_server, certs, version):
    info = fetch_info(certs, allow_server, "none", version)
    assert info["client_subject"] == "", info
    done = curl_client(certs, allow_server, "none", "--http2")
    assert done.returncode == 0 and json.loads(done.stdout)["client_subject"] == "", done


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_allow_with_trusted_certificate(allow_server, certs, version):
    info = fetch_info(certs, allow_server, "trusted", version)
    assert info["client_subject"] == "CN=alice, O=Example", info


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("who", ["expired", "untrusted"])
def test_allow_refuses_bad_certificate(allow_server, certs, who, version):
    """A certificate that is shown must be valid, even when none is required."""
    assert_refused(certs, allow_server, who, version)


def test_no_client_cert_mode_asks_for_nothing(tmp_path_factory, certs, demo_binary):
    """Without --client-cert the server asks for nothing: client_subject stays empty even for a
    client that has a certificate ready."""
    d = Demo(["--urls", f"https://{HOST}:0", "--cert", str(certs / "default.crt"), "--key", str(certs / "default.key")],
             tmp_path_factory.mktemp("demo"), expect_urls=1)  # fmt: skip
    try:
        info = fetch_info(certs, d, "trusted", "1.3")
        assert info["client_subject"] == "", info
        rc, out = s_client(HOST, d.port, "-tls1_2")
        assert "Acceptable client certificate CA names" not in out and "No client certificate CA names sent" in out, out
    finally:
        d.assert_clean_stop()


def test_require_sends_ca_names(require_server):
    rc, out = s_client(HOST, require_server.port, "-tls1_2")
    assert "Acceptable client certificate CA names" in out and "Kestrel Test CA" in out, out
