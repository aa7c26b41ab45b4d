#!/usr/bin/env python3
"""Style as a test: the checks a reviewer would otherwise make by hand.

- lines at most 100 characters (Python, Cython, C);
- functions in raftkv/ at most 70 lines (TIGER_STYLE's limit: a function fits on a screen);
- raftkv/raft imports nothing that does I/O, reads a clock or draws global randomness;
- import directions between raftkv's packages (docs/ARCHITECTURE.md);
- no bare `except:`; no print() in library code (the CLIs and tools may print).

Run: python tools/tidy.py  (exit status 1 and one line per finding when anything is wrong).
tests/test_tidy.py runs it as part of the suite.
"""
from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINE_CHARS_MAX = 100
FUNCTION_LINES_MAX = 70
SOURCE_SUFFIXES = {".py", ".pyx", ".pxd", ".pxi", ".c", ".h"}
SOURCE_DIRS = ["raftkv", "csrc", "tools", "tests", "bench"]
GENERATED_PROTO_DIR = ROOT / "raftkv" / "api" / "etcd" / "proto"

# The Raft core must stay deterministic: nothing that touches the world outside its inputs.
RAFT_BANNED_MODULES = {
    "asyncio", "os", "random", "select", "selectors", "socket", "subprocess", "threading",
    "time", "uvloop", "multiprocessing", "signal", "lmdb",
}

# Which raftkv packages each package may import (docs/ARCHITECTURE.md, "Import direction").
# raftkv.errors (the one error table) and raftkv.tls (TLS contexts) import nothing from raftkv,
# so all but raft may use them.
ALLOWED_IMPORTS = {
    "raft": {"raft"},
    "storage": {"raft", "storage", "errors"},
    "mvcc": {"raft", "storage", "mvcc", "errors"},
    "server": {"raft", "storage", "mvcc", "server", "errors", "tls"},
    # api.etcd.workers (the --grpc-workers processes) reaches its member with the native
    # client's connection.
    "api": {"raft", "storage", "mvcc", "server", "api", "errors", "tls", "client.connection",
            "client.errors"},
    "client": {"client", "api.wire", "api.errors", "errors", "tls"},
    # cli may also use the generated etcd stubs: the benchmark's gRPC driver speaks etcd's API.
    "cli": {"cli", "client", "api.wire", "api.errors", "api.etcd.proto", "errors", "tls",
            "utl"},
    # utl (raftkvutl: offline tools on files and data dirs) sits on top of everything: it
    # builds data dirs with the member's own code and prints with raftkvctl's.
    "utl": {"raft", "storage", "mvcc", "server", "utl", "cli", "errors", "tls"},
}
PRINT_ALLOWED = {"cli", "bench", "utl"}


def _sources():
    for top in SOURCE_DIRS:
        base = ROOT / top
        if not base.exists():
            continue
        for path in sorted(base.rglob("*")):
            generated = path.suffix == ".c" and path.with_suffix(".pyx").exists()
            # protoc output (tools/gen_proto.py) is regenerated, never edited by hand.
            generated = generated or (GENERATED_PROTO_DIR in path.parents
                                      and path.name.endswith(("_pb2.py", "_pb2_grpc.py")))
            if path.suffix in SOURCE_SUFFIXES and path.is_file() and not generated:
                yield path


def _check_lines(path, text, out):
    for no, line in enumerate(text.splitlines(), 1):
        if len(line) > LINE_CHARS_MAX:
            out.append(f"{path}:{no}: line has {len(line)} characters (max {LINE_CHARS_MAX})")


def _raftkv_package(rel):
    """The raftkv sub-package a repository-relative path belongs to, or None."""
    if rel.parts[0] != "raftkv" or len(rel.parts) < 3:
        return None
    return rel.parts[1]


def _imported_names(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _check_imports(path, tree, pkg, out):
    allowed = ALLOWED_IMPORTS.get(pkg)
    for lineno, name in _imported_names(tree):
        top = name.split(".")[0]
        if pkg == "raft" and top in RAFT_BANNED_MODULES:
            out.append(f"{path}:{lineno}: raftkv.raft must not import {top} (determinism)")
        if allowed is None or top != "raftkv" or name.count(".") < 1:
            continue
        target = name.split(".", 1)[1]
        if not any(target == a or target.startswith(a + ".") for a in allowed):
            # "from raftkv.api import wire" yields raftkv.api and raftkv.api.wire: judge the latter.
            if any(a.startswith(target + ".") for a in allowed):
                continue
            out.append(f"{path}:{lineno}: raftkv.{pkg} must not import raftkv.{target}")


def _check_python(path, text, out):
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError as exc:
        out.append(f"{path}:{exc.lineno}: syntax error: {exc.msg}")
        return
    pkg = _raftkv_package(path)
    in_library = pkg is not None and pkg not in PRINT_ALLOWED
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            out.append(f"{path}:{node.lineno}: bare except: name the exception")
        if in_library and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES_MAX:
                out.append(
                    f"{path}:{node.lineno}: function {node.name} has {length} lines "
                    f"(max {FUNCTION_LINES_MAX})"
                )
        if (
            in_library
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        ):
            out.append(f"{path}:{node.lineno}: print() in library code: use logging")
    if pkg is not None:
        _check_imports(path, tree, pkg, out)


def run():
    out = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        _check_lines(rel, text, out)
        if path.suffix == ".py":
            _check_python(rel, text, out)
    return out


def main():
    findings = run()
    for line in findings:
        print(line)
    print(f"tidy: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
