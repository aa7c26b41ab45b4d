"""Generated protobuf modules for etcd's v3 API (tools/gen_proto.py writes them)."""
