"""RawNode: the thread-unsafe, I/O-free driver API of the Raft core, and the Ready contract."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from raftkv.raft.errors import ProposalDroppedError, StepLocalMsgError
from raftkv.raft.raft import CampaignType, Raft, StateType
from raftkv.raft.types import (
    LOCAL_MSGS,
    NONE,
    ConfChangeV2,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Snapshot,
    encode_conf_change,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state, reported in Ready when it changes (never persisted)."""

    lead: int
    role: Role


@dataclass(slots=True)
class Ready:
    """Everything the caller must do, in this order, before calling RawNode.advance(rd).

    1. early_messages may be sent right away, in parallel with step 2. They are a leader's own
       replication traffic (appends, heartbeats, snapshots) whose term and vote are already
       durable; the leader counts itself in a quorum only after its write (thesis §10.2.1).
    2. Persist, atomically and durably: snapshot (if any), then entries (replacing any
       conflicting suffix), then hard_state (if not None).
    3. Only then send messages: they may acknowledge entries or votes from step 2 (§5.2, §5.3).
    4. Install snapshot into the state machine (if any), then apply committed_entries in order.
       Committed entries are durable on a quorum; they may overlap entries of step 2, which is
       why step 2 comes first.
    5. read_states: a linearizable read with request_ctx may be served once the state machine
       has applied index.
    6. advance(rd).
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    early_messages: list[Message] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def must_sync(self):
        """Whether step 2 needs a sync (entries, or a changed term/vote)."""
        return bool(self.entries) or self.snapshot is not None or self.hard_state is not None


def _role(r):
    if r.state == StateType.LEADER:
        return Role.LEADER
    if r.state == StateType.CANDIDATE:
        return Role.CANDIDATE
    if r.state == StateType.PRE_CANDIDATE:
        return Role.PRE_CANDIDATE
    return Role.LEARNER if r.id in r.learners else Role.FOLLOWER


class RawNode:
    def __init__(self, config):
        self.raft = Raft(config)
        self._prev_soft = SoftState(self.raft.lead, _role(self.raft))
        self._prev_hard = self.raft.hard_state()
        self._pending = None  # the Ready handed out and not yet advanced

    # ---- inputs ----
    def tick(self):
        self.raft.tick()

    def campaign(self):
        self.raft.step(Message(MsgType.HUP, frm=self.raft.id))

    def propose(self, data):
        """Propose data; raises ProposalDroppedError if it cannot be accepted now."""
        m = Message(MsgType.PROP, frm=self.raft.id, entries=[Entry(0, 0, EntryType.NORMAL,
                                                                     bytes(data))])
        self.raft.step(m)

    def propose_many(self, datas):
        """Propose several entries in one step: one append to each follower, not one each."""
        ents = [Entry(0, 0, EntryType.NORMAL, bytes(d)) for d in datas]
        if ents:
            self.raft.step(Message(MsgType.PROP, frm=self.raft.id, entries=ents))

    def propose_conf_change(self, cc: ConfChangeV2):
        e = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))
        self.raft.step(Message(MsgType.PROP, frm=self.raft.id, entries=[e]))

    def apply_conf_change(self, cc: ConfChangeV2):
        return self.raft.apply_conf_change(cc)

    def step(self, m):
        """Feed a message from a peer."""
        if m.type in LOCAL_MSGS:
            raise StepLocalMsgError(f"{m.type.name} may not come from the network")
        if m.frm not in self.raft.prs and m.type in _RESPONSES:
            return  # a response from a member we no longer know: ignore
        self.raft.step(m)

    def read_index(self, ctx: bytes):
        """Ask for a linearizable read point; the answer arrives as a ReadState with ctx."""
        self.raft.step(Message(MsgType.READ_INDEX, frm=self.raft.id, context=bytes(ctx)))

    def transfer_leader(self, transferee):
        self.raft.step(Message(MsgType.TRANSFER_LEADER, frm=transferee))

    def report_unreachable(self, mid):
        self.raft.step(Message(MsgType.UNREACHABLE, frm=mid))

    def report_snapshot(self, mid, ok):
        self.raft.step(Message(MsgType.SNAP_STATUS, frm=mid, reject=not ok))

    # ---- outputs ----
    def has_ready(self):
        r = self.raft
        if self._pending is not None:
            return False
        if SoftState(r.lead, _role(r)) != self._prev_soft:
            return True
        hs = r.hard_state()
        if not hs.is_empty() and hs != self._prev_hard:
            return True
        if r.log.unstable.snapshot is not None or r.log.unstable.entries:
            return True
        return bool(r.msgs or r.read_states or r.log.has_next_committed_ents())

    def ready(self):
        assert self._pending is None, "ready() called again before advance()"
        r = self.raft
        rd = Ready()
        ss = SoftState(r.lead, _role(r))
        if ss != self._prev_soft:
            rd.soft_state = ss
        hs = r.hard_state()
        if hs != self._prev_hard:
            rd.hard_state = hs
        rd.entries = list(r.log.unstable.entries)
        rd.snapshot = r.log.unstable.snapshot
        rd.committed_entries = r.log.next_committed_ents()
        msgs, r.msgs = r.msgs, []
        same_term = hs.term == self._prev_hard.term and hs.vote == self._prev_hard.vote
        if r.state == StateType.LEADER and same_term:
            rd.early_messages = [m for m in msgs if m.type in _EARLY]
            rd.messages = [m for m in msgs if m.type not in _EARLY]
        else:
            rd.messages = msgs
        rd.read_states, r.read_states = r.read_states, []
        self._pending = rd
        return rd

    def advance(self, rd):
        assert rd is self._pending, "advance() must get the Ready from the last ready()"
        r = self.raft
        self._pending = None
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
            r.on_persisted(last.index, last.term)
        applied = rd.snapshot.metadata.index if rd.snapshot is not None else 0
        if rd.committed_entries:
            applied = max(applied, rd.committed_entries[-1].index)
            r.reduce_uncommitted_size(rd.committed_entries)
        if applied > r.log.applied:
            r.log.applied_to(applied)
        r.log.check_invariants()

    # ---- status ----
    def status(self):
        r = self.raft
        return {"id": r.id, "term": r.term, "vote": r.vote, "lead": r.lead,
                "role": _role(r).value, "commit": r.log.committed, "applied": r.log.applied,
                "last_index": r.log.last_index(), "voters": sorted(r.voters),
                "learners": sorted(r.learners),
                "progress": {mid: (pr.match, pr.next, pr.state.name)
                             for mid, pr in r.prs.items()}
                if r.state == StateType.LEADER else {}}

    @property
    def id(self):
        return self.raft.id

    @property
    def lead(self):
        return self.raft.lead


_RESPONSES = frozenset({MsgType.APP_RESP, MsgType.HEARTBEAT_RESP, MsgType.SNAP_STATUS})
_EARLY = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.TIMEOUT_NOW})

__all__ = ["RawNode", "Ready", "SoftState", "Role", "CampaignType", "ProposalDroppedError",
           "NONE"]
