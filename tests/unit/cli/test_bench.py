"""raftkv-bench's pure parts: fault statistics, medians and ratios, /proc readers, the CLI."""
import os

import pytest

from raftkv.cli import bench


def test_fault_stats_finds_the_longest_gap_after_the_fault():
    records = [(t / 100, 0.002) for t in range(100)]  # a write every 10 ms until 1 s
    records += [(2.5, 1.4)] + [(2.5 + t / 100, 0.003) for t in range(1, 50)]
    st = bench.fault_stats(records, errors=3, fault_t=1.0, duration_s=3.0, max_failed_s=0.25)
    assert st["recovered"] is True
    assert st["unavailable_s"] == pytest.approx(1.5, abs=0.01)  # 1.0 -> 2.5
    assert st["max_gap_before_fault_s"] == pytest.approx(0.01, abs=0.001)
    assert st["max_after_ms"] == pytest.approx(1400, rel=0.02)
    assert st["p99_before_ms"] == pytest.approx(2, rel=0.05)
    assert st["errors"] == 3 and st["writes"] == 150 and st["max_failed_call_ms"] == 250


def test_fault_stats_without_recovery_spans_the_rest_of_the_run():
    st = bench.fault_stats([(0.1, 0.001), (0.2, 0.001)], errors=9, fault_t=0.5, duration_s=4.0)
    assert st["recovered"] is False
    assert st["unavailable_s"] == pytest.approx(3.5)


def _row(case, system, protocol, tput, p50, rep):
    return {"case": case, "system": system, "protocol": protocol, "throughput_per_s": tput,
            "p50_ms": p50, "p99_ms": 2 * p50, "server_cpu_us_per_op": 100.0, "errors": 0,
            "load1": 1.0, "rep": rep}


def test_medians_and_ratios():
    rows = [_row("put-c1", "raftkv", "grpc", t, 4.0, i) for i, t in enumerate((90, 100, 300))]
    rows += [_row("put-c1", "etcd", "grpc", t, 2.0, i) for i, t in enumerate((200, 210, 190))]
    med = bench.medians(rows)
    by = {(m["system"], m["protocol"]): m for m in med}
    assert by[("raftkv", "grpc")]["throughput_per_s"] == 100
    assert by[("etcd", "grpc")]["throughput_per_s"] == 200
    assert by[("raftkv", "grpc")]["reps"] == 3
    (r,) = bench.ratios(med)
    assert r["throughput_per_s_ratio"] == 0.5
    assert r["p50_ms_ratio"] == 2.0


def test_median_of_even_and_empty():
    assert bench._median([1, 3]) == 2
    assert bench._median([]) == 0.0


def test_proc_readers_see_this_process_and_not_a_missing_one():
    assert bench.proc_cpu_s(os.getpid()) > 0
    assert bench.proc_hwm_kb(os.getpid()) > 1000
    assert bench.proc_cpu_s(2**22 + 12345) == 0.0  # above pid_max's default: never a process
    assert bench.proc_hwm_kb(2**22 + 12345) == 0


def test_default_processes_and_driver_spec():
    assert bench.default_processes(1) == 1
    assert 1 <= bench.default_processes(64) <= (os.cpu_count() or 1)
    assert bench.driver_spec("grpc", ["a:1", "b:2"]) == "grpc:a:1,b:2"
    with pytest.raises(ValueError):
        bench.driver_spec("http", ["a:1"])


def test_unknown_sidebyside_case_is_refused():
    args = bench._parse(["sidebyside", "--cases", "put-c1,nope"])
    with pytest.raises(ValueError, match="nope"):
        bench._cases(args)


def test_cli_parses_the_etcd_benchmark_flags():
    args = bench._parse(["range", "--consistency", "s", "--clients", "16", "--conns", "4",
                         "--total", "10", "--key-size", "16", "--protocol", "native"])
    kw = bench._workload_kw(args)
    assert kw["serializable"] is True and kw["key_size"] == 16 and kw["total"] == 10
    args = bench._parse(["mixed", "--read-ratio", "0.9", "--duration", "1", "--rate", "50"])
    kw = bench._workload_kw(args)
    assert kw["read_ratio"] == 0.9 and kw["duration_s"] == 1 and kw["rate"] == 50


def test_cli_refuses_a_run_without_total_or_duration(capsys):
    assert bench.main(["put", "--endpoints", "127.0.0.1:1"]) == 2
    assert "--total or --duration" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["put", "--total", "1"], ["watch", "--total", "1"]])
def test_cli_refuses_a_user_without_a_password_before_connecting(capsys, cmd):
    assert bench.main(cmd + ["--endpoints", "127.0.0.1:1", "--user", "alice"]) == 2
    assert "--user must be NAME:PASSWORD" in capsys.readouterr().err


def test_fault_medians_over_reps():
    rows = [{"system": "etcd", "protocol": "grpc", "fault": "leader-kill", "unavailable_s": u,
             "max_after_ms": 10.0, "max_failed_call_ms": 0.0, "errors": 1, "recovered": True}
            for u in (1.2, 7.0, 1.1)]
    (m,) = bench.fault_medians(rows)
    assert m["reps"] == 3 and m["median_unavailable_s"] == 1.2
    assert m["max_unavailable_s"] == 7.0 and m["all_recovered"] is True
