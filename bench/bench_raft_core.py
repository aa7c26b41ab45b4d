"""Raft core throughput (pytest-benchmark): a 3-member cluster in one process, no faults.

  python -m pytest bench/bench_raft_core.py                      # measure
  python -m pytest bench/bench_raft_core.py --benchmark-disable  # smoke: each body runs once
  python bench/bench_raft_core.py                                # print the figures directly

One round: the leader takes `batch` proposals (64-byte payloads), then the cluster is pumped
(Ready handled on every member: persist to MemoryStorage, send, apply, advance) until every
member has applied them. Cases: 1 and 1000 proposals per Ready, made either with
RawNode.propose() once per entry ("propose": each call replicates at once, so 1000 calls mean
hundreds of one-entry appends), or as one MsgProp carrying all the entries ("prop_msg": what
a server that batches client requests into one step would do; RawNode has no public
multi-entry propose yet, so this steps the core directly).

extra_info: entries_per_s (from the mean round time) and cpu_us_per_entry (process CPU time
over the round, so other load on the machine does not inflate it). Target: >= 200,000
entries/s batched.
"""
from __future__ import annotations

import random
import time
from collections import deque

import pytest

from raftkv.raft import Config, ConfState, Entry, MemoryStorage, Message, MsgType, RawNode

PAYLOAD = b"x" * 64
BATCHES = [1, 1000]
MODES = ["propose", "prop_msg"]


class InProcessCluster:
    def __init__(self, n=3):
        ids = list(range(1, n + 1))
        self.stores = {}
        self.nodes = {}
        for i in ids:
            st = MemoryStorage()
            st.snap.metadata.conf_state = ConfState(voters=ids)
            self.stores[i] = st
            self.nodes[i] = RawNode(Config(i, st, random.Random(i), election_ticks=10,
                                           heartbeat_ticks=1))
        self.applied = dict.fromkeys(ids, 0)  # normal entries with data applied per member
        self.q = deque()
        self.nodes[1].campaign()
        self.pump()
        assert self.nodes[1].status()["role"] == "leader"
        self.leader = self.nodes[1]

    def pump(self):
        nodes, stores, q, applied = self.nodes, self.stores, self.q, self.applied
        while True:
            moved = False
            for i, node in nodes.items():
                if not node.has_ready():
                    continue
                moved = True
                rd = node.ready()
                q.extend(rd.early_messages)
                stores[i].persist(rd)
                q.extend(rd.messages)
                applied[i] += sum(1 for e in rd.committed_entries if e.data)
                node.advance(rd)
            while q:
                moved = True
                m = q.popleft()
                nodes[m.to].step(m)
            if not moved:
                return

    def round(self, batch, mode="propose"):
        """Propose batch entries at the leader; pump until every member applied them."""
        want = {i: a + batch for i, a in self.applied.items()}
        if mode == "propose":
            propose = self.leader.propose
            for _ in range(batch):
                propose(PAYLOAD)
        else:
            self.leader.raft.step(Message(MsgType.PROP, frm=self.leader.id,
                                          entries=[Entry(0, 0, data=PAYLOAD)
                                                   for _ in range(batch)]))
        self.pump()
        assert self.applied == want, (self.applied, want)
        self._compact()

    def _compact(self):
        for i, st in self.stores.items():
            applied = self.nodes[i].raft.log.applied
            if applied > st.first_index() + 1024:
                st.compact(applied - 1)


def measure(batch, mode, entries_total=100_000):
    """Returns (entries/s wall, CPU us per entry) over about entries_total entries."""
    c = InProcessCluster()
    rounds = max(1, entries_total // batch)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        c.round(batch, mode)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = rounds * batch
    return n / wall, cpu / n * 1e6


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES)
def test_commit_throughput(benchmark, batch, mode):
    c = InProcessCluster()
    cpu = []

    def one_round():
        c0 = time.process_time()
        c.round(batch, mode)
        cpu.append(time.process_time() - c0)

    benchmark(one_round)
    benchmark.extra_info["entries_per_round"] = batch
    benchmark.extra_info["cpu_us_per_entry"] = sum(cpu) / len(cpu) / batch * 1e6
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["entries_per_s"] = batch / stats.stats.mean
    print(f"\n{mode} batch {batch}: {benchmark.extra_info}")


if __name__ == "__main__":
    for m in MODES:
        for b in BATCHES:
            if m == "prop_msg" and b == 1:
                continue  # the same as propose with 1
            rate, us = measure(b, m, 20_000 if b == 1 else 200_000)
            print(f"{m:8s} {b:5d} per Ready: {rate:10,.0f} entries/s wall, "
                  f"{us:7.2f} CPU us/entry ({1e6 / us:10,.0f} entries per CPU second)")
