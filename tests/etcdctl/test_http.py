"""raftkv/api/http.py on --listen-metrics-urls: /health, /version, /metrics against a real
3-member raftkv cluster (its own, with a small --quota-backend-bytes to raise NOSPACE)."""
import json
import urllib.error
import urllib.request

import pytest

from raftkv.cli.local_cluster import LocalCluster, free_ports
from raftkv.client import Client
from tests.etcdctl.conftest import FAST_ARGS, TARGET, Ctl, running, wait_for, wait_healthy

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(TARGET != "raftkv", reason="raftkv's HTTP endpoint")]

QUOTA_BYTES = 4 << 20


class MetricsCluster(LocalCluster):
    """A LocalCluster whose members also serve HTTP on --listen-metrics-urls."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.metrics_ports = dict(zip((m.name for m in self.members),
                                      free_ports(len(self.members))))

    def metrics_url(self, m):
        return f"http://127.0.0.1:{self.metrics_ports[m.name]}"

    def command(self, m, state="new"):
        return super().command(m, state) + ["--listen-metrics-urls", self.metrics_url(m)]


@pytest.fixture(scope="module")
def mcluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("etcdctl-http")
    cluster = MetricsCluster(str(root), members=3, extra_args=FAST_ARGS + [
        "--quota-backend-bytes", str(QUOTA_BYTES)])
    with running(cluster):
        cluster.wait_listening()
        wait_healthy(Ctl(cluster.endpoints))
        yield cluster


def fetch(url, timeout=10.0):
    """(status, content type, body text); non-2xx answers are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def metric(text, name):
    """The value of an unlabelled sample `name` in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no sample {name} in /metrics")


def test_version(mcluster):
    status, ctype, body = fetch(mcluster.metrics_url(mcluster.members[0]) + "/version")
    assert status == 200 and ctype.startswith("application/json")
    assert json.loads(body) == {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}


def test_health_ok_on_every_member(mcluster):
    for m in mcluster.members:
        status, _, body = fetch(mcluster.metrics_url(m) + "/health")
        assert (status, body) == (200, '{"health":"true","reason":""}')


def test_unknown_path_is_404(mcluster):
    status, _, _ = fetch(mcluster.metrics_url(mcluster.members[0]) + "/nope")
    assert status == 404


def test_metrics_names_and_values(mcluster):
    ctl = Ctl(mcluster.endpoints)
    for i in range(20):
        ctl.out("put", f"metrics/{i}", "v")
    # A quick run of puts (one etcdctl process per put is slower than a lingering round).
    client = Client(mcluster.native_endpoints, timeout=10.0)
    try:
        for i in range(100):
            client.put(f"metrics/burst/{i}", "v")
    finally:
        client.close()
    texts = [fetch(mcluster.metrics_url(m) + "/metrics")[2] for m in mcluster.members]
    for text in texts:
        assert metric(text, "etcd_server_has_leader") == 1
        committed = metric(text, "etcd_server_proposals_committed_total")
        applied = metric(text, "etcd_server_proposals_applied_total")
        assert committed >= 20 and 0 < applied <= committed
        assert metric(text, "etcd_server_proposals_pending") >= 0
        assert metric(text, "etcd_server_proposals_failed_total") >= 0
        assert metric(text, "etcd_server_leader_changes_seen_total") >= 1
        assert metric(text, "etcd_mvcc_db_total_size_in_bytes") > 0
        assert metric(text, "etcd_disk_wal_fsync_duration_seconds_count") > 0
        assert metric(text, "etcd_disk_backend_commit_duration_seconds_count") > 0
        assert 'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"}' in text
        assert 'etcd_disk_backend_commit_duration_seconds_bucket{le="8.192"}' in text
        assert metric(text, "process_resident_memory_bytes") > 0
        # raftkv's own: most applies run on the Ready loop inside a lingering round
        fns = metric(text, "raftkv_apply_functions_total")
        assert metric(text, "raftkv_apply_rounds_total") > 0 and fns > 0
        assert 0 < metric(text, "raftkv_apply_lent_total") <= fns
    assert sum(metric(t, "etcd_server_is_leader") for t in texts) == 1
    # the histogram only grows: a second scrape counts the new commits
    first = metric(texts[0], "etcd_disk_wal_fsync_duration_seconds_count")
    ctl.out("put", "metrics/again", "v")
    text = fetch(mcluster.metrics_url(mcluster.members[0]) + "/metrics")[2]
    assert metric(text, "etcd_disk_wal_fsync_duration_seconds_count") > first


def test_nospace_alarm_health_and_disarm(mcluster):
    ctl = Ctl(mcluster.endpoints)
    value = "x" * (512 * 1024)
    for i in range(4 * QUOTA_BYTES // len(value)):
        proc = ctl.run("put", f"big/{i}", stdin=value, check=False)
        if proc.returncode != 0:
            assert "database space exceeded" in proc.stderr, proc.stderr
            break
    else:
        pytest.fail("the NOSPACE alarm was never raised")
    alarms = ctl.out("alarm", "list").splitlines()
    assert alarms and all(a.startswith("memberID:") and a.endswith("alarm:NOSPACE ")
                          for a in alarms), alarms
    m = mcluster.members[0]

    def nospace():
        status, _, body = fetch(mcluster.metrics_url(m) + "/health")
        return status == 503 and json.loads(body) == {"health": "false",
                                                      "reason": "ALARM NOSPACE"}
    wait_for(nospace, 10, 0.1, "/health to report the alarm")
    status, _, body = fetch(mcluster.metrics_url(m) + "/health?exclude=NOSPACE")
    assert status == 200, body
    ctl.out("del", "big/", "--prefix")
    # etcd prints the alarms it disarmed. raftkv's alarm is cluster-wide and reported under the
    # answering member's ID (docs/ETCD_DIFFERENCES.md), so compare without the IDs.
    disarmed = ctl.out("alarm", "disarm").splitlines()
    assert [a.split()[1] for a in disarmed] == [a.split()[1] for a in alarms] == ["alarm:NOSPACE"]
    assert ctl.out("alarm", "list") == ""
    wait_for(lambda: fetch(mcluster.metrics_url(m) + "/health")[0] == 200, 10, 0.1,
             "/health to recover")


def test_writes_resume_after_delete_compact_defrag_disarm(mcluster):
    ctl = Ctl(mcluster.endpoints)
    ctl.out("del", "big/", "--prefix")
    rev = json.loads(ctl.out("get", "x", "-w", "json"))["header"]["revision"]
    ctl.run("compaction", "--physical", str(rev), check=False)
    ctl.out("defrag")
    ctl.out("alarm", "disarm")
    for i in range(3):
        ctl.out("put", f"small/{i}", "v")
    assert ctl.out("alarm", "list") == ""


def test_health_without_leader(mcluster):
    """Last: stop two members, the survivor reports RAFT NO LEADER."""
    survivor = mcluster.members[0]
    for m in mcluster.members[1:]:
        mcluster.stop_member(m)

    def no_leader():
        # the NOSPACE alarm may still be raised (see the xfail above): the alarm is checked
        # first, as in etcd, so exclude it
        status, _, body = fetch(mcluster.metrics_url(survivor) + "/health?exclude=NOSPACE")
        return status == 503 and json.loads(body) == {"health": "false",
                                                      "reason": "RAFT NO LEADER"}
    wait_for(no_leader, 30, 0.2, "/health to report no leader")
