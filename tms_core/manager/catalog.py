"""The catalog: pools, the Triton allowlist and tenants, as the API administers them.

A part of `LeaseManager` (its base class): the same lock and the same one-change-per-call
rule as the lease calls, kept apart so that the facade reads as the lease path.
"""

from __future__ import annotations

import asyncio
import copy

from tms_core.backends.base import Backend
from tms_core.clock import Clock
from tms_core.domain import Lease, Pool, Server, ServerState, Tenant
from tms_core.errors import InvalidArgument, PoolInUse, PoolNotFound, TenantNotFound
from tms_core.ids import LeaseId
from tms_core.manager.ledger import Ledger
from tms_core.manager.lifecycle import ServerLifecycle
from tms_core.manager.outbox import Outbox
from tms_core.manager.placing import Placer
from tms_core.manager.tenants import TenantUsage, check_tenant, check_tenant_name


class Catalog:
    # Set by `LeaseManager.__init__`.
    ledger: Ledger
    outbox: Outbox
    lifecycle: ServerLifecycle
    placer: Placer
    _backend: Backend
    _clock: Clock
    _lock: asyncio.Lock

    def list_pools(self) -> list[Pool]:
        pools = self.ledger.pools.pools
        return [copy.deepcopy(p) for p in sorted(pools.values(), key=lambda p: p.name)]

    def pool_servers(self, name: str) -> list[tuple[Server, list[Lease]]]:
        if name not in self.ledger.pools.pools:
            raise PoolNotFound(name)
        return [
            (server, self.ledger.leases_on(server.id))
            for server in self.ledger.servers.values()
            if server.pool == name and server.state.alive
        ]

    # ------------------------------------------------------------------ pools and allowlist

    async def create_pool(self, pool: Pool) -> Pool:
        self.ledger.pools.check_new(pool)
        pool.tritonserver = self.ledger.pools.allowed(
            pool.tritonserver, "tritonserver", self._backend.default_tritonserver
        )
        pool.created_at = self._clock.now()
        async with self._lock, self.ledger.change() as change:
            self.ledger.pools.pools[pool.name] = pool
            change.pools[pool.name] = pool
            self.outbox.event("pool", pool.name, "CREATED")
            self.outbox.deadline_moved()
        return copy.deepcopy(pool)

    async def delete_pool(self, name: str) -> Pool:
        ledger = self.ledger
        async with self._lock:
            pool = ledger.pools.pools.get(name)
            if pool is None:
                raise PoolNotFound(name)
            holders = [lease.id for lease in ledger.index.live.values() if lease.pool == name]
            if holders:
                raise PoolInUse(
                    f"pool {name!r} still holds leases {', '.join(holders)}; release them first"
                )
            async with ledger.change() as change:
                del ledger.pools.pools[name]
                change.pools[name] = None
                doomed = [s for s in ledger.servers.values() if s.pool == name and s.state.alive]
                for server in doomed:
                    ledger.server_state(server, ServerState.STOPPING, f"pool {name} deleted")
                self.outbox.event("pool", name, "DELETED")
        for server in doomed:
            await self.lifecycle.stop(server)
        return pool

    async def allow(self, tritonserver: str) -> list[str]:
        if not tritonserver:
            raise InvalidArgument("tritonserver", "is empty; expected the path of a tritonserver")
        self._backend.check_tritonserver(tritonserver)
        async with self._lock:
            allowlist = self.ledger.pools.allowlist
            if tritonserver not in allowlist:
                async with self.ledger.change() as change:
                    allowlist.append(tritonserver)
                    change.allowlist[tritonserver] = self._clock.now()
            return list(allowlist)

    async def disallow(self, tritonserver: str) -> list[str]:
        async with self._lock:
            self.ledger.pools.check_disallow(tritonserver)
            async with self.ledger.change() as change:
                self.ledger.pools.allowlist.remove(tritonserver)
                change.allowlist[tritonserver] = None
            return list(self.ledger.pools.allowlist)

    # ------------------------------------------------------------------ tenants

    def tenant_of(self, lease_id: str) -> str | None:
        """The tenant of a lease ("" for none), or None when there is no such lease."""
        lease = self.ledger.leases.get(LeaseId(lease_id))
        return None if lease is None else lease.tenant

    def tenant_of_name(self, name: str) -> str | None:
        """The tenant of the lease a name points at (or will), or None when there is none."""
        record = self.ledger.names.get(name)
        if record is None:
            return None
        for lease_id in (record.lease_id, record.next_lease_id):
            if lease_id is not None and (tenant := self.tenant_of(lease_id)) is not None:
                return tenant
        return None

    def list_tenants(self) -> list[Tenant]:
        tenants = self.ledger.tenants.tenants
        return [copy.deepcopy(tenants[name]) for name in sorted(tenants)]

    def tenant_usage(self, name: str) -> tuple[Tenant, TenantUsage]:
        tenant = self.ledger.tenants.tenants.get(name)
        if tenant is None:
            raise TenantNotFound(name)
        used = self.ledger.tenants.usage(name, self.ledger.index.live.values())
        return copy.deepcopy(tenant), used

    async def put_tenant(self, tenant: Tenant) -> Tenant:
        """Creates the tenant, or replaces its quotas; leases waiting for it are tried."""
        check_tenant(tenant)
        async with self._lock:
            existing = self.ledger.tenants.tenants.get(tenant.name)
            tenant.created_at = existing.created_at if existing else self._clock.now()
            async with self.ledger.change() as change:
                self.ledger.tenants.tenants[tenant.name] = tenant
                change.tenants[tenant.name] = tenant
            # A larger quota may admit leases that wait for it.
            await self.placer.place_pending()
        return copy.deepcopy(tenant)

    def check_tenant_exists(self, name: str) -> None:
        check_tenant_name(name)
        if name not in self.ledger.tenants.tenants:
            raise TenantNotFound(name)
