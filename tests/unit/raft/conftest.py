"""Helpers for the Raft core's unit tests: members over MemoryStorage and a tiny network.

The network is synchronous and deterministic: `pump()` handles every member's Ready in the
order the Ready contract asks (persist, then send, then apply, then advance) and delivers
queued messages until nothing moves. Links can be cut per direction and messages filtered.
"""
from __future__ import annotations

import pickle
import random

import pytest

from raftkv.raft import (
    ConfChangeSingle,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Config,
    EntryType,
    MemoryStorage,
    RawNode,
    decode_conf_change,
)
from raftkv.raft.errors import ProposalDroppedError

ELECTION = 10


def new_storage(voters, learners=()):
    s = MemoryStorage()
    s.snap.metadata.conf_state = ConfState(voters=list(voters), learners=list(learners))
    return s


def new_config(mid, storage, seed=None, **kw):
    kw.setdefault("election_ticks", ELECTION)
    kw.setdefault("heartbeat_ticks", 1)
    return Config(mid, storage, random.Random(mid if seed is None else seed), **kw)


def new_node(mid, voters, learners=(), storage=None, **kw):
    """A RawNode over a fresh MemoryStorage whose conf state is (voters, learners)."""
    storage = storage if storage is not None else new_storage(voters, learners)
    return RawNode(new_config(mid, storage, **kw))


def persist(storage, rd):
    """Step 2 of the Ready contract: snapshot, entries, then hard state."""
    storage.persist(rd)


def cc(*changes):
    """ConfChangeV2 from (type, node_id) pairs."""
    return ConfChangeV2(changes=[ConfChangeSingle(t, n) for t, n in changes])


ADD = ConfChangeType.ADD_NODE
ADD_LEARNER = ConfChangeType.ADD_LEARNER_NODE
REMOVE = ConfChangeType.REMOVE_NODE


class Net:
    """A set of RawNodes wired through an in-memory, loss-controllable message queue."""

    def __init__(self, ids, learners=(), **cfg):
        self.cfg = cfg
        self.stores = {}
        self.nodes = {}
        self.queue = []
        self.sent = []  # every message handed to the network, in order
        self.cut_links = set()  # (frm, to) pairs whose messages are dropped
        self.drop = None  # optional predicate: drop the message if it returns True
        self.applied = {}  # id -> list of applied normal entry payloads
        self.read_states = {}
        self.snapshots_sent = []
        self.auto_report_snapshot = True
        for mid in list(ids) + list(learners):
            self.add_member(mid, ids, learners)

    def add_member(self, mid, voters=(), learners=(), storage=None):
        s = storage if storage is not None else new_storage(voters, learners)
        self.stores[mid] = s
        self.nodes[mid] = RawNode(new_config(mid, s, **self.cfg))
        self.applied.setdefault(mid, [])
        self.read_states.setdefault(mid, [])
        return self.nodes[mid]

    def restart(self, mid, **cfg):
        """Rebuild member mid from its storage (a crash loses everything not persisted)."""
        self.queue = [m for m in self.queue if m.to != mid]
        self.nodes[mid] = RawNode(new_config(mid, self.stores[mid], **{**self.cfg, **cfg}))
        if not cfg.get("applied"):
            # The state machine restarts from the snapshot and re-applies the log after it.
            data = self.stores[mid].snap.data
            self.applied[mid] = pickle.loads(data) if data else []
        return self.nodes[mid]

    # ---- links ----
    def cut(self, a, b):
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, mid):
        for other in self.nodes:
            if other != mid:
                self.cut(mid, other)

    def heal(self):
        self.cut_links.clear()
        self.drop = None

    # ---- driving ----
    def handle_ready(self, mid):
        n, s = self.nodes[mid], self.stores[mid]
        rd = n.ready()
        self._send(rd.early_messages)
        persist(s, rd)
        self._send(rd.messages)
        if rd.snapshot is not None:
            self.applied[mid] = pickle.loads(rd.snapshot.data) if rd.snapshot.data else []
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                n.apply_conf_change(decode_conf_change(e.data))
            elif e.data:
                self.applied[mid].append(e.data)
        self.read_states[mid].extend(rd.read_states)
        n.advance(rd)
        return rd

    def _send(self, msgs):
        for m in msgs:
            self.sent.append(m)
            if (m.frm, m.to) in self.cut_links or m.to not in self.nodes:
                continue
            if self.drop is not None and self.drop(m):
                continue
            self.queue.append(m)

    def pump(self, rounds=1000):
        for _ in range(rounds):
            moved = False
            for mid in sorted(self.nodes):
                while self.nodes[mid].has_ready():
                    self.handle_ready(mid)
                    moved = True
            while self.queue:
                m = self.queue.pop(0)
                moved = True
                self.nodes[m.to].step(m)
                if m.snapshot is not None and self.auto_report_snapshot:
                    self.snapshots_sent.append(m)
                    if m.frm in self.nodes:
                        self.nodes[m.frm].report_snapshot(m.to, True)
            if not moved:
                return
        raise AssertionError("network did not quiesce")

    def tick(self, mids=None, n=1):
        for _ in range(n):
            for mid in (mids if mids is not None else sorted(self.nodes)):
                self.nodes[mid].tick()
            self.pump()

    def elect(self, mid):
        self.nodes[mid].campaign()
        self.pump()
        assert self.leader() == mid, self.status()
        return self.nodes[mid]

    def propose(self, mid, data):
        self.nodes[mid].propose(data)
        self.pump()

    def try_propose(self, mid, data):
        try:
            self.propose(mid, data)
        except ProposalDroppedError:
            return False
        return True

    def compact(self, mid, index=None):
        """Snapshot member mid's state machine at index (default: applied) and compact."""
        r, s = self.raft(mid), self.stores[mid]
        index = r.log.applied if index is None else index
        # applied[mid] lists payloads in order: keep those up to index (snapshot included).
        keep = len(self.applied[mid]) - sum(
            1 for e in s.ents[1:] if index < e.index <= r.log.applied and e.data
            and e.type == EntryType.NORMAL)
        data = pickle.dumps(self.applied[mid][:keep])
        s.create_snapshot(index, r.conf_state(), data)
        s.compact(index)
        return s.snap

    # ---- inspection ----
    def leader(self):
        leaders = [m for m, n in self.nodes.items() if n.raft.state.name == "LEADER"]
        terms = {}
        for m in leaders:
            terms.setdefault(self.nodes[m].raft.term, []).append(m)
        assert all(len(v) == 1 for v in terms.values()), f"two leaders in one term: {terms}"
        if not leaders:
            return None
        return max(leaders, key=lambda m: self.nodes[m].raft.term)

    def status(self):
        return {m: n.status() for m, n in self.nodes.items()}

    def raft(self, mid):
        return self.nodes[mid].raft


@pytest.fixture
def net3():
    return Net([1, 2, 3])


def drain(node):
    """Take one Ready without persisting anything and return it (for contract tests)."""
    return node.ready()


def msgs_of(msgs, typ, to=None):
    return [m for m in msgs if m.type == typ and (to is None or m.to == to)]


# ---- single-member helpers (drive one RawNode by hand) ----
def ents(*terms, start=1):
    """Entries with the given terms at indexes start, start+1, ..."""
    from raftkv.raft import Entry
    return [Entry(term=t, index=start + i) for i, t in enumerate(terms)]


def make(mid, voters, log_terms=(), term=0, vote=0, commit=0, learners=(), **kw):
    """A RawNode whose storage already holds entries of log_terms and the given hard state."""
    from raftkv.raft import HardState
    s = new_storage(voters, learners)
    s.append(ents(*log_terms))
    s.set_hard_state(HardState(term=term, vote=vote, commit=commit))
    return RawNode(new_config(mid, s, **kw))


def flush(node):
    """Handle every Ready of node (persist, advance, apply nothing); return the messages."""
    out = []
    while node.has_ready():
        rd = node.ready()
        persist(node.raft.c.storage, rd)
        out += rd.early_messages + rd.messages
        node.advance(rd)
    return out


def take(node):
    """Pop the raw outgoing messages of node's Raft (bypassing Ready)."""
    msgs, node.raft.msgs = node.raft.msgs, []
    return msgs


def make_leader(node):
    """Elect node by feeding it a granted (pre-)vote from every other voter."""
    from raftkv.raft import Message, MsgType
    node.campaign()
    r = node.raft
    for v in sorted(r.voters - {r.id}):
        if r.state.name == "PRE_CANDIDATE":
            node.step(Message(MsgType.PRE_VOTE_RESP, to=r.id, frm=v, term=r.term + 1))
    for v in sorted(r.voters - {r.id}):
        if r.state.name == "CANDIDATE":
            node.step(Message(MsgType.VOTE_RESP, to=r.id, frm=v, term=r.term))
    assert r.state.name == "LEADER", r.state
    return node


def log_terms(node):
    log = node.raft.log
    return [log.term(i) for i in range(log.first_index(), log.last_index() + 1)]
