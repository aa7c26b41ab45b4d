"""Linearizable reads on a member without a leader, on a real 3-member etcd 3.4.23 cluster and a
real 3-member raftkv cluster (also with --grpc-workers 2), each with a 6 s request timeout
(etcd's is 5 s + 2 election timeouts of 0.5 s; raftkv's is --request-timeout 6).

What etcd 3.4.23 did (checked by running it), and what raftkv does:

* A Range sent to a follower just after the leader is SIGKILLed waits for the election, then
  etcd answers UNAVAILABLE `etcdserver: leader changed` (its read loop fails the round at a
  leader change): etcdctl, whose client retries UNAVAILABLE reads, prints the value, a bare
  gRPC client gets the error. raftkv asks the new leader again and answers the value, over
  gRPC and over the native protocol without the client's retries. So does a read-only Txn.
* A Range sent while the member knows no leader at all (a majority down) is held: etcd answers
  `leader changed` once a leader is elected, raftkv the value.
* With a majority down a linearizable Range or read-only Txn never succeeds: UNAVAILABLE
  `etcdserver: request timed out` after the request timeout on both (raftkv: the native
  error TIMEOUT); etcd's may take up to twice that (a read arriving while its read loop waits
  for an earlier ReadIndex waits for the next one), raftkv's each take their own timeout. A
  shorter client deadline ends it sooner (DEADLINE_EXCEEDED; from etcd, when its own answer
  beats the client's timer, Unknown `context deadline exceeded`). A serializable Range is
  answered at once from the member's store, and so is Status, whose errors then name
  `etcdserver: no leader`.

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
from tests.etcdctl.test_lock_faults import TARGETS, _leaderless, faults_of, target_cluster

pytestmark = pytest.mark.timeout(180)

REQUEST_TIMEOUT_S = 6.0  # both targets' (see the module docstring)
WAIT_S = 30.0  # deadline of a read that waits (never reached)
SHORT_S = 2.0  # a client deadline below the request timeout
SLACK_S = 1.5  # how far past its bound a read's answer may come on a loaded machine
VALUE = b"v1"
# etcd's own answer to a read whose deadline (sent with it) passed while it waited: its read
# returns the context's error, which v3rpc hands to grpc-go as is, and grpc-go sends an error
# that is not a status as code Unknown. The client's own timer usually ends the call first
# (DEADLINE_EXCEEDED); on a loaded machine etcd's answer can arrive before that timer fires.
ETCD_DEADLINE_ANSWER = ("UNKNOWN", "context deadline exceeded")


@pytest.fixture(scope="module", params=TARGETS)
def cluster(request, tmp_path_factory):
    """A fresh 3-member cluster of the target for the module; stopped by PID at teardown."""
    root = str(tmp_path_factory.mktemp(f"read-faults-{request.param}"))
    with target_cluster(request.param, root,
                        ["--request-timeout", str(REQUEST_TIMEOUT_S)]) as c:
        with grpc.insecure_channel(c.members[0].grpc_endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=VALUE), timeout=5)
        yield c


@pytest.fixture
def faults(cluster, request):
    with faults_of(cluster, request) as f:
        yield f


class Reads:
    """Reads sent at once through one member, answered on threads: each a future of
    (outcome, seconds taken), outcome ("OK", value or None) or (error code, message)."""

    def __init__(self, member):
        self.member = member
        self.channel = grpc.insecure_channel(member.grpc_endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def close(self):
        self.pool.shutdown(wait=True)
        self.channel.close()

    def _timed(self, fn):
        def run():
            started = time.monotonic()
            return fn(), time.monotonic() - started
        return self.pool.submit(run)

    def range(self, deadline_s=WAIT_S, serializable=False):
        request = rpc_pb2.RangeRequest(key=b"k", serializable=serializable)
        return self._timed(lambda: _grpc(lambda: _value(self.kv.Range(request,
                                                                        timeout=deadline_s))))

    def txn(self, deadline_s=WAIT_S):
        """A read-only Txn (one get)."""
        request = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
            request_range=rpc_pb2.RangeRequest(key=b"k"))])

        def call():
            resp = self.kv.Txn(request, timeout=deadline_s)
            return _value(resp.responses[0].response_range)
        return self._timed(lambda: _grpc(call))

    def native(self, timeout_s=WAIT_S):
        """A native range on one connection, without the client's retries (raftkv only)."""
        return self._timed(lambda: asyncio.run(_native_range(self.member, timeout_s)))

    def etcdctl(self, timeout_s=WAIT_S):
        def call():
            proc = subprocess.run(
                [ETCDCTL, "--endpoints", self.member.grpc_endpoint,
                 f"--command-timeout={timeout_s:g}s", "get", "k", "--print-value-only"],
                capture_output=True, text=True, timeout=timeout_s + 10,
                env=dict(os.environ, ETCDCTL_API="3"))
            if proc.returncode == 0:
                return "OK", proc.stdout.strip().encode()
            return "exit", proc.stderr.strip().splitlines()[-1]
        return self._timed(call)


def _value(resp):
    return "OK", resp.kvs[0].value if resp.kvs else None


def _grpc(call):
    try:
        return call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


async def _native_range(member, timeout_s):
    host, port = member.native_endpoint.rsplit(":", 1)
    conn = await connect(host, int(port), 5.0)
    try:
        resp = await conn.request("range", {"key": b"k"}, None, timeout_s)
        kvs = resp.get("kvs") or []
        return "OK", kvs[0]["value"] if kvs else None
    except RaftkvError as exc:
        return exc.code, str(exc)
    except asyncio.TimeoutError:
        return "client timeout", ""
    finally:
        conn.close()


def _answers(futures):
    return [f.result(timeout=WAIT_S + 15) for f in futures]


def _served(faults, outcomes, what):
    """raftkv: every read answered the value. etcd: the value or `leader changed` (its bare
    gRPC client does not retry)."""
    for (outcome, took) in outcomes:
        if outcome == ("OK", VALUE):
            continue
        assert faults.is_etcd and outcome == ("UNAVAILABLE", "etcdserver: leader changed"), \
            f"{what}: {outcome} after {took:.1f}s"
        assert took < REQUEST_TIMEOUT_S


def test_a_read_during_an_election_is_served_by_the_new_leader(faults):
    leader = faults.leader()
    follower = faults.follower(leader)
    reads = Reads(follower)
    try:
        faults.kill(leader)
        grpc_reads = [reads.range(), reads.txn()]
        ctl = reads.etcdctl()
        native = [] if faults.is_etcd else [reads.native()]
        outcomes = _answers(grpc_reads + native)
        _served(faults, outcomes, "a read through a follower while the leader was elected anew")
        for outcome, took in outcomes[2:]:  # native, without the client's retries
            assert outcome == ("OK", VALUE), (outcome, took)
        assert _answers([ctl])[0][0] == ("OK", VALUE)  # etcdctl retries: the value on both
        faults.leader(among=[m for m in faults.cluster.members if m is not leader])
    finally:
        reads.close()


def test_a_read_sent_without_a_leader_is_served_once_one_is_elected(faults):
    leader = faults.leader()
    survivor = faults.follower(leader)
    other = faults.follower(leader, other_than=[survivor])
    faults.kill(leader)
    faults.kill(other)
    wait_for(lambda: _leaderless(survivor), 15, 0.05, f"{survivor.name} without a leader")
    reads = Reads(survivor)
    try:
        futures = [reads.range(), reads.txn()]
        if not faults.is_etcd:
            futures.append(reads.native())
        time.sleep(0.5)  # the reads arrive while the member knows no leader
        assert not any(f.done() for f in futures), _answers([f for f in futures if f.done()])
        faults.restart(other)  # a leader within a few seconds, inside the request timeout
        _served(faults, _answers(futures), "a read held until a leader was elected")
    finally:
        reads.close()


def test_without_a_quorum_a_read_times_out_and_a_serializable_one_is_answered(faults):
    leader = faults.leader()
    survivor = faults.follower(leader)
    other = faults.follower(leader, other_than=[survivor])
    faults.kill(leader)
    faults.kill(other)
    reads = Reads(survivor)
    try:
        serializable = reads.range(deadline_s=5, serializable=True)
        long_reads = [reads.range(), reads.txn()]
        short_reads = [reads.range(deadline_s=SHORT_S), reads.txn(deadline_s=SHORT_S)]
        native = [] if faults.is_etcd else [reads.native(), reads.native(timeout_s=SHORT_S)]
        (outcome, took), = _answers([serializable])
        assert outcome == ("OK", VALUE) and took < 1.0, (outcome, took)
        for outcome, took in _answers(short_reads):
            assert outcome[0] == "DEADLINE_EXCEEDED" or \
                (faults.is_etcd and outcome == ETCD_DEADLINE_ANSWER), (outcome, took)
            assert SHORT_S - 0.1 <= took < SHORT_S + SLACK_S, (outcome, took)
        # etcd asks one ReadIndex at a time, each for up to its request timeout: a read that
        # arrives while one is out waits for the next (up to two timeouts). raftkv bounds
        # each read by its own timeout.
        bound_s = REQUEST_TIMEOUT_S * (2 if faults.is_etcd else 1)
        for outcome, took in _answers(long_reads):
            assert outcome == ("UNAVAILABLE", "etcdserver: request timed out"), (outcome, took)
            assert REQUEST_TIMEOUT_S - 0.5 <= took < bound_s + SLACK_S, took
        if native:
            (outcome, took), (short, short_took) = _answers(native)
            assert outcome == ("TIMEOUT", "etcdserver: request timed out"), outcome
            assert REQUEST_TIMEOUT_S - 0.5 <= took < REQUEST_TIMEOUT_S + SLACK_S, took
            assert short[0] == "client timeout" and short_took < SHORT_S + SLACK_S, short
        # Status is answered at once, and says why reads fail (etcdctl's ERRORS column).
        status = rpc_pb2_grpc.MaintenanceStub(reads.channel).Status(rpc_pb2.StatusRequest(),
                                                                    timeout=2.0)
        assert status.leader == 0 and "etcdserver: no leader" in status.errors, status
    finally:
        reads.close()
