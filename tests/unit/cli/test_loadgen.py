"""The load generator engine counts, limits and merges correctly (with the server-less driver)."""
import time

import pytest

from raftkv.cli.loadgen import RunSpec, Workload, run


def test_total_is_split_exactly_across_processes_and_clients():
    spec = RunSpec(Workload(name="put", total=900), driver="null", clients=7, conns=3, processes=2)
    row, hist = run(spec)
    assert row["requests"] == 900 and hist.count == 900
    assert row["errors"] == 0
    assert row["processes"] == 2 and row["clients"] == 7


def test_rate_limit_bounds_throughput():
    spec = RunSpec(Workload(name="put", total=60, rate=200.0), driver="null", clients=4)
    t0 = time.monotonic()
    row, _ = run(spec)
    took = time.monotonic() - t0
    # 60 operations at 200/s need at least ~0.3 s of schedule; the limiter must not let them
    # all through at once (the upper bound is loose: process start-up is slow on 2 cores).
    assert row["requests"] == 60
    assert row["elapsed_s"] >= 0.25
    assert took < 60


def test_latency_of_a_slow_driver_is_measured():
    spec = RunSpec(Workload(name="mixed", total=40), driver="null:0.01", clients=4)
    row, hist = run(spec)
    assert hist.count == 40
    assert 9.0 <= row["p50_ms"] <= 200.0  # ~10 ms sleep; generous above for a loaded machine


def test_duration_mode_reports_the_saturation_flag():
    spec = RunSpec(Workload(name="put", duration_s=0.5), driver="null", clients=8)
    row, _ = run(spec)
    assert row["requests"] > 100
    assert isinstance(row["client_saturated"], bool)
    assert row["client_cpu_s"] > 0


def test_saturation_rule_on_worker_figures():
    """A worker busy on CPU for most of its wall time is saturated (deterministic: the rule is
    tested on given figures, not on how loaded this machine happens to be)."""
    from raftkv.cli import loadgen
    from raftkv.cli.benchstats import Histogram

    spec = RunSpec(Workload(name="put", total=10), driver="null")
    hist = Histogram().to_dict()
    busy = {"hist": hist, "errors": 0, "elapsed_s": 1.0,
            "cpu_s": loadgen.CLIENT_SATURATED_CPU_FRACTION + 0.01}
    idle = dict(busy, cpu_s=0.1)
    assert loadgen._merge(spec, [(0, busy)])[0]["client_saturated"] is True
    assert loadgen._merge(spec, [(0, idle)])[0]["client_saturated"] is False
    assert loadgen._merge(spec, [(0, idle), (1, busy)])[0]["client_saturated"] is True


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError):
        run(RunSpec(Workload(name="nope", total=1), driver="null"))
    with pytest.raises(ValueError):
        run(RunSpec(Workload(name="put"), driver="null"))
    with pytest.raises(RuntimeError, match="unknown driver"):
        run(RunSpec(Workload(name="put", total=1), driver="bogus"))
