"""Snapshot restore: a new member data dir from a backend image (etcd's `snapshot restore`).

The image is a bbolt file written by `snapshot save` against raftkv or etcd (or an etcd
member's member/snap/db). Restoring it once per member, each time with the new cluster's
--initial-cluster, --initial-cluster-token and that member's --name, gives data dirs that
start as one new cluster holding the image's keys, revisions, leases and auth state:

1. the file's SHA-256 trailer is checked (what `snapshot save` appends; a copied member db
   has none and needs skip_hash_check, as in etcd);
2. the store is filled from the image (raftkv.mvcc.snapshot.import_bbolt) in a scratch dir
   beside the target;
3. the scratch dir is bootstrapped as a new cluster's member would be on its first start
   (Member.open_storage: the conf-change entries that found the cluster, in the WAL; the
   member's and cluster's IDs);
4. the scratch dir is renamed to the data dir, so a restore cut short leaves no data dir
   behind (the next restore clears the scratch dir).

Every member's restore must use the same flags but --name (and its own data dir): the
bootstrap entries, member IDs and cluster ID are derived from them, as in etcd.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil

import lmdb

from raftkv.mvcc import bbolt, snapshot as mvcc_snapshot
from raftkv.server.config import ConfigError, ServerConfig, split_list
from raftkv.server.member import Member, record_wal
from raftkv.storage.engine import Engine
from raftkv.storage.wal import fsync_dir, wal_path

log = logging.getLogger("raftkv.restore")

HASH_BYTES = 32  # SHA-256, appended by snapshot save
SCRATCH_SUFFIX = ".restoring"


class RestoreError(Exception):
    """The snapshot or the flags cannot give a data dir; the message says why."""


def check_hash(path, skip_hash_check=False):
    """Verify the SHA-256 trailer (etcd's rule: a file whose size is 32 more than a multiple
    of 512 has one). Returns the size of the image before the trailer."""
    size = os.path.getsize(path)
    has_hash = size % 512 == HASH_BYTES
    if not has_hash:
        if not skip_hash_check:
            raise RestoreError("snapshot missing hash but --skip-hash-check=false")
        return size
    if skip_hash_check:
        return size - HASH_BYTES
    digest = hashlib.sha256()
    left = size - HASH_BYTES
    with open(path, "rb") as f:
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise RestoreError(f"{path}: shorter than its size while reading")
            digest.update(chunk)
            left -= len(chunk)
        want = f.read(HASH_BYTES)
    if digest.digest() != want:
        raise RestoreError(f"expected sha256 {want.hex()}, got {digest.hexdigest()} "
                           f"({path} is corrupt or truncated)")
    return size - HASH_BYTES


def restore_config(name, initial_cluster, initial_cluster_token, initial_advertise_peer_urls,
                   data_dir="", wal_dir=""):
    """The ServerConfig the restored member is bootstrapped with; RestoreError on bad flags.
    wal_dir: where the member's WAL goes (etcd's --wal-dir; empty: DATA_DIR/wal)."""
    cfg = ServerConfig(name=name, data_dir=data_dir, wal_dir=wal_dir,
                       initial_cluster=initial_cluster,
                       initial_cluster_token=initial_cluster_token,
                       initial_advertise_peer_urls=initial_advertise_peer_urls,
                       listen_peer_urls=initial_advertise_peer_urls)
    try:
        cfg.finish()
        listed = cfg.cluster_members()[name]
    except ConfigError as exc:
        raise RestoreError(str(exc)) from None
    advertised = split_list(initial_advertise_peer_urls)
    if sorted(listed) != sorted(advertised):
        raise RestoreError(f"--initial-cluster has {name}={','.join(listed)} but "
                           f"--initial-advertise-peer-urls is {','.join(advertised)}: they "
                           "must name the same URLs")
    return cfg


def restore(path, cfg, skip_hash_check=False):
    """Restore the snapshot file at path into cfg.data_dir (which must not exist, or be
    empty), and its WAL into cfg.wal_dir if set (likewise). Returns import_bbolt's figures plus
    "member_id", "cluster_id", "data_dir"."""
    target = os.path.normpath(cfg.data_dir)
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise RestoreError(f"data-dir {cfg.data_dir!r} exists")
    wal_target = os.path.normpath(cfg.wal_dir) if cfg.wal_dir else None
    if wal_target and os.path.exists(wal_target) and \
            (not os.path.isdir(wal_target) or os.listdir(wal_target)):
        raise RestoreError(f"wal-dir {cfg.wal_dir!r} exists")
    if not os.path.isfile(path):
        raise RestoreError(f"{path}: no such snapshot file")
    check_hash(path, skip_hash_check)
    scratch = target + SCRATCH_SUFFIX
    # The WAL is written beside its target too (the same filesystem, often another disk than
    # the data dir's), then renamed into place before the data dir.
    wal_scratch = wal_target + SCRATCH_SUFFIX if wal_target else ""
    for leftover in filter(None, (scratch, wal_scratch)):
        if os.path.exists(leftover):
            log.warning("removing %s, left by a restore that did not finish", leftover)
            shutil.rmtree(leftover)
    os.makedirs(scratch)
    wal_placed = False
    try:
        engine = Engine(scratch)
        try:
            with bbolt.Reader(path) as reader:
                errors = reader.check()
                if errors:
                    raise RestoreError(f"{path} is not a valid backend image: {errors[0]}")
                info = mvcc_snapshot.import_bbolt(engine, reader)
        except (bbolt.BoltError, mvcc_snapshot.SnapshotError, ValueError) as exc:
            raise RestoreError(f"{path} is not a valid backend image: {exc}") from None
        except lmdb.Error as exc:  # e.g. MapFullError: the image is larger than the map
            raise RestoreError(f"writing the store in {scratch}: {exc}") from None
        finally:
            engine.close()
        member = Member(_with_data_dir(cfg, scratch, wal_scratch))
        try:
            member.open_storage()
            member.open_membership()
            info.update(member_id=member.id, cluster_id=member.cluster_id)
        finally:
            member.close_storage()
        # The data dir's WAL record names where its WAL will be after the renames below.
        record_wal(scratch, member.wal.id, wal_target or wal_path(target))
        if wal_target:
            if os.path.isdir(wal_target):
                os.rmdir(wal_target)
            os.rename(wal_scratch, wal_target)
            wal_placed = True
            fsync_dir(os.path.dirname(os.path.abspath(wal_target)))
        if os.path.isdir(target):
            os.rmdir(target)  # empty (checked above): rename replaces only a missing dir
        os.rename(scratch, target)
        fsync_dir(os.path.dirname(os.path.abspath(target)))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if wal_scratch:
            shutil.rmtree(wal_scratch, ignore_errors=True)
        if wal_placed:  # no data dir came of it: its WAL alone would be refused at start
            shutil.rmtree(wal_target, ignore_errors=True)
        raise
    info["data_dir"] = target
    return info


def _with_data_dir(cfg, data_dir, wal_dir=""):
    return dataclasses.replace(cfg, data_dir=data_dir, wal_dir=wal_dir).finish()
