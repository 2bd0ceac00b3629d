"""The client's bearer token reaches the server on unary and streaming calls."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.client import TmsClient


class _Recorder(pb_grpc.LeaseServiceServicer, pb_grpc.EventServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def _note(self, context: Any) -> None:
        self.seen.append(dict(context.invocation_metadata()).get("authorization"))

    def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        self._note(context)
        return pb.ListResponse()

    def Watch(self, request: pb.WatchRequest, context: Any) -> Iterator[pb.Event]:
        self._note(context)
        yield pb.Event(seq=1, kind="lease")


def test_token_is_sent_as_bearer_metadata_and_absent_without_one() -> None:
    recorder = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_LeaseServiceServicer_to_server(recorder, server)
    pb_grpc.add_EventServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with TmsClient(f"127.0.0.1:{port}", token="s3cret") as client:
            client.list_leases()
            assert [e.seq for e in client.watch(follow=False)] == [1]
        with TmsClient(f"127.0.0.1:{port}") as client:
            client.list_leases()
    finally:
        server.stop(0)
    assert recorder.seen == ["Bearer s3cret", "Bearer s3cret", None]


def test_the_notebook_gives_its_tls_files_to_the_client(tmp_path: Path) -> None:
    from IPython.core.error import UsageError

    from tms_console.jupyter.magics import TmsMagics

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    magics = TmsMagics(shell=None)
    try:
        magics.ca_file = str(ca)
        client = magics.client("https://localhost:1")
        assert (client.tls.ca, client.tls.cert) == (ca, None)
        # A client certificate without its key is a one-line error, not a traceback.
        magics.cert_file = str(ca)
        with pytest.raises(UsageError, match="a client cert needs its key too"):
            magics.client("https://localhost:1")
    finally:
        magics.close()
