"""The gRPC servicers: translate messages, call the lease manager, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from tms_core import placement
from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.cluster import cluster_status, models_status
from tms_core.api.convert import (
    acquire_request_from_pb,
    cache_from_pb,
    event_to_pb,
    lease_to_pb,
    name_to_pb,
    pool_from_pb,
    pool_to_pb,
    served_from_pb,
)
from tms_core.domain import Lease, LeaseNameRecord, LeaseState
from tms_core.errors import TmsError
from tms_core.identity import principal
from tms_core.manager.facade import LeaseManager

# grpc ships no type hints for its aio context.
Context: TypeAlias = Any


class ServerUnknown(TmsError):
    code = grpc.StatusCode.NOT_FOUND


class LeaseServicer(pb_grpc.LeaseServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    def _pb(self, lease: Lease) -> pb.Lease:
        return lease_to_pb(
            lease,
            self._manager.server_of(lease),
            self._manager.names_of(lease.id),
            self._manager.service_host(lease.id),
            self._manager.replicas_of(lease),
        )

    async def Acquire(
        self, request: pb.AcquireRequest, context: Context
    ) -> AsyncIterator[pb.Lease]:
        models, options = acquire_request_from_pb(request)
        caller = principal.current()
        lease = await self._manager.acquire(models, options, tenant=caller.tenant if caller else "")
        last = None
        async for current in self._manager.follow(
            lease.id,
            until=lambda lease: lease.state is LeaseState.READY or lease.state.ended,
        ):
            message = self._pb(current)
            if message != last:
                yield message
                last = message

    async def Plan(self, request: pb.AcquireRequest, context: Context) -> pb.PlanResponse:
        models, options = acquire_request_from_pb(request)
        decision = await self._manager.plan(models, options)
        if isinstance(decision, placement.JoinServer):
            return pb.PlanResponse(
                decision="join", server_id=decision.server_id, reason=decision.why
            )
        if isinstance(decision, placement.StartServer):
            return pb.PlanResponse(
                decision="start", node=decision.node, gpus=list(decision.gpus), reason=decision.why
            )
        if isinstance(decision, placement.Wait):
            return pb.PlanResponse(decision="wait", reason=decision.reason)
        return pb.PlanResponse(decision="reject", reason=decision.reason)

    async def Status(self, request: pb.LeaseRef, context: Context) -> pb.Lease:
        return self._pb(self._manager.snapshot(request.id))

    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:
        leases = self._manager.list_leases(include_ended=request.include_ended)
        return pb.ListResponse(leases=[self._pb(lease) for lease in leases])

    async def Renew(self, request: pb.RenewRequest, context: Context) -> pb.Lease:
        return self._pb(await self._manager.renew(request.id, request.duration_s))

    async def Release(self, request: pb.LeaseRef, context: Context) -> pb.Lease:
        return self._pb(await self._manager.release(request.id))

    async def Wake(self, request: pb.LeaseRef, context: Context) -> pb.Lease:
        return self._pb(await self._manager.wake(request.id))

    async def Scale(self, request: pb.ScaleRequest, context: Context) -> pb.Lease:
        return self._pb(await self._manager.set_replicas(request.id, request.replicas))

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
                triton_grpc=self._manager.sidecar_triton(request.server_id),
            )

    async def Report(self, request: pb.SidecarReport, context: Context) -> pb.ReportAck:
        if not self._manager.has_server(request.server_id):
            raise ServerUnknown(f"server {request.server_id!r} is not known to this daemon")
        await self._manager.report(
            request.server_id,
            triton_ready=request.triton_ready,
            models=[served_from_pb(m) for m in request.models],
            leak=request.leak,
            generation=request.generation,
            cache=cache_from_pb(request.cache) if request.HasField("cache") else None,
        )
        return pb.ReportAck()


class LeaseNameServicer(pb_grpc.LeaseNameServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    def _pb(self, record: LeaseNameRecord) -> pb.LeaseName:
        lease = self._manager.leases.get(record.lease_id) if record.lease_id else None
        server = self._manager.server_of(lease) if lease else None
        return name_to_pb(record, lease, server, self._manager.service_host(record.name))

    async def SetName(self, request: pb.NameRequest, context: Context) -> pb.LeaseName:
        return self._pb(await self._manager.set_name(request.name, request.lease_id))

    async def DeleteName(self, request: pb.NameRequest, context: Context) -> pb.LeaseName:
        return self._pb(await self._manager.delete_name(request.name))

    async def ListNames(self, request: pb.Empty, context: Context) -> pb.ListNamesResponse:
        return pb.ListNamesResponse(names=[self._pb(r) for r in self._manager.list_names()])


class PoolServicer(pb_grpc.PoolServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    async def CreatePool(self, request: pb.Pool, context: Context) -> pb.Pool:
        return pool_to_pb(await self._manager.create_pool(pool_from_pb(request)))

    async def DeletePool(self, request: pb.PoolRef, context: Context) -> pb.Pool:
        return pool_to_pb(await self._manager.delete_pool(request.name))

    async def ListPools(self, request: pb.Empty, context: Context) -> pb.ListPoolsResponse:
        return pb.ListPoolsResponse(
            pools=[
                pool_to_pb(p, self._manager.pool_servers(p.name))
                for p in self._manager.list_pools()
            ]
        )

    async def PoolStatus(self, request: pb.PoolRef, context: Context) -> pb.Pool:
        servers = self._manager.pool_servers(request.name)
        return pool_to_pb(self._manager.pools[request.name], servers)


class AllowlistServicer(pb_grpc.AllowlistServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    async def AllowlistAdd(self, request: pb.AllowlistEntry, context: Context) -> pb.Allowlist:
        return pb.Allowlist(tritonservers=await self._manager.allow(request.tritonserver))

    async def AllowlistRemove(self, request: pb.AllowlistEntry, context: Context) -> pb.Allowlist:
        return pb.Allowlist(tritonservers=await self._manager.disallow(request.tritonserver))

    async def AllowlistList(self, request: pb.Empty, context: Context) -> pb.Allowlist:
        return pb.Allowlist(tritonservers=self._manager.allowlist)


class EventServicer(pb_grpc.EventServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.Event]:
        async for event in self._manager.events.watch(
            since_seq=request.since_seq,
            replay=request.replay,
            follow=not request.until_caught_up,
        ):
            yield event_to_pb(event)


class ClusterServicer(pb_grpc.ClusterServiceServicer):
    def __init__(self, manager: LeaseManager) -> None:
        self._manager = manager

    async def Cluster(self, request: pb.Empty, context: Context) -> pb.ClusterStatus:
        return cluster_status(self._manager)

    async def Models(self, request: pb.Empty, context: Context) -> pb.ModelsStatus:
        return models_status(self._manager)


def add_servicers(server: grpc.aio.Server, manager: LeaseManager, *, sidecars: bool = True) -> None:
    """The API on `server`; the sidecars' service too unless `sidecars` is False (the daemon
    serves it on a listener of its own, `add_sidecar_servicer`)."""
    pb_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(manager), server)
    pb_grpc.add_LeaseServiceServicer_to_server(LeaseServicer(manager), server)
    if sidecars:
        add_sidecar_servicer(server, manager)
    pb_grpc.add_LeaseNameServiceServicer_to_server(LeaseNameServicer(manager), server)
    pb_grpc.add_PoolServiceServicer_to_server(PoolServicer(manager), server)
    pb_grpc.add_AllowlistServiceServicer_to_server(AllowlistServicer(manager), server)
    pb_grpc.add_EventServiceServicer_to_server(EventServicer(manager), server)


def add_sidecar_servicer(server: grpc.aio.Server, manager: LeaseManager) -> None:
    pb_grpc.add_SidecarServiceServicer_to_server(SidecarServicer(manager), server)
