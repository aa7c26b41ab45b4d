"""Randomized differential test of the Watch API (tests/etcdctl/differential_watch.py): the same
seeded random watch requests, on a few Watch streams, interleaved with random writes, to a
fresh single-member etcd 3.4.23 and a fresh 3-member raftkv cluster over gRPC; every watcher
must see the same responses after the normalisations listed in that module.

The suite runs a fixed seed and a few examples (bounded time). For bug hunting:

    RAFTKV_WDIFF_EXAMPLES=100 RAFTKV_WDIFF_SEED=7 python -m pytest \
        tests/etcdctl/test_differential_watch.py

or `python -m tests.etcdctl.differential_watch --seeds 20 --examples 30` (fresh servers per
seed).
"""
import os
import shutil

import pytest

from raftkv.api.etcd.proto import rpc_pb2
from tests.etcdctl import differential, differential_watch

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not shutil.which("etcd"), reason="etcd is not installed")]

EXAMPLES = int(os.environ.get("RAFTKV_WDIFF_EXAMPLES", "4"))
SEED = int(os.environ.get("RAFTKV_WDIFF_SEED", "20240612"))


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("differential_watch"))
    with differential.paired_targets(root, SEED, differential_watch.SERVER_ARGS) as pair:
        yield pair


def test_random_watches_answer_as_etcd(targets):
    etcd, raftkv = targets
    steps = differential_watch.run(etcd, raftkv, SEED, EXAMPLES)
    assert steps == EXAMPLES * differential_watch.STEPS_PER_EXAMPLE


def _event(rev, key=b"k"):
    return {"kv": {"key": key, "mod_revision": rev}}


def _resp(watch_id, header_rev, revs, **fields):
    resp = rpc_pb2.WatchResponse(watch_id=watch_id, **fields)
    resp.header.revision, resp.header.member_id = header_rev, 99
    for rev in revs:
        resp.events.add().kv.mod_revision = rev
    return resp


def test_view_splits_by_watcher_and_revision_and_merges_fragments():
    create = rpc_pb2.WatchCreateRequest(key=b"k", fragment=True)
    a = [_resp(0, 1, [], created=True), _resp(0, 4, [2, 3, 3, 4])]
    b = [_resp(0, 1, [], created=True), _resp(0, 4, [2, 3], fragment=True),
         _resp(0, 4, [3, 4])]
    va, pa = differential_watch.view(a, [create], {}, 4)
    vb, pb = differential_watch.view(b, [create], {}, 4)
    assert pa == pb == []
    assert va == vb
    assert [item.get("revision") for item in va["watchers"][0]] == [None, 2, 3, 4]


def test_view_reports_a_split_revision_and_a_stray_progress_notification():
    create = rpc_pb2.WatchCreateRequest(key=b"k")
    responses = [_resp(0, 1, [], created=True), _resp(0, 3, [2, 3]), _resp(0, 3, [3]),
                 _resp(0, 3, [])]
    _, problems = differential_watch.view(responses, [create], {}, 3)
    assert len(problems) == 2
    assert "revision 3" in problems[0] and "without progress_notify" in problems[1]
