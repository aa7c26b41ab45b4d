"""raftkvctl: main(argv) against a native server over RichFakeService, output captured."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest

from raftkv.cli import ctl, ctl_format
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
    # etcdctl prints each key's (empty) value line with --keys-only
    assert ctl_run(server, "get", "foo", "--prefix", "--keys-only") == (0, "foo\n\nfoo2\n\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--print-value-only") == (0, "bar\nbaz\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--count-only") == (0, "2\n")
    assert ctl_run(server, "get", "foo", "--prefix", "--limit", "1") == (0, "foo\nbar\n")
    assert ctl_run(server, "get", "fo", "--from-key", "--keys-only") == (0, "foo\n\nfoo2\n\n")
    assert ctl_run(server, "del", "foo", "--prefix", "--prev-kv") == (
        0, "2\nfoo\nbar\nfoo2\nbaz\n")
    assert ctl_run(server, "get", "foo") == (0, "")


def test_json_and_table_output(server, capsys):
    ctl_run(server, "put", "j", "v")
    rc, out = ctl_run(server, "-w", "json", "get", "j")
    resp = json.loads(out)
    assert rc == 0
    assert base64.b64decode(resp["kvs"][0]["value"]) == b"v"
    assert resp["count"] == 1
    capsys.readouterr()
    # etcdctl 3.4 has no table for get; raftkvctl draws one (issue #5)
    rc, out = ctl_run(server, "-w", "table", "get", "j")
    assert rc == 0 and "| KEY | VALUE |" in out and "|   j |     v |" in out, out
    rc, out = ctl_run(server, "-w", "table", "get", "j", "--keys-only")
    assert rc == 0 and "| KEY |" in out and "VALUE" not in out, out
    # ... but not for put, del, txn or lease: an error, exit 4, as etcdctl
    assert ctl_run(server, "-w", "table", "put", "j", "w") == (4, "")
    assert capsys.readouterr().err == "Error: table not supported as output format\n"
    rc, out = ctl_run(server, "-w", "table", "member", "list")
    assert "PEER ADDRS" in out and "m1" in out
    # etcdctl's tablewriter: headers centred, cells right-aligned
    table = io.StringIO()
    ctl_format.write_table(["NAME", "X"], [["a", "bbbbb"]], table)
    assert table.getvalue().splitlines()[1:4] == ["| NAME |   X   |", "+------+-------+",
                                                  "|    a | bbbbb |"]


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
    # etcdctl 3.4's columns, and raftkv's revision and fault tolerance (issue #5) before ERRORS
    assert rc == 0 and "| IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | REVISION " \
        "| FAULT TOLERANCE | ERRORS |" in out
    assert "3.4.23" in out
    rev = json.loads(ctl_run(server, "-w", "json", "get", "nothing")[1])["header"]["revision"]
    rc, out = ctl_run(server, "endpoint", "status")
    assert rc == 0 and out.rstrip("\n").endswith(f", {rev}, 1, "), out
    rc, out = ctl_run(server, "-w", "json", "endpoint", "status")
    [st] = json.loads(out)
    assert (st["Status"]["header"]["revision"], st["FaultTolerance"]) == (rev, 1)
    rc, out = ctl_run(server, "-w", "fields", "endpoint", "status")
    assert '"Revision" : %d\n' % rev in out and '"FaultTolerance" : 1\n' in out
    assert ctl_run(server, "compaction", "1") == (0, "compacted revision 1\n")
    # etcdctl prints the same line in every format
    assert ctl_run(server, "-w", "json", "compaction", "1") == (0, "compacted revision 1\n")


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


def test_load_names_what_is_wrong_with_a_json_line(server, tmp_path):
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"key": "ok", "value": "v"}\n{"key": "novalue"}\nnot json\n[1, 2]\n'
                  '{"key": 7, "value": [1]}\n')
    rc, out = ctl_run(server, "-w", "json", "load", str(jl))
    summary = json.loads(out)
    assert rc == 1 and (summary["loaded"], summary["failed"]) == (2, 3)
    path = str(jl)
    assert summary["errors"] == [
        f'{path}:2: bad JSON line: expected an object with "key" and "value", '
        "got an object with ['key']",
        f"{path}:3: bad JSON line: Expecting value: line 1 column 1 (char 0)",
        f'{path}:4: bad JSON line: expected an object with "key" and "value", got a JSON list']
    # a key that is not a string is stored as compact JSON, as a value is
    assert ctl_run(server, "get", "7", "--print-value-only") == (0, "[1]\n")


def test_subprocess_with_env_endpoints(server):
    env = dict(os.environ, RAFTKVCTL_ENDPOINTS=server.endpoint)
    proc = subprocess.run([sys.executable, "-m", "raftkv.cli", "put", "sp", "1"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "OK\n")


@pytest.mark.parametrize("argv", [["version"], ["snapshot", "status", "missing.db"]])
def test_python_m_ctl_loads_ctl_once(argv, tmp_path):
    """`python -m raftkv.cli.ctl` runs ctl.py as __main__: nothing it imports may import
    raftkv.cli.ctl again (raftkvutl's code, whose parsers raftkvctl builds, once did), or the
    module would load a second time with its own copy of every global. -X importtime lists
    each module imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "raftkv.cli.ctl", *argv],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "raftkv.cli.ctl_format" in imported and "raftkv.utl.main" in imported, proc.stderr
    assert "raftkv.cli.ctl" not in imported
    assert proc.returncode == (0 if argv == ["version"] else 1), proc.stderr


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
    rc, out = ctl_run(server, "member", "list", "-w", "table")
    assert rc == 0 and "| ID | STATUS  | NAME |" in out
    rc, out = ctl_run(server, "get", "gf", "--write-out=json")
    assert rc == 0 and json.loads(out)["count"] == 1
    assert ctl.hoist_global_flags(["put", "k", "--", "-w"]) == ["put", "k", "--", "-w"]
    assert ctl.hoist_global_flags(["member", "list", "--endpoints", "a:1"]) == [
        "--endpoints", "a:1", "member", "list"]


def test_etcdctl_json_omits_zero_fields_and_wraps_txn_responses(server, monkeypatch):
    """etcdctl's -w json is Go's encoding/json of the protobuf structs: compact, zero values
    left out (lease 0, more false, deleted 0), a txn's responses in their oneof wrapper
    (found by tests/etcdctl/test_raftkvctl_conformance.py)."""
    ctl_run(server, "put", "pj", "v")
    rc, out = ctl_run(server, "get", "pj", "-w", "json")
    assert rc == 0 and " " not in out
    resp = json.loads(out)
    assert list(resp) == ["header", "kvs", "count"]
    assert "lease" not in resp["kvs"][0] and "more" not in resp
    rc, out = ctl_run(server, "txn", "-w", "json", stdin='\nget pj\ndel nothing\n\n\n',
                      monkeypatch=monkeypatch)
    ops = json.loads(out)["responses"]
    assert [list(op["Response"]) for op in ops] == [["ResponseRange"], ["ResponseDeleteRange"]]
    assert "deleted" not in ops[1]["Response"]["ResponseDeleteRange"]
    assert ctl_format.pb_json({"a": 0, "b": False, "c": "", "d": [], "e": b"", "f": {"g": 1}}) == {
        "f": {"g": 1}}


def test_etcdctl_fields_output(server, monkeypatch):
    ctl_run(server, "put", "fk", 'a"b')
    rc, out = ctl_run(server, "get", "fk", "-w", "fields")
    lines = out.splitlines()
    assert rc == 0 and [ln.split(" : ")[0] for ln in lines] == [
        '"ClusterID"', '"MemberID"', '"Revision"', '"RaftTerm"', '"Key"', '"CreateRevision"',
        '"ModRevision"', '"Version"', '"Value"', '"Lease"', '"More"', '"Count"']
    assert lines[8] == '"Value" : "a\\"b"' and lines[10:] == ['"More" : false', '"Count" : 1']
    rc, out = ctl_run(server, "put", "fk", "c", "--prev-kv", "-w", "fields")
    assert '"PrevValue" : "a\\"b"' in out.splitlines()
    rc, out = ctl_run(server, "del", "fk", "-w", "fields")
    assert out.splitlines()[4] == '"Deleted" : 1'
    rc, out = ctl_run(server, "txn", "-w", "fields", stdin='\nget nothing\n\n\n',
                      monkeypatch=monkeypatch)
    assert '"Succeeded" : true' in out and '"Count" : 0' in out
    assert ctl_format.go_quote("a\tb\x01\\") == '"a\\tb\\x01\\\\"'


def test_sort_flags_any_case_and_bad_values(server, capsys):
    """etcdctl upper-cases --sort-by and --order, and exits 4 (ExitBadFeature) on others
    (the order itself: get-sorted in tests/etcdctl/test_raftkvctl_conformance.py)."""
    ctl_run(server, "put", "so/a", "2")
    assert ctl_run(server, "get", "so/", "--prefix", "--sort-by=value", "--order=descend",
                   "--keys-only") == (0, "so/a\n\n")
    capsys.readouterr()
    assert ctl_run(server, "get", "so/", "--order=up") == (4, "")
    assert capsys.readouterr().err == "Error: bad sort order up\n"
    assert ctl_run(server, "get", "so/", "--sort-by=size") == (4, "")
    assert capsys.readouterr().err == "Error: bad sort target size\n"


def test_snapshot_save_to_many_endpoints_as_etcdctl(server, tmp_path, capsys):
    out = io.StringIO()
    rc = ctl.main(["--endpoints", f"{server.endpoint},{server.endpoint}", "snapshot", "save",
                   str(tmp_path / "s.db")], out=out)
    assert rc == 5 and capsys.readouterr().err == (
        "Error: snapshot must be requested to one selected node, not multiple "
        f"[{server.endpoint} {server.endpoint}]\n")


def test_snapshot_save_failure_exits_5_as_etcdctl(server, tmp_path, monkeypatch, capsys):
    from raftkv.api import wire
    from raftkv.client import AsyncClient

    async def refused(self, f):
        raise wire.RaftkvError("PERMISSION_DENIED")

    monkeypatch.setattr(AsyncClient, "snapshot", refused)
    assert ctl_run(server, "snapshot", "save", str(tmp_path / "s.db")) == (5, "")
    assert capsys.readouterr().err == "Error: etcdserver: permission denied\n"
    assert not os.listdir(tmp_path)


def test_version_in_every_format(server):
    """raftkvctl's own version and the API version, in etcdctl's two lines; no server asked
    (an endpoint that does not answer is fine), arguments ignored."""
    import raftkv

    want = f"raftkvctl version: {raftkv.__version__}\nAPI version: 3.4\n"
    for fmt in ("simple", "json", "table", "fields"):
        out = io.StringIO()
        assert ctl.main(["--endpoints", "127.0.0.1:1", "-w", fmt, "version", "x"],
                        out=out) == 0
        assert out.getvalue() == want


def test_argument_errors_exit_128_with_etcdctls_words(server, capsys):
    """etcdctl's ExitBadArgs (128) and wording (checked by hand against etcdctl 3.4.23)."""
    cases = [
        (("member", "add"), "member name not provided"),
        (("member", "add", "x", "http://h:1"),
         "too many arguments, did you mean --peer-urls=http://h:1"),
        (("member", "add", "x"), "member peer urls not provided"),
        (("member", "remove"), "member ID is not provided"),
        (("member", "update"), "member ID is not provided"),
        (("member", "update", "1", "2", "--peer-urls=http://h:1"), "member ID is not provided"),
        (("member", "update", "zzz", "--peer-urls=http://127.0.0.1:1"),
         'bad member ID arg (strconv.ParseUint: parsing "zzz": invalid syntax), expecting ID '
         'in Hex'),
        (("member", "update", "0x12", "--peer-urls=http://127.0.0.1:1"),
         'bad member ID arg (strconv.ParseUint: parsing "0x12": invalid syntax), expecting ID '
         'in Hex'),
        (("member", "update", "12"), "member peer urls not provided"),
        (("member", "promote", "zz"), 'bad member ID arg (strconv.ParseUint: parsing "zz": '
                                      'invalid syntax), expecting ID in Hex'),
        (("member", "remove", "1" * 17), 'bad member ID arg (strconv.ParseUint: parsing "'
                                         + "1" * 17 + '": value out of range), expecting ID in '
                                                      'Hex'),
        (("lease", "revoke", "zzz"), 'bad lease ID arg (strconv.ParseInt: parsing "zzz": '
                                     'invalid syntax), expecting ID in Hex'),
        (("lease", "timetolive", "0x12"), 'bad lease ID arg (strconv.ParseInt: parsing '
                                          '"0x12": invalid syntax), expecting ID in Hex'),
        (("lease", "keep-alive", "f" * 16), 'bad lease ID arg (strconv.ParseInt: parsing "'
                                            + "f" * 16 + '": value out of range), expecting '
                                                         'ID in Hex'),
        (("put", "k", "v", "--lease=zz"), 'bad lease ID (strconv.ParseInt: parsing "zz": '
                                          'invalid syntax), expecting ID in Hex'),
        (("move-leader",), "move-leader command needs 1 argument"),
        (("move-leader", "a", "b"), "move-leader command needs 1 argument"),
        (("move-leader", "0x1"), 'strconv.ParseUint: parsing "0x1": invalid syntax'),
        (("lock",), "lock takes a lock name argument and an optional command to execute"),
        (("elect",), "elect takes one election name argument and an optional proposal "
                     "argument"),
        (("elect", "e"), "no proposal argument but -l not set"),
        (("elect", "-l", "e", "p"), "proposal given but -l is set"),
    ]
    for argv, message in cases:
        assert ctl_run(server, *argv) == (128, ""), argv
        assert capsys.readouterr().err == f"Error: {message}\n", argv
    # errors etcdctl exits 1 with
    for argv, message in [
            (("member", "add", "x", "--peer-urls=bad"),
             "URL scheme must be http, https, unix, or unixs: bad"),
            (("member", "add", "x", "--peer-urls=http://h"),
             'URL address does not have the form "host:port": http://h'),
            (("member", "add", "x", "--peer-urls=http://h:1/p"),
             "URL must not contain a path: http://h:1/p"),
            (("member", "update", "12", "--peer-urls=http://127.0.0.1:1,bad"),
             "URL scheme must be http, https, unix, or unixs: bad"),
            (("member", "update", "12", "--peer-urls=,"),
             "URL scheme must be http, https, unix, or unixs: "),
            (("lock", "l", "--ttl", "x", "true"),
             'invalid argument "x" for "--ttl" flag: strconv.ParseInt: parsing "x": invalid '
             'syntax'),
            (("lock", "l", "sh", "-c", "true"), "unknown shorthand flag: 'c' in -c"),
            (("move-leader", "2"), "etcdserver: bad leader transferee"),
            (("member", "remove", "2"), "etcdserver: member not found")]:
        assert ctl_run(server, *argv) == (1, ""), argv
        assert capsys.readouterr().err == f"Error: {message}\n", argv


def test_member_add_remove_promote_outputs(server, capsys):
    rc, out = ctl_run(server, "member", "add", "new", "--peer-urls=http://127.0.0.1:9")
    assert rc == 0 and out == (  # %16x: the ID padded with spaces, as etcdctl's
        "Member               2a added to cluster                1\n\n"
        'ETCD_NAME="new"\n'
        'ETCD_INITIAL_CLUSTER="m1=http://127.0.0.1:2380"\n'
        'ETCD_INITIAL_ADVERTISE_PEER_URLS="http://127.0.0.1:9"\n'
        'ETCD_INITIAL_CLUSTER_STATE="existing"\n')
    rc, out = ctl_run(server, "member", "add", "new", "--peer-urls=http://127.0.0.1:9",
                      "--learner", "-w", "json")
    resp = json.loads(out)  # the MemberAddResponse, zero fields left out
    assert rc == 0 and resp["member"] == {"ID": 42, "peerURLs": ["http://127.0.0.1:9"],
                                          "isLearner": True}
    assert [m["ID"] for m in resp["members"]] == [42, 1]
    assert ctl_run(server, "member", "promote", "2a") == (
        0, "Member               2a promoted in cluster                1\n")
    assert ctl_run(server, "member", "remove", "2A") == (
        0, "Member               2a removed from cluster                1\n")
    assert json.loads(ctl_run(server, "member", "remove", "2a", "-w", "json")[1])[
        "members"][0]["name"] == "m1"
    capsys.readouterr()
    for fmt, code in (("table", 4), ("fields", 4)):  # done, then etcdctl's printer error
        assert ctl_run(server, "member", "remove", "2a", "-w", fmt) == (code, "")
        assert capsys.readouterr().err == f"Error: {fmt} not supported as output format\n"


def test_endpoint_hashkv_outputs(server, capsys):
    ep = server.endpoint
    assert ctl_run(server, "endpoint", "hashkv") == (0, f"{ep}, 1084519789\n")
    [r] = json.loads(ctl_run(server, "endpoint", "hashkv", "-w", "json")[1])
    assert r["Endpoint"] == ep and r["HashKV"]["hash"] == 1084519789 and \
        r["HashKV"]["compact_revision"] == -1 and "revision" in r["HashKV"]["header"]
    rc, out = ctl_run(server, "endpoint", "hashkv", "-w", "table")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith("|")]
    assert rc == 0 and rows == [["ENDPOINT", "HASH"], [ep, "1084519789"]], out
    rc, out = ctl_run(server, "endpoint", "hashkv", "-w", "fields")
    assert out.splitlines()[4:] == [f'"Endpoint" : "{ep}"', '"Hash" : 1084519789', ""]
    capsys.readouterr()
    # a failing endpoint: a stderr line each, the others printed, the last error, exit 1
    assert ctl_run(server, "endpoint", "hashkv", "--rev", "99999", "-w", "json") == (1, "[]\n")
    assert capsys.readouterr().err == (
        f"Failed to get the hash of endpoint {ep} (etcdserver: mvcc: required revision is a "
        "future revision)\nError: etcdserver: mvcc: required revision is a future revision\n")


def test_alarm_defrag_move_leader_outputs(server, capsys):
    server.service.alarm_raised = True
    assert ctl_run(server, "alarm", "list") == (0, "memberID:1 alarm:NOSPACE \n")
    # etcd 3.4 sends no header with Alarm: etcdctl's json has none
    assert ctl_run(server, "alarm", "list", "-w", "json") == (
        0, '{"alarms":[{"memberID":1,"alarm":1}]}\n')
    assert ctl_run(server, "alarm", "disarm") == (0, "memberID:1 alarm:NOSPACE \n")
    assert ctl_run(server, "alarm", "disarm", "-w", "json") == (0, "{}\n")
    assert ctl_run(server, "alarm", "list") == (0, "")
    capsys.readouterr()
    assert ctl_run(server, "alarm", "list", "-w", "table") == (4, "")
    line = f"Finished defragmenting etcd member[{server.endpoint}]\n"
    assert ctl_run(server, "defrag", "-w", "json") == (0, line)  # every format: this line
    capsys.readouterr()
    # --data-dir: the offline defrag of that dir (tests/unit/utl/test_defrag.py), not the server's
    assert ctl_run(server, "defrag", "--data-dir", "/x") == (1, "")
    assert capsys.readouterr().err == \
        "Failed to defragment etcd data[/x] (/x: data dir does not exist)\n"
    assert ctl_run(server, "move-leader", "1") == (0, "Leadership transferred from 1 to 1\n")
    assert ctl_run(server, "move-leader", "1", "-w", "json") == (0, "{}\n")
    capsys.readouterr()
    assert ctl_run(server, "move-leader", "1", "-w", "fields") == (4, "")
    assert capsys.readouterr().err == "Error: fields not supported as output format\n"


def test_lock_runs_a_command_holding_the_lock(server, capfd, tmp_path):
    env_file = tmp_path / "env"
    rc, _ = ctl_run(server, "lock", "l1", "--", "sh", "-c",
                    f'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV" > {env_file}; echo ran')
    assert rc == 0 and capfd.readouterr().out == "ran\n"
    key, rev = env_file.read_text().split()
    assert key.startswith("l1/") and int(rev) > 0  # etcdctl's key: NAME/<lease id in hex>
    assert ctl_run(server, "get", "l1/", "--prefix") == (0, "")  # released
    assert ctl_run(server, "lock", "l1", "sh", "--", "-c", "exit 3") == (1, "")
    assert capfd.readouterr().err == "Error: exit status 3\n"
    assert ctl_run(server, "lock", "l1", "no-such-command-x") == (1, "")
    assert capfd.readouterr().err == \
        'Error: exec: "no-such-command-x": executable file not found in $PATH\n'
    # as etcdctl: the session's lease is left to expire (its key is gone already)
    assert ctl_run(server, "lease", "list")[1].startswith("found 3 leases\n")


def _until_lines(proc, n):
    lines = []
    while len(lines) < n:
        line = proc.stdout.readline()
        assert line, f"ended early; stderr: {proc.stderr.read()}"
        lines.append(line)
    return lines


def test_lock_and_elect_hold_until_interrupted(server):
    """Without a command, lock prints its key and holds it until SIGINT or SIGTERM; elect
    prints the leader's key and value and leads until then; elect -l prints each leader.
    All exit 0 and leave no key behind, as etcdctl's."""
    import signal

    env = dict(os.environ, RAFTKVCTL_ENDPOINTS=server.endpoint)

    def start(*argv):
        return subprocess.Popen([sys.executable, "-m", "raftkv.cli", *argv], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [start("lock", "hl"), start("elect", "he", "p1")]
    try:
        key = _until_lines(procs[0], 2)[0].strip()
        assert key.startswith("hl/")
        assert _until_lines(procs[1], 2)[1] == "p1\n"
        procs.append(start("elect", "-l", "he", "-w", "json"))
        assert base64.b64decode(json.loads(_until_lines(procs[2], 1)[0])["kvs"][0][
            "value"]) == b"p1"
        for p, sig in zip(procs, (signal.SIGINT, signal.SIGTERM, signal.SIGINT)):
            p.send_signal(sig)
            assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert ctl_run(server, "get", "h", "--prefix") == (0, "")


def _watch_with_writes(server, argv, writes):
    """raftkvctl watch ARGV while another thread makes writes (ctl argv lists) once the
    watch is likely open (a put before it would only be missed, and the test wait)."""
    import threading

    def writer():
        threading.Event().wait(0.3)
        for w in writes:
            ctl_run(server, *w)

    t = threading.Thread(target=writer)
    t.start()
    try:
        return ctl_run(server, "watch", *argv)
    finally:
        t.join(10)


def test_watch_json_fields_and_table_as_etcdctl(server, capsys):
    """etcdctl 3.4 prints clientv3's WatchResponse: json is the header, the events (a put's
    type 0 left out, a delete's 1) and CompactRevision, Canceled, Created in full; fields the
    header and each event's lines; table is its error at the first response, exit 4."""
    ctl_run(server, "put", "wj", "old")
    rc, out = _watch_with_writes(server, ["wj", "--max-events", "2", "-w", "json"],
                                 [("put", "wj", "new"), ("del", "wj")])
    assert rc == 0
    put, dele = [json.loads(line) for line in out.splitlines()]
    rev = put["Header"]["revision"]
    assert put == {"Header": {"cluster_id": 1, "member_id": 1, "revision": rev,
                              "raft_term": 2},
                   "Events": [{"kv": {"key": "d2o=", "create_revision": rev - 1,
                                      "mod_revision": rev, "version": 2, "value": "bmV3"}}],
                   "CompactRevision": 0, "Canceled": False, "Created": False}
    assert list(put) == ["Header", "Events", "CompactRevision", "Canceled", "Created"]
    assert dele["Events"] == [{"type": 1, "kv": {"key": "d2o=", "mod_revision": rev + 1}}]
    ctl_run(server, "put", "wf", "1")
    rc, out = _watch_with_writes(server, ["wf", "--max-events", "1", "-w", "fields"],
                                 [("put", "wf", "2")])
    rev = server.service.revision
    assert (rc, out) == (0, '"ClusterID" : 1\n"MemberID" : 1\n'
                            f'"Revision" : {rev}\n"RaftTerm" : 2\n"Type" : PUT\n'
                            f'"Key" : "wf"\n"CreateRevision" : {rev - 1}\n'
                            f'"ModRevision" : {rev}\n"Version" : 2\n"Value" : "2"\n'
                            '"Lease" : 0\n')
    capsys.readouterr()
    rc, out = _watch_with_writes(server, ["wt", "-w", "table"], [("put", "wt", "1")])
    assert (rc, out) == (4, "")
    assert capsys.readouterr().err == "Error: table not supported as output format\n"


def test_watch_canceled_by_compaction_as_etcdctl(server, capsys):
    server.service.compacted = 3
    try:
        rc, out = ctl_run(server, "watch", "wc", "--rev", "2", "-w", "json")
    finally:
        server.service.compacted = 0
    assert rc == 5
    assert json.loads(out) == {"Header": {"cluster_id": 1, "member_id": 1, "raft_term": 2},
                               "Events": [], "CompactRevision": 3, "Canceled": True,
                               "Created": False}
    assert capsys.readouterr().err == (
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
        "Error: watch is canceled by the server\n")


_HDR_FIELDS = '"ClusterID" : 1\n"MemberID" : 1\n"Revision" : {rev}\n"RaftTerm" : 2\n'
_PERMS_FIELDS = ('"PermType" :  READ\n"Key" : "a/"\n"RangeEnd" : "a0"\n'
                 '"PermType" :  READWRITE\n"Key" : "k"\n"RangeEnd" : ""\n'
                 '"PermType" :  WRITE\n"Key" : "z"\n"RangeEnd" : "\\x00"\n')


def test_auth_verbs_json_fields_and_table_as_etcdctl(server, capsys, monkeypatch):
    """Each as etcdctl 3.4.23 printed it against etcd 3.4.23 with auth on."""
    rev = server.service.revision
    hdr = {"cluster_id": 1, "member_id": 1, "revision": rev, "raft_term": 2}
    hdr_fields = _HDR_FIELDS.format(rev=rev)
    changes = [("user", "add", "bob:pw"), ("user", "delete", "bob"),
               ("user", "grant-role", "alice", "reader"),
               ("user", "revoke-role", "alice", "reader"), ("role", "add", "r"),
               ("role", "delete", "r"), ("role", "grant-permission", "r", "read", "k"),
               ("role", "revoke-permission", "r", "k")]
    for argv in changes:
        assert ctl_run(server, "-w", "json", *argv) == (0, json.dumps(
            {"header": hdr}, separators=(",", ":")) + "\n"), argv
        assert ctl_run(server, "-w", "fields", *argv) == (0, hdr_fields), argv
        capsys.readouterr()
        assert ctl_run(server, "-w", "table", *argv) == (4, ""), argv  # the request was made
        assert capsys.readouterr().err == "Error: table not supported as output format\n"
    rc, out = ctl_run(server, "-w", "json", "user", "passwd", "alice", "--interactive=false",
                      stdin="pw\n", monkeypatch=monkeypatch)
    assert (rc, json.loads(out)) == (0, {"header": hdr})
    rc, out = ctl_run(server, "-w", "json", "role", "get", "reader")
    perms = [{"key": "YS8=", "range_end": "YTA="}, {"permType": 2, "key": "aw=="},
             {"permType": 1, "key": "eg==", "range_end": "AA=="}]
    assert (rc, json.loads(out)) == (0, {"header": hdr, "perm": perms})
    assert ctl_run(server, "-w", "fields", "role", "get", "reader") == (
        0, hdr_fields + _PERMS_FIELDS)
    assert ctl_run(server, "-w", "json", "role", "list") == (
        0, '{"header":' + json.dumps(hdr, separators=(",", ":")) +
        ',"roles":["reader","root"]}\n')  # the header first, as the protobuf's order
    assert ctl_run(server, "-w", "fields", "role", "list") == (
        0, hdr_fields + '"Roles" : "reader" "root"\n')
    assert json.loads(ctl_run(server, "-w", "json", "user", "list")[1]) == {
        "header": hdr, "users": ["alice", "root"]}
    assert json.loads(ctl_run(server, "-w", "json", "user", "get", "alice")[1]) == {
        "header": hdr, "roles": ["reader"]}
    capsys.readouterr()
    for argv in (("user", "list"), ("user", "get", "alice")):  # no fields printer
        assert ctl_run(server, "-w", "fields", *argv) == (4, "")
        assert capsys.readouterr().err == "Error: fields not supported as output format\n"
    # --detail: the "User:" line in every format, then each role as role get prints it
    rc, out = ctl_run(server, "-w", "json", "user", "get", "alice", "--detail")
    assert rc == 0 and out.startswith("User: alice\n\n{")
    assert json.loads(out.split("\n", 2)[2]) == {"header": hdr, "perm": perms}
    assert ctl_run(server, "-w", "fields", "user", "get", "alice", "--detail") == (
        0, "User: alice\n\n" + hdr_fields + _PERMS_FIELDS)
    assert ctl_run(server, "-w", "table", "user", "get", "alice", "--detail") == (
        4, "User: alice\n\n")
    # simple output as before
    assert ctl_run(server, "user", "get", "alice") == (0, "User: alice\nRoles: reader\n")


def test_cluster_flag_uses_the_members_native_urls(capsys):
    """--cluster: member list's nativeURLs of every member (one that published none, such as
    a member not started yet, adds none, as etcdctl skips a member without client URLs);
    member list's own output leaves nativeURLs out (etcd's Member has no such field)."""
    srv = ServerThread(RichFakeService())
    try:
        url = f"http://127.0.0.1:{srv.port}"
        srv.service.native_urls = [url]
        srv.service.unstarted_member = True
        rc, out = ctl_run(srv, "endpoint", "health", "--cluster")
        assert rc == 0 and out.startswith(f"{url} is healthy: successfully committed "), out
        assert len(out.splitlines()) == 1
        assert ctl_run(srv, "endpoint", "--cluster", "hashkv") == (0, f"{url}, 1084519789\n")
        rc, out = ctl_run(srv, "-w", "json", "endpoint", "status", "--cluster")
        assert rc == 0 and [s["Endpoint"] for s in json.loads(out)] == [url]
        assert ctl_run(srv, "defrag", "--cluster") == (
            0, f"Finished defragmenting etcd member[{url}]\n")
        rc, out = ctl_run(srv, "-w", "json", "member", "list")
        assert rc == 0 and all("nativeURLs" not in m for m in json.loads(out)["members"])
    finally:
        srv.stop()
    capsys.readouterr()
    rc = ctl.main(["--endpoints", srv.endpoint, "--command-timeout", "1", "endpoint",
                   "health", "--cluster"], out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(
        "Error: failed to fetch endpoints from etcd cluster member list: "), err


def test_cluster_flag_with_members_without_native_urls(capsys):
    """A rolling upgrade: members of an earlier raftkv publish no native URLs. --cluster dials
    such a member at its entry of --endpoints (the member whose member list header names
    it), and reports one that is none of them as failed, by its client URLs, name and ID:
    a line per verb as for an endpoint that does not answer, and exit status 1."""
    srv = ServerThread(RichFakeService())
    try:
        srv.service.earlier_member = True  # m3, none of --endpoints
        srv.service.unstarted_member = True  # skipped, as etcdctl skips it
        ep, m3 = srv.endpoint, "http://127.0.0.1:2392"
        why = ("member m3 (3) publishes no native URL (an earlier raftkv?) and is none of "
               "--endpoints: not reachable over the native protocol")
        capsys.readouterr()
        rc, out = ctl_run(srv, "endpoint", "health", "--cluster")
        lines = out.splitlines()
        assert rc == 1 and len(lines) == 2 and lines[0].startswith(f"{ep} is healthy: "), out
        assert lines[1] == f"{m3} is unhealthy: failed to commit proposal: {why}"
        assert capsys.readouterr().err == "Error: unhealthy cluster\n"
        rc, out = ctl_run(srv, "-w", "json", "endpoint", "status", "--cluster")
        assert rc == 1 and [s["Endpoint"] for s in json.loads(out)] == [ep]
        assert capsys.readouterr().err == f"Failed to get the status of endpoint {m3} ({why})\n"
        assert ctl_run(srv, "endpoint", "hashkv", "--cluster") == (1, f"{ep}, 1084519789\n")
        assert capsys.readouterr().err == (
            f"Failed to get the hash of endpoint {m3} ({why})\nError: {why}\n")
        assert ctl_run(srv, "defrag", "--cluster") == (
            1, f"Finished defragmenting etcd member[{ep}]\n")
        assert capsys.readouterr().err == f"Failed to defragment etcd member[{m3}] ({why})\n"
        # m1 alone, without native URLs: dialed at --endpoints (it used to be skipped)
        srv.service.earlier_member = False
        srv.service.native_urls = []
        rc, out = ctl_run(srv, "endpoint", "health", "--cluster")
        assert rc == 0 and out.startswith(f"{ep} is healthy: ") and len(out.splitlines()) == 1
    finally:
        srv.stop()
