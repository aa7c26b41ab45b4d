"""Jepsen-style runs (tests/cluster/histories.py): clients on a real 3-member cluster while
members are killed, restarted, paused and partitioned away, the leader among them; the recorded
history must be linearizable, revisions must respect real time, and nothing acknowledged may
be lost.

Each run is seeded (the nemesis's choices and the clients' operations; the timing is real, so
a seed does not replay exactly). RAFTKV_LIN_RUNS and RAFTKV_LIN_SECONDS make longer soaks:

    RAFTKV_LIN_RUNS=20 RAFTKV_LIN_SECONDS=120 python -m pytest \\
        tests/cluster/test_linearizable_under_faults.py -s
"""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from tests.cluster import histories
from tests.linearizability.checker import format_failure
from tests.linearizability.raftkv_model import model

RUNS = int(os.environ.get("RAFTKV_LIN_RUNS", "2"))
SECONDS = float(os.environ.get("RAFTKV_LIN_SECONDS", "20"))
SEED_BASE = int(os.environ.get("RAFTKV_LIN_SEED", "1"))
MIN_OK_OPS_PER_S = 10  # a run that did next to nothing checks next to nothing

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(int(SECONDS * 3) + 120)]


def _save(result, path):
    with open(path, "w") as f:
        for fault in result.faults:
            f.write(json.dumps({"fault": dataclasses.asdict(fault)}) + "\n")
        for op in result.ops:
            row = dataclasses.asdict(op)
            f.write(json.dumps(row, default=lambda b: b.decode(errors="replace")
                               if isinstance(b, bytes) else repr(b)) + "\n")


@pytest.mark.parametrize("seed", range(SEED_BASE, SEED_BASE + RUNS))
def test_history_under_faults_is_linearizable(make_cluster, tmp_path, monkeypatch, seed):
    _run_and_check(make_cluster, tmp_path, monkeypatch, seed, auth=False)


def test_history_under_faults_with_auth(make_cluster, tmp_path, monkeypatch):
    """The same with auth on: every client authenticates, and again whenever a restarted
    member no longer knows its token; permission checks run in every apply."""
    _run_and_check(make_cluster, tmp_path, monkeypatch, SEED_BASE + RUNS, auth=True)


def _run_and_check(make_cluster, tmp_path, monkeypatch, seed, auth):
    fp_dir = tmp_path / "failpoints"
    fp_dir.mkdir()
    monkeypatch.setenv("RAFTKV_FAILPOINT_DIR", str(fp_dir))  # for the partition faults
    # A small snapshot count makes restarted members catch up through snapshots too.
    h = make_cluster(3, extra_args=["--snapshot-count", "300"])
    creds = histories.enable_auth(h) if auth else None
    result = histories.run(h, seed, SECONDS, failpoint_dir=str(fp_dir), creds=creds)
    print(f"seed {seed}{' (auth)' if auth else ''}: {histories.summary(result)}")
    problems, lin = histories.check_run(result)
    if problems:
        path = tmp_path / f"history-seed{seed}.jsonl"
        _save(result, path)
        if lin.verdict != "ok":
            print(format_failure(lin, model()))
        pytest.fail(f"seed {seed}: {problems} (history in {path})")
    ok = sum(op.out is not None for op in result.ops)
    assert ok >= MIN_OK_OPS_PER_S * SECONDS, histories.summary(result)
    assert len(result.faults) >= 2, result.faults
    assert any(op.kind in ("put", "delete", "cas") and op.out is not None
               for op in result.ops)
