"""Protobuf message <-> internal dict mapping shared by the etcd gRPC services.

The internal dicts use etcd's protobuf field names, so the mapping is generic and driven by the
message descriptors: no per-message code. Errors raised by the service (RaftkvError) become gRPC
statuses with etcd's exact code and message.
"""
from __future__ import annotations

import grpc
from google.protobuf.descriptor import FieldDescriptor

from raftkv.api import wire

RaftkvError = wire.RaftkvError  # raftkv.errors, through the api package's re-export

_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def to_dict(msg):
    """A request message as a dict: every scalar (proto3 defaults included), message fields
    and oneof members only when set, repeated fields as lists."""
    out = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        repeated = _is_repeated(field)
        if field.type == _MESSAGE:
            if repeated:
                out[field.name] = [to_dict(item) for item in value]
            elif msg.HasField(field.name):
                out[field.name] = to_dict(value)
        elif repeated:
            out[field.name] = list(value)
        elif field.containing_oneof is None or msg.HasField(field.name):
            out[field.name] = value
    return out


def fill(msg, body):
    """Set msg's fields from a response dict; keys that are not fields are ignored."""
    fields = msg.DESCRIPTOR.fields_by_name
    for name, value in body.items():
        field = fields.get(name)
        if field is None or value is None:
            continue
        target = getattr(msg, name) if field.type == _MESSAGE or _is_repeated(field) else None
        if field.type == _MESSAGE and _is_repeated(field):
            for item in value:
                fill(target.add(), item)
        elif field.type == _MESSAGE:
            target.SetInParent()
            fill(target, value)
        elif _is_repeated(field):
            target.extend(value)
        else:
            setattr(msg, name, value)
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


async def unary(service, context, op, request, response_cls, body=None):
    """Call one unary op: request message -> dict -> service -> dict -> response message."""
    try:
        result = await service.call(op, to_dict(request) if body is None else body)
    except RaftkvError as exc:
        await abort(context, exc)
    return fill(response_cls(), result)


async def current_header(service):
    """The member's current response header, read cheaply (one key, serializable)."""
    body = {"key": b"\0", "serializable": True, "count_only": True}
    result = await service.call("range", body)
    return result.get("header", {})
