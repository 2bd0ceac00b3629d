"""Between domain objects and their protobuf messages; the acquire request both ways, used by
the servicer and the client alike."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tms_core.api import tms_pb2 as pb
from tms_core.domain import (
    CachedModel,
    Lease,
    LeaseAutoscale,
    LeaseNameRecord,
    LeaseState,
    ModelState,
    NodeCache,
    Pool,
    ServedModel,
    Server,
    TritonLoad,
)
from tms_core.events import Event
from tms_core.ids import ModelName
from tms_core.lease_request import LeaseOptions, ModelRequest, autoscale_request

LEASE_STATES = {
    LeaseState.PENDING: pb.LEASE_PENDING,
    LeaseState.LOADING: pb.LEASE_LOADING,
    LeaseState.READY: pb.LEASE_READY,
    LeaseState.RELEASING: pb.LEASE_RELEASING,
    LeaseState.RELEASED: pb.LEASE_RELEASED,
    LeaseState.EXPIRED: pb.LEASE_EXPIRED,
    LeaseState.FAILED: pb.LEASE_FAILED,
    LeaseState.PARKED: pb.LEASE_PARKED,
}
MODEL_STATES = {
    ModelState.PENDING: pb.MODEL_PENDING,
    ModelState.FETCHING: pb.MODEL_FETCHING,
    ModelState.LOADING: pb.MODEL_LOADING,
    ModelState.READY: pb.MODEL_READY,
    ModelState.UNLOADING: pb.MODEL_UNLOADING,
    ModelState.UNLOADED: pb.MODEL_UNLOADED,
    ModelState.FAILED: pb.MODEL_FAILED,
}
MODEL_STATES_BACK = {v: k for k, v in MODEL_STATES.items()}


ROUTER_HOST = "127.0.0.1"


def autoscale_from_pb(message: pb.Autoscale) -> LeaseAutoscale:
    """The lease's autoscaling, with the documented defaults for fields left at 0 or ""."""
    return autoscale_request(
        min_replicas=message.min_replicas if message.HasField("min_replicas") else None,
        max_replicas=message.max_replicas,
        metric=message.metric,
        target=message.target,
        **{key: getattr(message, key) for key in AUTOSCALE_TIMINGS},
    )


AUTOSCALE_TIMINGS = (
    "up_window_s",
    "down_window_s",
    "up_cooldown_s",
    "down_cooldown_s",
    "drain_s",
    "park_after_s",
)


def autoscale_to_pb(autoscale: LeaseAutoscale) -> pb.Autoscale:
    return pb.Autoscale(
        min_replicas=autoscale.min_replicas,
        max_replicas=autoscale.max_replicas,
        metric=autoscale.metric,
        target=autoscale.target,
        **{key: getattr(autoscale, key) for key in AUTOSCALE_TIMINGS},
    )


def acquire_request_to_pb(
    models: Sequence[ModelRequest], options: LeaseOptions | None = None
) -> pb.AcquireRequest:
    """The `Acquire` (and `Plan`) request for these models and options."""
    options = options or LeaseOptions()
    request = pb.AcquireRequest(
        models=[
            pb.ModelSpec(name=m.name, uri=m.uri, memory_bytes=m.memory_bytes, sha256=m.sha256)
            for m in models
        ],
        name=options.name,
        duration_s=options.duration_s,
        activity_window_s=options.activity_window_s,
        pool=options.pool,
        quota=options.quota,
        tritonserver=options.tritonserver,
        gpu_product=options.gpu_product,
        node_selector=dict(options.node_selector),
        exclusive=options.exclusive,
        colocate_with=list(options.colocate_with),
        avoid=list(options.avoid),
        labels=dict(options.labels),
        priority=options.priority,
    )
    # Unset, not 0: the daemon picks (1 GPU on a machine with GPUs, else 0).
    if options.gpus is not None:
        request.gpus = options.gpus
    if options.autoscale is not None:
        request.autoscale.CopyFrom(autoscale_to_pb(options.autoscale))
    return request


def acquire_request_from_pb(
    request: pb.AcquireRequest,
) -> tuple[list[ModelRequest], LeaseOptions]:
    """The models and options of an `Acquire` (or `Plan`) request, as sent: the lease manager
    checks them, naming the field it refuses."""
    models = [ModelRequest(m.name, m.uri, m.memory_bytes, m.sha256) for m in request.models]
    options = LeaseOptions(
        name=request.name,
        duration_s=request.duration_s,
        activity_window_s=request.activity_window_s,
        pool=request.pool,
        quota=request.quota,
        tritonserver=request.tritonserver,
        gpus=request.gpus if request.HasField("gpus") else None,
        gpu_product=request.gpu_product,
        node_selector=dict(request.node_selector),
        exclusive=request.exclusive,
        colocate_with=tuple(request.colocate_with),
        avoid=tuple(request.avoid),
        labels=dict(request.labels),
        priority=request.priority,
        autoscale=(autoscale_from_pb(request.autoscale) if request.HasField("autoscale") else None),
    )
    return models, options


def endpoints_pb(
    http_port: int, grpc_port: int, servers: list[Server], host: str = ROUTER_HOST
) -> pb.Endpoints:
    """Stable addresses (the router's, or a Kubernetes Service's `host`), plus each serving
    server's own.

    Without a router (no ports allocated) the first server's own addresses stand in.
    """
    direct = servers[0] if servers else None
    return pb.Endpoints(
        http=f"{host}:{http_port}" if http_port else (direct.http_endpoint if direct else ""),
        grpc=f"{host}:{grpc_port}" if grpc_port else (direct.grpc_endpoint if direct else ""),
        metrics=servers[0].metrics_endpoint if servers else "",
        servers=[
            pb.ServerEndpoints(
                server_id=s.id,
                http=s.http_endpoint,
                grpc=s.grpc_endpoint,
                metrics=s.metrics_endpoint,
            )
            for s in servers
        ],
    )


def replica_to_pb(replica: Lease, server: Server | None, lease_id: str) -> pb.Replica:
    return pb.Replica(
        id=lease_id if replica.replica_of is None else replica.id,
        server_id=replica.server_id or "",
        state=LEASE_STATES[replica.state],
        reason=replica.reason,
        node=server.node if server else "",
        draining=replica.draining_until is not None,
        ready_at=replica.ready_at or 0.0,
        http=server.http_endpoint if server else "",
        grpc=server.grpc_endpoint if server else "",
    )


def lease_to_pb(
    lease: Lease,
    server: Server | None,
    names: list[str] | None = None,
    host: str = ROUTER_HOST,
    replicas: Sequence[tuple[Lease, Server | None]] = (),
) -> pb.Lease:
    """The lease as the API shows it; `replicas` are its own and its replica records, each
    with its server (`LeaseManager.replicas_of`)."""
    message = pb.Lease(
        id=lease.id,
        name=names[0] if names else "",
        state=LEASE_STATES[lease.state],
        reason=lease.reason,
        created_at=lease.created_at,
        expires_at=lease.expires_at,
        duration_s=lease.duration_s,
        updated_at=lease.updated_at,
        server_id=lease.server_id or "",
        activity_window_s=lease.activity_window_s,
        last_activity_at=lease.last_activity_at,
        pool=lease.pool,
        quota=lease.quota,
        tritonserver=lease.tritonserver,
        gpus=lease.constraints.gpus,
        gpu_product=lease.constraints.gpu_product,
        node_selector=lease.constraints.node_selector,
        exclusive=lease.constraints.exclusive,
        colocate_with=lease.constraints.colocate_with,
        avoid=lease.constraints.avoid,
        labels=lease.labels,
        priority=lease.priority,
        node=server.node if server else "",
        server_gpus=list(server.gpus) if server else [],
        models=[
            pb.ModelStatus(
                name=m.name,
                uri=m.uri,
                memory_bytes=m.memory_bytes,
                state=MODEL_STATES[m.state],
                error=m.error,
                load_s=m.load_s,
                measured_bytes=m.measured_bytes,
                framework=m.framework,
                bytes_done=m.bytes_done,
                bytes_total=m.bytes_total,
            )
            for m in lease.models
        ],
    )
    if lease.autoscale is not None:
        message.autoscale.CopyFrom(autoscale_to_pb(lease.autoscale))
    message.replicas_wanted = lease.replicas_wanted
    message.parked_at = lease.parked_at or 0.0
    message.woke_at = lease.woke_at or 0.0
    message.wake_s = lease.wake_s
    if len(replicas) > 1:
        message.replicas.extend(replica_to_pb(r, s, lease.id) for r, s in replicas)
    # Endpoints are shown only while they answer for this lease's models; each serving
    # replica's server is listed with its own addresses.
    serving = [
        s
        for r, s in replicas[1:]
        if s is not None and r.state is LeaseState.READY and r.draining_until is None
    ]
    if server is not None and lease.state in (LeaseState.LOADING, LeaseState.READY):
        serving.insert(0, server)
    # A parked lease keeps its addresses: a connection to them wakes it.
    parked = lease.state is LeaseState.PARKED and lease.http_port
    if (serving or parked) and not lease.state.ended and lease.state is not LeaseState.RELEASING:
        message.endpoints.CopyFrom(endpoints_pb(lease.http_port, lease.grpc_port, serving, host))
    return message


def name_to_pb(
    record: LeaseNameRecord,
    lease: Lease | None,
    server: Server | None,
    host: str = ROUTER_HOST,
) -> pb.LeaseName:
    serving = server is not None and lease is not None and lease.state.holds_models
    return pb.LeaseName(
        name=record.name,
        lease_id=record.lease_id or "",
        next_lease_id=record.next_lease_id or "",
        updated_at=record.updated_at,
        endpoints=endpoints_pb(
            record.http_port, record.grpc_port, [server] if serving and server else [], host
        ),
    )


def pool_to_pb(pool: Pool, servers: list[tuple[Server, list[Lease]]] | None = None) -> pb.Pool:
    return pb.Pool(
        name=pool.name,
        tritonserver=pool.tritonserver,
        server_memory_bytes=pool.server_memory,
        min_servers=pool.min_servers,
        max_servers=pool.max_servers,
        quota_per_server=pool.quota_per_server,
        created_at=pool.created_at,
        servers=[
            pb.PoolServer(
                server_id=server.id,
                state=server.state.value,
                quota_used=sum(lease.quota for lease in leases),
                quota_free=pool.quota_per_server - sum(lease.quota for lease in leases),
                lease_ids=[lease.id for lease in leases],
                http=server.http_endpoint,
            )
            for server, leases in servers or []
        ],
    )


def pool_from_pb(message: pb.Pool) -> Pool:
    return Pool(
        name=message.name,
        tritonserver=message.tritonserver,
        server_memory=message.server_memory_bytes,
        min_servers=message.min_servers,
        max_servers=message.max_servers,
        quota_per_server=message.quota_per_server,
        created_at=0.0,
    )


def event_to_pb(event: Event) -> pb.Event:
    return pb.Event(
        seq=event.seq,
        at=event.at,
        kind=event.kind,
        id=event.id,
        state=event.state,
        reason=event.reason,
        lease_id=event.lease_id,
        server_id=event.server_id,
        bytes_done=event.bytes_done,
        bytes_total=event.bytes_total,
    )


def served_from_pb(report: pb.ModelReport) -> ServedModel:
    return ServedModel(
        name=ModelName(report.name),
        uri=report.uri,
        state=MODEL_STATES_BACK.get(report.state, ModelState.PENDING),
        error=report.error,
        load_s=report.load_s,
        memory_bytes=report.memory_bytes,
        inference_count=report.inference_count,
        last_inference_at=report.last_inference_ms / 1000.0,
        gpu_memory_bytes=report.gpu_memory_bytes,
        bytes_done=report.bytes_done,
        bytes_total=report.bytes_total,
        load=_load_from_pb(report),
    )


def _load_from_pb(report: pb.ModelReport) -> TritonLoad | None:
    """What the sidecar read of Triton's metrics; a reading with a negative or non-finite
    figure is dropped (bounds.py bounds sizes, not numbers), so the autoscaler's arithmetic
    never sees one."""
    if not report.has_metrics:
        return None
    figures = (
        report.queue_us,
        report.requests,
        report.inferences,
        report.pending,
        report.metrics_read_at,
    )
    if not all(math.isfinite(f) and f >= 0 for f in figures):
        return None
    return TritonLoad(
        report.queue_us,
        report.requests,
        report.inferences,
        report.pending,
        report.metrics_read_at,
    )


def cache_from_pb(message: pb.ModelCacheStatus) -> NodeCache:
    return NodeCache(
        size_bytes=message.size_bytes,
        cap_bytes=message.cap_bytes,
        models=tuple(
            CachedModel(m.name, m.uri, m.bytes, m.last_used, m.in_use, m.version)
            for m in message.models
        ),
        read_at=message.read_at,
        server_id=message.server_id,
    )


def cache_to_pb(cache: NodeCache) -> pb.ModelCacheStatus:
    return pb.ModelCacheStatus(
        size_bytes=cache.size_bytes,
        cap_bytes=cache.cap_bytes,
        models=[
            pb.CachedModel(
                name=m.name,
                uri=m.uri,
                bytes=m.bytes,
                last_used=m.last_used,
                in_use=m.in_use,
                version=m.version,
            )
            for m in cache.models
        ],
        read_at=cache.read_at,
        server_id=cache.server_id,
    )
