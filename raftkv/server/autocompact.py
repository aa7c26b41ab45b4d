"""etcd's auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`): the leader
compacts the history through the log, like a client's Compact, so that neither the store nor
the in-memory key index grows without bound.

* revision mode: every REVISION_INTERVAL_S, compact to the current revision minus the retention
  (a number of revisions), as etcd's revision compactor does.
* periodic mode: keep what was written within the retention (a duration). The revision is
  sampled every retention/10 (at most every hour/10), and every min(retention, 1 h) the store is
  compacted to the oldest sample that is at least `retention` old, as etcd 3.4's periodic
  compactor does.

Only the leader compacts; the samples start again after a leadership change. The decisions are
in Compactor (pure, driven by `tick(now, revision, compacted)`), the loop in run().
"""
from __future__ import annotations

import asyncio
import collections
import logging

from raftkv.errors import RaftkvError
from raftkv.raft import Role

log = logging.getLogger("raftkv.autocompact")

REVISION_INTERVAL_S = 300.0  # etcd's revision compactor runs every 5 minutes
HOUR_S = 3600.0
MODES = ("periodic", "revision")


class Compactor:
    """What to compact, and when (no I/O): tick() returns a revision to compact to, or 0."""

    def __init__(self, mode, retention):
        assert mode in MODES and retention > 0
        self.mode, self.retention = mode, retention
        if mode == "periodic":
            self.compact_every_s = min(retention, HOUR_S)
            self.sample_every_s = self.compact_every_s / 10
        else:
            self.compact_every_s = self.sample_every_s = REVISION_INTERVAL_S
        self.reset()

    def reset(self, now=None):
        """Forget the samples (a new leader starts over, as etcd's compactor is resumed)."""
        self._samples = collections.deque()  # (time, revision), oldest first
        self._last_sample = self._last_compact = now

    def tick(self, now, revision, compacted):
        if self._last_sample is None:
            self._last_sample = self._last_compact = now
        if self.mode == "revision":
            if now - self._last_compact < self.compact_every_s:
                return 0
            self._last_compact = now
            target = revision - self.retention
            return target if target > compacted else 0
        if now - self._last_sample >= self.sample_every_s or not self._samples:
            self._samples.append((now, revision))
            self._last_sample = now
        if now - self._last_compact < self.compact_every_s:
            return 0
        # The newest sample at least `retention` old: everything written after it is kept.
        target = 0
        while self._samples and now - self._samples[0][0] >= self.retention:
            target = self._samples.popleft()[1]
        if target:
            self._last_compact = now
        return target if target > compacted else 0


async def run(member, compactor, poll_s=None):
    """The member's loop: on the leader, tick the compactor and propose what it asks for."""
    poll_s = poll_s or max(0.05, min(compactor.sample_every_s, 1.0))
    loop = asyncio.get_running_loop()
    was_leader = False
    while True:
        await asyncio.sleep(poll_s)
        leader = member.loop.role == Role.LEADER
        if not leader:
            was_leader = False
            continue
        if not was_leader:
            compactor.reset(loop.time())
            was_leader = True
        kv = member.kv
        target = compactor.tick(loop.time(), kv.current_revision, kv.compact_revision)
        if not target:
            continue
        try:
            await member.loop.propose("compact", {"revision": target}, 32, 10.0)
            log.info("auto-compaction (%s, retention %s): compacted to revision %d",
                     compactor.mode, compactor.retention, target)
        except RaftkvError as exc:
            log.warning("auto-compaction to revision %d failed: %s", target, exc)
