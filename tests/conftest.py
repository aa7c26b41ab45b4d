"""Shared fixtures.

`backend` runs a test once per storage backend: "c" (the compiled extensions) and "pure" (the
pure-Python twins), imported directly so both are exercised in one run whatever
RAFTKV_PUREPYTHON says. With RAFTKV_REQUIRE_C=1 (as in CI) a missing extension fails the test
instead of skipping it.
"""
import importlib
import os
import types

import pytest

_MODULES = {"c": ("_ccodec", "_cbtree"), "pure": ("_pycodec", "_pybtree")}

# Members started by the tests (they inherit this) preallocate WAL segments of 4 MiB instead
# of etcd's 64: a suite run starts about a hundred clusters, which took 22 GB of disk at 64 MiB
# per member; smaller segments also rotate more often, which the tests then exercise.
os.environ.setdefault("RAFTKV_WAL_SEGMENT_BYTES", str(4 << 20))


def _load_backend(name):
    codec_name, btree_name = _MODULES[name]
    try:
        codec = importlib.import_module(f"raftkv.storage.{codec_name}")
        btree = importlib.import_module(f"raftkv.storage.{btree_name}")
    except ImportError as exc:
        if os.environ.get("RAFTKV_REQUIRE_C") == "1" or name == "pure":
            raise
        pytest.skip(f"backend {name!r} is not built: {exc}")
    return types.SimpleNamespace(name=name, codec=codec, btree=btree, BTree=btree.BTree)


@pytest.fixture(params=["c", "pure"])
def backend(request):
    return _load_backend(request.param)


@pytest.fixture
def both_backends():
    return _load_backend("c"), _load_backend("pure")
