#!/usr/bin/env python3
"""Regenerate raftkv/api/etcd/proto/*_pb2.py and *_pb2_grpc.py from the .proto files.

Run from anywhere: python tools/gen_proto.py (needs grpcio-tools; last run with grpcio-tools
1.85, whose bundled protoc emits gencode for protobuf 7.35.1). The generated *_pb2.py modules
check the runtime at import: they need the Python protobuf runtime >= 7.35.1 and < 8; the
*_pb2_grpc.py module needs grpcio >= 1.85.1. The generated files are checked in, so running the
server needs only grpcio and protobuf (pyproject.toml's dependencies). grpc.health.v1's modules
are not generated here: they come from grpcio-health-checking (a dependency too).
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "raftkv" / "api" / "etcd" / "proto"
PROTOS = ["kv.proto", "auth.proto", "rpc.proto", "v3lock.proto", "v3election.proto"]
SERVICE_PROTOS = {"rpc.proto", "v3lock.proto", "v3election.proto"}  # also get *_pb2_grpc.py


def main():
    from grpc_tools import protoc  # imported here: only this tool needs grpcio-tools

    include = pathlib.Path(protoc.__file__).parent / "_proto"
    for name in PROTOS:
        rel = (PROTO_DIR / name).relative_to(ROOT)
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}", str(rel)]
        if name in SERVICE_PROTOS:
            args.insert(-1, f"--grpc_python_out={ROOT}")
        status = protoc.main(args)
        if status != 0:
            sys.stderr.write(f"protoc failed on {rel} (status {status})\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
