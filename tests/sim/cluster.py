"""Deterministic simulation of a raftkv Raft cluster in one thread.

One random.Random(seed) drives everything: the fault schedule, the network, the clients and the
members' election timers (it is every member's Config.rand). A run has two phases:

1. faults (ticks_max ticks): member clocks drift (up to 20 % slow); the network drops, delays,
   reorders, duplicates and partitions (symmetric, asymmetric, isolate-one; then heals);
   members crash (losing whatever they had
   not persisted, at any point of the Ready handling) and restart; clients write and read
   (ReadIndex); the leader changes membership (add learner, promote, remove, re-add), transfers
   leadership; members snapshot and compact their logs.
2. liveness: everything heals and restarts; a leader must appear, and every pending write plus a
   final one must be applied on every member of the configuration, within bounded ticks.

Checkers (checkers.py) run on every event. A failure raises InvariantViolation (or
LivenessFailure) naming the seed and the command that replays it.
"""
from __future__ import annotations

import random

from raftkv.raft import (
    ConfChangeSingle,
    ConfChangeType,
    ConfChangeV2,
    Config,
    EntryType,
    MsgType,
    RawNode,
    StateType,
    decode_conf_change,
)
from raftkv.raft.errors import ProposalDroppedError
from tests.sim.checkers import TICKS_MAX_DEFAULT, Checker, InvariantViolation, replay_command
from tests.sim.disk import Disk
from tests.sim.network import Network

ELECTION_TICKS = 10
HEARTBEAT_TICKS = 3
LEADER_WITHIN_TICKS = 200  # after healing: a leader exists
COMMIT_WITHIN_TICKS = 200  # then: every pending write and a final one applied everywhere
RETRY_TICKS = 20
_CRASH_POINTS = ("before_persist", "after_persist", "after_send", "mid_apply")


class LivenessFailure(InvariantViolation):
    pass


class Member:
    __slots__ = ("id", "disk", "node", "restart_at", "reads")

    def __init__(self, mid, disk):
        self.id = mid
        self.disk = disk
        self.node = None  # RawNode while up
        self.restart_at = None
        self.reads = []  # released reads waiting for apply: (index, ctx, acked_max, data)


class Cluster:
    def __init__(self, seed, members=3, ticks_max=TICKS_MAX_DEFAULT, faults=True):
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.n = members
        self.ticks_max = ticks_max
        self.faults = faults
        self.now = 0
        self.check = Checker(seed, members, ticks_max)
        self.check.live_leaders = self._live_leaders
        self.net = Network(rng)
        self.net.on_drop = self._on_drop
        ids = list(range(1, members + 1))
        self.spares = [members + 1, members + 2]
        self.members = {i: Member(i, Disk(ids)) for i in ids}
        # Small appends (one entry each) split batches, as in the Figure 8 scenario.
        self.msg_bytes_max = rng.choice((1 << 20, 1 << 20, 100, 1))
        self.inflight_msgs_max = rng.choice((256, 4))
        for i in ids:
            self._start(self.members[i], rebuild=False)
        # Per-seed fault intensity: some seeds are gentle, some brutal.
        self.p_crash = rng.choice((0.0, 0.003, 0.01, 0.02)) if faults else 0.0
        self.p_partition = rng.choice((0.0, 0.01, 0.03)) if faults else 0.0
        self.p_crash_in_ready = rng.choice((0.0, 0.002, 0.01)) if faults else 0.0
        self.p_write = rng.choice((0.05, 0.2, 0.4))
        self.p_read = rng.choice((0.02, 0.1))
        self.p_conf = rng.choice((0.0, 0.01, 0.03))
        self.p_transfer = rng.choice((0.0, 0.005, 0.02))
        self.p_snapshot = rng.choice((0.0, 0.02, 0.1))
        self.partition_until = None
        # Clock drift: a member's timer loses this fraction of ticks (up to 20 % slow).
        self.tick_loss = {i: rng.choice((0.0, 0.0, 0.1, 0.2)) if faults else 0.0
                          for i in ids + self.spares}
        self._new_network_faults()
        # Clients.
        self.next_write = 0
        self.next_read = 0
        self.pending_writes = {}  # payload -> proposer id
        self.acked_max = 0  # highest log index of a write acknowledged so far
        self.acked_data = None  # and its payload
        self.reads = {}  # ctx -> (member id, acked_max, acked_data)
        self.stats = {"writes": 0, "acked": 0, "reads": 0, "reads_served": 0, "crashes": 0,
                      "partitions": 0, "conf_changes": 0, "transfers": 0, "snapshots": 0,
                      "snap_installs": 0, "leaders": 0}

    # ------------------------------------------------------------------ members
    def _start(self, mem, rebuild):
        applied = mem.disk.boot(rebuild)
        cfg = Config(mem.id, mem.disk.storage, self.rng, election_ticks=ELECTION_TICKS,
                     heartbeat_ticks=HEARTBEAT_TICKS, applied=applied, check_quorum=True,
                     pre_vote=True, msg_bytes_max=self.msg_bytes_max,
                     inflight_msgs_max=self.inflight_msgs_max)
        mem.node = RawNode(cfg)
        mem.restart_at = None
        mem.reads = []

    def _crash(self, mem):
        mem.node = None
        mem.reads = []
        mem.restart_at = self.now + self.rng.randint(3, 40)
        self.stats["crashes"] += 1
        for data in [d for d, p in self.pending_writes.items() if p == mem.id]:
            del self.pending_writes[data]  # the client's connection broke: outcome unknown
        for ctx in [c for c, r in self.reads.items() if r[0] == mem.id]:
            del self.reads[ctx]

    def _live(self):
        return [m for _, m in sorted(self.members.items()) if m.node is not None]

    def _live_leaders(self):
        return [(m.id, m.node.raft) for m in self._live()
                if m.node.raft.state == StateType.LEADER]

    def _leader(self):
        leaders = self._live_leaders()
        if not leaders:
            return None
        mid = max(leaders, key=lambda lr: lr[1].term)[0]
        return self.members[mid]

    # ------------------------------------------------------------------ Ready handling
    def _drain(self, mem):
        while mem.node is not None and mem.node.has_ready():
            self._handle_ready(mem)
        if mem.node is not None and mem.node.raft.state == StateType.LEADER:
            self.check.on_leader(mem.id, mem.node.raft)

    def _send(self, mem, msgs, early):
        storage = mem.disk.storage
        for m in msgs:
            self.check.on_send(mem.id, m, storage, early)
            self.net.send(self.now, m)

    def _handle_ready(self, mem):
        node, disk = mem.node, mem.disk
        rd = node.ready()
        crash = None
        if self.p_crash_in_ready and self.rng.random() < self.p_crash_in_ready:
            crash = self.rng.choice(_CRASH_POINTS)
        if rd.soft_state is not None and rd.soft_state.role.value == "leader":
            self.stats["leaders"] += 1
            self.check.on_leader(mem.id, node.raft)
        # 1. early messages: may go before the write.
        self._send(mem, rd.early_messages, early=True)
        if crash == "before_persist":
            return self._crash(mem)
        # 2. persist: snapshot, entries, hard state.
        self.check.on_entries(mem.id, node.raft.log, rd.entries)
        old_hs = disk.storage.hard_state
        old_commit = old_hs.commit
        if rd.hard_state is not None:
            self.check.on_hard_state(mem.id, old_hs, rd.hard_state)
        disk.persist(rd)
        if rd.hard_state is not None and rd.hard_state.commit > old_commit:
            storages = {i: m.disk.storage for i, m in self.members.items()}
            self.check.on_commit(mem.id, node.raft, storages, old_commit, rd.hard_state.commit)
        if crash == "after_persist":
            return self._crash(mem)
        # 3. messages that may acknowledge what was just persisted.
        self._send(mem, rd.messages, early=False)
        if crash == "after_send":
            return self._crash(mem)
        # 4. snapshot into the state machine, then committed entries.
        if rd.snapshot is not None:
            disk.install_snapshot(rd.snapshot)
            self.check.on_install(mem.id, disk.sm)
            self.stats["snap_installs"] += 1
        stop = len(rd.committed_entries)
        if crash == "mid_apply" and stop:
            stop = self.rng.randrange(stop)
        for e in rd.committed_entries[:stop]:
            self._apply(mem, e)
        if crash == "mid_apply":
            return self._crash(mem)
        # 5. reads.
        for rs in rd.read_states:
            self._on_read_state(mem, rs)
        node.advance(rd)
        self._serve_reads(mem)
        return None

    def _apply(self, mem, e):
        self.check.on_apply(mem.id, e)
        sm = mem.disk.sm
        if e.type == EntryType.CONF_CHANGE:
            cc = decode_conf_change(e.data)
            mem.disk.conf = mem.node.apply_conf_change(cc)
        elif e.data:
            sm.apply_write(e.index, e.data)
            if self.pending_writes.get(e.data) == mem.id:
                del self.pending_writes[e.data]
                self.stats["acked"] += 1
                if e.index > self.acked_max:
                    self.acked_max, self.acked_data = e.index, e.data
        sm.applied = e.index

    # ------------------------------------------------------------------ reads
    def _on_read_state(self, mem, rs):
        req = self.reads.get(rs.request_ctx)
        if req is None or req[0] != mem.id:
            return  # a read this member did not start (or a stale duplicate after restart)
        _, acked_max, acked_data = req
        self.check.on_read_state(mem.id, rs.request_ctx, rs.index, acked_max)
        mem.reads.append((rs.index, rs.request_ctx, acked_max, acked_data))

    def _serve_reads(self, mem):
        if not mem.reads:
            return
        sm = mem.disk.sm
        waiting = []
        for r in mem.reads:
            if r[0] > sm.applied:
                waiting.append(r)
                continue
            self.check.on_read_served(mem.id, r[1], sm, r[2], r[3])
            self.reads.pop(r[1], None)
            self.stats["reads_served"] += 1
        mem.reads = waiting

    # ------------------------------------------------------------------ network
    def _on_drop(self, m):
        if m.type == MsgType.SNAP:
            sender = self.members.get(m.frm)
            if sender is not None and sender.node is not None:
                sender.node.report_snapshot(m.to, False)

    def _deliver(self, m):
        mem = self.members.get(m.to)
        if mem is None or mem.node is None:
            self._on_drop(m)
            return
        try:
            mem.node.step(m)
        except ProposalDroppedError:
            pass  # a forwarded proposal that found no leader: the client times out
        self._drain(mem)
        if m.type == MsgType.SNAP:
            sender = self.members.get(m.frm)
            if sender is not None and sender.node is not None:
                sender.node.report_snapshot(m.to, True)
                self._drain(sender)

    # ------------------------------------------------------------------ faults
    def _new_network_faults(self):
        rng = self.rng
        if not self.faults:
            self.net.set_faults(0.0, 0.0, rng.randint(0, 1))
            return
        self.net.set_faults(rng.choice((0.0, 0.0, 0.02, 0.1, 0.25)),
                            rng.choice((0.0, 0.01, 0.05)), rng.randint(0, 4))

    def _inject_faults(self):
        rng = self.rng
        if rng.random() < 0.01:
            self._new_network_faults()
        if self.partition_until is not None and self.now >= self.partition_until:
            self.net.heal()
            self.partition_until = None
        elif self.partition_until is None and rng.random() < self.p_partition:
            self._partition()
        live = self._live()
        if live and rng.random() < self.p_crash:
            leader = self._leader()
            if leader is not None and rng.random() < 0.5:
                self._crash(leader)  # leaders fail at the worst moments
            else:
                self._crash(rng.choice(live))

    def _partition(self):
        rng = self.rng
        ids = sorted(self.members)
        self.stats["partitions"] += 1
        mode = rng.choice(("isolate", "isolate_leader", "split", "asymmetric"))
        leader = self._leader()
        if mode == "isolate_leader" and leader is not None:
            victim = [leader.id]
        elif mode == "split":
            victim = rng.sample(ids, rng.randint(1, len(ids) // 2))
        else:
            victim = [rng.choice(ids)]
        others = [i for i in ids if i not in victim]
        if mode == "asymmetric":
            # The victim hears everyone but nobody hears it (or the other way round).
            if rng.random() < 0.5:
                self.net.partition(victim, others, symmetric=False)
            else:
                self.net.partition(others, victim, symmetric=False)
        else:
            self.net.partition(victim, others)
        self.partition_until = self.now + rng.randint(5, 80)

    def _restart_due(self):
        for mem in self.members.values():
            if mem.node is None and mem.restart_at is not None and self.now >= mem.restart_at:
                self._start(mem, rebuild=self.rng.random() < 0.5)
                self._drain(mem)

    # ------------------------------------------------------------------ clients
    def _write(self, mem=None):
        live = self._live()
        if not live:
            return None
        mem = mem or self.rng.choice(live)
        self.next_write += 1
        data = b"w%d" % self.next_write
        self.stats["writes"] += 1
        try:
            mem.node.propose(data)
        except ProposalDroppedError:
            return None
        self.pending_writes[data] = mem.id
        self._drain(mem)
        return data

    def _read(self):
        live = self._live()
        if not live:
            return
        mem = self.rng.choice(live)
        self.next_read += 1
        ctx = b"r%d" % self.next_read
        self.reads[ctx] = (mem.id, self.acked_max, self.acked_data)
        self.stats["reads"] += 1
        mem.node.read_index(ctx)
        self._drain(mem)

    def _conf_change(self):
        leader = self._leader()
        if leader is None:
            return
        rng = self.rng
        raft = leader.node.raft
        voters, learners = sorted(raft.voters), sorted(raft.learners)
        outside = [i for i in sorted(set(self.members) | set(self.spares))
                   if i not in raft.voters and i not in raft.learners]
        choices = []
        if outside:
            choices.append((ConfChangeType.ADD_LEARNER_NODE, rng.choice(outside)))
            choices.append((ConfChangeType.ADD_NODE, rng.choice(outside)))
        if learners:
            choices.append((ConfChangeType.ADD_NODE, rng.choice(learners)))
            choices.append((ConfChangeType.REMOVE_NODE, rng.choice(learners)))
        if len(voters) > max(2, self.n - 2):
            choices.append((ConfChangeType.REMOVE_NODE, rng.choice(voters)))
        if not choices:
            return
        typ, mid = rng.choice(choices)
        if mid not in self.members:
            self.members[mid] = Member(mid, Disk())  # a new member, empty disk
            self._start(self.members[mid], rebuild=False)
        cc = ConfChangeV2(changes=[ConfChangeSingle(typ, mid)])
        try:
            leader.node.propose_conf_change(cc)
        except ProposalDroppedError:
            return
        self.stats["conf_changes"] += 1
        self._drain(leader)

    def _transfer(self):
        leader = self._leader()
        if leader is None:
            return
        targets = [v for v in sorted(leader.node.raft.voters) if v != leader.id]
        if targets:
            self.stats["transfers"] += 1
            leader.node.transfer_leader(self.rng.choice(targets))
            self._drain(leader)

    def _snapshot(self):
        live = self._live()
        if live:
            mem = self.rng.choice(live)
            if mem.disk.take_snapshot(keep=self.rng.randint(0, 5)):
                self.stats["snapshots"] += 1

    def _clients(self):
        rng = self.rng
        if rng.random() < self.p_write:
            for _ in range(rng.randint(1, 3)):
                self._write()
        if rng.random() < self.p_read:
            self._read()
        if rng.random() < self.p_conf:
            self._conf_change()
        if rng.random() < self.p_transfer:
            self._transfer()
        if rng.random() < self.p_snapshot:
            self._snapshot()

    # ------------------------------------------------------------------ the clock
    def tick(self, faults=True, clients=True):
        self.now += 1
        if faults:
            self._inject_faults()
        self._restart_due()
        if clients:
            self._clients()
        rng = self.rng
        for mem in self._live():
            loss = self.tick_loss[mem.id] if faults else 0.0
            if loss and rng.random() < loss:
                continue
            mem.node.tick()
            self._drain(mem)
        budget = 100_000
        while budget:
            m = self.net.due(self.now)
            if m is None:
                break
            self._deliver(m)
            budget -= 1

    def run(self):
        """Run both phases; raises InvariantViolation / LivenessFailure on a bug. Any other
        exception (an assertion inside the core, say) is re-raised as an InvariantViolation
        that names the seed too."""
        try:
            for _ in range(self.ticks_max):
                self.tick(faults=self.faults)
            self._heal()
            self._check_liveness()
        except InvariantViolation:
            raise
        except Exception as exc:  # noqa: BLE001 -- any crash is a finding for this seed
            replay = replay_command(self.seed, self.n, self.ticks_max)
            raise InvariantViolation(
                f"seed {self.seed} ({self.n} members): {type(exc).__name__} at tick "
                f"{self.now}: {exc}\nreplay: {replay}") from exc
        return self.stats

    def _heal(self):
        self.net.heal()
        self.partition_until = None
        self.net.set_faults(0.0, 0.0, 1)
        self.p_crash_in_ready = 0.0
        for mem in self.members.values():
            if mem.node is None:
                self._start(mem, rebuild=self.rng.random() < 0.5)
                self._drain(mem)

    def _liveness_fail(self, what):
        raise LivenessFailure(f"seed {self.seed} ({self.n} members): liveness: {what}\n"
                              f"replay: {replay_command(self.seed, self.n, self.ticks_max)}")

    def _check_liveness(self):
        start = self.now
        leader = None
        while leader is None:
            if self.now - start > LEADER_WITHIN_TICKS:
                self._liveness_fail(f"no leader {LEADER_WITHIN_TICKS} ticks after healing")
            self.tick(faults=False, clients=False)
            leader = self._leader()
        # Clients retry every write whose outcome they do not know, plus a final one, through
        # the leader, every RETRY_TICKS until the leader has applied it or holds it in its log
        # (a leader never drops its own entries, so that copy commits unless leadership moves,
        # and then the next leader's log is looked at). Proposing again what the leader's log
        # already holds only lengthens the log to replicate: with one entry per append and a
        # backlog of 227 unknown writes after 3000 fault ticks, each round of duplicates grew
        # it faster than it drained (seed 478908636617973577, 5 members).
        self.next_write += 1
        want = sorted(self.pending_writes) + [b"w%d" % self.next_write]
        proposed = {}
        start = self.now
        while True:
            leader = self._leader()
            if leader is not None and self._converged(leader, want):
                return
            if self.now - start > COMMIT_WITHIN_TICKS:
                self._liveness_fail(f"writes not applied everywhere {COMMIT_WITHIN_TICKS} ticks "
                                    f"after a leader appeared: {self._status()}")
            if leader is not None:
                due = [data for data in want if data not in leader.disk.sm.index_of and
                       self.now - proposed.get(data, -RETRY_TICKS) >= RETRY_TICKS]
                if due:
                    held = self._unapplied_data(leader)
                    for data in due:
                        if data not in held:
                            proposed[data] = self.now
                            self._propose_retry(leader, data)
            self.tick(faults=False, clients=False)

    @staticmethod
    def _unapplied_data(leader):
        """The payloads of the entries in the leader's log past what it has applied."""
        log = leader.node.raft.log
        lo = max(leader.disk.sm.applied + 1, log.first_index())
        return {e.data for e in log.slice(lo, log.last_index() + 1)}

    def _propose_retry(self, leader, data):
        try:
            leader.node.propose(data)
        except ProposalDroppedError:
            return
        self.pending_writes[data] = leader.id
        self._drain(leader)

    def _converged(self, leader, want):
        raft = leader.node.raft
        ids = sorted(raft.voters | raft.learners)
        applied = set()
        for mid in ids:
            mem = self.members[mid]
            if mem.node is None:
                return False
            sm = mem.disk.sm
            if any(d not in sm.index_of for d in want):
                return False
            applied.add(sm.applied)
        return len(applied) == 1

    def _status(self):
        return {i: (m.node.status()["role"], m.node.raft.term, m.disk.sm.applied,
                    m.node.raft.log.committed, m.node.raft.log.last_index())
                if m.node else "down" for i, m in sorted(self.members.items())}


def run_seed(seed, members=3, ticks_max=TICKS_MAX_DEFAULT):
    """Run one seed; returns its stats or raises InvariantViolation."""
    return Cluster(seed, members, ticks_max).run()
