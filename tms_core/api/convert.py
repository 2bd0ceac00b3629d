"""Between domain objects and their protobuf messages."""

from __future__ import annotations

from tms_core.api import tms_pb2 as pb
from tms_core.domain import Lease, LeaseState, ModelState, ServedModel, Server
from tms_core.ids import ModelName

LEASE_STATES = {
    LeaseState.PENDING: pb.LEASE_PENDING,
    LeaseState.LOADING: pb.LEASE_LOADING,
    LeaseState.READY: pb.LEASE_READY,
    LeaseState.RELEASING: pb.LEASE_RELEASING,
    LeaseState.RELEASED: pb.LEASE_RELEASED,
    LeaseState.EXPIRED: pb.LEASE_EXPIRED,
    LeaseState.FAILED: pb.LEASE_FAILED,
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


def lease_to_pb(lease: Lease, server: Server | None) -> pb.Lease:
    message = pb.Lease(
        id=lease.id,
        name=lease.name,
        state=LEASE_STATES[lease.state],
        reason=lease.reason,
        created_at=lease.created_at,
        expires_at=lease.expires_at,
        duration_s=lease.duration_s,
        updated_at=lease.updated_at,
        server_id=lease.server_id or "",
        models=[
            pb.ModelStatus(
                name=m.name,
                uri=m.uri,
                memory_bytes=m.memory_bytes,
                state=MODEL_STATES[m.state],
                error=m.error,
                load_s=m.load_s,
            )
            for m in lease.models
        ],
    )
    # Endpoints are shown only while they answer for this lease's models.
    if server is not None and lease.state in (LeaseState.LOADING, LeaseState.READY):
        message.endpoints.CopyFrom(
            pb.Endpoints(
                http=server.http_endpoint,
                grpc=server.grpc_endpoint,
                metrics=server.metrics_endpoint,
            )
        )
    return message


def served_from_pb(report: pb.ModelReport) -> ServedModel:
    return ServedModel(
        name=ModelName(report.name),
        uri=report.uri,
        state=MODEL_STATES_BACK.get(report.state, ModelState.PENDING),
        error=report.error,
        load_s=report.load_s,
        memory_bytes=report.memory_bytes,
    )
