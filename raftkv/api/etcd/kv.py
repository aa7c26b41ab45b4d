"""etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact."""
from __future__ import annotations

from raftkv.api.etcd.convert import unary
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc


class KVServicer(rpc_pb2_grpc.KVServicer):
    def __init__(self, service):
        self._service = service

    async def Range(self, request, context):
        return await unary(self._service, context, "range", request, rpc_pb2.RangeResponse)

    async def Put(self, request, context):
        return await unary(self._service, context, "put", request, rpc_pb2.PutResponse)

    async def DeleteRange(self, request, context):
        return await unary(self._service, context, "delete_range", request,
                           rpc_pb2.DeleteRangeResponse)

    async def Txn(self, request, context):
        return await unary(self._service, context, "txn", request, rpc_pb2.TxnResponse)

    async def Compact(self, request, context):
        return await unary(self._service, context, "compact", request,
                           rpc_pb2.CompactionResponse)
