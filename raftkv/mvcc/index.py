"""The in-memory key index: key -> KeyIndex (a key's revision history), kept in a BTree;
apply_puts, the bulk "puts" loop that updates it; load_index, the loop that rebuilds it from
the stored records at start.

Both come from C twins (raftkv.mvcc._cindex: a compact, untracked KeyIndex with the history in
a C array, 80 bytes for a key with one revision; raftkv.mvcc._cputs) when the storage package
uses its C backend, else from the pure twins (raftkv.mvcc._pyindex, whose docstring describes
the history, and raftkv.mvcc._pyputs). Same API and results (tests/unit/mvcc/test_index.py,
test_puts.py, test_load_index.py). The C loops need the C KeyIndex, so the three are chosen
together.
"""
import os

from raftkv.storage import BACKEND

if BACKEND == "c":  # the storage package's choice (RAFTKV_PUREPYTHON, RAFTKV_REQUIRE_C)
    try:
        from raftkv.mvcc._cindex import KeyIndex
        from raftkv.mvcc._cputs import apply_puts, load_index
    except ImportError:
        if os.environ.get("RAFTKV_REQUIRE_C") == "1":
            raise
        from raftkv.mvcc._pyindex import KeyIndex
        from raftkv.mvcc._pyputs import apply_puts, load_index
else:
    from raftkv.mvcc._pyindex import KeyIndex
    from raftkv.mvcc._pyputs import apply_puts, load_index

__all__ = ["KeyIndex", "apply_puts", "load_index"]
