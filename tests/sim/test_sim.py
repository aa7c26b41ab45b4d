"""The deterministic simulator's corpus, its random mode, and tests that its checkers bite.

- test_corpus: a fixed corpus of CORPUS_SEEDS seeds over 3, 5 and 7 members, in chunks so
  pytest-xdist spreads them (pytest -n 2). Every seed has faults, and most have membership
  changes, snapshots, leader transfers and reads during them.
- test_random_seeds: RAFTKV_SIM_SEEDS=N runs N fresh random seeds (skipped when unset).
- test_broken_*: a deliberately broken rule monkeypatched into the core must be reported as an
  invariant violation within a small budget of seeds.

A failure message names the seed and the command that replays it (tools/vopr.py).
"""
from __future__ import annotations

import os
import random

import pytest

from raftkv.raft import log as raft_log
from raftkv.raft import raft as raft_mod
from tests.sim.checkers import TICKS_MAX_DEFAULT, InvariantViolation, replay_command
from tests.sim.cluster import Cluster, LivenessFailure, run_seed

CORPUS_SEEDS = 1020
CHUNK = 15
CORPUS_TICKS = 300
MEMBERS = (3, 5, 7)


def members_for(seed):
    return MEMBERS[seed % len(MEMBERS)]


@pytest.mark.parametrize("first", range(0, CORPUS_SEEDS, CHUNK),
                         ids=lambda f: f"seeds{f}-{f + CHUNK - 1}")
def test_corpus(first):
    for seed in range(first, first + CHUNK):
        run_seed(seed, members_for(seed), CORPUS_TICKS)


def test_random_seeds():
    n = int(os.environ.get("RAFTKV_SIM_SEEDS", "0"))
    if not n:
        pytest.skip("set RAFTKV_SIM_SEEDS=N to run N random seeds")
    picker = random.SystemRandom()
    for _ in range(n):
        seed = picker.randrange(2 ** 63)
        run_seed(seed, members_for(seed), 400)


def test_corpus_exercises_the_faults():
    """The corpus is not vacuous: summed over a slice of it, every kind of event happens."""
    total = {}
    for seed in range(30):
        for k, v in run_seed(seed, members_for(seed), CORPUS_TICKS).items():
            total[k] = total.get(k, 0) + v
    for k in ("acked", "reads_served", "crashes", "partitions", "conf_changes", "transfers",
              "snapshots", "snap_installs"):
        assert total[k] > 0, (k, total)


def test_seed_replays_exactly():
    def fingerprint(seed):
        c = Cluster(seed, 5, 200)
        stats = c.run()
        disks = {i: (m.disk.storage.hard_state, m.disk.sm.applied, len(m.disk.sm.writes))
                 for i, m in sorted(c.members.items())}
        return stats, disks, c.now, c.net.sent
    assert fingerprint(7) == fingerprint(7)


def _first_violation(seeds, members, ticks=200):
    for seed in seeds:
        try:
            run_seed(seed, members, ticks)
        except InvariantViolation as exc:
            return seed, str(exc)
    return None, None


def test_broken_vote_counting_is_caught(monkeypatch):
    """vote_result counting a minority (quorum - 1 grants) as a win: two leaders in a term."""
    def broken_vote_result(voters, votes):
        granted = sum(1 for v in voters if votes.get(v) is True)
        if granted >= max(1, len(voters) // 2):
            return "won"
        rejected = sum(1 for v in voters if votes.get(v) is False)
        return "lost" if len(voters) - rejected < len(voters) // 2 + 1 else "pending"
    monkeypatch.setattr(raft_mod, "vote_result", broken_vote_result)
    seed, msg = _first_violation(range(30), 5)
    assert seed is not None, "the simulator missed a minority election"
    assert f"seed {seed}" in msg and f"tools/vopr.py --seed {seed}" in msg
    assert "election safety" in msg or "completeness" in msg or "safety" in msg, msg


def test_broken_log_up_to_date_check_is_caught(monkeypatch):
    """Votes granted to a candidate whatever its log (Raft §5.4.1 dropped): a leader without
    committed entries gets elected and overwrites them."""
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    seed, msg = _first_violation(range(30), 3)
    assert seed is not None, "the simulator missed an election of a stale log"
    assert "completeness" in msg or "safety" in msg or "committed entry" in msg, msg


def test_broken_follower_read_is_caught(monkeypatch):
    """A follower answering ReadIndex from its own commit index (a serializable read passed off
    as linearizable) returns stale data."""
    step_follower = raft_mod.Raft.step_follower

    def broken_step_follower(self, m):
        if m.type == raft_mod.MsgType.READ_INDEX:
            self.read_states.append(raft_mod.ReadState(self.log.committed, m.context))
            return
        step_follower(self, m)
    monkeypatch.setattr(raft_mod.Raft, "step_follower", broken_step_follower)
    seed, msg = _first_violation(range(30), 3)
    assert seed is not None and "read" in msg, msg


def test_broken_ready_contract_is_caught(monkeypatch):
    """A core that lets vote responses go out early (before the vote is durable)."""
    from raftkv.raft import rawnode
    monkeypatch.setattr(rawnode, "_EARLY", rawnode._EARLY | {raft_mod.MsgType.VOTE_RESP})
    orig_ready = rawnode.RawNode.ready

    def ready(self):
        rd = orig_ready(self)
        early = [m for m in rd.messages if m.type == raft_mod.MsgType.VOTE_RESP]
        rd.messages = [m for m in rd.messages if m.type != raft_mod.MsgType.VOTE_RESP]
        rd.early_messages = rd.early_messages + early
        return rd
    monkeypatch.setattr(rawnode.RawNode, "ready", ready)
    seed, msg = _first_violation(range(30), 3)
    assert seed is not None and "durable" in msg, msg


def test_core_crash_names_the_seed(monkeypatch):
    """An exception inside the core (here: an assertion on append) still names the seed."""
    def broken_append(self, ents):
        raise AssertionError("boom")
    monkeypatch.setattr(raft_log.RaftLog, "append", broken_append)
    with pytest.raises(InvariantViolation, match=r"seed 5 .*AssertionError.*boom\n.*--seed 5"):
        run_seed(5, 3, 50)


def test_liveness_failure_is_reported(monkeypatch):
    """A core that never campaigns fails the liveness check, naming the seed."""
    monkeypatch.setattr(raft_mod.Raft, "hup", lambda self, ctype: None)
    with pytest.raises(LivenessFailure, match=r"seed 3 .*no leader.*\n.*--seed 3"):
        run_seed(3, 3, 50)


def test_replay_command_names_a_fault_phase_of_other_length(monkeypatch):
    """The same seed with another --ticks-max is another run, so a failure in a run of other
    than the default length says which (tools/vopr.py --ticks-max 3000 printed a replay command
    without it, which then passed)."""
    monkeypatch.setattr(raft_mod.Raft, "hup", lambda self, ctype: None)
    with pytest.raises(LivenessFailure, match=r"--seed 3 --members 3 --ticks-max 50$"):
        run_seed(3, 3, 50)
    assert replay_command(3, 3) == "python tools/vopr.py --seed 3 --members 3"
    assert replay_command(3, 3, TICKS_MAX_DEFAULT) == replay_command(3, 3)


def test_liveness_retries_only_writes_the_leader_does_not_hold():
    """After a long fault phase (3000 ticks) this seed has 227 writes of unknown outcome, one
    entry per append and 4 appends in flight; retrying every one not yet applied every
    RETRY_TICKS, including those already in the leader's log, grew the log faster than it
    drained (1098 -> 1677 in 200 ticks, followers 4 to 34 entries behind): a liveness failure
    of the simulator's own clients, not of the core."""
    stats = run_seed(478908636617973577, 5, 3000)
    assert stats["acked"] > 1000, stats
