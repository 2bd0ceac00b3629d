"""The sidecar's two calls to the daemon (`tms.v1.SidecarService` in tms_core/api/tms.proto).

Made here rather than taken from the generated `tms_pb2_grpc`, which holds the stubs and
servicers of every service (1,500 lines, ~10 ms of each sidecar's start where its bytecode is
not cached, and a cold lease waits for that start). tests/unit/test_sidecar_daemon_api.py
checks these against the generated stub.
"""

from __future__ import annotations

from typing import Any

from tms_core.api import tms_pb2 as pb

SERVICE = "/tms.v1.SidecarService/"


class SidecarStub:
    """`Connect` (the assignment stream) and `Report`, on a `grpc.aio` channel."""

    def __init__(self, channel: Any) -> None:
        self.Connect = channel.unary_stream(
            SERVICE + "Connect",
            request_serializer=pb.SidecarHello.SerializeToString,
            response_deserializer=pb.Assignment.FromString,
            _registered_method=True,
        )
        self.Report = channel.unary_unary(
            SERVICE + "Report",
            request_serializer=pb.SidecarReport.SerializeToString,
            response_deserializer=pb.ReportAck.FromString,
            _registered_method=True,
        )
