"""Benchmark helpers: full sizes when measuring, small ones under --benchmark-disable."""
import pytest


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
