"""Peer transport: Raft messages and forwarded requests between members over TCP.

Frames are a u32 big-endian length then a msgpack body. A connection starts with a hello
{"token", "from", "to"}; the listener rejects (and logs) a different cluster token or an unknown
member. One outbound connection per peer carries an ordered stream fed from a bounded queue;
on overflow the message is dropped and Raft is told the peer is unreachable (it retries). The
dialer binds its source address to this member's own peer host and reconnects with backoff.

Frame kinds after the hello:
    ["m", message]                       a Raft message (snapshot data travels separately)
    ["sb", message, image_id, count]     a MsgSnap offering a state-machine image of count chunks;
    ["sp", image_id, have]                  the receiver answers (on its own connection) how many
                                            chunks of that image it already holds, then gets
    ["sc", chunk]...; ["se"]                the rest: bounded memory (both sides spool to disk) and
                                            resumable (an interrupted transfer of the same image
                                            continues where it stopped)
    ["f", req_id, op, body]              a request forwarded to this member (e.g. to the leader)
    ["r", req_id, ok, payload]           the answer to a forwarded request

With https:// peer URLs both the listener and the dialer speak TLS (ssl_server, ssl_client).
`fault` is the test hook: fault(msg) returns "drop", a delay in seconds, or None.
`blocked` (a set of member IDs; see watch_partition_file) cuts this member off from those peers
as a network partition would: Raft messages to them are dropped, forwards to them time out, and
their connections to us are refused or closed.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import struct
import tempfile
import time

import msgpack

from raftkv.errors import RaftkvError
from raftkv.tls import common_name, der_of, matches_hostname, san_covers
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MsgType,
    Snapshot,
    SnapshotMetadata,
)

log = logging.getLogger("raftkv.peer")

_LEN = struct.Struct(">I")
PEER_FRAME_BYTES_MAX = 64 << 20
QUEUE_MSGS_MAX = 4096
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
FORWARD_TIMEOUT_S = 10.0
PARTITION_POLL_S = 0.05  # how often the partition failpoint's file is checked
SNAPSHOT_RESUME_WAIT_S = 10.0  # how long a sender waits for the answer to its offer


class PeerProtocolError(Exception):
    pass


# ---------------------------------------------------------------- message encoding
def encode_message(m):
    snap = None
    if m.snapshot is not None:
        md = m.snapshot.metadata
        snap = [md.index, md.term, md.conf_state.voters, md.conf_state.learners]
    return [int(m.type), m.to, m.frm, m.term, m.log_term, m.index,
            [[e.term, e.index, int(e.type), e.data] for e in m.entries],
            m.commit, snap, m.reject, m.reject_hint, m.context]


def _ints(*values):
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise TypeError(f"expected a non-negative int, got {v!r:.40}")


def _bytes(value):
    # bytes(int) would allocate that many zero bytes: only real byte strings are accepted.
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return value


def decode_message(obj):
    """A Message from its wire list; PeerProtocolError unless every field has its type (a
    field of the wrong type would otherwise fail deep inside the Raft loop and stop it)."""
    try:
        (typ, to, frm, term, log_term, index, ents, commit, snap, reject, hint,
         ctx) = obj
        _ints(typ, to, frm, term, log_term, index, commit, hint)
        entries = []
        for t, i, ty, d in ents:
            _ints(t, i, ty)
            entries.append(Entry(t, i, EntryType(ty), _bytes(d)))
        snapshot = None
        if snap is not None:
            s_index, s_term, voters, learners = snap
            _ints(s_index, s_term, *voters, *learners)
            cs = ConfState(voters=list(voters), learners=list(learners))
            snapshot = Snapshot(b"", SnapshotMetadata(cs, s_index, s_term))
        return Message(MsgType(typ), to, frm, term, log_term, index, entries, commit,
                       snapshot, bool(reject), hint, _bytes(ctx))
    except (TypeError, ValueError) as exc:
        raise PeerProtocolError(f"malformed Raft message: {exc}") from exc


def _pack(obj):
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


async def _read_frame(reader):
    head = await reader.readexactly(_LEN.size)
    (n,) = _LEN.unpack(head)
    if n > PEER_FRAME_BYTES_MAX:
        raise PeerProtocolError(f"peer frame of {n} bytes exceeds {PEER_FRAME_BYTES_MAX}")
    body = await reader.readexactly(n)
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise PeerProtocolError(f"undecodable peer frame: {exc}") from exc


class _Peer:
    """The outbound side towards one member."""

    def __init__(self, transport, peer_id, addrs):
        self.t = transport
        self.id = peer_id
        # Every peer URL of the member, as (host, port): it is dialled at addrs[at], and a
        # dial that fails moves on to the next (etcd's rafthttp picks another URL likewise).
        self.addrs = _addr_list(addrs)
        self.at = 0
        self.queue = collections.deque()
        self.wake = asyncio.Event()
        self.task = None
        self.connected = False
        self.connected_at = None  # time.monotonic() of the current connection (None: down)
        self.failures = 0
        # Set when the peer has just dialed us (it is up again): a dial waiting out its backoff
        # goes at once, so a restarted member hears from us without waiting up to BACKOFF_S[-1].
        self.redial = asyncio.Event()
        self.writer = None  # the open connection's writer while _pump runs
        self.streaming = False  # a snapshot stream is being written: everything else queues

    @property
    def addr(self):
        return self.addrs[self.at]

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._ended)

    def _ended(self, task):
        """The dialer ends only when the transport closes. Anything else would leave this
        peer unreachable for good, without a word: say so loudly."""
        if task.cancelled() or self.t.closed:
            return
        log.critical("peer %x: the dialer stopped: %r; nothing more is sent to this peer",
                     self.id, task.exception())

    def offer(self, data):
        """Write frame bytes at once when that keeps the stream's order and nothing is
        buffered (saves the pump's loop turn on the latency path); else enqueue(data)."""
        w = self.writer
        if w is not None and not self.queue and not self.streaming and \
                not w.is_closing() and w.transport.get_write_buffer_size() == 0:
            try:
                w.write(data)
                return True
            except (OSError, RuntimeError):  # the pump notices the broken connection too
                pass
        return self.enqueue(data)

    def enqueue(self, item):
        if len(self.queue) >= QUEUE_MSGS_MAX:
            return False
        self.queue.append(item)
        self.wake.set()
        return True

    def drop_queue(self):
        """Drop what is queued; a snapshot offer among it is reported as failed (the core
        would otherwise wait for its outcome forever and never send that peer another)."""
        for item in self.queue:
            abandon = getattr(item, "abandon", None)
            if abandon is not None:
                abandon()
        self.queue.clear()

    async def _run(self):
        while not self.t.closed:
            try:
                reader, writer = await self._connect()
            except OSError as exc:
                self.at = (self.at + 1) % len(self.addrs)  # try the member's next URL
                await self._backoff(exc)
                continue
            except Exception as exc:  # noqa: BLE001 -- the dialer must go on (see _ended)
                log.exception("peer %x: cannot dial", self.id)
                await self._backoff(exc)
                continue
            self.connected, self.failures = True, 0
            self.connected_at = time.monotonic()
            reader_task = asyncio.get_running_loop().create_task(
                self.t.read_responses(reader, self.id))
            failed = None
            try:
                self.writer = writer
                await self._pump(writer)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, RuntimeError) as exc:
                # uvloop raises RuntimeError ("unable to perform operation on <TCPTransport
                # closed=True>") for a write on a connection the peer has reset: reconnect too,
                # else this task ends and nothing is ever sent to that peer again.
                log.info("peer %x: connection lost: %r", self.id, exc)
            except Exception as exc:  # noqa: BLE001 -- e.g. a snapshot stream that cannot read
                # Whatever went wrong with this connection, the dialer must go on: a dead
                # dialer leaves the peer unreachable for good.
                log.exception("peer %x: connection failed; reconnecting", self.id)
                failed = exc
            finally:
                self.connected = False
                self.connected_at = None
                self.writer = None
                reader_task.cancel()
                writer.close()
            self.t.on_unreachable(self.id)
            if failed is not None:
                await self._backoff(failed)  # not at once: the same failure may repeat

    async def _connect(self):
        ctx = self.t.ssl_client
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.addr[0], self.addr[1], local_addr=(self.t.bind_host, 0), ssl=ctx,
            server_hostname=self.addr[0] if ctx else None), 3.0)
        writer.write(_pack({"token": self.t.token, "from": self.t.member_id, "to": self.id}))
        return reader, writer

    async def _backoff(self, exc):
        delay = BACKOFF_S[min(self.failures, len(BACKOFF_S) - 1)]
        if self.failures == 0:
            log.info("peer %x at %s unreachable: %s", self.id,
                     ", ".join(f"{h}:{p}" for h, p in self.addrs), exc)
        self.failures += 1
        self.drop_queue()
        self.t.on_unreachable(self.id)
        self.redial.clear()
        try:
            await asyncio.wait_for(self.redial.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def dialed_us(self):
        """The peer opened a connection to us: if our own dial is backing off, retry now."""
        if not self.connected:
            self.failures = 0
            self.redial.set()

    async def _pump(self, writer):
        while not self.t.closed:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            # Frames queued since the last round go out in one write (one send syscall).
            pending = []
            while self.queue:
                if writer.is_closing():
                    raise ConnectionResetError("the peer connection is closed")
                item = self.queue.popleft()
                if callable(item):
                    if pending:
                        writer.write(b"".join(pending))
                        pending = []
                    self.streaming = True
                    try:
                        await item(writer)  # a snapshot stream
                    finally:
                        self.streaming = False
                else:
                    pending.append(item)
            if pending:
                writer.write(pending[0] if len(pending) == 1 else b"".join(pending))
            await writer.drain()


class PeerTransport:
    def __init__(self, member_id, token, peers, bind_host, *, on_message, on_forward,
                 snapshot_source=None, on_snapshot_sent=None, spool_dir=None, ssl_server=None,
                 ssl_client=None, allowed_cn=None, allowed_hostname=None, cert_check=None,
                 check_san=True, run_export=None):
        self.member_id = member_id
        self.token = token
        self.bind_host = bind_host
        # TLS (https:// peer URLs): the listener's context and the dialer's (raftkv.tls).
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.allowed_cn = allowed_cn  # --peer-cert-allowed-cn: the only peer CN let in
        self.allowed_hostname = allowed_hostname  # --peer-cert-allowed-hostname
        self.cert_check = cert_check  # a raftkv.tls.CertCheck: --peer-crl-file
        # etcd's check that a connecting peer's certificate SANs cover the address it comes
        # from (off: --experimental-peer-skip-client-san-verification).
        self.check_san = check_san
        self.on_message = on_message  # fn(Message)
        self.on_forward = on_forward  # async fn(op, body) -> dict
        self.snapshot_source = snapshot_source  # fn() -> iterator of bytes chunks
        # async fn(fn, *args): runs the export that iterates it in a worker thread (the
        # member's: its store's StoreGate.run, which the online defrag holds off)
        self.run_export = run_export or asyncio.to_thread
        self.on_snapshot_sent = on_snapshot_sent  # fn(peer_id, ok)
        self.spool_dir = spool_dir or tempfile.gettempdir()
        self.fault = None
        self.blocked = frozenset()  # member IDs cut off by a partition failpoint (tests)
        self.snapshot_chunk_hook = None  # test hook: fn(seq) before each chunk is sent
        self._image = None  # (covers index, image id, path, chunk count) of the last export
        self._image_serial = 0
        self._resume_waiters = {}  # (peer id, image id) -> future of the receiver's resume point
        self.closed = False
        self.removed = frozenset()  # IDs of members removed from the cluster (set_peers)
        self._removed_warned = set()  # the removed IDs whose connection was refused and logged
        self._peers = {}
        self._servers = []  # one asyncio server per --listen-peer-urls URL
        self._unreachable = set()
        self._req_ids = itertools.count(1)
        self._waiting = {}  # req_id -> future
        self._inbound = set()
        self._inbound_from = collections.Counter()  # peer id -> open inbound connections
        self.set_peers(peers)

    def set_peers(self, peers, removed=None):
        """peers: {member_id: (host, port), or a list of them: every peer URL of the member}
        (self excluded or ignored). removed: the IDs of members removed from the cluster (only
        named in the log when they try to connect)."""
        if removed is not None:
            self.removed = frozenset(removed)
        for pid, addr in peers.items():
            if pid == self.member_id:
                continue
            cur = self._peers.get(pid)
            if cur is None or cur.addrs != _addr_list(addr):
                if cur is not None and cur.task:
                    cur.task.cancel()
                self._peers[pid] = _Peer(self, pid, addr)
                if self._servers:  # started: dial at once
                    self._peers[pid].start()
        for pid in list(self._peers):
            if pid not in peers:
                p = self._peers.pop(pid)
                if p.task:
                    p.task.cancel()

    def known(self, pid):
        return pid in self._peers

    def active_peers(self):
        """How many peers our dialer is connected to now (etcd's ActivePeers)."""
        return sum(1 for p in self._peers.values() if p.connected)

    def active_since(self, pid):
        """time.monotonic() since which our connection to peer pid is up (None: down or not
        a peer; etcd's ActiveSince)."""
        p = self._peers.get(pid)
        return p.connected_at if p is not None and p.connected else None

    def describe(self):
        """One line on every peer link, for logs: outbound state and queue, inbound count."""
        parts = []
        for pid, p in sorted(self._peers.items()):
            state = "up" if p.connected else f"down ({p.failures} failed dials)"
            parts.append(f"{pid:x} out {state}, {len(p.queue)} queued, in "
                         f"{self._inbound_from.get(pid, 0)}")
        return "; ".join(parts) or "no peers"

    async def start(self, host, port, more=()):
        """Listen on host:port and on each (host, port) of more (every --listen-peer-urls URL);
        returns the first listener's port."""
        for h, p in ((host, port), *more):
            try:
                self._servers.append(await asyncio.start_server(self._serve, h, p,
                                                                ssl=self.ssl_server))
            except OSError:
                await self._close_servers()
                raise
        for p in self._peers.values():
            p.start()
        return self._servers[0].sockets[0].getsockname()[1]

    async def _close_servers(self):
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    async def close(self):
        self.closed = True
        for p in self._peers.values():
            if p.task:
                p.task.cancel()
                p.wake.set()
        for w in list(self._inbound):
            w.close()
        await self._close_servers()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RaftkvError("STOPPED"))

    def on_unreachable(self, pid):
        self._unreachable.add(pid)

    def take_unreachable(self):
        out, self._unreachable = self._unreachable, set()
        return out

    # ---------------------------------------------------------------- sending
    def send(self, messages):
        direct = {}  # peer -> frames for one write each, in order
        for m in messages:
            peer = self._peers.get(m.to)
            if peer is None or m.to in self.blocked:
                continue
            verdict = self.fault(m) if self.fault else None
            if verdict == "drop":
                continue
            if m.type == MsgType.SNAP:
                item = self._snapshot_writer(m)
            else:
                item = _pack(["m", encode_message(m)])
            if isinstance(verdict, (int, float)) and verdict > 0:
                asyncio.get_running_loop().call_later(verdict, peer.enqueue, item)
            elif isinstance(item, bytes):
                direct.setdefault(peer, []).append(item)
            # A snapshot stream queues behind the frames before it.
            elif not self._flush(peer, direct.pop(peer, None)) or not peer.enqueue(item):
                self._unreachable.add(m.to)
                abandon = getattr(item, "abandon", None)
                if abandon is not None:
                    abandon()
        for peer, frames in direct.items():
            if not self._flush(peer, frames):
                self._unreachable.add(peer.id)

    @staticmethod
    def _flush(peer, frames):
        if not frames:
            return True
        return peer.offer(frames[0] if len(frames) == 1 else b"".join(frames))

    def _snapshot_writer(self, m):
        async def write(writer):
            ok = False
            key = None
            try:
                image_id, path, count = await self._image_for(m)
                writer.write(_pack(["sb", encode_message(m), image_id, count]))
                await writer.drain()
                key = (m.to, image_id)
                self._resume_waiters[key] = fut = asyncio.get_running_loop().create_future()
                have = await asyncio.wait_for(fut, SNAPSHOT_RESUME_WAIT_S)
                for seq, chunk in _spooled_chunks_from(path, have):
                    if self.snapshot_chunk_hook is not None:
                        self.snapshot_chunk_hook(seq)
                    writer.write(_pack(["sc", chunk]))
                    await writer.drain()
                writer.write(_pack(["se"]))
                await writer.drain()
                ok = True
            except asyncio.TimeoutError:
                log.warning("peer %x did not answer a snapshot offer", m.to)
            finally:
                if key is not None:
                    self._resume_waiters.pop(key, None)
                if self.on_snapshot_sent:
                    self.on_snapshot_sent(m.to, ok)

        def abandon():  # never started: the queue holding it was dropped
            if self.on_snapshot_sent:
                self.on_snapshot_sent(m.to, False)
        write.abandon = abandon
        return write

    async def _image_for(self, m):
        """(image id, path, chunk count) of a state-machine image that covers m's snapshot:
        the last one exported if it does, else a new one (written off the event loop)."""
        meta = m.snapshot.metadata
        img = self._image
        if img is not None and img[0] >= meta.index and os.path.exists(img[2]):
            return img[1], img[2], img[3]
        self._image_serial += 1
        image_id = f"{self.member_id:x}.{meta.index}.{meta.term}.{self._image_serial}"
        path = os.path.join(self.spool_dir, f"outgoing-snap-{image_id}")
        count = await self.run_export(_spool, self.snapshot_source(), path)
        if img is not None and img[2] != path and os.path.exists(img[2]):
            os.unlink(img[2])
        self._image = (meta.index, image_id, path, count)
        return image_id, path, count

    async def forward(self, pid, op, body, timeout_s=FORWARD_TIMEOUT_S):
        """Send a request to member pid (normally the leader) and await its answer."""
        peer = self._peers.get(pid)
        if peer is None:
            raise RaftkvError("NO_LEADER")
        if pid in self.blocked:  # a partition: the request is lost, the caller times out
            await asyncio.sleep(timeout_s)
            raise RaftkvError("TIMEOUT")
        req_id = next(self._req_ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            if not peer.enqueue(_pack(["f", req_id, op, body])):
                raise RaftkvError("TOO_MANY_REQUESTS")
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise RaftkvError("TIMEOUT") from None
        finally:
            self._waiting.pop(req_id, None)

    async def read_responses(self, reader, pid):
        """Answers to our forwarded requests come back on our outbound connection."""
        try:
            while True:
                frame = await _read_frame(reader)
                if not (isinstance(frame, list) and len(frame) == 4 and frame[0] == "r"):
                    raise PeerProtocolError(f"unexpected frame from {pid:x}")
                _, req_id, ok, payload = frame
                fut = self._waiting.get(req_id)
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(payload)
                    else:
                        fut.set_exception(RaftkvError.from_wire(payload))
        except (asyncio.IncompleteReadError, ConnectionError, PeerProtocolError):
            return

    async def watch_partition_file(self, path, interval_s=PARTITION_POLL_S):
        """The partition failpoint (tests only; the member starts this for the file
        $RAFTKV_FAILPOINT_DIR/<its name>.partition): the file holds a JSON list of member IDs,
        and whenever it changes `blocked` becomes that set. A missing, empty or
        unreadable file blocks nobody."""
        seen = None
        while not self.closed:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if stamp != seen:
                seen = stamp
                ids = frozenset()
                if stamp is not None:
                    try:
                        with open(path, "rb") as f:
                            raw = f.read()
                        ids = frozenset(int(i) for i in json.loads(raw or b"[]"))
                    except (OSError, ValueError, TypeError) as exc:
                        log.warning("partition failpoint %s unreadable (%s): blocking nobody",
                                    path, exc)
                if ids != self.blocked:
                    log.warning("partition failpoint: cut off from %s",
                                sorted(f"{i:x}" for i in ids) or "nobody")
                    self.blocked = ids
            await asyncio.sleep(interval_s)

    # ---------------------------------------------------------------- receiving
    async def _serve(self, reader, writer):
        self._inbound.add(writer)
        peer_name = writer.get_extra_info("peername")
        try:
            if self.allowed_cn is not None:
                cn = common_name(writer.get_extra_info("peercert"))
                if cn != self.allowed_cn:
                    raise PeerProtocolError(f"its certificate's CN {cn!r} is not "
                                            f"--peer-cert-allowed-cn {self.allowed_cn!r}")
            if self.allowed_hostname is not None and not matches_hostname(
                    writer.get_extra_info("peercert"), self.allowed_hostname):
                raise PeerProtocolError("its certificate is not valid for "
                                        f"--peer-cert-allowed-hostname {self.allowed_hostname!r}")
            await self._check_certificate(writer, peer_name)
            frm = await self._check_hello(await _read_frame(reader), peer_name)
            if frm is None:
                return
            self._inbound_from[frm] += 1
            peer = self._peers.get(frm)
            if peer is not None:
                peer.dialed_us()
            try:
                await self._serve_frames(reader, writer, frm)
            finally:
                self._inbound_from[frm] -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except PeerProtocolError as exc:
            log.warning("peer connection from %s closed: %s", peer_name, exc)
        finally:
            self._inbound.discard(writer)
            writer.close()

    async def _check_certificate(self, writer, peer_name):
        """--peer-crl-file, then etcd's SAN check, on the certificate a peer presented (none
        is asked for without --peer-client-cert-auth, and then there is nothing to check)."""
        peercert = writer.get_extra_info("peercert")
        if not peercert:
            return
        if self.cert_check:
            reason = self.cert_check.refusal(der_of(writer.get_extra_info("ssl_object")))
            if reason:
                raise PeerProtocolError(reason)
        if self.check_san and isinstance(peer_name, tuple) and not await san_covers(
                asyncio.get_running_loop(), peercert, peer_name[0]):
            raise PeerProtocolError(f"its certificate's SANs do not cover its address "
                                    f"{peer_name[0]} (etcd's check; "
                                    "--experimental-peer-skip-client-san-verification skips it)")

    async def _check_hello(self, hello, peer_name):
        if not isinstance(hello, dict):
            raise PeerProtocolError("the first frame must be a hello")
        if hello.get("token") != self.token:
            log.warning("rejected peer %s: cluster token %r is not ours (%r)", peer_name,
                        hello.get("token"), self.token)
            return None
        frm = hello.get("from")
        if frm in self.blocked:
            return None  # a partition failpoint: refused without a word
        if frm in self.removed and not self.known(frm):
            if frm not in self._removed_warned:  # it redials: say it once
                self._removed_warned.add(frm)
                log.warning("rejected peer %s: member %x was removed from the cluster (it must "
                            "not run on its old data dir; add it back with `member add` and an "
                            "empty data dir)", peer_name, frm)
            return None
        if hello.get("to") != self.member_id or not self.known(frm):
            log.warning("rejected peer %s: unknown member %r (or not addressed to us)",
                        peer_name, frm)
            return None
        return frm

    async def _serve_frames(self, reader, writer, frm):
        while True:
            frame = await _read_frame(reader)
            if frm in self.blocked:
                return  # a partition failpoint began: close the connection
            if not self.known(frm):
                return  # removed from the cluster since it connected
            if not isinstance(frame, list) or not frame:
                raise PeerProtocolError("frame is not a list")
            kind = frame[0]
            if kind == "m":
                m = decode_message(frame[1])
                if m.frm != frm:
                    raise PeerProtocolError(f"message claims to be from {m.frm:x}, not {frm:x}")
                self.on_message(m)
            elif kind == "sb" and len(frame) == 4:
                await self._receive_snapshot(reader, frame, frm)
            elif kind == "sp" and len(frame) == 3:
                fut = self._resume_waiters.get((frm, frame[1]))
                if fut is not None and not fut.done() and isinstance(frame[2], int):
                    fut.set_result(max(0, frame[2]))
            elif kind == "f" and len(frame) == 4:
                asyncio.get_running_loop().create_task(
                    self._answer_forward(writer, frame[1], frame[2], frame[3]))
            else:
                raise PeerProtocolError(f"unknown frame kind {kind!r}")

    async def _answer_forward(self, writer, req_id, op, body):
        try:
            payload, ok = await self.on_forward(op, body), True
        except RaftkvError as exc:
            payload, ok = exc.to_wire(), False
        except Exception as exc:  # noqa: BLE001 -- reported to the caller, member stays up
            log.exception("forwarded %s failed", op)
            payload, ok = RaftkvError("INTERNAL", f"raftkv: internal error: {exc}").to_wire(), \
                False
        if not writer.is_closing():
            writer.write(_pack(["r", req_id, ok, payload]))

    async def _receive_snapshot(self, reader, frame, frm):
        _, raw, image_id, count = frame
        m = decode_message(raw)
        if m.type != MsgType.SNAP or m.snapshot is None or m.frm != frm or \
                not isinstance(image_id, str) or not isinstance(count, int) or count < 1 or \
                not all(c.isalnum() or c == "." for c in image_id):
            raise PeerProtocolError("bad snapshot offer")
        part = os.path.join(self.spool_dir, f"incoming-snap-{image_id}.part")
        self._drop_other_parts(part)
        have = _count_chunks(part)
        peer = self._peers.get(frm)
        if peer is None or not peer.enqueue(_pack(["sp", image_id, have])):
            raise PeerProtocolError(f"cannot answer the snapshot offer of {frm:x}")
        with open(part, "ab") as f:
            while True:
                frame = await _read_frame(reader)
                if frame == ["se"]:
                    break
                if not (isinstance(frame, list) and len(frame) == 2 and frame[0] == "sc"
                        and isinstance(frame[1], bytes)):
                    raise PeerProtocolError("bad snapshot chunk frame")
                f.write(_LEN.pack(len(frame[1])) + frame[1])
                f.flush()
                have += 1
        if have != count:
            os.unlink(part)
            raise PeerProtocolError(f"snapshot image {image_id}: {have} chunks, offer said "
                                    f"{count}")
        path = part[:-len(".part")]
        os.replace(part, path)
        m.snapshot.data = b"file:" + path.encode()
        self.on_message(m)

    def _drop_other_parts(self, keep):
        for name in os.listdir(self.spool_dir):
            full = os.path.join(self.spool_dir, name)
            if name.startswith("incoming-snap-") and name.endswith(".part") and full != keep:
                os.unlink(full)


def _addr_list(addrs):
    """A peer's addresses as a tuple of (host, port); one (host, port) alone is accepted."""
    if len(addrs) == 2 and isinstance(addrs[0], str):
        return (tuple(addrs),)
    out = tuple(tuple(a) for a in addrs)
    assert out, "a peer needs an address"
    return out


def _spool(chunks, path):
    """Write chunks as length-prefixed frames to path; returns how many."""
    n = 0
    with open(path + ".tmp", "wb") as f:
        for chunk in chunks:
            f.write(_LEN.pack(len(chunk)) + chunk)
            n += 1
    os.replace(path + ".tmp", path)
    return n


def _count_chunks(path):
    """Whole chunks in a partial spool file; a torn last frame is cut off."""
    if not os.path.exists(path):
        return 0
    n, good = 0, 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while True:
            head = f.read(_LEN.size)
            if len(head) < _LEN.size:
                break
            (length,) = _LEN.unpack(head)
            if good + _LEN.size + length > size:
                break
            f.seek(length, os.SEEK_CUR)
            good += _LEN.size + length
            n += 1
    if good != size:
        os.truncate(path, good)
    return n


def _spooled_chunks_from(path, start):
    """(seq, chunk) of a spool file from chunk number start on."""
    with open(path, "rb") as f:
        seq = 0
        while True:
            head = f.read(_LEN.size)
            if not head:
                return
            (length,) = _LEN.unpack(head)
            if seq < start:
                f.seek(length, os.SEEK_CUR)
            else:
                yield seq, f.read(length)
            seq += 1


def read_spooled_chunks(path):
    """The chunks a received snapshot was spooled as (see _receive_snapshot)."""
    return (chunk for _, chunk in _spooled_chunks_from(path, 0))
