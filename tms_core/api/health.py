"""The standard gRPC health service (`grpc.health.v1.Health`) on the daemon's port.

Load balancers, Kubernetes probes and `grpc_health_probe` ask it whether the daemon serves;
`benchmarks/control_plane.py` uses its `Check` as the empty RPC that renewals are measured
against. The overall status ("") and each of the daemon's services say SERVING once the
daemon has recovered its state and the API is up, and NOT_SERVING from the start of shutdown.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from tms_core.api import tms_pb2 as pb

# The overall status, then each service of the API by its full name.
SERVICES = ["", *(service.full_name for service in pb.DESCRIPTOR.services_by_name.values())]


class DaemonHealth:
    def __init__(self) -> None:
        self._servicer = health_aio.HealthServicer()

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def serving(self) -> None:
        for service in SERVICES:
            await self._servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stopping(self) -> None:
        """Every service NOT_SERVING from now on, and watchers told so."""
        await self._servicer.enter_graceful_shutdown()
