"""One table of every error a client can see, shared by all layers.

Each error has a stable native code (the name), the gRPC status code etcd uses for it, and
etcd's exact message text (clients such as etcdctl and python-etcd3 match on the text). The
MVCC store and the server raise RaftkvError; the native protocol sends (code, message); the
gRPC front end maps grpc_code and message unchanged. Imports nothing from raftkv.
"""
from __future__ import annotations

import enum


class GrpcCode(enum.IntEnum):
    """gRPC status codes (numbering fixed by the gRPC spec)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_I, _O, _N = GrpcCode.INVALID_ARGUMENT, GrpcCode.OUT_OF_RANGE, GrpcCode.NOT_FOUND
_U, _F, _R = GrpcCode.UNAVAILABLE, GrpcCode.FAILED_PRECONDITION, GrpcCode.RESOURCE_EXHAUSTED

# code name -> (gRPC status, etcd message). Names are stable: native clients match on them.
ERRORS = {
    "EMPTY_KEY": (_I, "etcdserver: key is not provided"),
    "KEY_NOT_FOUND": (_I, "etcdserver: key not found"),
    "VALUE_PROVIDED": (_I, "etcdserver: value is provided"),
    "LEASE_PROVIDED": (_I, "etcdserver: lease is provided"),
    "TOO_MANY_OPS": (_I, "etcdserver: too many operations in txn request"),
    "DUPLICATE_KEY": (_I, "etcdserver: duplicate key given in txn request"),
    "COMPACTED": (_O, "etcdserver: mvcc: required revision has been compacted"),
    "FUTURE_REV": (_O, "etcdserver: mvcc: required revision is a future revision"),
    "NO_SPACE": (_R, "etcdserver: mvcc: database space exceeded"),
    "LEASE_NOT_FOUND": (_N, "etcdserver: requested lease not found"),
    "LEASE_EXIST": (_F, "etcdserver: lease already exists"),
    "LEASE_TTL_TOO_LARGE": (_O, "etcdserver: too large lease TTL"),
    "MEMBER_EXIST": (_F, "etcdserver: member ID already exist"),
    "PEER_URL_EXIST": (_F, "etcdserver: Peer URLs already exists"),
    "MEMBER_NOT_ENOUGH_STARTED": (_F, "etcdserver: re-configuration failed due to not enough "
                                      "started members"),
    "MEMBER_BAD_URLS": (_I, "etcdserver: given member URLs are invalid"),
    "MEMBER_NOT_FOUND": (_N, "etcdserver: member not found"),
    "MEMBER_NOT_LEARNER": (_F, "etcdserver: can only promote a learner member"),
    "LEARNER_NOT_READY": (_F, "etcdserver: can only promote a learner member which is in "
                              "sync with leader"),
    "TOO_MANY_LEARNERS": (_F, "etcdserver: too many learner members in cluster"),
    "REQUEST_TOO_LARGE": (_I, "etcdserver: request is too large"),
    "TOO_MANY_REQUESTS": (_R, "etcdserver: too many requests"),
    "ROOT_USER_NOT_EXIST": (_F, "etcdserver: root user does not exist"),
    "ROOT_ROLE_NOT_EXIST": (_F, "etcdserver: root user does not have root role"),
    "USER_ALREADY_EXIST": (_F, "etcdserver: user name already exists"),
    "USER_EMPTY": (_I, "etcdserver: user name is empty"),
    "USER_NOT_FOUND": (_F, "etcdserver: user name not found"),
    "ROLE_ALREADY_EXIST": (_F, "etcdserver: role name already exists"),
    "ROLE_NOT_FOUND": (_F, "etcdserver: role name not found"),
    "ROLE_EMPTY": (_I, "etcdserver: role name is empty"),
    "AUTH_FAILED": (_I, "etcdserver: authentication failed, invalid user ID or password"),
    "ROLE_NOT_GRANTED": (_F, "etcdserver: role is not granted to the user"),
    "PERMISSION_NOT_GRANTED": (_F, "etcdserver: permission is not granted to the role"),
    "AUTH_NOT_ENABLED": (_F, "etcdserver: authentication is not enabled"),
    "INVALID_AUTH_TOKEN": (GrpcCode.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    "INVALID_AUTH_MGMT": (_I, "etcdserver: invalid auth management"),
    # etcd 3.4 leaves it unmapped (gRPC Unknown, its internal error's text)
    "AUTH_VERIFY_ONLY": (GrpcCode.UNKNOWN, "auth: token signing attempted with verify-only key"),
    "NO_LEADER": (_U, "etcdserver: no leader"),
    "NOT_LEADER": (_F, "etcdserver: not leader"),
    "LEADER_CHANGED": (_U, "etcdserver: leader changed"),
    "NOT_CAPABLE": (_U, "etcdserver: not capable"),
    "STOPPED": (_U, "etcdserver: server stopped"),
    "TIMEOUT": (_U, "etcdserver: request timed out"),
    "TIMEOUT_DUE_TO_LEADER_FAIL": (_U, "etcdserver: request timed out, possibly due to "
                                       "previous leader failure"),
    "TIMEOUT_DUE_TO_CONNECTION_LOST": (_U, "etcdserver: request timed out, possibly due to "
                                           "connection lost"),
    "UNHEALTHY": (_U, "etcdserver: unhealthy cluster"),
    "CORRUPT": (GrpcCode.DATA_LOSS, "etcdserver: corrupt cluster"),
    "BAD_LEADER_TRANSFEREE": (_F, "etcdserver: bad leader transferee"),
    "LEARNER_NOT_SUPPORTED": (_U, "etcdserver: rpc not supported for learner"),
    "PERMISSION_DENIED": (GrpcCode.PERMISSION_DENIED, "etcdserver: permission denied"),
    # etcd's clientv3/concurrency and v3election errors: plain Go errors, so the Lock and
    # Election services answer them (as every error of theirs) with gRPC Unknown.
    "ELECTION_NOT_LEADER": (GrpcCode.UNKNOWN, "election: not leader"),
    "ELECTION_NO_LEADER": (GrpcCode.UNKNOWN, "election: no leader"),
    "ELECTION_NO_LEADER_KEY": (GrpcCode.UNKNOWN, '"leader" field must be provided'),
    "LOST_WATCHER": (GrpcCode.UNKNOWN, "lost watcher waiting for delete"),
    # etcd answers a failed defrag with its backend's plain error (gRPC Unknown)
    "DEFRAG_FAILED": (GrpcCode.UNKNOWN, "raftkv: defragment failed"),
    # raftkv's own (no etcd equivalent); the gRPC front end still maps them sensibly.
    "BAD_REQUEST": (_I, "raftkv: malformed request"),
    "UNKNOWN_OP": (GrpcCode.UNIMPLEMENTED, "raftkv: unknown operation"),
    "INTERNAL": (GrpcCode.INTERNAL, "raftkv: internal error"),
}


class RaftkvError(Exception):
    """An error with a stable code; str() is the message clients see."""

    def __init__(self, code, message=None):
        assert code in ERRORS, code
        grpc_code, default = ERRORS[code]
        self.code = code
        self.grpc_code = grpc_code
        self.message = message or default
        super().__init__(self.message)

    def to_wire(self):
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_wire(cls, obj):
        code = obj.get("code") if isinstance(obj, dict) else None
        if code not in ERRORS:
            return cls("INTERNAL", f"unknown error from server: {obj!r}")
        return cls(code, obj.get("message"))
