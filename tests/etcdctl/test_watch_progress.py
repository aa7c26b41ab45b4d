"""--experimental-watch-progress-notify-interval on a real member: an idle watcher created with
progress_notify gets a progress notification (a response with no events, the header revision
being the store's) about every interval, over gRPC (the member's own gRPC server and its
--grpc-workers) and over the native protocol (raftkv.Client, `raftkvctl watch
--progress-notify`). With the default interval (10m) none comes.

etcdctl 3.4 cannot ask for progress notifications (`etcdctl watch --progress-notify` came in
3.5; 3.4 only prints "progress notify: REV" for one it gets), so the gRPC side is driven with
etcd's own protocol messages (WatchCreateRequest.progress_notify), as clientv3's
WithProgressNotify sends them.
"""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.cli.local_cluster import LocalCluster
from raftkv.client import Client, ProgressNotify
from tests.etcdctl.conftest import FAST_ARGS, Ctl, running, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

WINDOW_S = 5.0  # how long each watcher listens
INTERVAL = "1s"
MIN_NOTES = 2  # at least this many in WINDOW_S with a 1 s interval (about 4 expected)
MAX_NOTES = 7  # and not a flood


def grpc_progress(endpoint, key, window_s):
    """(revision, seconds since the watch was created) of each progress notification an idle
    gRPC watcher on key (progress_notify=True) gets within window_s."""
    requests = queue.Queue()
    create = rpc_pb2.WatchCreateRequest(key=key, progress_notify=True)
    requests.put(rpc_pb2.WatchRequest(create_request=create))
    notes = []
    with grpc.insecure_channel(endpoint) as channel:
        stream = rpc_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None),
                                                       timeout=window_s + 1.0)
        try:
            first = next(stream)
            assert first.created, first
            t0 = time.monotonic()
            for resp in stream:
                now = time.monotonic() - t0
                if now > window_s:
                    break
                assert not resp.events and not resp.canceled, resp
                assert resp.watch_id == first.watch_id
                notes.append((resp.header.revision, now))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            stream.cancel()
            requests.put(None)
    return notes


def native_progress(endpoint, key, window_s):
    """The same over the native protocol (raftkv.Client): [(revision, seconds)]."""
    notes = []
    with Client([endpoint], timeout=5.0) as c:
        events, cancel = c.watch(key, progress_notify=True)
        t0 = time.monotonic()
        timer = threading.Timer(window_s, cancel)  # ends the iteration below
        timer.start()
        try:
            for item in events:
                assert isinstance(item, ProgressNotify), item
                notes.append((item.revision, time.monotonic() - t0))
        finally:
            timer.cancel()
            cancel()
    return [n for n in notes if n[1] <= window_s]


def _member(tmp_path, extra):
    return LocalCluster(str(tmp_path), 1, extra_args=[*FAST_ARGS, *extra])


def _check_cadence(notes, revision):
    assert MIN_NOTES <= len(notes) <= MAX_NOTES, notes
    assert all(rev == revision for rev, _ in notes), (notes, revision)
    times = [t for _, t in notes]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap > 0.5 for gap in gaps), notes  # about one per interval, not a burst


@pytest.mark.parametrize("workers", [0, 1], ids=["own-grpc", "grpc-workers-1"])
def test_idle_watchers_get_progress_notifications(tmp_path, workers):
    extra = ["--experimental-watch-progress-notify-interval", INTERVAL]
    if workers:
        extra += ["--grpc-workers", str(workers)]
    cluster = _member(tmp_path, extra)
    with running(cluster):
        m = cluster.members[0]
        ctl = Ctl([m.grpc_endpoint])
        wait_healthy(ctl)
        # The idle key's notifications carry the store's revision: this put's.
        revision = json.loads(ctl.out("put", "/busy", "x", "-w", "json"))["header"]["revision"]
        _check_cadence(grpc_progress(m.grpc_endpoint, b"/idle", WINDOW_S), revision)
        if workers:
            assert f"{workers} worker processes" in open(m.log_path).read()
            return  # the native side does not depend on the workers
        _check_cadence(native_progress(m.native_endpoint, b"/idle", WINDOW_S), revision)
        lines = _ctl_watch_lines(m.native_endpoint, WINDOW_S)
        assert MIN_NOTES <= len(lines) <= MAX_NOTES, lines
        assert set(lines) == {f"progress notify: {revision}"}, lines


def test_no_progress_notifications_at_the_default_interval(tmp_path):
    cluster = _member(tmp_path, [])
    with running(cluster):
        m = cluster.members[0]
        wait_healthy(Ctl([m.grpc_endpoint]))
        assert grpc_progress(m.grpc_endpoint, b"/idle", 3.0) == []
        assert native_progress(m.native_endpoint, b"/idle", 3.0) == []


def _ctl_watch_lines(native_endpoint, window_s):
    """stdout lines of `raftkvctl watch --progress-notify /idle` run for window_s seconds
    (then killed by PID)."""
    proc = subprocess.Popen([sys.executable, "-m", "raftkv.cli", "--endpoints",
                             native_endpoint, "watch", "--progress-notify", "/idle"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True)
    lines = []

    def read():
        lines.extend(line.rstrip("\n") for line in proc.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(window_s + 1.0)  # its start-up (imports, connect) takes about a second
    proc.kill()
    proc.wait(timeout=10)
    reader.join(5)
    return lines
