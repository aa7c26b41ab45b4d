#!/usr/bin/env python3
"""The side-by-side runner: raftkv and etcd, fresh 3-member clusters each, same workloads.

    python bench/sidebyside.py --reps 3 --total 2000 --out bench-results/sidebyside

is `raftkv-bench sidebyside ...` (raftkv/cli/bench.py holds the code; see bench/README.md).
"""
import sys

from raftkv.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["sidebyside", *sys.argv[1:]]))
