"""etcd's HTTP/JSON gateway (raftkv/api/gateway.py on --listen-client-http-urls) against the
real etcd 3.4.23's gateway on its client port: the same HTTP requests to both, the same answers.

* test_scenario_*: fixed requests whose whole answer is compared as text: HTTP status,
  Content-Type, CORS headers and the JSON body byte for byte, after only the header's cluster
  and member IDs and raft term are masked (JSON syntax errors: status and code only, the message
  is Go's own wording there);
* test_random_kv_and_lease_requests: the KV/Txn/Lease differential's random request sequences
  (tests/etcdctl/differential.py), sent to both gateways as JSON and read back as protobuf.

    python -m tests.etcdctl.test_gateway --seed 1 --seeds 3 --examples 40    # a long hunt
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import sys
import time

import grpc
import pytest
from google.protobuf import json_format

from raftkv.api.etcd.proto import rpc_pb2
from raftkv.api.gateway import PATHS
from raftkv.cli.local_cluster import LocalCluster, free_ports
from tests.etcdctl import differential
from tests.etcdctl.conformance import EtcdCluster
from tests.etcdctl.conftest import FAST_ARGS, running
from tests.tlscerts import make_pki

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not shutil.which("etcd"), reason="etcd is not installed")]

HTTP_TIMEOUT_S = 10.0
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
# The canonical path of each RPC (the first PATHS names for it).
RPC_PATHS = {}
for _path, _rpc in PATHS.items():
    RPC_PATHS.setdefault(_rpc, "/v3/" + _path)
_MASKED = re.compile(r'"(cluster_id|member_id|raft_term)":"\d+"')


def post(hostport, path, body, headers=None, method="POST"):
    """(status, headers, body bytes) of one request."""
    conn = http.client.HTTPConnection(*hostport.rsplit(":", 1), timeout=HTTP_TIMEOUT_S)
    try:
        data = body if isinstance(body, bytes) else body.encode()
        conn.request(method, path, body=data if method == "POST" else None,
                     headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def stream_lines(hostport, path, body, count, headers=None, timeout_s=HTTP_TIMEOUT_S):
    """The first count lines of a streamed answer (status, [line])."""
    conn = http.client.HTTPConnection(*hostport.rsplit(":", 1), timeout=timeout_s)
    try:
        conn.request("POST", path, body=body.encode(), headers=headers or {})
        resp = conn.getresponse()
        lines = []
        while len(lines) < count:
            line = resp.readline()
            if not line:
                break
            lines.append(line.rstrip(b"\n"))
        return resp.status, lines
    finally:
        conn.close()


def masked(body):
    return _MASKED.sub(lambda m: f'"{m.group(1)}":"X"', body.decode())


class GatewayTarget(differential.Target):
    """A differential Target that sends each request as JSON through an HTTP gateway."""

    def __init__(self, name, grpc_endpoint, gateway):
        super().__init__(name, grpc_endpoint)  # its stubs only wait for a leader
        self.gateway = gateway

    def call(self, op, metadata=None):
        request = type(op.request)()
        request.CopyFrom(op.request)
        differential._map_lease_ids(request, self.to_actual)
        body = json_format.MessageToJson(request, preserving_proto_field_name=True)
        headers = {"Authorization": dict(metadata or ())["token"]} if metadata else {}
        status, _, text = post(self.gateway, RPC_PATHS[(op.service, op.method)], body, headers)
        doc = json.loads(text)
        if status != 200:
            assert set(doc) == {"error", "message", "code"} and doc["error"] == doc["message"]
            return None, ("error", CODE_NAMES[doc["code"]], doc["message"], status)
        method = rpc_pb2.DESCRIPTOR.services_by_name[op.service].methods_by_name[op.method]
        # Every name in the answer must be a field: no unknown names are ignored here.
        return json_format.Parse(text, getattr(rpc_pb2, method.output_type.name)()), None


class GatewayCluster(LocalCluster):
    """A LocalCluster whose members also serve the gateway on --listen-client-http-urls."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.http_ports = dict(zip((m.name for m in self.members),
                                   free_ports(len(self.members))))

    def gateway(self, m):
        return f"127.0.0.1:{self.http_ports[m.name]}"

    def command(self, m, state="new"):
        return super().command(m, state) + [
            "--listen-client-http-urls", f"http://{self.gateway(m)}"]


@contextlib.contextmanager
def gateways(root):
    """A fresh single-member etcd and a fresh 3-member raftkv with gateways; yields
    (etcd Target, raftkv Target), raftkv's through its second member (a follower or the
    leader: both must answer as etcd does)."""
    etcd = EtcdCluster(os.path.join(root, "etcd"), members=1)
    raftkv = GatewayCluster(os.path.join(root, "raftkv"), members=3, extra_args=FAST_ARGS)
    with running(etcd), running(raftkv):
        raftkv.wait_listening()
        e = GatewayTarget("etcd", etcd.endpoints[0], etcd.endpoints[0])
        r = GatewayTarget("raftkv", raftkv.endpoints[1], raftkv.gateway(raftkv.members[1]))
        try:
            for t in (e, r):
                t.wait_serving()
            yield e, r
        finally:
            e.close()
            r.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with gateways(str(tmp_path_factory.mktemp("gateway"))) as targets:
        yield targets


def same_answer(pair, path, body="", headers=None, method="POST", json_error=False):
    """Send the request to both gateways; assert the same answer; return raftkv's (status,
    masked body)."""
    etcd, raftkv = pair
    answers = []
    for t in (etcd, raftkv):
        status, hdrs, text = post(t.gateway, path, body, headers, method)
        kind = hdrs.get("Content-Type", "").split(";")[0]
        cors = {k: v for k, v in hdrs.items() if k.startswith("Access-Control-")}
        doc = masked(text)
        if json_error:  # Go's and Python's JSON error wording differ: compare the code
            doc = json.loads(doc)["code"]
        answers.append((status, kind, cors, doc))
    assert answers[1] == answers[0], f"{method} {path} {body!r}"
    return answers[1][0], answers[1][3]


# ------------------------------------------------------------------------------ scenarios
def test_scenario_kv(pair):
    assert same_answer(pair, "/v3/kv/put", '{"key": "Zm9v", "value": "YmFy"}')[0] == 200
    same_answer(pair, "/v3/kv/range", '{"key": "Zm9v"}')
    same_answer(pair, "/v3beta/kv/range", '{"key": "Zm9v", "serializable": true}')
    same_answer(pair, "/v3/kv/range", '{"key": "Zm9v", "keys_only": true, "unknown": 1}')
    same_answer(pair, "/v3/kv/put", '{"key": "Zm9v", "value": "YmF6", "prev_kv": true}')
    same_answer(pair, "/v3/kv/range", '{"key": "AA==", "range_end": "AA==", "count_only": true}')
    same_answer(pair, "/v3/kv/range", '{"key": "Zm9v"} trailing text is ignored')
    same_answer(pair, "/v3/kv/txn", json.dumps({
        "compare": [{"key": "Zm9v", "result": "EQUAL", "target": "VALUE", "value": "YmF6"}],
        "success": [{"requestRange": {"key": "Zm9v"}},
                    {"request_put": {"key": "YmFy", "value": "MQ=="}}],
        "failure": [{"request_delete_range": {"key": "Zm9v"}}]}))
    same_answer(pair, "/v3/kv/deleterange", '{"key": "YmFy", "prev_kv": true}')
    same_answer(pair, "/v3/kv/compaction", '{"revision": "2", "physical": true}')
    same_answer(pair, "/v3/kv/range", '{"key": "Zm9v", "revision": 1}')  # compacted: 400


def test_scenario_errors(pair):
    assert same_answer(pair, "/v3/kv/range", "") == \
        (400, '{"error":"etcdserver: key is not provided","message":"etcdserver: key is not '
              'provided","code":3}')
    same_answer(pair, "/v3/kv/range", "null")
    same_answer(pair, "/v3/kv/put", '{"value": "YmFy"}')
    same_answer(pair, "/v3/lease/revoke", '{"ID": 12345}')  # 404
    same_answer(pair, "/v3/kv/compaction", '{"revision": 100000}')  # 400, OutOfRange
    same_answer(pair, "/v3/cluster/member/remove", '{"ID": 5}')  # 404
    same_answer(pair, "/v3/auth/authenticate", '{"name": "x", "password": "y"}')  # 412
    same_answer(pair, "/v3/kv/range", "garbage", json_error=True)
    same_answer(pair, "/v3/kv/range", '{"key": "!!!"}', json_error=True)
    for key in ("YQ", "-_8=", "Y Q==", "Y==="):  # base64 as Go reads it: standard, padded
        same_answer(pair, "/v3/kv/put", json.dumps({"key": key, "value": "YQ=="}),
                    json_error=True)
    same_answer(pair, "/v3/kv/put", json.dumps({"key": "+/8=\n", "value": "YQ=="}))
    same_answer(pair, "/v3/kv/range", '{"key": "Zm9v", "sort_order": "BOGUS"}', json_error=True)
    same_answer(pair, "/v3/kv/range", "[1, 2]", json_error=True)
    same_answer(pair, "/v3/kv/range", method="GET")  # 405
    same_answer(pair, "/v3/kv/nothing", "{}")  # 404
    same_answer(pair, "/v3alpha/kv/range", "{}")  # 404: 3.4 has no v3alpha
    same_answer(pair, "/v3/kv/range", method="OPTIONS")


def test_scenario_lease_and_maintenance(pair):
    same_answer(pair, "/v3/lease/grant", '{"TTL": 600, "ID": 4660}')
    _, body = same_answer(pair, "/v3/lease/timetolive", '{"ID": 4660, "keys": true}')
    same_answer(pair, "/v3/kv/put", '{"key": "bGVhc2Vk", "value": "eA==", "lease": "4660"}')
    same_answer(pair, "/v3/kv/lease/leases", "{}")
    same_answer(pair, "/v3/lease/revoke", '{"ID": "4660"}')
    same_answer(pair, "/v3/kv/range", '{"key": "bGVhc2Vk"}')
    same_answer(pair, "/v3/maintenance/alarm", '{"action": "GET"}')
    etcd, raftkv = pair
    for t in (etcd, raftkv):  # member IDs and sizes differ: the shape only
        status, _, text = post(t.gateway, "/v3/maintenance/status", "{}")
        doc = json.loads(text)
        assert status == 200 and doc["version"] == "3.4.23" and int(doc["leader"]) > 0
        status, _, text = post(t.gateway, "/v3/cluster/member/list", "{}")
        assert status == 200 and "revision" not in json.loads(text)["header"]


def test_scenario_streams(pair):
    answers = []
    for t in pair:
        post(t.gateway, "/v3/kv/put", '{"key": "d2F0Y2hlZA==", "value": "MQ=="}')
        _, _, text = post(t.gateway, "/v3/kv/put", '{"key": "d2F0Y2hlZA==", "value": "Mg=="}')
        post(t.gateway, "/v3/lease/grant", '{"TTL": 600, "ID": 4661}')
        # A replay of the last put: the created response, then its event with prev_kv.
        status, lines = stream_lines(t.gateway, "/v3/watch", json.dumps(
            {"create_request": {"key": "d2F0Y2hlZA==", "prev_kv": True,
                                "start_revision": json.loads(text)["header"]["revision"]}}), 2)
        keepalive = stream_lines(t.gateway, "/v3/lease/keepalive", '{"ID": 4661}', 1)
        bad = post(t.gateway, "/v3/watch", "garbage")
        answers.append((status, [masked(x) for x in lines],
                        keepalive[0], [masked(x) for x in keepalive[1]],
                        bad[0], json.loads(bad[2])["code"]))
    assert answers[1] == answers[0]
    assert len(answers[0][1]) == 2 and '"prev_kv"' in answers[0][1][1]
    # A watch stays open after its request body ends, and sends new events.
    for t in pair:
        conn = http.client.HTTPConnection(*t.gateway.rsplit(":", 1), timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("POST", "/v3/watch", body=b'{"create_request": {"key": "bmV3"}}')
            resp = conn.getresponse()
            assert b'"created":true' in resp.readline()
            post(t.gateway, "/v3/kv/put", '{"key": "bmV3", "value": "MQ=="}')
            event = json.loads(resp.readline())["result"]["events"][0]
            assert event["kv"]["key"] == "bmV3" and event["kv"]["value"] == "MQ=="
        finally:
            conn.close()


def test_scenario_lock_and_election(pair):
    same_answer(pair, "/v3/lease/grant", '{"TTL": 600, "ID": 4700}')
    _, body = same_answer(pair, "/v3/lock/lock", '{"name": "bG9jaw==", "lease": 4700}')
    key = json.loads(body)["key"]
    same_answer(pair, "/v3/lock/unlock", json.dumps({"key": key}))
    same_answer(pair, "/v3/lock/lock", '{"name": "bG9jaw==", "lease": 99}')  # no such lease
    _, body = same_answer(pair, "/v3/election/campaign",
                          '{"name": "ZWxlYw==", "lease": 4700, "value": "djE="}')
    leader = json.loads(body)["leader"]
    same_answer(pair, "/v3/election/leader", '{"name": "ZWxlYw=="}')
    same_answer(pair, "/v3/election/proclaim", json.dumps({"leader": leader, "value": "djI="}))
    answers = [[masked(x) for x in stream_lines(t.gateway, "/v3/election/observe",
                                                '{"name": "ZWxlYw=="}', 1)[1]] for t in pair]
    assert answers[1] == answers[0] and '"djI="' in answers[0][0]
    same_answer(pair, "/v3/election/resign", json.dumps({"leader": leader}))
    same_answer(pair, "/v3/election/leader", '{"name": "ZWxlYw=="}')  # election: no leader
    same_answer(pair, "/v3/lease/revoke", '{"ID": 4700}')


def etcd3gw_session(hostport):
    """One scripted session of etcd3gw (OpenStack's client of etcd's gateway, unchanged): what
    it returns at each step, lease IDs and member lists left out (they differ by server)."""
    from etcd3gw.client import Etcd3Client

    host, port = hostport.rsplit(":", 1)
    c = Etcd3Client(host=host, port=int(port), timeout=HTTP_TIMEOUT_S)
    out = [c.status()["version"], c.put("gw/k1", "v1"), c.get("gw/k1"), c.get("gw/none")]
    lease = c.lease(ttl=600)
    out += [c.put("gw/k2", "v2", lease=lease), lease.keys(), c.get_prefix("gw/"),
            c.replace("gw/k1", "v1", "v1b"), c.replace("gw/k1", "v1", "v1c"), c.get("gw/k1")]
    events, cancel = c.watch("gw/k3")
    try:
        c.put("gw/k3", "x")
        out.append(next(iter(events)))
    finally:
        cancel()
    lock = c.lock("gw-lock", ttl=60)
    out += [lock.acquire(), lock.is_acquired(), lock.release(), lease.revoke(),
            c.get("gw/k2"), c.delete("gw/k1"), c.delete("gw/k1"), len(c.members()) >= 1]
    return _no_lease_ids(out)


def _no_lease_ids(value):
    if isinstance(value, dict):
        return {k: "<lease>" if k == "lease" else _no_lease_ids(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_no_lease_ids(v) for v in value)
    return value


def test_etcd3gw_client_library(pair):
    """A real gateway client library, unchanged, gets the same results from raftkv's gateway
    as from etcd 3.4.23's. etcd3gw is a test dependency: missing, the test fails (no skip)."""
    etcd, raftkv = pair
    want, got = etcd3gw_session(etcd.gateway), etcd3gw_session(raftkv.gateway)
    assert got == want
    assert want[0] == "3.4.23" and want[2] == [b"v1"] and want[9] == [b"v1b"]


def test_scenario_snapshot(pair):
    for t in pair:
        status, lines = stream_lines(t.gateway, "/v3/maintenance/snapshot", "{}", 10_000)
        assert status == 200 and len(lines) >= 2
        blobs = [json.loads(x)["result"]["blob"] for x in lines]
        assert all(blobs) and len(json.loads(lines[-1])["result"]) == 1


def test_scenario_auth(pair):
    """Last: turns auth on and off again."""
    same_answer(pair, "/v3/kv/put", '{"key": "Zm9v", "value": "YQ=="}')
    same_answer(pair, "/v3/auth/user/add", '{"name": "root", "password": "pw"}')
    same_answer(pair, "/v3/auth/user/grant", '{"user": "root", "role": "root"}')
    same_answer(pair, "/v3/auth/user/add", '{"name": "alice", "password": "pa"}')
    same_answer(pair, "/v3/auth/role/add", '{"name": "reader"}')
    same_answer(pair, "/v3/auth/role/grant", '{"name": "reader", "perm": {"permType": "READ", '
                                            '"key": "YQ==", "range_end": "Yg=="}}')
    same_answer(pair, "/v3/auth/user/grant", '{"user": "alice", "role": "reader"}')
    same_answer(pair, "/v3/auth/enable", "{}")
    try:
        same_answer(pair, "/v3/kv/range", '{"key": "Zm9v"}')  # user name is empty
        same_answer(pair, "/v3/kv/range", '{"key": "Zm9v"}', {"Authorization": "bogus"})  # 401
        answers = []
        for t in pair:
            tokens = [json.loads(post(t.gateway, "/v3/auth/authenticate", json.dumps(
                {"name": name, "password": pw}))[2])["token"]
                for name, pw in (("root", "pw"), ("alice", "pa"))]
            answers.append([masked(post(t.gateway, "/v3/kv/range", '{"key": "Zm9v"}', h)[2])
                            for h in ({"Authorization": tokens[0]},
                                      {"Grpc-Metadata-Token": tokens[0]})])
            # A watch is checked when created: no token, a bogus one, a user without the
            # permission are refused at once (etcd: created and canceled, watch_id -1).
            for headers, key in (({}, "Zm9v"), ({"Authorization": "bogus"}, "Zm9v"),
                                 ({"Authorization": tokens[1]}, "Zm9v"),
                                 ({"Authorization": tokens[1]}, "YQ==")):
                status, lines = stream_lines(t.gateway, "/v3/watch", json.dumps(
                    {"create_request": {"key": key}}), 1, headers)
                answers[-1].append((status, [masked(x) for x in lines]))
        assert answers[1] == answers[0]
        assert '"kvs"' in answers[0][0] and answers[0][0] == answers[0][1]
        assert [x[1][0].count("canceled") for x in answers[0][2:]] == [1, 1, 1, 0]
    finally:
        for t in pair:
            _, _, text = post(t.gateway, "/v3/auth/authenticate",
                              '{"name": "root", "password": "pw"}')
            status, _, _ = post(t.gateway, "/v3/auth/disable", "{}",
                                {"Authorization": json.loads(text)["token"]})
            assert status == 200


# ------------------------------------------------------------------------------ listeners
def test_tls_client_certificates_and_unix_socket(tmp_path):
    """An https:// gateway with --client-cert-auth admits only clients with a certificate
    the CA signed; a unix:// one serves the same API on a socket file."""
    pki = make_pki(tmp_path)
    port = free_ports(1)[0]
    sock = os.path.join(str(tmp_path), "gw.sock")
    cluster = LocalCluster(str(tmp_path / "m"), 1, extra_args=[
        *FAST_ARGS, "--client-cert-auth", "--listen-client-http-urls",
        f"https://127.0.0.1:{port},unix://{sock}"],
        tls=(str(pki.ca), str(pki.server_cert), str(pki.server_key)))
    with running(cluster):
        cluster.wait_listening()
        good = ssl.create_default_context(cafile=str(pki.ca))
        good.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=good,
                                           timeout=HTTP_TIMEOUT_S)
        deadline = time.monotonic() + 30
        while True:  # until a leader is known
            conn.request("POST", "/v3/kv/put", body=b'{"key": "dA==", "value": "MQ=="}')
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert resp.status == 200, body
        conn.close()
        no_cert = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            c = http.client.HTTPSConnection("127.0.0.1", port, context=no_cert,
                                            timeout=HTTP_TIMEOUT_S)
            c.request("POST", "/v3/kv/range", body=b'{"key": "dA=="}')
            c.getresponse().read()
        unix = http.client.HTTPConnection("localhost", timeout=HTTP_TIMEOUT_S)
        unix.sock = socket.socket(socket.AF_UNIX)
        unix.sock.connect(sock)
        unix.request("POST", "/v3/kv/range", body=b'{"key": "dA=="}')
        doc = json.loads(unix.getresponse().read())
        unix.close()
        assert doc["kvs"][0]["value"] == "MQ=="


# ------------------------------------------------------------------------------ random
def test_random_kv_and_lease_requests(tmp_path):
    """The differential's random KV, Txn and Lease requests, through both gateways."""
    with gateways(str(tmp_path)) as (etcd, raftkv):
        assert differential.run(etcd, raftkv, seed=11, examples=10, ops_per_example=40) == 400


def main(argv=None):
    def run_fn(etcd, raftkv, seed, count, log=None, trace=None):
        return differential.run(etcd, raftkv, seed, count, log=log, trace=trace)
    import argparse
    import tempfile
    p = argparse.ArgumentParser(description="the KV/Lease differential through the gateways")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--examples", type=int, default=40)
    args = p.parse_args(argv)
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="raftkv-gw-") as root, \
                gateways(root) as (etcd, raftkv):
            n = run_fn(etcd, raftkv, seed, args.examples, log=print)
        print(f"seed {seed}: {n} requests, same answers ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
