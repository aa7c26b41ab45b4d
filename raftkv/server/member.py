"""One raftkv member: storage, the Raft core, the MVCC store and the peer transport, wired.

Start-up: open the data dir (refusing one that is unsafe, with the reason), bootstrap a new
cluster identically on every member (the initial members become conf-change entries 1..N of
term 1, committed, as etcd-io/raft bootstraps), build the RawNode from what is durable, start
the peer transport (then, with --experimental-initial-corrupt-check, compare the store's HashKV
with the peers', raftkv/server/corruptcheck.py) and the Ready loop. The front ends call the
Service (raftkv.server.service).

Each Ready: its entries and hard state are appended to the WAL (raftkv/storage/wal.py, one
fdatasync) and its messages go out once that is durable (a leader's own appends before it,
thesis §10.2.1); its committed entries are applied to the MVCC store in the storage thread's
LMDB transaction, which commits off the latency path (a group commit that lingers
--apply-linger, and never before the WAL holds everything it reflects). After a crash the WAL is
replayed and the committed entries above the store's applied index are applied again.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import shutil
import threading
import time

import lmdb
import msgpack

from raftkv.errors import RaftkvError
from raftkv.mvcc import defrag as mvcc_defrag, snapshot as mvcc_snapshot
from raftkv.mvcc.kvstore import KVStore
from raftkv.mvcc.lease import CHECKPOINT_BATCH_MAX, CHECKPOINT_INTERVAL_S, CHECKPOINT_RATE, \
    Lessor
from raftkv.raft import (
    ConfChangeSingle,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Config,
    Entry,
    EntryType,
    HardState,
    RawNode,
    Role,
    SnapshotMetadata,
    decode_conf_change,
    encode_conf_change,
)
from raftkv.raft.errors import LogDivergedError
from raftkv.server import autocompact, corruptcheck, forcenew
from raftkv.storage.dirlock import DirLock
from raftkv.storage.engine import (
    DATA_FILE,
    DataDirError,
    DEFRAG_SCRATCH,
    Engine,
    remove_defrag_scratch,
    set_aside_defrag_scratch,
)
from raftkv.storage.errors import RESTORE_FROM_PEERS, StorageError, writable
from raftkv.storage.gate import start_thread
from raftkv.storage.group_commit import GroupCommitter, after_commit, before_commit
from raftkv.storage.logstore import LogStore, pack_snap_meta, unpack_snap_meta
from raftkv.storage.raftlog import WalLog
from raftkv.storage.wal import (
    COMPACT,
    ENTRIES,
    HARD_STATE,
    ID_FILE,
    INSTALL,
    SEGMENT_BYTES_DEFAULT,
    WAL,
    WalError,
    read_wal_id,
    wal_path,
    write_file_durably,
)
from raftkv.server.config import first_host_port, host_port, split_list
from raftkv.server.peer import PeerTransport, read_spooled_chunks
from raftkv.server.proposals import decode_batch
from raftkv.server.raft_loop import RaftLoop

log = logging.getLogger("raftkv.member")

MEMBER_KEY_PREFIX = b"raftkv.member/"
# kvmeta: the IDs of members removed from the cluster (etcd's members_removed bucket), so that
# a removed member that still runs is neither dialed nor let in, even when --initial-cluster
# still names it; an ADD_NODE of the same ID (IDs derive from peer URLs) clears the mark.
REMOVED_KEY_PREFIX = b"raftkv.removed_member/"
MEMBER_UPDATE_OP = "member_update_peers"  # the log op of etcd's MemberUpdate
APPLY_TXN_OPS_MAX = 1 << 16  # the apply's own bound on a txn's ops (see --max-txn-ops)
CLUSTER_ID_KEY = b"raftkv.cluster_id"  # kvmeta: the cluster ID from the bootstrap entries
IDENTITY_FILE = "member-identity.json"  # this data dir's member and cluster IDs
# This data dir's WAL: its identity (WAL.id) and where it was last opened (_check_wal_identity)
WAL_RECORD_FILE = "wal-identity.json"
DEDUP_REQUESTS_MAX = 100_000  # idempotency ids remembered (same on every member)
DEDUP_DB, DEDUP_ORDER_DB = "dedup", "dedup_order"  # the idempotency table (_remember)
PENDING_INSTALL_KEY = b"raftkv.pending_install"  # kvmeta: a restored snapshot not yet in the WAL
# kvmeta: the index through which the stored conf state has seen every conf change entry. After
# a snapshot install whose image is newer than its index, the store is applied beyond it; a
# restart must deliver the entries after it again so their conf changes are replayed.
CONF_INDEX_KEY = b"raftkv.conf_index"
# kvmeta: the applied index of the last snapshot image installed. The only store applied beyond
# its WAL's last entry that may start is one still at that index (_check_state_vs_log).
INSTALLED_APPLIED_KEY = b"raftkv.installed_applied"
# How long an apply-only LMDB round waits for more Readys before it commits (its sync is off the
# latency path; a linearizable read that needs the applies visible ends the wait at once).
APPLY_LINGER_S_DEFAULT = 0.02
NO_LEADER_WARN_S = 5.0  # how often a member without a leader says so
# The initial election tick advance waits this long for its peers to connect (etcd: its peer
# connections' read timeout, 5 s), looking every TICK_ADVANCE_POLL_S.
TICK_ADVANCE_WAIT_S = 5.0
TICK_ADVANCE_POLL_S = 0.05
# The Raft log since the compaction point lives in memory (raftkv/storage/raftlog.py): besides
# --snapshot-count entries, a snapshot point is noted every SNAPSHOT_POINT_BYTES of entry payload
# and the log keeps at most about LOG_CATCHUP_BYTES behind the applied index (bulk entries are
# large: 5,000 entries of 1,000 puts would be 1.5 GB).
SNAPSHOT_POINT_BYTES = 32 << 20
LOG_CATCHUP_BYTES = 64 << 20
LEASE_LOOP_S = 0.5  # how often the leader looks for expired leases and due checkpoints (etcd)


class DataDirStateError(StorageError):
    """The data dir's WAL and state disagree in a way a restart cannot repair."""


WAL_SEGMENT_BYTES_MIN = 64 << 10


def wal_segment_bytes():
    """The size the WAL preallocates each segment to: 64 MiB as etcd's, or
    RAFTKV_WAL_SEGMENT_BYTES (the test suite sets a few MiB: it starts a hundred clusters,
    and 64 MiB per member filled 22 GB per run)."""
    value = os.environ.get("RAFTKV_WAL_SEGMENT_BYTES")
    return max(WAL_SEGMENT_BYTES_MIN, int(value)) if value else SEGMENT_BYTES_DEFAULT


def record_wal(data_dir, wal_id, wal_dir):
    """Write data_dir's WAL record (WAL_RECORD_FILE): the WAL's identity and its directory."""
    body = json.dumps({"wal_id": wal_id, "wal_dir": os.path.abspath(wal_dir)})
    write_file_durably(os.path.join(data_dir, WAL_RECORD_FILE), body.encode("utf-8"))


def fault_tolerance(voters):
    n = len(voters)
    return max(0, n - (n // 2 + 1))


def cluster_warning(voters):
    n = len(voters)
    if n < 3:
        return (f"a cluster of {n} member(s) tolerates no failure; run 3, 5 or 7 members")
    if n % 2 == 0:
        return (f"a cluster of {n} members tolerates only {fault_tolerance(voters)} failure(s), "
                f"no more than {n - 1} members would; run an odd number of members")
    return None


class Member:
    def __init__(self, cfg):
        self.cfg = cfg
        ids = cfg.member_ids()
        self.id = ids[cfg.name]
        self.cluster_id = cfg.cluster_id()
        self.engine = None
        self.committer = None
        self.wal = None
        self.raftlog = None
        self.members = {}  # id -> {"name", "peer_urls", "client_urls", "is_learner"}
        self.removed = set()  # IDs removed from the cluster (REMOVED_KEY_PREFIX)
        self._forced = False  # started with --force-new-cluster on an existing data dir
        self._announce_pending = False  # no members known at start (see _announce)
        self._announce_scheduled = False  # _announce_replayed is due (_on_conf_change)
        self.conf = ConfState()
        self.dedup = collections.OrderedDict()
        self._dedup_seq = 0
        self.loop = None
        self.transport = None
        self.lessor = None
        self._tasks = []
        self._defrag_tasks = set()  # Maintenance.Defragment runs (defragment)
        self._leaderless_since = self._leaderless_warned = None  # see _watch_leaderless
        self._snapshot_index = 0
        # RAFTKV_WAL_INLINE=0: Readys hand their WAL records to the WAL's writer thread
        self._wal_inline = os.environ.get("RAFTKV_WAL_INLINE", "1") != "0"
        # An object whose .n counts client calls in flight that need this event loop free
        # (the in-process etcd gRPC server's, set by raftkv.api.serve); while n > 0, WAL
        # records go to the writer thread rather than blocking the loop in the sync.
        self.front_calls = None
        self._restart_applied = 0  # the core's applied index at start (see _check_state_vs_log)
        # The in-memory log's byte bounds (see _maybe_compact_log); tests shrink them.
        self._point_bytes = int(os.environ.get("RAFTKV_SNAPSHOT_POINT_BYTES",
                                               SNAPSHOT_POINT_BYTES))
        self._catchup_bytes = int(os.environ.get("RAFTKV_LOG_CATCHUP_BYTES", LOG_CATCHUP_BYTES))
        self._applied_bytes = 0  # entry payload applied since start (snapshot point spacing)
        self._snapshot_point_bytes = 0
        self._event_loop = None
        self._loop_thread = None  # the event loop's thread (start()): applies lent to it
        self.started = False
        self.stopping = False
        # Bound ports of the first TCP listener of each kind (raftkv.api.serve sets the client,
        # native and metrics ones; start() the peer one); None until then.
        self.peer_port = self.client_port = self.native_port = self.metrics_port = None
        self.forward_handlers = {}  # op -> async fn(body): the Service's leader-only ops
        self._locks = []  # DirLocks of the data dir and the --wal-dir (open_storage)

    # ------------------------------------------------------------------ start / stop
    def open_storage(self):
        # First, before anything in them is read or changed: no other process may run on
        # the data dir or the WAL dir (DirInUseError, and the start is refused).
        self._locks.append(DirLock(self.cfg.data_dir, "data dir"))
        try:
            self._open_storage()
        except lmdb.Error as exc:  # a page the store needs is damaged (LMDB has no checksums)
            self._release_locks()
            raise DataDirStateError(
                f"{self.cfg.data_dir}: the store ({DATA_FILE}) is damaged: {exc}; refusing to "
                f"start ({RESTORE_FROM_PEERS})") from None
        except BaseException:  # a refused start gives the directories back at once
            self._release_locks()
            raise

    def record_pids(self):
        """Write this process's PID into the locks' files: only once open_storage and
        open_membership passed every check, so that a refused start leaves the files as they
        were."""
        for lock in self._locks:
            lock.record_pid()

    def _open_engine(self):
        try:
            return Engine(self.cfg.data_dir)
        except DataDirError as exc:
            raise DataDirError(
                f"{exc}; check that --data-dir names this member's data dir, and if its "
                f"store is lost or damaged, remove the member from the cluster and add it back "
                f"with an empty data dir") from None

    def _release_locks(self):
        for lock in self._locks:
            lock.release()
        self._locks = []

    def _remove_leftovers(self):
        with writable("remove a file that a crash (or a defrag cut short) left in the data dir"):
            for name in os.listdir(self.cfg.data_dir):
                if name.startswith(("incoming-snap-", "outgoing-snap-")):  # left by a crash
                    os.unlink(os.path.join(self.cfg.data_dir, name))
            if remove_defrag_scratch(self.cfg.data_dir):  # the live data.mdb is whole anyway
                log.warning("removed %s left in %s by a defrag that did not finish",
                            DEFRAG_SCRATCH, self.cfg.data_dir)

    def _open_storage(self):
        self._remove_leftovers()
        self.engine = self._open_engine()
        # The LMDB log of data dirs written before the WAL existed; its meta sub-db still holds
        # the applied configuration (conf state), written with each apply.
        self.logstore = LogStore(self.engine)
        # quota_bytes=0: the NOSPACE alarm is raised through the log (Service), never decided
        # by one member's apply, so every member refuses the same writes.
        # --max-txn-ops is checked by the service before proposing (as etcd's gRPC layer
        # does): members with different values must still apply the same entries alike, so
        # apply only bounds a txn by APPLY_TXN_OPS_MAX.
        self.kv = KVStore(self.engine, quota_bytes=0, max_txn_ops=APPLY_TXN_OPS_MAX,
                          min_lease_ttl=max(1, -(-3 * self.cfg.election_timeout // 2000)),
                          auth_token_ttl_s=float(self.cfg.auth_token_ttl),
                          auth_jwt=self.cfg.jwt_tokens(),
                          compaction_batch=self.cfg.experimental_compaction_batch_limit)
        self.lessor = self._make_lessor()
        self.kv.register_op("member_publish", self._op_member_publish)
        self.committer = GroupCommitter(self.engine)
        self.committer.lazy_wait_s = self.cfg.apply_linger_s \
            if self.cfg.apply_linger_s is not None else \
            float(os.environ.get("RAFTKV_APPLY_LINGER_S", APPLY_LINGER_S_DEFAULT))
        # The Ready loop applies committed entries itself, inside the lingering round's txn,
        # whenever one is open (its responses then skip two thread hand-offs).
        self.committer.lend = os.environ.get("RAFTKV_APPLY_INLINE", "1") != "0"
        self._check_wal_dir()
        recorded = self._check_wal_identity()
        self.wal = WAL(self.cfg.data_dir, wal_dir=self.cfg.wal_dir,
                       segment_bytes=wal_segment_bytes())
        migrate = not WAL.exists(self.cfg.data_dir, self.cfg.wal_dir) and \
            not self._legacy_log_empty()
        if not migrate and not WAL.exists(self.cfg.data_dir, self.cfg.wal_dir) and \
                self.kv.applied_index > 0:
            raise DataDirStateError(
                f"{self.cfg.data_dir}: the store is applied to index {self.kv.applied_index} "
                f"but there is no WAL in {self.wal.dir}; refusing to start without the Raft "
                f"log (if this member ran with --wal-dir, start it with the same --wal-dir)")
        if self.cfg.wal_dir:  # its checks above only read; the WAL's open writes
            self._locks.append(DirLock(self.cfg.wal_dir, "WAL dir"))
        with writable(f"open the WAL in {self.wal.dir} for writing", self._wal_what()):
            image = self.wal.open()
        if migrate:
            image = self._migrate_legacy_log()
        image = self._finish_pending_install(image)
        fresh = image.hard_state.is_empty() and not image.entries and \
            image.meta.index == 0 and self.kv.applied_index == 0
        if self.cfg.force_new_cluster and fresh:
            # as etcd: the flag only acts on an existing data dir; an empty one starts as usual
            log.info("--force-new-cluster: the data dir is empty, nothing to recover; starting "
                     "as --initial-cluster-state %s", self.cfg.initial_cluster_state)
        elif self.cfg.force_new_cluster:
            image = self._force_new_cluster(image)
        self.raftlog = WalLog(self.wal, image, self.logstore.initial_state()[1])
        if fresh and self.cfg.initial_cluster_state == "new":
            self._bootstrap()
        self._check_state_vs_log()
        self._record_wal(recorded)  # after the checks: a refused start changes nothing
        self.conf = self.logstore.initial_state()[1]
        self.raftlog.conf_state = self.conf
        self._load_members()
        self._load_removed()
        self._load_dedup()
        self._snapshot_index = self.raftlog.snapshot().metadata.index
        self._snapshot_point_index = self._snapshot_index  # the last point noted
        self._snapshot_points = collections.deque()  # points waiting to become the snapshot

    def _check_wal_dir(self):
        """With --wal-dir, a WAL left in DATA_DIR/wal is the member's real log (it ran without
        the flag): refuse rather than start a second, empty log beside it."""
        if not self.cfg.wal_dir:
            return
        default = wal_path(self.cfg.data_dir)
        if os.path.abspath(default) != os.path.abspath(self.cfg.wal_dir) and \
                WAL.exists(self.cfg.data_dir):
            raise DataDirStateError(
                f"{self.cfg.data_dir}: its WAL is in {default} but --wal-dir is "
                f"{self.cfg.wal_dir}; move the WAL files there (with the member stopped) or "
                f"start without --wal-dir")

    def _wal_what(self):
        """How messages name the directory of the WAL."""
        return "WAL dir" if self.cfg.wal_dir else "data dir"

    def _check_wal_identity(self):
        """The data dir records its WAL's identity (WAL_RECORD_FILE) once the WAL is open: a
        start that finds no WAL, or another one, where the flags say it is refuses, since an
        empty log after log entries or a vote were persisted can lose acknowledged writes or
        vote twice in a term. Returns the record (None: a new data dir, or one written before
        the record existed; the start goes on and records the WAL it opens)."""
        path = os.path.join(self.cfg.data_dir, WAL_RECORD_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
            wal_id, last_dir = str(rec["wal_id"]), str(rec["wal_dir"])
        except FileNotFoundError:
            self._check_unrecorded_wal()
            return None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataDirStateError(f"{path} is damaged ({exc}); refusing to start") from None
        where = wal_path(self.cfg.data_dir, self.cfg.wal_dir)
        found = read_wal_id(where)
        segments = WAL.exists(self.cfg.data_dir, self.cfg.wal_dir)
        if found == wal_id and segments:
            return rec
        if found is None and not segments:
            what = f"there is no WAL in {where}"
        elif found is None:
            what = f"the WAL in {where} has no identity: it is not this data dir's"
        elif found != wal_id:
            what = f"the WAL in {where} is another one (identity {found})"
        else:
            what = f"the WAL in {where} has lost its segment files"
        raise DataDirStateError(
            f"{self.cfg.data_dir}: this data dir's WAL has identity {wal_id} (last opened in "
            f"{last_dir}) but {what}; refusing to start on a fresh or foreign Raft log, which "
            f"could lose acknowledged writes or vote twice in a term. Start the member with "
            f"the --wal-dir that holds its WAL (or without --wal-dir if it was in the data "
            f"dir), or put the WAL's files back in {where} with the member stopped; if the WAL "
            f"is lost, remove this member from the cluster and add it back with an empty data "
            f"dir")

    def _check_unrecorded_wal(self):
        """No WAL_RECORD_FILE. A raftkv that gives WALs an identity writes the WAL's (ID_FILE,
        in the WAL's directory) and then this record before the member applies anything (the
        identity of a WAL from before identities is written only with the record: WAL.save_id).
        So a WAL with an identity beside a store that has applied entries means the record was
        lost (deleted, or the data dir rebuilt by hand), not that an older raftkv wrote the data
        dir: nothing then tells whether this WAL is the data dir's own, and a foreign or older
        log could lose acknowledged writes or vote twice in a term. Refused (so is the case of
        member-identity.json lost as well; an older raftkv wrote neither). A store that applied
        nothing may start: a first start cut short before the record, or a new data dir on a
        kept WAL (its store is rebuilt from the log). A WAL without identity is taken for one
        an older raftkv wrote (nothing in its segments tells otherwise); the start says so and
        the checks of the store against the log (_check_state_vs_log) still guard it."""
        where = wal_path(self.cfg.data_dir, self.cfg.wal_dir)
        if not WAL.exists(self.cfg.data_dir, self.cfg.wal_dir):
            return  # a new WAL (or a missing one beside an applied store: refused next)
        found = read_wal_id(where)
        applied = self.kv.applied_index
        if found is None:
            log.info("%s: no %s and the WAL in %s has no identity: taking it for a WAL written "
                     "by a raftkv from before WAL identities; it gets one now, recorded in the "
                     "data dir", self.cfg.data_dir, WAL_RECORD_FILE, where)
            return
        if applied == 0:
            return
        lost = [WAL_RECORD_FILE]
        if not os.path.exists(os.path.join(self.cfg.data_dir, IDENTITY_FILE)):
            lost.append(IDENTITY_FILE)
        raise DataDirStateError(
            f"{self.cfg.data_dir}: {' and '.join(lost)} {'are' if len(lost) > 1 else 'is'} "
            f"missing, but the WAL in {where} has an identity ({found}) and the store is "
            f"applied to index {applied}: the raftkv that wrote them records the WAL's "
            f"identity in the data dir before it applies anything, so the data dir's identity "
            f"files were lost, and nothing tells whether this WAL is its own; refusing to "
            f"start, since a foreign or older Raft log could lose acknowledged writes or vote "
            f"twice in a term. Put the files back from a backup of this data dir (with the "
            f"member stopped), or {RESTORE_FROM_PEERS}")

    def _record_wal(self, recorded):
        """Record the open WAL's identity and directory in the data dir (when new or moved)."""
        assert self.wal.id is not None
        where = os.path.abspath(self.wal.dir)
        with writable(f"write the WAL's identity into {ID_FILE}", self._wal_what()):
            self.wal.save_id()  # a WAL from before identities gets its own now
        if recorded is not None and recorded["wal_dir"] == where:
            return
        assert recorded is None or recorded["wal_id"] == self.wal.id
        with writable(f"write the WAL record {WAL_RECORD_FILE}"):
            record_wal(self.cfg.data_dir, self.wal.id, where)

    def _bootstrap(self):
        """Every member of a new cluster writes the same entries 1..N (one conf change per
        initial member, term 1) and commits them, so log matching holds from the start."""
        ids = self.cfg.member_ids()
        peers = self.cfg.cluster_members()
        ents = []
        for i, (name, mid) in enumerate(sorted(ids.items(), key=lambda kv: kv[1]), 1):
            ctx = msgpack.packb({"name": name, "peer_urls": peers[name], "client_urls": [],
                                 "cluster_id": self.cluster_id})
            cc = ConfChangeV2(changes=[ConfChangeSingle(ConfChangeType.ADD_NODE, mid)],
                              context=ctx)
            ents.append(Entry(1, i, EntryType.CONF_CHANGE, encode_conf_change(cc)))
        cs = ConfState(voters=sorted(ids.values()))

        self.raftlog.save(ents, HardState(term=1, vote=0, commit=len(ents)), None)
        self.wal.wait_synced(self.raftlog.last_seq())
        self.committer.run_sync(lambda txn: self.logstore.set_conf_state(txn, cs))
        log.info("bootstrapped a new cluster of %d member(s) (cluster id %x)", len(ids),
                 self.cluster_id)

    def _legacy_log_empty(self):
        st = self.logstore
        return st.initial_state()[0].is_empty() and st.last_index() == 0 and \
            st.snapshot().metadata.index == 0

    def _migrate_legacy_log(self):
        """A data dir from before the WAL: copy its LMDB log and hard state into the WAL (then
        drop them from LMDB) and return the replayed image."""
        st = self.logstore
        first, last = st.first_index(), st.last_index()
        meta = st.snapshot().metadata
        if meta.index != first - 1:
            meta = SnapshotMetadata(conf_state=st.initial_state()[1], index=first - 1,
                                    term=st.term(first - 1))
        self.wal.append(COMPACT, meta)
        lo = first
        while lo <= last:
            ents = st.entries(lo, min(last + 1, lo + 1024))
            self.wal.append(ENTRIES, ents, max_index=ents[-1].index)
            lo = ents[-1].index + 1
        seq, _ = self.wal.append(HARD_STATE, st.initial_state()[0])
        self.wal.wait_synced(seq)
        self.committer.run_sync(lambda txn: txn.drop(self.engine.db(b"log"), delete=False))
        log.info("moved the Raft log (%d entries) and hard state from LMDB into the WAL",
                 last - first + 1)
        return self._reopen_wal()

    def _reopen_wal(self):
        """Close the WAL and replay it again: the image after records written at start-up."""
        self.wal.close()
        self.wal = WAL(self.cfg.data_dir, wal_dir=self.cfg.wal_dir,
                       segment_bytes=wal_segment_bytes())
        return self.wal.open()

    def _finish_pending_install(self, image):
        """A snapshot restored into the store just before a crash, not yet in the WAL: write its
        INSTALL record now (the store's restore txn saved its metadata for this)."""
        with self.engine.env.begin() as txn:
            raw = txn.get(PENDING_INSTALL_KEY, db=self.engine.db("kvmeta"))
        if raw is None:
            return image
        meta = unpack_snap_meta(raw)
        if meta.index > image.meta.index:
            seq, _ = self.wal.append(INSTALL, meta)
            self.wal.wait_synced(seq)
            log.info("completed the installation of the snapshot at index %d", meta.index)
            image = self._reopen_wal()
        self.committer.run_sync(
            lambda txn: txn.delete(PENDING_INSTALL_KEY, db=self.engine.db("kvmeta")))
        return image

    def _check_state_vs_log(self):
        """The log is compacted only up to a durably applied index, so a store applied below
        the compaction point is a damaged data dir. A store's LMDB commit waits for the WAL
        records of what it applied (_apply_ready), so a store applied beyond the log's end is
        one too, but for one case: after installing a leader's snapshot whose image was newer
        than its index (the entries in between arrive again and are skipped by the store), the
        store stays at the image's applied index (INSTALLED_APPLIED_KEY) until the log passes
        it; the core restarts from the log's end then. Anything else means entries the store
        applied are missing from the WAL (a damaged, cut or replaced log): starting would give
        new entries indexes the store has applied, and skip them. It also restarts no later
        than the stored conf state's index (CONF_INDEX_KEY), so conf changes the store skipped
        are replayed into the member table."""
        applied = self.kv.applied_index
        lo, hi = self.raftlog.first_index() - 1, self.raftlog.last_index()
        if applied < lo:
            raise DataDirStateError(
                f"{self.cfg.data_dir}: the store is applied to index {applied} but the WAL "
                f"holds only the log after index {lo}; refusing to start on an inconsistent "
                f"data dir ({RESTORE_FROM_PEERS})")
        with self.engine.env.begin() as txn:
            kvmeta = self.engine.db("kvmeta")
            raw = txn.get(CONF_INDEX_KEY, db=kvmeta)
            installed = txn.get(INSTALLED_APPLIED_KEY, db=kvmeta)
        if applied > hi and (installed is None or int.from_bytes(installed, "big") != applied):
            raise DataDirStateError(
                f"{self.cfg.data_dir}: the store is applied to index {applied} but the WAL in "
                f"{self.wal.dir} ends at index {hi}: entries the store applied are missing from "
                f"the log (a damaged, cut or replaced WAL); refusing to start, since new "
                f"entries would take indexes the store has already applied "
                f"({RESTORE_FROM_PEERS})")
        conf_index = int.from_bytes(raw, "big") if raw is not None else applied
        self._restart_applied = max(lo, min(applied, hi, conf_index))
        hs = self.raftlog.hard_state
        if hs.commit < self._restart_applied:
            self.raftlog.set_volatile_hard_state(
                HardState(hs.term, hs.vote, self._restart_applied))

    def _force_new_cluster(self, image):
        """--force-new-cluster on an existing data dir (etcd's restartAsStandaloneNode): commit
        the whole log (etcd drops what it never knew committed: see raftkv/server/forcenew.py
        for why raftkv keeps it) and append committed conf changes that leave this member the
        only voter. They are applied at start like any conf change, so the member table and
        the stored conf state record the removals. Returns the WAL image after the rewrite."""
        self._load_identity()  # this data dir's member ID (open_membership reads it again)
        self._load_members()
        urls = split_list(self.cfg.initial_advertise_peer_urls)
        plan = forcenew.plan(image.meta, image.entries, image.hard_state, self.kv.applied_index,
                             self.id, stored_conf=self.logstore.initial_state()[1],
                             known_ids=self.members,
                             self_context=forcenew.member_context(self.cfg.name, urls))
        if plan.entries or plan.install is not None:
            log.warning("--force-new-cluster: forcing a new 1-member cluster from the data dir "
                        "of member %x (cluster %x): its whole log is kept and committed, to "
                        "index %d (%d entries it had not seen committed are committed now) and "
                        "member(s) %s are removed; the removed members must never run on their "
                        "old data again: add members back with `member add` and empty data "
                        "dirs (--initial-cluster-state existing)", self.id, self.cluster_id,
                        plan.commit, plan.adopted,
                        ", ".join(f"{mid:x}" for mid in plan.removed) or "none")
        else:
            log.info("--force-new-cluster: this member is already the only voter; nothing to "
                     "rewrite%s", f" but its commit index ({plan.commit}, {plan.adopted} entries "
                     "on)" if plan.changed else "")
        # Neither dialed nor let in from now on (the durable marks come with the apply).
        self.removed.update(plan.removed)
        self._forced = True
        if not plan.changed:
            return image
        if plan.install is not None:
            self.wal.append(INSTALL, plan.install)
        if plan.entries:
            self.wal.append(ENTRIES, plan.entries, max_index=plan.entries[-1].index)
        seq, _ = self.wal.append(HARD_STATE, plan.hard_state)
        self.wal.wait_synced(seq)
        image = self._reopen_wal()
        assert image.hard_state == plan.hard_state, (image.hard_state, plan.hard_state)
        assert image.meta.index + len(image.entries) == plan.hard_state.commit, image.meta
        return image

    def _load_removed(self):
        for mid, _ in self._meta_ids(REMOVED_KEY_PREFIX):
            self.removed.add(mid)

    def _meta_ids(self, prefix):
        """[(member ID, value)] of the kvmeta records whose keys are prefix + an 8-byte ID."""
        out = []
        with self.engine.env.begin() as txn:
            cur = txn.cursor(db=self.engine.db("kvmeta"))
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out.append((int.from_bytes(key[len(prefix):], "big"), value))
        return out

    def _load_members(self):
        for mid, value in self._meta_ids(MEMBER_KEY_PREFIX):
            self.members[mid] = msgpack.unpackb(value)

    def new_node(self):
        rc = Config(self.id, self.raftlog, random.Random(),
                    election_ticks=self.cfg.election_ticks, heartbeat_ticks=1,
                    applied=self._restart_applied, check_quorum=True,
                    pre_vote=self.cfg.pre_vote,
                    msg_bytes_max=1 << 20, inflight_msgs_max=256,
                    uncommitted_bytes_max=256 << 20)
        return RawNode(rc)

    async def start(self):
        self._event_loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.open_storage()
        self.open_membership()
        self.record_pids()
        node = self.new_node()
        if not self.cfg.pre_vote:
            log.info("Raft pre-vote off (--pre-vote=false): a candidate raises its term at once")
        self.loop = RaftLoop(node, self.id, io=self._io, send=self._send, tick_s=self.cfg.tick_s,
                             on_conf_change=self._on_conf_change, on_tick=self._on_tick)
        self.loop.conf_state = node.raft.conf_state()
        self.loop.on_soft_state = self._on_soft_state
        self.loop.flush = self.committer.kick
        # Dials leave from the host of this member's first advertised peer URL.
        bind_host, _ = first_host_port(self.cfg.initial_advertise_peer_urls)
        _, peer_in, peer_out = self.cfg.tls_contexts()
        self.transport = PeerTransport(
            self.id, self.cfg.initial_cluster_token, self._peer_addrs(), bind_host,
            on_message=self.loop.step, on_forward=self._on_forward,
            snapshot_source=lambda: mvcc_snapshot.export_chunks(self.kv),
            run_export=self.engine.gate.run,
            on_snapshot_sent=self._on_snapshot_sent, spool_dir=self.cfg.data_dir,
            ssl_server=peer_in, ssl_client=peer_out,
            allowed_cn=self.cfg.peer_cert_allowed_cn or None,
            allowed_hostname=self.cfg.peer_cert_allowed_hostname or None,
            cert_check=self.cfg.cert_checks()[1],
            check_san=not self.cfg.experimental_peer_skip_client_san_verification)
        self.transport.set_peers(self._peer_addrs(), removed=self.removed)
        listen = [(u.host, u.port) for u in self.cfg.peer_listeners]
        self.peer_port = await self.transport.start(*listen[0], more=listen[1:])
        if self.cfg.experimental_initial_corrupt_check:
            await self._initial_corrupt_check()
        failpoints = os.environ.get("RAFTKV_FAILPOINT_DIR")
        if failpoints:  # tests only: cut this member off from the peers its file names
            partition_file = os.path.join(failpoints, f"{self.cfg.name}.partition")
            log.warning("partition failpoint enabled: %s", partition_file)
            self._tasks.append(asyncio.get_running_loop().create_task(
                self.transport.watch_partition_file(partition_file)))
        raft_task = asyncio.get_running_loop().create_task(self.loop.run())
        raft_task.add_done_callback(self._on_raft_loop_done)
        self._tasks.append(raft_task)
        self._tasks.append(asyncio.get_running_loop().create_task(
            self._advance_election_ticks()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._lease_loop()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._publish_loop()))
        if self.cfg.corrupt_check_s:
            self._tasks.append(asyncio.get_running_loop().create_task(
                corruptcheck.run(self, self.cfg.corrupt_check_s)))
        if self.cfg.auto_compaction:
            compactor = autocompact.Compactor(self.cfg.auto_compaction_mode,
                                              self.cfg.auto_compaction)
            self._tasks.append(asyncio.get_running_loop().create_task(
                autocompact.run(self, compactor)))
        self.started = True
        self._announce()

    async def _advance_election_ticks(self):
        """etcd's adjustTicks: a 1-member cluster fast-forwards its election clock to one tick
        before its timeout (it elects itself at once); with --initial-election-tick-advance, a
        member of a larger cluster does so to two ticks before, but only once more than one
        peer is connected (within TICK_ADVANCE_WAIT_S), so a leader that is up has a tick to
        reach it first."""
        ticks = self.cfg.election_ticks
        conf = self.loop.conf_state
        if conf is not None and list(conf.voters) == [self.id]:
            await self.loop.call(lambda node: _tick_n(node, ticks - 1))
            return
        if not self.cfg.initial_election_tick_advance:
            log.info("skipping the initial election tick advance (%d election ticks)", ticks)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TICK_ADVANCE_WAIT_S
        while loop.time() < deadline:
            await asyncio.sleep(TICK_ADVANCE_POLL_S)
            if self.loop.leader_id:
                return  # a leader was heard from: nothing to hurry
            if self.transport.active_peers() > 1:
                await self.loop.call(lambda node: _tick_n(node, ticks - 2))
                log.info("fast-forwarded the election clock %d ticks (peers connected)",
                         ticks - 2)
                return

    async def _initial_corrupt_check(self):
        """etcd's --experimental-initial-corrupt-check: with the peer transport up (the peers
        are asked over it) and before the Raft loop runs or any client listener opens
        (raftkv.api.serve opens them after start()); Raft messages that arrive meanwhile wait
        in the loop's inbox. A mismatch stops the member (InitialCheckError)."""
        try:
            await corruptcheck.check_initial(self, self.cfg.request_timeout)
        except BaseException:
            await self.stop()
            raise

    def _on_raft_loop_done(self, task):
        if self.stopping or task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, LogDivergedError):
            self._diverged_stop(exc)
        log.critical("the Raft loop stopped unexpectedly; exiting so a supervisor can restart "
                     "this member (its data dir is intact)", exc_info=exc)
        os._exit(3)

    def _diverged_stop(self, exc):
        """The leader's log lacks entries this member counted as committed (the core's
        LogDivergedError): a quorum lost them, so this member can neither follow that leader
        (it would drop entries its store applied) nor serve. It stops, its data dir as it was,
        with exit status 2 (a supervisor restarting it would meet the same leader)."""
        log.critical(
            "refusing to go on: %s. A quorum of the members lost committed entries, and "
            "with them writes that were acknowledged: their data dirs were damaged or replaced "
            "(an older data.mdb, a cut WAL, a disk that lost synced writes) and they elected "
            "leader %x without them. This member's data dir %s is intact and holds those "
            "writes. Either keep the cluster as it is now: %s; or keep this member's data: "
            "stop every member, start this one alone with --force-new-cluster, and add the "
            "others back with empty data dirs", exc, exc.leader,
            os.path.abspath(self.cfg.data_dir), RESTORE_FROM_PEERS)
        os._exit(2)

    def _announce(self, voters=None):
        # After --force-new-cluster the removals are committed but not applied yet: announce
        # the cluster they make.
        if voters is None:
            voters = [self.id] if self._forced else self.conf.voters
        if not voters:
            # A new data dir on an existing --wal-dir: the members are in the log being
            # replayed; _on_conf_change announces them when the first conf change applies.
            self._announce_pending = True
            log.info("member %s (%x) of cluster %x: the members are not known until the log "
                     "replays; data dir %s", self.cfg.name, self.id, self.cluster_id,
                     os.path.abspath(self.cfg.data_dir))
            return
        self._announce_pending = False
        log.info("member %s (%x) of cluster %x: %d voter(s), quorum %d, tolerates %d "
                 "failure(s); data dir %s%s", self.cfg.name, self.id, self.cluster_id,
                 len(voters), len(voters) // 2 + 1, fault_tolerance(voters),
                 os.path.abspath(self.cfg.data_dir),
                 f", WAL in {os.path.abspath(self.cfg.wal_dir)}" if self.cfg.wal_dir else "")
        warning = cluster_warning(voters)
        if warning:
            log.warning("%s", warning)

    async def stop(self):
        if self.stopping:
            return
        self.stopping = True
        if self.loop is not None:
            self.loop.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            await self.transport.close()
        await asyncio.get_running_loop().run_in_executor(None, self.close_storage)

    def close_storage(self):
        """Close what open_storage opened (blocking: the committer's last round, the WAL)."""
        if self.committer is not None:
            self.committer.close()
        if self.wal is not None:
            self.wal.close()
        if self.engine is not None:
            self.engine.close()
        self._release_locks()

    def _peer_addrs(self):
        out = {}
        for mid, info in self.members.items():
            if info.get("peer_urls"):
                out[mid] = [host_port(u) for u in info["peer_urls"]]
        initial = self.cfg.cluster_members()
        for name, mid in self.cfg.member_ids().items():
            # our own name is skipped: after a member update of our peer URLs, --initial-cluster
            # may list our new URL, whose derived ID is not ours (see _load_identity)
            if mid not in out and name != self.cfg.name:
                out[mid] = [host_port(u) for u in initial[name]]
        for mid in self.removed:  # removed members stay out, whatever --initial-cluster says
            out.pop(mid, None)
        return out

    # ------------------------------------------------------------------ Ready I/O
    def _io(self, rd, pipelined=False):
        """Start the Ready's writes now (each FIFO with every later one); returns (durable,
        applied), either None when there is nothing of that kind:

        durable: an awaitable that completes once the Ready's entries, hard state and snapshot
            are durable (the WAL, or for a snapshot the store and then the WAL); RaftLoop sends
            the Ready's messages after it.
        applied: a future of (results, conf changes) that completes once the store's LMDB
            round holding the Ready's applies has committed (readers see them then). Responses
            to clients are released earlier, as soon as the apply computed them.
        """
        loop = asyncio.get_running_loop()
        if rd.snapshot is not None:
            durable = loop.create_task(self._install_then_save(rd))
            return durable, loop.create_task(self._apply_after(durable, rd))
        durable = None
        if rd.entries or (rd.hard_state is not None and not pipelined):
            front = self.front_calls
            inline = self._wal_inline and (front is None or not front.n)
            if inline and rd.early_messages:
                # A leader's appends were just queued to the peer senders: let them reach the
                # sockets (one loop turn) before this thread blocks in the sync.
                durable = loop.create_task(self._write_after_yield(rd))
            elif inline:
                # The loop waits for this record anyway: write and sync it here (GIL released
                # in the syscalls) instead of handing it to the WAL thread and back.
                self._write_inline(rd)
            else:
                durable = self.raftlog.save(rd.entries, rd.hard_state, loop)
                durable.add_done_callback(self._io_failed)
        elif rd.hard_state is not None:
            self.raftlog.set_volatile_hard_state(rd.hard_state)  # only the commit index moved
        applied = None
        if rd.committed_entries:
            # Watch events are delivered when the round commits: with watchers, no lingering.
            lazy = not len(self.kv.hub) and \
                not any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
            applied = self._submit_apply(rd, lazy)
        return durable, applied

    async def _install_then_save(self, rd):
        await self._install_snapshot(rd.snapshot)
        fut = self.raftlog.save(rd.entries, rd.hard_state, asyncio.get_running_loop())
        if fut is not None:
            fut.add_done_callback(self._io_failed)
            await fut

    async def _apply_after(self, durable, rd):
        await durable
        if not rd.committed_entries:
            return [], []
        return await self._submit_apply(rd, False)

    def _submit_apply(self, rd, lazy):
        loop = asyncio.get_running_loop()
        seq = self.raftlog.last_seq()
        fut = self.committer.submit_nowait(lambda txn: self._apply_ready(txn, rd, loop, seq),
                                           lazy=lazy, inline=True)
        fut.add_done_callback(self._io_failed)
        return fut

    def _write_inline(self, rd):
        try:
            self.raftlog.save(rd.entries, rd.hard_state, now=True)
        except WalError as exc:
            self._fail_stop(exc)  # at once: the Ready loop must not send what depends on it

    async def _write_after_yield(self, rd):
        await asyncio.sleep(0)
        self._write_inline(rd)

    def _io_failed(self, fut):
        if fut.cancelled() or fut.exception() is None:
            return
        self._fail_stop(fut.exception())

    def _fail_stop(self, exc):
        self.kv.aborted()
        log.critical("could not make a Ready durable; stopping this member (its data dir %s "
                     "is intact up to the last successful write)", self.cfg.data_dir,
                     exc_info=exc)
        os._exit(2)

    def _apply_ready(self, txn, rd, loop, wal_seq):
        """In the storage thread: apply the Ready's committed entries inside the round's LMDB
        write txn.

        Client responses are released as soon as they are computed, before this txn's sync:
        committed entries are already durable on a quorum's logs, and after a crash the same
        entries are re-applied from the log with the same results (the applied index is in the
        txn). Reads wait for applied_index, which moves only after the commit. The commit
        waits until the WAL has synced record wal_seq (the Ready's own entries and everything
        before), so the store never holds state the log lacks.
        """
        results, ccs = [], []
        warn_s = self.cfg.warning_apply_s
        for e in rd.committed_entries:
            started = time.perf_counter()
            if e.type == EntryType.CONF_CHANGE:
                cc = decode_conf_change(e.data)
                self.kv.apply(txn, e.index, [])
                # Also when the store had applied it already: after a snapshot whose image is
                # newer than its index, the entries in between are re-delivered, and replaying
                # them in order from the snapshot's conf state ends at the image's conf state.
                self._apply_member_change(txn, cc)
                ccs.append(cc)
            else:
                results.extend(self._apply_normal(txn, e))
            took = time.perf_counter() - started
            if took > warn_s:
                _warn_slow_apply(e, took, warn_s)
        if rd.committed_entries:  # every conf change up to here went through the member table
            txn.put(CONF_INDEX_KEY, rd.committed_entries[-1].index.to_bytes(8, "big"),
                    db=self.engine.db("kvmeta"))
        self._maybe_compact_log(txn, rd, loop)
        if results and threading.get_ident() == self._loop_thread:
            self.loop.resolve_results(results)  # run inline in a lent round (submit_nowait)
        elif results:
            loop.call_soon_threadsafe(self.loop.resolve_results, results)
        # Publish the applied state right after this txn commits, in the storage thread and
        # before the next round runs (a later round's apply must not be published with it).
        if not after_commit(txn, self.kv.committed):
            raise AssertionError("_apply_ready must run inside a GroupCommitter round")
        before_commit(txn, lambda: self.wal.wait_synced(wal_seq))
        return [], ccs

    def _apply_normal(self, txn, e):
        reqs = decode_batch(e.data)
        rids = [_rid(req) for req in reqs]
        todo, cached, spans = [], {}, []
        for i, req in enumerate(reqs):
            if rids[i] is not None and rids[i] in self.dedup:
                cached[i] = self.dedup[rids[i]]  # a retried write: answer, do not apply again
                spans.append(None)
            elif req[2] == "batch":  # a bulk request: many writes, one proposal
                ops = [(op, body) for op, body in (req[3].get("ops") or [])]
                spans.append((len(todo), len(ops), True))
                todo.extend(ops)
            else:
                spans.append((len(todo), 1, False))
                todo.append((req[2], req[3]))
        out = self.kv.apply(txn, e.index, todo)
        if out is None:
            return []  # applied before a restart: no futures wait for it
        results = []
        for i, req in enumerate(reqs):
            if spans[i] is None:
                resp = cached[i]
            else:
                start, n, many = spans[i]
                resp = out[start:start + n] if many else out[start]
                if rids[i] is not None:
                    self._remember(txn, rids[i], resp)
            results.append((req[0], req[1], resp))
        return results

    def _remember(self, txn, rid, resp):
        """Note a request id's response, in memory and in the apply's txn (sub-db "dedup":
        packed rid -> [seq, response]; "dedup_order": seq -> packed rid, for eviction), so a
        retry is answered, not applied again, also after every member restarted."""
        self.dedup[rid] = resp
        self._dedup_seq += 1
        key = msgpack.packb(rid)
        order = self.engine.db(DEDUP_ORDER_DB)
        txn.put(key, msgpack.packb([self._dedup_seq, _pack_resp(resp)]),
                db=self.engine.db(DEDUP_DB))
        txn.put(self._dedup_seq.to_bytes(8, "big"), key, db=order)
        if len(self.dedup) > DEDUP_REQUESTS_MAX:
            self.dedup.popitem(last=False)
            cur = txn.cursor(db=order)
            if cur.first():
                txn.delete(cur.value(), db=self.engine.db(DEDUP_DB))
                cur.delete()

    def _load_dedup(self):
        """The remembered request ids, oldest first (after a start or a snapshot install)."""
        self.dedup = collections.OrderedDict()
        self._dedup_seq = 0
        table, order = self.engine.db(DEDUP_DB), self.engine.db(DEDUP_ORDER_DB)
        with self.engine.env.begin() as txn:
            for seq_key, key in txn.cursor(db=order):
                raw = txn.get(key, db=table)
                if raw is None:
                    continue
                _, resp = msgpack.unpackb(raw)
                self.dedup[_hashable(msgpack.unpackb(key))] = _unpack_resp(resp)
                self._dedup_seq = int.from_bytes(seq_key, "big")

    def _apply_member_change(self, txn, cc):
        meta = self.engine.db("kvmeta")
        info = {}
        if cc.context:
            try:
                info = msgpack.unpackb(cc.context)
            except (ValueError, msgpack.UnpackException):
                info = {}
        cid = info.pop("cluster_id", None) if isinstance(info, dict) else None
        if isinstance(cid, int) and txn.get(CLUSTER_ID_KEY, db=meta) is None:
            txn.put(CLUSTER_ID_KEY, cid.to_bytes(8, "big"), db=meta)
            # Before the commit: a store with the cluster's ID always comes with an identity
            # file that has it too (_check_identity_vs_store).
            before_commit(txn, lambda: self._adopt_cluster_id(cid))
        voters, learners = set(self.conf.voters), set(self.conf.learners)
        for ch in cc.changes:
            key = MEMBER_KEY_PREFIX + ch.node_id.to_bytes(8, "big")
            removed_key = REMOVED_KEY_PREFIX + ch.node_id.to_bytes(8, "big")
            if ch.type == ConfChangeType.REMOVE_NODE:
                voters.discard(ch.node_id)
                learners.discard(ch.node_id)
                txn.delete(key, db=meta)
                self.members.pop(ch.node_id, None)
                txn.put(removed_key, b"", db=meta)
                # rebound, not changed in place: the event loop may be reading the old set
                self.removed = self.removed | {ch.node_id}
                continue
            txn.delete(removed_key, db=meta)  # re-added (the same peer URL gives the same ID)
            self.removed = self.removed - {ch.node_id}
            learner = ch.type == ConfChangeType.ADD_LEARNER_NODE and ch.node_id not in voters
            (learners if learner else voters).add(ch.node_id)
            if not learner:
                learners.discard(ch.node_id)
            rec = dict(self.members.get(ch.node_id, {}))
            rec.update({k: v for k, v in info.items() if v})
            rec["is_learner"] = learner
            self.members[ch.node_id] = rec
            txn.put(key, msgpack.packb(rec), db=meta)
        self.conf = ConfState(voters=sorted(voters), learners=sorted(learners))
        self.logstore.set_conf_state(txn, self.conf)

    def _op_member_publish(self, w, body):
        """A member's name, client URLs and native URLs, published through the log once it
        runs (as etcd publishes its attributes), so member list shows them on every member.
        nativeURLs is raftkv's own and optional: a member of an earlier version publishes
        none, and its record then has none (its native port is unknown); a record stored
        without the field loads as one without native URLs."""
        mid = body.get("ID", 0)
        rec = self.members.get(mid)
        if rec is None:
            raise RaftkvError("MEMBER_NOT_FOUND")
        rec = dict(rec, name=str(body.get("name", "")),
                   client_urls=[str(u) for u in body.get("clientURLs", [])])
        rec.pop("native_urls", None)
        if body.get("nativeURLs"):
            rec["native_urls"] = [str(u) for u in body["nativeURLs"]]
        self.members[mid] = rec
        w.txn.put(MEMBER_KEY_PREFIX + mid.to_bytes(8, "big"), msgpack.packb(rec),
                  db=self.engine.db("kvmeta"))
        return {"header": {}}

    def open_membership(self):
        """After open_storage, before the Raft node: the member update op (applied in log
        order like member_publish) and this data dir's identity."""
        self.kv.register_op(MEMBER_UPDATE_OP, self._op_member_update_peers)
        found = self._load_identity()
        with self.engine.env.begin() as txn:
            raw = txn.get(CLUSTER_ID_KEY, db=self.engine.db("kvmeta"))
        self._check_identity_vs_store(None if raw is None else int.from_bytes(raw, "big"),
                                      found)
        if not found and self.kv.applied_index > 0:
            # Safe to rebuild: the IDs derive from the flags as at the data dir's first start,
            # and _check_identity_vs_store above refused them if the store's cluster ID or
            # member table says they are another cluster's or another member's. (The data dir
            # had its WAL record: _check_unrecorded_wal refuses when both files are lost.)
            log.warning("%s: %s is missing; member ID %x and cluster ID %x derived from "
                        "--initial-cluster, which the store's cluster ID and member table do not "
                        "contradict: writing them to it",
                        self.cfg.data_dir, IDENTITY_FILE, self.id, self.cluster_id)
        if not found:
            self._save_identity()
        if raw is not None:
            self._adopt_cluster_id(int.from_bytes(raw, "big"))

    def _check_identity_vs_store(self, store_cid, found):
        """member-identity.json and the store must be the same member's. A store of another
        cluster, or an identity file of another cluster, was refused by nothing: the member
        adopted the store's cluster ID (or ran under a foreign member ID) and replayed this
        WAL onto another cluster's state, or waited for a leader for ever. An identity file of
        another member of this cluster made two processes one Raft member. (The cluster IDs
        may differ legitimately only for a member added later that got the cluster's state
        from a snapshot, until this start adopts the store's ID; the store then lists the
        member, since the leader's image holds its addition.)"""
        path = os.path.join(self.cfg.data_dir, IDENTITY_FILE)
        says = f"{path} says" if found else f"{path} is missing, and --initial-cluster derives"
        advice = ("put back this member's own files (with the member stopped), or remove it "
                  "from the cluster and add it back with an empty data dir")
        known = set(self.members) | set(self.removed)
        if store_cid is not None and store_cid != self.cluster_id and self.id not in known:
            raise DataDirStateError(
                f"{self.cfg.data_dir}: the store ({DATA_FILE}) is of cluster {store_cid:x} and "
                f"knows no member {self.id:x}, but {says} member {self.id:x} of cluster "
                f"{self.cluster_id:x}: one of them is another cluster's; refusing to start "
                f"({advice})")
        mine = sorted(split_list(self.cfg.initial_advertise_peer_urls))
        own = self.members.get(self.id, {}).get("peer_urls")
        if own is not None and sorted(own) == mine:
            return
        for mid, rec in self.members.items():
            if mid != self.id and mid not in self.removed and \
                    sorted(rec.get("peer_urls") or ()) == mine:
                raise DataDirStateError(
                    f"{self.cfg.data_dir}: {says} member {self.id:x}, but the store records "
                    f"this member's peer URLs ({', '.join(mine)}) as member {mid:x}'s: the "
                    f"member ID is another member's; refusing to start, two processes would "
                    f"be one Raft member ({advice})")

    def _adopt_cluster_id(self, cid):
        """The cluster's ID as its founding members derived it (replicated in the bootstrap
        entries): a member added later derives another one from its own --initial-cluster
        and takes this one as soon as it has applied those entries (or a snapshot)."""
        if cid == self.cluster_id:
            return
        log.info("cluster ID is %x (derived here: %x)", cid, self.cluster_id)
        self.cluster_id = cid
        self._save_identity()

    def _load_identity(self):
        """This member's and its cluster's IDs are derived from --initial-cluster at the data
        dir's first start only, then kept in the data dir (etcd keeps them in its WAL
        metadata): a member restarted after `member update` changed its peer URLs, with
        --initial-cluster listing the new URL, keeps its ID. Returns whether the file was
        there (False: the IDs derived from the flags stand; open_membership saves them)."""
        path = os.path.join(self.cfg.data_dir, IDENTITY_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                ident = json.load(f)
        except FileNotFoundError:
            ident = None
        except ValueError as exc:  # not JSON (or not UTF-8)
            raise DataDirStateError(f"{path} is damaged ({exc}); refusing to start without "
                                    f"this member's ID") from None
        if ident is not None:
            try:
                self.id, self.cluster_id = int(ident["member_id"]), int(ident["cluster_id"])
            except (KeyError, TypeError, ValueError):
                raise DataDirStateError(f"{path} is damaged ({ident!r}); refusing to start "
                                        f"without this member's ID") from None
            if self.id != self.cfg.member_ids().get(self.cfg.name):
                log.info("member ID %x from %s (--initial-cluster derives another one from "
                         "this member's peer URLs: they were updated)", self.id, path)
            return True
        return False  # open_membership saves the derived IDs once they pass its checks

    def _save_identity(self):
        body = json.dumps({"member_id": self.id, "cluster_id": self.cluster_id})
        with writable(f"write the member's identity file {IDENTITY_FILE}"):
            write_file_durably(os.path.join(self.cfg.data_dir, IDENTITY_FILE),
                               body.encode("utf-8"))

    def _op_member_update_peers(self, w, body):
        """etcd's MemberUpdate (a ConfChangeUpdateNode there), applied by every member in log
        order: the member's peer URLs change, checked as etcd's ValidateConfigurationChange
        does; the peer transport then dials the new address."""
        mid = body.get("ID", 0)
        rec = self.members.get(mid)
        if rec is None:
            raise RaftkvError("MEMBER_NOT_FOUND")
        urls = [str(u) for u in body.get("peerURLs") or []]
        for other, info in self.members.items():
            if other != mid and set(info.get("peer_urls", ())) & set(urls):
                raise RaftkvError("PEER_URL_EXIST")
        rec = dict(rec, peer_urls=urls)
        self.members[mid] = rec
        w.txn.put(MEMBER_KEY_PREFIX + mid.to_bytes(8, "big"), msgpack.packb(rec),
                  db=self.engine.db("kvmeta"))
        if self._event_loop is not None:  # applied in the storage thread
            self._event_loop.call_soon_threadsafe(self._peer_urls_changed)
        log.info("member %x now has peer URLs %s", mid, ",".join(urls))
        return {"header": {}}

    def _peer_urls_changed(self):
        if self.transport is not None and not self.stopping:
            self.transport.set_peers(self._peer_addrs(), removed=self.removed)

    async def _publish_loop(self):
        """Publish our name, client URLs and native URLs until the cluster has them (at
        every start, so a member restarted on other URLs publishes the new ones, as etcd)."""
        want_urls = split_list(self.cfg.advertise_client_urls)
        want_native = split_list(self.cfg.advertise_native_urls)
        while True:
            rec = self.members.get(self.id, {})
            if rec.get("name") == self.cfg.name and rec.get("client_urls") == want_urls and \
                    rec.get("native_urls", []) == want_native:
                return
            if self.loop.leader_id:
                body = {"ID": self.id, "name": self.cfg.name, "clientURLs": want_urls,
                        "nativeURLs": want_native}
                try:
                    await self.loop.propose("member_publish", body, 256, 5.0)
                except RaftkvError as exc:
                    log.debug("publishing member attributes: %s", exc)
            await asyncio.sleep(0.5)

    def _maybe_compact_log(self, txn, rd, loop):
        """Every --snapshot-count applied entries (or SNAPSHOT_POINT_BYTES of entry payload,
        since the log is held in memory), note a snapshot point (index, term, conf state as of
        that index); once --snapshot-catchup-entries more entries (or LOG_CATCHUP_BYTES) are
        applied, make it the log's compaction point, which drops the log up to it. The delay
        keeps that much log for followers a little behind. The compaction runs on the event
        loop once this txn has committed (the log is never compacted past a durably applied
        index)."""
        if not rd.committed_entries:
            return
        self._applied_bytes += sum(len(e.data) for e in rd.committed_entries)
        last = rd.committed_entries[-1]
        if last.index - self._snapshot_point_index >= self.cfg.snapshot_count or \
                self._applied_bytes - self._snapshot_point_bytes >= self._point_bytes:
            conf = ConfState(voters=list(self.conf.voters), learners=list(self.conf.learners))
            self._snapshot_points.append(
                (SnapshotMetadata(conf_state=conf, index=last.index, term=last.term),
                 self._applied_bytes))
            self._snapshot_point_index = last.index
            self._snapshot_point_bytes = self._applied_bytes
        due = None
        while self._snapshot_points:
            point, at_bytes = self._snapshot_points[0]
            if last.index - point.index < self.cfg.snapshot_catchup_entries and \
                    self._applied_bytes - at_bytes < self._catchup_bytes:
                break
            due = point
            self._snapshot_points.popleft()
        if due is not None and due.index > self._snapshot_index:
            self._snapshot_index = due.index
            after_commit(txn, lambda: loop.call_soon_threadsafe(self._compact_log, due))

    def _compact_log(self, meta):
        if self.raftlog.compact_to(meta):
            log.info("compacted the Raft log up to index %d", meta.index)

    async def _install_snapshot(self, snap):
        """Restore the store from the leader's image (one LMDB txn, which also notes the
        snapshot's metadata as pending), then restart the log after it (the WAL's INSTALL
        record). A crash in between is completed at the next start (_finish_pending_install)."""
        data = snap.data or b""
        if not data.startswith(b"file:"):
            raise RaftkvError("INTERNAL", "raftkv: snapshot without its state image")
        path = data[5:].decode()
        loop = asyncio.get_running_loop()
        meta = snap.metadata

        def note_pending(txn):
            kvmeta = self.engine.db("kvmeta")  # now: an online defrag may have reopened it
            txn.put(PENDING_INSTALL_KEY, pack_snap_meta(meta), db=kvmeta)
            txn.put(CONF_INDEX_KEY, meta.index.to_bytes(8, "big"), db=kvmeta)
            txn.put(INSTALLED_APPLIED_KEY, self.kv.applied_in(txn).to_bytes(8, "big"),
                    db=kvmeta)
            self.logstore.set_conf_state(txn, meta.conf_state)  # read at the next start only

        try:
            await self.engine.gate.run(  # a writer outside the storage thread: gated too
                mvcc_snapshot.restore_chunks, self.kv, read_spooled_chunks(path), note_pending)
            self.kv.aborted()  # reload the in-memory state from the restored sub-dbs
            self.members = {}
            self._load_members()
            self.removed = set()
            self._load_removed()
            self._load_dedup()
            self.conf = meta.conf_state
            await self.raftlog.install(meta, loop)
            await self.committer.submit(
                lambda txn: txn.delete(PENDING_INSTALL_KEY, db=self.engine.db("kvmeta")))
            self._snapshot_index = self._snapshot_point_index = meta.index
            self._snapshot_points.clear()  # older than the installed snapshot
            if self.transport is not None:
                self.transport.set_peers(self._peer_addrs(), removed=self.removed)
            log.info("installed a snapshot at index %d (state applied to %d)", meta.index,
                     self.kv.applied_index)
        finally:
            os.unlink(path)

    def _send(self, messages):
        self.transport.send(messages)

    def _on_snapshot_sent(self, peer_id, ok):
        try:
            self.loop.call(lambda node: node.report_snapshot(peer_id, ok))
        except RaftkvError:
            pass

    def _on_conf_change(self, cc, conf_state):
        self.transport.set_peers(self._peer_addrs(), removed=self.removed)
        if self._announce_pending and conf_state.voters and not self._announce_scheduled:
            # Once the Ready's other conf changes are applied too: the first one alone (the
            # bootstrap's first member) made a 3-member cluster's announcement say "1 voter(s),
            # tolerates 0 failure(s)" and warn that such a cluster tolerates no failure.
            self._announce_scheduled = True
            asyncio.get_running_loop().call_soon(self._announce_replayed)
        if self.id not in conf_state.voters and self.id not in conf_state.learners and \
                any(ch.node_id == self.id and ch.type == ConfChangeType.REMOVE_NODE
                    for ch in cc.changes):
            log.warning("this member was removed from the cluster; stopping")
            asyncio.get_running_loop().call_later(1.0, os._exit, 0)

    def _announce_replayed(self):
        self._announce_scheduled = False
        voters = self.loop.conf_state.voters if self.loop.conf_state is not None else []
        if self._announce_pending and voters:
            self._announce(list(voters))

    def _on_soft_state(self, ss):
        if ss.role == Role.LEADER:
            self.lessor.promote()
        else:
            self.lessor.demote()

    def _on_tick(self):
        for pid in self.transport.take_unreachable():
            self.loop.call(lambda node, pid=pid: node.report_unreachable(pid))
        self._watch_leaderless(time.monotonic())

    def _watch_leaderless(self, now):
        """While this member knows no leader, say so every NO_LEADER_WARN_S, with what it
        knows of the Raft state and its peer links (what an operator needs to tell a lost
        quorum from a member that cannot reach, or is not reached by, the others)."""
        if self.loop.leader_id:
            self._leaderless_since = None
            return
        if self._leaderless_since is None:
            self._leaderless_since = self._leaderless_warned = now
            return
        if now - self._leaderless_warned < NO_LEADER_WARN_S:
            return
        self._leaderless_warned = now
        st = self.loop.node.status()
        log.warning("no leader for %.0fs: term %d, role %s, commit %d, applied %d, last index "
                    "%d; peer links: %s", now - self._leaderless_since, st["term"], st["role"],
                    st["commit"], st["applied"], st["last_index"], self.transport.describe())

    # ------------------------------------------------------------------ leases
    def _make_lessor(self):
        """The store tells its lease listeners from the storage thread (after each commit);
        the lessor is used by the event loop, so its updates hop onto the loop.
        --experimental-enable-lease-checkpoint: the leader records each long lease's remaining
        TTL every checkpoint interval (etcd's 5 minutes; tests shorten it with
        RAFTKV_LEASE_CHECKPOINT_INTERVAL_S). The checkpointer is there either way: a renew
        clears a remaining TTL checkpointed earlier (e.g. before a restart without the flag)."""
        loop = self._event_loop
        interval = float(os.environ.get("RAFTKV_LEASE_CHECKPOINT_INTERVAL_S",
                                        CHECKPOINT_INTERVAL_S)) \
            if self.cfg.experimental_enable_lease_checkpoint else 0.0
        return Lessor(self.kv, call=loop.call_soon_threadsafe if loop else None,
                      checkpoint_interval=interval, checkpointer=self._propose_lease_checkpoints)

    async def _lease_loop(self):
        """The leader revokes expired leases through the log, like any write, and (with
        --experimental-enable-lease-checkpoint) records the due lease checkpoints there: at
        most CHECKPOINT_RATE a second, CHECKPOINT_BATCH_MAX per entry (etcd's lessor). Both
        are proposed fail_fast: a leader that lost its place meanwhile does not hold them for
        the next (whose lessor decides anew) but drops them, as before writes were held."""
        while True:
            await asyncio.sleep(LEASE_LOOP_S)
            if self.loop.role != Role.LEADER:
                continue
            for lid in self.lessor.expired(limit=100):
                fut = self.loop.propose("lease_revoke", {"ID": lid}, 32, 5.0, fail_fast=True)
                fut.add_done_callback(_ignore_result)
            for batch in self.lessor.checkpoint_batches(
                    rate=int(CHECKPOINT_RATE * LEASE_LOOP_S), batch=CHECKPOINT_BATCH_MAX):
                self._propose_lease_checkpoints(batch)

    def _propose_lease_checkpoints(self, checkpoints):
        """One lease_checkpoint entry (etcd's LeaseCheckpointRequest); applied by every
        member, it persists each lease's remaining TTL (0: cleared) for the next leader."""
        if self.loop is None or self.loop.role != Role.LEADER:
            return  # a new leader starts over from what the log holds
        fut = self.loop.propose("lease_checkpoint", {"checkpoints": checkpoints},
                                32 + 24 * len(checkpoints), 5.0, fail_fast=True)
        fut.add_done_callback(_ignore_result)

    async def _on_forward(self, op, body):
        """A request another member forwarded to us (we are, or were, the leader)."""
        handler = self.forward_handlers.get(op)
        if handler is not None:
            return await handler(body)
        if op == "hash_kv":
            # The corruption checks. Answered by the member itself, from its start on (before
            # its Raft loop runs), so that members starting together with
            # --experimental-initial-corrupt-check compare their data with each other.
            return await self.hash_kv(body.get("revision", 0))
        raise RaftkvError("UNKNOWN_OP", f"raftkv: {op!r} cannot be forwarded")

    def lessor_answer(self, op, body):
        """A keep-alive ({ID, TTL}) or a time-to-live from this member's lessor (the leader's
        is the one that counts), without a header; LEASE_NOT_FOUND for an unknown lease."""
        lid = body.get("ID", 0)
        if op == "lease_keepalive":
            return {"ID": lid, "TTL": self.lessor.renew(lid)}
        assert op == "lease_timetolive", op
        return self.lessor.time_to_live(lid, bool(body.get("keys")))

    async def hash_kv(self, revision=0):
        """etcd's HashKV over the "key" bucket this member's snapshot would hold
        (mvcc_snapshot.etcd_hash_kv: equal to etcd's hash for the same history), in a worker
        thread: the client's HashKV and the peers' corruption checks."""
        h, current, compact = await self.engine.gate.run(mvcc_snapshot.etcd_hash_kv, self.kv,
                                                         revision)
        return {"header": dict(self.header(), revision=current), "hash": h,
                "compact_revision": compact}

    async def defragment(self):
        """etcd's Maintenance.Defragment of this member's store (etcd 3.4's backend defrag):
        data.mdb is replaced by a compacted copy of itself, the same data in fewer pages.
        Returns raftkv/mvcc/defrag.py copy_compacted's figures; RaftkvError DEFRAG_FAILED
        when it cannot (disk full, a copy that differs, another process with the store open):
        the old file is then still in use and nothing changed. Defrags run one at a time; one
        goes on to its end when its caller goes away (a task of its own)."""
        task = asyncio.get_running_loop().create_task(self._defragment())
        self._defrag_tasks.add(task)
        task.add_done_callback(self._defrag_tasks.discard)
        task.add_done_callback(_ignore_result)  # its caller may be gone
        try:
            return await asyncio.shield(task)
        except (mvcc_defrag.DefragError, OSError, lmdb.Error, StorageError) as exc:
            raise RaftkvError("DEFRAG_FAILED", f"raftkv: defragment failed: {exc}") from None

    async def _defragment(self):
        """Worker threads shut out (StoreGate), then the storage thread parked after
        committing its open round, so nothing writes the store: the copy is written and
        checked in a thread of its own while the event loop goes on (Raft ticks, heartbeats,
        appends; reads from the old file, which does not change; applies queue in the
        committer), then swapped in on the loop, where nothing else reads the store
        meanwhile. The key index and leases in memory stay valid: the data is the same."""
        path = self.cfg.data_dir
        started = time.monotonic()
        log.info("defragmenting the store (%s %d bytes)", DATA_FILE,
                 self.kv.backend_bytes())
        async with self.engine.gate.exclusive():
            try:
                await self.committer.pause()
                info = await _thread_to_end(self._copy_store, path)
                self._swap_store(info.pop("copy"))
            finally:
                try:
                    aside = set_aside_defrag_scratch(path)
                finally:
                    self.committer.resume()
                # The scratch (the replaced file, or a copy that failed) is removed whether or
                # not the defrag succeeded; freeing its blocks waits for no write.
                if aside is not None:
                    start_thread(shutil.rmtree, (aside, True), "raftkv-defrag-cleanup")
        log.info("defragmented the store in %.3fs: %s %d -> %d bytes", time.monotonic() - started,
                 DATA_FILE, info["size_before"], info["size_after"])
        return info

    def _copy_store(self, path):
        hold_s = float(os.environ.get("RAFTKV_DEFRAG_HOLD_S", "0"))
        if hold_s > 0:  # tests: a defrag of a large store (writes wait, Raft goes on)
            time.sleep(hold_s)
        return mvcc_defrag.copy_compacted(self.engine, path)

    def _swap_store(self, copy):
        """On the event loop (nothing else uses the store meanwhile): close the environment,
        rename the checked copy over data.mdb, open it again. A refusal or a failed rename
        reopens the old file and is raised; a store that cannot be opened again stops the
        member (the data dir holds the old or the new file, each whole and checked)."""
        path, refused = self.cfg.data_dir, []

        def swap():
            try:
                mvcc_defrag.check_env_unused(path)
                mvcc_defrag.swap_in(path, copy)
            except Exception as exc:  # noqa: BLE001 -- raised once the old file is reopened
                refused.append(exc)
        try:
            self.engine.reopen(between=swap)
        except Exception as exc:  # noqa: BLE001 -- the member cannot go on without its store
            log.critical("defrag: could not open the store again after closing it; stopping "
                         "this member (its data dir %s holds the old or the new file, each "
                         "whole)", path, exc_info=exc)
            os._exit(2)
        if refused:
            raise refused[0]

    def header(self):
        return {"cluster_id": self.cluster_id, "member_id": self.id,
                "revision": self.kv.current_revision, "raft_term": self.loop.term}


def _warn_slow_apply(entry, took_s, expected_s):
    """etcd's "apply request took too long" (--experimental-warning-apply-duration), for one
    log entry: what it held (the ops of its requests) and how long its apply took."""
    if entry.type == EntryType.CONF_CHANGE:
        what = "a membership change"
    else:
        try:
            ops = collections.Counter(req[2] for req in decode_batch(entry.data))
            what = ", ".join(f"{n} {op}" for op, n in ops.most_common(5))
        except Exception:  # noqa: BLE001 -- only a log line: never fail the apply for it
            what = "undecodable requests"
        what = what or "no requests"
    log.warning("apply request took too long: %.1fms for log entry %d (%s); expected at most "
                "%.1fms (--experimental-warning-apply-duration)", took_s * 1000, entry.index,
                what, expected_s * 1000)


def _tick_n(node, n):
    """Fast-forward the node's clock n ticks (etcd's advanceTicks)."""
    for _ in range(n):
        node.tick()


def _pack_resp(resp):
    """A response as msgpack can store it (errors in their wire form under "__error__")."""
    if isinstance(resp, RaftkvError):
        return {"__error__": resp.to_wire()}
    if isinstance(resp, list):
        return [_pack_resp(r) for r in resp]
    return resp


def _unpack_resp(obj):
    if isinstance(obj, dict) and "__error__" in obj:
        return RaftkvError.from_wire(obj["__error__"])
    if isinstance(obj, list):
        return [_unpack_resp(r) for r in obj]
    return obj


def _rid(req):
    """The idempotency id of a request tuple (hashable), or None."""
    return _hashable(req[4] if len(req) > 4 else None)


def _hashable(rid):
    """An idempotency id as a dict key (msgpack gives lists for the [client, seq] form)."""
    return tuple(rid) if isinstance(rid, list) else rid


def _ignore_result(fut):
    if not fut.cancelled():
        fut.exception()


async def _thread_to_end(fn, *args):
    """fn(*args) in a thread of its own. If the awaiting task is cancelled, the thread is
    still waited for (blocking the loop) before the cancellation goes on: the caller's cleanup
    (the defrag's: resume the committer, remove the copy) must not run under it."""
    fut, thread = start_thread(fn, args, "raftkv-defrag")
    try:
        return await fut
    except asyncio.CancelledError:
        thread.join()
        raise
