"""The Raft state machine: roles, elections, replication, commit, reads, transfer, membership.

Section references are to the Raft paper (Ongaro & Ousterhout 2014, "§5.x", Figure 2) and the
thesis (Ongaro 2014, "thesis §x.y"). The structure follows etcd-io/raft: step() applies the term
rules once, then dispatches to step_leader / step_candidate / step_follower.

Nothing here does I/O: outgoing messages accumulate in self.msgs, confirmed reads in
self.read_states; RawNode packages them into a Ready.
"""
from __future__ import annotations

import enum

from raftkv.raft.errors import (
    CompactedError,
    LogDivergedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
)
from raftkv.raft.log import RaftLog
from raftkv.raft.progress import Progress, ProgressState, committed_index, vote_result
from raftkv.raft.read_only import ReadOnly
from raftkv.raft.types import (
    NONE,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    decode_conf_change,
)

CAMPAIGN_TRANSFER = b"CampaignTransfer"  # vote context that overrides the leader lease


class StateType(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class CampaignType(enum.Enum):
    PRE_ELECTION = "pre"
    ELECTION = "election"
    TRANSFER = "transfer"


class Config:
    """Tunables of one member. Limits are named unit-last; 0 means unlimited where stated."""

    def __init__(self, id, storage, rand, *, election_ticks=10, heartbeat_ticks=1, applied=0,
                 msg_bytes_max=1 << 20, inflight_msgs_max=256, inflight_bytes_max=0,
                 uncommitted_bytes_max=0, check_quorum=True, pre_vote=True,
                 read_only_lease_based=False, apply_bytes_max=64 << 20):
        self.id = id
        self.storage = storage
        self.rand = rand  # any object with randrange(n); seeded in tests and the simulator
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.applied = applied
        self.msg_bytes_max = msg_bytes_max
        self.inflight_msgs_max = inflight_msgs_max
        self.inflight_bytes_max = inflight_bytes_max
        self.uncommitted_bytes_max = uncommitted_bytes_max
        self.check_quorum = check_quorum
        self.pre_vote = pre_vote
        self.read_only_lease_based = read_only_lease_based
        self.apply_bytes_max = apply_bytes_max

    def validate(self):
        if self.id == NONE:
            raise ValueError("cannot use none as id")
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat_ticks must be greater than 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.inflight_msgs_max <= 0:
            raise ValueError("inflight_msgs_max must be greater than 0")
        if self.read_only_lease_based and not self.check_quorum:
            raise ValueError("read_only_lease_based requires check_quorum")
        if not hasattr(self.rand, "randrange"):
            raise ValueError("rand must provide randrange(n)")


def _payload_size(ents):
    return sum(len(e.data) for e in ents)


class Raft:
    def __init__(self, c: Config):
        c.validate()
        self.id = c.id
        self.c = c
        self.log = RaftLog(c.storage, c.apply_bytes_max)
        hs, cs = c.storage.initial_state()
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.voters = set()
        self.learners = set()
        self.prs = {}
        self.msgs = []
        self.read_states = []
        self.votes = {}
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = c.election_ticks
        self._load_conf_state(cs)
        if not hs.is_empty():
            self._load_hard_state(hs)
        if c.applied > 0:
            self.log.applied_to(min(c.applied, self.log.committed))
        self.become_follower(self.term, NONE)

    # ------------------------------------------------------------------ state
    def hard_state(self):
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def conf_state(self):
        return ConfState(voters=sorted(self.voters), learners=sorted(self.learners))

    def _load_hard_state(self, hs):
        first, last = self.log.first_index(), self.log.last_index()
        if hs.commit < first - 1 or hs.commit > last:
            raise ValueError(f"hard state commit {hs.commit} is out of range [{first - 1}, {last}]")
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def _load_conf_state(self, cs):
        assert not cs.voters_outgoing, "joint configurations are not used by raftkv"
        self.voters = set(cs.voters)
        self.learners = set(cs.learners)
        assert not (self.voters & self.learners), "a member is both voter and learner"
        last = self.log.last_index()
        for mid in self.voters | self.learners:
            if mid not in self.prs:
                self.prs[mid] = self._new_progress(last + 1, mid in self.learners)
            self.prs[mid].is_learner = mid in self.learners
        for mid in list(self.prs):
            if mid not in self.voters and mid not in self.learners:
                del self.prs[mid]

    def _new_progress(self, next_index, is_learner):
        return Progress(next_index, self.c.inflight_msgs_max, self.c.inflight_bytes_max,
                        is_learner)

    def promotable(self):
        return self.id in self.voters and not self.log.unstable.snapshot

    def _stable_last(self):
        """The last index this member has durably (what it may count itself as holding)."""
        return min(self.log.last_index(), self.log.unstable.offset - 1)

    # ------------------------------------------------------------------ sending
    def send(self, m):
        if m.frm == NONE:
            m.frm = self.id
        if m.type in (MsgType.VOTE, MsgType.VOTE_RESP, MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP):
            assert m.term != 0, f"term should be set when sending {m.type.name}"
        elif m.type not in (MsgType.PROP, MsgType.READ_INDEX):
            # Proposals and read requests are forwarded with term 0: treated as local there.
            m.term = self.term
        assert m.to != self.id, f"{self.id} sending {m.type.name} to itself"
        self.msgs.append(m)

    def send_append(self, to, send_if_empty=True):
        """Send to `to` the entries it lacks (or a snapshot); returns whether a message went."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            log_term = self.log.term(prev)
            ents = []
            # A full window (e.g. unpaused by a heartbeat response) sends only an empty append:
            # its answer frees the window or reveals the lost appends (as etcd-io/raft does).
            if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
                ents = self.log.entries_from(pr.next, self.c.msg_bytes_max)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(Message(MsgType.APP, to=to, index=prev, log_term=log_term, entries=ents,
                          commit=self.log.committed))
        if ents:
            pr.sent_entries(ents[-1].index, _payload_size(ents))
        elif pr.state == ProgressState.PROBE:
            pr.msg_app_flow_paused = True
        return True

    def _send_snapshot(self, to, pr):
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        assert not snap.is_empty(), "need a non-empty snapshot to replace a compacted log"
        self.send(Message(MsgType.SNAP, to=to, snapshot=snap))
        pr.become_snapshot(snap.metadata.index)
        return True

    def send_heartbeat(self, to, ctx):
        # Never commit beyond what the follower is known to hold (it may lack entries).
        commit = min(self.prs[to].match, self.log.committed)
        self.send(Message(MsgType.HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self):
        for mid in sorted(self.prs):
            if mid != self.id:
                self.send_append(mid)

    def bcast_heartbeat(self, ctx=b""):
        if not ctx:
            ctx = self.read_only.last_pending_ctx() or b""
        for mid in sorted(self.prs):
            if mid != self.id:
                self.send_heartbeat(mid, ctx)

    # ------------------------------------------------------------------ commit
    def maybe_commit(self):
        """Advance commit to the index a quorum holds, if of the current term (§5.4.2)."""
        def match_of(mid):
            return self.prs[mid].match if mid in self.prs else 0
        mci = committed_index(self.voters, match_of)
        return self.log.maybe_commit(mci, self.term)

    def on_persisted(self, index, term):
        """The caller made entries up to (index, term) durable (thesis §10.2.1: only now may the
        leader count itself as holding them)."""
        if self.state != StateType.LEADER or self.id not in self.prs:
            return
        if not self.log.match_term(index, term):
            return
        if self.prs[self.id].maybe_update(index) and self.maybe_commit():
            self.release_pending_read_index_messages()
            self.bcast_append()

    # ------------------------------------------------------------------ roles
    def reset(self, term):
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.votes = {}
        last = self.log.last_index()
        for mid in list(self.prs):
            pr = self._new_progress(last + 1, mid in self.learners)
            if mid == self.id:
                pr.match = self._stable_last()
                pr.recent_active = True
            self.prs[mid] = pr
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only.reset()

    def reset_randomized_election_timeout(self):
        et = self.c.election_ticks
        self.randomized_election_timeout = et + self.c.rand.randrange(et)

    def become_follower(self, term, lead):
        self.reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self):
        assert self.state != StateType.LEADER, "invalid transition [leader -> candidate]"
        self.reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self):
        assert self.state != StateType.LEADER, "invalid transition [leader -> pre-candidate]"
        # PreVote (thesis §9.6): no term increase and no vote change until the pre-vote wins.
        self.votes = {}
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self):
        assert self.state != StateType.FOLLOWER, "invalid transition [follower -> leader]"
        self.reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        self.prs[self.id].become_replicate()
        # Conservatively block conf changes until the new term's first entry commits.
        self.pending_conf_index = self.log.last_index()
        # §5.4.2 / §8: a no-op entry of the new term lets earlier entries commit.
        ok = self.append_entry([Entry(term=0, index=0)])
        assert ok, "the empty entry is never refused"

    def append_entry(self, ents):
        li = self.log.last_index()
        for i, e in enumerate(ents):
            e.term = self.term
            e.index = li + 1 + i
        size = _payload_size(ents)
        limit = self.c.uncommitted_bytes_max
        if limit and self.uncommitted_size > 0 and size > 0 and \
                self.uncommitted_size + size > limit:
            return False
        self.uncommitted_size += size
        self.log.append(ents)
        return True

    def reduce_uncommitted_size(self, ents):
        self.uncommitted_size = max(0, self.uncommitted_size - _payload_size(ents))

    # ------------------------------------------------------------------ elections
    def hup(self, ctype):
        if self.state == StateType.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return  # its outcome may remove us from the voters
        self.campaign(ctype)

    def _has_unapplied_conf_change(self):
        lo, hi = self.log.applied + 1, self.log.committed + 1
        if lo >= hi or lo < self.log.first_index():
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in self.log.slice(lo, hi))

    def campaign(self, ctype):
        if ctype == CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type, term = MsgType.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MsgType.VOTE, self.term
        if self.poll(self.id, True) == "won":
            # A single voter wins at once.
            if ctype == CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if ctype == CampaignType.TRANSFER else b""
        for mid in sorted(self.voters):
            if mid != self.id:
                self.send(Message(vote_type, to=mid, term=term, index=self.log.last_index(),
                                  log_term=self.log.last_term(), context=ctx))

    def poll(self, mid, granted):
        self.votes.setdefault(mid, granted)
        return vote_result(self.voters, self.votes)

    def past_election_timeout(self):
        return self.election_elapsed >= self.randomized_election_timeout

    # ------------------------------------------------------------------ ticks
    def tick(self):
        if self.state == StateType.LEADER:
            self.tick_heartbeat()
        else:
            self.tick_election()

    def tick_election(self):
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(MsgType.HUP, frm=self.id))

    def tick_heartbeat(self):
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.c.election_ticks:
            self.election_elapsed = 0
            if self.c.check_quorum:
                self.step(Message(MsgType.CHECK_QUORUM, frm=self.id))
            if self.state == StateType.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()  # the transfer did not finish in time
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.c.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.step(Message(MsgType.BEAT, frm=self.id))

    def abort_leader_transfer(self):
        self.lead_transferee = NONE

    # ------------------------------------------------------------------ step
    def step(self, m):
        """Handle one message (Figure 2, "Rules for Servers": term handling first)."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if not self._step_higher_term(m):
                return
        elif m.term < self.term:
            self._step_lower_term(m)
            return
        t = m.type
        if t == MsgType.HUP:
            ctype = CampaignType.PRE_ELECTION if self.c.pre_vote else CampaignType.ELECTION
            self.hup(ctype)
        elif t in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == StateType.LEADER:
            self.step_leader(m)
        elif self.state in (StateType.CANDIDATE, StateType.PRE_CANDIDATE):
            self.step_candidate(m)
        else:
            self.step_follower(m)

    def _step_higher_term(self, m):
        """Returns False when the message must be ignored."""
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            force = m.context == CAMPAIGN_TRANSFER
            in_lease = (self.c.check_quorum and self.lead != NONE
                        and self.election_elapsed < self.c.election_ticks)
            if not force and in_lease:
                # Leader stickiness (thesis §4.2.3): a current leader is heard; ignore.
                return False
        if m.type == MsgType.PRE_VOTE:
            return True  # never change term for a pre-vote
        if m.type == MsgType.PRE_VOTE_RESP and not m.reject:
            return True  # we bump the term ourselves if the pre-vote wins
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self.become_follower(m.term, m.frm)
        else:
            self.become_follower(m.term, NONE)
        return True

    def _step_lower_term(self, m):
        if (self.c.check_quorum or self.c.pre_vote) and \
                m.type in (MsgType.HEARTBEAT, MsgType.APP):
            # A stale leader (e.g. after a partition) learns of the new term and steps down.
            self.send(Message(MsgType.APP_RESP, to=m.frm))
        elif m.type == MsgType.PRE_VOTE:
            self.send(Message(MsgType.PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
        # anything else from an old term is ignored (§5.1)

    def _handle_vote_request(self, m):
        """§5.2 / §5.4.1: grant at most one vote per term, only to an up-to-date log."""
        can_vote = (self.vote == m.frm or (self.vote == NONE and self.lead == NONE)
                    or (m.type == MsgType.PRE_VOTE and m.term > self.term))
        resp_type = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp_type, to=m.frm, term=m.term))
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp_type, to=m.frm, term=self.term, reject=True))

    # ------------------------------------------------------------------ leader
    def step_leader(self, m):
        t = m.type
        if t == MsgType.BEAT:
            self.bcast_heartbeat()
        elif t == MsgType.CHECK_QUORUM:
            if not self._quorum_active():
                # CheckQuorum (thesis §6.2): cannot hear a quorum, step down.
                self.become_follower(self.term, NONE)
        elif t == MsgType.PROP:
            self._leader_propose(m)
        elif t == MsgType.READ_INDEX:
            self._leader_read_index(m)
        else:
            pr = self.prs.get(m.frm)
            if pr is not None:
                self._step_leader_peer(m, pr)

    def _step_leader_peer(self, m, pr):
        t = m.type
        if t == MsgType.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MsgType.HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, pr)
        elif t == MsgType.SNAP_STATUS:
            if pr.state == ProgressState.SNAPSHOT:
                if m.reject:
                    pr.pending_snapshot = 0
                pr.become_probe()
                pr.msg_app_flow_paused = True  # wait for the next heartbeat response
        elif t == MsgType.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MsgType.TRANSFER_LEADER:
            self._leader_transfer(m, pr)

    def _quorum_active(self):
        active = {mid: (mid == self.id or self.prs[mid].recent_active)
                  for mid in self.voters if mid in self.prs}
        for mid, pr in self.prs.items():
            if mid != self.id:
                pr.recent_active = False
        return vote_result(self.voters, active) == "won"

    def _leader_propose(self, m):
        assert m.entries, f"{self.id} stepped an empty proposal"
        if self.id not in self.prs:
            raise ProposalDroppedError("this member was removed from the configuration")
        if self.lead_transferee != NONE:
            raise ProposalDroppedError("leadership transfer in progress")
        for e in m.entries:
            if e.type == EntryType.CONF_CHANGE:
                self._check_conf_change(e)
        if not self.append_entry(m.entries):
            raise ProposalDroppedError("too many uncommitted bytes at the leader")
        for e in m.entries:
            if e.type == EntryType.CONF_CHANGE:
                self.pending_conf_index = e.index
        self.bcast_append()

    def _check_conf_change(self, e):
        """One change at a time (thesis §4.1): refuse while another is not yet applied."""
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError("a configuration change is already in progress")
        cc = decode_conf_change(e.data)
        voters = set(self.voters)
        for ch in cc.changes:
            if ch.type == ConfChangeType.ADD_NODE:
                voters.add(ch.node_id)
            elif ch.type in (ConfChangeType.REMOVE_NODE, ConfChangeType.ADD_LEARNER_NODE):
                voters.discard(ch.node_id)
        if len(voters ^ self.voters) > 1:
            raise ProposalDroppedError("only one voter may change at a time")
        if not voters:
            raise ProposalDroppedError("removing all voters is not allowed")

    def _handle_append_response(self, m, pr):
        pr.recent_active = True
        if m.reject:
            # Fast backtracking (thesis §5.3 optimisation as in etcd): skip a whole term.
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        if m.index > self.log.last_index():
            # The follower answered with its commit index (handle_append_entries) and it is
            # beyond our log: it holds committed entries we lack, which only a quorum's lost
            # log can explain (damaged data dirs; the follower stops, LogDivergedError). Never
            # count it as holding entries we do not have: a commit on that count would be
            # unsafe, and our next append would ask for a term past our log's end.
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.release_pending_read_index_messages()
            self.bcast_append()
        elif old_paused:
            self.send_append(m.frm)
        while self.send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MsgType.TIMEOUT_NOW, to=m.frm))

    def _handle_heartbeat_response(self, m, pr):
        pr.recent_active = True
        pr.msg_app_flow_paused = False
        if pr.match < self.log.last_index() or pr.state == ProgressState.PROBE:
            self.send_append(m.frm)
        if self.c.read_only_lease_based or not m.context:
            return
        acks = self.read_only.recv_ack(m.frm, m.context)
        if acks is None or vote_result(self.voters, {a: True for a in acks}) != "won":
            return
        for rs in self.read_only.advance(m.context):
            self._respond_read_index(rs.req, rs.index)

    def _leader_transfer(self, m, pr):
        transferee = m.frm
        if pr.is_learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return  # already under way
        self.abort_leader_transfer()
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self.send(Message(MsgType.TIMEOUT_NOW, to=transferee))
        else:
            self.send_append(transferee)

    # ------------------------------------------------------------------ reads
    def committed_entry_in_current_term(self):
        return self.log.term_or_zero(self.log.committed) == self.term

    def _leader_read_index(self, m):
        if len(self.voters) == 1:
            self._respond_read_index(m, self.log.committed)
            return
        if not self.committed_entry_in_current_term():
            # Thesis §6.4 step 1: wait until this term's first entry commits.
            self.pending_read_index_messages.append(m)
            return
        self._send_read_index_response(m)

    def _send_read_index_response(self, m):
        if self.c.read_only_lease_based:
            self._respond_read_index(m, self.log.committed)
            return
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self.bcast_heartbeat(m.context)

    def _respond_read_index(self, req, index):
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(index=index, request_ctx=req.context))
        else:
            self.send(Message(MsgType.READ_INDEX_RESP, to=req.frm, index=index,
                              context=req.context))

    def release_pending_read_index_messages(self):
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        msgs, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in msgs:
            self._send_read_index_response(m)

    # ------------------------------------------------------------------ candidate / follower
    def step_candidate(self, m):
        t = m.type
        my_resp = (MsgType.PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE
                   else MsgType.VOTE_RESP)
        if t == MsgType.PROP:
            raise ProposalDroppedError("no leader (election in progress)")
        if t in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self.become_follower(m.term, m.frm)
            self.step_follower(m)
        elif t == my_resp:
            res = self.poll(m.frm, not m.reject)
            if res == "won":
                if self.state == StateType.PRE_CANDIDATE:
                    self.campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == "lost":
                self.become_follower(self.term, NONE)

    def step_follower(self, m):
        t = m.type
        if t == MsgType.PROP:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            m.to = self.lead
            self.send(m)
        elif t == MsgType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_append_entries(m)
        elif t == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.log.commit_to(m.commit)
            self.send(Message(MsgType.HEARTBEAT_RESP, to=m.frm, context=m.context))
        elif t == MsgType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_snapshot(m)
        elif t in (MsgType.TRANSFER_LEADER, MsgType.READ_INDEX):
            if self.lead == NONE:
                return  # dropped: the caller retries (reads time out and are retried)
            m.to = self.lead
            self.send(m)
        elif t == MsgType.TIMEOUT_NOW:
            # Thesis §3.10: the leader asks us to start an election at once.
            self.hup(CampaignType.TRANSFER)
        elif t == MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(index=m.index, request_ctx=m.context))

    def handle_append_entries(self, m):
        """Figure 2, AppendEntries receiver implementation."""
        if m.index < self.log.committed:
            self._check_committed_prefix(m)
            self.send(Message(MsgType.APP_RESP, to=m.frm, index=self.log.committed))
            return
        mlast = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if mlast is not None:
            self.send(Message(MsgType.APP_RESP, to=m.frm, index=mlast))
            return
        hint = min(m.index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.log_term)
        self.send(Message(MsgType.APP_RESP, to=m.frm, index=m.index, reject=True,
                          reject_hint=hint, log_term=hint_term))

    def _check_committed_prefix(self, m):
        """An append below our commit index (a duplicate, or a new leader's first probe) is
        answered with the commit index: by Leader Completeness (§5.4) every leader's log holds
        the committed entries. When a quorum lost committed entries (damaged data dirs) the
        leader's log may not, and that answer would make it count this member as holding
        entries it does not hold. So the entries of m at or below our commit index must match
        ours (they always do when no committed entry was lost); raises LogDivergedError if not."""
        committed = self.log.committed
        for index, term in [(m.index, m.log_term)] + [(e.index, e.term) for e in m.entries]:
            if index > committed:
                break
            try:
                ours = self.log.term(index)
            except CompactedError:
                continue  # compacted into our snapshot: no term to compare
            if ours != term:
                raise LogDivergedError(m.frm, m.term, index, ours, term, committed)

    def handle_snapshot(self, m):
        snap = m.snapshot
        if self.restore(snap):
            self.send(Message(MsgType.APP_RESP, to=m.frm, index=self.log.last_index()))
        else:
            self.send(Message(MsgType.APP_RESP, to=m.frm, index=self.log.committed))

    def restore(self, snap):
        """Install a leader's snapshot (§7); returns False if it brings nothing new."""
        meta = snap.metadata
        if meta.index <= self.log.committed:
            return False
        if self.state != StateType.FOLLOWER:
            self.become_follower(self.term + 1, NONE)
            return False
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # our log already holds it: fast-forward
            return False
        self.log.restore(snap)
        self.prs = {}
        self._load_conf_state(meta.conf_state)
        lead = self.lead
        self.reset(self.term)
        self.lead = lead  # the snapshot came from our leader: keep it (proposals, lease)
        return True

    # ------------------------------------------------------------------ membership
    def apply_conf_change(self, cc):
        """Apply a committed ConfChangeV2 (called by the application when it applies it)."""
        for ch in cc.changes:
            mid = ch.node_id
            if ch.type == ConfChangeType.ADD_NODE:
                self.learners.discard(mid)
                self.voters.add(mid)
            elif ch.type == ConfChangeType.ADD_LEARNER_NODE:
                if mid in self.voters:
                    continue  # demotion is not supported (as in etcd 3.4)
                self.learners.add(mid)
            elif ch.type == ConfChangeType.REMOVE_NODE:
                self.voters.discard(mid)
                self.learners.discard(mid)
        self._load_conf_state(self.conf_state())
        self._after_conf_change()
        return self.conf_state()

    def _after_conf_change(self):
        if self.state != StateType.LEADER:
            return
        if self.id not in self.voters:
            # Removed (or demoted) leader: step down so the others elect a leader.
            self.become_follower(self.term, NONE)
            return
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
            self.abort_leader_transfer()
        if self.maybe_commit():
            self.bcast_append()
        else:
            for mid in sorted(self.prs):
                if mid != self.id:
                    self.send_append(mid, send_if_empty=False)
