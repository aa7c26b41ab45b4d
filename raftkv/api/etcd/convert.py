"""Protobuf message <-> internal dict mapping shared by the etcd gRPC services.

The internal dicts use etcd's protobuf field names, so the mapping is generic and driven by the
message descriptors: no per-message code. Errors raised by the service (RaftkvError) become gRPC
statuses with etcd's exact code and message.
"""
from __future__ import annotations

import grpc
from google.protobuf.descriptor import FieldDescriptor

from raftkv.api import wire
from raftkv.mvcc.auth import CERT_USER_FIELD

RaftkvError = wire.RaftkvError  # raftkv.errors, through the api package's re-export

_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


# Per message type, the plan of its fields, computed once from the descriptor (walking the
# descriptor's fields on every request cost 4 to 14 us per RPC).
_SCALAR, _ONEOF_SCALAR, _REPEATED_SCALAR, _MSG, _REPEATED_MSG = range(5)
_PLANS = {}


def _plan(descriptor):
    plan = _PLANS.get(descriptor)
    if plan is None:
        plan = []
        for field in descriptor.fields:
            repeated = _is_repeated(field)
            if field.type == _MESSAGE:
                kind = _REPEATED_MSG if repeated else _MSG
            elif repeated:
                kind = _REPEATED_SCALAR
            else:
                kind = _SCALAR if field.containing_oneof is None else _ONEOF_SCALAR
            plan.append((field.name, kind))
        plan = _PLANS[descriptor] = (tuple(plan), dict(plan))
    return plan


def to_dict(msg):
    """A request message as a dict: every scalar (proto3 defaults included), message fields
    and oneof members only when set, repeated fields as lists."""
    out = {}
    for name, kind in _plan(msg.DESCRIPTOR)[0]:
        if kind == _SCALAR:
            out[name] = getattr(msg, name)
        elif kind == _MSG or kind == _ONEOF_SCALAR:
            if msg.HasField(name):
                value = getattr(msg, name)
                out[name] = to_dict(value) if kind == _MSG else value
        elif kind == _REPEATED_SCALAR:
            out[name] = list(getattr(msg, name))
        else:
            out[name] = [to_dict(item) for item in getattr(msg, name)]
    return out


def fill(msg, body):
    """Set msg's fields from a response dict; keys that are not fields are ignored."""
    kinds = _plan(msg.DESCRIPTOR)[1]
    for name, value in body.items():
        kind = kinds.get(name)
        if kind is None or value is None:
            continue
        if kind == _SCALAR or kind == _ONEOF_SCALAR:
            setattr(msg, name, value)
        elif kind == _MSG:
            target = getattr(msg, name)
            target.SetInParent()
            fill(target, value)
        elif kind == _REPEATED_MSG:
            target = getattr(msg, name)
            for item in value:
                fill(target.add(), item)
        else:
            getattr(msg, name).extend(value)
    return msg


def _is_repeated(field):
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:  # protobuf >= 5.x
        return is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def status_code(error):
    """The grpc.StatusCode of a RaftkvError."""
    return _STATUS_BY_CODE.get(int(error.grpc_code), grpc.StatusCode.UNKNOWN)


async def abort(context, error):
    """End the RPC with the error's gRPC status and etcd's message (raises)."""
    await context.abort(status_code(error), error.message)


async def abort_recipe(context, error):
    """End a Lock or Election RPC with the error's message (raises): gRPC Unknown, as etcd's
    Lock and Election services return every error, the KV server's included, as a plain Go
    error (their in-process client turns the status into one), which grpc-go answers with
    Unknown. Except STOPPED, the member going away (it stops, or a --grpc-workers worker lost
    its member): a client of an etcd that stops or dies sees its connection drop, Unavailable,
    and so the error's own code, Unavailable, is answered."""
    code = status_code(error) if error.code == "STOPPED" else grpc.StatusCode.UNKNOWN
    await context.abort(code, error.message)


def with_identity(context, body):
    """body with who sends it: the auth token the client sent as gRPC metadata "token"
    (etcd's key; failing that "authorization", which etcd also reads: its HTTP gateway passes
    the Authorization header so), and the CN of its verified TLS certificate
    (--client-cert-auth)."""
    token = None
    for item in context.invocation_metadata() or ():
        if item.key == "token":
            token = item.value
            break
        if item.key == "authorization" and token is None:
            token = item.value
    if token is not None:
        body["token"] = token
    names = (context.auth_context() or {}).get("x509_common_name")
    if names:
        body[CERT_USER_FIELD] = names[0].decode(errors="replace")
    return body


async def unary(service, context, op, request, response_cls, body=None):
    """Call one unary op: request message -> dict -> service -> dict -> response message."""
    try:
        body = to_dict(request) if body is None else body
        result = await service.call(op, with_identity(context, body))
    except RaftkvError as exc:
        await abort(context, exc)
    return fill(response_cls(), result)


async def current_header(service):
    """The member's current response header, as a serializable read would carry it."""
    result = await service.call("header", {})
    return result.get("header", {})
