"""Arbitrary HTTP requests to etcd's JSON gateway (--listen-client-http-urls) of a real member:
random paths (the gateway's and others), methods, headers and bodies (random JSON of any shape
with the request's field names mixed in, random bytes, broken UTF-8, half-sent streams). Every
request must get a well-formed answer: JSON with {error, message, code} or a response for the
gateway's paths, never an unhandled error (`raftkv: internal error`, gRPC INTERNAL); afterwards
the member is alive and still takes writes.
"""
from __future__ import annotations

import http.client
import json
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.api.gateway import PATHS
from raftkv.cli.local_cluster import LocalCluster, free_ports
from tests.etcdctl.conftest import FAST_ARGS, running

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

STATS = {}
EXAMPLES = 600
TIMEOUT_S = 10.0
WAIT_S = 1.0  # a lock, campaign or stream may wait longer: then the client goes
DERANDOMIZE = os.environ.get("RAFTKV_FUZZ_RANDOM") != "1"
STREAMS = ("watch", "lease/keepalive", "maintenance/snapshot", "election/observe",
           "lock/lock", "election/campaign")  # answers that may not end by themselves

NAMES = st.sampled_from(["key", "range_end", "value", "lease", "ID", "TTL", "revision", "limit",
                         "sort_order", "sortTarget", "create_request", "cancel_request",
                         "compare", "success", "failure", "request_put", "requestRange",
                         "name", "password", "role", "perm", "permType", "leader", "keys",
                         "action", "alarm", "memberID", "peerURLs", "isLearner", "physical"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=False), st.text(max_size=12),
                    st.sampled_from(["YQ==", "Zm9v", "AA==", "", "-1", "9223372036854775808",
                                     "EQUAL", "DESCEND", "READWRITE", "!!", "YQ"]))
JSON = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.one_of(NAMES, st.text(max_size=6)), kids,
                                                max_size=5)), max_leaves=20)
BODIES = st.one_of(JSON.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=64),
                   st.sampled_from([b"", b"{", b'{"key": "YQ==', b"\xff\xfe{}", b"null",
                                    b'{"key": "YQ=="} {"key":', b"[" * 200 + b"]" * 200]))
GATEWAY_PATHS = st.sampled_from([f"/v3/{p}" for p in PATHS] + ["/v3beta/kv/range"])
OTHER_PATHS = st.one_of(st.sampled_from(["/", "/v3/", "/v3/kv", "/health", "/metrics",
                                         "/version", "/v3/kv/range/x", "/v3alpha/kv/put",
                                         "/%ff"]),
                        st.text(alphabet="/abcv3%._-", max_size=20).map(lambda s: "/" + s))
# Mostly the gateway's own paths and POST: that is where requests reach the servicers.
PATHS_ = st.integers(0, 9).flatmap(lambda i: GATEWAY_PATHS if i < 8 else OTHER_PATHS)
METHODS = st.integers(0, 9).flatmap(
    lambda i: st.just("POST") if i < 8 else st.sampled_from(["GET", "PUT", "OPTIONS", "HEAD"]))
HEADERS = st.dictionaries(st.sampled_from(["Authorization", "Grpc-Metadata-Token",
                                           "Grpc-Metadata-Hasleader", "Content-Type",
                                           "Grpc-Metadata-X"]),
                          st.text(alphabet="abcXYZ0123.=-", max_size=20), max_size=3)


def test_arbitrary_http_requests_never_hurt_the_member(tmp_path):
    port = free_ports(1)[0]
    cluster = LocalCluster(str(tmp_path), 1, extra_args=[
        *FAST_ARGS, "--listen-client-http-urls", f"http://127.0.0.1:{port}"])
    with running(cluster):
        cluster.wait_listening()
        m = cluster.members[0]
        bad = []

        def request(method, path, body, headers, read_all=True):
            conn = http.client.HTTPConnection("127.0.0.1", port,
                                              timeout=TIMEOUT_S if read_all else WAIT_S)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read() if read_all else resp.readline()
                return resp.status, resp.getheader("Content-Type") or "", data
            finally:
                conn.close()

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
                  database=None, suppress_health_check=list(HealthCheck))
        @given(METHODS, PATHS_, BODIES, HEADERS)
        def one(method, path, body, headers):
            stream = any(path.endswith(s) for s in STREAMS) and method == "POST"
            try:
                status, ctype, data = request(method, path, body, headers, read_all=not stream)
            except socket.timeout:
                assert stream, f"{method} {path} {body!r}: no answer"
                return
            assert 200 <= status < 600
            STATS[status] = STATS.get(status, 0) + 1
            if ctype.startswith("application/json") and data.strip():
                doc = json.loads(data.splitlines()[0])
                err = doc.get("error")
                if isinstance(err, dict):  # a stream's error line
                    err = err.get("message")
                if err is not None and ("internal error" in str(err) or doc.get("code") == 13):
                    bad.append((method, path, body, data[:200]))

        one()
        print(f"answers by HTTP status: {STATS}")
        assert not bad, f"unhandled errors: {bad[:3]}"
        assert m.alive(), f"{m.name} died; see {m.log_path}"
        # an alarm the fuzzer may have raised (ACTIVATE) would refuse the put below
        status, _, data = request("POST", "/v3/maintenance/alarm", b'{"action": "DEACTIVATE"}',
                                  {})
        assert status == 200, data
        status, _, data = request("POST", "/v3/kv/put", b'{"key": "Y2hlY2s=", "value": "MQ=="}',
                                  {})
        assert status == 200, data
        status, _, data = request("POST", "/v3/kv/range", b'{"key": "Y2hlY2s="}', {})
        assert status == 200 and json.loads(data)["kvs"][0]["value"] == "MQ=="
