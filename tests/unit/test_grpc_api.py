"""The gRPC API end to end over a real loopback channel, with the fake backend (no Triton)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.unit.conftest import GiB, Harness, served
from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.client import parse_model_arg
from tms_core.api.interceptor import ErrorInterceptor
from tms_core.api.servicer import LeaseServicer, SidecarServicer
from tms_core.domain import ModelState
from tms_core.lease_request import ModelRequest

RPC_TIMEOUT = 5.0


@dataclass
class Api:
    h: Harness
    leases: pb_grpc.LeaseServiceStub
    sidecars: pb_grpc.SidecarServiceStub


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    pb_grpc.add_LeaseServiceServicer_to_server(LeaseServicer(harness.manager), server)
    pb_grpc.add_SidecarServiceServicer_to_server(SidecarServicer(harness.manager), server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Api(
            harness,
            pb_grpc.LeaseServiceStub(channel),
            pb_grpc.SidecarServiceStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(None)


async def read_rest(call: grpc.aio.UnaryStreamCall) -> list[pb.Lease]:
    """The messages left on a stream already read from with `read()`, up to its end."""
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


def spec(name: str, memory: int = GiB) -> pb.ModelSpec:
    return pb.ModelSpec(name=name, uri=f"file:///models/{name}", memory_bytes=memory)


async def test_status_of_an_unknown_lease_is_not_found(api: Api) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.leases.Status(pb.LeaseRef(id="l-doesnotexist"), timeout=RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "l-doesnotexist" in (info.value.details() or "")


async def test_acquire_with_a_bad_name_is_invalid_argument(api: Api) -> None:
    call = api.leases.Acquire(
        pb.AcquireRequest(models=[spec("a")], name="Bad_Name"), timeout=RPC_TIMEOUT
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert details.startswith("name: ")
    assert "'Bad_Name'" in details
    assert api.h.manager.list_leases(include_ended=True) == []


async def test_acquire_too_large_is_resource_exhausted(api: Api) -> None:
    call = api.leases.Acquire(pb.AcquireRequest(models=[spec("a", 64 * GiB)]), timeout=RPC_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "needs 64.0 GiB" in (info.value.details() or "")


async def test_acquire_streams_until_ready_then_release(api: Api) -> None:
    h = api.h
    call = api.leases.Acquire(
        pb.AcquireRequest(models=[spec("a"), spec("b")], name="demo", duration_s=300),
        timeout=RPC_TIMEOUT,
    )
    first = await call.read()
    assert first.state in (pb.LEASE_PENDING, pb.LEASE_LOADING)
    assert first.name == "demo"
    assert [m.name for m in first.models] == ["a", "b"]
    lease_id, server_id = first.id, first.server_id
    assert server_id in h.manager.servers
    server = h.manager.servers[server_id]
    assert first.endpoints.http == f"127.0.0.1:{server.http_port}"

    await h.manager.report(
        server_id,
        triton_ready=True,
        models=served([("a", "file:///models/a"), ("b", "file:///models/b")], ModelState.READY),
    )
    rest = await read_rest(call)
    assert rest, "the stream ended without the READY lease"
    last = rest[-1]
    assert last.state == pb.LEASE_READY
    assert [m.state for m in last.models] == [pb.MODEL_READY, pb.MODEL_READY]
    assert last.expires_at == pytest.approx(h.clock.now() + 300)
    assert last.endpoints.grpc == f"127.0.0.1:{server.grpc_port}"
    assert await call.code() == grpc.StatusCode.OK

    status = await api.leases.Status(pb.LeaseRef(id=lease_id), timeout=RPC_TIMEOUT)
    assert status.state == pb.LEASE_READY
    listed = await api.leases.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
    assert [lease.id for lease in listed.leases] == [lease_id]

    released = await api.leases.Release(pb.LeaseRef(id=lease_id), timeout=RPC_TIMEOUT)
    assert released.state == pb.LEASE_RELEASING
    # Endpoints are shown only while they answer for the lease.
    assert not released.HasField("endpoints")


async def test_renew_beyond_the_maximum_is_invalid_argument(api: Api) -> None:
    call = api.leases.Acquire(pb.AcquireRequest(models=[spec("a")]), timeout=RPC_TIMEOUT)
    first = await call.read()
    call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.leases.Renew(
            pb.RenewRequest(id=first.id, duration_s=86400 * 365), timeout=RPC_TIMEOUT
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("duration: ")


async def test_sidecar_of_an_unknown_server_is_not_found(api: Api) -> None:
    call = api.sidecars.Connect(pb.SidecarHello(server_id="s-unknown"), timeout=RPC_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'s-unknown'" in (info.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.sidecars.Report(pb.SidecarReport(server_id="s-unknown"), timeout=RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_sidecar_reports_make_the_lease_ready(api: Api) -> None:
    call = api.leases.Acquire(pb.AcquireRequest(models=[spec("a")]), timeout=RPC_TIMEOUT)
    first = await call.read()
    connect = api.sidecars.Connect(pb.SidecarHello(server_id=first.server_id), timeout=RPC_TIMEOUT)
    assignment = await connect.read()
    assert [(m.name, m.uri) for m in assignment.models] == [("a", "file:///models/a")]
    connect.cancel()

    await api.sidecars.Report(
        pb.SidecarReport(
            server_id=first.server_id,
            triton_ready=True,
            generation=assignment.generation,
            models=[pb.ModelReport(name="a", uri="file:///models/a", state=pb.MODEL_READY)],
        ),
        timeout=RPC_TIMEOUT,
    )
    rest = await read_rest(call)
    assert rest[-1].state == pb.LEASE_READY


async def test_an_unexpected_error_is_internal_and_the_server_keeps_serving(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: object) -> object:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(api.h.manager, "list_leases", broken)
    with caplog.at_level(logging.ERROR, logger="tms_core.api.interceptor"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await api.leases.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error: RuntimeError: database on fire"
    assert any(record.exc_info for record in caplog.records), "the traceback was not logged"

    monkeypatch.undo()
    listed = await api.leases.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
    assert list(listed.leases) == []
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await api.leases.Status(pb.LeaseRef(id="l-x"), timeout=RPC_TIMEOUT)
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------- parse_model_arg


def test_parse_model_arg() -> None:
    assert parse_model_arg("name=resnet,uri=file:///models/resnet,memory=2GiB") == ModelRequest(
        "resnet", "file:///models/resnet", 2 * GiB
    )
    assert parse_model_arg(" name = a , uri = file:///m/a ") == ModelRequest("a", "file:///m/a", 0)


def test_parse_model_arg_makes_a_path_an_absolute_file_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    arg = parse_model_arg("name=a,uri=models/a")
    assert arg.uri == (tmp_path / "models" / "a").as_uri()
    assert arg.uri.startswith("file:///")
    assert parse_model_arg(f"name=a,uri={tmp_path}/x").uri == (tmp_path / "x").as_uri()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "name=a,uri=file:///m,colour=red",
            "unknown key 'colour'; expected name, uri, memory or sha256",
        ),
        ("name=a", "uri= is missing"),
        ("uri=file:///m", "name= is missing"),
        ("name=a,uri=", "uri= is missing"),
        ("name=a,name=b,uri=file:///m", "'name' given twice"),
        ("name=a,uri=file:///m,memory=lots", "memory: 'lots' is not a size"),
        ("resnet", "expected name=NAME,uri=URI[,memory=SIZE]"),
        ("name=a,,uri=file:///m", "expected name=NAME,uri=URI[,memory=SIZE]"),
    ],
)
def test_parse_model_arg_errors_name_the_problem(text: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_model_arg(text)
    assert words in str(info.value)
