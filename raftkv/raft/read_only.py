"""ReadIndex bookkeeping (Raft thesis §6.4): a read is served at the commit index the leader
had when the request arrived, once a heartbeat round shows that it is still the leader."""
from __future__ import annotations


class ReadIndexStatus:
    __slots__ = ("req", "index", "acks")

    def __init__(self, req, index):
        self.req = req
        self.index = index
        self.acks = set()


class ReadOnly:
    def __init__(self):
        self.pending = {}  # ctx -> ReadIndexStatus
        self.queue = []  # ctx in arrival order

    def add_request(self, index, req):
        ctx = req.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req, index)
        self.queue.append(ctx)

    def recv_ack(self, member_id, ctx):
        """Record that member_id answered the heartbeat carrying ctx; returns the acks so far."""
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(member_id)
        return rs.acks

    def advance(self, ctx):
        """Every request queued up to and including ctx is confirmed: pop and return them."""
        if ctx not in self.pending:
            return []
        n = self.queue.index(ctx) + 1
        done = [self.pending.pop(c) for c in self.queue[:n]]
        del self.queue[:n]
        return done

    def last_pending_ctx(self):
        return self.queue[-1] if self.queue else None

    def reset(self):
        self.pending.clear()
        self.queue.clear()
