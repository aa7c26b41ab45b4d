"""The load generator's native driver against a native server over FakeService."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from raftkv.cli.loadgen import RunSpec, Workload, run
from tests.unit.client.richfake import RichFakeService, ServerThread


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(RichFakeService())
    yield srv
    srv.stop()


@pytest.mark.parametrize("workload", ["put", "range", "txn-put", "mixed"])
def test_native_driver_runs_each_workload(server, workload):
    spec = RunSpec(Workload(name=workload, total=400, key_space=100),
                   driver=f"native:http://{server.endpoint}", clients=8, conns=2)
    row, hist = run(spec)
    assert row["requests"] == 400
    assert row["errors"] == 0
    assert hist.count == 400


def test_native_driver_over_a_unix_socket():
    """raftkv-bench --protocol native --endpoints unix://PATH (a short path: 107 bytes max)."""
    d = tempfile.mkdtemp(prefix="rk-ux-", dir="/tmp")
    srv = ServerThread(RichFakeService(), unix_path=os.path.join(d, "n.sock"))
    try:
        spec = RunSpec(Workload(name="mixed", total=200, key_space=50),
                       driver=f"native:{srv.endpoint}", clients=4, conns=2)
        row, _ = run(spec)
        assert (row["requests"], row["errors"]) == (200, 0)
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)
