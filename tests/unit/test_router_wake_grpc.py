"""The activator's asker (`--wake-grpc`): a connection held at a parked lease's address calls
`LeaseService.Wake` with the lease its route names, with the token, once per lease at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.unit.test_router import HOST, addr, free_port, port_of, wait_until
from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.router.proxy import Router
from tms_core.router.routes import Route, parse_routes
from tms_core.router.wake_grpc import grpc_sender, read_token

REQUEST = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


class Leases(pb_grpc.LeaseServiceServicer):
    def __init__(self) -> None:
        self.woken: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def Wake(self, request: pb.LeaseRef, context: grpc.ServicerContext) -> pb.Lease:
        token = dict(context.invocation_metadata()).get("authorization", "")
        with self.lock:
            self.woken.append((request.id, token))
        if token != "Bearer activator-secret":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        return pb.Lease(id=request.id)


def test_a_route_names_its_lease_in_the_routes_file() -> None:
    route = '{"listen": "0.0.0.0:20000", "backends": [], "wake": true, "lease": "l-7"}'
    text = '{"version": 1, "routes": [' + route + "]}"
    assert parse_routes(text).routes[0].lease == "l-7"


@dataclass
class Daemon:
    """A LeaseService answering Wake in this process, and a router asking it."""

    leases: Leases
    target: str
    router: Router


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    leases = Leases()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_LeaseServiceServicer_to_server(leases, server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    router = Router()
    try:
        yield Daemon(leases, f"{HOST}:{port}", router)
    finally:
        await router.close(grace=0.1)
        server.stop(None)


async def hold_a_connection(router: Router) -> asyncio.StreamWriter:
    """A request to a parked lease l-9's address, held there."""
    listen = addr(free_port())
    await router.apply(
        [Route(listen, (), "lease l-9 http", wake=True, protocol="http", lease="l-9")]
    )
    _, writer = await asyncio.open_connection(HOST, port_of(listen))
    writer.write(REQUEST)
    await wait_until(lambda: router.held_connections(listen) == 1, "the connection held")
    return writer


async def test_a_held_connection_calls_wake_with_its_routes_lease_and_the_token(
    daemon: Daemon,
) -> None:
    router, leases = daemon.router, daemon.leases
    router.set_wake(grpc_sender(daemon.target, router.lease_at, token="activator-secret"))
    writer = await hold_a_connection(router)
    await wait_until(lambda: bool(leases.woken), "the Wake call")
    assert leases.woken[0] == ("l-9", "Bearer activator-secret")
    writer.close()


async def test_a_token_replaced_in_its_file_is_used_by_the_next_ask(
    tmp_path: Path, daemon: Daemon
) -> None:
    """The daemon replaces a revoked activator token in the Secret; the kubelet rewrites the
    mounted file; the activator's next Wake carries the new one, with no restart."""
    token_file = tmp_path / "token"
    token_file.write_text("revoked\n")
    router, leases = daemon.router, daemon.leases
    router.set_wake(
        grpc_sender(daemon.target, router.lease_at, token=lambda: read_token(token_file))
    )
    writer = await hold_a_connection(router)
    await wait_until(lambda: ("l-9", "Bearer revoked") in leases.woken, "the first ask")
    token_file.write_text("activator-secret\n")
    await wait_until(
        lambda: ("l-9", "Bearer activator-secret") in leases.woken, "an ask with the new one"
    )
    writer.close()


def test_the_token_comes_from_the_file_else_the_environment(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TMS_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert read_token(tmp_path / "token") == "from-file"
