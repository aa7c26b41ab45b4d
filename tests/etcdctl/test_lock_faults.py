"""etcd's Lock and Election gRPC services under failures, on a real 3-member etcd 3.4.23 cluster
and a real 3-member raftkv cluster (also with --grpc-workers 2), with the same assertions for
all (each test runs once per target): a waiter while the Raft leader is SIGKILLed and
restarted, a waiter on the member that is killed, Observe streams and Leader() across a leader
change, a gRPC deadline that expires while waiting, a majority down, and a waiter's lease that
expires.

What etcd 3.4.23 did, and so what these tests pin (checked by running it; the same on raftkv):

* A Lock or Campaign waiting on a follower keeps waiting through the leader's death, the
  election and the old leader's restart, and gets the lock when the holder unlocks. Sent to
  the member that is killed, the client sees UNAVAILABLE and the waiter's key stays, under its
  lease.
* An Observe stream on a follower goes on across the leader change (no error, no repeat); one
  on the killed member ends with UNAVAILABLE. Leader() just after the kill answers within the
  request timeout: the leader key or code Unknown (both answered `etcdserver: leader changed`
  after about half a second here).
* A deadline that expires while waiting: DEADLINE_EXCEEDED, and the server deletes the
  waiter's key (Lock) or resigns (Campaign). If a majority is down when it expires, the
  delete waits for a leader (etcd: up to its request timeout), so the key goes once the
  majority is back; it is not left for its lease to end.
* With a majority down, a Lock fails with code Unknown within the request timeout rather than
  hanging (etcd: `etcdserver: request timed out` or `context deadline exceeded` after 6 s;
  raftkv: `etcdserver: request timed out` after its 7 s --request-timeout: its write was held
  for a leader). A Lock already waiting
  keeps waiting.
* A waiter whose lease expires (its key deleted) keeps waiting for the keys before it, then
  answers OK with its deleted key (Lock) or leader key (Campaign), as after a revoke
  (tests/etcdctl/differential_lock.py).

Every process is started by the launchers and killed by PID (conftest.kill_member_process);
every gRPC call has a deadline, every wait a bound.
"""
from __future__ import annotations

import contextlib
import itertools
import queue
import shutil
import threading
import time

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc, v3election_pb2 as epb
from raftkv.api.etcd.proto import v3election_pb2_grpc, v3lock_pb2 as lpb, v3lock_pb2_grpc
from raftkv.cli.local_cluster import LocalCluster
from tests.etcdctl.conformance import EtcdCluster
from tests.etcdctl.conftest import (
    FAST_ARGS, kill_member_process, running, start_member_process, wait_for)

pytestmark = pytest.mark.timeout(120)

RPC_S = 5.0  # deadline of a call that must not wait
WAIT_S = 30.0  # deadline of a call that waits (always ended by the test first)
SETTLE_S = 15.0  # bound of every wait for a state (a leader, a key gone)
REQUEST_TIMEOUT_BOUND_S = 10.0  # etcd answers after 6 s (5 s + 2 election timeouts), raftkv 7 s
LEASE_TTL_S = 60
SHORT_TTL_S = 2  # a lease meant to expire during a test
_lease_ids = itertools.count(0x1000, 0x10)  # 16 fresh lease IDs for each test


class Stubs:
    """One channel to one member and its stubs."""

    def __init__(self, member):
        self.member = member
        self.channel = grpc.insecure_channel(member.grpc_endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.lock = v3lock_pb2_grpc.LockStub(self.channel)
        self.election = v3election_pb2_grpc.ElectionStub(self.channel)

    def exists(self, key):
        return self.kv.Range(rpc_pb2.RangeRequest(key=key), timeout=RPC_S).count > 0

    def grant(self, lease, ttl=LEASE_TTL_S):
        self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lease, TTL=ttl), timeout=RPC_S)


class Faults:
    """The cluster of one test: stubs, the leader, kills and restarts by PID; at the end every
    member runs again and serves linearizable reads (for the next test)."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name.encode()
        self.leases = [next(_lease_ids) for _ in range(16)]
        self._stubs = []
        self._calls = []

    def stubs(self, member):
        self._stubs.append(Stubs(member))
        return self._stubs[-1]

    def keep(self, call):
        """A waiting call or stream, cancelled at the end if still open."""
        self._calls.append(call)
        return call

    def leader(self, among=None):
        """The running member that reports itself leader (waits up to SETTLE_S)."""
        def find():
            for m in among or self.cluster.members:
                if m.alive() and _says_leader(m):
                    return m
            return None
        return wait_for(find, SETTLE_S, 0.05, "a leader")

    def follower(self, leader, other_than=()):
        return next(m for m in self.cluster.members if m is not leader and m not in other_than)

    def kill(self, m):
        kill_member_process(self.cluster, m)

    def restart(self, m):
        start_member_process(self.cluster, m)

    def heal(self):
        for m in self.cluster.members:
            if not m.alive():
                self.restart(m)
        for m in self.cluster.members:
            wait_for(lambda m=m: _serves(m), SETTLE_S * 2, 0.1, f"{m.name} serving")

    @property
    def is_etcd(self):
        """The target is the real etcd (not raftkv)."""
        return isinstance(self.cluster, EtcdCluster)

    def close(self):
        for call in self._calls:
            call.cancel()
        for s in self._stubs:
            s.channel.close()
        self.heal()


# The targets every fault test module runs on: the real etcd, raftkv, and raftkv whose gRPC is
# served by 2 worker processes a member (they outlive a killed member by up to a second and
# answer its RPCs in flight as it going away, Unavailable).
TARGETS = [pytest.param("etcd", marks=pytest.mark.skipif(not shutil.which("etcd"),
                                                         reason="etcd is not installed")),
           "raftkv", "raftkv-grpc-workers"]


@contextlib.contextmanager
def target_cluster(target, root, raftkv_args=()):
    """A running 3-member cluster of target (one of TARGETS) under root, every member serving;
    stopped by PID on leaving. raftkv_args: more flags for raftkv's members."""
    if target == "etcd":
        c = EtcdCluster(root, members=3)
    else:
        workers = ["--grpc-workers", "2"] if target.endswith("workers") else []
        c = LocalCluster(root, members=3, extra_args=[*FAST_ARGS, *raftkv_args, *workers])
    with running(c):
        for m in c.members:
            wait_for(lambda m=m: _serves(m), 60, 0.1, f"{m.name} serving")
        yield c


@contextlib.contextmanager
def faults_of(cluster, request):
    """The Faults of one test (the fault modules' `faults` fixture); closed on leaving."""
    f = Faults(cluster, request.node.originalname)
    try:
        yield f
    finally:
        f.close()


def _status(m):
    """m's Maintenance Status (answered locally, with or without a leader), or None."""
    with grpc.insecure_channel(m.grpc_endpoint) as channel:
        try:
            return rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(),
                                                                timeout=1.0)
        except grpc.RpcError:
            return None


def _says_leader(m):
    st = _status(m)
    return st is not None and st.leader != 0 and st.leader == st.header.member_id


def _leaderless(m):
    """m runs and reports no leader."""
    st = _status(m)
    return st is not None and st.leader == 0


def _serves(m):
    """A linearizable read through m succeeds (it knows a leader)."""
    with grpc.insecure_channel(m.grpc_endpoint) as channel:
        try:
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=2.0)
        except grpc.RpcError:
            return False
        return True


def _answer(future, timeout_s=SETTLE_S):
    """("OK", response) or (gRPC code name, details) of a call's future."""
    try:
        return "OK", future.result(timeout=timeout_s)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


def _key(name, lease):
    return name + b"/" + format(lease, "x").encode()


def _until(predicate, what):
    wait_for(predicate, SETTLE_S, 0.05, what)


def _queued(stubs, future, key):
    """Until the waiting call's key exists and its first read is answered (it watches); the
    call must still be waiting. The waiter sends that read as soon as its key is written, and
    both servers answer linearizable reads in rounds, in order: two more reads of ours through
    the same member come back after it. (A leader killed while that read is out makes it fail
    on both: `etcdserver: leader changed`.)"""
    _until(lambda: stubs.exists(key), f"{key!r} queued")
    for _ in range(2):
        assert stubs.exists(key)
    assert not future.done(), _answer(future, 0)


class Observer:
    """An Observe stream read on a thread: its answers (key, value), then ("end", code)."""

    def __init__(self, faults, stubs, name):
        self.call = faults.keep(stubs.election.Observe(epb.LeaderRequest(name=name),
                                                       timeout=WAIT_S * 2))
        self.answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for resp in self.call:
                self.answers.put((resp.kv.key, resp.kv.value))
        except grpc.RpcError as exc:
            self.answers.put(("end", exc.code().name))
        else:
            self.answers.put(("end", "OK"))

    def next(self, timeout_s=SETTLE_S):
        return self.answers.get(timeout=timeout_s)

    def quiet(self, for_s=0.5):
        """Nothing more within for_s: the stream neither answered nor ended."""
        try:
            got = self.answers.get(timeout=for_s)
        except queue.Empty:
            return True
        raise AssertionError(f"the observer got {got!r}")


@pytest.fixture(scope="module", params=TARGETS)
def cluster(request, tmp_path_factory):
    """A fresh 3-member cluster of the target for the module; stopped by PID at teardown."""
    with target_cluster(request.param,
                        str(tmp_path_factory.mktemp(f"lock-faults-{request.param}"))) as c:
        yield c


@pytest.fixture
def faults(cluster, request):
    with faults_of(cluster, request) as f:
        yield f


def _held_and_waiting(faults, s, deadline_s=WAIT_S):
    """The lock faults.name held with lease 0, and a Lock with lease 1 queued behind it, both
    through s: (the holder's LockResponse, the waiter's future, the waiter's lease)."""
    holder, waiter = faults.leases[:2]
    for lease in (holder, waiter):
        s.grant(lease)
    held = s.lock.Lock(lpb.LockRequest(name=faults.name, lease=holder), timeout=RPC_S)
    wait = faults.keep(s.lock.Lock.future(lpb.LockRequest(name=faults.name, lease=waiter),
                                          timeout=deadline_s))
    _queued(s, wait, _key(faults.name, waiter))
    return held, wait, waiter


def test_a_waiter_on_a_follower_outlives_a_leader_kill_and_restart(faults):
    old = faults.leader()
    s = faults.stubs(faults.follower(old))
    held, wait, waiter = _held_and_waiting(faults, s)
    faults.kill(old)
    assert faults.leader() is not old
    assert not wait.done(), _answer(wait, 0)
    faults.restart(old)
    wait_for(lambda: _serves(old), SETTLE_S, 0.1, "the old leader serving again")
    assert not wait.done(), _answer(wait, 0)
    s.lock.Unlock(lpb.UnlockRequest(key=held.key), timeout=RPC_S)
    code, resp = _answer(wait)
    assert code == "OK", resp
    assert resp.key == _key(faults.name, waiter)


def test_a_waiter_on_the_killed_member_sees_unavailable_and_its_key_stays(faults):
    old = faults.leader()
    s = faults.stubs(old)
    _, wait, waiter = _held_and_waiting(faults, s)
    faults.kill(old)
    assert _answer(wait)[0] == "UNAVAILABLE"
    other = faults.stubs(faults.leader())
    resp = other.kv.Range(rpc_pb2.RangeRequest(key=_key(faults.name, waiter)), timeout=RPC_S)
    assert [kv.lease for kv in resp.kvs] == [waiter]  # no cleanup: it goes with its lease
    other.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=waiter), timeout=RPC_S)
    assert not other.exists(_key(faults.name, waiter))


def test_campaign_observe_and_leader_across_a_leader_change(faults):
    old = faults.leader()
    s = faults.stubs(faults.follower(old))
    first, second = faults.leases[:2]
    for lease in (first, second):
        s.grant(lease)
    on_follower = Observer(faults, s, faults.name)
    on_leader = Observer(faults, faults.stubs(old), faults.name)
    led = s.election.Campaign(epb.CampaignRequest(name=faults.name, lease=first, value=b"a"),
                              timeout=RPC_S)
    for observer in (on_follower, on_leader):
        assert observer.next() == (_key(faults.name, first), b"a")
    wait = faults.keep(s.election.Campaign.future(
        epb.CampaignRequest(name=faults.name, lease=second, value=b"b"), timeout=WAIT_S))
    _queued(s, wait, _key(faults.name, second))
    faults.kill(old)
    assert on_leader.next() == ("end", "UNAVAILABLE")
    started = time.monotonic()
    try:  # during the election: the leader key, or an error, within the request timeout
        answer = s.election.Leader(epb.LeaderRequest(name=faults.name),
                                   timeout=REQUEST_TIMEOUT_BOUND_S * 2).kv.key
    except grpc.RpcError as exc:
        answer = exc.code().name
    assert answer in (_key(faults.name, first), "UNKNOWN")
    assert time.monotonic() - started < REQUEST_TIMEOUT_BOUND_S
    faults.leader()
    assert s.election.Leader(epb.LeaderRequest(name=faults.name),
                             timeout=REQUEST_TIMEOUT_BOUND_S).kv.key == _key(faults.name, first)
    on_follower.quiet()
    assert not wait.done(), _answer(wait, 0)
    s.election.Proclaim(epb.ProclaimRequest(leader=led.leader, value=b"a2"), timeout=RPC_S)
    assert on_follower.next() == (_key(faults.name, first), b"a2")
    s.election.Resign(epb.ResignRequest(leader=led.leader), timeout=RPC_S)
    code, resp = _answer(wait)
    assert code == "OK", resp
    assert resp.leader.key == _key(faults.name, second)
    assert on_follower.next() == (_key(faults.name, second), b"b")


def test_a_deadline_while_waiting_deletes_the_waiters_key(faults):
    s = faults.stubs(faults.follower(faults.leader()))
    holder, lock_waiter, campaign_waiter = faults.leases[:3]
    for lease in (holder, lock_waiter, campaign_waiter):
        s.grant(lease)
    name, elect = faults.name + b"-lock", faults.name + b"-elect"
    s.lock.Lock(lpb.LockRequest(name=name, lease=holder), timeout=RPC_S)
    s.election.Campaign(epb.CampaignRequest(name=elect, lease=holder, value=b"a"),
                        timeout=RPC_S)
    for call in (lambda: s.lock.Lock(lpb.LockRequest(name=name, lease=lock_waiter),
                                     timeout=1.0),
                 lambda: s.election.Campaign(epb.CampaignRequest(
                     name=elect, lease=campaign_waiter, value=b"b"), timeout=1.0)):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for key in (_key(name, lock_waiter), _key(elect, campaign_waiter)):
        _until(lambda key=key: not s.exists(key), f"{key!r} deleted")
    assert s.exists(_key(name, holder)) and s.exists(_key(elect, holder))


def test_a_waiter_whose_deadline_expires_without_quorum_is_deleted_once_it_returns(faults):
    old = faults.leader()
    survivor = faults.follower(old)
    other = faults.follower(old, (survivor,))
    s = faults.stubs(survivor)
    holder, waiter = faults.leases[:2]
    for lease in (holder, waiter):
        s.grant(lease)
    name, elect = faults.name + b"-lock", faults.name + b"-elect"
    s.lock.Lock(lpb.LockRequest(name=name, lease=holder), timeout=RPC_S)
    s.election.Campaign(epb.CampaignRequest(name=elect, lease=holder, value=b"a"),
                        timeout=RPC_S)
    waits = [faults.keep(s.lock.Lock.future(lpb.LockRequest(name=name, lease=waiter),
                                            timeout=2.5)),
             faults.keep(s.election.Campaign.future(
                 epb.CampaignRequest(name=elect, lease=waiter, value=b"b"), timeout=2.5))]
    _queued(s, waits[0], _key(name, waiter))
    _queued(s, waits[1], _key(elect, waiter))
    faults.kill(old)
    faults.kill(other)
    for wait in waits:
        assert _answer(wait)[0] == "DEADLINE_EXCEEDED"
    faults.restart(old)
    faults.restart(other)
    for key in (_key(name, waiter), _key(elect, waiter)):  # the lease has 60 s to go
        wait_for(lambda key=key: _serves(survivor) and not s.exists(key), SETTLE_S, 0.1,
                 f"{key!r} deleted")


def test_a_lock_without_quorum_fails_within_the_request_timeout(faults):
    old = faults.leader()
    survivor = faults.follower(old)
    other = faults.follower(old, (survivor,))
    s = faults.stubs(survivor)
    _, wait, waiter = _held_and_waiting(faults, s, WAIT_S * 2)
    late = faults.leases[2]
    s.grant(late)
    faults.kill(old)
    faults.kill(other)
    wait_for(lambda: _leaderless(survivor), SETTLE_S, 0.05, "the survivor without a leader")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as exc:
        s.lock.Lock(lpb.LockRequest(name=faults.name + b"-other", lease=late),
                    timeout=REQUEST_TIMEOUT_BOUND_S * 2)
    assert exc.value.code() == grpc.StatusCode.UNKNOWN, exc.value.details()
    assert time.monotonic() - started < REQUEST_TIMEOUT_BOUND_S
    assert not wait.done(), _answer(wait, 0)  # the earlier waiter waits on
    faults.heal()
    assert not wait.done(), _answer(wait, 0)
    wait.cancel()
    _until(lambda: not s.exists(_key(faults.name, waiter)), "the cancelled waiter's key deleted")


def test_a_waiter_whose_lease_expires_still_waits_then_answers_ok(faults):
    s = faults.stubs(faults.follower(faults.leader()))
    holder, short = faults.leases[:2]
    s.grant(holder)
    s.grant(short, SHORT_TTL_S)
    name, elect = faults.name + b"-lock", faults.name + b"-elect"
    held = s.lock.Lock(lpb.LockRequest(name=name, lease=holder), timeout=RPC_S)
    led = s.election.Campaign(epb.CampaignRequest(name=elect, lease=holder, value=b"a"),
                              timeout=RPC_S)
    lock_wait = faults.keep(s.lock.Lock.future(lpb.LockRequest(name=name, lease=short),
                                               timeout=WAIT_S))
    campaign_wait = faults.keep(s.election.Campaign.future(
        epb.CampaignRequest(name=elect, lease=short, value=b"b"), timeout=WAIT_S))
    _queued(s, lock_wait, _key(name, short))
    _queued(s, campaign_wait, _key(elect, short))
    for key in (_key(name, short), _key(elect, short)):
        _until(lambda key=key: not s.exists(key), f"{key!r} expired")
    assert not lock_wait.done() and not campaign_wait.done()
    s.lock.Unlock(lpb.UnlockRequest(key=held.key), timeout=RPC_S)
    code, resp = _answer(lock_wait)
    assert code == "OK", resp
    assert resp.key == _key(name, short)
    s.election.Resign(epb.ResignRequest(leader=led.leader), timeout=RPC_S)
    code, resp = _answer(campaign_wait)
    assert code == "OK", resp
    assert resp.leader.key == _key(elect, short)
    assert not s.exists(_key(name, short))
