"""raftkvctl lock and elect: etcdctl 3.4's verbs over the client's Lock and Election.

    lock NAME [COMMAND ARG...] [--ttl=10]   elect NAME PROPOSAL | elect -l NAME

Both hold a Session (a lease kept alive every third of its TTL) as etcdctl does: lock's
--ttl (10 s, etcdctl's), elect's 60 s (clientv3's; also lock's for a --ttl <= 0). Keys are
etcd's (NAME/<lease id in hex>), so raftkvctl and etcdctl, or a clientv3 program, contend
for the same lock and election. lock holds the lock, then runs COMMAND with ETCD_LOCK_KEY
and ETCD_LOCK_REV in its environment and releases the lock when it exits (its exit status
other than 0 is an error, "exit status N", as etcdctl), or without a COMMAND prints the
lock's key and holds it until interrupted (SIGINT or SIGTERM). elect campaigns, prints the
leader's key and value once elected and leads until interrupted, then resigns; elect -l
prints the leader and every change of it until interrupted. Interrupted while waiting for
the lock or the election: "Error: context canceled", exit status 1, as etcdctl. As etcdctl
3.4, the session's lease is left to expire (its key is deleted at once).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal

from raftkv.cli.ctl_format import _Failed, bad_args, print_range

LOCK_TTL_S = 10  # etcdctl lock's --ttl default
SESSION_TTL_S = 60  # clientv3/concurrency's default session TTL (etcdctl elect has no flag)


def add_parsers(sub):
    p = sub.add_parser("lock", help="acquire a named lock; run a command holding it")
    p.add_argument("--ttl", default=str(LOCK_TTL_S), help="the session's lease TTL (s)")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="NAME [COMMAND ARG...]")
    p.set_defaults(fn=cmd_lock)
    p = sub.add_parser("elect", help="campaign in a leader election, or observe it (-l)")
    p.add_argument("-l", "--listen", action="store_true", help="observation mode")
    p.add_argument("names", nargs="*", metavar="NAME [PROPOSAL]")
    p.set_defaults(fn=cmd_elect)


def lock_args(args):
    """(name, command, ttl) from `lock`'s arguments; flags before a `--` are lock's own, as
    etcdctl (cobra) parses them anywhere: `lock NAME --ttl 5 -- CMD -x`."""
    rest, ttl, words = list(args.rest), args.ttl, []
    while rest:
        tok = rest.pop(0)
        if tok == "--":
            words += rest
            break
        if tok == "--ttl" or tok.startswith("--ttl="):
            ttl = tok.split("=", 1)[1] if "=" in tok else (rest.pop(0) if rest else "")
        elif tok.startswith("--"):
            raise _Failed(f"unknown flag: {tok.split('=')[0]}")
        elif tok.startswith("-") and tok != "-":
            raise _Failed(f"unknown shorthand flag: {tok[1]!r} in {tok}")
        else:
            words.append(tok)
    if not re.fullmatch(r"[-+]?[0-9]+", ttl):
        raise _Failed(f'invalid argument "{ttl}" for "--ttl" flag: strconv.ParseInt: parsing '
                      f'"{ttl}": invalid syntax')
    if not words:
        raise bad_args("lock takes a lock name argument and an optional command to execute")
    return words[0], words[1:], int(ttl)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # etcdctl 3.4 unlocks or resigns on both


@contextlib.contextmanager
def _interrupts():
    """An Event set on SIGINT or SIGTERM, on which etcdctl 3.4 releases the lock or resigns
    and exits 0 (checked by hand against etcdctl 3.4.23)."""
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, interrupted.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield interrupted
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _session(c, ttl):
    """A Session for the command; its lease is left to expire when it ends, as etcdctl
    leaves its session's (its keys are deleted by then: unlock, resign)."""
    session = await c.session(ttl).start()
    try:
        yield session
    finally:
        await session.close(revoke=False)


async def _race(task, *events):
    """Wait for task or one of events; True if the task is done (else it is cancelled)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait([task, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if task.done():
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


async def _wait_for(interrupted, aw):
    """The result of aw, or etcdctl's "context canceled" if interrupted first."""
    task = asyncio.ensure_future(aw)
    if not await _race(task, interrupted):
        raise _Failed("context canceled")
    return task.result()


async def cmd_lock(c, args, out):
    name, command, ttl = lock_args(args)
    ttl = ttl if ttl > 0 else SESSION_TTL_S  # clientv3's WithTTL ignores a TTL <= 0
    with _interrupts() as interrupted:
        async with _session(c, ttl) as session:
            lock = c.lock(name, prefix=b"", lease=session.lease)
            await _wait_for(interrupted, lock.acquire())
            try:
                if command:
                    return await _run_locked(lock, command, out)
                resp = await c.get_response(lock.key)
                if not resp.get("kvs"):
                    raise _Failed("lock lost on init")
                print_range(args, out, resp)
                out.flush()
                await _race(asyncio.ensure_future(interrupted.wait()), session.done)
                if not interrupted.is_set():
                    raise _Failed("session expired")
            finally:
                if not session.done.is_set():
                    await lock.release()
    return 0


async def _run_locked(lock, command, out):
    """Run command holding the lock, with etcdctl's ETCD_LOCK_KEY and ETCD_LOCK_REV (the
    environment's own values win, as with Go's exec)."""
    env = {"ETCD_LOCK_KEY": lock.key.decode(errors="replace"),
           "ETCD_LOCK_REV": str(lock.header_revision), **os.environ}
    out.flush()
    try:
        proc = await asyncio.create_subprocess_exec(*command, env=env)
    except FileNotFoundError:
        raise _Failed(f'exec: "{command[0]}": executable file not found in $PATH') from None
    except PermissionError:
        raise _Failed(f"fork/exec {command[0]}: permission denied") from None
    try:
        rc = await asyncio.shield(proc.wait())
    except asyncio.CancelledError:
        await proc.wait()
        raise
    if rc > 0:
        raise _Failed(f"exit status {rc}")
    if rc < 0:
        raise _Failed(f"signal: {_signal_name(-rc)}")
    return 0


def _signal_name(num):
    """Go's name of a signal, as its exec error says it ("signal: killed")."""
    names = {signal.SIGKILL: "killed", signal.SIGTERM: "terminated",
             signal.SIGINT: "interrupt", signal.SIGSEGV: "segmentation fault",
             signal.SIGABRT: "aborted", signal.SIGHUP: "hangup", signal.SIGPIPE: "broken pipe"}
    return names.get(num, f"signal {num}")


async def cmd_elect(c, args, out):
    if len(args.names) not in (1, 2):
        raise bad_args("elect takes one election name argument and an optional proposal "
                       "argument")
    if len(args.names) == 1 and not args.listen:
        raise bad_args("no proposal argument but -l not set")
    if len(args.names) == 2 and args.listen:
        raise bad_args("proposal given but -l is set")
    with _interrupts() as interrupted:
        async with _session(c, SESSION_TTL_S) as session:  # etcdctl makes one to observe too
            election = c.election(args.names[0], lease=session.lease)
            if args.listen:
                return await _observe(election, args, out, interrupted)
            await _wait_for(interrupted, election.campaign(args.names[1]))
            print_range(args, out, await c.get_response(election.key))
            out.flush()
            await _race(asyncio.ensure_future(interrupted.wait()), session.done)
            if not interrupted.is_set():
                raise _Failed("elect: session expired")
            await election.resign()
    return 0


async def _observe(election, args, out, interrupted):
    async def show():
        async for resp in election.observe():
            print_range(args, out, resp)
            out.flush()

    task = asyncio.ensure_future(show())
    if await _race(task, interrupted):
        task.result()  # an error ends the observation with it
        raise _Failed("elect: observer lost")
    return 0
