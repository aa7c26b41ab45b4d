"""Benchmark suites: collect bench_*.py, and size helpers for quick smoke runs.

`pytest bench` runs every bench_*.py (pytest itself only collects test_*.py unless a file is
named on the command line). Under --benchmark-disable the suites shrink their inputs so the
smoke run stays quick; with --benchmark-only they use the documented sizes.
"""
import pytest


def pytest_collect_file(file_path, parent):
    # Files named on the command line are already collected by pytest's own Python plugin.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def measuring(request):
    """True when benchmarks are measured; False under --benchmark-disable (a quick smoke run)."""
    return not request.config.getoption("benchmark_disable", False)


@pytest.fixture(scope="session")
def scaled(measuring):
    """scaled(n, small): n when measuring, else min(n, small)."""

    def scale(n, small):
        return n if measuring else min(n, small)

    return scale
