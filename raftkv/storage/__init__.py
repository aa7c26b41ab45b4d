"""Durable storage engine: LMDB through py-lmdb, with a C/Cython hot path.

Each accelerated piece has a pure-Python twin with the same API and results. The backend is
chosen once, at import time:

  RAFTKV_PUREPYTHON=1   use the pure-Python twins even when the extensions are built
  RAFTKV_REQUIRE_C=1    a missing or broken extension is an ImportError (no silent fallback)

BACKEND names the choice ("c" or "pure"); it appears in status output and benchmark records.
Tests that compare the two import raftkv.storage._c* and raftkv.storage._py* directly.
"""
import os as _os

_PURE = _os.environ.get("RAFTKV_PUREPYTHON") == "1"
_REQUIRE_C = _os.environ.get("RAFTKV_REQUIRE_C") == "1"
if _PURE and _REQUIRE_C:
    raise ImportError("raftkv.storage: RAFTKV_PUREPYTHON=1 contradicts RAFTKV_REQUIRE_C=1")

BACKEND = "pure"
if not _PURE:
    try:
        from raftkv.storage import _cbtree as _btree_mod
        from raftkv.storage import _ccodec as _codec_mod

        BACKEND = "c"
    except ImportError as exc:
        if _REQUIRE_C:
            raise ImportError(
                f"raftkv.storage: RAFTKV_REQUIRE_C=1 but the C extension is unavailable: {exc}"
            ) from exc
if BACKEND == "pure":
    from raftkv.storage import _pybtree as _btree_mod  # noqa: F811
    from raftkv.storage import _pycodec as _codec_mod  # noqa: F811

BTree = _btree_mod.BTree
crc32c = _codec_mod.crc32c
encode_entries = _codec_mod.encode_entries
decode_entries = _codec_mod.decode_entries
CorruptEntryError = _codec_mod.CorruptEntryError
