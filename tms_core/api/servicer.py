"""The gRPC servicers: translate messages, call the lease manager, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.convert import lease_to_pb, served_from_pb
from tms_core.domain import Lease, LeaseState
from tms_core.errors import TmsError
from tms_core.leases import LeaseManager, ModelRequest

# grpc ships no type hints for its aio context.
Context: TypeAlias = Any


class ServerUnknown(TmsError):
    code = grpc.StatusCode.NOT_FOUND


class LeaseServicer(pb_grpc.LeaseServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    def _pb(self, lease: Lease) -> pb.Lease:
        return lease_to_pb(lease, self._manager.server_of(lease))

    async def Acquire(
        self, request: pb.AcquireRequest, context: Context
    ) -> AsyncIterator[pb.Lease]:
        lease = await self._manager.acquire(
            [ModelRequest(m.name, m.uri, m.memory_bytes) for m in request.models],
            name=request.name,
            duration_s=request.duration_s,
        )
        last = None
        async for current in self._manager.follow(
            lease.id,
            until=lambda lease: lease.state is LeaseState.READY or lease.state.ended,
        ):
            message = self._pb(current)
            if message != last:
                yield message
                last = message

    async def Status(self, request: pb.LeaseRef, context: Context) -> pb.Lease:
        return self._pb(self._manager.snapshot(request.id))

    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:
        leases = self._manager.list_leases(include_ended=request.include_ended)
        return pb.ListResponse(leases=[self._pb(lease) for lease in leases])

    async def Renew(self, request: pb.RenewRequest, context: Context) -> pb.Lease:
        return self._pb(await self._manager.renew(request.id, request.duration_s))

    async def Release(self, request: pb.LeaseRef, context: Context) -> pb.Lease:
        return self._pb(await self._manager.release(request.id))

    async def Follow(self, request: pb.LeaseRef, context: Context) -> AsyncIterator[pb.Lease]:
        last = None
        async for current in self._manager.follow(request.id):
            message = self._pb(current)
            if message != last:
                yield message
                last = message


class SidecarServicer(pb_grpc.SidecarServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    async def Connect(
        self, request: pb.SidecarHello, context: Context
    ) -> AsyncIterator[pb.Assignment]:
        if not self._manager.has_server(request.server_id):
            raise ServerUnknown(f"server {request.server_id!r} is not known to this daemon")
        async for assignment in self._manager.assignments(request.server_id):
            yield pb.Assignment(
                generation=assignment.generation,
                models=[pb.ModelAssignment(name=n, uri=u) for n, u in assignment.models],
            )

    async def Report(self, request: pb.SidecarReport, context: Context) -> pb.ReportAck:
        if not self._manager.has_server(request.server_id):
            raise ServerUnknown(f"server {request.server_id!r} is not known to this daemon")
        await self._manager.report(
            request.server_id,
            triton_ready=request.triton_ready,
            models=[served_from_pb(m) for m in request.models],
        )
        return pb.ReportAck()
