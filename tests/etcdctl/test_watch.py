"""etcdctl watch (a long-running subprocess) against a real raftkv cluster."""
import json

import pytest

pytestmark = pytest.mark.timeout(90)


def rev(ctl):
    return json.loads(ctl.out("get", "x", "-w", "json"))["header"]["revision"]


def until_watching(ctl, bg, key):
    """Write key until the watcher prints it (a watch has no 'ready' output)."""
    for _ in range(50):
        ctl.out("put", key, "ready")
        try:
            bg.wait_output(lambda t: key in t, 0.3)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the watcher never printed {key}: {bg.text()}")


def test_watch_key_prints_put_and_delete(ctl, background):
    bg = background("watch", "w1/k")
    until_watching(ctl, bg, "w1/k")
    ctl.out("put", "w1/k", "v1")
    ctl.out("put", "w1/other", "nope")
    ctl.out("del", "w1/k")
    bg.wait_output(lambda t: t.endswith("DELETE\nw1/k\n"), what="the delete event")
    assert "PUT\nw1/k\nv1\nDELETE\nw1/k\n" in bg.text()
    assert "w1/other" not in bg.text()


def test_watch_prefix(ctl, background):
    bg = background("watch", "w2/", "--prefix")
    until_watching(ctl, bg, "w2/ready")
    ctl.out("put", "w2/a", "1")
    ctl.out("put", "w3/a", "no")
    ctl.out("put", "w2/b", "2")
    bg.wait_output(lambda t: t.endswith("PUT\nw2/a\n1\nPUT\nw2/b\n2"))
    assert "w3/" not in bg.text()


def test_watch_rev_replays_history(ctl, background):
    start = rev(ctl) + 1
    ctl.out("put", "w4/k", "a")
    ctl.out("put", "w4/k", "b")
    ctl.out("del", "w4/k")
    bg = background("watch", "w4/k", "--rev", str(start))
    bg.wait_output(lambda t: "DELETE\nw4/k\n" in t)
    assert bg.text() == "PUT\nw4/k\na\nPUT\nw4/k\nb\nDELETE\nw4/k\n"


def test_watch_prev_kv(ctl, background):
    start = rev(ctl) + 1
    ctl.out("put", "w5/k", "a")
    ctl.out("put", "w5/k", "b")
    ctl.out("del", "w5/k")
    bg = background("watch", "w5/k", "--prev-kv", "--rev", str(start))
    bg.wait_output(lambda t: "DELETE\nw5/k\nb\nw5/k\n" in t)
    assert bg.text() == "PUT\nw5/k\na\nPUT\nw5/k\na\nw5/k\nb\nDELETE\nw5/k\nb\nw5/k\n"


def test_watch_json(ctl, background):
    start = rev(ctl) + 1
    ctl.out("put", "w6/k", "v")
    bg = background("watch", "w6/k", "--rev", str(start), "-w", "json")
    bg.wait_output(lambda t: t.strip().endswith("}"))
    doc = json.loads(bg.lines[0])
    ev = doc["Events"][0]
    assert ev["kv"]["key"] == "dzYvaw==" and ev["kv"]["mod_revision"] == start
    assert doc["Header"]["revision"] >= start


def test_watch_compacted_revision_fails(ctl, background):
    ctl.out("put", "w7/k", "1")
    old = rev(ctl)
    ctl.out("put", "w7/k", "2")
    ctl.out("put", "w7/k", "3")
    ctl.out("compaction", str(old + 1))
    proc = ctl.run("watch", "w7/k", "--rev", str(old), check=False, timeout=20)
    assert proc.returncode != 0
    assert "required revision has been compacted" in proc.stderr
