"""Writes on a member without a leader, on a real 3-member etcd 3.4.23 cluster and a real
3-member raftkv cluster (also with --grpc-workers 2), each with a 6 s request timeout (etcd's
is 5 s + 2 election timeouts of 0.5 s; raftkv's is --request-timeout 6).

What etcd 3.4.23 did (checked by running it), and what raftkv does:

* A put sent to a member that knows no leader (a majority down; an election under way) is
  held until a leader is elected, then applied, once: etcdctl prints OK on both, as does a
  bare gRPC client. raftkv's own native client asks to be refused instead (NO_LEADER at once:
  it fails over to another member itself); a native client that does not ask is held too.
* A put whose client deadline passes while it is held is never applied, even when a leader is
  elected a moment later (etcd's proposal leaves its queue with its context; raftkv drops it,
  also when a --grpc-workers child passes the request on).
* With a majority down a put never succeeds. etcdctl's default --command-timeout (5 s) is
  below both request timeouts: `Error: context deadline exceeded` after 5 s on both (from
  etcd, when its own answer beats etcdctl's timer on a loaded machine, code Unknown). With a
  longer one the member answers after its request timeout: raftkv `etcdserver: request timed
  out`; etcd `rpc error: code = Unknown desc = context deadline exceeded` (a held proposal ends
  with its context's error, which etcd's gRPC layer passes on as is; docs/ETCD_DIFFERENCES.md).
* A put sent right after the leader is SIGKILLed, while the member still believes in it, is
  forwarded to the dead leader and lost: etcd answers `etcdserver: request timed out, possibly
  due to previous leader failure` after its request timeout, raftkv `etcdserver: leader
  changed` once the member sees its leader gone (about an election timeout); neither sends it
  again. On a loaded machine etcdctl may start only after the member noticed: then it is held
  and applied as above.

Every process is started by the launchers and killed by PID; every call has a deadline.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import time

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.client.connection import connect
from raftkv.errors import RaftkvError
from tests.etcdctl.conftest import ETCDCTL, wait_for
from tests.etcdctl.test_lock_faults import (
    TARGETS,
    _leaderless,
    _serves,
    faults_of,
    target_cluster,
)

pytestmark = pytest.mark.timeout(180)

REQUEST_TIMEOUT_S = 6.0  # both targets' (see the module docstring)
ETCDCTL_DEFAULT_S = 5.0  # etcdctl's --command-timeout
WAIT_S = 30.0  # deadline of a write that waits (never reached)
SHORT_S = 1.5  # a client deadline below the request timeout
SLACK_S = 1.5  # how far past its bound an answer may come on a loaded machine
HELD_S = 0.5  # how long the held writes are seen waiting before a leader is elected
# etcd's own answer when a client deadline passes, which may beat the client's own timer
# (DEADLINE_EXCEEDED) on a loaded machine (tests/etcdctl/test_read_faults.py)
ETCD_DEADLINE_ANSWER = ("UNKNOWN", "context deadline exceeded")
ETCD_CTL_DEADLINE_ANSWER = "Error: rpc error: code = Unknown desc = context deadline exceeded"


@pytest.fixture(scope="module", params=TARGETS)
def cluster(request, tmp_path_factory):
    """A fresh 3-member cluster of the target for the module; stopped by PID at teardown."""
    root = str(tmp_path_factory.mktemp(f"write-faults-{request.param}"))
    with target_cluster(request.param, root,
                        ["--request-timeout", str(REQUEST_TIMEOUT_S)]) as c:
        yield c


@pytest.fixture
def faults(cluster, request):
    with faults_of(cluster, request) as f:
        yield f


class Writes:
    """Puts sent at once through one member, answered on threads: each a future of (outcome,
    seconds taken), outcome ("OK", None) or (error code, message)."""

    def __init__(self, member, prefix):
        self.member = member
        self.prefix = prefix
        self.channel = grpc.insecure_channel(member.grpc_endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def close(self):
        self.pool.shutdown(wait=True)
        self.channel.close()

    def key(self, name):
        return self.prefix + b"/" + name

    def _timed(self, fn):
        def run():
            started = time.monotonic()
            return fn(), time.monotonic() - started
        return self.pool.submit(run)

    def grpc(self, name, deadline_s=WAIT_S):
        request = rpc_pb2.PutRequest(key=self.key(name), value=b"v")

        def call():
            try:
                self.kv.Put(request, timeout=deadline_s)
                return "OK", None
            except grpc.RpcError as exc:
                return exc.code().name, exc.details()
        return self._timed(call)

    def etcdctl(self, name, timeout_s=None):
        """etcdctl put; timeout_s None: its default --command-timeout."""
        flags = [] if timeout_s is None else [f"--command-timeout={timeout_s:g}s"]

        def call():
            proc = subprocess.run(
                [ETCDCTL, "--endpoints", self.member.grpc_endpoint, *flags, "put",
                 self.key(name).decode(), "v"],
                capture_output=True, text=True, timeout=(timeout_s or WAIT_S) + 10,
                env=dict(os.environ, ETCDCTL_API="3"))
            if proc.returncode == 0:
                return "OK", None
            return "exit", proc.stderr.strip().splitlines()[-1]
        return self._timed(call)

    def native(self, name, fail_fast=False, timeout_s=WAIT_S):
        """A native put on one connection, without the client's retries (raftkv only);
        fail_fast: the hello asks to be refused without a leader, as raftkv's client does."""
        return self._timed(lambda: asyncio.run(self._native(name, fail_fast, timeout_s)))

    async def _native(self, name, fail_fast, timeout_s):
        host, port = self.member.native_endpoint.rsplit(":", 1)
        options = {"leaderless": "fail"} if fail_fast else None
        conn = await connect(host, int(port), 5.0, hello_options=options)
        try:
            await conn.request("put", {"key": self.key(name), "value": b"v"}, None, timeout_s)
            return "OK", None
        except RaftkvError as exc:
            return exc.code, str(exc)
        except asyncio.TimeoutError:
            return "client timeout", ""
        finally:
            conn.close()


def _answers(futures):
    return [f.result(timeout=WAIT_S + 15) for f in futures]


def _versions(member, writes, names):
    """Each key's version as a linearizable read through member sees it (0: absent)."""
    with grpc.insecure_channel(member.grpc_endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        out = []
        for name in names:
            resp = kv.Range(rpc_pb2.RangeRequest(key=writes.key(name)), timeout=5.0)
            out.append(resp.kvs[0].version if resp.kvs else 0)
        return out


def _deadline_passed(faults, outcome):
    return outcome[0] == "DEADLINE_EXCEEDED" or \
        (faults.is_etcd and outcome == ETCD_DEADLINE_ANSWER)


def _majority_down(faults):
    """Kill the leader and one follower; the other follower, once it knows no leader."""
    leader = faults.leader()
    survivor = faults.follower(leader)
    other = faults.follower(leader, other_than=[survivor])
    faults.kill(leader)
    faults.kill(other)
    wait_for(lambda: _leaderless(survivor), 15, 0.05, f"{survivor.name} without a leader")
    return survivor, other


def test_a_write_sent_without_a_leader_is_applied_once_one_is_elected(faults):
    survivor, other = _majority_down(faults)
    writes = Writes(survivor, faults.name)
    try:
        held = [writes.etcdctl(b"ctl", WAIT_S), writes.grpc(b"grpc")]
        names = [b"ctl", b"grpc"]
        if not faults.is_etcd:
            held.append(writes.native(b"native"))
            names.append(b"native")
            (refused, took), = _answers([writes.native(b"refused", fail_fast=True)])
            assert refused == ("NO_LEADER", "etcdserver: no leader") and took < 1.0, took
        gone = writes.grpc(b"gone", deadline_s=SHORT_S)
        (outcome, took), = _answers([gone])
        assert _deadline_passed(faults, outcome), (outcome, took)
        assert SHORT_S - 0.1 <= took < SHORT_S + SLACK_S, took
        time.sleep(HELD_S)
        assert not any(f.done() for f in held), _answers([f for f in held if f.done()])
        faults.restart(other)  # a leader within a few seconds, inside the request timeout
        for (outcome, took), name in zip(_answers(held), names):
            assert outcome == ("OK", None), (name, outcome, took)
        wait_for(lambda: _serves(survivor), 15, 0.1, f"{survivor.name} serving")
        # each applied once; the one whose deadline passed never, though a leader came
        # within its member's request timeout
        assert _versions(survivor, writes, names + [b"gone", b"refused"]) == \
            [1] * len(names) + [0, 0]
    finally:
        writes.close()


def test_without_a_quorum_a_write_times_out(faults):
    survivor, _ = _majority_down(faults)
    writes = Writes(survivor, faults.name)
    try:
        default_ctl = writes.etcdctl(b"default")
        long_ctl = writes.etcdctl(b"long", timeout_s=WAIT_S)
        long_grpc = writes.grpc(b"grpc")
        native = [] if faults.is_etcd else [writes.native(b"native")]
        (outcome, took), = _answers([default_ctl])
        assert outcome == ("exit", "Error: context deadline exceeded") or \
            (faults.is_etcd and outcome == ("exit", ETCD_CTL_DEADLINE_ANSWER)), (outcome, took)
        assert ETCDCTL_DEFAULT_S - 0.1 <= took < ETCDCTL_DEFAULT_S + SLACK_S, took
        # the member's own answer at its request timeout (etcd's: see the module docstring)
        if faults.is_etcd:
            expected = [("exit", ETCD_CTL_DEADLINE_ANSWER), ETCD_DEADLINE_ANSWER]
        else:
            expected = [("exit", "Error: etcdserver: request timed out"),
                        ("UNAVAILABLE", "etcdserver: request timed out"),
                        ("TIMEOUT", "etcdserver: request timed out")]
        for (outcome, took), want in zip(_answers([long_ctl, long_grpc, *native]), expected):
            assert outcome == want, (outcome, took)
            assert REQUEST_TIMEOUT_S - 0.5 <= took < REQUEST_TIMEOUT_S + SLACK_S, took
    finally:
        writes.close()


def test_a_write_right_after_the_leader_dies_is_lost_with_it(faults):
    leader = faults.leader()
    follower = faults.follower(leader)
    writes = Writes(follower, faults.name)
    try:
        faults.kill(leader)
        (outcome, took), = _answers([writes.etcdctl(b"k", WAIT_S)])
        faults.leader(among=[m for m in faults.cluster.members if m is not leader])
        applied = _versions(follower, writes, [b"k"]) == [1]
        if outcome == ("OK", None):  # it reached the member after it noticed: held
            assert applied
            return
        assert not applied
        if faults.is_etcd:
            assert outcome[1].startswith("Error: etcdserver: request timed out"), outcome
            assert REQUEST_TIMEOUT_S - 0.5 <= took < REQUEST_TIMEOUT_S + SLACK_S, took
        else:
            assert outcome == ("exit", "Error: etcdserver: leader changed"), outcome
            assert took < REQUEST_TIMEOUT_S / 2, took
    finally:
        writes.close()
