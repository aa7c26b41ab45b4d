"""raftkvctl: main(argv) against a native server over RichFakeService, output captured."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest

from raftkv.cli import ctl
from tests.unit.client.richfake import RichFakeService, ServerThread


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(RichFakeService())
    yield srv
    srv.stop()


def ctl_run(server, *argv, stdin=None, monkeypatch=None):
    out = io.StringIO()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = ctl.main(["--endpoints", server.endpoint, "--command-timeout", "3", *argv], out=out)
    return rc, out.getvalue()


def test_put_get_del_simple(server):
    assert ctl_run(server, "put", "foo", "bar") == (0, "OK\n")
    assert ctl_run(server, "put", "foo2", "baz") == (0, "OK\n")
    assert ctl_run(server, "get", "foo") == (0, "foo\nbar\n")
    assert ctl_run(server, "get", "foo", "--prefix") == (0, "foo\nbar\nfoo2\nbaz\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--keys-only") == (0, "foo\nfoo2\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--print-value-only") == (0, "bar\nbaz\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--count-only") == (0, "2\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--limit", "1") == (0, "foo\nbar\n")
    assert ctl_run(server, "get", "fo", "--from-key", "--keys-only") == (0, "foo\nfoo2\n")
    assert ctl_run(server, "del", "foo", "--prefix", "--prev-kv") == (
        0, "2\nfoo\nbar\nfoo2\nbaz\n")
    assert ctl_run(server, "get", "foo") == (0, "")


def test_json_and_table_output(server):
    ctl_run(server, "put", "j", "v")
    rc, out = ctl_run(server, "-w", "json", "get", "j")
    resp = json.loads(out)
    assert rc == 0
    assert base64.b64decode(resp["kvs"][0]["value"]) == b"v"
    assert resp["count"] == 1
    rc, out = ctl_run(server, "-w", "table", "get", "j")
    assert "| KEY | VALUE |" in out
    rc, out = ctl_run(server, "-w", "table", "member", "list")
    assert "PEER ADDRS" in out and "m1" in out


def test_txn_from_stdin(server, monkeypatch):
    ctl_run(server, "put", "key1", "1")
    text = 'value("key1") = "1"\n\nput key1 "overwrote"\nget key1\n\nput key1 "failed"\n'
    rc, out = ctl_run(server, "txn", "-i", stdin=text, monkeypatch=monkeypatch)
    assert (rc, out) == (0, "SUCCESS\n\nOK\n\nkey1\noverwrote\n")
    rc, out = ctl_run(server, "txn", "-i", stdin=text, monkeypatch=monkeypatch)
    assert (rc, out) == (0, "FAILURE\n\nOK\n")


def test_txn_parser():
    cmps, ok, fail = ctl.parse_txn('mod("a") > "0"\nversion("b") != "3"\n\ndel a --prefix\n')
    assert [c.to_wire()["target"] for c in cmps] == [2, 0]
    assert ok[0]["request_delete_range"]["range_end"] == b"b"
    assert fail == []
    with pytest.raises(ValueError):
        ctl.parse_txn("nonsense\n")


def test_lease_verbs(server):
    rc, out = ctl_run(server, "lease", "grant", "30")
    assert rc == 0 and out.endswith("granted with TTL(30s)\n")
    lease_id = out.split()[1]
    assert ctl_run(server, "put", "lk", "v", "--lease", lease_id)[0] == 0
    rc, out = ctl_run(server, "lease", "timetolive", lease_id, "--keys")
    assert "remaining(30s)" in out and "attached keys([lk])" in out
    assert ctl_run(server, "lease", "keep-alive", "--once", lease_id)[1] == (
        f"lease {lease_id} keepalived with TTL(30)\n")
    assert lease_id in ctl_run(server, "lease", "list")[1]
    assert ctl_run(server, "lease", "revoke", lease_id) == (0, f"lease {lease_id} revoked\n")


def test_lease_keep_alive_of_a_lease_that_is_gone(server, capsys):
    """As etcdctl 3.4 (checked against etcd 3.4.23, tests/etcdctl/test_lease.py): the member
    answers TTL 0; simple output says the lease expired or was revoked and exits 0, json
    prints nothing, --once fails with "requested lease not found" and exit status 2."""
    lease_id = ctl_run(server, "lease", "grant", "30")[1].split()[1]
    rc, out = ctl_run(server, "-w", "json", "lease", "keep-alive", "--once", lease_id)
    resp = json.loads(out)  # clientv3's LeaseKeepAliveResponse: the header inline
    assert rc == 0 and list(resp) == ["cluster_id", "member_id", "revision", "raft_term", "ID",
                                      "TTL"], out
    assert (resp["ID"], resp["TTL"]) == (int(lease_id, 16), 30)
    ctl_run(server, "lease", "revoke", lease_id)
    capsys.readouterr()
    assert ctl_run(server, "lease", "keep-alive", lease_id) == (
        0, f"lease {lease_id} expired or revoked.\n")
    assert ctl_run(server, "lease", "keep-alive", "abc") == (
        0, "lease 0000000000000abc expired or revoked.\n")
    assert ctl_run(server, "-w", "json", "lease", "keep-alive", lease_id) == (0, "")
    assert capsys.readouterr().err == ""
    for fmt in ("simple", "json"):
        assert ctl_run(server, "-w", fmt, "lease", "keep-alive", "--once", lease_id) == (2, "")
        assert capsys.readouterr().err == "Error: etcdserver: requested lease not found\n"


def test_endpoint_and_compaction(server):
    rc, out = ctl_run(server, "endpoint", "health")
    assert rc == 0 and "is healthy" in out
    rc, out = ctl_run(server, "-w", "table", "endpoint", "status")
    assert rc == 0 and "FAULT TOLERANCE" in out and "3.4.23" in out
    assert ctl_run(server, "compaction", "1") == (0, "compacted revision 1\n")


def test_errors_exit_1(server, capsys):
    rc, _ = ctl_run(server, "lease", "revoke", "abc")
    assert rc == 1
    assert "Error: failed to revoke lease (etcdserver: requested lease not found)" in \
        capsys.readouterr().err  # etcdctl's wording


def test_load_jsonl_and_csv(server, tmp_path, capsys):
    jl = tmp_path / "data.jsonl"
    jl.write_text("".join(json.dumps({"key": f"jl/{i}", "value": f"v{i}"}) + "\n"
                          for i in range(300)) + '{"key": "jl/obj", "value": {"a": 1}}\n')
    rc, out = ctl_run(server, "load", str(jl))
    assert rc == 0
    assert out.startswith("loaded 301 keys in ") and out.endswith(", 0 failed\n")
    assert ctl_run(server, "get", "jl/obj", "--print-value-only") == (0, '{"a":1}\n')
    cv = tmp_path / "data.csv"
    cv.write_text("key,value\ncsv/1,a\ncsv/2,\"b,c\"\nbroken\n")
    rc, out = ctl_run(server, "-w", "json", "load", str(cv))
    summary = json.loads(out)
    assert rc == 1
    assert (summary["loaded"], summary["failed"]) == (2, 1)
    assert ctl_run(server, "get", "csv/2", "--print-value-only") == (0, "b,c\n")


def test_subprocess_with_env_endpoints(server):
    env = dict(os.environ, RAFTKVCTL_ENDPOINTS=server.endpoint)
    proc = subprocess.run([sys.executable, "-m", "raftkv.cli", "put", "sp", "1"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "OK\n")


def test_watch_max_events(server):
    import threading

    def writer():
        for i in range(3):
            threading.Event().wait(0.3 if i == 0 else 0.05)
            ctl_run(server, "put", "wk", str(i))

    t = threading.Thread(target=writer)
    t.start()
    rc, out = ctl_run(server, "watch", "wk", "--max-events", "2")
    t.join(10)
    assert rc == 0
    assert out == "PUT\nwk\n0\nPUT\nwk\n1\n"


def test_global_flags_after_the_verb(server):
    """As with etcdctl: `raftkvctl endpoint status -w table`, `get k --write-out=json`."""
    ctl_run(server, "put", "gf", "v")
    rc, out = ctl_run(server, "get", "gf", "-w", "table")
    assert rc == 0 and "| KEY | VALUE |" in out
    rc, out = ctl_run(server, "get", "gf", "--write-out=json")
    assert rc == 0 and json.loads(out)["count"] == 1
    assert ctl.hoist_global_flags(["put", "k", "--", "-w"]) == ["put", "k", "--", "-w"]
    assert ctl.hoist_global_flags(["member", "list", "--endpoints", "a:1"]) == [
        "--endpoints", "a:1", "member", "list"]
