"""Conformance runner: the same etcdctl scenarios against a real etcd 3-member cluster and a
raftkv 3-member cluster, outputs compared after normalisation.

    python -m tests.etcdctl.conformance            # starts both clusters, prints the diffs

Both clusters are fresh, so revisions line up when the scenarios run in the same order; what
cannot line up (member, cluster and lease IDs, ports, durations, raft terms and indexes, db sizes)
is replaced by placeholders. IDs are numbered in order of first appearance, so "the same lease
twice" still compares equal. A difference that is deliberate is listed in KNOWN_DIFFERENCES with
its reason (mirrored in docs/ETCD_DIFFERENCES.md); everything else is a failure.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from raftkv.cli.local_cluster import free_ports, stop_processes

ETCD = shutil.which("etcd")
STOP_GRACE_S = 10.0


@dataclasses.dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None

    @property
    def client_url(self):
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def grpc_endpoint(self):
        return f"127.0.0.1:{self.client_port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """A real etcd cluster on fresh loopback ports, data in data_root; stopped by PID."""

    def __init__(self, data_root, members=3, token="etcd-conformance", extra_args=()):
        self.data_root = os.path.abspath(data_root)
        self.token = token
        self.extra_args = list(extra_args)  # appended to every member's command line
        ports = free_ports(2 * members)
        self.members = [
            EtcdMember(f"m{i + 1}", ports[2 * i], ports[2 * i + 1],
                       os.path.join(self.data_root, f"m{i + 1}.etcd"),
                       os.path.join(self.data_root, f"m{i + 1}.log"))
            for i in range(members)]

    @property
    def endpoints(self):
        return [m.grpc_endpoint for m in self.members]

    @property
    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def command(self, m):
        return [ETCD, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token, "--heartbeat-interval", "50",
                "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr",
                *self.extra_args]

    def start(self):
        os.makedirs(self.data_root, exist_ok=True)
        for m in self.members:
            with open(m.log_path, "ab") as out:
                m.proc = subprocess.Popen(self.command(m), stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    def stop(self):
        stop_processes(self.members, STOP_GRACE_S)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def add_etcd_member(cluster, name):
    """A new EtcdMember on fresh ports (not started), appended to cluster.members."""
    client_port, peer_port = free_ports(2)
    m = EtcdMember(name, client_port, peer_port,
                   os.path.join(cluster.data_root, f"{name}.etcd"),
                   os.path.join(cluster.data_root, f"{name}.log"))
    cluster.members.append(m)
    return m


def start_etcd_member(cluster, m, state="existing"):
    cmd = cluster.command(m)
    cmd[cmd.index("--initial-cluster-state") + 1] = state
    with open(m.log_path, "ab") as out:
        m.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------- scenarios
@dataclasses.dataclass
class Step:
    """One etcdctl call. args may hold {name} fields filled from earlier captures; capture is
    (regex, name): group 1 of the regex on stdout is saved as name. sort_lines: compare the
    lines as a set (output ordered by member ID, which differs between clusters)."""
    name: str
    args: tuple
    stdin: str | None = None
    capture: tuple | None = None
    sort_lines: bool = False
    one_endpoint: bool = False
    watch_lines: int = 0  # > 0: run in the background, collect this many lines, stop it
    retry_on: str = ""  # retry (up to 30 s) while stderr contains this


TXN = 'value("c/k") = "v1"\n\nput c/k v2\nget c/k\n\nput c/else x\n\n'
TXN_SUB_HEADERS = ('mod("c/k") > "0"\n\nget c/k\ndel c/nothing\nput c/t v\nget c/t\n'
                   'del c/nothing\n\nget c/l\n\n')
ROOT, ALICE = ("--user", "root:rootpw"), ("--user", "alice:alicepw")
# Last, so that the steps above run without auth; the final step turns it off again.
AUTH_SCENARIOS = [
    Step("auth-user-add-root", ("user", "add", "root:rootpw")),
    Step("auth-user-add-again", ("user", "add", "root:other")),
    Step("auth-enable", ("auth", "enable")),  # etcdctl adds the root role itself
    Step("auth-put-no-user", ("put", "a/k", "v")),
    Step("auth-put-root", ("put", "a/k", "v", *ROOT)),
    Step("auth-member-list-no-user", ("member", "list"), sort_lines=True),
    Step("auth-lease-grant-no-user", ("lease", "grant", "100")),
    Step("auth-del-no-user", ("del", "a/k")),
    Step("auth-txn-no-user", ("txn",), stdin='value("a/k") = "v"\n\nput a/k w\n\n\n'),
    Step("auth-health-no-user", ("endpoint", "health", "-w", "table"), sort_lines=True),
    Step("auth-health-root", ("endpoint", "health", "-w", "table", *ROOT), sort_lines=True),
    Step("auth-bad-password", ("get", "a/k", "--user", "root:wrong")),
    Step("auth-unknown-user", ("get", "a/k", "--user", "nobody:pw")),
    Step("auth-role-add", ("role", "add", "reader", *ROOT)),
    Step("auth-role-add-again", ("role", "add", "reader", *ROOT)),
    Step("auth-grant-read", ("role", "grant-permission", "reader", "read", "a/", "--prefix",
                             *ROOT)),
    Step("auth-grant-rw", ("role", "grant-permission", "reader", "readwrite", "a/mine",
                           *ROOT)),
    Step("auth-grant-from-key", ("role", "grant-permission", "reader", "write", "z",
                                 "--from-key", *ROOT)),
    Step("auth-grant-missing-role", ("role", "grant-permission", "nope", "read", "x", *ROOT)),
    Step("auth-role-get", ("role", "get", "reader", *ROOT)),
    Step("auth-role-get-root", ("role", "get", "root", *ROOT)),
    # the auth verbs' other output formats: json is the response (header included), fields
    # its header and lines, and no table (the request is made, then the error)
    Step("auth-role-get-json", ("role", "get", "reader", "-w", "json", *ROOT)),
    Step("auth-role-get-fields", ("role", "get", "reader", "-w", "fields", *ROOT)),
    Step("auth-role-get-table", ("role", "get", "reader", "-w", "table", *ROOT)),
    Step("auth-role-add-json", ("role", "add", "tmp", "-w", "json", *ROOT)),
    Step("auth-grant-fields", ("role", "grant-permission", "tmp", "write", "t/", "--prefix",
                               "-w", "fields", *ROOT)),
    Step("auth-revoke-perm-json", ("role", "revoke-permission", "tmp", "t/", "--prefix",
                                   "-w", "json", *ROOT)),
    Step("auth-role-list-json", ("role", "list", "-w", "json", *ROOT)),
    Step("auth-role-list-fields", ("role", "list", "-w", "fields", *ROOT)),
    Step("auth-role-delete-table", ("role", "delete", "tmp", "-w", "table", *ROOT)),
    Step("auth-user-add-fields", ("user", "add", "carol:pw", "-w", "fields", *ROOT)),
    Step("auth-user-grant-json", ("user", "grant-role", "carol", "root", "-w", "json", *ROOT)),
    Step("auth-user-revoke-fields", ("user", "revoke-role", "carol", "root", "-w", "fields",
                                     *ROOT)),
    Step("auth-user-passwd-json", ("user", "passwd", "carol", "--interactive=false", "-w",
                                   "json", *ROOT), stdin="pw2\n"),
    Step("auth-user-delete-json", ("user", "delete", "carol", "-w", "json", *ROOT)),
    Step("auth-user-add-alice", ("user", "add", "alice:alicepw", *ROOT)),
    Step("auth-grant-role", ("user", "grant-role", "alice", "reader", *ROOT)),
    Step("auth-grant-missing", ("user", "grant-role", "alice", "nope", *ROOT)),
    Step("auth-user-get", ("user", "get", "alice", *ROOT)),
    Step("auth-user-get-detail", ("user", "get", "alice", "--detail", *ROOT)),
    Step("auth-user-get-json", ("user", "get", "alice", "-w", "json", *ROOT)),
    Step("auth-user-get-fields", ("user", "get", "alice", "-w", "fields", *ROOT)),
    Step("auth-user-get-detail-json", ("user", "get", "alice", "--detail", "-w", "json",
                                       *ROOT)),
    Step("auth-user-get-detail-fields", ("user", "get", "alice", "--detail", "-w", "fields",
                                         *ROOT)),
    Step("auth-user-get-detail-table", ("user", "get", "alice", "--detail", "-w", "table",
                                        *ROOT)),
    Step("auth-user-get-self", ("user", "get", "alice", *ALICE)),
    Step("auth-user-list", ("user", "list", *ROOT)),
    Step("auth-user-list-json", ("user", "list", "-w", "json", *ROOT)),
    Step("auth-user-list-fields", ("user", "list", "-w", "fields", *ROOT)),
    Step("auth-user-list-denied", ("user", "list", *ALICE)),
    Step("auth-role-list", ("role", "list", *ROOT)),
    Step("auth-alice-get", ("get", "a/k", *ALICE)),
    Step("auth-alice-put-denied", ("put", "a/k", "x", *ALICE)),
    Step("auth-alice-put-mine", ("put", "a/mine", "x", *ALICE)),
    Step("auth-alice-put-from-key", ("put", "zz", "x", *ALICE)),
    Step("auth-alice-get-all-denied", ("get", "", "--prefix", *ALICE)),
    Step("auth-alice-del-denied", ("del", "a/", "--prefix", *ALICE)),
    Step("auth-alice-txn-denied", ("txn", *ALICE), stdin='value("a/k") = "v"\n\nput b/x 1\n\n\n'),
    Step("auth-alice-txn", ("txn", *ALICE), stdin='value("a/k") = "v"\n\nput a/mine 2\n\n\n'),
    Step("auth-alice-role-add-denied", ("role", "add", "x", *ALICE)),
    Step("auth-alice-lease-grant", ("lease", "grant", "100", *ALICE),
         capture=(r"lease ([0-9a-f]+) granted", "alease")),
    Step("auth-alice-put-lease", ("put", "a/mine", "y", "--lease={alease}", *ALICE)),
    Step("auth-root-put-lease", ("put", "a/k", "y", "--lease={alease}", *ROOT)),
    Step("auth-alice-revoke-denied", ("lease", "revoke", "{alease}", *ALICE)),
    Step("auth-root-revoke", ("lease", "revoke", "{alease}", *ROOT)),
    Step("auth-alice-compaction", ("compaction", "3", *ALICE)),
    Step("auth-alice-member-add-denied", ("member", "add", "x",
                                          "--peer-urls=http://127.0.0.1:1", *ALICE)),
    Step("auth-alice-defrag-denied", ("defrag", *ALICE), sort_lines=True),
    Step("auth-alice-hashkv-denied", ("endpoint", "hashkv", *ALICE), sort_lines=True),
    Step("auth-alice-snapshot-denied", ("snapshot", "save", "{tmp}/alice.db", *ALICE),
         one_endpoint=True),
    Step("auth-alice-status", ("endpoint", "status", *ALICE), sort_lines=True),
    Step("auth-root-snapshot", ("snapshot", "save", "{tmp}/root.db", *ROOT),
         one_endpoint=True),
    Step("auth-passwd", ("user", "passwd", "alice", "--interactive=false", *ROOT),
         stdin="newpw\n"),
    Step("auth-old-password", ("get", "a/k", *ALICE)),
    Step("auth-new-password", ("get", "a/k", "--user", "alice:newpw")),
    Step("auth-revoke-perm", ("role", "revoke-permission", "reader", "a/mine", *ROOT)),
    Step("auth-revoke-perm-again", ("role", "revoke-permission", "reader", "a/mine", *ROOT)),
    Step("auth-revoke-role", ("user", "revoke-role", "alice", "reader", *ROOT)),
    Step("auth-revoke-role-again", ("user", "revoke-role", "alice", "reader", *ROOT)),
    Step("auth-delete-root", ("user", "delete", "root", *ROOT)),
    Step("auth-revoke-root-role", ("user", "revoke-role", "root", "root", *ROOT)),
    Step("auth-delete-root-role", ("role", "delete", "root", *ROOT)),
    Step("auth-role-delete", ("role", "delete", "reader", *ROOT)),
    Step("auth-user-delete", ("user", "delete", "alice", *ROOT)),
    Step("auth-user-delete-again", ("user", "delete", "alice", *ROOT)),
    Step("auth-user-add-no-password", ("user", "add", "bob", "--no-password", *ROOT)),
    Step("auth-no-password-login", ("get", "a/k", "--user", "bob:anything")),
    Step("auth-user-delete-bob", ("user", "delete", "bob", *ROOT)),
    Step("auth-disable", ("auth", "disable", *ROOT)),
    Step("auth-put-after-disable", ("put", "a/k", "w")),
    Step("auth-enable-no-root-user", ("user", "delete", "root")),
    Step("auth-enable-without-root", ("auth", "enable")),
]

SCENARIOS = [
    Step("put", ("put", "c/k", "v1")),
    Step("put-prev-kv", ("put", "c/k", "v1", "--prev-kv")),
    Step("put-more", ("put", "c/l", "22")),
    Step("get", ("get", "c/k")),
    Step("get-missing", ("get", "c/nope")),
    Step("get-json", ("get", "c/k", "-w", "json")),
    Step("get-prefix", ("get", "c/", "--prefix")),
    Step("get-from-key-limit", ("get", "c/", "--from-key", "--limit", "1")),
    Step("get-keys-only", ("get", "c/", "--prefix", "--keys-only")),
    Step("get-value-only", ("get", "c/l", "--print-value-only")),
    Step("get-sorted", ("get", "c/", "--prefix", "--sort-by=value", "--order=descend")),
    Step("get-rev", ("get", "c/k", "--rev", "2")),
    Step("get-limit-json", ("get", "c/", "--prefix", "--limit", "1", "-w", "json")),
    Step("get-fields", ("get", "c/k", "-w", "fields")),
    # output formats of get's flags (raftkvctl formats these itself)
    Step("get-sorted-json", ("get", "c/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND",
                             "-w", "json")),
    Step("get-sorted-lower-case", ("get", "c/", "--prefix", "--sort-by=key", "--order=descend",
                                   "--keys-only")),
    Step("get-bad-sort-order", ("get", "c/", "--prefix", "--order=sideways")),
    Step("get-keys-only-json", ("get", "c/", "--prefix", "--keys-only", "-w", "json")),
    Step("get-prefix-table", ("get", "c/", "--prefix", "-w", "table")),
    Step("get-prefix-value-only", ("get", "c/", "--prefix", "--print-value-only")),
    Step("get-from-key-fields", ("get", "c/", "--from-key", "--limit", "1", "-w", "fields")),
    Step("get-rev-table", ("get", "c/k", "--rev", "2", "-w", "table")),
    Step("get-missing-fields", ("get", "c/nope", "-w", "fields")),
    Step("put-prev-kv-fields", ("put", "c/l", "22", "--prev-kv", "-w", "fields")),
    Step("put-prev-kv-json", ("put", "c/l", "22", "--prev-kv", "-w", "json")),
    Step("txn-success", ("txn",), stdin=TXN),
    Step("txn-failure", ("txn",), stdin=TXN),
    Step("txn-json", ("txn", "-w", "json"), stdin='mod("c/k") > "0"\n\nget c/k\n\n\n'),
    # sub-response headers: reads and no-op deletes before the txn's first write carry the
    # starting revision, the put and everything after it the txn's new revision
    Step("txn-json-sub-headers", ("txn", "-w", "json"), stdin=TXN_SUB_HEADERS),
    Step("txn-fields", ("txn", "-w", "fields"), stdin=TXN_SUB_HEADERS),
    Step("del-prev-kv", ("del", "c/else", "--prev-kv")),
    Step("put-p", ("put", "c/p", "x")),
    Step("del-prev-kv-json", ("del", "c/p", "--prev-kv", "-w", "json")),
    Step("del-none-fields", ("del", "c/none", "-w", "fields")),
    Step("del-none", ("del", "c/none")),
    Step("del-prefix", ("del", "c/", "--prefix")),
    Step("put-after-del", ("put", "c/k", "again")),
    Step("watch-rev", ("watch", "c/", "--prefix", "--rev", "1"), watch_lines=6),
    # the history so far in one response (etcd sends a catch-up as one): its header, every
    # event (a delete's type 1, a put's left out) and clientv3's own fields
    Step("watch-rev-json", ("watch", "c/", "--prefix", "--rev", "1", "-w", "json"),
         watch_lines=1),
    # the header and the first two events: a put with the key-value it replaced, a new key
    Step("watch-rev-fields", ("watch", "c/", "--prefix", "--rev", "2", "--prev-kv", "-w",
                              "fields"), watch_lines=4 + 13 + 7),
    Step("compaction", ("compaction", "3")),
    Step("get-compacted", ("get", "c/k", "--rev", "2")),
    # canceled by the server: the response (header revision 0, CompactRevision, Canceled),
    # then etcdctl exits 5 by itself
    Step("watch-compacted-json", ("watch", "c/", "--prefix", "--rev", "2", "-w", "json"),
         watch_lines=1),
    # the same history on both clusters (no lease IDs yet): etcd's HashKV values must match
    Step("endpoint-hashkv-json", ("endpoint", "hashkv", "-w", "json"), sort_lines=True),
    Step("endpoint-hashkv-cluster", ("endpoint", "hashkv", "--cluster"), sort_lines=True),
    Step("compaction-future", ("compaction", "1000")),
    Step("lease-grant", ("lease", "grant", "100"), capture=(r"lease ([0-9a-f]+) granted", "lease")),
    Step("put-lease", ("put", "c/leased", "v", "--lease={lease}")),
    Step("lease-ttl-keys", ("lease", "timetolive", "{lease}", "--keys")),
    Step("lease-ttl-keys-json", ("lease", "timetolive", "{lease}", "--keys", "-w", "json")),
    Step("lease-list-json", ("lease", "list", "-w", "json")),
    Step("lease-list-fields", ("lease", "list", "-w", "fields")),
    Step("lease-keep-alive-once", ("lease", "keep-alive", "--once", "{lease}")),
    Step("lease-list", ("lease", "list")),
    Step("lease-revoke", ("lease", "revoke", "{lease}")),
    Step("lease-ttl-expired", ("lease", "timetolive", "{lease}")),
    Step("lease-revoke-missing", ("lease", "revoke", "{lease}")),
    Step("put-unknown-lease", ("put", "c/x", "v", "--lease=abcdef")),
    Step("member-list", ("member", "list"), sort_lines=True),
    Step("member-list-table", ("member", "list", "-w", "table"), sort_lines=True),
    Step("member-list-fields", ("member", "list", "-w", "fields"), sort_lines=True),
    Step("member-add-learner", ("member", "add", "ghost", "--learner",
                                "--peer-urls=http://127.0.0.1:1"),
         capture=(r"Member +([0-9a-f]+) added", "learner"), retry_on="unhealthy cluster"),
    Step("member-promote-unready", ("member", "promote", "{learner}")),
    Step("member-remove", ("member", "remove", "{learner}")),
    Step("member-remove-missing", ("member", "remove", "{learner}")),
    # argument errors, found before anything is sent: etcdctl's words and exit status 128
    Step("member-update-bad-id", ("member", "update", "zzz", "--peer-urls=http://127.0.0.1:1")),
    Step("member-update-hex-prefix", ("member", "update", "0x12",
                                      "--peer-urls=http://127.0.0.1:1")),
    Step("member-update-no-id", ("member", "update", "--peer-urls=http://127.0.0.1:1")),
    Step("member-update-no-urls", ("member", "update", "12")),
    Step("member-update-bad-url", ("member", "update", "12", "--peer-urls=bad")),
    Step("member-remove-bad-id", ("member", "remove", "zzz")),
    Step("member-promote-bad-id", ("member", "promote", "zzz")),
    Step("member-update-missing", ("member", "update", "12", "--peer-urls=http://127.0.0.1:1")),
    Step("endpoint-health-table", ("endpoint", "health", "-w", "table"), sort_lines=True),
    Step("endpoint-status", ("endpoint", "status"), sort_lines=True,
         capture=(r"(?m)^\S+, ([0-9a-f]+), [^,]+, [^,]+, false, false,", "follower")),
    Step("endpoint-status-table", ("endpoint", "status", "-w", "table"), sort_lines=True),
    Step("endpoint-status-json", ("endpoint", "status", "-w", "json")),
    Step("endpoint-status-fields", ("endpoint", "status", "-w", "fields"), sort_lines=True),
    Step("endpoint-status-cluster-table", ("endpoint", "status", "--cluster", "-w", "table"),
         sort_lines=True),
    Step("endpoint-health-cluster-table", ("endpoint", "health", "--cluster", "-w", "table"),
         sort_lines=True),
    Step("endpoint-hashkv", ("endpoint", "hashkv"), sort_lines=True),
    Step("alarm-list", ("alarm", "list")),
    Step("alarm-disarm", ("alarm", "disarm")),
    Step("defrag", ("defrag",), sort_lines=True),
    Step("defrag-cluster", ("defrag", "--cluster"), sort_lines=True),
    # sorted: the member IDs' <IDn> numbers follow member list's order, which differs
    Step("move-leader", ("move-leader", "{follower}"), sort_lines=True),
    Step("move-leader-bad-id", ("move-leader", "zz")),
    Step("move-leader-not-member", ("move-leader", "1234")),
    Step("snapshot-save", ("snapshot", "save", "{tmp}/snap.db"), one_endpoint=True),
    Step("snapshot-save-two-endpoints", ("snapshot", "save", "{tmp}/x.db")),
    Step("lock-cmd", ("lock", "c/lock", "echo", "locked")),
    Step("lock-cmd-env", ("lock", "c/lock", "--", "sh", "-c",
                          "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV")),
    Step("lock-cmd-fails", ("lock", "c/lock", "--", "sh", "-c", "exit 3")),
    Step("lock-no-name", ("lock",)),
    # lock and elect, stopped by SIGTERM: etcdctl unlocks or resigns, and leaves its
    # session's lease to expire (revoked here, so that each run's lease list is the same)
    Step("lock-hold", ("lock", "c/lock"), watch_lines=2,
         capture=(r"c/lock/([0-9a-f]+)", "lklease")),
    Step("lock-hold-revoke", ("lease", "revoke", "{lklease}")),
    Step("elect-campaign", ("elect", "c/elect", "p1"), watch_lines=2,
         capture=(r"c/elect/([0-9a-f]+)", "elease")),
    Step("elect-revoke", ("lease", "revoke", "{elease}")),
    Step("elect-get-after", ("get", "c/", "--prefix", "-w", "json")),
    # the first key created under the election's prefix is the leader an observer sees
    Step("elect-candidate", ("put", "c/elect/0", "p0")),
    Step("elect-listen", ("elect", "-l", "c/elect"), watch_lines=2),
    Step("elect-listen-json", ("elect", "--listen", "c/elect", "-w", "json"), watch_lines=1),
    Step("elect-candidate-gone", ("del", "c/elect/0")),
    Step("elect-no-proposal", ("elect", "c/elect")),
    Step("elect-listen-with-proposal", ("elect", "-l", "c/elect", "p")),
    Step("version", ("version",)),
    *AUTH_SCENARIOS,
]

# Differences from etcd that are deliberate or not fixed yet: step name -> reason. Mirrored in
# docs/ETCD_DIFFERENCES.md. The conformance test fails on any other difference, and on a
# listed one that no longer differs (so the list stays true).
_AUTH_ERROR_CODE = ("etcd 3.4 answers a non-root Snapshot/HashKV with gRPC code Unknown and "
                    "'auth: permission denied' (its auth wrapper skips the error mapping, fixed "
                    "in 3.5); raftkv answers PermissionDenied 'etcdserver: permission denied', "
                    "as for every other denial")
KNOWN_DIFFERENCES = {
    "auth-alice-hashkv-denied": _AUTH_ERROR_CODE,
    "auth-alice-snapshot-denied": _AUTH_ERROR_CODE,
    "auth-no-password-login": "etcd 3.4 answers a password login of a --no-password user with "
                              "code Unknown, 'auth: authentication failed, password was given "
                              "for no password user' (unmapped); raftkv answers the usual "
                              "InvalidArgument 'authentication failed, invalid user ID or "
                              "password'",
}

_RULES = [
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
    (re.compile(r'"(cluster_id|member_id|raft_term|ID|leader|raftTerm|raftIndex|'
                r'raftAppliedIndex|dbSize|dbSizeInUse|memberID)":"?\d+"?'), r'"\1":<N>'),
    (re.compile(r"took = \d+(\.\d+)?(ns|µs|ms|s)"), "took = <DUR>"),
    (re.compile(r"\| *\d+(\.\d+)?(ns|µs|ms|s) *\|"), "| <DUR> |"),  # health table TOOK
    (re.compile(r'"took":"[^"]*"'), '"took":"<DUR>"'),
    (re.compile(r"\b\d+(\.\d+)? ?(B|kB|MB|GB)\b"), "<SIZE>"),
    (re.compile(r"remaining\(\d+s\)"), "remaining(<TTL>s)"),
    (re.compile(r"memberID:\d+"), "memberID:<N>"),
    # endpoint hashkv: the hashes cover lease IDs, which differ (docs/ETCD_DIFFERENCES.md)
    (re.compile(r"(?m)^(127\.0\.0\.1:<PORT>), \d+$"), r"\1, <HASH>"),
    (re.compile(r'"(ClusterID|MemberId|MemberID|RaftTerm)" : \d+'), r'"\1" : <N>'),
    (re.compile(r'"(ID|Leader|DBSize|RaftIndex|RaftAppliedIndex)" : \d+'), r'"\1" : <N>'),
    (re.compile(r'"id":\d+'), '"id":<N>'),  # clientv3's lease JSON
    (re.compile(r'"ttl":\d+'), '"ttl":<TTL>'),  # remaining TTL (timetolive JSON)
    (re.compile(r"[-+]{3,}"), "---"),  # table borders: widths follow the content
    (re.compile(r" {2,}"), " "),
]
_INITIAL_CLUSTER = re.compile(r'(ETCD_INITIAL_CLUSTER=")([^"]*)"')
_HEX_ID = re.compile(r"\b[0-9a-f]{10,16}\b")
_STATUS_NUMBERS = re.compile(r"(3\.4\.23, <SIZE>, (true|false), (true|false)), \d+, \d+, \d+")
_TABLE_NUMBERS = re.compile(r"\| (true|false) \| (true|false) \| \d+ \| \d+ \| \d+ \|")


def normalise(text, ids):
    """Replace what cannot match between two clusters with placeholders. ids: a dict shared
    by a whole run, hex ID -> <IDn> in order of first appearance."""
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith('{"level":'))
    for rule, repl in _RULES:
        text = rule.sub(repl, text)
    text = _INITIAL_CLUSTER.sub(lambda m: m.group(1) + ",".join(sorted(m.group(2).split(",")))
                                + '"', text)
    text = _STATUS_NUMBERS.sub(r"\1, <N>, <N>, <N>", text)
    text = _TABLE_NUMBERS.sub(r"| \1 | \2 | <N> | <N> | <N> |", text)

    def hex_id(m):  # one ID printed %x and %016x: "b27a21cb5973414", "0b27a21cb5973414"
        return ids.setdefault(m.group(0).lstrip("0"), f"<ID{len(ids) + 1}>")
    return _HEX_ID.sub(hex_id, text)


class _Unfilled(dict):
    """Step fields: a capture that an earlier step did not make stays "{name}" (a CLI that
    lacks a verb still runs the steps after it, and fails them visibly)."""

    def __missing__(self, key):
        return "{" + key + "}"


def _run_step(ctl_cls, endpoints, step, ctx, timeout_s=30.0):
    args = [a.format_map(_Unfilled(ctx)) for a in step.args]
    eps = endpoints[:1] if step.one_endpoint else endpoints
    ctl = ctl_cls(eps)
    if step.watch_lines:
        rc, out, err = _run_watch(ctl, args, step.watch_lines, timeout_s)
        _capture(step, out, ctx)
        return rc, out, err
    deadline = time.monotonic() + timeout_s
    while True:
        proc = ctl.run(*args, stdin=step.stdin, check=False, timeout=timeout_s)
        if not step.retry_on or step.retry_on not in proc.stderr or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if proc.returncode == 0:
        _capture(step, proc.stdout, ctx)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    return proc.returncode, proc.stdout, "\n".join(errors)


def _capture(step, stdout, ctx):
    if step.capture:
        m = re.search(step.capture[0], stdout)
        if m:
            ctx[step.capture[1]] = m.group(1)


def _run_watch(ctl, args, lines, timeout_s):
    """The first `lines` lines a background command prints within timeout_s (a reader thread
    holds the blocking reads, so a command that prints nothing cannot hang the run)."""
    proc = ctl.popen(*args)
    got = queue.Queue()
    threading.Thread(target=lambda: [got.put(x) for x in iter(proc.stdout.readline, "")],
                     daemon=True).start()
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < lines:
            try:
                out.append(got.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return 0, "".join(out), ""


def run_scenarios(ctl_cls, endpoints, tmp_dir, isolate=()):
    """[(step name, normalised "rc=..\\nstdout\\nerror")] for every step of SCENARIOS.
    isolate: names of steps whose IDs do not take numbers in the run's shared <IDn> sequence
    (steps one CLI cannot run, so that the IDs of the steps after them still line up)."""
    ctx = {"tmp": tmp_dir}
    ids = {}
    results = []
    for step in SCENARIOS:
        rc, out, err = _run_step(ctl_cls, endpoints, step, ctx)
        if step.name in isolate:
            saved, ids = ids, dict(ids)
        out = normalise(out.replace(tmp_dir, "<TMP>"), ids)
        if step.sort_lines:
            out = "\n".join(sorted(_HEX_ID.sub("<ID>", re.sub(r"<ID\d+>", "<ID>", out))
                                   .splitlines()))
        results.append((step.name, f"rc={rc}\n{out}\n{normalise(err, ids)}"))
        if step.name in isolate:
            ids = saved
    return results


def compare(etcd_results, raftkv_results):
    """(unexpected differences, stale known differences): lists of (step, etcd, raftkv)."""
    unexpected, stale = [], []
    for (name, want), (_, got) in zip(etcd_results, raftkv_results):
        if want != got and name not in KNOWN_DIFFERENCES:
            unexpected.append((name, want, got))
        elif want == got and name in KNOWN_DIFFERENCES:
            stale.append((name, want, got))
    return unexpected, stale


def main():
    from raftkv.cli.local_cluster import LocalCluster
    from tests.etcdctl.conftest import FAST_ARGS, Ctl, wait_healthy, wait_published

    root = tempfile.mkdtemp(prefix="raftkv-conformance-")
    results = {}
    for kind in ("etcd", "raftkv"):
        cdir = os.path.join(root, kind)
        cluster = EtcdCluster(cdir) if kind == "etcd" else \
            LocalCluster(cdir, members=3, extra_args=FAST_ARGS)
        try:
            cluster.start()
            wait_healthy(Ctl(cluster.endpoints))
            wait_published(Ctl(cluster.endpoints), 3)
            results[kind] = run_scenarios(Ctl, cluster.endpoints, cdir)
        finally:
            cluster.stop()
    shutil.rmtree(root, ignore_errors=True)  # both clusters' data dirs
    unexpected, stale = compare(results["etcd"], results["raftkv"])
    for name, want, got in unexpected:
        sys.stdout.write(f"=== {name}\n--- etcd\n{want}\n--- raftkv\n{got}\n")
    for name, _, _ in stale:
        sys.stdout.write(f"=== {name}: listed as a known difference but now matches\n")
    sys.stdout.write(f"{len(unexpected)} unexpected difference(s), {len(stale)} stale\n")
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
