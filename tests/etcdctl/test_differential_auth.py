"""Randomized auth differential test (tests/etcdctl/differential_auth.py): the same seeded
random Auth admin requests, Authenticate calls and KV/Lease requests as random users (tokens
in the gRPC metadata) to a fresh single-member etcd 3.4.23 and a fresh 3-member raftkv
cluster; every answer must be the same after the normalisations listed in that module.

The suite runs a fixed seed and a bounded number of requests. For bug hunting:

    RAFTKV_DIFF_AUTH_STEPS=5000 RAFTKV_DIFF_AUTH_SEED=7 \
        python -m pytest tests/etcdctl/test_differential_auth.py

or `python -m tests.etcdctl.differential_auth --seeds 20 --steps 2000` (fresh servers per
seed).
"""
import os
import shutil

import pytest

from raftkv.api.etcd.proto import rpc_pb2
from tests.etcdctl import differential, differential_auth

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not shutil.which("etcd"), reason="etcd is not installed")]

STEPS = int(os.environ.get("RAFTKV_DIFF_AUTH_STEPS", "600"))
SEED = int(os.environ.get("RAFTKV_DIFF_AUTH_SEED", "20240612"))


def test_random_auth_requests_answer_as_etcd(tmp_path):
    with differential.paired_targets(str(tmp_path), SEED, differential_auth.SERVER_ARGS,
                                     differential_auth.connect) as (etcd, raftkv):
        assert differential_auth.run(etcd, raftkv, SEED, STEPS) == STEPS


def test_only_the_token_is_normalised():
    class Fake:
        to_sym = {}
    resp = rpc_pb2.AuthenticateResponse(token="abc.12")
    resp.header.revision, resp.header.member_id = 4, 9
    assert differential_auth.tree(resp, Fake) == {"header": {"revision": 4}, "token": "<token>"}
    get = rpc_pb2.AuthRoleGetResponse()
    get.perm.add(permType=1, key=b"b", range_end=b"c")
    get.perm.add(permType=0, key=b"a")
    assert differential_auth.tree(get, Fake)["perm"] == [  # the order is compared
        {"permType": 1, "key": b"b", "range_end": b"c"}, {"key": b"a"}]


def test_nested_txns_are_made_read_only_and_backwards_ranges_forwards():
    inner = rpc_pb2.TxnRequest()
    inner.success.add(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v"))
    txn = rpc_pb2.TxnRequest()
    txn.success.add(request_txn=inner)
    txn.failure.add(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d", range_end=b"b"))
    assert differential_auth._nested_keys(txn)
    differential_auth._read_only(txn)
    assert txn.success[0].request_txn.success[0].request_range.key == b"k"
    assert txn.failure[0].request_range.range_end == b"b"
    differential_auth._forwards(differential.Op("KV", "Txn", txn))
    assert txn.failure[0].request_range.range_end == b""
