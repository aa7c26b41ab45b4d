"""A throwaway PKI for TLS tests: `make_pki(directory)` writes PEM files and returns their paths.

Two unrelated CAs. The first signed a member certificate and a client certificate; the second
("other") signed a certificate with the same names, for the tests that must fail (a server or
client whose certificate the other side's CA did not sign). The member certificate carries both
serverAuth and clientAuth, since an etcd member uses one certificate for its listeners and for
dialling its peers. Keys are EC P-256, which the `cryptography` package makes in microseconds
(RSA 2048 takes ~50 ms each). Certificates are valid from a day ago, so a clock a little behind
does not reject them, for 30 days. The CA also signed a second client certificate, "revoked",
which its CRL (crl.pem) lists; make_crl writes a CRL of any serials.
"""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_CN = "raftkv-test-client"
VALID_BEFORE_NOW = datetime.timedelta(days=1)
VALID_FOR = datetime.timedelta(days=30)
SERVER_SANS = (
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
    x509.DNSName("localhost"),
)


@dataclasses.dataclass(frozen=True)
class PKI:
    """Paths of PEM files (str)."""

    ca: str  # the CA certificate that signed server_cert and client_cert
    server_cert: str  # a member's certificate: SANs 127.0.0.1, ::1, localhost; server+client auth
    server_key: str
    client_cert: str  # a client's certificate, CN raftkv-test-client, client auth
    client_key: str
    other_ca: str  # an unrelated CA
    other_cert: str  # signed by other_ca, same SANs and uses as server_cert
    other_key: str
    revoked_cert: str  # signed by ca, CN raftkv-revoked-client, client auth; listed in crl
    revoked_key: str
    crl: str  # the CA's CRL (PEM) listing revoked_cert's serial
    ca_key: str  # the CA's key (make_crl signs with it)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject, key, issuer, issuer_key, *, ca=False, sans=(), usages=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - VALID_BEFORE_NOW)
               .not_valid_after(now - VALID_BEFORE_NOW + VALID_FOR)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory, name, data, mode=0o644):
    path = os.path.join(directory, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
    return path


def _write_cert(directory, name, cert):
    return _write(directory, name, cert.public_bytes(serialization.Encoding.PEM))


def _write_key(directory, name, key):
    return _write(directory, name, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), mode=0o600)


def _ca(cn):
    key = _key()
    return _cert(_name(cn), key, _name(cn), key, ca=True), key


def _member_cert(ca_cert, ca_key, cn):
    key = _key()
    cert = _cert(_name(cn), key, ca_cert.subject, ca_key, sans=SERVER_SANS,
                 usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    return cert, key


def make_pki(directory):
    """Write the PKI's PEM files into directory (which must exist); returns a PKI."""
    directory = os.fspath(directory)
    assert os.path.isdir(directory), directory
    ca, ca_key = _ca("raftkv-test-ca")
    server, server_key = _member_cert(ca, ca_key, "raftkv-test-member")
    client_key = _key()
    client = _cert(_name(CLIENT_CN), client_key, ca.subject, ca_key,
                   usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    other_ca, other_ca_key = _ca("raftkv-test-other-ca")
    other, other_key = _member_cert(other_ca, other_ca_key, "raftkv-test-other-member")
    revoked_key = _key()
    revoked = _cert(_name("raftkv-revoked-client"), revoked_key, ca.subject, ca_key,
                    usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    ca_key_path = _write_key(directory, "ca-key.pem", ca_key)
    return PKI(
        ca=_write_cert(directory, "ca.pem", ca),
        server_cert=_write_cert(directory, "server.pem", server),
        server_key=_write_key(directory, "server-key.pem", server_key),
        client_cert=_write_cert(directory, "client.pem", client),
        client_key=_write_key(directory, "client-key.pem", client_key),
        other_ca=_write_cert(directory, "other-ca.pem", other_ca),
        other_cert=_write_cert(directory, "other.pem", other),
        other_key=_write_key(directory, "other-key.pem", other_key),
        revoked_cert=_write_cert(directory, "revoked.pem", revoked),
        revoked_key=_write_key(directory, "revoked-key.pem", revoked_key),
        crl=make_crl(os.path.join(directory, "crl.pem"), ca, ca_key, [revoked.serial_number]),
        ca_key=ca_key_path,
    )


def make_crl(path, ca_cert, ca_key, serials, der=False):
    """Write a CRL signed by the CA listing serials (PEM, or DER); returns path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - VALID_BEFORE_NOW).next_update(now + VALID_FOR))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now - VALID_BEFORE_NOW).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return _write(os.path.dirname(path) or ".", os.path.basename(path),
                  crl.public_bytes(encoding))


def serial_of(cert_path):
    """The serial number of a PEM certificate file."""
    with open(cert_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).serial_number


def load_ca(pki):
    """(CA certificate, CA key) objects of a PKI, to sign more CRLs."""
    with open(pki.ca, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(pki.ca_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key
