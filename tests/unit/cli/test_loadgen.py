"""The load generator engine counts, limits and merges correctly (with the server-less driver)."""
import os
import queue
import signal
import threading
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


def _run_in_thread(spec):
    out = {}

    def target():
        try:
            out["row"] = run(spec)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            out["exc"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


@pytest.mark.timeout(120)
def test_a_killed_worker_fails_the_run_instead_of_hanging():
    """A --total run whose worker is SIGKILLed (it never reports) raises promptly, naming the
    worker and its exit code, and the other worker is stopped too."""
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    # ~10^9 operations at 10 ms each: without the liveness check run() would wait forever.
    spec = RunSpec(Workload(name="put", total=10**9), driver="null:0.01", clients=2,
                   processes=2)
    t, out = _run_in_thread(spec)
    deadline = time.monotonic() + 60
    victims = []
    while len(victims) < 2 and time.monotonic() < deadline:
        victims = [p for p in multiprocessing.active_children() if p.pid not in before]
        time.sleep(0.05)
    assert len(victims) == 2, "the workers did not start"
    time.sleep(0.5)  # let them get going (dying while spawning is covered just the same)
    os.kill(victims[0].pid, signal.SIGKILL)
    t0 = time.monotonic()
    t.join(timeout=30)
    assert not t.is_alive(), "run() hung on a dead worker"
    assert time.monotonic() - t0 < 30
    exc = out.get("exc")
    assert isinstance(exc, RuntimeError), out
    assert f"pid {victims[0].pid}) exit code -9" in str(exc)
    assert "died without a result" in str(exc)
    for p in victims:  # the surviving worker was stopped, not left running
        p.join(timeout=10)
        assert p.exitcode is not None


class _FakeWorker:
    def __init__(self, pid, exitcode):
        self.pid, self.exitcode = pid, exitcode


def test_collect_reads_the_result_of_a_worker_that_exited_after_putting_it():
    from raftkv.cli import loadgen

    q = queue.Queue()
    q.put((1, {"r": 1}))
    q.put((0, {"r": 0}))
    # Both have exited already: their results are read, nothing is reported lost.
    got = loadgen._collect(q, [_FakeWorker(10, 0), _FakeWorker(11, 3)], None)
    assert sorted(got) == [(0, {"r": 0}), (1, {"r": 1})]


def test_collect_names_a_worker_that_exited_without_a_result():
    from raftkv.cli import loadgen

    q = queue.Queue()
    q.put((0, {"r": 0}))
    workers = [_FakeWorker(10, 0), _FakeWorker(11, 3), _FakeWorker(12, None)]
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker 1 \(pid 11\) exit code 3$"):
        loadgen._collect(q, workers, None)
    assert time.monotonic() - t0 < 10


def test_collect_keeps_the_per_result_budget():
    from raftkv.cli import loadgen

    q = queue.Queue()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"workers \[0\] sent no result within"):
        loadgen._collect(q, [_FakeWorker(10, None)], 0.3)
    assert 0.25 <= time.monotonic() - t0 < 10
