"""Build script: the C hot path (csrc/) with Cython wrappers.

Knobs (environment variables, since pip hides setup.py options):
  RAFTKV_PUREPYTHON=1        build no C extension at all (the pure-Python twins are used)
  RAFTKV_CYTHON_ANNOTATE=1   write Cython's HTML annotation next to each .pyx
  RAFTKV_CYTHON_DIRECTIVES   extra compiler directives, e.g. "boundscheck=True,linetrace=True"
  RAFTKV_CFLAGS              extra C flags (e.g. "-O0 -g" for debugging)

Cython always runs from the .pyx sources: generated .c files are never committed.
"""
import os
import sys

from setuptools import Extension, setup

PURE = os.environ.get("RAFTKV_PUREPYTHON") == "1"

# One row per extension: (module name, Cython source, C sources from csrc/).
# Each accelerated piece has a pure-Python twin with the same API (see raftkv/storage/__init__.py).
EXTENSIONS = [
    (
        "raftkv.storage._ccodec",
        "raftkv/storage/_ccodec.pyx",
        ["csrc/crc32c.c", "csrc/entry_codec.c"],
    ),
    ("raftkv.storage._cbtree", "raftkv/storage/_cbtree.pyx", ["csrc/btree.c"]),
    ("raftkv.mvcc._cindex", "raftkv/mvcc/_cindex.pyx", []),
    ("raftkv.mvcc._cputs", "raftkv/mvcc/_cputs.pyx", []),
    ("raftkv.api._crelay", "raftkv/api/_crelay.pyx", ["csrc/relay.c"]),
]


def _directives():
    out = {"language_level": 3, "embedsignature": True}
    extra = os.environ.get("RAFTKV_CYTHON_DIRECTIVES", "")
    for item in filter(None, (s.strip() for s in extra.split(","))):
        name, _, value = item.partition("=")
        out[name] = {"True": True, "False": False}.get(value, value)
    return out


def _extensions():
    if PURE:
        print("raftkv build: RAFTKV_PUREPYTHON=1, building no C extensions", file=sys.stderr)
        return []
    from Cython.Build import cythonize

    cflags = ["-O3", "-std=c99", "-Wall", "-Wno-unused-function"]
    cflags += os.environ.get("RAFTKV_CFLAGS", "").split()
    exts = []
    for name, pyx, csrc in EXTENSIONS:
        missing = [p for p in [pyx, *csrc] if not os.path.exists(p)]
        if missing:
            # A half-written tree must fail loudly, never build a package without its hot path.
            raise SystemExit(f"raftkv build: {name} is missing sources: {missing}")
        exts.append(Extension(name, [pyx, *csrc], include_dirs=["csrc"], extra_compile_args=cflags))
    print("raftkv build: C extensions " + ", ".join(e.name for e in exts), file=sys.stderr)
    return cythonize(
        exts,
        compiler_directives=_directives(),
        annotate=os.environ.get("RAFTKV_CYTHON_ANNOTATE") == "1",
    )


setup(ext_modules=_extensions())
