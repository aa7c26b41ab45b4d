#!/usr/bin/env python3
"""VOPR: run the deterministic Raft simulator (tests/sim) on seeds.

    python tools/vopr.py --seed N [--members M]    replay one seed exactly
    python tools/vopr.py [--count K]                random seeds (forever without --count)

Each seed is printed before it runs, so a crash or hang names its seed. Without --members, a
random seed picks 3, 5 or 7 members from the seed itself (the printed replay command says
which). Exit status 1 on the first invariant violation.
"""
from __future__ import annotations

import argparse
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.sim.checkers import TICKS_MAX_DEFAULT, InvariantViolation, replay_command  # noqa: E402
from tests.sim.cluster import Cluster  # noqa: E402

MEMBER_CHOICES = (3, 5, 7)


def members_for(seed):
    return MEMBER_CHOICES[seed % len(MEMBER_CHOICES)]


def run_one(seed, members, ticks_max, verbose):
    t0 = time.perf_counter()
    print(f"seed {seed} members {members}: {replay_command(seed, members, ticks_max)}", flush=True)
    try:
        stats = Cluster(seed, members, ticks_max).run()
    except InvariantViolation as exc:
        print(f"FAIL {exc}", flush=True)
        return False
    if verbose:
        print(f"  ok in {time.perf_counter() - t0:.2f}s {stats}", flush=True)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, help="replay exactly this seed")
    ap.add_argument("--members", type=int, help="cluster size (default: 3, 5 or 7 by seed)")
    ap.add_argument("--count", type=int, help="number of random seeds (default: forever)")
    ap.add_argument("--ticks-max", type=int, default=TICKS_MAX_DEFAULT,
                    help="ticks of the fault phase (a replay needs the same)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print stats per seed")
    args = ap.parse_args(argv)
    if args.seed is not None:
        members = args.members or members_for(args.seed)
        return 0 if run_one(args.seed, members, args.ticks_max, True) else 1
    picker = random.SystemRandom()
    n = 0
    t0 = time.perf_counter()
    while args.count is None or n < args.count:
        seed = picker.randrange(2 ** 63)
        members = args.members or members_for(seed)
        if not run_one(seed, members, args.ticks_max, args.verbose):
            return 1
        n += 1
    dt = time.perf_counter() - t0
    print(f"{n} seeds passed in {dt:.1f}s ({n / dt if dt else 0:.2f} seeds/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
