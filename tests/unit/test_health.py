"""The daemon's standard gRPC health service: SERVING once told so, NOT_SERVING at shutdown."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tms_core.api.health import DaemonHealth

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_follows_the_daemon() -> None:
    server = grpc.aio.server()
    health = DaemonHealth()
    health.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def check(service: str) -> int:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                return int(reply.status)

            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await check("tms.v1.LeaseService")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            await health.serving()
            assert await check("") == SERVING
            assert await check("tms.v1.LeaseService") == SERVING
            assert await check("tms.v1.SidecarService") == SERVING
            await health.stopping()
            assert await check("") == NOT_SERVING
    finally:
        await server.stop(None)
