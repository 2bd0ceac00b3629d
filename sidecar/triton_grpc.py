"""Triton's health, repository and statistics calls over Triton's gRPC API.

Why gRPC: with the tritonserver the project runs, a load requested over Triton's HTTP
repository API holds up HTTP inference on every other model of the server for the whole load
(about 1.5 s for a Python-backend model); the same load over gRPC does not. Colocated leases
share servers, so every load would otherwise stall the neighbours.

Why not tritonclient: the sidecar starts on the critical path of every cold lease and
`tritonclient.grpc` imports numpy (about 0.1 s more). The messages are the sidecar's own copy
of the few it needs (`triton_repository.proto`, Triton's field numbers), and the method
paths are Triton's. The calls block; the agent runs them in worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from sidecar import triton_repository_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
# Triton comes up about 0.1 s after the sidecar; gRPC's default reconnect backoff (1 s, then
# growing) would make the first health check that succeeds wait that long.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 200),
    # Loads, unloads and the index are small messages; no limit is needed beyond the default.
]
READY_TIMEOUT_S = 1.0
CALL_TIMEOUT_S = 30.0

Reply = TypeVar("Reply", bound=Message)


class TritonError(Exception):
    pass


class TritonGone(TritonError):
    """Triton's connection broke (the process died or is restarting): nothing is known of
    the model, which must not be reported failed for it."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    state: str
    reason: str


class TritonGrpc:
    def __init__(self, address: str, *, load_timeout: float = 600.0) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._load_timeout = load_timeout
        self._calls: dict[str, Callable[..., Any]] = {}

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Message, reply: type[Reply], timeout: float) -> Reply:
        call = self._calls.get(method)
        if call is None:
            call = self._channel.unary_unary(
                SERVICE + method,
                request_serializer=_serialize,
                response_deserializer=reply.FromString,
            )
            self._calls[method] = call
        try:
            result: Reply = call(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            if code is grpc.StatusCode.UNAVAILABLE:
                raise TritonGone(_error_text(exc)) from None
            raise TritonError(_error_text(exc)) from None
        return result

    def ready(self) -> bool:
        try:
            reply = self._call(
                "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse, READY_TIMEOUT_S
            )
        except TritonError:
            return False
        return reply.ready

    def load(self, name: str) -> None:
        self._call(
            "RepositoryModelLoad",
            pb.RepositoryModelLoadRequest(model_name=name),
            pb.RepositoryModelLoadResponse,
            self._load_timeout,
        )

    def unload(self, name: str) -> None:
        self._call(
            "RepositoryModelUnload",
            pb.RepositoryModelUnloadRequest(model_name=name),
            pb.RepositoryModelUnloadResponse,
            self._load_timeout,
        )

    def stats(self) -> dict[str, tuple[int, int]]:
        """Model name -> (successful inferences, last inference in ms since the epoch)."""
        reply = self._call(
            "ModelStatistics",
            pb.ModelStatisticsRequest(),
            pb.ModelStatisticsResponse,
            CALL_TIMEOUT_S,
        )
        result: dict[str, tuple[int, int]] = {}
        for entry in reply.model_stats:
            count = entry.inference_stats.success.count
            previous = result.get(entry.name, (0, 0))
            # Several versions of one model add up; the latest inference of any counts.
            result[entry.name] = (previous[0] + count, max(previous[1], entry.last_inference))
        return result

    def index(self) -> list[IndexEntry]:
        reply = self._call(
            "RepositoryIndex",
            pb.RepositoryIndexRequest(),
            pb.RepositoryIndexResponse,
            CALL_TIMEOUT_S,
        )
        return [IndexEntry(m.name, m.state, m.reason) for m in reply.models]


def _serialize(message: Message) -> bytes:
    # Message.SerializeToString is abstract on the base class (upb): call the instance's.
    return message.SerializeToString()


def _error_text(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    code = getattr(exc, "code", None)
    text = str(details() if callable(details) else "").strip()
    if text:
        return text
    return f"gRPC {code().name if callable(code) else 'error'}"
