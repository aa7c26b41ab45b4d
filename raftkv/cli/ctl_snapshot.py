"""raftkvctl snapshot save|status|restore (etcdctl 3.4's verbs).

save asks one member for its backend image over the native protocol (AsyncClient.snapshot);
status and restore work on files only and run raftkvutl's code (raftkv.utl.main).
"""
from __future__ import annotations

import os

from raftkv.api import wire


class SnapshotSaveError(ValueError):
    """snapshot save cannot run as asked (etcdctl's wording and exit status)."""

    exit_code = 5  # etcdctl's ExitInterrupted


async def cmd_save(c, args, out):
    endpoints = [e for e in args.endpoints.split(",") if e.strip()]
    if len(endpoints) != 1:  # etcdctl's words (with its Go list of the endpoints), exit 5
        raise SnapshotSaveError(f"snapshot must be requested to one selected node, not "
                                f"multiple [{' '.join(endpoints)}]")
    part = args.file + ".part"
    try:
        with open(part, "wb") as f:
            await c.snapshot(f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(part, args.file)
    except BaseException as exc:
        if os.path.exists(part):
            os.unlink(part)
        if isinstance(exc, wire.RaftkvError) and exc.code != "AUTH_FAILED":
            # etcdctl exits 5 (ExitInterrupted) whenever the save fails
            raise SnapshotSaveError(str(exc)) from None
        raise
    out.write(f"Snapshot saved at {args.file}\n")
    return 0


def add_parsers(sub):
    from raftkv.utl.main import add_offline_parsers

    p = sub.add_parser("snapshot", help="snapshot save|status|restore")
    ssub = p.add_subparsers(dest="snapshot_cmd", required=True)
    save = ssub.add_parser("save", help="save one member's snapshot to a file")
    save.add_argument("file")
    save.set_defaults(fn=cmd_save, prefer_leader=False)
    add_offline_parsers(ssub)
