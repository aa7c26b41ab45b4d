"""CI proof that every benchmark suite runs: each once, on a tiny size (figures not checked).

- raftkv-bench put/range/txn-put/mixed/watch against a real 3-member raftkv cluster, over gRPC
  and the native protocol;
- the side-by-side runner (--reps 1 --total 200, a short leader-kill fault run) on fresh raftkv
  and etcd clusters; the etcd half is skipped only when the `etcd` binary is missing;
- bench/latency_floor.py (what a put cannot go below here, beside raftkv's and etcd's),
  bench/put_cost.py (member CPU and context switches per sequential put) and
  bench/bulk_put_many.py; bench/check_perf.py's verdict parsing (the etcdctl suite runs
  `check perf` itself); bench/memory_sidebyside.py (memory per key, raftkv beside etcd);
  bench/restart_time.py (a SIGKILLed follower's restart, raftkv beside etcd);
  bench/auth_cost.py (auth off and on, and Authenticate itself, raftkv beside etcd);
  bench/defrag_scale.py (online defrag of a follower and the leader under a writer, raftkv
  beside etcd);
- the pytest-benchmark micro-benchmarks in bench/ with --benchmark-disable (each runs once).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from raftkv.cli import bench
from raftkv.cli.local_cluster import LocalCluster

pytestmark = pytest.mark.cluster
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETCD = shutil.which("etcd")


@pytest.fixture(scope="module")
def raftkv_cluster(tmp_path_factory):
    c = LocalCluster(str(tmp_path_factory.mktemp("bench-raftkv")), members=3)
    c.start()
    try:
        bench.leader_index(c.endpoints, timeout_s=60.0)
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize("protocol", ["grpc", "native"])
def test_put_total_100(raftkv_cluster, protocol, capsys):
    eps = raftkv_cluster.endpoints if protocol == "grpc" else raftkv_cluster.native_endpoints
    rc = bench.main(["put", "--endpoints", ",".join(eps), "--protocol", protocol,
                     "--total", "100", "--clients", "4", "-w", "json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert row["requests"] + row["errors"] == 100 and row["requests"] > 0
    assert "client_saturated" in row and row["p99.9_ms"] >= row["p50_ms"] > 0


@pytest.mark.parametrize("cmd", [["range", "--consistency", "l"], ["range", "--consistency", "s"],
                                 ["txn-put"], ["mixed", "--read-ratio", "0.8"]])
def test_other_workloads(raftkv_cluster, cmd, capsys):
    rc = bench.main(cmd + ["--endpoints", ",".join(raftkv_cluster.endpoints), "--total", "50",
                           "--clients", "2", "-w", "csv"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out[0].startswith("workload,") and len(out) == 2


@pytest.mark.parametrize("protocol", ["grpc", "native"])
def test_watch_latency(raftkv_cluster, protocol, capsys):
    eps = raftkv_cluster.endpoints if protocol == "grpc" else raftkv_cluster.native_endpoints
    rc = bench.main(["watch", "--endpoints", ",".join(eps), "--protocol", protocol,
                     "--total", "20", "-w", "json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert rc == 0 and row["requests"] == 20 and row["lost_events"] == 0


@pytest.fixture(scope="module")
def sidebyside(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sbs"))
    cmd = [sys.executable, os.path.join(ROOT, "bench", "sidebyside.py"), "--reps", "1",
           "--total", "200", "--cases", "put-c1,put-c16,watch", "--bulk-total", "1000",
           "--fault", "leader-kill", "--fault-duration", "4", "--fault-clients", "4",
           "--rejoin-timeout", "5", "--out", out]
    if ETCD is None:
        cmd.append("--no-etcd")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return out, json.load(f)


def test_sidebyside_raftkv_half(sidebyside):
    out, res = sidebyside
    cases = {(m["case"], m["protocol"]) for m in res["medians"] if m["system"] == "raftkv"}
    assert {("put-c1", "grpc"), ("put-c1", "native"), ("put-c16", "native"),
            ("watch", "grpc")} <= cases
    assert res["bulk"] and res["bulk"][0]["requests"] == 1000
    assert res["peak_rss"]["raftkv"]["sum_vmhwm_mib"] > 0
    assert all(m["server_cpu_s"] > 0 for m in res["medians"])
    assert {(f["system"], f["protocol"]) for f in res["faults"]} >= {("raftkv", "grpc")}
    pytest.importorskip("matplotlib")
    for png in ("latency_cdf.png", "throughput_vs_clients.png", "fault_timeline.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000


@pytest.mark.skipif(ETCD is None, reason="the etcd binary is not installed "
                    "(tools/install_etcd.sh): the etcd half of the side-by-side cannot run")
def test_sidebyside_etcd_half(sidebyside):
    _, res = sidebyside
    etcd = [m for m in res["medians"] if m["system"] == "etcd"]
    assert {m["case"] for m in etcd} == {"put-c1", "put-c16", "watch"}
    assert {r["case"] for r in res["ratios"]} == {"put-c1", "put-c16", "watch"}
    assert any(f["system"] == "etcd" for f in res["faults"])
    assert res["peak_rss"]["etcd"]["sum_vmhwm_mib"] > 0


def test_micro_benchmarks_run_once():
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench", "--benchmark-disable",
                           "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout


def test_grpc_floor_runs(tmp_path):
    """bench/grpc_floor.py end to end on a tiny size: the floor server (2 processes on one
    port) and a raftkv cluster with --grpc-workers 1 (etcd only when installed)."""
    out = tmp_path / "floor.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "grpc_floor.py"), "--reps", "1",
           "--total", "50", "--clients", "4", "--floor-workers", "2", "--raftkv-workers", "1",
           "--json", str(out)]
    if shutil.which("etcd") is None:
        cmd.append("--no-etcd1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    systems = {r["system"] for r in rows}
    assert {"floor-w2", "raftkv3-w1"} <= systems
    assert all(r["errors"] == 0 and r["requests"] == 50 for r in rows)


def test_latency_floor_runs(tmp_path):
    """bench/latency_floor.py end to end on a tiny size (etcd only when installed)."""
    out = tmp_path / "floor.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "latency_floor.py"), "--reps", "1",
           "--total", "30", "--data-root", str(tmp_path), "--json", str(out)]
    if shutil.which("etcd") is None:
        cmd.append("--no-etcd")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    med = json.loads(out.read_text())["median_ms"]
    keys = ["hop_rtt", "sync_1", "sync_3", "raftkv_status", "raftkv_put", "floor"]
    if shutil.which("gcc"):
        keys.append("c_put")  # bench/put_floor.c, built by the script
    for key in keys:
        assert med[key] > 0, key
    assert med["floor"] == pytest.approx(2 * med["hop_rtt"] + med["sync_3"])
    assert not list(tmp_path.glob("latency-floor-*"))  # the probes and clusters clean up


def test_put_cost_runs(tmp_path):
    """bench/put_cost.py end to end on a tiny size: CPU and context switches per put."""
    out = tmp_path / "cost.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "put_cost.py"), "--reps", "1",
           "--total", "50", "--data-root", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    med = json.loads(out.read_text())["medians"]
    assert med["p50_ms"] > 0 and med["cpu_us_all"] > 0
    assert set(med["roles"]) == {"leader", "follower"}
    assert med["roles"]["leader"]["ctx_voluntary"] > 0
    assert not list(tmp_path.glob("put-cost-*"))  # the cluster's data dir is removed


def test_bulk_put_many_runs():
    """bench/bulk_put_many.py end to end on a tiny size; it removes its cluster's data."""
    before = set(os.listdir("/tmp/bulk")) if os.path.isdir("/tmp/bulk") else set()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bulk_put_many.py"),
                           "3000"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done=3000 failed=0 " in proc.stdout, proc.stdout
    after = {n for n in os.listdir("/tmp/bulk") if n.startswith("bulk-")}
    assert not (after - before), "the cluster's data dir was left behind"


def test_memory_sidebyside_runs(tmp_path):
    """bench/memory_sidebyside.py end to end on a tiny size: every series loads exactly the
    keys asked for, its counters are read, and its clusters' data dirs are removed."""
    out = tmp_path / "mem.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "memory_sidebyside.py"), "--keys",
           "2000", "--reps", "1", "--settle", "0.5", "--data-root", str(tmp_path),
           "--json", str(out)]
    if ETCD is None:
        cmd.append("--no-etcd")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    series = {s["series"] for s in res["summary"]}
    expected = {"raftkv-native", "raftkv-grpc"} | ({"etcd-grpc"} if ETCD else set())
    assert series == expected
    for s in res["summary"]:
        assert s["keys_counted"] == [2000] and s["errors"] == 0, s
        assert s["vmhwm_sum_mib"] > 0 and s["load_s"] > 0
    for r in res["runs"]:
        assert len(r["members"]) == 3
        assert all(m["after_kb"]["RssAnon"] > 0 for m in r["members"])
    assert "| raftkv-native | 1 | 2000 |" in proc.stdout
    assert not list(tmp_path.glob("memory-sbs-*"))  # the clusters' data dirs are removed


def test_restart_time_runs(tmp_path):
    """bench/restart_time.py end to end on a tiny size: one restart per system and load kind,
    every timing in order, and its clusters' data dirs removed."""
    for load in ("bulk", "single"):
        out = tmp_path / f"restart-{load}.json"
        cmd = [sys.executable, os.path.join(ROOT, "bench", "restart_time.py"), "--revs", "300",
               "--shapes", "few", "--reps", "1", "--down-puts", "20", "--load", load,
               "--data-root", str(tmp_path), "--json", str(out)]
        if ETCD is None or load == "single":
            cmd.append("--no-etcd")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = json.loads(out.read_text())["reps"]
        systems = {r["system"] for r in rows}
        assert systems == ({"raftkv", "etcd"} if ETCD and load == "bulk" else {"raftkv"})
        for r in rows:
            assert 0 < r["port_s"] <= r["leader_s"] <= r["ready_s"], r
            if r["system"] == "raftkv":
                assert 0 < r["native_s"] <= r["port_s"], r
    assert not list(tmp_path.glob("restart-time-*"))  # the clusters' data dirs are removed


def test_defrag_scale_runs(tmp_path):
    """bench/defrag_scale.py end to end on a tiny size: each system's follower and leader are
    defragmented under the writer, each file shrinks, and the clusters' data dirs are removed."""
    out = tmp_path / "defrag.json"
    systems = "raftkv,etcd" if ETCD else "raftkv"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "defrag_scale.py"), "--keys", "2000",
           "--gap", "0.5", "--settle", "0.5", "--systems", systems, "--data-root",
           str(tmp_path), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [r["system"] for r in res] == systems.split(",")
    for r in res:
        assert [d["role"] for d in r["defrags"]] == ["follower", "leader"]
        for d in r["defrags"]:
            assert d["error"] is None and d["defrag_s"] > 0, d
            assert d["db_after_mib"] < d["db_before_mib"], d
        assert r["writer"]["puts"] > 0, r
    assert "| raftkv | native | leader |" in proc.stdout
    assert not list(tmp_path.glob("defrag-scale-*"))  # the clusters' data dirs are removed


def test_check_perf_report_parsing():
    """bench/check_perf.py reads etcdctl's verdict lines (both the PASS and FAIL wordings)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "check_perf", os.path.join(ROOT, "bench", "check_perf.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ok = mod.parse(" 60 / 60  100.00%\nPASS: Throughput is 150 writes/s\n"
                   "PASS: Slowest request took 0.352437s\nPASS: Stddev is 0.047593s\nPASS\n")
    assert ok == {"pass": True, "throughput_per_s": 150.0, "slowest_s": 0.352437,
                  "stddev_s": 0.047593}
    bad = mod.parse("FAIL: Throughput too low: 125 writes/s\n"
                    "Slowest request took too long: 1.560247s\nStddev too high: 0.139870s\n"
                    "FAIL\n")
    assert bad == {"pass": False, "throughput_per_s": 125.0, "slowest_s": 1.560247,
                   "stddev_s": 0.13987}


def test_auth_cost_runs(tmp_path):
    """bench/auth_cost.py end to end on a tiny size: users set up, each case with auth off and
    on (raftkv over both protocols, etcd when installed), the Authenticate timing, and its
    clusters' data dirs removed. etcd needs etcdctl too; without it raftkvctl sets raftkv up."""
    with_etcd = ETCD is not None and shutil.which("etcdctl") is not None
    out = tmp_path / "auth.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "auth_cost.py"), "--reps", "1",
           "--total", "50", "--cases", "put-c1,range-l-c16", "--auths", "3",
           "--bcrypt-cost", "4", "--data-root", str(tmp_path), "--json", str(out)]
    if not with_etcd:
        cmd.append("--no-etcd")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    series = {(m["case"], m["system"], m["protocol"]) for m in res["medians"]}
    systems = [("raftkv", "grpc"), ("raftkv", "native")] + ([("etcd", "grpc")] if with_etcd
                                                            else [])
    assert series == {(c + a, s, p) for c in ("put-c1", "range-l-c16") for a in ("", "+auth")
                      for s, p in systems}
    assert all(m["errors"] == 0 and m["throughput_per_s"] > 0 for m in res["medians"])
    assert {(r["case"], r["system"], r["protocol"]) for r in res["on_off"]} == {
        (c, s, p) for c in ("put-c1", "range-l-c16") for s, p in systems}
    auth = {a["system"]: a for a in res["authenticate"]}
    assert set(auth) == {s for s, _ in systems}
    assert all(a["calls"] == 3 and a["first_ms"] > 0 for a in auth.values())
    if with_etcd:
        assert {r["case"] for r in res["raftkv_etcd"]} == {"put-c1", "put-c1+auth",
                                                           "range-l-c16", "range-l-c16+auth"}
    assert not list(tmp_path.glob("auth-cost-*"))  # the clusters' data dirs are removed
