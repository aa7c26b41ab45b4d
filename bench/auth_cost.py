#!/usr/bin/env python3
"""What turning authentication on costs raftkv and etcd, side by side.

    python bench/auth_cost.py --reps 3 --total 2000 --auths 20 --json auth-cost.json

Starts fresh 3-member raftkv and etcd clusters (as the side-by-side does), and sets up auth on
both with etcdctl over gRPC (raftkvctl over the native port when etcdctl is not installed): a
`root` user with the `root` role, and a user `bench` whose role `bench` may read and write the
prefix `bench/` (the load generator's keys). Then, per rep, each case runs with auth off and
on back to back (`auth enable`, or `auth disable` as root, between the two, every member
checked to have applied it; a case starts in the state the previous one left, so which comes
first alternates), on each system in alternation (rep 0 raftkv first, rep 1 etcd first):

- `put-c1` (1 client, sequential keys), `put-c16` and `range-l-c16` (16 clients; linearizable
  reads): raftkv over gRPC and native, etcd over gRPC. With auth on, the load generator runs
  with `--user bench:...`: the native client authenticates and sends the token in each body;
  the gRPC driver calls Auth.Authenticate once per connection and sends the token as metadata.
- `authenticate`: with auth on, `--auths` sequential Auth.Authenticate calls of `bench` over
  one gRPC channel to the leader, right after `user passwd` reset its password (same text, new
  hash): the first call is a fresh check on both systems; raftkv then remembers the verified
  password (docs/ETCD_DIFFERENCES.md), etcd runs bcrypt on every call. Reported: the first
  call, the median call, the total, and the members' CPU per call.

Both run at their default hash cost (etcd --bcrypt-cost 10; raftkv --bcrypt-cost 10, PBKDF2)
unless --bcrypt-cost is given (then both get it). Reports medians over reps, the ratios auth
on / auth off per system and protocol, and raftkv / etcd per auth state; nothing is
pass/fail. Every process is stopped by its PID at the end and the data dirs are removed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from raftkv.cli import bench as rbench  # noqa: E402
from raftkv.cli.benchstats import format_rows  # noqa: E402

CASES = ("put-c1", "put-c16", "range-l-c16")
ROOT_USER = "root:rootpw"
BENCH_USER, BENCH_PASSWORD = "bench", "benchpw"
BENCH_PREFIX = "bench/"  # loadgen.Workload.key_prefix
AUTH_SETTLE_S = 15.0  # how long every member gets to apply an auth enable/disable
ADMIN_TIMEOUT_S = 60.0  # one etcdctl/raftkvctl command


def log(msg):
    print(f"[auth-cost {time.strftime('%H:%M:%S')}] {msg}", flush=True)


CTL = {"tool": "auto"}  # --ctl: auto (etcdctl when installed), etcdctl or raftkvctl


def admin(system, *argv, user=None, stdin=None):
    """One etcdctl command against system's gRPC endpoints (raftkvctl against its native ones
    when etcdctl is missing or --ctl raftkvctl: raftkv only); fails loudly with its stderr."""
    etcdctl = shutil.which("etcdctl") if CTL["tool"] != "raftkvctl" else None
    if etcdctl:
        cmd = [etcdctl, "--endpoints", ",".join(system.grpc_endpoints)]
    else:
        assert system.native_endpoints, "etcd's clusters need etcdctl"
        cmd = [sys.executable, "-m", "raftkv.cli.ctl", "--endpoints",
               ",".join(system.native_endpoints)]
    if user:
        cmd += ["--user", user]
    proc = subprocess.run(cmd + list(argv), input=stdin, capture_output=True, text=True,
                          timeout=ADMIN_TIMEOUT_S, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{system.name}: {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def set_up_users(system):
    """root (role root) and bench (role bench: readwrite on the bench/ prefix); auth stays
    off. The commands of README.md's "Authentication", against both systems."""
    admin(system, "user", "add", ROOT_USER)
    admin(system, "role", "add", "root")
    admin(system, "user", "grant-role", "root", "root")
    admin(system, "role", "add", "bench")
    admin(system, "role", "grant-permission", "bench", "readwrite", BENCH_PREFIX, "--prefix")
    admin(system, "user", "add", f"{BENCH_USER}:{BENCH_PASSWORD}")
    admin(system, "user", "grant-role", BENCH_USER, "bench")


def set_auth(system, on):
    if on:
        admin(system, "auth", "enable")
    else:
        admin(system, "auth", "disable", user=ROOT_USER)
    asyncio.run(_wait_auth_applied(system.grpc_endpoints, on))


async def _wait_auth_applied(endpoints, on):
    """Until each member answers a serializable read without a token as auth `on` says: refused
    when on, served when off (the member has applied the change)."""
    import grpc

    from raftkv.cli.loadgen_drivers import GrpcDriver

    deadline = time.monotonic() + AUTH_SETTLE_S
    for ep in endpoints:
        d = GrpcDriver(ep, 0)
        await d._open()
        try:
            while True:
                try:
                    await d.kv.Range(d.pb.RangeRequest(key=BENCH_PREFIX.encode(),
                                                       serializable=True), timeout=2.0)
                    served = True
                except grpc.aio.AioRpcError:
                    served = False
                if served != on:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ep} did not apply auth {'on' if on else 'off'}")
                await asyncio.sleep(0.05)
        finally:
            await d.close()


async def _time_authenticate(endpoints, n):
    """n sequential Auth.Authenticate calls of bench on one ready channel to the leader: the
    latency of each, in seconds."""
    from raftkv.cli.loadgen_drivers import GrpcDriver

    d = GrpcDriver(",".join(endpoints), 0, (BENCH_USER, BENCH_PASSWORD))
    await d._find_leader()
    await d._open()
    await d.channel.channel_ready()
    lat = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await d.authenticate()
            lat.append(time.perf_counter() - t0)
    finally:
        await d.close()
    return lat


def run_authenticate(system, n):
    """The authenticate row for system (auth on): its password's hash renewed first."""
    admin(system, "user", "passwd", BENCH_USER, "--interactive=false", user=ROOT_USER,
          stdin=BENCH_PASSWORD + "\n")
    pids = system.pids()
    before = rbench.cpu_of(pids)
    lat = asyncio.run(_time_authenticate(system.grpc_endpoints, n))
    cpu = rbench.cpu_delta(before, pids)
    return {"case": "authenticate", "system": system.name, "protocol": "grpc", "auth": "on",
            "requests": n, "first_ms": round(lat[0] * 1e3, 3),
            "p50_ms": round(statistics.median(lat) * 1e3, 3),
            "rest_p50_ms": round(statistics.median(lat[1:] or lat) * 1e3, 3),
            "total_s": round(sum(lat), 3), "server_cpu_s": cpu,
            "server_cpu_ms_per_auth": round(1e3 * cpu / n, 2),
            "load1": round(os.getloadavg()[0], 2)}


def _cases(names):
    return [c for c in rbench.SBS_CASES if c[0] in names]


def run_reps(systems, args):
    """Each case with auth off and on back to back, on each system and protocol in
    alternation; then the Authenticate timing while auth is on. A case starts in whatever
    state the previous one left (one switch per case), so which state comes first alternates
    from case to case and from rep to rep."""
    rows = []
    state = {"on": False}  # set_up_users leaves auth off
    for rep in range(args.reps):
        order = systems if rep % 2 == 0 else systems[::-1]
        for case in _cases(args.cases.split(",")):
            for on in (state["on"], not state["on"]):
                _switch_auth(systems, state, on)
                for system in order:
                    for protocol in system.protocols:
                        rows.append(_run_auth_case(system, protocol, case, on, rep, args))
        if args.auths:
            _switch_auth(systems, state, True)
            for system in order:
                row = run_authenticate(system, args.auths)
                row["rep"] = rep
                rows.append(row)
                log(f"rep {rep} authenticate x{args.auths} {system.name:6}: first "
                    f"{row['first_ms']} ms, p50 {row['p50_ms']} ms, total {row['total_s']}"
                    f" s, member CPU {row['server_cpu_ms_per_auth']} ms/auth "
                    f"load {row['load1']}")
    return rows


def _switch_auth(systems, state, on):
    """Only a change is sent (raftkvctl --user fails while auth is off; etcdctl does not)."""
    if on != state["on"]:
        for s in systems:
            set_auth(s, on)
        state["on"] = on


def _run_auth_case(system, protocol, case, on, rep, args):
    user = f"{BENCH_USER}:{BENCH_PASSWORD}" if on else ""
    row, _ = rbench._run_case(system, protocol, case, args.total, user=user)
    row.update({"rep": rep, "auth": "on" if on else "off"})
    row["case"] = case[0] + ("+auth" if on else "")
    log(f"rep {rep} auth {row['auth']:3} {case[0]:12} {system.name:6} {protocol:6} "
        f"{row['throughput_per_s']:>9}/s p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms "
        f"err {row['errors']} cpu/op {row['server_cpu_us_per_op']} us load {row['load1']}")
    return row


def on_off_ratios(med):
    """auth on / auth off of the medians, per case, system and protocol."""
    by = {(m["case"], m["system"], m["protocol"]): m for m in med}
    out = []
    for (case, system, protocol), on in by.items():
        off = by.get((case.removesuffix("+auth"), system, protocol))
        if not case.endswith("+auth") or off is None:
            continue
        r = {"case": off["case"], "system": system, "protocol": protocol}
        for f in ("throughput_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_op"):
            if off.get(f):
                r[f"{f}_on/off"] = round(on[f] / off[f], 3)
        out.append(r)
    return out


def authenticate_medians(rows):
    groups = {}
    for r in rows:
        groups.setdefault(r["system"], []).append(r)
    out = []
    for system, rs in groups.items():
        m = {"system": system, "reps": len(rs), "calls": rs[0]["requests"]}
        for f in ("first_ms", "p50_ms", "rest_p50_ms", "total_s", "server_cpu_ms_per_auth",
                  "load1"):
            m[f] = round(statistics.median(r[f] for r in rs), 3)
        out.append(m)
    return out


def summarize(rows):
    auth_rows = [r for r in rows if r["case"] == "authenticate"]
    med = rbench.medians([r for r in rows if r["case"] != "authenticate"])
    return {"medians": med, "on_off": on_off_ratios(med), "raftkv_etcd": rbench.ratios(med),
            "authenticate": authenticate_medians(auth_rows)}


def print_summary(result, fmt):
    cols = ("case", "system", "protocol", "reps", "throughput_per_s", "p50_ms", "p99_ms",
            "errors", "server_cpu_us_per_op", "client_saturated", "load1")
    print(format_rows([{c: m.get(c, "") for c in cols} for m in result["medians"]], fmt))
    titles = {"on_off": "auth on / auth off (ratio of medians)",
              "raftkv_etcd": "raftkv / etcd (ratio of medians; throughput > 1 and latency < 1 "
                             "favour raftkv)",
              "authenticate": "Auth.Authenticate, sequential calls over gRPC (medians)"}
    for key, title in titles.items():
        if result[key]:
            print(f"\n{title}")
            print(format_rows(result[key], fmt))
    env = result["environment"]
    loads = [" ".join(f"{x:.2f}" for x in env[k]) for k in ("loadavg_start", "loadavg_end")]
    print(f"\nloadavg start {loads[0]}, end {loads[1]} on {env['cpus']} cpus; "
          f"bcrypt cost {env['bcrypt_cost']}")


def run(args):
    CTL["tool"] = args.ctl
    with_etcd = shutil.which("etcd") is not None and shutil.which("etcdctl") is not None \
        and not args.no_etcd and args.ctl != "raftkvctl"
    if not with_etcd:
        log("etcd or etcdctl not found (or --no-etcd): raftkv only, set up with raftkvctl")
    data_root = tempfile.mkdtemp(prefix="auth-cost-", dir=args.data_root)
    extra = ["--bcrypt-cost", str(args.bcrypt_cost)] if args.bcrypt_cost else []
    env = rbench._environment()
    env["bcrypt_cost"] = args.bcrypt_cost or "default (10 on both)"
    systems = []
    try:
        systems = rbench._start_systems(data_root, with_etcd, log, extra_args=extra)
        for s in systems:
            set_up_users(s)
        rows = run_reps(systems, args)
    finally:
        for s in systems:
            s.cluster.stop()
        shutil.rmtree(data_root, ignore_errors=True)
    env["loadavg_end"] = os.getloadavg()
    result = {"environment": env, "args": vars(args), **summarize(rows), "runs": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    print_summary(result, args.output)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions (alternating)")
    p.add_argument("--total", type=int, default=2000, help="operations per case and run")
    p.add_argument("--cases", default=",".join(CASES),
                   help="comma-separated subset of " + ",".join(CASES))
    p.add_argument("--auths", type=int, default=20,
                   help="sequential Authenticate calls per system and rep (0: skip)")
    p.add_argument("--bcrypt-cost", type=int, default=0,
                   help="--bcrypt-cost for both systems' members (0: their default, 10)")
    p.add_argument("--no-etcd", action="store_true", help="raftkv only")
    p.add_argument("--ctl", choices=("auto", "etcdctl", "raftkvctl"), default="auto",
                   help="the admin tool that sets auth up (auto: etcdctl when installed; "
                        "raftkvctl: raftkv only)")
    p.add_argument("--data-root", default=None, help="parent of the temp data dir")
    p.add_argument("--json", default="", help="write everything here")
    p.add_argument("-w", "--output", choices=("table", "json", "csv"), default="table")
    args = p.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; known: {','.join(CASES)}")
    if args.reps < 1 or args.auths < 0:
        p.error("--reps must be at least 1 and --auths not negative")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
