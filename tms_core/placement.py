"""Placement v0: where a lease's models go. A pure function of the request and the fleet.

The decision is one of: join a running server, start a new one, or wait. A lease's models
always go to one server together (as in TMS), so placement is all-or-nothing by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tms_core.ids import ServerId
from tms_core.units import format_size


@dataclass(frozen=True)
class ModelNeed:
    name: str
    uri: str
    memory_bytes: int


@dataclass(frozen=True)
class ServerView:
    """What placement needs to know of one live server."""

    id: ServerId
    capacity_bytes: int
    used_bytes: int
    # name -> uri of the models its leases hold; two different models of one name cannot
    # share a Triton, whose model names are unique.
    models: dict[str, str]
    accepting: bool = True

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes


@dataclass(frozen=True)
class JoinServer:
    server_id: ServerId
    why: str


@dataclass(frozen=True)
class StartServer:
    why: str


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Reject:
    reason: str


Decision = JoinServer | StartServer | Wait | Reject


def place(
    models: Sequence[ModelNeed],
    servers: Sequence[ServerView],
    *,
    server_capacity: int,
    max_servers: int,
) -> Decision:
    """Best fit: the live server that the lease fills most tightly, else a new server.

    Servers with a different model of the same name are skipped. A lease bigger than a whole
    server is rejected outright; one that fits an empty server but no running one waits when
    `max_servers` are already running.
    """
    need = sum(m.memory_bytes for m in models)
    if need > server_capacity:
        return Reject(
            f"needs {format_size(need)} of memory; a server offers {format_size(server_capacity)}"
        )
    best: ServerView | None = None
    largest_free = 0
    for server in servers:
        if not server.accepting:
            continue
        if any(server.models.get(m.name, m.uri) != m.uri for m in models):
            continue
        largest_free = max(largest_free, server.free_bytes)
        if server.free_bytes >= need and (best is None or server.free_bytes < best.free_bytes):
            best = server
    if best is not None:
        return JoinServer(
            best.id, f"{format_size(best.free_bytes)} free on {best.id}, needs {format_size(need)}"
        )
    if len(servers) < max_servers:
        return StartServer(f"no running server has {format_size(need)} free")
    return Wait(
        f"needs {format_size(need)} of memory; largest free is {format_size(largest_free)} "
        f"and all {max_servers} servers are running"
    )
