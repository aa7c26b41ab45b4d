"""TLS contexts for every listener and dialer, from etcd-style certificate files (PEM).

Server side (the member's client, native and peer listeners): a certificate and its key, and,
with client certificate authentication, the CA that must have signed the client's certificate
(etcd's --client-cert-auth / --trusted-ca-file, --peer-client-cert-auth /
--peer-trusted-ca-file). Client side (raftkv.Client, raftkvctl, a member dialling its peers):
the CA to verify the server with (the system's CAs when none is given), and optionally a client
certificate and key. TLS 1.2 is the oldest version offered, as in etcd. Imports nothing from
raftkv, so every package but the Raft core may use it.
"""
from __future__ import annotations

import ssl

MIN_VERSION = ssl.TLSVersion.TLSv1_2


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and why."""


def _load(what, fn, *args):
    try:
        fn(*args)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"{what} {', '.join(str(a) for a in args if a)}: {exc}") from exc


def server_context(cert_file, key_file, trusted_ca_file=None, client_cert_auth=False):
    """A context for a listener; with client_cert_auth, clients must present a certificate
    signed by trusted_ca_file."""
    if not cert_file or not key_file:
        raise TLSConfigError("a TLS listener needs both a certificate and its key")
    if client_cert_auth and not trusted_ca_file:
        raise TLSConfigError("client certificate authentication needs a trusted CA file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    _load("certificate and key", ctx.load_cert_chain, cert_file, key_file)
    if client_cert_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load("trusted CA", ctx.load_verify_locations, trusted_ca_file)
    return ctx


def client_context(ca_file=None, cert_file=None, key_file=None, verify=True):
    """A context for a dialer: verifies the server against ca_file alone (or the system's CAs),
    and presents cert_file/key_file if given. verify=False skips the verification (etcdctl's
    --insecure-skip-tls-verify)."""
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
