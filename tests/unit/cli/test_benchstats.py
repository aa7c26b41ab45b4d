"""The load generator's histogram gives exact-enough percentiles and merges across processes."""
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.cli.benchstats import Histogram, format_rows, summary


def _exact_percentile(values_us, p):
    s = sorted(values_us)
    rank = max(1, -(-len(s) * p // 100))  # ceil
    return s[int(rank) - 1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50_000_000), min_size=1, max_size=400))
def test_percentiles_are_within_relative_error(values_us):
    h = Histogram()
    for v in values_us:
        h.record(v / 1e6)
    for p in (50, 90, 99, 99.9, 100):
        exact = _exact_percentile(values_us, p)
        got = h.percentile_us(p)
        assert exact <= got <= max(exact * (1 + 1 / 64) + 1, exact), (p, exact, got)
    assert h.percentile_us(100) == max(values_us)
    assert h.count == len(values_us)


def test_merge_equals_recording_everything_in_one():
    rng = random.Random(7)
    vals = [rng.expovariate(1 / 0.002) for _ in range(5000)]
    one, a, b = Histogram(), Histogram(), Histogram()
    for i, v in enumerate(vals):
        one.record(v)
        (a if i % 2 else b).record(v)
    merged = Histogram.from_dict(json.loads(json.dumps(a.to_dict()))).merge(b)
    assert merged.counts == one.counts
    assert merged.percentile_us(99) == one.percentile_us(99)
    assert merged.max_us == one.max_us and merged.min_us == one.min_us
    cdf = one.cdf()
    assert cdf[-1][1] == 1.0 and all(x[1] <= y[1] for x, y in zip(cdf, cdf[1:]))


def test_reports_in_three_formats():
    h = Histogram()
    for ms in (1, 2, 3, 4, 100):
        h.record(ms / 1000)
    row = summary("put", h, elapsed_s=0.5, errors=1, extra={"clients": 4})
    assert row["requests"] == 5 and row["throughput_per_s"] == 10.0 and row["errors"] == 1
    assert abs(row["p50_ms"] - 3.0) <= 3.0 / 64 and row["max_ms"] == 100.0  # bucket bound
    table = format_rows([row], "table")
    assert "p99.9_ms" in table and "| put" in table.replace("|      put", "| put")
    assert json.loads(format_rows([row], "json"))[0]["clients"] == 4
    csv_text = format_rows([row], "csv").splitlines()
    assert csv_text[0].startswith("workload,requests,errors") and csv_text[1].startswith("put,5,1")
