"""A daemon's whole API over a loopback channel with identity checked, on the fake backend:
what the security tests (and the fuzz test) call. No Triton, no processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from tests.unit.conftest import Harness
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.identity_servicer import IdentityServicer
from tms_core.api.interceptor import ErrorInterceptor
from tms_core.api.servicer import add_servicers
from tms_core.domain import AuditRecord
from tms_core.identity.audit import AuditLog
from tms_core.identity.authority import Authority
from tms_core.identity.sidecar_keys import SidecarKeys
from tms_core.identity.tokens import TokenRegistry


@dataclass
class SecureApi:
    h: Harness
    port: int
    registry: TokenRegistry
    sidecars: SidecarKeys
    audit: AuditLog
    admin: str
    channels: list[grpc.aio.Channel]

    def channel(self, token: str | None = None) -> grpc.aio.Channel:
        # grpc.aio files each interceptor under one kind only: one object per kind.
        interceptors: list[Any] = [_Bearer(token), _BearerStream(token)] if token else []
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", interceptors=interceptors)
        self.channels.append(channel)
        return channel

    def leases(self, token: str | None = None) -> pb_grpc.LeaseServiceStub:
        return pb_grpc.LeaseServiceStub(self.channel(token))

    def sidecar(self, token: str | None = None) -> pb_grpc.SidecarServiceStub:
        return pb_grpc.SidecarServiceStub(self.channel(token))

    def identity(self, token: str | None = None) -> pb_grpc.IdentityServiceStub:
        return pb_grpc.IdentityServiceStub(self.channel(token))

    def names(self, token: str | None = None) -> pb_grpc.LeaseNameServiceStub:
        return pb_grpc.LeaseNameServiceStub(self.channel(token))


def _with_token(details: Any, token: str) -> Any:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(("authorization", f"Bearer {token}")),
        details.credentials,
        details.wait_for_ready,
    )


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _BearerStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


async def secure_api(h: Harness) -> AsyncIterator[SecureApi]:
    async def persist(token: Any) -> None:
        async with h.store.transaction() as tx:
            await tx.put_token(token)

    async def write(records: Sequence[AuditRecord]) -> None:
        async with h.store.transaction() as tx:
            await tx.add_audit(records, 100_000)

    registry = TokenRegistry([], clock=h.clock, persist=persist)
    _, admin = await registry.create("root", "admin")
    sidecars = SidecarKeys(b"k" * 32)
    audit = AuditLog(write)
    interceptor = ErrorInterceptor(
        Authority(registry, sidecars), ownership=h.manager, audit=audit, clock=h.clock
    )
    server = grpc.aio.server(interceptors=[interceptor])
    add_servicers(server, h.manager)
    pb_grpc.add_IdentityServiceServicer_to_server(
        IdentityServicer(h.manager, registry, audit, h.store), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    api = SecureApi(h, port, registry, sidecars, audit, admin, [])
    try:
        yield api
    finally:
        for channel in api.channels:
            await channel.close()
        await server.stop(None)
