"""Differential test of the Lock, Election and Health services (tests/etcdctl/differential_lock.py):
the same scripted calls, contention and cancellations included, to a fresh etcd 3.4.23 and a
fresh 3-member raftkv cluster (then a raftkv member with --grpc-workers), every answer the
same after the normalisations listed in that module.

The suite runs one seed per pair of servers. For a longer hunt:

    RAFTKV_DIFF_LOCK_SEED=7 python -m pytest tests/etcdctl/test_differential_lock.py

or `python -m tests.etcdctl.differential_lock --seeds 20` (fresh servers per seed).
"""
import os
import shutil

import pytest

from tests.etcdctl import differential, differential_lock

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not shutil.which("etcd"), reason="etcd is not installed")]

SEED = int(os.environ.get("RAFTKV_DIFF_LOCK_SEED", "20260101"))


def _run(tmp_path, seed, raftkv_args=()):
    with differential.paired_targets(str(tmp_path), seed, differential_lock.BCRYPT_ARGS,
                                     differential_lock.connect,
                                     raftkv_args=raftkv_args) as (etcd, raftkv):
        return differential_lock.run(etcd, raftkv, seed)


def test_lock_election_and_health_answer_as_etcd(tmp_path):
    assert _run(tmp_path, SEED) > 90


def test_the_same_through_grpc_workers(tmp_path):
    assert _run(tmp_path, SEED + 1, ("--grpc-workers", "2")) > 90


def test_server_picked_leases_are_symbolic_in_keys():
    to_sym = {0x2040A21CAF06C41E: 0x5E000000}
    answer = {"key": b"z/2040a21caf06c41e", "leader": {"lease": 0x2040A21CAF06C41E},
              "kv": {"key": b"l/101", "lease": 0x101}}
    assert differential_lock._symbolic(answer, to_sym) == {
        "key": b"z/5e000000", "leader": {"lease": 0x5E000000},
        "kv": {"key": b"l/101", "lease": 0x101}}


def test_names_are_not_reused_within_a_run():
    """The lock and election parts both draw a "cancel" and a "zero" name; drawn alike (seed
    951), the election's campaign queued behind the lock part's held lock and both servers
    answered DEADLINE_EXCEEDED after 15 s instead of electing it."""
    r = differential_lock.Run(None, None, 951)
    names = [r.name(base) for base in (b"cancel", b"zero") for _ in range(40)]
    assert len(set(names)) == len(names)
    assert all(n.split(b"-")[0] in (b"cancel", b"zero") and 0 <= int(n.split(b"-")[1]) < 100
               for n in names)
