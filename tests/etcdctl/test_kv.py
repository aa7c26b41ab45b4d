"""etcdctl put / get / del / txn / compaction against a real 3-member raftkv cluster."""
import base64
import json

import pytest

pytestmark = pytest.mark.timeout(90)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def rev(ctl):
    return json.loads(ctl.out("get", "x", "-w", "json"))["header"]["revision"]


@pytest.fixture(scope="module")
def keys(ctl):
    """kv/a=1, kv/b=22, kv/c=3 (kv/a written twice), plus zz=last; returns their revisions."""
    first = rev(ctl)
    for k, v in [("kv/a", "0"), ("kv/a", "1"), ("kv/b", "22"), ("kv/c", "3"), ("zz", "last")]:
        assert ctl.out("put", k, v) == "OK\n"
    return first


def test_put_and_get(ctl, keys):
    assert ctl.out("get", "kv/a") == "kv/a\n1\n"
    assert ctl.out("get", "kv/missing") == ""
    assert ctl.out("put", "kv/p", "old") == "OK\n"
    assert ctl.out("put", "kv/p", "new", "--prev-kv") == "OK\nkv/p\nold\n"


def test_get_range_and_prefix(ctl, keys):
    assert ctl.out("get", "kv/a", "kv/c") == "kv/a\n1\nkv/b\n22\n"
    out = ctl.out("get", "kv/", "--prefix", "--keys-only")
    assert out.split() == ["kv/a", "kv/b", "kv/c"] + (["kv/p"] if "kv/p" in out else [])
    assert ctl.out("get", "kv/", "--prefix", "--limit", "2") == "kv/a\n1\nkv/b\n22\n"
    assert ctl.out("get", "kv/b", "--from-key", "--limit", "1") == "kv/b\n22\n"
    assert ctl.out("get", "kv/c", "--from-key", "--keys-only").split()[-1] == "zz"


def test_get_print_value_only_and_keys_only_format(ctl, keys):
    assert ctl.out("get", "kv/b", "--print-value-only") == "22\n"
    # etcdctl prints a blank line after each key with --keys-only
    assert ctl.out("get", "kv/b", "--keys-only") == "kv/b\n\n"


def test_get_sort_and_order(ctl, keys):
    out = ctl.out("get", "kv/", "kv/c", "--sort-by=value", "--order=descend")
    assert out == "kv/b\n22\nkv/a\n1\n"
    out = ctl.out("get", "kv/", "kv/d", "--sort-by=key", "--order=DESCEND", "--keys-only")
    assert out.split()[:3] in (["kv/p", "kv/c", "kv/b"], ["kv/c", "kv/b", "kv/a"])
    out = ctl.out("get", "kv/", "kv/d", "--sort-by=create", "--order=ascend", "--keys-only")
    assert out.split()[:3] == ["kv/a", "kv/b", "kv/c"]
    out = ctl.out("get", "kv/", "kv/d", "--sort-by=version", "--order=descend", "--keys-only")
    assert out.split()[0] in ("kv/a", "kv/p")


def test_get_rev(ctl, keys):
    assert ctl.out("get", "kv/a", "--rev", str(keys + 1)) == "kv/a\n0\n"
    assert ctl.out("get", "kv/a", "--rev", str(keys + 2)) == "kv/a\n1\n"
    assert ctl.out("get", "kv/b", "--rev", str(keys)) == ""


def test_get_json(ctl, keys):
    doc = json.loads(ctl.out("get", "kv/a", "-w", "json"))
    hdr = doc["header"]
    assert set(hdr) == {"cluster_id", "member_id", "revision", "raft_term"}
    assert doc["count"] == 1
    kv = doc["kvs"][0]
    assert kv["key"] == b64("kv/a") and kv["value"] == b64("1")
    assert kv["create_revision"] == keys + 1 and kv["mod_revision"] == keys + 2
    assert kv["version"] == 2


def test_count_only_is_not_in_etcdctl_34(ctl, keys):
    # --count-only arrived in etcdctl 3.5; 3.4 rejects it before any RPC (same as with etcd).
    proc = ctl.run("get", "kv/", "--prefix", "--count-only", check=False)
    assert proc.returncode != 0 and "unknown flag: --count-only" in proc.stderr
    doc = json.loads(ctl.out("get", "kv/", "--prefix", "--limit", "1", "-w", "json"))
    assert doc["count"] >= 3 and len(doc["kvs"]) == 1 and doc["more"] is True


def test_del(ctl, keys):
    for k in ("del/a", "del/b", "del/c"):
        ctl.out("put", k, "v-" + k)
    assert ctl.out("del", "del/nothing") == "0\n"
    assert ctl.out("del", "del/a", "--prev-kv") == "1\ndel/a\nv-del/a\n"
    assert ctl.out("del", "del/", "--prefix") == "2\n"
    assert ctl.out("get", "del/", "--prefix") == ""


def test_txn_success_and_failure(ctl, keys):
    ctl.out("put", "txn/k", "v1")
    script = 'value("txn/k") = "v1"\n\nput txn/k v2\nget txn/k\n\nput txn/other x\n\n'
    out = ctl.out("txn", stdin=script)
    assert out == "SUCCESS\n\nOK\n\ntxn/k\nv2\n"
    out = ctl.out("txn", stdin=script)
    assert out == "FAILURE\n\nOK\n"
    assert ctl.out("get", "txn/other", "--print-value-only") == "x\n"


def test_txn_compares_json(ctl, keys):
    script = 'mod("txn/k") > "0"\nversion("txn/k") = "2"\ncreate("txn/none") = "0"\n\n' \
             'del txn/other\n\n\n'
    doc = json.loads(ctl.out("txn", "-w", "json", stdin=script))
    assert doc["succeeded"] is True
    resp = doc["responses"][0]["Response"]["ResponseDeleteRange"]
    assert resp["deleted"] == 1


def test_compaction(ctl, keys):
    ctl.out("put", "cmp/k", "1")
    old = rev(ctl)
    ctl.out("put", "cmp/k", "2")
    assert ctl.out("get", "cmp/k", "--rev", str(old), "--print-value-only") == "1\n"
    assert ctl.out("compaction", str(old + 1)) == f"compacted revision {old + 1}\n"
    proc = ctl.run("get", "cmp/k", "--rev", str(old), check=False)
    assert proc.returncode != 0
    assert "required revision has been compacted" in proc.stderr
    proc = ctl.run("compaction", str(old), check=False)
    assert proc.returncode != 0 and "required revision has been compacted" in proc.stderr
    proc = ctl.run("compaction", str(rev(ctl) + 100), check=False)
    assert proc.returncode != 0 and "required revision is a future revision" in proc.stderr
    ctl.out("put", "cmp/k", "3")
    assert ctl.out("compaction", "--physical", str(rev(ctl))).startswith("compacted revision")
