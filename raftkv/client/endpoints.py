"""Client endpoints: where a native-protocol client dials, spelt as etcd's clients spell them.

    host:port, http://host:port, https://host:port, [v6]:port   TCP (port 2379 if none)
    unix://PATH, unixs://PATH                                  a Unix socket
    unix:PATH, unixs:PATH                                      the same (gRPC's spelling)

The Unix socket is named by everything after the scheme, the member's rule for its
--listen-native-urls (raftkv.server.config.listen_urls) and etcd's: unix:///run/raftkv.sock is
the absolute path /run/raftkv.sock, unix://localhost:2379 the file "localhost:2379" in the
working directory (etcd's own tests name sockets so).

TLS. https:// and unixs:// always dial TLS; no scheme and unix:// dial TLS when the client has
TLS options (a CA, a client certificate), as etcd 3.4's clientv3 does for "unix"; http:// never
does (AsyncClient refuses it next to TLS options). Over TCP the member's certificate must name
the host dialled. Over a Unix socket there is no host: the name checked is the client's
server_name if given, else the socket file's name when it has the form HOST:PORT (etcd's
convention: unixs://localhost:2379 checks "localhost", as etcdctl 3.4 and clientv3 3.5 do),
else "localhost". etcd differs for other paths: etcdctl 3.4 checks the whole path (which no
certificate names), clientv3 3.5 the file name ("raftkv.sock"); "localhost" is what a member's
certificate for local clients names.
"""
from __future__ import annotations

import dataclasses
import os

DEFAULT_PORT = 2379  # etcd's client port, when an endpoint names none
UNIX_SERVER_NAME = "localhost"  # the TLS name checked over a Unix socket (see the docstring)
UNIX_PATH_BYTES_MAX = 107  # sockaddr_un's sun_path (108 bytes on Linux) less the NUL
SCHEMES = ("http", "https", "unix", "unixs")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One parsed endpoint. Invariant: exactly one of (host, port) and path is set."""

    text: str  # as given (stripped): raftkvctl's endpoint status/health print it
    scheme: str = ""  # "" (none given) or one of SCHEMES
    host: str = ""  # TCP: the host or address (IPv6 without brackets)
    port: int = 0  # TCP: the port
    path: str = ""  # a Unix socket's file

    def __post_init__(self):
        assert self.scheme in ("",) + SCHEMES, self.scheme
        assert bool(self.path) != bool(self.host), self

    @property
    def unix(self):
        return bool(self.path)

    @property
    def tls_required(self):
        """The scheme asks for TLS whatever the client's other options."""
        return self.scheme in ("https", "unixs")

    @property
    def name(self):
        """host:port or unix:PATH, for messages."""
        return f"unix:{self.path}" if self.unix else f"{self.host}:{self.port}"

    def server_name(self, override=None):
        """The name the member's TLS certificate must carry (see the module docstring)."""
        if override:
            return override
        if not self.unix:
            return self.host
        host, sep, port = os.path.basename(self.path).rpartition(":")
        if sep and host and port.isdigit():
            return host.strip("[]")
        return UNIX_SERVER_NAME


def parse_endpoint(ep):
    """The Endpoint of one endpoint string; ValueError if it names nothing dialable."""
    text = ep.strip()
    scheme, rest = "", text
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
    elif text.lower().startswith(("unix:", "unixs:")):
        scheme, rest = text.split(":", 1)
        scheme = scheme.lower()
    if scheme and scheme not in SCHEMES:
        raise ValueError(f"endpoint {text!r}: unknown scheme {scheme}:// (expected http://, "
                         "https://, unix:// or unixs://)")
    if scheme in ("unix", "unixs"):
        if not rest:
            raise ValueError(f"endpoint {text!r} names no socket file")
        if len(os.fsencode(rest)) > UNIX_PATH_BYTES_MAX:
            raise ValueError(f"endpoint {text!r}: a Unix socket path is at most "
                             f"{UNIX_PATH_BYTES_MAX} bytes")
        return Endpoint(text, scheme, path=rest)
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    host = host.strip("[]") or "127.0.0.1"
    if not port:
        return Endpoint(text, scheme, host, DEFAULT_PORT)
    try:
        return Endpoint(text, scheme, host, int(port))
    except ValueError:
        raise ValueError(f"endpoint {text!r}: bad port {port!r}") from None
