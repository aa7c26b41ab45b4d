"""etcd v3 gRPC front end: etcdserverpb services mapped onto the member's service object.

Each service module maps protobuf messages to the plain dicts of docs/INTERNAL_API.md (keys are
etcd's protobuf field names) and calls `await service.call(op, body)`. server.py starts it.
"""
