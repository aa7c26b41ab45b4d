"""grpc.health.v1.Health, as etcd 3.4 serves it (grpc-go's health server with status SERVING
for the service "" and nothing else, never changed): Check answers SERVING for "" and NOT_FOUND
"unknown service" for any other name; Watch sends SERVING (or SERVICE_UNKNOWN) once and then
stays open until the client leaves. The messages come from grpcio-health-checking."""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_SERVING = health_pb2.HealthCheckResponse.SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVED = ""  # the only service name etcd 3.4 reports


class HealthServicer(health_pb2_grpc.HealthServicer):
    async def Check(self, request, context):
        if request.service != SERVED:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=_SERVING)

    async def Watch(self, request, context):
        status = _SERVING if request.service == SERVED else _UNKNOWN
        yield health_pb2.HealthCheckResponse(status=status)
        await asyncio.Event().wait()  # no status ever changes; cancelled when the client leaves
