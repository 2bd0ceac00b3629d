"""The sidecar's copy of Triton's gRPC messages matches Triton's own proto, field by field.

The sidecar keeps its own messages (tritonclient's import would slow its start), so this is
what holds them to Triton's published field numbers: tritonclient ships the generated
`service_pb2` of Triton's grpc_service.proto.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from tritonclient.grpc import service_pb2 as triton

from sidecar import triton_repository_pb2 as ours
from sidecar.triton_grpc import SERVICE, IndexEntry, TritonError, TritonGrpc

MESSAGES = [
    "ServerReadyRequest",
    "ServerReadyResponse",
    "RepositoryIndexRequest",
    "RepositoryIndexResponse",
    "RepositoryModelLoadRequest",
    "RepositoryModelLoadResponse",
    "RepositoryModelUnloadRequest",
    "RepositoryModelUnloadResponse",
    "ModelStatisticsRequest",
    "ModelStatisticsResponse",
    "ModelStatistics",
    "InferStatistics",
    "StatisticDuration",
]


def _check_fields(mine: Descriptor, theirs: Descriptor) -> None:
    for field in mine.fields:
        other = theirs.fields_by_name.get(field.name)
        assert other is not None, f"{theirs.full_name} has no field {field.name}"
        assert (field.number, field.type) == (other.number, other.type), (
            f"{mine.full_name}.{field.name}"
        )
        assert field.is_repeated == other.is_repeated, f"{mine.full_name}.{field.name}"
        if field.message_type is not None:
            _check_fields(field.message_type, other.message_type)


@pytest.mark.parametrize("name", MESSAGES)
def test_fields_match_tritons(name: str) -> None:
    _check_fields(getattr(ours, name).DESCRIPTOR, getattr(triton, name).DESCRIPTOR)


def test_methods_are_tritons() -> None:
    service = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert SERVICE == f"/{service.full_name}/"
    for method in ("ServerReady", "RepositoryIndex", "RepositoryModelLoad"):
        assert method in service.methods_by_name
    for method in ("RepositoryModelUnload", "ModelStatistics"):
        assert method in service.methods_by_name


def test_a_reply_from_triton_reads_back() -> None:
    """Bytes as Triton sends them decode into the sidecar's messages."""
    sent = triton.ModelStatisticsResponse(
        model_stats=[
            triton.ModelStatistics(
                name="add_sub",
                version="1",
                last_inference=1_700_000_000_123,
                inference_count=7,
                inference_stats=triton.InferStatistics(
                    success=triton.StatisticDuration(count=5, ns=10)
                ),
            )
        ]
    )
    got = ours.ModelStatisticsResponse.FromString(sent.SerializeToString())
    (entry,) = got.model_stats
    assert (entry.name, entry.last_inference, entry.inference_stats.success.count) == (
        "add_sub",
        1_700_000_000_123,
        5,
    )


class _Repository:
    """Triton's repository methods, with tritonclient's messages: what goes over the wire is
    what Triton's own proto reads and writes."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def handlers(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, request: Any, reply: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request.FromString,
                response_serializer=reply.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {
                "ServerReady": unary(
                    lambda r, c: triton.ServerReadyResponse(ready=True),
                    triton.ServerReadyRequest,
                    triton.ServerReadyResponse,
                ),
                "RepositoryModelLoad": unary(
                    self._load,
                    triton.RepositoryModelLoadRequest,
                    triton.RepositoryModelLoadResponse,
                ),
                "RepositoryIndex": unary(
                    lambda r, c: triton.RepositoryIndexResponse(
                        models=[
                            triton.RepositoryIndexResponse.ModelIndex(name=n, state="READY")
                            for n in self.loaded
                        ]
                    ),
                    triton.RepositoryIndexRequest,
                    triton.RepositoryIndexResponse,
                ),
            },
        )

    def _load(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.model_name == "broken":
            context.abort(grpc.StatusCode.INTERNAL, "failed to load 'broken': no config")
        self.loaded.append(request.model_name)
        return triton.RepositoryModelLoadResponse()


def test_requests_and_replies_cross_the_wire() -> None:
    repository = _Repository()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((repository.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = TritonGrpc(f"127.0.0.1:{port}")
    try:
        assert client.ready() is True
        client.load("add_sub")
        assert repository.loaded == ["add_sub"]
        assert client.index() == [IndexEntry("add_sub", "READY", "")]
        with pytest.raises(TritonError, match="no config"):
            client.load("broken")
    finally:
        client.close()
        server.stop(None)


def test_an_unreachable_server_is_not_ready_and_calls_fail_with_the_reason() -> None:
    client = TritonGrpc("127.0.0.1:1")
    try:
        assert client.ready() is False
        with pytest.raises(TritonError, match=r"\S"):
            client.index()
    finally:
        client.close()
