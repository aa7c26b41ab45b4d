"""TLS contexts for every listener and dialer, from etcd-style certificate files (PEM).

Server side (the member's client, native and peer listeners): a certificate and its key, and,
with client certificate authentication, the CA that must have signed the client's certificate
(etcd's --client-cert-auth / --trusted-ca-file, --peer-client-cert-auth /
--peer-trusted-ca-file). Client side (raftkv.Client, raftkvctl, a member dialling its peers):
the CA to verify the server with (the system's CAs when none is given), and optionally a client
certificate and key. TLS 1.2 is the oldest version offered, as in etcd. Imports nothing from
raftkv, so every package but the Raft core may use it.

Also here: etcd's --cipher-suites names mapped to OpenSSL's (openssl_ciphers), the
certificates of --auto-tls / --peer-auto-tls (self_cert), and CertCheck, what a listener checks
in a client's certificate once the handshake verified it (--client-crl-file / --peer-crl-file,
--client-cert-allowed-hostname).
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
import threading

log = logging.getLogger("raftkv.tls")

MIN_VERSION = ssl.TLSVersion.TLSv1_2
SELF_CERT_VALID_DAYS = 365  # etcd's SelfCert: a year
CHECK_CACHE_MAX = 1024  # certificates whose verdict a CertCheck remembers (per CRL version)

# etcd 3.4's --cipher-suites names (Go's crypto/tls constants, TLS 1.2 and older) and OpenSSL's
# name for each suite. TLS 1.3 suites are not configurable, in etcd 3.4 as here.
CIPHER_SUITES = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and why."""


def _load(what, fn, *args):
    try:
        fn(*args)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"{what} {', '.join(str(a) for a in args if a)}: {exc}") from exc


def openssl_ciphers(names):
    """OpenSSL's cipher string ("A:B") for etcd's --cipher-suites names (a comma-separated
    string or a list); "" for none. TLSConfigError names an unknown one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in CIPHER_SUITES]
    if unknown:
        raise TLSConfigError(f"unknown cipher suite(s) {', '.join(unknown)} (known: Go's "
                             f"TLS 1.2 names, e.g. {', '.join(sorted(CIPHER_SUITES)[-2:])})")
    return ":".join(CIPHER_SUITES[n] for n in names)


def _set_ciphers(ctx, ciphers):
    if ciphers:
        _load("cipher suites", ctx.set_ciphers, ciphers)


def server_context(cert_file, key_file, trusted_ca_file=None, client_cert_auth=False,
                   ciphers=""):
    """A context for a listener; with client_cert_auth, clients must present a certificate
    signed by trusted_ca_file. ciphers: an OpenSSL cipher string (openssl_ciphers) for TLS
    1.2 ("": OpenSSL's defaults)."""
    if not cert_file or not key_file:
        raise TLSConfigError("a TLS listener needs both a certificate and its key")
    if client_cert_auth and not trusted_ca_file:
        raise TLSConfigError("client certificate authentication needs a trusted CA file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    _load("certificate and key", ctx.load_cert_chain, cert_file, key_file)
    _set_ciphers(ctx, ciphers)
    if client_cert_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load("trusted CA", ctx.load_verify_locations, trusted_ca_file)
    return ctx


def client_context(ca_file=None, cert_file=None, key_file=None, verify=True, ciphers=""):
    """A context for a dialer: verifies the server against ca_file alone (or the system's CAs),
    and presents cert_file/key_file if given. verify=False skips the verification (etcdctl's
    --insecure-skip-tls-verify; a member's peer dialer with --peer-auto-tls). ciphers: as
    server_context."""
    if bool(cert_file) != bool(key_file):
        raise TLSConfigError("a client certificate needs its key, and a key its certificate")
    if ca_file:  # only this CA, as etcd trusts only its --cacert / --peer-trusted-ca-file
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load("CA", ctx.load_verify_locations, ca_file)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = MIN_VERSION
    if cert_file:
        _load("client certificate and key", ctx.load_cert_chain, cert_file, key_file)
    _set_ciphers(ctx, ciphers)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def common_name(peercert):
    """The subject CN of a verified certificate (ssl's getpeercert() dict), or None."""
    for rdn in (peercert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def matches_hostname(peercert, hostname):
    """True when a verified certificate (ssl's getpeercert() dict) is valid for hostname: a
    DNS name in its subjectAltName (a leading "*." matching one label) or an IP address."""
    want = hostname.lower().rstrip(".")
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        value = value.lower().rstrip(".")
        if kind == "IP Address" and value == want:
            return True
        if kind != "DNS":
            continue
        if value == want:
            return True
        if value.startswith("*.") and "." in want and want.split(".", 1)[1] == value[2:]:
            return True
    return False


def read_pem(path, what):
    """The bytes of a PEM file (for grpc's credentials), or TLSConfigError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSConfigError(f"{what} {path}: {exc}") from exc


def self_cert(directory, hosts):
    """etcd's --auto-tls / --peer-auto-tls: (cert.pem, key.pem) in directory, a self-signed
    certificate for hosts (IP addresses and DNS names; a server and client certificate, valid
    for a year) made on first use and reused after, as etcd reuses its fixtures. The key is
    EC P-256 (etcd uses P-521) and only the owner may read it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise TLSConfigError(f"auto TLS: cannot make {directory}: {exc}") from exc
    sans = []
    for host in dict.fromkeys(hosts):  # in order, once each
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftkv")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(
                   days=SELF_CERT_VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    try:
        with open(os.open(key_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                  "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
        with open(cert_path + ".tmp", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        os.replace(key_path + ".tmp", key_path)
        os.replace(cert_path + ".tmp", cert_path)
    except OSError as exc:
        raise TLSConfigError(f"auto TLS: cannot write {directory}: {exc}") from exc
    log.info("auto TLS: made a self-signed certificate for %s in %s",
             ", ".join(hosts) or "no host", directory)
    return cert_path, key_path


class CertCheck:
    """What a listener checks in a client's certificate after the handshake verified it:
    its serial is not revoked by the CRL file (etcd's --client-crl-file / --peer-crl-file: the
    serials the CRL lists, PEM or DER, with neither its signature nor its dates checked,
    as etcd; the file is read again whenever it changes, so a new revocation needs no
    restart, and a file that cannot be read refuses every certificate, as etcd does), and it
    is valid for allowed_hostname (--client-cert-allowed-hostname: a SAN DNS name or IP
    address). refusal(der) says why a certificate is refused, or None. Thread-safe (the gRPC
    server may call it from several threads)."""

    def __init__(self, crl_file=None, allowed_hostname=None, crl_flag="--client-crl-file"):
        self.crl_file = crl_file or None
        self.allowed_hostname = allowed_hostname or None
        self.crl_flag = crl_flag
        self._lock = threading.Lock()
        self._stamp = None  # (mtime_ns, size) of the CRL file as last read
        self._revoked = frozenset()  # serial numbers the CRL lists
        self._crl_error = None  # why the CRL file could not be read last time
        self._verdicts = {}  # certificate DER -> refusal or None, for this CRL version
        if self.crl_file:
            self._reload()
            if self._crl_error:
                raise TLSConfigError(self._crl_error)

    def __bool__(self):
        return bool(self.crl_file or self.allowed_hostname)

    def _reload(self):
        """Read the CRL again if the file changed since the last read."""
        try:
            st = os.stat(self.crl_file)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            with open(self.crl_file, "rb") as f:
                data = f.read()
            self._revoked = _crl_serials(data)
            self._crl_error = None
        except (OSError, ValueError) as exc:
            stamp = None
            self._crl_error = f"{self.crl_flag} {self.crl_file}: {exc}"
        self._stamp = stamp
        self._verdicts.clear()

    def refusal(self, der):
        """Why the certificate (DER bytes) is refused, or None; None also for no certificate
        (a plain connection, or a listener that asks for none)."""
        if not der or not self:
            return None
        with self._lock:
            if self.crl_file:
                self._reload()
            if self._crl_error:
                return f"cannot check revocation: {self._crl_error}"
            verdict = self._verdicts.get(der, False)
            if verdict is False:
                verdict = self._judge(der)
                if len(self._verdicts) >= CHECK_CACHE_MAX:
                    self._verdicts.clear()
                self._verdicts[der] = verdict
            return verdict

    def _judge(self, der):
        from cryptography import x509

        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            return f"unreadable certificate: {exc}"
        if cert.serial_number in self._revoked:
            return f"certificate serial {cert.serial_number:x} is revoked ({self.crl_flag})"
        if self.allowed_hostname and not matches_hostname(_san_dict(cert),
                                                          self.allowed_hostname):
            return ("certificate is not valid for --client-cert-allowed-hostname "
                    f"{self.allowed_hostname!r}")
        return None


def _crl_serials(data):
    from cryptography import x509

    if b"-----BEGIN" in data:
        crl = x509.load_pem_x509_crl(data)
    else:
        crl = x509.load_der_x509_crl(data)
    return frozenset(r.serial_number for r in crl)


def _san_dict(cert):
    """A cryptography certificate's SANs in ssl's getpeercert() form, for matches_hostname."""
    from cryptography import x509

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    return {"subjectAltName": tuple(
        [("DNS", n) for n in sans.get_values_for_type(x509.DNSName)]
        + [("IP Address", str(ip)) for ip in sans.get_values_for_type(x509.IPAddress)])}


class CertCheckedProtocol:
    """An asyncio protocol of a TLS listener whose client certificate a CertCheck
    (--client-crl-file, --client-cert-allowed-hostname) refused or passed: a refused one is
    disconnected right after the handshake, as etcd's listeners do; the rest goes on to the
    inner protocol. For listeners whose protocol is not raftkv's own (aiohttp's, asyncio
    streams'): the native listener checks in its own connection_made."""

    def __init__(self, inner, check, where):
        self._inner = inner
        self._check = check
        self._where = where

    def connection_made(self, transport):
        self._inner.connection_made(transport)
        reason = self._check.refusal(der_of(transport.get_extra_info("ssl_object")))
        if reason:
            log.warning("%s: refused %s: %s", self._where, transport.get_extra_info("peername"),
                        reason)
            transport.abort()

    def __getattr__(self, name):  # data_received, eof_received, connection_lost...
        return getattr(self._inner, name)


def cert_checked(factory, check, where):
    """factory (an asyncio protocol factory) with check applied to each connection's client
    certificate (CertCheckedProtocol); factory itself when check has nothing to check."""
    if not check:
        return factory
    return lambda: CertCheckedProtocol(factory(), check, where)


def der_of(ssl_object):
    """The DER bytes of the certificate the other side presented on an SSLObject (None)."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


async def san_covers(loop, peercert, address):
    """etcd's peer SAN check (skipped by --experimental-peer-skip-client-san-verification):
    True when the connecting peer's verified certificate (ssl's getpeercert() dict) has no
    SANs, or an IP SAN equal to address (the connection's source), or a DNS SAN resolving to
    it."""
    sans = (peercert or {}).get("subjectAltName", ())
    if not sans:
        return True
    try:
        source = ipaddress.ip_address(address)
    except ValueError:
        return False
    for kind, value in sans:
        if kind == "IP Address" and _same_ip(value, source):
            return True
    for kind, value in sans:
        if kind != "DNS":
            continue
        try:
            infos = await loop.getaddrinfo(value, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if any(_same_ip(info[4][0], source) for info in infos):
            return True
    return False


def _same_ip(text, ip):
    try:
        return ipaddress.ip_address(text.strip()) == ip
    except ValueError:
        return False
