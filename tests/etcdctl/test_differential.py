"""Randomized differential test (tests/etcdctl/differential.py): the same seeded random KV and
Lease requests to a fresh single-member etcd 3.4.23 and a fresh 3-member raftkv cluster over
gRPC; every response must be the same after the normalisations listed in that module.

The suite runs a fixed seed and a few examples (bounded time). For bug hunting:

    RAFTKV_DIFF_EXAMPLES=400 RAFTKV_DIFF_SEED=7 python -m pytest tests/etcdctl/test_differential.py

or `python -m tests.etcdctl.differential --seeds 20 --examples 100` (fresh servers per seed).
"""
import os
import shutil

import pytest

from tests.etcdctl import differential

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not shutil.which("etcd"), reason="etcd is not installed")]

EXAMPLES = int(os.environ.get("RAFTKV_DIFF_EXAMPLES", "20"))  # 50 requests each
SEED = int(os.environ.get("RAFTKV_DIFF_SEED", "20240611"))


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("differential"))
    with differential.paired_targets(root, SEED) as pair:
        yield pair


def test_random_requests_answer_as_etcd(targets):
    etcd, raftkv = targets
    compared = differential.run(etcd, raftkv, SEED, EXAMPLES)
    assert compared == EXAMPLES * differential.OPS_PER_EXAMPLE


def test_tree_normalises_only_header_ids_and_lease_ids():
    from raftkv.api.etcd.proto import rpc_pb2
    resp = rpc_pb2.RangeResponse(count=1, more=True)
    resp.header.cluster_id, resp.header.member_id, resp.header.revision = 7, 8, 9
    resp.header.raft_term = 3
    resp.kvs.add(key=b"k", value=b"v", lease=0xABC, mod_revision=4)
    assert differential.tree(resp, {0xABC: 0x5E000001}) == {
        "header": {"revision": 9}, "count": 1, "more": True,
        "kvs": [{"key": b"k", "value": b"v", "lease": 0x5E000001, "mod_revision": 4}]}


def test_prefix_end_is_clientv3s():
    assert differential._prefix_end(b"a") == b"b"
    assert differential._prefix_end(b"c\xff") == b"d"
    assert differential._prefix_end(b"\xff") == b"\0"
