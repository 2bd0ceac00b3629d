"""A store that keeps the state in memory, for the simulator (`tms_core.sim`).

It takes the same transactions as the SQLite store, so the lease manager runs unchanged, but
nothing reaches a disk and no commit can fail. It keeps the objects it is given rather than
copies (a fleet of thousands of servers would spend its time copying): what `load` returns
is a deep copy, as a restarted manager would read it back.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from tms_core.domain import Lease, LeaseNameRecord, Pool, Server, Tenant
from tms_core.ids import LeaseId, ServerId
from tms_core.store.protocol import StoredExtras


class MemoryTransaction:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def put_lease(self, lease: Lease) -> None:
        self._store.leases[lease.id] = lease

    async def put_server(self, server: Server) -> None:
        self._store.servers[server.id] = server

    async def put_name(self, record: LeaseNameRecord) -> None:
        self._store.extras.names = [
            r for r in self._store.extras.names if r.name != record.name
        ] + [record]

    async def delete_name(self, name: str) -> None:
        self._store.extras.names = [r for r in self._store.extras.names if r.name != name]

    async def put_pool(self, pool: Pool) -> None:
        pools = [p for p in self._store.extras.pools if p.name != pool.name]
        self._store.extras.pools = [*pools, pool]

    async def delete_pool(self, name: str) -> None:
        self._store.extras.pools = [p for p in self._store.extras.pools if p.name != name]

    async def allow(self, tritonserver: str, now: float) -> None:
        if tritonserver not in self._store.extras.allowlist:
            self._store.extras.allowlist.append(tritonserver)

    async def disallow(self, tritonserver: str) -> None:
        if tritonserver in self._store.extras.allowlist:
            self._store.extras.allowlist.remove(tritonserver)

    async def put_model_memory(self, name: str, uri: str, measured: int, now: float) -> None:
        self._store.extras.measured[(name, uri)] = measured

    async def set_meta(self, key: str, value: str) -> None:
        self._store.extras.meta[key] = value

    async def put_tenant(self, tenant: Tenant) -> None:
        tenants = [t for t in self._store.extras.tenants if t.name != tenant.name]
        self._store.extras.tenants = [*tenants, tenant]


class MemoryStore:
    def __init__(self) -> None:
        self.leases: dict[LeaseId, Lease] = {}
        self.servers: dict[ServerId, Server] = {}
        self.extras = StoredExtras()
        self.commits = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        yield MemoryTransaction(self)
        self.commits += 1

    async def extend_leases(self, expiries: Sequence[tuple[LeaseId, float, float]]) -> None:
        for lease_id, expires_at, updated_at in expiries:
            stored = self.leases.get(lease_id)
            if stored is not None:
                stored.expires_at = max(stored.expires_at, expires_at)
                stored.updated_at = max(stored.updated_at, updated_at)

    async def load(self) -> tuple[list[Lease], list[Server]]:
        leases = sorted(self.leases.values(), key=lambda lease: lease.created_at)
        servers = sorted(self.servers.values(), key=lambda server: server.created_at)
        return copy.deepcopy(leases), copy.deepcopy(servers)

    async def load_extras(self) -> StoredExtras:
        return copy.deepcopy(self.extras)

    async def close(self) -> None:
        pass
