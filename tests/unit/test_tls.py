"""raftkv/tls.py: contexts build from good PEM files and refuse bad ones, naming the file."""
from __future__ import annotations

import ssl

import pytest

from raftkv import tls
from tests.tlscerts import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_server_contexts_build_from_the_pki(pki):
    ctx = tls.server_context(pki.server_cert, pki.server_key)
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    ctx = tls.server_context(pki.server_cert, pki.server_key, pki.ca, client_cert_auth=True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_client_contexts_build_from_the_pki(pki):
    ctx = tls.client_context(pki.ca)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    ctx = tls.client_context(pki.ca, pki.client_cert, pki.client_key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    ctx = tls.client_context(pki.other_ca, verify=False)
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname


def test_a_missing_file_is_named(pki, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(tls.TLSConfigError, match="nope.pem"):
        tls.client_context(missing)
    with pytest.raises(tls.TLSConfigError, match="nope.pem"):
        tls.server_context(missing, pki.server_key)
    with pytest.raises(tls.TLSConfigError, match="nope.pem"):
        tls.server_context(pki.server_cert, pki.server_key, missing, client_cert_auth=True)
    with pytest.raises(tls.TLSConfigError, match="nope.pem"):
        tls.read_pem(missing, "CA")


def test_a_garbage_file_is_named(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    with pytest.raises(tls.TLSConfigError, match="garbage.pem"):
        tls.client_context(str(garbage))
    with pytest.raises(tls.TLSConfigError, match="garbage.pem"):
        tls.server_context(pki.server_cert, str(garbage))
    with pytest.raises(tls.TLSConfigError, match="garbage.pem"):
        tls.client_context(pki.ca, str(garbage), pki.client_key)


def test_a_key_that_is_not_the_certificates_is_refused(pki):
    with pytest.raises(tls.TLSConfigError, match="server.pem"):
        tls.server_context(pki.server_cert, pki.other_key)


def test_a_key_without_its_certificate_is_refused(pki):
    with pytest.raises(tls.TLSConfigError, match="needs its key"):
        tls.client_context(pki.ca, key_file=pki.client_key)
    with pytest.raises(tls.TLSConfigError, match="needs its key"):
        tls.client_context(pki.ca, cert_file=pki.client_cert)
    with pytest.raises(tls.TLSConfigError, match="both a certificate and its key"):
        tls.server_context(None, pki.server_key)
    with pytest.raises(tls.TLSConfigError, match="both a certificate and its key"):
        tls.server_context(pki.server_cert, None)


def test_client_cert_auth_needs_a_ca(pki):
    with pytest.raises(tls.TLSConfigError, match="trusted CA"):
        tls.server_context(pki.server_cert, pki.server_key, client_cert_auth=True)


def test_read_pem(pki):
    assert tls.read_pem(pki.ca, "CA").startswith(b"-----BEGIN CERTIFICATE-----")


def test_matches_hostname():
    from raftkv.tls import matches_hostname

    cert = {"subjectAltName": (("DNS", "localhost"), ("DNS", "*.example.com"),
                               ("IP Address", "127.0.0.1"))}
    assert matches_hostname(cert, "localhost") and matches_hostname(cert, "LOCALHOST.")
    assert matches_hostname(cert, "a.example.com") and matches_hostname(cert, "127.0.0.1")
    for name in ("example.com", "a.b.example.com", "otherhost", "127.0.0.2"):
        assert not matches_hostname(cert, name), name
    assert not matches_hostname(None, "localhost") and not matches_hostname({}, "localhost")
