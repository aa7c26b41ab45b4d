"""The member's configuration: etcd-style flags, RAFTKV_* environment variables, a YAML file.

Precedence (highest first): command-line flag, environment variable (RAFTKV_ + the flag name in
upper case with dashes as underscores, e.g. RAFTKV_DATA_DIR), the --config-file (YAML, keys are
the flag names), then the default. With no flags a member runs a single-member cluster on
127.0.0.1 with its data in ./default.raftkv, like etcd.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import re
import sys
import urllib.parse

import yaml

from raftkv import tls
from raftkv.mvcc.auth import JwtTokens
from raftkv.server import autocompact
from raftkv.tls import TLSConfigError

log = logging.getLogger("raftkv.config")

MIB = 1 << 20
MAX_UINT32 = (1 << 32) - 1


class ConfigError(ValueError):
    """A flag, variable or config-file value is invalid; the message names it."""


@dataclasses.dataclass
class ServerConfig:
    name: str = "default"
    data_dir: str = ""
    listen_client_urls: str = "http://127.0.0.1:2379"
    advertise_client_urls: str = ""
    listen_native_urls: str = "http://127.0.0.1:2378"
    advertise_native_urls: str = ""  # raftkv's own: published beside the client URLs
    listen_metrics_urls: str = ""  # /health, /version, /metrics over HTTP; empty = off
    listen_client_http_urls: str = ""  # etcd's JSON gateway (+ /health...); empty = off
    listen_peer_urls: str = "http://127.0.0.1:2380"
    initial_advertise_peer_urls: str = ""
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "raftkv-cluster"
    force_new_cluster: bool = False  # disaster recovery: see FLAG_HELP, forcenew.py
    heartbeat_interval: int = 100  # ms
    election_timeout: int = 1000  # ms
    snapshot_count: int = 100_000
    # Log entries kept after a compaction so that a follower a little behind catches up from
    # the log, not a snapshot (etcd's --experimental-snapshot-catchup-entries).
    snapshot_catchup_entries: int = 5_000
    quota_backend_bytes: int = 2 << 30
    max_request_bytes: int = 1536 * 1024
    max_txn_ops: int = 128  # etcd's: most operations in a txn's compare, success or failure
    log_level: str = "info"
    log_format: str = "text"
    # ---- etcd 3.4's storage, logging, Raft, experimental, v2, discovery and proxy flags (each
    # implemented, accepted with a start-up note, or refused: see finish() and FLAG_HELP).
    wal_dir: str = ""  # the WAL's directory (empty: DATA_DIR/wal)
    # etcd's file retention. raftkv deletes a WAL segment once the log is compacted past it and
    # writes no snapshot files (its store is the snapshot): accepted (docs/ETCD_DIFFERENCES.md).
    max_wals: int = 5
    max_snapshots: int = 5
    logger: str = "capnslog"  # etcd 3.4's default; zap means JSON lines unless --log-format
    log_outputs: str = "default"  # default|stderr|stdout|FILE, a comma list
    debug: bool = False  # = --log-level debug
    log_package_levels: str = ""  # capnslog's per-package levels: accepted, ignored (a note)
    # raftkv runs Raft's pre-vote phase by default (etcd 3.4: off); false turns it off.
    pre_vote: bool = True
    initial_election_tick_advance: bool = True  # fast-forward the election ticks at boot
    strict_reconfig_check: bool = True  # refuse member changes that could lose the quorum
    experimental_compaction_batch_limit: int = 1000  # keys compacted per apply step
    experimental_warning_apply_duration: str = "100ms"  # slower applies are logged
    # The leader records long leases' remaining TTLs in the log (raftkv.mvcc.lease, Checkpoints)
    experimental_enable_lease_checkpoint: bool = False
    experimental_watch_progress_notify_interval: str = "10m"
    backend_batch_interval: str = ""  # the store's commit linger (empty: raftkv's 20ms)
    backend_batch_limit: int = 0  # accepted; 0 is etcd's default (no limit)
    experimental_backend_bbolt_freelist_type: str = "array"  # accepted: no bbolt
    metrics: str = "basic"  # accepted: raftkv's /metrics is fixed
    enable_pprof: bool = False  # true is accepted with a warning: no Go runtime to profile
    enable_v2: bool = False  # true: a warning (no v2 API)
    experimental_enable_v2v3: str = ""  # refused when set: no v2 API
    cors: str = "*"  # accepted: no browser-facing HTTP API (see FLAG_HELP)
    host_whitelist: str = "*"  # checked against the Host header of the HTTP endpoint
    discovery: str = ""  # discovery flags: refused when set (no discovery service)
    discovery_fallback: str = "proxy"
    discovery_proxy: str = ""
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    proxy: str = "off"  # v2 proxy mode: refused unless off
    proxy_failure_wait: int = 5000
    proxy_refresh_interval: int = 30000
    proxy_dial_timeout: int = 1000
    proxy_write_timeout: int = 5000
    proxy_read_timeout: int = 0
    request_timeout: float = 7.0  # s; how long a write or read waits before TIMEOUT
    # Child processes serving the etcd gRPC API on the client port (SO_REUSEPORT), each
    # forwarding to this member over the native protocol; 0: the member serves gRPC itself.
    grpc_workers: int = 0
    # HTTP/1.1 beside gRPC on the client URLs, as etcd 3.4 (raftkv/api/mux.py); false: grpc.aio
    # owns the client sockets (gRPC only, no relay hop; bench/README.md has the hop's cost).
    client_urls_http: bool = True
    # etcd's gRPC server flags (raftkv/api/etcd/server.py GrpcLimits): the shortest spacing of
    # a client's pings (closer ones get GOAWAY too_many_pings), the server's own ping interval
    # and how long it waits for the answer (either 0: no pings), and the streams one client
    # connection may have open (etcd's default math.MaxUint32: unlimited).
    grpc_keepalive_min_time: str = "5s"
    grpc_keepalive_interval: str = "2h"
    grpc_keepalive_timeout: str = "20s"
    max_concurrent_streams: int = MAX_UINT32
    # TLS, with etcd's flags: an https:// client or native URL is served with --cert-file and
    # --key-file (and, with --client-cert-auth, only to clients whose certificate
    # --trusted-ca-file signed); https:// peer URLs use the --peer-* files both ways.
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    # Accept peer connections only from a certificate with this CN (etcd's flag).
    peer_cert_allowed_cn: str = ""
    # ... or only from a certificate valid for this host name (etcd's flag).
    peer_cert_allowed_hostname: str = ""
    # More of etcd's TLS flags (raftkv/tls.py): revocation lists the listeners check client and
    # peer certificates against; Go's TLS 1.2 cipher suite names, for every listener and the
    # peer dialer; self-signed certificates made in DATA_DIR/fixtures when https:// URLs come
    # without files; client certificates only for this host name; and no check of a
    # connecting peer's certificate SANs against its address.
    client_crl_file: str = ""
    peer_crl_file: str = ""
    cipher_suites: str = ""
    auto_tls: bool = False
    peer_auto_tls: bool = False
    client_cert_allowed_hostname: str = ""
    experimental_peer_skip_client_san_verification: bool = False
    # etcd's auto-compaction: periodic (retention: hours, or a duration such as 30m) or
    # revision (retention: revisions); retention 0 is off, etcd's default.
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    # etcd's periodic corruption check (a duration; 0s: off, etcd's default): the leader
    # compares the members' HashKV and raises the CORRUPT alarm when one differs.
    experimental_corrupt_check_time: str = "0s"
    # etcd's initial corruption check: a member that starts with data compares its HashKV
    # with its peers' before it serves clients, and refuses to start on a mismatch.
    experimental_initial_corrupt_check: bool = False
    # Authentication (etcd's flags): the token kind ("simple", or "jwt,..." with its options),
    # how long a simple token lives after its last use (s), and the password hash's work factor
    # (each step doubles it).
    auth_token: str = "simple"
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10
    _tls = None  # not a field (no flag): tls_contexts() once built
    _files = None  # not a field: {"client"|"peer": (cert, key)} as served (auto TLS's)
    _checks = None  # not a field: the (client, peer) CertChecks
    _jwt = None  # not a field: the JwtTokens of --auth-token jwt,..., built by finish()
    auto_compaction = 0  # not a field: the parsed retention (seconds or revisions; 0: off)
    corrupt_check_s = 0.0  # not a field: the parsed --experimental-corrupt-check-time
    grpc_keepalive_s = (5.0, 7200.0, 20.0)  # not a field: the --grpc-keepalive-* seconds
    # Not fields: what finish() derives from the etcd ops flags (see _finish_ops).
    notes = ()  # [(logging level, message)]: said at start-up (accepted flags that do nothing)
    log_targets = ("stderr",)  # --log-outputs: "stderr", "stdout" or file paths
    warning_apply_s = 0.1  # --experimental-warning-apply-duration
    watch_progress_s = 600.0  # --experimental-watch-progress-notify-interval
    apply_linger_s = None  # --backend-batch-interval (None: raftkv's default linger)

    def finish(self):
        """Fill derived defaults and validate; raises ConfigError."""
        if not self.data_dir:
            self.data_dir = f"./{self.name}.raftkv"
        if not self.advertise_client_urls:
            self.advertise_client_urls = self.listen_client_urls
        if not self.advertise_native_urls:
            self.advertise_native_urls = self.listen_native_urls
        if not self.initial_advertise_peer_urls:
            self.initial_advertise_peer_urls = self.listen_peer_urls
        if not self.initial_cluster:
            self.initial_cluster = ",".join(f"{self.name}={u}"
                                            for u in split_list(self.initial_advertise_peer_urls))
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError("--initial-cluster-state must be 'new' or 'existing', "
                              f"not {self.initial_cluster_state!r}")
        if self.heartbeat_interval <= 0:
            raise ConfigError("--heartbeat-interval must be positive")
        if self.election_timeout < 5 * self.heartbeat_interval:
            raise ConfigError("--election-timeout must be at least 5 times "
                              "--heartbeat-interval (etcd's rule)")
        if self.log_format not in ("text", "json"):
            raise ConfigError("--log-format must be 'text' or 'json'")
        if self.log_level.lower() not in ("debug", "info", "warn", "warning", "error"):
            raise ConfigError(f"--log-level {self.log_level!r} is not one of debug, info, "
                              "warn, error")
        if self.max_request_bytes <= 0 or self.snapshot_count <= 0 or self.max_txn_ops <= 0:
            raise ConfigError("--max-request-bytes, --snapshot-count and --max-txn-ops must "
                              "be positive")
        if not 0 <= self.grpc_workers <= 64:
            raise ConfigError("--grpc-workers must be between 0 and 64")
        if self.snapshot_catchup_entries < 1:
            raise ConfigError("--snapshot-catchup-entries must be at least 1")
        self.grpc_keepalive_s = (
            _duration_s(self.grpc_keepalive_min_time, "--grpc-keepalive-min-time"),
            _duration_s(self.grpc_keepalive_interval, "--grpc-keepalive-interval", zero_ok=True),
            _duration_s(self.grpc_keepalive_timeout, "--grpc-keepalive-timeout", zero_ok=True))
        if not 1 <= self.max_concurrent_streams <= MAX_UINT32:
            raise ConfigError(f"--max-concurrent-streams must be between 1 and {MAX_UINT32}")
        self._jwt = _jwt_tokens(self.auth_token)
        self.corrupt_check_s = _duration_s(self.experimental_corrupt_check_time,
                                           "--experimental-corrupt-check-time", zero_ok=True)
        self.auto_compaction = parse_retention(self.auto_compaction_mode,
                                               self.auto_compaction_retention)
        if self.auth_token_ttl <= 0:
            raise ConfigError("--auth-token-ttl must be positive (seconds)")
        if not 4 <= self.bcrypt_cost <= 16:
            raise ConfigError("--bcrypt-cost must be between 4 and 16")
        listeners = {"--listen-client-urls": self.client_listeners,
                     "--listen-native-urls": self.native_listeners,
                     "--listen-peer-urls": self.peer_listeners,
                     "--listen-metrics-urls": self.metrics_listeners,
                     "--listen-client-http-urls": self.client_http_listeners}
        _check_listeners(listeners)
        if not listeners["--listen-client-urls"] or not listeners["--listen-native-urls"] or \
                not listeners["--listen-peer-urls"]:
            raise ConfigError("--listen-client-urls, --listen-native-urls and "
                              "--listen-peer-urls need at least one URL each")
        members = self.cluster_members()
        if self.name not in members:
            raise ConfigError(f"--initial-cluster has no member named {self.name!r} "
                              f"(got {self.initial_cluster!r})")
        self._check_tls()
        self._finish_ops()
        return self

    def _finish_ops(self):
        """etcd's storage, logging, Raft, experimental, v2, discovery and proxy flags: check
        them, derive what the member uses, refuse those whose ignoring would mislead, and note
        (self.notes, logged at start-up) those accepted without effect."""
        notes = self._refuse_unsupported()
        if self.logger not in ("zap", "capnslog"):
            raise ConfigError(f"--logger must be 'zap' or 'capnslog', not {self.logger!r}")
        self.log_targets = parse_log_outputs(self.log_outputs)
        if self.debug:
            self.log_level = "debug"
        if self.log_package_levels:
            notes.append((logging.WARNING, "--log-package-levels is ignored: raftkv has one "
                          "log level for all its modules (--log-level)"))
        for name in ("max_wals", "max_snapshots", "backend_batch_limit",
                     "experimental_compaction_batch_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if self.max_wals != _FIELDS["max_wals"].default:
            notes.append((logging.INFO, "--max-wals is accepted without effect: raftkv deletes "
                          "a WAL segment as soon as the log is compacted past it"))
        if self.max_snapshots != _FIELDS["max_snapshots"].default:
            notes.append((logging.INFO, "--max-snapshots is accepted without effect: raftkv "
                          "writes no snapshot files (the store is the snapshot)"))
        if self.experimental_compaction_batch_limit == 0:  # etcd's 0: its default
            self.experimental_compaction_batch_limit = _FIELDS[
                "experimental_compaction_batch_limit"].default
        self.warning_apply_s = _duration_s(self.experimental_warning_apply_duration,
                                           "--experimental-warning-apply-duration")
        self.watch_progress_s = _duration_s(self.experimental_watch_progress_notify_interval,
                                            "--experimental-watch-progress-notify-interval")
        self.apply_linger_s = None if not self.backend_batch_interval else _duration_s(
            self.backend_batch_interval, "--backend-batch-interval", zero_ok=True)
        if self.backend_batch_limit:
            notes.append((logging.INFO, "--backend-batch-limit is accepted without effect: "
                          "the store commits when the applies queued so far are done or "
                          "--backend-batch-interval has passed"))
        if self.experimental_backend_bbolt_freelist_type not in ("array", "map"):
            raise ConfigError("--experimental-backend-bbolt-freelist-type must be 'array' or "
                              "'map'")
        if self.experimental_backend_bbolt_freelist_type != "array":
            notes.append((logging.INFO, "--experimental-backend-bbolt-freelist-type is "
                          "ignored: raftkv's store is LMDB, not bbolt"))
        if self.metrics not in ("basic", "extensive"):
            raise ConfigError("--metrics must be 'basic' or 'extensive'")
        if self.metrics == "extensive":
            notes.append((logging.INFO, "--metrics extensive: raftkv's /metrics has one fixed "
                          "set of metrics"))
        if self.enable_pprof:
            notes.append((logging.WARNING, "--enable-pprof is ignored: raftkv is not a Go "
                          "program and serves no /debug/pprof"))
        if self.cors not in ("", "*"):
            notes.append((logging.INFO, "--cors is ignored: raftkv serves no API to browsers "
                          "(its HTTP endpoint has only /health, /version and /metrics)"))
        self.notes = notes

    def _refuse_unsupported(self):
        """Discovery and the v2 proxy: refused when asked for (raftkv has neither, and starting
        without would mislead); their side flags, and --enable-v2 (no v2 API), are noted as
        ignored.
        Returns the notes."""
        notes = []
        for flag, value in (("--discovery", self.discovery), ("--discovery-srv",
                                                              self.discovery_srv)):
            if value:
                raise ConfigError(f"{flag} {value!r}: raftkv has no discovery service; list "
                                  "the members in --initial-cluster")
        if self.discovery_fallback not in ("exit", "proxy"):
            raise ConfigError("--discovery-fallback must be 'exit' or 'proxy'")
        for flag, value in (("--discovery-proxy", self.discovery_proxy),
                            ("--discovery-srv-name", self.discovery_srv_name)):
            if value:
                notes.append((logging.INFO, f"{flag} is ignored: it only applies to "
                              "discovery, which raftkv does not have"))
        if self.proxy != "off":
            raise ConfigError(f"--proxy {self.proxy!r}: raftkv has no v2 proxy mode; only "
                              "'off' is accepted")
        for name in ("proxy_failure_wait", "proxy_refresh_interval", "proxy_dial_timeout",
                     "proxy_write_timeout", "proxy_read_timeout"):
            if getattr(self, name) != _FIELDS[name].default:
                notes.append((logging.INFO, f"--{name.replace('_', '-')} is ignored: it only "
                              "applies to the v2 proxy mode, which raftkv does not have"))
        if self.enable_v2:
            # etcd 3.4's sample config sets it true, and many configs are copied from it: a v2
            # client fails at once (no v2 endpoint), so a warning is enough.
            notes.append((logging.WARNING, "--enable-v2 true is ignored: raftkv serves only "
                          "the etcd v3 API; v2 clients (/v2/keys) will fail"))
        if self.experimental_enable_v2v3:
            raise ConfigError("--experimental-enable-v2v3: raftkv has no v2 API to serve "
                              "through the v3 store")
        return notes

    def host_allowed(self, host):
        """--host-whitelist: whether an HTTP request's Host header (with or without a port)
        may be answered (empty or *: any)."""
        allowed = split_list(self.host_whitelist)
        if not allowed or "*" in allowed:
            return True
        return _host_only(host) in {h.lower() for h in allowed}

    @property
    def client_listeners(self):
        """The ListenURLs of --listen-client-urls (gRPC), every one of them served."""
        return listen_urls(self.listen_client_urls, "--listen-client-urls", unix_ok=True)

    @property
    def native_listeners(self):
        return listen_urls(self.listen_native_urls, "--listen-native-urls", unix_ok=True)

    @property
    def peer_listeners(self):
        return listen_urls(self.listen_peer_urls, "--listen-peer-urls")

    @property
    def metrics_listeners(self):
        return listen_urls(self.listen_metrics_urls, "--listen-metrics-urls")

    @property
    def client_http_listeners(self):
        return listen_urls(self.listen_client_http_urls, "--listen-client-http-urls",
                           unix_ok=True)

    @property
    def client_urls_muxed(self):
        """HTTP/1.1 beside gRPC on the client URLs (raftkv/api/mux.py), as etcd 3.4 serves
        them; not with --client-urls-http=false, nor with --grpc-workers, nor with
        --listen-client-http-urls (as etcd 3.5, whose flag it is: setting it takes the HTTP
        services off the client URLs, which then serve gRPC alone, without the relay hop)."""
        return self.client_urls_http and not self.grpc_workers and \
            not self.client_http_listeners

    @property
    def grpc_tls(self):
        """Some client URL is https:// or unixs:// (each URL's scheme decides for its own
        listener, as in etcd, so a list may mix plain and TLS)."""
        return any(u.tls for u in self.client_listeners)

    @property
    def native_tls(self):
        return any(u.tls for u in self.native_listeners)

    @property
    def metrics_tls(self):
        return any(u.tls for u in self.metrics_listeners)

    @property
    def client_tls(self):
        """Some client, native, metrics or client HTTP listener serves TLS with the client
        files."""
        return self.grpc_tls or self.native_tls or self.metrics_tls or \
            any(u.tls for u in self.client_http_listeners)

    @property
    def peer_tls(self):
        return _https(self.listen_peer_urls) or _https(self.initial_advertise_peer_urls)

    def _check_tls(self):
        """Each https:// listener has its files (or makes them, with --auto-tls), and they load
        (so a bad file stops the start with its name, not the first handshake)."""
        peer_urls = [u for urls in self.cluster_members().values() for u in urls]
        if len({_https(u) for u in peer_urls} | {self.peer_tls}) > 1:
            raise ConfigError("peer URLs mix http:// and https:// (--listen-peer-urls, "
                              "--initial-advertise-peer-urls, --initial-cluster): use one")
        for enabled, flags in ((self.client_tls, ("cert_file", "key_file", "trusted_ca_file",
                                                  "client_cert_auth", "auto_tls")),
                               (self.peer_tls, ("peer_cert_file", "peer_key_file",
                                                "peer_trusted_ca_file",
                                                "peer_client_cert_auth", "peer_auto_tls"))):
            cert, key, ca, auth, auto = (getattr(self, f) for f in flags)
            names = ["--" + f.replace("_", "-") for f in flags]
            if enabled and not (cert and key) and not (auto and not cert and not key):
                raise ConfigError(f"https:// URLs need {names[0]} and {names[1]} (or "
                                  f"{names[4]} without either)")
            if auth and not ca:
                raise ConfigError(f"{names[3]} needs {names[2]}")
            if auto and (cert or key):
                log.warning("%s ignored: %s/%s are given", names[4], names[0], names[1])
        for flag, value, needs in (
                ("--peer-cert-allowed-cn", self.peer_cert_allowed_cn, "peer"),
                ("--peer-cert-allowed-hostname", self.peer_cert_allowed_hostname, "peer"),
                ("--client-cert-allowed-hostname", self.client_cert_allowed_hostname, "client")):
            if needs == "peer" and value and not (self.peer_tls and self.peer_client_cert_auth):
                raise ConfigError(f"{flag} needs https:// peer URLs and "
                                  "--peer-client-cert-auth (else no peer certificate is checked)")
            if needs == "client" and value and not (self.client_tls and self.client_cert_auth):
                raise ConfigError(f"{flag} needs https:// client URLs and --client-cert-auth "
                                  "(else no client certificate is checked)")
        if self.peer_cert_allowed_cn and self.peer_cert_allowed_hostname:
            raise ConfigError("--peer-cert-allowed-cn and --peer-cert-allowed-hostname are "
                              "mutually exclusive")
        try:
            self.tls_contexts()
        except TLSConfigError as exc:
            raise ConfigError(f"TLS: {exc}") from exc

    @property
    def ciphers(self):
        """OpenSSL's cipher string for --cipher-suites ("": the defaults)."""
        try:
            return tls.openssl_ciphers(self.cipher_suites)
        except TLSConfigError as exc:
            raise ConfigError(f"--cipher-suites: {exc}") from None

    def client_cert_paths(self):
        """(certificate, key) files the client listeners serve: --cert-file and --key-file, or
        with --auto-tls and neither given, the pair made in DATA_DIR/fixtures/client."""
        self.tls_contexts()
        return self._files["client"]

    def cert_checks(self):
        """(client, peer) CertChecks (raftkv.tls): the CRL files and allowed host name."""
        self.tls_contexts()
        return self._checks

    def jwt_tokens(self):
        """The JwtTokens of --auth-token jwt,... (None: simple tokens)."""
        return self._jwt

    def tls_contexts(self):
        """(client listener, peer listener, peer dialer) SSLContexts, None where plain. Built
        once, while the flags are checked (finish), then shared by the listeners and dialer."""
        if self._tls is None:
            self._tls = self._load_tls()
        return self._tls

    def _load_tls(self):
        client = peer_in = peer_out = None
        ciphers = self.ciphers
        files = {"client": (self.cert_file, self.key_file),
                 "peer": (self.peer_cert_file, self.peer_key_file)}
        fixtures = os.path.join(self.data_dir, "fixtures")
        if self.client_tls and self.auto_tls and not (self.cert_file or self.key_file):
            hosts = [u.host for u in self.client_listeners + self.native_listeners +
                     self.metrics_listeners + self.client_http_listeners if not u.unix]
            files["client"] = tls.self_cert(os.path.join(fixtures, "client"), hosts)
        peer_auto = self.peer_auto_tls and not (self.peer_cert_file or self.peer_key_file)
        if self.peer_tls and peer_auto:
            files["peer"] = tls.self_cert(os.path.join(fixtures, "peer"),
                                          [u.host for u in self.peer_listeners])
        if self.client_tls:
            client = tls.server_context(*files["client"], self.trusted_ca_file,
                                        self.client_cert_auth, ciphers=ciphers)
        if self.peer_tls:
            peer_in = tls.server_context(*files["peer"], self.peer_trusted_ca_file,
                                         self.peer_client_cert_auth, ciphers=ciphers)
            # With --peer-auto-tls the peers' certificates are self-signed: not verified, as
            # etcd's self-signed peer TLS skips the verification.
            peer_out = tls.client_context(self.peer_trusted_ca_file or None, *files["peer"],
                                          verify=not peer_auto, ciphers=ciphers)
        self._files = files
        self._checks = (
            tls.CertCheck(self.client_crl_file, self.client_cert_allowed_hostname,
                          "--client-crl-file"),
            tls.CertCheck(self.peer_crl_file, None, "--peer-crl-file"))
        return client, peer_in, peer_out

    def cluster_members(self):
        """{name: [peer urls]} from --initial-cluster ("n1=http://a:2380,n2=...")."""
        out = {}
        for item in split_list(self.initial_cluster):
            name, sep, url = item.partition("=")
            if not sep or not name or not url:
                raise ConfigError(f"--initial-cluster item {item!r} is not NAME=URL")
            host_port(url)
            out.setdefault(name, []).append(url)
        return out

    def member_ids(self):
        """{name: member id}, derived from the peer URLs and the token (stable across restarts,
        identical on every member, as etcd derives its IDs)."""
        return {name: member_id(urls, self.initial_cluster_token)
                for name, urls in self.cluster_members().items()}

    def cluster_id(self):
        ids = sorted(self.member_ids().values())
        raw = self.initial_cluster_token.encode() + b"".join(i.to_bytes(8, "big") for i in ids)
        return _id64(raw)

    @property
    def tick_s(self):
        return self.heartbeat_interval / 1000.0

    @property
    def election_ticks(self):
        return max(2, round(self.election_timeout / self.heartbeat_interval))


# What `raftkv --help` says each ServerConfig field does (units, accepted values); _parser()
# appends the default and the environment variable. tests/unit/member/test_config_help.py
# checks that every field has one: a new field needs its line here.
FLAG_HELP = {
    "name": "Human-readable name of this member; must be one of the names in --initial-cluster.",
    "data_dir": "Directory of this member's WAL and LMDB store (empty: ./NAME.raftkv).",
    "listen_client_urls": "URLs (comma-separated) to serve etcd's gRPC API and, on the same "
                          "port, its HTTP gateway and /health on; https:// or unixs:// (a "
                          "Unix socket) needs --cert-file and --key-file (or --auto-tls).",
    "advertise_client_urls": "Client URLs (comma-separated) this member publishes to the "
                             "cluster, as `member list` shows them (empty: "
                             "--listen-client-urls).",
    "listen_native_urls": "URLs to serve raftkv's native msgpack protocol on (no etcd "
                          "equivalent), each one; https:// or unixs:// uses the client TLS "
                          "files, unix:// is a Unix socket.",
    "advertise_native_urls": "Native URLs (comma-separated) this member publishes beside "
                             "its client URLs (no etcd equivalent), which raftkvctl --cluster "
                             "dials (empty: --listen-native-urls).",
    "listen_client_http_urls": "URLs to serve the JSON gateway, /health and /metrics on "
                               "instead of the client URLs (then gRPC only, as etcd 3.5); "
                               "https:// or unixs:// uses the client TLS files.",
    "listen_metrics_urls": "URLs to serve /health, /version and /metrics on (empty: off); "
                           "https:// uses the client TLS files.",
    "listen_peer_urls": "URLs to listen on for the other members' Raft traffic, each one "
                        "(https:// uses the --peer-* TLS files).",
    "initial_advertise_peer_urls": "This member's peer URLs as the others reach them; its "
                                   "dials to peers also leave from this host (empty: "
                                   "--listen-peer-urls).",
    "initial_cluster": "The cluster's first members, NAME=PEER_URL,... (member IDs are derived "
                       "from it; empty: this member alone at its advertised peer URL).",
    "initial_cluster_state": "'new' to bootstrap a new cluster with --initial-cluster, "
                             "'existing' to join a running one (after `member add`).",
    "initial_cluster_token": "The cluster's token: IDs are derived from it and peers with "
                             "another token are refused, which keeps clusters apart.",
    "force_new_cluster": "After losing a majority for good: keep this data dir's data and "
                         "whole log and make this member its cluster's only one; add members "
                         "back with `member add` (ignored on an empty data dir).",
    "heartbeat_interval": "Milliseconds between the leader's heartbeats (one Raft tick).",
    "election_timeout": "Milliseconds a follower waits without hearing from a leader before it "
                        "campaigns; at least 5 times --heartbeat-interval.",
    "snapshot_count": "Applied entries between snapshot points, where the Raft log is "
                      "compacted (positive).",
    "snapshot_catchup_entries": "Log entries kept after a compaction, so that a follower a "
                                "little behind catches up from the log, not a snapshot.",
    "quota_backend_bytes": "Store size in bytes above which the NOSPACE alarm is raised and "
                           "writes are refused until `alarm disarm` (reads go on; 0: no quota).",
    "max_request_bytes": "Largest client request accepted, in bytes (positive).",
    "max_txn_ops": "Most operations in a txn's compare, success or failure list (positive).",
    "log_level": "Least severe log messages written: debug, info, warn or error.",
    "log_format": "Log line format: text, or json (one object per line); with --logger zap "
                  "and no --log-format: json.",
    "wal_dir": "Directory of the WAL (the Raft log), e.g. on a dedicated disk (empty: "
               "DATA_DIR/wal). Keep it with its data dir: either alone is refused.",
    "max_wals": "Most WAL files to keep (etcd's retention); accepted, no effect: a WAL segment is "
                "deleted as soon as the log is compacted past it.",
    "max_snapshots": "Most snapshot files to keep (etcd's retention); accepted, no effect: raftkv "
                     "writes no snapshot files (the store is the snapshot).",
    "logger": "Which of etcd's loggers, zap or capnslog; raftkv has one logger: zap makes json the "
              "default --log-format.",
    "log_outputs": "Where log lines go: default (= stderr), stderr, stdout or file paths "
                   "(appended to); a comma-separated list.",
    "debug": "Log at debug level (the same as --log-level debug).",
    "log_package_levels": "Per-package log levels (etcd's capnslog); accepted and ignored with a "
                          "warning: raftkv has one --log-level.",
    "pre_vote": "Run Raft's pre-vote phase, so a member that was cut off does not raise the "
                "term when it returns (true/false; raftkv's default true, etcd 3.4's false).",
    "initial_election_tick_advance": "At start, fast-forward the election clock so the first "
                                     "election comes sooner (once peers are connected; a "
                                     "1-member cluster always).",
    "strict_reconfig_check": "Refuse member add, remove and promote that could leave the "
                             "cluster without a quorum of started, connected members.",
    "experimental_compaction_batch_limit": "Most keys whose old revisions one compaction "
                                           "step deletes (0: the default 1000).",
    "experimental_warning_apply_duration": "Log a warning when applying one log entry takes "
                                           "longer than this (a duration such as 100ms).",
    "experimental_enable_lease_checkpoint": "The leader records the remaining TTL of leases "
                                            "longer than 5 minutes in the log every 5 minutes; "
                                            "a new leader resumes each lease from it instead "
                                            "of its full TTL.",
    "experimental_watch_progress_notify_interval": "How often (a duration) watchers created "
                                                   "with progress_notify get an empty "
                                                   "progress response while idle.",
    "backend_batch_interval": "Longest time (a duration) the store waits for more applies "
                              "before committing (empty: raftkv's 20ms).",
    "backend_batch_limit": "Most operations per store commit (etcd's bbolt batching); accepted, no"
                           " effect (0: "
                           "none).",
    "experimental_backend_bbolt_freelist_type": "The bbolt freelist type, array or map; accepted "
                                                "and ignored: the "
                                                "store is LMDB, not bbolt.",
    "metrics": "Metric detail, basic or extensive; accepted: raftkv's /metrics serves one fixed "
               "set.",
    "enable_pprof": "Accepted, ignored with a warning: raftkv is not a Go program and serves "
                    "no /debug/pprof.",
    "enable_v2": "Accepted, with a warning when true: raftkv has no etcd v2 API.",
    "experimental_enable_v2v3": "Refused when set: raftkv has no etcd v2 API.",
    "cors": "Origins allowed by CORS (etcd's HTTP API); accepted, ignored: raftkv serves no HTTP "
            "API to browsers.",
    "host_whitelist": "Host names the HTTP endpoint (--listen-metrics-urls) answers, "
                      "comma-separated (empty or *: any); others get 421.",
    "discovery": "Refused when set: raftkv has no discovery service (use --initial-cluster).",
    "discovery_fallback": "What to do when discovery fails, exit or proxy; only with discovery, "
                          "which raftkv refuses.",
    "discovery_proxy": "Ignored (only with discovery, which raftkv refuses).",
    "discovery_srv": "Refused when set: raftkv has no DNS discovery (use --initial-cluster).",
    "discovery_srv_name": "Ignored (only with DNS discovery, which raftkv refuses).",
    "proxy": "The v2 proxy mode of etcd: only 'off' is accepted (raftkv has no proxy mode).",
    "proxy_failure_wait": "Ignored (v2 proxy mode only), milliseconds.",
    "proxy_refresh_interval": "Ignored (v2 proxy mode only), milliseconds.",
    "proxy_dial_timeout": "Ignored (v2 proxy mode only), milliseconds.",
    "proxy_write_timeout": "Ignored (v2 proxy mode only), milliseconds.",
    "proxy_read_timeout": "Ignored (v2 proxy mode only), milliseconds.",
    "request_timeout": "Seconds a client read or write waits (for a leader, a quorum, the "
                       "apply) before it fails with a timeout.",
    "client_urls_http": "Serve HTTP (the JSON gateway, /health, /metrics) on "
                        "--listen-client-urls beside gRPC, as etcd 3.4, unless "
                        "--listen-client-http-urls is set (etcd 3.5); false: gRPC only.",
    "grpc_workers": "Worker processes (0..64) serving the etcd gRPC API on the client port, "
                    "each forwarding to this member; 0: the member serves gRPC itself.",
    "grpc_keepalive_min_time": "Shortest time (a duration such as 5s) a gRPC client must wait "
                               "between pings; one pinging faster is sent GOAWAY.",
    "grpc_keepalive_interval": "How often (a duration) the gRPC server pings a client "
                               "connection to check it is alive; 0: never.",
    "grpc_keepalive_timeout": "How long (a duration) the gRPC server waits for a ping's answer "
                              "before closing the connection; 0: no pings.",
    "max_concurrent_streams": "Most gRPC streams (calls, watches) one client connection may "
                              "have open at a time (1..4294967295, which means unlimited).",
    "cert_file": "Certificate file (PEM) served on https:// client and native URLs.",
    "key_file": "Private key file (PEM) of --cert-file.",
    "trusted_ca_file": "CA certificate file (PEM) that clients' certificates are checked "
                       "against (with --client-cert-auth).",
    "client_cert_auth": "Serve only clients presenting a certificate signed by "
                        "--trusted-ca-file (true/false; the flag alone means true).",
    "peer_cert_file": "Certificate file (PEM) this member presents on https:// peer "
                      "connections, both as listener and as dialer.",
    "peer_key_file": "Private key file (PEM) of --peer-cert-file.",
    "peer_trusted_ca_file": "CA certificate file (PEM) that peers' certificates are checked "
                            "against.",
    "peer_client_cert_auth": "Accept peer connections only with a certificate signed by "
                             "--peer-trusted-ca-file (true/false; alone: true).",
    "peer_cert_allowed_cn": "Accept peer connections only from a certificate with this common "
                            "name (needs --peer-client-cert-auth).",
    "peer_cert_allowed_hostname": "Accept peer connections only from a certificate valid for "
                                  "this host name (needs --peer-client-cert-auth; not with "
                                  "--peer-cert-allowed-cn).",
    "client_crl_file": "Certificate revocation list (PEM or DER): client certificates whose "
                       "serial it lists are refused (read again when the file changes).",
    "peer_crl_file": "Certificate revocation list (PEM or DER): peer certificates whose serial "
                     "it lists are refused (read again when the file changes).",
    "cipher_suites": "TLS 1.2 cipher suites (Go's names, comma-separated, e.g. "
                     "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) for clients and peers (empty: "
                     "the defaults; TLS 1.3 is unaffected).",
    "auto_tls": "Serve https:// client URLs with a self-signed certificate made in "
                "DATA_DIR/fixtures/client when --cert-file and --key-file are not given.",
    "peer_auto_tls": "Peer TLS with a self-signed certificate made in DATA_DIR/fixtures/peer "
                     "when --peer-cert-file and --peer-key-file are not given; peers' "
                     "certificates are then not verified.",
    "client_cert_allowed_hostname": "With --client-cert-auth, accept only client certificates "
                                    "valid for this host name (a SAN DNS name or IP address).",
    "experimental_peer_skip_client_san_verification": "Do not check that a connecting peer's "
                                                      "certificate SANs cover the address it "
                                                      "connects from (true/false).",
    "auto_compaction_mode": "How --auto-compaction-retention is read: periodic (a time) or "
                            "revision (a number of revisions).",
    "auto_compaction_retention": "History that auto-compaction keeps: periodic mode takes "
                                 "hours (1, 0.5) or a duration (30m, 1h30m), revision mode a "
                                 "revision count; 0: off.",
    "experimental_corrupt_check_time": "Interval (a duration such as 5m) at which the leader "
                                       "compares the members' HashKV and raises the CORRUPT "
                                       "alarm if one differs; 0s: off.",
    "experimental_initial_corrupt_check": "Before serving clients, a member starting with "
                                          "data compares its HashKV with its peers' and "
                                          "refuses to start if one differs (true/false).",
    "auth_token": "Auth token kind: simple, or jwt,priv-key=FILE,sign-method=METHOD"
                  "[,pub-key=FILE][,ttl=DURATION].",
    "auth_token_ttl": "Seconds a simple auth token stays valid after its last use (positive).",
    "bcrypt_cost": "Work factor (4..16) of the password hash; each step doubles the work.",
}


_JWT_OPTIONS = ("pub-key", "priv-key", "sign-method", "ttl")


def _jwt_tokens(spec):
    """None for --auth-token simple; the JwtTokens of "jwt,pub-key=F,priv-key=F,sign-method=M
    [,ttl=5m]" (etcd's syntax; HS* methods take the secret in priv-key). ConfigError names
    what is wrong (a missing option or file, a key that does not fit the method)."""
    kind, _, rest = spec.partition(",")
    if kind == "simple" and not rest:
        return None
    if kind != "jwt":
        raise ConfigError(f"--auth-token {spec!r}: expected 'simple' or 'jwt,pub-key=...,"
                          "priv-key=...,sign-method=...[,ttl=...]'")
    opts = {}
    for item in filter(None, rest.split(",")):
        name, eq, value = item.partition("=")
        if not eq or name not in _JWT_OPTIONS:
            raise ConfigError(f"--auth-token: unknown jwt option {item!r} (known: "
                              f"{', '.join(_JWT_OPTIONS)})")
        opts[name] = value
    if not opts.get("sign-method"):
        raise ConfigError("--auth-token jwt needs sign-method=...")
    if not opts.get("priv-key") and not opts.get("pub-key"):
        raise ConfigError("--auth-token jwt needs priv-key=... (to sign tokens), pub-key=... "
                          "(to check them: a verify-only member), or both")
    keys = {}
    for name in ("priv-key", "pub-key"):
        if opts.get(name):
            try:
                with open(opts[name], "rb") as f:
                    keys[name] = f.read()
            except OSError as exc:
                raise ConfigError(f"--auth-token {name}={opts[name]}: {exc}") from None
    try:
        return JwtTokens(opts["sign-method"], keys.get("priv-key"), keys.get("pub-key"),
                         _duration_s(opts.get("ttl", "5m"), "--auth-token jwt ttl"))
    except Exception as exc:  # noqa: BLE001 -- PyJWT/cryptography raise many kinds
        raise ConfigError(f"--auth-token jwt: {exc}") from None


def parse_retention(mode, text):
    """--auto-compaction-retention in seconds (periodic) or revisions (revision); 0: off.
    periodic takes a duration ("30m", "1h30m") or a number of hours ("1", "0.5"), as etcd."""
    text = str(text).strip()
    if mode not in autocompact.MODES:
        raise ConfigError("--auto-compaction-mode must be periodic or revision, not "
                          f"{mode!r}")
    if mode == "revision":
        if not text.isdigit():
            raise ConfigError(f"--auto-compaction-retention {text!r}: revision mode takes a "
                              "number of revisions")
        return int(text)
    try:
        hours = float(text)
    except ValueError:
        return _duration_s(text, "--auto-compaction-retention", zero_ok=True)
    if hours < 0:
        raise ConfigError("--auto-compaction-retention must not be negative")
    return hours * autocompact.HOUR_S


def _duration_s(text, flag, zero_ok=False):
    """Seconds of a Go duration such as "5m", "300s", "1h30m" or "1.5h" (positive, or 0
    with zero_ok); ConfigError names flag."""
    if text == "0" and zero_ok:
        return 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{flag} {text!r} is not a duration like 5m or 300s")
    seconds = sum(float(n) * units[u] for n, u in parts)
    if seconds <= 0 and not zero_ok:
        raise ConfigError(f"{flag} must be positive")
    return seconds


def parse_log_outputs(value):
    """--log-outputs ("default", "stderr", "stdout" or file paths; a comma list, or a YAML
    list) as a tuple of targets; default is stderr (etcd writes to journald under systemd,
    raftkv leaves that to the service manager, which captures stderr)."""
    items = value if isinstance(value, (list, tuple)) else split_list(value)
    out = []
    for item in items:
        item = str(item).strip()
        target = "stderr" if item == "default" else item
        if target and target not in out:
            out.append(target)
    if not out:
        raise ConfigError("--log-outputs is empty: give default, stderr, stdout or a file")
    return tuple(out)


def _host_only(host):
    """The host name of a Host header ("a:2379", "[::1]:2379" -> "a", "::1"), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def _id64(raw):
    v = int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")
    return v or 1


def member_id(peer_urls, token):
    return _id64(("|".join(sorted(peer_urls)) + "#" + token).encode())


def _https(urls):
    return any(u.lower().startswith(("https://", "unixs://")) for u in split_list(urls))


def split_list(value):
    """The items of a comma-separated flag value (URLs, host names), stripped, empty ones
    dropped."""
    return [v.strip() for v in str(value).split(",") if v.strip()]


def host_port(url):
    """("127.0.0.1", 2379) from "http://127.0.0.1:2379" (or "127.0.0.1:2379")."""
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https", "tcp") or not parsed.hostname:
        raise ConfigError(f"bad URL {url!r}: expected http://HOST:PORT")
    try:
        port = parsed.port
    except ValueError as exc:
        raise ConfigError(f"bad URL {url!r}: {exc}") from exc
    if port is None:
        raise ConfigError(f"URL {url!r} has no port")
    return parsed.hostname, port


@dataclasses.dataclass(frozen=True)
class ListenURL:
    """One URL of a --listen-*-urls list: where its listener binds, and whether it serves TLS
    (https:// and unixs://; each URL's own scheme decides, as in etcd)."""

    url: str
    tls: bool
    host: str = ""  # TCP: the address to bind ("" with a Unix socket)
    port: int = 0  # TCP: the port (0: the OS picks one)
    path: str = ""  # a Unix socket's file (unix:// or unixs://); "" for TCP

    @property
    def unix(self):
        return bool(self.path)

    def key(self):
        """What two listeners cannot share: a socket file, or a host and port."""
        return ("unix", self.path) if self.unix else ("tcp", self.host, self.port)

    def describe(self):
        """host:port or unix:path, for logs."""
        if self.unix:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def listen_urls(value, flag, unix_ok=False):
    """The ListenURLs of a comma-separated --listen-*-urls value. unix:// and unixs:// name a
    Unix socket by what follows the scheme, etcd's rule (unix://localhost:2379 is the file
    "localhost:2379" in the working directory, unix:///run/raftkv.sock an absolute path);
    unix_ok=False refuses them, naming flag."""
    out = []
    for url in split_list(value):
        scheme = url.partition("://")[0].lower() if "://" in url else "http"
        if scheme in ("unix", "unixs"):
            if not unix_ok:
                raise ConfigError(f"{flag}: {url!r}: Unix sockets are served only for client, "
                                  "client HTTP and native URLs (use http:// or https://)")
            path = url.split("://", 1)[1]
            if not path:
                raise ConfigError(f"{flag}: {url!r} names no socket file")
            out.append(ListenURL(url, scheme == "unixs", path=path))
            continue
        if scheme not in ("http", "https"):
            raise ConfigError(f"{flag}: {url!r}: expected http://, https://, unix:// or "
                              "unixs://" if unix_ok else
                              f"{flag}: {url!r}: expected http:// or https://")
        try:
            host, port = host_port(url)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        out.append(ListenURL(url, scheme == "https", host, port))
    return out


def first_host_port(urls):
    """(host, port) of the first URL of a list: the host a member's peer dials leave from
    (its first --initial-advertise-peer-urls URL)."""
    return host_port(split_list(urls)[0])


def _check_listeners(listeners):
    """No two listeners, in one list or across lists, on the same address (port 0 aside:
    the OS picks a different one for each). etcd serves http and https on one address from a
    single listener (cmux); raftkv's listeners are one protocol each, so that is refused."""
    seen = {}
    for flag, urls in listeners.items():
        for u in urls:
            if not u.unix and u.port == 0:
                continue
            other = seen.get(u.key())
            if other is not None:
                raise ConfigError(f"{flag} {u.url!r}: {u.describe()} is already taken by "
                                  f"{other[0]} {other[1]!r}; give each URL its own address")
            seen[u.key()] = (flag, u.url)


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class _Version(argparse.Action):
    """--version: what etcd --version prints, for raftkv (its version, the etcd API version
    it answers as, the Python that runs it), then exit 0."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        import platform

        import raftkv
        from raftkv.server.service import VERSION  # not at import time: service imports us
        sys.stdout.write(f"raftkv Version: {raftkv.__version__}\netcd API Version: {VERSION}\n"
              f"Python Version: {platform.python_version()}\n"
              f"Python OS/Arch: {platform.system().lower()}/{platform.machine()}\n")
        parser.exit(0)


def _parser():
    p = argparse.ArgumentParser(prog="raftkv", description="A raftkv cluster member.")
    p.add_argument("--version", action=_Version, help="print the version and exit")
    p.add_argument("--config-file", help="YAML file of flag names (with dashes or "
                   "underscores) to values; flags and RAFTKV_* variables override it "
                   "(env RAFTKV_CONFIG_FILE)")
    for name, f in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        # A boolean flag may stand alone (--client-cert-auth), as etcd's do, or take a value.
        extra = {"nargs": "?", "const": "true"} if type(f.default) is bool else {}
        text = f"{FLAG_HELP.get(name, '')} (default: {f.default!r}; env RAFTKV_{name.upper()})"
        p.add_argument(flag, dest=name, default=None, type=str, **extra,
                       help=text.replace("%", "%%"))  # argparse %-formats help texts
    return p


def _coerce(name, value):
    typ = type(_FIELDS[name].default)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word not in _BOOLS:
                raise ValueError(value)
            return _BOOLS[word]
        if typ is int:
            return int(str(value).replace("_", ""))
        if typ is float:
            return float(value)
        if isinstance(value, (list, tuple)):  # a YAML list, e.g. log-outputs: [stderr, F]
            return ",".join(str(v) for v in value)
        return str(value)
    except ValueError as exc:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag}: {value!r} is not a valid {typ.__name__}") from exc


def load_config(argv=None, environ=None):
    """Parse flags, environment and config file into a validated ServerConfig."""
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    values = {}
    path = args.config_file or environ.get("RAFTKV_CONFIG_FILE")
    if path:
        values.update(_read_yaml(path))
    for name in _FIELDS:
        env = environ.get("RAFTKV_" + name.upper())
        if env is not None:
            values[name] = env
        flag_value = getattr(args, name)
        if flag_value is not None:
            values[name] = flag_value
    if str(values.get("logger", "")).strip() == "zap" and "log_format" not in values:
        values["log_format"] = "json"  # etcd's zap logger writes JSON lines
    cfg = ServerConfig(**{k: _coerce(k, v) for k, v in values.items()})
    return cfg.finish()


# etcd's config file groups the TLS settings in two blocks (its securityConfig); the keys
# inside name the same things as these flags.
_TLS_BLOCKS = {
    "client-transport-security": {"cert-file": "cert_file", "key-file": "key_file",
                                  "client-cert-auth": "client_cert_auth",
                                  "trusted-ca-file": "trusted_ca_file", "auto-tls": "auto_tls"},
    "peer-transport-security": {"cert-file": "peer_cert_file", "key-file": "peer_key_file",
                                "client-cert-auth": "peer_client_cert_auth",
                                "trusted-ca-file": "peer_trusted_ca_file",
                                "auto-tls": "peer_auto_tls"},
}


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config-file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"--config-file {path}: expected a mapping of flag names to values")
    out = {}
    for block, names in _TLS_BLOCKS.items():
        inner = doc.pop(block, None)
        if inner is None:
            continue
        if not isinstance(inner, dict):
            raise ConfigError(f"--config-file {path}: {block} must be a mapping of "
                              f"{', '.join(names)}")
        for key, value in inner.items():
            if key not in names:
                raise ConfigError(f"--config-file {path}: unknown setting {key!r} in {block} "
                                  f"(known: {', '.join(names)})")
            if value is not None:
                out[names[key]] = value
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"--config-file {path}: unknown setting {key!r}")
        if value is None:  # "data-dir:" with no value, as etcd's sample has: the default
            continue
        out[name] = value
    return out
