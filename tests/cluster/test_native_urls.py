"""Members publish their native URLs beside their client URLs (--advertise-native-urls, by
default --listen-native-urls), through the log as etcd publishes its attributes; the native
member_list answer gives them (nativeURLs, raftkv's own), and raftkvctl --cluster dials them.
A member restarted on another native port publishes the new URL, as an etcd member restarted
with other client URLs publishes those."""
import io
import time

import pytest

from raftkv.api import wire
from raftkv.cli import ctl
from raftkv.cli.local_cluster import free_ports
from raftkv.client import Client

pytestmark = pytest.mark.timeout(120)


def _native_urls(m):
    """{member name: nativeURLs} as member m answers member_list."""
    c = Client([m.native_endpoint], timeout=2.0)
    try:
        return {x["name"]: x.get("nativeURLs") for x in c.members()}
    finally:
        c.close()


def _wait_native_urls_everywhere(h, timeout_s=30.0):
    """Until every member's member_list gives each member's current native URL."""
    want = {m.name: [m.native_url] for m in h.members}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            seen = {m.name: _native_urls(m) for m in h.members}
        except (wire.RaftkvError, ConnectionError, OSError) as exc:
            seen = exc
        if seen == {m.name: want for m in h.members}:
            return
        assert time.monotonic() < deadline, f"want {want} on every member, got {seen}"
        time.sleep(0.1)


def _health_cluster_endpoints(m):
    """The endpoints `raftkvctl endpoint health --cluster` checked through member m."""
    out = io.StringIO()
    rc = ctl.main(["--endpoints", m.native_endpoint, "endpoint", "health", "--cluster"],
                  out=out)
    assert rc == 0, out.getvalue()
    return sorted(line.split(" is healthy")[0] for line in out.getvalue().splitlines())


def test_native_urls_reach_member_list_and_follow_a_restart_on_another_port(make_cluster):
    h = make_cluster(3)
    _wait_native_urls_everywhere(h)
    m1, m3 = h.cluster.member("m1"), h.cluster.member("m3")
    assert _health_cluster_endpoints(m1) == sorted(m.native_url for m in h.members)
    assert h.stop_member(m3) == 0
    old_url = m3.native_url
    m3.native_port = free_ports(1)[0]
    h.start_member(m3)
    _wait_native_urls_everywhere(h)
    urls = _health_cluster_endpoints(m1)
    assert m3.native_url in urls and old_url not in urls and len(urls) == 3
