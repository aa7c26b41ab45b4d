"""Latency histograms and reports for the load generator (raftkv bench).

The histogram is log-linear (HDR-style): values in microseconds fall into buckets whose width
is at most 1/SUB_BUCKETS of their magnitude, so every percentile is exact to within ~1.6 %
whatever the range, memory is fixed, and histograms from several client processes merge by
adding counts. Reports print as a table, JSON or CSV.
"""
from __future__ import annotations

import csv
import io
import json
import math

SUB_BUCKETS = 64  # buckets per power of two: relative error at most 1/64
MAGNITUDES_MAX = 40  # 2**40 us is ~12 days: more than any run
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _bucket_of(us):
    if us < SUB_BUCKETS:
        return int(us)
    mag = int(us).bit_length() - 1 - int(math.log2(SUB_BUCKETS))
    return SUB_BUCKETS * mag + (int(us) >> mag)


def _bucket_upper_us(b):
    """The largest value (in us) that lands in bucket b."""
    if b < SUB_BUCKETS:
        return b
    mag = b // SUB_BUCKETS - 1
    low = b - SUB_BUCKETS * mag
    return ((low + 1) << mag) - 1


class Histogram:
    def __init__(self):
        self.counts = {}  # bucket -> count
        self.count = 0
        self.sum_us = 0
        self.max_us = 0
        self.min_us = None

    def record(self, seconds):
        assert seconds >= 0, seconds
        us = int(round(seconds * 1e6))  # round: 0.032767 s must stay 32767 us
        b = _bucket_of(us)
        assert b < SUB_BUCKETS * (MAGNITUDES_MAX + 1)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.count += 1
        self.sum_us += us
        self.max_us = max(self.max_us, us)
        self.min_us = us if self.min_us is None else min(self.min_us, us)

    def merge(self, other):
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c
        self.count += other.count
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)
        if other.min_us is not None:
            self.min_us = other.min_us if self.min_us is None else min(self.min_us, other.min_us)
        return self

    def percentile_us(self, p):
        """The smallest bucket bound with at least p % of the values at or below it."""
        assert 0 < p <= 100
        if not self.count:
            return 0
        rank = math.ceil(self.count * p / 100.0)
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(_bucket_upper_us(b), self.max_us)
        return self.max_us

    def cdf(self):
        """[(latency_us, fraction <= it)] for plotting."""
        out, seen = [], 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            out.append((min(_bucket_upper_us(b), self.max_us), seen / self.count))
        return out

    def to_dict(self):
        return {"counts": {str(b): c for b, c in self.counts.items()}, "count": self.count,
                "sum_us": self.sum_us, "max_us": self.max_us, "min_us": self.min_us}

    @classmethod
    def from_dict(cls, d):
        h = cls()
        h.counts = {int(b): c for b, c in d["counts"].items()}
        h.count, h.sum_us, h.max_us, h.min_us = d["count"], d["sum_us"], d["max_us"], d["min_us"]
        return h


def summary(name, hist, elapsed_s, errors=0, extra=None):
    """One flat record: the row of a table, a JSON object, a CSV line."""
    assert elapsed_s > 0
    row = {
        "workload": name,
        "requests": hist.count,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 3),
        "throughput_per_s": round(hist.count / elapsed_s, 1),
        "mean_ms": round(hist.sum_us / hist.count / 1000, 3) if hist.count else 0.0,
    }
    for p in PERCENTILES:
        row[f"p{p:g}_ms"] = round(hist.percentile_us(p) / 1000, 3)
    row["max_ms"] = round(hist.max_us / 1000, 3)
    row.update(extra or {})
    return row


def format_rows(rows, fmt):
    """rows: list of summary dicts -> text in fmt ('table', 'json' or 'csv')."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = list(rows[0]) if rows else []
    for r in rows[1:]:
        columns += [k for k in r if k not in columns]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r} (table, json or csv)")
    cells = [[str(c) for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [sep]
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |")
        if n == 0:
            lines.append(sep)
    lines.append(sep)
    return "\n".join(lines)
