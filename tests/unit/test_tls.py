"""raftkv/tls.py: contexts build from good PEM files and refuse bad ones, naming the file."""
from __future__ import annotations

import os
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


def _der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_openssl_ciphers_maps_etcds_names():
    assert tls.openssl_ciphers("") == ""
    assert tls.openssl_ciphers("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "
                               "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305") == \
        "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
    with pytest.raises(tls.TLSConfigError, match="unknown cipher suite.*TLS_NOPE"):
        tls.openssl_ciphers(["TLS_NOPE"])
    # Every name maps to a suite OpenSSL knows (RC4 aside, which OpenSSL 3 no longer has).
    for name, openssl_name in tls.CIPHER_SUITES.items():
        if "RC4" not in name and "3DES" not in name:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(openssl_name)


def test_contexts_take_the_ciphers(pki):
    ctx = tls.server_context(pki.server_cert, pki.server_key,
                             ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    with pytest.raises(tls.TLSConfigError, match="cipher suites"):
        tls.client_context(pki.ca, ciphers="RC4-SHA")


def test_cert_check_refuses_revoked_serials_and_rereads_the_crl(pki, tmp_path):
    from tests.tlscerts import load_ca, make_crl, serial_of

    check = tls.CertCheck(pki.crl)
    assert check.refusal(_der(pki.client_cert)) is None
    assert "revoked (--client-crl-file)" in check.refusal(_der(pki.revoked_cert))
    assert check.refusal(None) is None  # no certificate: nothing to check
    # A new revocation takes effect without a restart (the file is read again), PEM or DER.
    path = str(tmp_path / "crl.der")
    ca, key = load_ca(pki)
    make_crl(path, ca, key, [], der=True)
    check = tls.CertCheck(path, crl_flag="--peer-crl-file")
    assert check.refusal(_der(pki.client_cert)) is None
    make_crl(path, ca, key, [serial_of(pki.client_cert)], der=True)
    os.utime(path, ns=(1, 1))  # a different mtime even within the clock's resolution
    assert "revoked (--peer-crl-file)" in check.refusal(_der(pki.client_cert))
    # A CRL that can no longer be read refuses everyone (fail closed, as etcd).
    os.unlink(path)
    assert "cannot check revocation" in check.refusal(_der(pki.server_cert))
    with pytest.raises(tls.TLSConfigError, match="--client-crl-file"):
        tls.CertCheck(str(tmp_path / "missing.crl"))
    with pytest.raises(tls.TLSConfigError, match="garbage"):
        (tmp_path / "garbage").write_bytes(b"junk")
        tls.CertCheck(str(tmp_path / "garbage"))


def test_cert_check_allowed_hostname(pki):
    check = tls.CertCheck(allowed_hostname="localhost")
    assert check.refusal(_der(pki.server_cert)) is None  # SANs 127.0.0.1, ::1, localhost
    assert "--client-cert-allowed-hostname 'localhost'" in check.refusal(_der(pki.client_cert))
    assert tls.CertCheck(allowed_hostname="127.0.0.1").refusal(_der(pki.server_cert)) is None
    assert not tls.CertCheck()


def test_self_cert_is_made_once_and_reused(tmp_path):
    from cryptography import x509

    cert, key = tls.self_cert(str(tmp_path / "fixtures" / "peer"), ["127.0.0.1", "node.local"])
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    with open(cert, "rb") as f:
        parsed = x509.load_pem_x509_certificate(f.read())
    sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["node.local"]
    tls.server_context(cert, key)  # it loads
    before = open(cert, "rb").read()
    assert tls.self_cert(str(tmp_path / "fixtures" / "peer"), ["10.0.0.1"]) == (cert, key)
    assert open(cert, "rb").read() == before  # reused, as etcd reuses its fixtures


def test_san_covers_checks_the_source_address():
    import asyncio

    cert = {"subjectAltName": (("IP Address", "127.0.0.1"), ("DNS", "localhost"))}

    async def run():
        loop = asyncio.get_running_loop()
        return [await tls.san_covers(loop, cert, "127.0.0.1"),
                await tls.san_covers(loop, {"subjectAltName": (("DNS", "localhost"),)},
                                     "127.0.0.1"),
                await tls.san_covers(loop, cert, "127.0.0.2"),
                await tls.san_covers(loop, {}, "127.0.0.2")]
    assert asyncio.run(run()) == [True, True, False, True]
