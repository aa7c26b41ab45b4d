"""bbolt database files (the format of etcd's backend): a streaming writer and a small reader.

Layout (bbolt 1.3, little-endian, page size 4096). Every page starts with a 16-byte header
``id u64 | flags u16 | count u16 | overflow u32``; a node larger than a page takes ``overflow``
more pages right after it. Pages 0 and 1 are meta pages (flags 0x04): ``magic u32 | version u32
| pageSize u32 | flags u32 | root bucket (root pgid u64, sequence u64) | freelist pgid u64 |
pgid (high-water mark) u64 | txid u64 | checksum u64`` where the checksum is FNV-1a 64 of the
56 bytes before it. Page 2 is an empty freelist page (flags 0x10). Leaf pages (0x02) hold
``count`` elements ``flags u32 | pos u32 | ksize u32 | vsize u32`` (pos relative to the
element) then the keys and values; branch pages (0x01) hold ``pos u32 | ksize u32 | pgid u64``
elements whose key is the first key of the child. A bucket is a leaf element with flag 0x01
whose value is ``root pgid u64 | sequence u64``; root 0 means an inline bucket: its leaf page
follows the header inside the value (bbolt inlines buckets up to pageSize/4 bytes).

The writer builds each bucket's B+tree bottom-up from keys given in ascending order, keeping
one partly filled node per tree level in memory, so memory is bounded by the tree height, not
the database size. Pages are written in order and every page below the high-water mark is
reachable, so the file passes bbolt's ``tx.Check()`` (``etcdctl snapshot status`` runs it).
"""
from __future__ import annotations

import mmap
import struct

PAGE_SIZE = 4096
MAGIC = 0xED0CDAED
VERSION = 2

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01

_PAGE_HEADER = struct.Struct("<QHHI")
_LEAF_ELEM = struct.Struct("<IIII")
_BRANCH_ELEM = struct.Struct("<IIQ")
_BUCKET = struct.Struct("<QQ")
_META = struct.Struct("<IIII QQ QQQ")  # up to (excluding) the checksum
_U64 = struct.Struct("<Q")
HEADER_BYTES = _PAGE_HEADER.size  # 16
ELEM_BYTES = 16
FIRST_DATA_PGID = 3  # 0, 1: meta; 2: freelist
NO_FREELIST = 0xFFFFFFFFFFFFFFFF  # meta.freelist of a file written with NoFreelistSync

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


class BoltError(Exception):
    """A bbolt file is invalid, or the writer was given keys out of order."""


def fnv1a64(data):
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def _meta_page(pgid, root, freelist, high, txid, page_size):
    body = _META.pack(MAGIC, VERSION, page_size, 0, root, 0, freelist, high, txid)
    return (_PAGE_HEADER.pack(pgid, META_PAGE, 0, 0) + body + _U64.pack(fnv1a64(body))).ljust(
        page_size, b"\0")


def _leaf_node(items, pgid=0):
    """Bytes of a leaf node (header included) holding items [(flags, key, value)]."""
    n = len(items)
    elems, data = [], []
    pos = n * ELEM_BYTES  # from element 0 to the data; element i is 16*i further on
    for i, (flags, key, value) in enumerate(items):
        elems.append(_LEAF_ELEM.pack(flags, pos - i * ELEM_BYTES, len(key), len(value)))
        data.append(key)
        data.append(value)
        pos += len(key) + len(value)
    return b"".join([_PAGE_HEADER.pack(pgid, LEAF_PAGE, n, 0), *elems, *data])


def _branch_node(items, pgid):
    n = len(items)
    elems, data = [], []
    pos = n * ELEM_BYTES
    for i, (key, child) in enumerate(items):
        elems.append(_BRANCH_ELEM.pack(pos - i * ELEM_BYTES, len(key), child))
        data.append(key)
        pos += len(key)
    return b"".join([_PAGE_HEADER.pack(pgid, BRANCH_PAGE, n, 0), *elems, *data])


class _Level:
    __slots__ = ("items", "size", "written")

    def __init__(self):
        self.items = []
        self.size = HEADER_BYTES
        self.written = 0


class _TreeBuilder:
    """Bottom-up B+tree of one bucket: add() keys in ascending order, then finish() -> root."""

    def __init__(self, writer):
        self.w = writer
        self.levels = [_Level()]

    def add(self, flags, key, value):
        self._push(0, (flags, key, value), ELEM_BYTES + len(key) + len(value))

    def _push(self, depth, item, esize):
        level = self.levels[depth]
        if level.items and level.size + esize > self.w.page_size:
            self._flush(depth)
        level.items.append(item)
        level.size += esize

    def _write(self, depth):
        level = self.levels[depth]
        pgid = self.w.next_pgid
        if depth == 0:
            node = _leaf_node(level.items, pgid)
            first = level.items[0][1] if level.items else b""
        else:
            node = _branch_node(level.items, pgid)
            first = level.items[0][0]
        self.w.write_node(node)
        level.items, level.size = [], HEADER_BYTES
        level.written += 1
        return first, pgid

    def _flush(self, depth):
        first, pgid = self._write(depth)
        if depth + 1 == len(self.levels):
            self.levels.append(_Level())
        self._push(depth + 1, (first, pgid), ELEM_BYTES + len(first))

    def finish(self):
        depth = 0
        while True:
            level = self.levels[depth]
            if depth == len(self.levels) - 1 and level.written == 0:
                return self._write(depth)[1]  # the only node of the top level: the root
            if level.items:
                self._flush(depth)
            depth += 1


class _BucketBuilder:
    """One bucket: kept in memory while it fits inline (pageSize/4, as bbolt), else a tree."""

    def __init__(self, writer):
        self.w = writer
        self.inline = []
        self.size = HEADER_BYTES
        self.tree = None
        self.last = None

    def add(self, key, value, flags=0):
        key, value = bytes(key), bytes(value)
        if not key:
            raise BoltError("empty key")
        if self.last is not None and key <= self.last:
            raise BoltError(f"keys out of order: {key!r} after {self.last!r}")
        self.last = key
        if self.tree is not None:
            self.tree.add(flags, key, value)
            return
        self.inline.append((flags, key, value))
        self.size += ELEM_BYTES + len(key) + len(value)
        if self.size > self.w.page_size // 4:
            self.tree = _TreeBuilder(self.w)
            for item in self.inline:
                self.tree.add(*item)
            self.inline = None

    def value(self):
        """The bucket's value in its parent: header, plus the inline page if inline."""
        if self.tree is not None:
            return _BUCKET.pack(self.tree.finish(), 0)
        return _BUCKET.pack(0, 0) + _leaf_node(self.inline)


class Writer:
    """Writes a bbolt file to a seekable binary file object opened for writing at offset 0.

    Use: ``w = Writer(f)``; for each bucket in ascending name order ``w.bucket(name)`` then
    ``w.put(key, value)`` in ascending key order; ``w.close()`` writes the root bucket and
    the meta pages and returns the file size in bytes."""

    def __init__(self, f, page_size=PAGE_SIZE, txid=1):
        self.f = f
        self.page_size = page_size
        self.txid = txid
        self.next_pgid = FIRST_DATA_PGID
        self.root = _BucketBuilder(self)
        self.current = None
        self.current_name = None
        blank = bytes(page_size)
        f.write(blank)
        f.write(blank)
        f.write(_PAGE_HEADER.pack(2, FREELIST_PAGE, 0, 0).ljust(page_size, b"\0"))

    def write_node(self, node):
        pages = -(-len(node) // self.page_size)
        if pages > 1:  # set the overflow count in the header
            node = node[:12] + struct.pack("<I", pages - 1) + node[16:]
        self.f.write(node)
        pad = pages * self.page_size - len(node)
        if pad:
            self.f.write(bytes(pad))
        self.next_pgid += pages

    def _end_bucket(self):
        if self.current is not None:
            self.root.add(self.current_name, self.current.value(), BUCKET_LEAF_FLAG)
            self.current = None

    def bucket(self, name):
        """Start the next bucket (names ascending)."""
        self._end_bucket()
        self.current_name = bytes(name)
        if self.root.last is not None and self.current_name <= self.root.last:
            raise BoltError(f"buckets out of order: {name!r}")
        self.current = _BucketBuilder(self)

    def put(self, key, value):
        self.current.add(key, value)

    def close(self):
        self._end_bucket()
        if self.root.tree is None:  # the root bucket is never inline
            self.root.tree = _TreeBuilder(self)
            for item in self.root.inline:
                self.root.tree.add(*item)
        root = self.root.tree.finish()
        high = self.next_pgid
        self.f.seek(0)
        for pgid in (0, 1):
            self.f.write(_meta_page(pgid, root, 2, high, self.txid, self.page_size))
        self.f.seek(high * self.page_size)
        self.f.flush()
        return high * self.page_size


def write_db(f, buckets, page_size=PAGE_SIZE):
    """Write buckets [(name, iterable of (key, value))] (names and keys ascending) to f."""
    w = Writer(f, page_size)
    for name, items in buckets:
        w.bucket(name)
        for key, value in items:
            w.put(key, value)
    return w.close()


# ---------------------------------------------------------------------------------- reader

class Reader:
    """Read-only view of a bbolt file (trailing bytes after the high-water mark are ignored,
    like the SHA-256 that etcdctl snapshot save leaves at the end)."""

    def __init__(self, path):
        self._file = open(path, "rb")
        try:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except Exception:
            self._file.close()
            raise
        self.buf = memoryview(self._map)
        self.meta = self._pick_meta()
        self.page_size = self.meta["page_size"]

    def close(self):
        self.buf.release()
        self._map.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_meta(self, offset):
        fields = _META.unpack_from(self.buf, offset + HEADER_BYTES)
        (checksum,) = _U64.unpack_from(self.buf, offset + HEADER_BYTES + _META.size)
        magic, version, page_size, flags, root, seq, freelist, high, txid = fields
        if magic != MAGIC:
            raise BoltError("invalid database (bad magic)")
        if version != VERSION:
            raise BoltError(f"version mismatch ({version})")
        body = bytes(self.buf[offset + HEADER_BYTES:offset + HEADER_BYTES + _META.size])
        if checksum != 0 and checksum != fnv1a64(body):
            raise BoltError("checksum error")
        return {"page_size": page_size, "flags": flags, "root": root, "sequence": seq,
                "freelist": freelist, "pgid": high, "txid": txid}

    def _pick_meta(self):
        if len(self.buf) < 2 * HEADER_BYTES + _META.size:
            raise BoltError("file size too small")
        m0 = self._read_meta(0)
        try:
            m1 = self._read_meta(m0["page_size"])
        except (BoltError, struct.error):
            return m0
        return m1 if m1["txid"] > m0["txid"] else m0

    @property
    def size(self):
        """bbolt's tx.Size(): high-water mark times the page size."""
        return self.meta["pgid"] * self.page_size

    def page_header(self, pgid):
        off = pgid * self.page_size
        if off + HEADER_BYTES > len(self.buf):
            raise BoltError(f"page {pgid} beyond the end of the file")
        return _PAGE_HEADER.unpack_from(self.buf, off)

    def _node_items(self, base):
        """(flags, key, value-or-child) of the node whose header is at offset base."""
        pid, flags, count, _ = _PAGE_HEADER.unpack_from(self.buf, base)
        buf = self.buf
        if flags & LEAF_PAGE:
            for i in range(count):
                at = base + HEADER_BYTES + i * ELEM_BYTES
                eflags, pos, ksize, vsize = _LEAF_ELEM.unpack_from(buf, at)
                k = at + pos
                yield eflags, bytes(buf[k:k + ksize]), bytes(buf[k + ksize:k + ksize + vsize])
        elif flags & BRANCH_PAGE:
            for i in range(count):
                at = base + HEADER_BYTES + i * ELEM_BYTES
                pos, ksize, child = _BRANCH_ELEM.unpack_from(buf, at)
                yield -1, bytes(buf[at + pos:at + pos + ksize]), child
        else:
            raise BoltError(f"page {pid}: unexpected page type 0x{flags:x}")

    def _walk(self, base, pages=None):
        """Leaf elements (flags, key, value) of the subtree whose node header is at base."""
        pid, flags, _, overflow = _PAGE_HEADER.unpack_from(self.buf, base)
        if pages is not None:
            pages.append((pid, overflow, flags))
        for eflags, key, val in self._node_items(base):
            if eflags == -1:
                if val >= self.meta["pgid"]:
                    raise BoltError(f"page {val}: out of bounds")
                yield from self._walk(val * self.page_size, pages)
            else:
                yield eflags, key, val

    def _bucket_items(self, header_value, pages=None):
        root, _ = _BUCKET.unpack_from(header_value)
        if root == 0:  # inline: a page right after the bucket header, inside the value
            inline = Reader.__new__(Reader)
            inline.buf = memoryview(bytes(header_value[_BUCKET.size:]))
            inline.meta, inline.page_size = self.meta, self.page_size
            return inline._walk(0)
        return self._walk(root * self.page_size, pages)

    def buckets(self):
        """Top-level bucket names, in file order."""
        return [k for f, k, _ in self._walk(self.meta["root"] * self.page_size)
                if f & BUCKET_LEAF_FLAG]

    def _bucket_value(self, name):
        for f, k, v in self._walk(self.meta["root"] * self.page_size):
            if k == name and f & BUCKET_LEAF_FLAG:
                return v
        raise KeyError(name)

    def items(self, name):
        """(key, value) of a top-level bucket, in key order."""
        for _, k, v in self._bucket_items(self._bucket_value(bytes(name))):
            yield k, v

    def check(self):
        """Errors as bbolt's tx.Check() reports them: every page below the high-water mark
        reachable exactly once or free, pages of the right types, keys in order."""
        errors = []
        high = self.meta["pgid"]
        seen = {0: "meta", 1: "meta"}
        fl = self.meta["freelist"]
        freed = set()
        if fl != NO_FREELIST:  # else (etcd's NoFreelistSync) every unreachable page is free
            _, fflags, fcount, fover = self.page_header(fl)
            if fflags != FREELIST_PAGE:
                errors.append(f"page {fl}: not a freelist page")
            else:
                start, count = fl * self.page_size + HEADER_BYTES, fcount
                if count == 0xFFFF:
                    (count,) = _U64.unpack_from(self.buf, start)
                    start += 8
                freed = {_U64.unpack_from(self.buf, start + 8 * i)[0] for i in range(count)}
            for i in range(fover + 1):
                seen[fl + i] = "freelist"

        def check_tree(header_value, where):
            pages = []
            last = None
            for f, k, v in self._bucket_items(header_value, pages):
                if last is not None and k <= last:
                    errors.append(f"{where}: keys out of order at {k!r}")
                last = k
                if f & BUCKET_LEAF_FLAG:
                    check_tree(v, where + [k])
            for pid, overflow, flags in pages:
                if not flags & (LEAF_PAGE | BRANCH_PAGE):
                    errors.append(f"page {pid}: invalid type 0x{flags:x}")
                for i in range(overflow + 1):
                    if pid + i >= high:
                        errors.append(f"page {pid + i}: out of bounds: {high}")
                    if pid + i in seen:
                        errors.append(f"page {pid + i}: multiple references")
                    if pid + i in freed:
                        errors.append(f"page {pid + i}: reachable freed")
                    seen[pid + i] = where

        check_tree(_BUCKET.pack(self.meta["root"], 0), [])
        for pid in range(high if fl != NO_FREELIST else 0):
            if pid not in seen and pid not in freed:
                errors.append(f"page {pid}: unreachable unfreed")
        return errors


def snapshot_status(path):
    """What ``etcdctl snapshot status`` computes: {"hash", "revision", "totalKey",
    "totalSize"}; the hash is CRC-32C over every bucket name then its keys and values."""
    from raftkv.storage import crc32c

    h, revision, total = 0, 0, 0
    with Reader(path) as r:
        for name in r.buckets():
            h = crc32c(name, h)
            for k, v in r.items(name):
                h = crc32c(v, crc32c(k, h))
                if name == b"key":
                    revision = struct.unpack_from(">Q", k)[0]
                total += 1
        return {"hash": h, "revision": revision, "totalKey": total, "totalSize": r.size}
