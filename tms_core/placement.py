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
    binary: str = ""
    pool: str = ""
    quota_capacity: int = 0
    quota_used: int = 0

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes

    @property
    def free_quota(self) -> int:
        return self.quota_capacity - self.quota_used


@dataclass(frozen=True)
class PoolSpec:
    """The pool a lease asks to join, and how much of a pool server's quota it takes."""

    name: str
    quota: int
    quota_per_server: int
    max_servers: int
    server_memory: int


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
    binary: str = "",
    pool: PoolSpec | None = None,
) -> Decision:
    """Best fit: the live server that the lease fills most tightly, else a new server.

    A bespoke lease considers only unpooled servers running its Triton `binary`; a pool
    lease only its pool's servers, which must also have its quota free. Servers with a
    different model of the same name are skipped. A lease bigger than a whole server is
    rejected outright; one that fits an empty server but no running one waits when the
    servers it may use (`max_servers`, or the pool's maximum) are all running.
    """
    need = sum(m.memory_bytes for m in models)
    capacity = pool.server_memory if pool else server_capacity
    if need > capacity:
        return Reject(
            f"needs {format_size(need)} of memory; a server offers {format_size(capacity)}"
        )
    if pool is not None and pool.quota > pool.quota_per_server:
        return Reject(
            f"needs {pool.quota} quota; a server of pool {pool.name} has {pool.quota_per_server}"
        )
    candidates = [
        s for s in servers if (s.pool == pool.name if pool else s.pool == "" and s.binary == binary)
    ]
    best: ServerView | None = None
    largest_free, largest_quota = 0, 0
    for server in candidates:
        if not server.accepting:
            continue
        if any(server.models.get(m.name, m.uri) != m.uri for m in models):
            continue
        largest_free = max(largest_free, server.free_bytes)
        largest_quota = max(largest_quota, server.free_quota)
        if server.free_bytes < need or (pool is not None and server.free_quota < pool.quota):
            continue
        if best is None or _tightness(server, pool) < _tightness(best, pool):
            best = server
    if best is not None:
        return JoinServer(
            best.id, f"{format_size(best.free_bytes)} free on {best.id}, needs {format_size(need)}"
        )
    if pool is not None:
        if len(candidates) < pool.max_servers:
            return StartServer(f"no server of pool {pool.name} has {pool.quota} quota free")
        return Wait(
            f"pool {pool.name} is full: needs {pool.quota} quota and {format_size(need)}; "
            f"largest free is {largest_quota} quota and all {pool.max_servers} servers are running"
        )
    unpooled = sum(1 for s in servers if s.pool == "")
    if unpooled < max_servers:
        return StartServer(f"no running server has {format_size(need)} free")
    return Wait(
        f"needs {format_size(need)} of memory; largest free is {format_size(largest_free)} "
        f"and all {max_servers} servers are running"
    )


def _tightness(server: ServerView, pool: PoolSpec | None) -> tuple[int, int]:
    # Pool leases pack by quota first (the unit the administrator sized servers in).
    if pool is not None:
        return (server.free_quota, server.free_bytes)
    return (server.free_bytes, 0)
