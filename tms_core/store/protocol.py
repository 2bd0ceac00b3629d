"""What the lease manager needs of a store: the SQLite store for the daemon, the in-memory one
for the simulator. Every change goes through one transaction; the state is read at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from tms_core.domain import Lease, LeaseNameRecord, Pool, Server
from tms_core.ids import LeaseId


@dataclass
class StoredExtras:
    """What a store holds besides leases and servers, read once at start-up."""

    names: list[LeaseNameRecord] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    allowlist: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    measured: dict[tuple[str, str], int] = field(default_factory=dict)
    """Measured model memory by (model name, URI)."""


class StateTransaction(Protocol):
    async def put_lease(self, lease: Lease) -> None: ...
    async def put_server(self, server: Server) -> None: ...
    async def put_name(self, record: LeaseNameRecord) -> None: ...
    async def delete_name(self, name: str) -> None: ...
    async def put_pool(self, pool: Pool) -> None: ...
    async def delete_pool(self, name: str) -> None: ...
    async def allow(self, tritonserver: str, now: float) -> None: ...
    async def disallow(self, tritonserver: str) -> None: ...
    async def put_model_memory(self, name: str, uri: str, measured: int, now: float) -> None: ...
    async def set_meta(self, key: str, value: str) -> None: ...


class StateStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[StateTransaction]: ...
    async def extend_leases(self, expiries: Sequence[tuple[LeaseId, float, float]]) -> None:
        """Renewals, committed on their own (never inside an open transaction): each (lease,
        expires_at, updated_at) moves only those two fields, and only forward, so a renewal
        written after a whole-row write never undoes it. Unknown leases are skipped."""
        ...

    async def load(self) -> tuple[list[Lease], list[Server]]: ...
    async def load_extras(self) -> StoredExtras: ...
    async def close(self) -> None: ...
