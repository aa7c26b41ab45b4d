"""etcdctl lock and elect (clientv3/concurrency on KV+Lease+Watch, see ETCD_COMPAT.md §4.3)
and `etcdctl check perf --load=s` (its workload, not its timing verdict)."""
import re
import time

import pytest

pytestmark = pytest.mark.timeout(120)


def test_lock_is_exclusive_and_released_on_signal(ctl, background):
    holder = background("lock", "conc/lock1")
    holder.wait_output(lambda t: t.startswith("conc/lock1/"), 20, "the first lock")
    key = holder.lines[0]
    assert re.match(r"^conc/lock1/[0-9a-f]+$", key), key
    assert ctl.out("get", key, "--print-value-only") == "\n"  # etcd stores an empty value
    waiter = background("lock", "conc/lock1", "--", "sh", "-c", "echo got:$ETCD_LOCK_KEY")
    time.sleep(2.0)
    assert "got:" not in waiter.text(), "the second lock did not wait"
    holder.stop()  # SIGTERM: etcdctl deletes its key (and revokes its session)
    waiter.wait_output(lambda t: "got:conc/lock1/" in t, 30, "the waiter to take the lock")
    assert waiter.proc.wait(timeout=15) == 0
    assert ctl.out("get", "conc/lock1/", "--prefix") == ""


def test_lock_runs_command(ctl):
    out = ctl.out("lock", "conc/lock2", "echo", "inside", timeout=30)
    assert out == "inside\n"
    assert ctl.out("get", "conc/lock2/", "--prefix") == ""


def test_elect_campaign_observe_and_failover(ctl, background):
    first = background("elect", "conc/el", "p1")
    first.wait_output(lambda t: t.count("\n") >= 1, 20, "the first leader")
    assert re.match(r"^conc/el/[0-9a-f]+\np1$", first.text()), first.text()
    second = background("elect", "conc/el", "p2")
    observer = background("elect", "-l", "conc/el")
    observer.wait_output(lambda t: t.endswith("p1"), 20, "the observer to see p1")
    time.sleep(1.0)
    assert second.text() == "", "a second candidate was elected while p1 leads"
    assert first.stop() == 0, first.stderr()  # SIGTERM: etcdctl resigns, then exits 0
    second.wait_output(lambda t: t.endswith("p2"), 30, "p2 to be elected")
    observer.wait_output(lambda t: t.endswith("p2"), 30, "the observer to see p2")
    assert re.match(r"^conc/el/[0-9a-f]+\np1\nconc/el/[0-9a-f]+\np2$", observer.text())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_check_perf_load_s(ctl):
    """etcdctl's 60 s check perf workload runs to the end against raftkv, every put answered
    and the check's keys deleted after. Its verdict (throughput, slowest request, stddev
    thresholds) is a timing judgement on a shared 2-core machine, so it is measured in
    bench/check_perf.py, side by side with etcd, never asserted here."""
    prefix = "/etcdctl-check-perf/"
    proc = ctl.run("check", "perf", "--load=s", f"--prefix={prefix}", check=False,
                   timeout=240)
    out = proc.stdout
    report = out + proc.stderr
    assert "ERROR(" not in out and "too many errors" not in out, report  # failed requests
    for metric in (r"Throughput (is|too low:) \d+ writes/s",
                   r"Slowest request took (too long: )?\d+\.\d+s",
                   r"Stddev (is|too high:) \d+\.\d+s"):
        assert re.search(metric, out), (metric, report)
    verdict = out.rstrip().splitlines()[-1]
    assert verdict in ("PASS", "FAIL"), report
    assert proc.returncode == (0 if verdict == "PASS" else 1), report
    assert ctl.out("get", prefix, "--prefix", "--keys-only") == "", \
        "check perf left its keys behind"
