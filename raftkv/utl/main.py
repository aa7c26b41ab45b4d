"""raftkvutl: offline operations on snapshot files and data dirs (as etcd 3.5's etcdutl).

    raftkvutl snapshot status FILE [-w simple|json|table]
    raftkvutl snapshot restore FILE --name NAME --initial-cluster ... \\
        [--initial-cluster-token T] [--initial-advertise-peer-urls URLS] [--data-dir DIR] \\
        [--skip-hash-check]

    raftkvutl defrag --data-dir DIR

`raftkvctl snapshot status|restore` and `raftkvctl defrag --data-dir` run the same code
(etcdctl 3.4 has them too).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from raftkv.cli.ctl_format import hoist_global_flags, human_bytes, write_table

# The member's defaults (ServerConfig's; a test checks they agree), so that a restore without
# flags gives the data dir a plain `raftkv` start uses. Kept here rather than imported:
# raftkvctl builds these parsers on every run, and the member's modules are slow to import.
DEFAULT_NAME = "default"
DEFAULT_TOKEN = "raftkv-cluster"
DEFAULT_PEER_URL = "http://127.0.0.1:2380"


def add_offline_parsers(ssub):
    """The `snapshot status` and `snapshot restore` verbs, under a `snapshot` subparser."""
    p = ssub.add_parser("status", help="describe a snapshot file (hash, revision, keys, size)")
    p.add_argument("file")
    p.set_defaults(offline=cmd_status)
    p = ssub.add_parser("restore", help="a new member data dir from a snapshot file")
    p.add_argument("file")
    p.add_argument("--name", default=DEFAULT_NAME, help="the member's name")
    p.add_argument("--data-dir", default="", help="where to write it (default ./NAME.raftkv)")
    p.add_argument("--wal-dir", default="",
                   help="where to write its WAL (default: DATA_DIR/wal; start the member with "
                        "the same --wal-dir)")
    p.add_argument("--initial-cluster", default="",
                   help="the new cluster's members, NAME=PEER_URL,... (default: this member)")
    p.add_argument("--initial-cluster-token", default=DEFAULT_TOKEN,
                   help="the new cluster's token (the same for every member's restore)")
    p.add_argument("--initial-advertise-peer-urls", default=DEFAULT_PEER_URL,
                   help="this member's peer URLs, as in --initial-cluster")
    p.add_argument("--skip-hash-check", action="store_true",
                   help="restore a file without snapshot save's SHA-256 trailer (a copied "
                        "member db)")
    p.set_defaults(offline=cmd_restore)


def add_defrag_args(p, required):
    """defrag's --data-dir: raftkvutl's needs it; raftkvctl's defrag is online without it."""
    p.add_argument("--data-dir", required=required, default="",
                   help="defragment this stopped member's data dir offline (shrinks its "
                        "data.mdb; refused while a member runs on it)")


def cmd_defrag(args, out):
    """`defrag --data-dir DIR`: a compacted copy of the stopped member's store replaces it
    (raftkv/utl/defrag.py). etcdctl 3.4 prints nothing on success; this prints the file's size
    before and after. A failure is etcdctl's line on stderr and exit status 1."""
    import lmdb

    from raftkv.storage.engine import DATA_FILE
    from raftkv.storage.errors import StorageError
    from raftkv.utl import defrag as defrag_mod

    try:
        info = defrag_mod.defrag(args.data_dir)
    except (defrag_mod.DefragError, StorageError, OSError, lmdb.Error) as exc:
        sys.stderr.write(f"Failed to defragment etcd data[{args.data_dir}] ({exc})\n")
        return 1
    if args.write_out == "json":
        out.write(json.dumps(info) + "\n")
        return 0
    before, after = info["size_before"], info["size_after"]
    out.write(f"Finished defragmenting etcd data[{args.data_dir}]: {DATA_FILE} "
              f"{human_bytes(before)} -> {human_bytes(after)} ({before} -> {after} bytes)\n")
    return 0


def cmd_status(args, out):
    """etcdctl snapshot status's output for the file."""
    from raftkv.mvcc import bbolt

    st = bbolt.snapshot_status(args.file)
    if args.write_out == "json":
        out.write(json.dumps(st, separators=(",", ":")) + "\n")
    elif args.write_out == "table":
        write_table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                    [[f"{st['hash']:x}", st["revision"], st["totalKey"],
                      human_bytes(st["totalSize"])]], out, align=">")
    else:
        out.write(f"{st['hash']:x}, {st['revision']}, {st['totalKey']}, "
                  f"{human_bytes(st['totalSize'])}\n")
    return 0


def cmd_restore(args, out):
    from raftkv.utl import restore as restore_mod

    cluster = args.initial_cluster or f"{args.name}={args.initial_advertise_peer_urls}"
    cfg = restore_mod.restore_config(args.name, cluster, args.initial_cluster_token,
                                     args.initial_advertise_peer_urls, args.data_dir,
                                     args.wal_dir)
    info = restore_mod.restore(args.file, cfg, args.skip_hash_check)
    if args.write_out == "json":
        out.write(json.dumps(info) + "\n")
        return 0
    auth = (f"; auth {'enabled' if info['auth_enabled'] else 'disabled'}, "
            f"{info['users']} user(s), {info['roles']} role(s)") \
        if info["users"] or info["roles"] or info["auth_enabled"] else ""
    out.write(f"restored snapshot {args.file} into {info['data_dir']}: member {cfg.name} "
              f"({info['member_id']:x}) of cluster {info['cluster_id']:x}; revision "
              f"{info['revision']} (compacted at {info['compact_revision']}), "
              f"{info['keys']} key revision(s), {info['leases']} lease(s){auth}\n")
    return 0


def run_offline(args, out=None):
    """Run an offline verb; an error is one "Error:" line and exit status 1."""
    from raftkv.mvcc.bbolt import BoltError
    from raftkv.utl.restore import RestoreError

    out = out or sys.stdout
    try:
        return args.offline(args, out)
    except (RestoreError, BoltError, OSError, ValueError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1


def build_parser():
    p = argparse.ArgumentParser(prog="raftkvutl", description=__doc__.split("\n\n")[0])
    p.add_argument("-w", "--write-out", choices=["simple", "json", "table"], default="simple")
    sub = p.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot", help="snapshot status|restore")
    add_offline_parsers(snap.add_subparsers(dest="snapshot_cmd", required=True))
    p_defrag = sub.add_parser("defrag", help="shrink a stopped member's store file")
    add_defrag_args(p_defrag, required=True)
    p_defrag.set_defaults(offline=cmd_defrag)
    return p


def main(argv=None, out=None):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(hoist_global_flags(argv))
    return run_offline(args, out)


if __name__ == "__main__":
    sys.exit(main())
