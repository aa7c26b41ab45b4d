"""Randomized differential test of etcd's v3 KV and Lease gRPC API: one seeded random sequence of
requests goes to a real etcd 3.4.23 and to raftkv, and every response must be the same.

    python -m tests.etcdctl.differential --examples 200 --seed 7    # a long bug-hunting run

Both stores start empty, so revisions are compared as they are. What legitimately differs is
normalised, and nothing else:

* the response header's cluster_id, member_id and raft_term (only the revision is compared);
* lease IDs the servers pick (LeaseGrant with ID 0): each is mapped to a symbolic ID in order of
  appearance, and requests naming such a lease get each server's own ID. Most grants name an
  explicit ID, which both servers must use as it is;
* LeaseTimeToLive's remaining TTL (wall clock: within TTL_SLACK_S), and the order of its keys
  and of LeaseLeases' leases (etcd builds both from Go maps; LeaseLeases sorts by remaining TTL,
  a timing that differs between servers and that a follower does not know at all).

Errors must match in gRPC status code and message. The generator (OpGen) follows the store's
revision and compact revision from etcd's answers, so that reads at past revisions and
compactions hit the interesting edges (compacted, current, future), and the live leases, so
that puts and compares name them. Every lease TTL is long (LEASE_TTL_S): nothing expires
during a run, which would happen at different moments on the two servers.

One base seed determines the whole run (the generator depends only on the seed and etcd's
answers, which are deterministic for a fresh etcd), so a failure is replayed by the same
seed and example count; the failure message lists the last requests.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import sys
import tempfile
import time

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from raftkv.api.etcd import concurrency
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
from tests.etcdctl.conformance import EtcdCluster

KEYS = (b"a", b"a/1", b"a/2", b"a/3", b"ab", b"b", b"b/1", b"c", b"c\xff", b"d")
# Range bounds: the keys, points between them, "\0" and the top of the key space.
BOUNDS = KEYS + (b"\0", b"a/", b"a0", b"b0", b"c\xff\xff", b"e", b"\xff")
VALUES = (b"", b"v", b"w", b"x1", b"zz", b"\x00\xff")
LEASE_TTL_S = 3600  # no lease expires during a run
TOO_LARGE_TTL_S = 9_000_000_001  # etcd's MaxLeaseTTL + 1
EXPLICIT_LEASE_IDS = (0x10, 0x11, 0x12, 0x13, 0x7FFF_FFFF_FFFF_FFF0, -5)
UNKNOWN_LEASE_ID = 0xBAD
SERVER_LEASE_SYM_BASE = 0x5E00_0000  # symbolic IDs of leases a server picked
MAX_TXN_OPS = 128  # both servers run with the default --max-txn-ops
TTL_SLACK_S = 3
OPS_PER_EXAMPLE = 50
RPC_TIMEOUT_S = 15.0
HISTORY_SHOWN = 25

_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _repeated(field):
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:  # protobuf >= 5
        return is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


@dataclasses.dataclass
class Op:
    """One request: stub ("KV" or "Lease"), method name, request message (symbolic lease IDs)."""
    service: str
    method: str
    request: object

    def describe(self):
        text = text_format.MessageToString(self.request, as_one_line=True, as_utf8=False)
        return f"{self.service}.{self.method}({text})"


class Target:
    """One server's stubs, and its map between actual and symbolic lease IDs."""

    def __init__(self, name, endpoint):
        self.name = name
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint)
        self.stubs = {"KV": rpc_pb2_grpc.KVStub(self.channel),
                      "Lease": rpc_pb2_grpc.LeaseStub(self.channel)}
        self.to_actual = {}  # symbolic lease ID -> this server's
        self.to_sym = {}  # this server's lease ID -> symbolic

    def close(self):
        self.channel.close()

    def wait_serving(self, timeout_s=60.0):
        """Until a linearizable Range succeeds (a leader is known); reads change nothing."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.stubs["KV"].Range(rpc_pb2.RangeRequest(key=b"a"), timeout=2.0)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def call(self, op, metadata=None):
        """(raw response, None) or (None, ("error", gRPC code name, message)). metadata: gRPC
        metadata to send (e.g. an auth token)."""
        request = type(op.request)()
        request.CopyFrom(op.request)
        _map_lease_ids(request, self.to_actual)
        try:
            return getattr(self.stubs[op.service], op.method)(request, timeout=RPC_TIMEOUT_S,
                                                              metadata=metadata), None
        except grpc.RpcError as exc:
            return None, ("error", exc.code().name, exc.details())

    def learn_lease(self, sym, resp):
        """A lease this server picked (LeaseGrant with ID 0) is known as sym from now on."""
        self.to_actual[sym] = resp.ID
        self.to_sym[resp.ID] = sym


def _map_lease_ids(msg, mapping):
    """Replace, in place, every lease ID a request names through mapping (others unchanged)."""
    name = msg.DESCRIPTOR.name
    if name == "PutRequest":
        msg.lease = mapping.get(msg.lease, msg.lease)
    elif name == "Compare":
        if msg.WhichOneof("target_union") == "lease":
            msg.lease = mapping.get(msg.lease, msg.lease)
    elif name in ("LeaseRevokeRequest", "LeaseTimeToLiveRequest"):
        msg.ID = mapping.get(msg.ID, msg.ID)
    elif name == "TxnRequest":
        for cmp in msg.compare:
            _map_lease_ids(cmp, mapping)
        for op in list(msg.success) + list(msg.failure):
            kind = op.WhichOneof("request")
            if kind is not None:
                _map_lease_ids(getattr(op, kind), mapping)


_LEASE_FIELDS = {("KeyValue", "lease"), ("LeaseGrantResponse", "ID"),
                 ("LeaseTimeToLiveResponse", "ID"), ("LeaseStatus", "ID")}
_HEADER_KEPT = ("revision",)


def tree(msg, to_sym):
    """A response as nested dicts of its set fields, with the normalisations of the module
    docstring applied (header reduced to its revision, lease IDs symbolic, unordered lists
    sorted)."""
    name = msg.DESCRIPTOR.name
    out = {}
    for field, value in msg.ListFields():
        if name == "ResponseHeader" and field.name not in _HEADER_KEPT:
            continue
        if field.type == _MESSAGE:
            value = [tree(v, to_sym) for v in value] if _repeated(field) else tree(value, to_sym)
        elif _repeated(field):
            value = list(value)
        if (name, field.name) in _LEASE_FIELDS:
            value = to_sym.get(value, value)
        out[field.name] = value
    if name == "LeaseTimeToLiveResponse" and "keys" in out:
        out["keys"] = sorted(out["keys"])
    if name == "LeaseLeasesResponse" and "leases" in out:
        out["leases"] = sorted(out["leases"], key=lambda s: s.get("ID", 0))
    return out


def same(op, want, got):
    """True if raftkv's answer got equals etcd's want (TimeToLive's TTL within the slack)."""
    if op.method == "LeaseTimeToLive" and isinstance(want, dict) and isinstance(got, dict):
        a, b = want.get("TTL", 0), got.get("TTL", 0)
        if a > 0 and b > 0 and abs(a - b) <= TTL_SLACK_S:
            got = dict(got, TTL=a)
    return want == got


# ------------------------------------------------------------------------------ generator
class OpGen:
    """Random requests from rng. The caller reports etcd's answers (observe) so the generator
    knows the current and compact revisions and the live leases."""

    def __init__(self, rng):
        self.rng = rng
        self.rev = 1
        self.compact = 0
        self.leases = []  # live symbolic lease IDs
        self.next_server_sym = SERVER_LEASE_SYM_BASE
        self.weights = self.profile()

    def profile(self):
        """Per example, a random mix of request kinds (some examples compact a lot, some are
        mostly txns...)."""
        kinds = {"put": 25, "range": 25, "delete": 10, "txn": 20, "compact": 4, "grant": 5,
                 "revoke": 3, "ttl": 4, "leases": 2, "error": 4}
        return {k: max(1, round(w * self.rng.choice((0.3, 1, 1, 2)))) for k, w in kinds.items()}

    def new_example(self):
        self.weights = self.profile()

    def next_op(self):
        kinds, weights = zip(*self.weights.items())
        kind = self.rng.choices(kinds, weights)[0]
        return getattr(self, "_op_" + kind)()

    def observe(self, op, resp):
        """resp: etcd's raw response (None for an error)."""
        if resp is None:
            return
        if resp.HasField("header") and resp.header.revision:
            self.rev = resp.header.revision
        if op.method == "Compact":
            self.compact = max(self.compact, op.request.revision)
        elif op.method == "LeaseGrant":
            self.leases.append(op.request.ID or self.next_server_sym)
        elif op.method == "LeaseRevoke" and op.request.ID in self.leases:
            self.leases.remove(op.request.ID)

    # ---- pieces
    def key(self, empty_ok=False):
        if empty_ok and self.rng.random() < 0.03:
            return b""
        return self.rng.choice(KEYS)

    def key_range(self):
        """(key, range_end): a key, a prefix, a range (sometimes backwards), from-key, all."""
        r = self.rng.random()
        if r < 0.35:
            return self.key(), b""
        if r < 0.55:
            prefix = self.rng.choice((b"a", b"a/", b"b", b"c", b"c\xff"))
            return prefix, _prefix_end(prefix)
        if r < 0.8:
            return self.rng.choice(BOUNDS), self.rng.choice(BOUNDS)
        if r < 0.9:
            return self.rng.choice(BOUNDS), b"\0"
        return b"\0", b"\0"

    def revision(self):
        """0 (latest) mostly; else near the compact revision or the current one."""
        if self.rng.random() < 0.7:
            return 0
        return self.rng.choice((self.compact - 1, self.compact, self.compact + 1,
                                self.rng.randint(1, max(1, self.rev)), self.rev, self.rev + 1,
                                self.rev + 5, -1))

    def lease(self):
        r = self.rng.random()
        if r < 0.6 or not self.leases and r < 0.95:
            return 0
        if r < 0.95:
            return self.rng.choice(self.leases)
        return UNKNOWN_LEASE_ID

    def rev_filter(self):
        return 0 if self.rng.random() < 0.75 else self.rng.randint(1, self.rev + 1)

    # ---- requests
    def put_request(self):
        rng = self.rng
        req = rpc_pb2.PutRequest(key=self.key(empty_ok=True), value=rng.choice(VALUES),
                                 prev_kv=rng.random() < 0.5, lease=self.lease())
        if rng.random() < 0.12:
            req.ignore_value = True
            if rng.random() < 0.8:
                req.value = b""
        if rng.random() < 0.12:
            req.ignore_lease = True
            if rng.random() < 0.8:
                req.lease = 0
        return req

    def range_request(self):
        rng = self.rng
        key, end = self.key_range()
        if rng.random() < 0.03:
            key = b""
        req = rpc_pb2.RangeRequest(key=key, range_end=end, revision=self.revision())
        if rng.random() < 0.4:
            req.limit = rng.choice((1, 2, 3, 5, -1))
        if rng.random() < 0.4:
            req.sort_order = rng.randrange(3)
            req.sort_target = rng.randrange(5)
        req.serializable = rng.random() < 0.3
        req.keys_only = rng.random() < 0.15
        req.count_only = rng.random() < 0.1
        req.min_mod_revision = self.rev_filter()
        req.max_mod_revision = self.rev_filter()
        req.min_create_revision = self.rev_filter()
        req.max_create_revision = self.rev_filter()
        return req

    def delete_request(self):
        key, end = self.key_range()
        if self.rng.random() < 0.03:
            key = b""
        return rpc_pb2.DeleteRangeRequest(key=key, range_end=end,
                                          prev_kv=self.rng.random() < 0.5)

    def compare(self):
        rng = self.rng
        key, end = self.key(empty_ok=True), b""
        if rng.random() < 0.2:
            key, end = self.key_range()
        cmp = rpc_pb2.Compare(key=key, range_end=end, result=rng.randrange(4),
                              target=rng.randrange(5))
        target = cmp.target
        if target == rpc_pb2.Compare.VALUE:
            cmp.value = rng.choice(VALUES)
        elif target == rpc_pb2.Compare.LEASE:
            cmp.lease = self.lease()
            if self.next_server_sym != SERVER_LEASE_SYM_BASE:
                # The servers picked different IDs for the same lease: only equality of
                # lease IDs means the same on both from now on.
                cmp.result = rng.choice((rpc_pb2.Compare.EQUAL, rpc_pb2.Compare.NOT_EQUAL))
        elif target == rpc_pb2.Compare.VERSION:
            cmp.version = rng.randint(0, 3)
        elif target == rpc_pb2.Compare.CREATE:
            cmp.create_revision = rng.randint(0, self.rev + 1)
        else:
            cmp.mod_revision = rng.randint(0, self.rev + 1)
        return cmp

    def request_op(self, depth):
        r = self.rng.random()
        if r < 0.35:
            return rpc_pb2.RequestOp(request_put=self.put_request())
        if r < 0.65:
            return rpc_pb2.RequestOp(request_range=self.range_request())
        if r < 0.85 or depth >= 2:
            return rpc_pb2.RequestOp(request_delete_range=self.delete_request())
        return rpc_pb2.RequestOp(request_txn=self.txn_request(depth + 1))

    def txn_request(self, depth=0):
        rng = self.rng
        req = rpc_pb2.TxnRequest(compare=[self.compare() for _ in range(rng.randint(0, 3))])
        req.success.extend(self.request_op(depth) for _ in range(rng.randint(0, 3)))
        req.failure.extend(self.request_op(depth) for _ in range(rng.randint(0, 2)))
        return req

    def _op_put(self):
        return Op("KV", "Put", self.put_request())

    def _op_range(self):
        return Op("KV", "Range", self.range_request())

    def _op_delete(self):
        return Op("KV", "DeleteRange", self.delete_request())

    def _op_txn(self):
        return _txn_op(self.txn_request())

    def _op_compact(self):
        rev = self.rng.choice((self.compact, self.compact + 1, self.rev - 1, self.rev,
                               self.rev + 1, self.rng.randint(1, max(1, self.rev))))
        return Op("KV", "Compact", rpc_pb2.CompactionRequest(
            revision=rev, physical=self.rng.random() < 0.5))

    def _op_grant(self):
        r = self.rng.random()
        if r < 0.2:
            lease_id = 0
            self.next_server_sym += 1  # observe() names the lease by it if granted
        else:
            lease_id = self.rng.choice(EXPLICIT_LEASE_IDS)
        ttl = TOO_LARGE_TTL_S if r > 0.97 else LEASE_TTL_S + self.rng.randrange(100)
        return Op("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))

    def some_lease(self):
        if self.leases and self.rng.random() < 0.8:
            return self.rng.choice(self.leases)
        return self.rng.choice((UNKNOWN_LEASE_ID, 0) + EXPLICIT_LEASE_IDS)

    def _op_revoke(self):
        return Op("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=self.some_lease()))

    def _op_ttl(self):
        return Op("Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(
            ID=self.some_lease(), keys=self.rng.random() < 0.7))

    def _op_leases(self):
        return Op("Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest())

    def _op_error(self):
        """Requests built to fail: too many ops, duplicate keys, empty ops and keys."""
        rng = self.rng
        r = rng.random()
        req = rpc_pb2.TxnRequest()
        if r < 0.25:
            # Around --max-txn-ops, at the top or in a nested txn (which may hold what its
            # parent's longest list leaves).
            read = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a"))
            n = MAX_TXN_OPS + rng.choice((-2, -1, 0, 1))
            branch = req.success if rng.random() < 0.5 else req.failure
            branch.extend(read for _ in range(n))
            if n < MAX_TXN_OPS:
                inner = rpc_pb2.TxnRequest()
                inner.success.extend(read for _ in range(rng.randint(0, 3)))
                branch.append(rpc_pb2.RequestOp(request_txn=inner))
        elif r < 0.5:
            key = self.key()
            ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key)),
                   rng.choice(self.duplicate_of(key))]
            rng.shuffle(ops)
            req.success.extend(ops)
        elif r < 0.65:
            req.success.extend([self.request_op(1), rpc_pb2.RequestOp()])
        elif r < 0.8:
            req.compare.append(rpc_pb2.Compare(key=b"", target=rpc_pb2.Compare.VERSION))
        else:
            inner = rpc_pb2.TxnRequest()
            inner.success.extend(self.request_op(2) for _ in range(rng.randint(1, 3)))
            req.success.extend([self.request_op(1), rpc_pb2.RequestOp(request_txn=inner),
                                self.request_op(1)])
        return _txn_op(req)

    def duplicate_of(self, key):
        """RequestOps that make a txn branch with a put of key a duplicate-key error."""
        nested = rpc_pb2.TxnRequest()
        nested.success.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key)))
        return [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"2")),
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key)),
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
                    key=key[:1], range_end=b"\0")),
                rpc_pb2.RequestOp(request_txn=nested)]


def _ops(txn):
    """Every RequestOp of a txn, nested ones included."""
    for op in list(txn.success) + list(txn.failure):
        yield op
        if op.WhichOneof("request") == "request_txn":
            yield from _ops(op.request_txn)


def _from_key_delete(txn):
    """True if the txn holds a from-key delete (range_end "\0"). Its duplicate check misses
    such a delete, so a put with ignore_value or ignore_lease after it in the same txn finds
    its key gone in the middle of the apply, and etcd 3.4.23 panics (the member exits);
    raftkv refuses that txn with "key not found" (docs/ETCD_DIFFERENCES.md)."""
    return any(op.WhichOneof("request") == "request_delete_range"
               and op.request_delete_range.range_end == b"\0" for op in _ops(txn))


def _txn_op(txn):
    """The Txn op for txn, with ignore_value and ignore_lease cleared when it holds a from-key
    delete: etcd 3.4.23 may panic on such a txn (_from_key_delete), which would end the run."""
    if _from_key_delete(txn):
        _clear_ignores(txn)
    return Op("KV", "Txn", txn)


def _clear_ignores(txn):
    for op in _ops(txn):
        if op.WhichOneof("request") == "request_put":
            op.request_put.ignore_value = op.request_put.ignore_lease = False


# clientv3's GetPrefixRangeEnd (the Lock and Election services' own)
_prefix_end = concurrency.prefix_end


# ------------------------------------------------------------------------------ runner
class Mismatch(AssertionError):
    pass


def ask_both(etcd, raftkv, gen, op):
    """Send op to both Targets: (etcd's raw response or None, etcd's answer, raftkv's answer),
    answers as tree() or an error tuple. A lease a server picked is learned as gen names it."""
    answers = []
    for target in (etcd, raftkv):
        raw, error = target.call(op)
        if raw is not None and op.method == "LeaseGrant" and op.request.ID == 0:
            target.learn_lease(gen.next_server_sym, raw)
        answers.append((raw, error or tree(raw, target.to_sym)))
    (want_raw, want), (_, got) = answers
    return want_raw, want, got


def run(etcd, raftkv, seed, examples, ops_per_example=OPS_PER_EXAMPLE, log=None, trace=None):
    """Send the same random requests to both Targets; raise Mismatch at the first difference.
    Returns how many requests were compared. log(line) after each example; trace(line) after
    each request, with both answers."""
    rng = random.Random(seed)
    gen = OpGen(rng)
    history = []
    for example in range(examples):
        gen.new_example()
        for step in range(ops_per_example):
            op = gen.next_op()
            want_raw, want, got = ask_both(etcd, raftkv, gen, op)
            history.append(op.describe())
            if trace:
                trace(f"{example}.{step} {op.describe()}\n  etcd:   {want}\n  raftkv: {got}")
            if not same(op, want, got):
                shown = "\n  ".join(history[-HISTORY_SHOWN:])
                raise Mismatch(
                    f"seed {seed}, example {example}, step {step}: responses differ\n"
                    f"request: {op.describe()}\netcd:   {want}\nraftkv: {got}\n"
                    f"last requests:\n  {shown}")
            gen.observe(op, want_raw)
        if log:
            log(f"example {example + 1}/{examples}: revision {gen.rev}, compacted at "
                f"{gen.compact}, {len(gen.leases)} leases")
    return examples * ops_per_example


@contextlib.contextmanager
def servers(root, raftkv_members=3, extra_args=(), raftkv_args=()):
    """A fresh single-member etcd and a fresh raftkv cluster on probed loopback ports, data
    under root; yields (etcd endpoint, [raftkv endpoints]). Every process is stopped by PID.
    extra_args: flags both servers take (e.g. --bcrypt-cost); raftkv_args: raftkv's only."""
    from raftkv.cli.local_cluster import LocalCluster
    from tests.etcdctl.conftest import FAST_ARGS, running

    etcd = EtcdCluster(os.path.join(root, "etcd"), members=1,  # same timing flags as FAST_ARGS
                       extra_args=extra_args)
    raftkv = LocalCluster(os.path.join(root, "raftkv"), members=raftkv_members,
                          extra_args=[*FAST_ARGS, *extra_args, *raftkv_args])
    with running(etcd), running(raftkv):
        raftkv.wait_listening()
        yield etcd.endpoints[0], raftkv.endpoints


def connect(etcd_endpoint, raftkv_endpoint):
    """Targets for both servers, once each serves linearizable reads."""
    targets = Target("etcd", etcd_endpoint), Target("raftkv", raftkv_endpoint)
    for target in targets:
        target.wait_serving()
    return targets


@contextlib.contextmanager
def paired_targets(root, seed, extra_args=(), connect_fn=None, raftkv_args=()):
    """Fresh servers under root (see servers) and their targets (etcd, raftkv), closed after.
    The raftkv member asked is a follower or the leader as the seed falls (seed % members):
    both must answer as etcd does."""
    with servers(root, extra_args=extra_args, raftkv_args=raftkv_args) as (etcd_ep, raftkv_eps):
        etcd, raftkv = (connect_fn or connect)(etcd_ep, raftkv_eps[seed % len(raftkv_eps)])
        try:
            yield etcd, raftkv
        finally:
            etcd.close()
            raftkv.close()


def seeds_main(argv, doc, count_flag, count_default, count_help, run_fn, extra_args=(),
               connect_fn=None, what="requests, same answers"):
    """The command line of a differential module: --seed, --seeds, its count flag (examples or
    steps per seed: count_flag, its default and help) and --trace; each seed runs
    run_fn(etcd, raftkv, seed, count, log=, trace=) on fresh servers (extra_args: flags both
    take; connect_fn makes the targets). Returns the exit status: 1 if any seed differed."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1, help="first base seed (default 1)")
    p.add_argument("--seeds", type=int, default=1,
                   help="how many base seeds, one after the other, each on fresh servers")
    p.add_argument(count_flag, type=int, default=count_default, help=count_help)
    p.add_argument("--trace", action="store_true", help="print every request and both answers")
    args = p.parse_args(argv)
    count = getattr(args, count_flag.lstrip("-").replace("-", "_"))
    failures = 0
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="raftkv-diff-") as root, \
                paired_targets(root, seed, extra_args, connect_fn) as (etcd, raftkv):
            try:
                n = run_fn(etcd, raftkv, seed, count, log=print,
                           trace=print if args.trace else None)
                print(f"seed {seed}: {n} {what} ({time.monotonic() - started:.1f} s)")
            except Mismatch as exc:
                failures += 1
                print(f"seed {seed}: MISMATCH\n{exc}")
    return 1 if failures else 0


def main(argv=None):
    return seeds_main(argv, __doc__, "--examples", 20,
                      f"examples per seed, {OPS_PER_EXAMPLE} requests each", run)


if __name__ == "__main__":
    sys.exit(main())
