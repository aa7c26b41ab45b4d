"""Differential test of etcd's v3lockpb.Lock, v3electionpb.Election and grpc.health.v1.Health
services: the same sequence of calls goes to a fresh etcd 3.4.23 and a fresh raftkv cluster,
and every answer must be the same.

    python -m tests.etcdctl.differential_lock --seeds 10      # a longer hunt, fresh servers each

The sequence (run) is a script whose names, values, lease IDs and order of independent parts
come from the seed: uncontended and repeated locks, a Lock that waits for an Unlock, a waiter
whose lease is revoked (etcd 3.4.23 keeps it waiting for the keys before it, then answers
with its deleted key), a waiter whose client cancels (its key is deleted), lease 0 (the
server grants a 60 s lease), unknown leases, empty keys; Campaign, Leader, Proclaim and Resign
with right and wrong leader keys, a Campaign that waits for a Resign and one that waits for a
lease revoke, a cancelled Campaign, no leader, a missing leader key; an Observe stream that
must see every leadership change and proclamation; Health Check and Watch; then, with auth
on, the same calls with a user's token, with no token, with a token no server issued, and by
a user without permission. The KV store's contents under the names used are compared along
the way.

Normalised, and nothing else: the response header's cluster_id, member_id and raft_term, and
the IDs of leases a server picked (lease 0): each is replaced by a symbolic ID, in lock and
leader keys too (`name/<lease hex>`). Revisions, keys, values, error codes and messages must
match.

Timing is taken out by the order of calls: a call that must wait is sent, then the test waits
until its key exists on that server (it is queued), checks that it is still waiting, and only
then sends what releases it. An Observe stream is read until it has the answers the script
expects so far.
"""
from __future__ import annotations

import queue
import random
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.api.etcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc, v3election_pb2 as epb
from raftkv.api.etcd.proto import v3election_pb2_grpc, v3lock_pb2 as lpb, v3lock_pb2_grpc
from tests.etcdctl import differential
from tests.etcdctl.differential import Mismatch

RPC_TIMEOUT_S = 15.0
WAIT_S = 15.0  # for a queued key to appear, a released call to answer, an Observe answer
POLL_S = 0.02
LEASE_TTL_S = 3600
SESSION_TTL_S = 60  # etcd's concurrency session TTL, what lease 0 grants
BCRYPT_ARGS = ("--bcrypt-cost", "4")  # both servers: fast Authenticate


class Target(differential.Target):
    """differential.Target plus the Lock, Election and Health stubs, calls in flight, and the
    Observe streams."""

    def __init__(self, name, endpoint):
        super().__init__(name, endpoint)
        self.stubs["Lock"] = v3lock_pb2_grpc.LockStub(self.channel)
        self.stubs["Election"] = v3election_pb2_grpc.ElectionStub(self.channel)
        self.stubs["Health"] = health_pb2_grpc.HealthStub(self.channel)
        self.stubs["Auth"] = rpc_pb2_grpc.AuthStub(self.channel)
        self.pending = {}  # label -> grpc future of a call that waits
        self.streams = {}  # label -> (call, queue of answers, answers read)
        self.root = self.alice = None  # gRPC metadata with each user's token (auth on)

    def metadata(self, who):
        return {"alice": self.alice, "root": self.root,
                "bogus": [("token", "bogus.1")]}[who] if who else None

    def unary(self, service, method, request, who=None):
        stub = getattr(self.stubs[service], method)
        if method == "LeaseTimeToLive":  # may name a lease by its symbolic ID
            request = rpc_pb2.LeaseTimeToLiveRequest(ID=self.to_actual.get(request.ID,
                                                                           request.ID))
        try:
            return stub(request, timeout=RPC_TIMEOUT_S, metadata=self.metadata(who)), None
        except grpc.RpcError as exc:
            return None, ("error", exc.code().name, exc.details())

    def start(self, label, service, method, request, who=None):
        stub = getattr(self.stubs[service], method)
        self.pending[label] = stub.future(request, timeout=RPC_TIMEOUT_S * 4,
                                          metadata=self.metadata(who))

    def observe(self, label, name, who=None):
        call = self.stubs["Election"].Observe(epb.LeaderRequest(name=name),
                                              timeout=RPC_TIMEOUT_S * 8,
                                              metadata=self.metadata(who))
        answers = queue.Queue()

        def read():
            try:
                for response in call:
                    answers.put((response, None))
            except grpc.RpcError as exc:
                answers.put((None, ("end", exc.code().name)))
            else:
                answers.put((None, ("end", "OK")))
        threading.Thread(target=read, daemon=True, name=f"observe-{label}").start()
        self.streams[label] = call, answers, []

    def stream_answers(self, label, count):
        """The first count answers of an Observe stream (fewer if none come in WAIT_S)."""
        _, answers, got = self.streams[label]
        while len(got) < count:
            try:
                got.append(answers.get(timeout=WAIT_S))
            except queue.Empty:
                break
        return got[:count]

    def close(self):
        for future in self.pending.values():
            future.cancel()
        for call, _, _ in self.streams.values():
            call.cancel()
        super().close()


def _hex(lease):
    return format(lease, "x").encode()


class Run:
    """One scripted sequence on both targets; answers compared step by step."""

    def __init__(self, etcd, raftkv, seed, trace=None):
        self.t = (etcd, raftkv)
        self.rng = random.Random(seed)
        self.seed = seed
        self.trace = trace
        self.steps = []
        self.next_sym = differential.SERVER_LEASE_SYM_BASE
        self.lease_ids = self.rng.sample(range(0x100, 0x10000), 12)
        self.names = set()  # every name this run has drawn

    def name(self, base):
        """A name from the seed, base-N with N below 100, that this run has not drawn before:
        the parts share bases (the lock part's "cancel" lock stays held, and a campaign on the
        election part's "cancel" name behind it waited out its deadline on both servers,
        seed 951)."""
        assert sum(n.startswith(base + b"-") for n in self.names) < 50, (base, self.names)
        while True:
            name = base + b"-" + str(self.rng.randint(0, 99)).encode()
            if name not in self.names:
                self.names.add(name)
                return name

    # ---------------------------------------------------------------- comparing
    def normal(self, target, raw, error):
        if error is not None:
            return error
        if raw is None:
            return None
        out = differential.tree(raw, target.to_sym) if hasattr(raw, "DESCRIPTOR") else raw
        return _symbolic(out, target.to_sym)

    def check(self, label, answers):
        want, got = answers
        self.steps.append(label)
        if self.trace:
            self.trace(f"{label}\n  etcd:   {want}\n  raftkv: {got}")
        if want != got:
            shown = "\n  ".join(self.steps[-differential.HISTORY_SHOWN:])
            raise Mismatch(f"seed {self.seed}, step {label!r}: answers differ\n"
                           f"etcd:   {want}\nraftkv: {got}\nsteps:\n  {shown}")
        return want

    def call(self, label, service, method, request, who=None, drop=()):
        """The same unary call to both; returns etcd's raw answer (None for an error). drop:
        answer fields left out of the comparison."""
        raws, answers = [], []
        for target in self.t:
            raw, error = target.unary(service, method, request, who)
            self.learn(target, raw)
            raws.append(raw)
            answer = self.normal(target, raw, error)
            if isinstance(answer, dict):
                answer = {k: v for k, v in answer.items() if k not in drop}
            answers.append(answer)
        self.check(label, answers)
        return raws[0]

    def learn(self, target, raw):
        """Leases a server picked (lease 0), seen in a lock key or a leader key."""
        lease = None
        if isinstance(raw, lpb.LockResponse) and raw.key:
            lease = int(raw.key.rsplit(b"/", 1)[1], 16)
        elif isinstance(raw, epb.CampaignResponse):
            lease = raw.leader.lease
        if lease and lease not in target.to_sym and lease not in self.lease_ids:
            sym = self.next_sym + (target is self.t[1] and 0)
            target.to_sym[lease], target.to_actual[sym] = sym, lease
            if target is self.t[1]:
                self.next_sym += 1

    def keys(self, label, *names):
        """The store's keys under the names' prefixes, compared."""
        for name in names:
            prefix = name + b"/"
            self.call(f"{label}: range {prefix!r}", "KV", "Range", rpc_pb2.RangeRequest(
                key=prefix, range_end=differential._prefix_end(prefix)), "root")

    def start(self, label, service, method, request, who=None, queued_key=None):
        """A call that must wait: sent to both, then (queued_key) until that key exists on
        each, and checked to be still waiting."""
        for target in self.t:
            target.start(label, service, method, request, who)
            if queued_key is not None:
                _until(lambda: _exists(target, queued_key), f"{target.name}: {queued_key!r}")
        self.check(f"{label}: waiting", [self.state(t, label) for t in self.t])

    def state(self, target, label):
        return "waiting" if not target.pending[label].done() else "answered"

    def finish(self, label):
        """The answers of a call that was released."""
        answers = []
        for target in self.t:
            future = target.pending.pop(label)
            try:
                raw, error = future.result(timeout=WAIT_S), None
            except grpc.FutureTimeoutError:
                raw, error = None, ("still waiting",)
            except grpc.RpcError as exc:
                raw, error = None, ("error", exc.code().name, exc.details())
            self.learn(target, raw)
            answers.append(self.normal(target, raw, error))
        return self.check(f"{label}: answer", answers)

    def cancel(self, label, gone_key):
        """The client cancels a waiting call: its key must go (auth off)."""
        for target in self.t:
            target.pending.pop(label).cancel()
            if gone_key is not None:
                _until(lambda: not _exists(target, gone_key), f"{target.name}: {gone_key!r} gone")

    def observed(self, label, count):
        self.check(f"{label}: observed {count}", [
            [self.normal(t, *a) for a in t.stream_answers(label, count)] for t in self.t])


def _symbolic(value, to_sym):
    """Server-picked lease IDs in lock and leader keys and LeaderKey.lease made symbolic."""
    if isinstance(value, dict):
        out = {k: _symbolic(v, to_sym) for k, v in value.items()}
        if isinstance(out.get("lease"), int):
            out["lease"] = to_sym.get(out["lease"], out["lease"])
        return out
    if isinstance(value, list):
        return [_symbolic(v, to_sym) for v in value]
    if isinstance(value, bytes) and b"/" in value:
        head, _, tail = value.rpartition(b"/")
        for actual, sym in to_sym.items():
            if tail == _hex(actual):
                return head + b"/" + _hex(sym)
    return value


def _exists(target, key):
    resp = target.stubs["KV"].Range(rpc_pb2.RangeRequest(key=key), timeout=RPC_TIMEOUT_S,
                                    metadata=target.metadata("root") if target.root else None)
    return resp.count > 0


def _until(predicate, what):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise Mismatch(f"timed out waiting for {what}")
        time.sleep(POLL_S)


# -------------------------------------------------------------------------- the script
def run(etcd, raftkv, seed, count=1, log=None, trace=None):
    """The script on both targets (count: ignored, one script per seed); returns how many
    answers were compared."""
    r = Run(etcd, raftkv, seed, trace)
    a, b, c, d, e, f, g, h = r.lease_ids[:8]
    for lease in r.lease_ids:
        r.call(f"grant {lease:#x}", "Lease", "LeaseGrant",
               rpc_pb2.LeaseGrantRequest(ID=lease, TTL=LEASE_TTL_S))
    parts = [_health, _locks, _elections]
    r.rng.shuffle(parts)
    for part in parts:
        part(r, a, b, c, d, e, f, g, h)
        if log:
            log(f"seed {seed}: {part.__name__[1:]} done ({len(r.steps)} answers)")
    _auth(r, *r.lease_ids[8:12])
    if log:
        log(f"seed {seed}: auth done ({len(r.steps)} answers)")
    return len(r.steps)


def _health(r, *_):
    check = health_pb2.HealthCheckRequest
    r.call("health check ''", "Health", "Check", check())
    r.call("health check unknown", "Health", "Check", check(service="etcdserverpb.KV"))
    for service in ("", "x"):
        answers = []
        for target in r.t:
            call = target.stubs["Health"].Watch(check(service=service), timeout=RPC_TIMEOUT_S)
            answers.append(differential.tree(next(call), {}))
            call.cancel()
        r.check(f"health watch {service!r}", answers)


def _locks(r, a, b, c, d, *_):
    name = r.name(b"lock")
    lock = lambda lease, n=name: lpb.LockRequest(name=n, lease=lease)  # noqa: E731
    first = r.call("lock a", "Lock", "Lock", lock(a))
    r.call("lock a again (same lease: same key, no write)", "Lock", "Lock", lock(a))
    r.start("lock b", "Lock", "Lock", lock(b), queued_key=name + b"/" + _hex(b))
    r.start("lock c", "Lock", "Lock", lock(c), queued_key=name + b"/" + _hex(c))
    r.keys("queued", name)
    r.call("unlock a", "Lock", "Unlock", lpb.UnlockRequest(key=first.key))
    r.finish("lock b")
    r.call("revoke c while it waits", "Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=c))
    r.check("lock c after its revoke: waiting", [r.state(t, "lock c") for t in r.t])
    r.call("unlock b", "Lock", "Unlock", lpb.UnlockRequest(key=name + b"/" + _hex(b)))
    r.finish("lock c")  # etcd 3.4.23: OK, with the key its revoke deleted
    r.call("unlock a missing key", "Lock", "Unlock", lpb.UnlockRequest(key=first.key))
    r.call("unlock empty key", "Lock", "Unlock", lpb.UnlockRequest())
    r.call("lock unknown lease", "Lock", "Lock", lock(differential.UNKNOWN_LEASE_ID))
    zero = r.call("lock lease 0", "Lock", "Lock", lock(0, r.name(b"zero")))
    if zero is not None:  # the remaining TTL is wall clock: only the granted one compared
        granted = r.t[0].to_sym[int(zero.key.rsplit(b"/", 1)[1], 16)]
        r.call("lease 0's grant", "Lease", "LeaseTimeToLive",
               rpc_pb2.LeaseTimeToLiveRequest(ID=granted), drop=("TTL",))
    r.call("lock empty name", "Lock", "Lock", lock(d, b""))
    other = r.name(b"cancel")
    r.call("lock other d", "Lock", "Lock", lock(d, other))
    r.start("lock other a", "Lock", "Lock", lock(a, other),
            queued_key=other + b"/" + _hex(a))
    r.cancel("lock other a", other + b"/" + _hex(a))
    r.keys("after the cancel", name, other, b"")


def _elections(r, a, b, c, d, e, f, g, h):
    name = r.name(b"elect")
    campaign = lambda lease, value, n=name: epb.CampaignRequest(  # noqa: E731
        name=n, lease=lease, value=value)
    leader_of = lambda n=name: epb.LeaderRequest(name=n)  # noqa: E731
    r.call("leader before any", "Election", "Leader", leader_of())
    for target in r.t:
        target.observe("observe", name)
    first = r.call("campaign e", "Election", "Campaign", campaign(e, b"v1"))
    r.observed("observe", 1)
    r.call("campaign e again, new value (proclaims)", "Election", "Campaign",
           campaign(e, b"v1b"))
    r.call("leader", "Election", "Leader", leader_of())
    r.observed("observe", 2)
    r.start("campaign f", "Election", "Campaign", campaign(f, b"v2"),
            queued_key=name + b"/" + _hex(f))
    r.call("proclaim", "Election", "Proclaim",
           epb.ProclaimRequest(leader=first.leader, value=b"v1c"))
    r.observed("observe", 3)
    wrong = [epb.LeaderKey(name=name, key=first.leader.key, rev=first.leader.rev + 99,
                           lease=e),
             epb.LeaderKey(name=name, key=name + b"/" + _hex(f), rev=first.leader.rev,
                           lease=f),
             epb.LeaderKey(name=name, key=b"", rev=first.leader.rev, lease=e)]
    for i, key in enumerate(wrong):
        r.call(f"proclaim wrong key {i}", "Election", "Proclaim",
               epb.ProclaimRequest(leader=key, value=b"x"))
        r.call(f"resign wrong key {i}", "Election", "Resign", epb.ResignRequest(leader=key))
    r.call("proclaim without leader", "Election", "Proclaim", epb.ProclaimRequest(value=b"x"))
    r.call("resign without leader", "Election", "Resign", epb.ResignRequest())
    unknown = epb.LeaderKey()
    unknown.CopyFrom(first.leader)
    unknown.lease = differential.UNKNOWN_LEASE_ID
    r.call("proclaim unknown lease", "Election", "Proclaim",
           epb.ProclaimRequest(leader=unknown, value=b"x"))
    r.call("resign", "Election", "Resign", epb.ResignRequest(leader=first.leader))
    r.finish("campaign f")
    r.observed("observe", 4)
    r.call("campaign unknown lease", "Election", "Campaign",
           campaign(differential.UNKNOWN_LEASE_ID, b"x"))
    r.call("campaign lease 0", "Election", "Campaign", campaign(0, b"z", r.name(b"zero")))
    r.start("campaign g", "Election", "Campaign", campaign(g, b"v3"),
            queued_key=name + b"/" + _hex(g))
    r.start("campaign h", "Election", "Campaign", campaign(h, b"v4"),
            queued_key=name + b"/" + _hex(h))
    r.call("revoke the leader's lease", "Lease", "LeaseRevoke",
           rpc_pb2.LeaseRevokeRequest(ID=f))
    r.finish("campaign g")
    r.observed("observe", 5)
    r.call("revoke h while it waits", "Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=h))
    r.call("leader g", "Election", "Leader", leader_of())
    r.cancel("campaign h", None)  # its key went with its lease
    other = r.name(b"cancel")
    r.call("campaign other a", "Election", "Campaign", campaign(a, b"o", other))
    r.start("campaign other b", "Election", "Campaign", campaign(b, b"p", other),
            queued_key=other + b"/" + _hex(b))
    r.cancel("campaign other b", other + b"/" + _hex(b))
    r.keys("elections", name, other)
    r.call("leader of other", "Election", "Leader", leader_of(other))
    for target in r.t:
        target.streams["observe"][0].cancel()


def _auth(r, a, b, c, d):
    """With auth on: root, and alice who may read and write only under her name's prefix."""
    name = r.name(b"alice")
    end = differential._prefix_end(name + b"/")
    for step, (method, request) in enumerate([
            ("UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="rootpw")),
            ("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="root")),
            ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
            ("UserAdd", rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw")),
            ("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="rw")),
            ("RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(
                name="rw", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE,
                                                    key=name + b"/", range_end=end))),
            ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="rw")),
            ("AuthEnable", rpc_pb2.AuthEnableRequest())]):
        for target in r.t:
            getattr(target.stubs["Auth"], method)(request, timeout=RPC_TIMEOUT_S)
    for target in r.t:
        auth = target.stubs["Auth"]
        for who, password in (("root", "rootpw"), ("alice", "alicepw")):
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name=who, password=password),
                                      timeout=RPC_TIMEOUT_S).token
            setattr(target, who, [("token", token)])
    lock = lambda lease, n=name: lpb.LockRequest(name=n, lease=lease)  # noqa: E731
    r.call("auth: health", "Health", "Check", health_pb2.HealthCheckRequest())
    r.call("auth: lock without token", "Lock", "Lock", lock(a))
    r.call("auth: lock bad token", "Lock", "Lock", lock(a), "bogus")
    r.call("auth: lock lease 0 without token", "Lock", "Lock", lock(0))
    r.call("auth: lock denied", "Lock", "Lock", lock(a, b"elsewhere"), "alice")
    first = r.call("auth: lock", "Lock", "Lock", lock(a), "alice")
    r.start("auth: waiter", "Lock", "Lock", lock(b), "alice",
            queued_key=name + b"/" + _hex(b))
    r.call("auth: unlock without token", "Lock", "Unlock", lpb.UnlockRequest(key=first.key))
    r.call("auth: unlock", "Lock", "Unlock", lpb.UnlockRequest(key=first.key), "alice")
    r.finish("auth: waiter")
    r.start("auth: cancelled waiter", "Lock", "Lock", lock(c), "alice",
            queued_key=name + b"/" + _hex(c))
    for target in r.t:  # the cleanup's delete has no token: the key stays
        target.pending.pop("auth: cancelled waiter").cancel()
    r.call("auth: unlock b", "Lock", "Unlock", lpb.UnlockRequest(key=name + b"/" + _hex(b)),
           "alice")
    r.keys("auth: after the cancel", name)
    campaign = epb.CampaignRequest(name=name, lease=d, value=b"v")
    r.call("auth: campaign without token", "Election", "Campaign", campaign)
    r.call("auth: leader without token", "Election", "Leader", epb.LeaderRequest(name=name))
    r.call("auth: unlock c", "Lock", "Unlock", lpb.UnlockRequest(key=name + b"/" + _hex(c)),
           "alice")
    won = r.call("auth: campaign", "Election", "Campaign", campaign, "alice")
    r.call("auth: leader", "Election", "Leader", epb.LeaderRequest(name=name), "alice")
    r.call("auth: leader denied", "Election", "Leader", epb.LeaderRequest(name=b"e"), "alice")
    if won is not None:
        r.call("auth: proclaim without token", "Election", "Proclaim",
               epb.ProclaimRequest(leader=won.leader, value=b"w"))
        r.call("auth: resign without token", "Election", "Resign",
               epb.ResignRequest(leader=won.leader))
    for who in ("alice", None, "bogus"):
        for target in r.t:
            target.observe(f"auth: observe {who}", name, who)
        r.observed(f"auth: observe {who}", 1)
        for target in r.t:
            target.streams[f"auth: observe {who}"][0].cancel()


def connect(etcd_endpoint, raftkv_endpoint):
    targets = Target("etcd", etcd_endpoint), Target("raftkv", raftkv_endpoint)
    for target in targets:
        target.wait_serving()
    return targets


def main(argv=None):
    return differential.seeds_main(argv, __doc__, "--count", 1, "ignored (one script a seed)",
                                   run, extra_args=BCRYPT_ARGS, connect_fn=connect,
                                   what="answers, same on both")


if __name__ == "__main__":
    sys.exit(main())
