"""etcdctl lease grant / revoke / keep-alive --once / timetolive / list, put --lease."""
import re
import time

import pytest

pytestmark = pytest.mark.timeout(90)

GRANTED = re.compile(r"^lease ([0-9a-f]+) granted with TTL\((\d+)s\)\n$")


def grant(ctl, ttl):
    out = ctl.out("lease", "grant", str(ttl))
    m = GRANTED.match(out)
    assert m, out
    assert int(m.group(2)) == ttl
    return m.group(1)


def test_grant_list_revoke(ctl):
    lid = grant(ctl, 60)
    out = ctl.out("lease", "list")
    assert re.match(r"^found \d+ leases\n", out)
    assert lid in out.splitlines()[1:]
    assert ctl.out("lease", "revoke", lid) == f"lease {lid} revoked\n"
    assert lid not in ctl.out("lease", "list").splitlines()[1:]
    proc = ctl.run("lease", "revoke", lid, check=False)
    assert proc.returncode != 0 and "requested lease not found" in proc.stderr


def test_put_with_lease_and_timetolive_keys(ctl):
    lid = grant(ctl, 60)
    assert ctl.out("put", "lease/a", "1", f"--lease={lid}") == "OK\n"
    assert ctl.out("put", "lease/b", "2", "--lease", lid) == "OK\n"
    out = ctl.out("lease", "timetolive", lid)
    m = re.match(rf"^lease {lid} granted with TTL\(60s\), remaining\((\d+)s\)\n$", out)
    assert m and 50 <= int(m.group(1)) <= 60, out
    out = ctl.out("lease", "timetolive", lid, "--keys")
    m = re.match(rf"^lease {lid} granted with TTL\(60s\), remaining\(\d+s\), "
                 r"attached keys\(\[(.*)\]\)\n$", out)
    assert m and sorted(m.group(1).split()) == ["lease/a", "lease/b"], out
    ctl.out("lease", "revoke", lid)
    assert ctl.out("get", "lease/", "--prefix") == ""
    out = ctl.out("lease", "timetolive", lid)
    assert out == f"lease {lid} already expired\n"


def test_put_with_unknown_lease_fails(ctl):
    proc = ctl.run("put", "lease/x", "1", "--lease=1234abcd", check=False)
    assert proc.returncode != 0 and "requested lease not found" in proc.stderr


def test_keep_alive_once(ctl):
    lid = grant(ctl, 60)
    out = ctl.out("lease", "keep-alive", "--once", lid)
    assert out == f"lease {lid} keepalived with TTL(60)\n"
    ctl.out("lease", "revoke", lid)


def test_keep_alive_streams_and_lease_expires(ctl, background):
    lid = grant(ctl, 5)
    ctl.out("put", "lease/ka", "v", f"--lease={lid}")
    bg = background("lease", "keep-alive", lid)
    bg.wait_output(lambda t: t.count("keepalived") >= 1, 15)
    assert bg.lines[0] == f"lease {lid} keepalived with TTL(5)"
    time.sleep(6.5)  # longer than the TTL: the keep-alives keep it
    assert ctl.out("get", "lease/ka", "--print-value-only") == "v\n"
    bg.stop()
    deadline = time.monotonic() + 20
    while ctl.out("get", "lease/ka") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ctl.out("get", "lease/ka") == "", "the key outlived its lease"
    assert ctl.out("lease", "timetolive", lid) == f"lease {lid} already expired\n"
