"""raftkvctl make-mirror: etcdctl 3.4's verb over the native protocol.

    make-mirror [--prefix P] [--dest-prefix D | --no-dest-prefix] [--dest-cacert F]
                [--dest-cert F] [--dest-key F] DESTINATION

Copies every key under --prefix (every key without one) from the cluster in --endpoints to
the cluster at DESTINATION (its native endpoints, comma-separated), as of one revision, then
follows the source's watch from the next revision and applies each source revision's puts and
deletes on the destination in one txn (in pieces of at most TXN_OPS_MAX ops), until SIGINT
or SIGTERM (exit status 0). A key is renamed as etcdctl renames it: the source prefix
becomes --dest-prefix (default: the same prefix), or is dropped with --no-dest-prefix. Only
keys and values are copied: no leases, history or users. As etcdctl, the number of keys
mirrored so far is printed every REPORT_INTERVAL_S.
"""
from __future__ import annotations

import asyncio

from raftkv.cli.ctl_concurrency import _interrupts
from raftkv.cli.ctl_format import _Failed, bad_args
from raftkv.client import AsyncClient, DeleteEvent, ProgressNotify
from raftkv.client.txn import Transactions
from raftkv.client.types import prefix_range_end, to_bytes

PAGE_KEYS = 1000  # keys read per range request of the initial copy
TXN_OPS_MAX = 128  # a destination txn's ops: etcd's default --max-txn-ops
REPORT_INTERVAL_S = 30.0  # etcdctl prints its count every 30 s


def add_parsers(sub):
    p = sub.add_parser("make-mirror", help="mirror a prefix to another cluster, then follow "
                                           "its changes")
    p.add_argument("destination", help="the destination cluster's native endpoints")
    p.add_argument("--prefix", default="", help="the prefix of the keys to mirror")
    p.add_argument("--dest-prefix", default="",
                   help="what the prefix becomes in the destination (default: itself)")
    p.add_argument("--no-dest-prefix", action="store_true",
                   help="drop the prefix in the destination")
    p.add_argument("--dest-cacert", default="", help="the destination's CA bundle")
    p.add_argument("--dest-cert", default="", help="a client certificate for the destination")
    p.add_argument("--dest-key", default="", help="its key")
    p.add_argument("--dest-insecure-transport", default="true",
                   help="(etcdctl's; TLS follows the destination's https:// URLs)")
    p.set_defaults(fn=cmd_make_mirror)


def renamer(prefix, dest_prefix):
    """key -> its destination key (etcdctl: the first occurrence of the prefix replaced)."""
    return lambda key: dest_prefix + key[len(prefix):]


async def cmd_make_mirror(c, args, out):
    if args.dest_prefix and args.no_dest_prefix:
        raise bad_args("`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, "
                       "choose one.")
    prefix = to_bytes(args.prefix)
    dest_prefix = b"" if args.no_dest_prefix else to_bytes(args.dest_prefix or args.prefix)
    rename = renamer(prefix, dest_prefix)
    # the destination's TLS files (the source's come from the global flags)
    tls = {"ca_cert": args.dest_cacert or None, "cert_cert": args.dest_cert or None,
           "cert_key": args.dest_key or None}
    total = [0]

    async def report():
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            out.write(f"{total[0]}\n")
            out.flush()

    async with AsyncClient(args.destination.split(","), timeout=args.command_timeout,
                           **tls) as dest:
        with _interrupts() as interrupted:
            reporter = asyncio.ensure_future(report())
            mirror = asyncio.ensure_future(_mirror(c, dest, prefix, rename, total))
            stop = asyncio.ensure_future(interrupted.wait())
            try:
                await asyncio.wait({mirror, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reporter, mirror, stop):
                    task.cancel()
                await asyncio.gather(reporter, mirror, stop, return_exceptions=True)
            if mirror.done() and not mirror.cancelled() and mirror.exception() is not None:
                raise mirror.exception()
    return 0


def _range(prefix):
    return (prefix, prefix_range_end(prefix)) if prefix else (b"\0", b"\0")


async def _mirror(src, dest, prefix, rename, total):
    key, end = _range(prefix)
    revision = await _copy(src, dest, key, end, rename, total)
    events, cancel = await src.watch(key, end, start_revision=revision + 1)
    try:
        async for resp in events.responses():
            await _apply(dest, resp.events, rename)
            total[0] += len(resp.events)
    finally:
        await cancel()
    raise _Failed("make-mirror: the source's watch ended")


async def _copy(src, dest, key, end, rename, total):
    """Every key in [key, end) as of one revision, put to dest a page at a time; returns that
    revision."""
    revision = 0
    while True:
        resp = await src.get_response(key, end, limit=PAGE_KEYS, revision=revision)
        revision = revision or resp["header"]["revision"]
        kvs = resp.get("kvs") or []
        result = await dest.put_many((rename(kv["key"]), kv.get("value", b"")) for kv in kvs)
        if result.failed:
            raise _Failed(f"make-mirror: {result.failed} put(s) failed in the destination: "
                          f"{'; '.join(result.errors)}")
        total[0] += len(kvs)
        if not resp.get("more") or not kvs:
            return revision
        key = kvs[-1]["key"] + b"\0"


async def _apply(dest, events, rename):
    """One watch response's events on dest: a txn per source revision (pieces of at most
    TXN_OPS_MAX ops), in order."""
    t = Transactions()
    ops, revision = [], None
    for ev in events:
        if isinstance(ev, ProgressNotify):
            continue
        if ops and (ev.mod_revision != revision or len(ops) == TXN_OPS_MAX):
            await dest.transaction([], ops, [])
            ops = []
        revision = ev.mod_revision
        ops.append(t.delete(rename(ev.key)) if isinstance(ev, DeleteEvent)
                   else t.put(rename(ev.key), ev.value))
    if ops:
        await dest.transaction([], ops, [])
