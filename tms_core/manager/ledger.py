"""The ledger: the manager's working state, the primitive changes to it, and the one
transaction helper that writes what a change touched and only then announces it.

Every part of the manager changes memory through the ledger inside `async with
ledger.change()`: a lease's state, a lease's server, a server's state, a name, a pool. Each
primitive marks what it touched; the commit writes exactly that in one store transaction,
lets waiting names follow the leases that changed, and flushes the outbox (events, wake-ups,
published state). A change that fails reloads memory from the store and announces nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tms_core.backends.base import Backend
from tms_core.clock import Clock
from tms_core.domain import (
    Lease,
    LeaseModel,
    LeaseNameRecord,
    LeaseState,
    ModelState,
    Pool,
    PublishedState,
    Server,
    ServerState,
    Tenant,
)
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.inventory import Node
from tms_core.manager.index import LeaseIndex, ServerLoad
from tms_core.manager.inflight import MovesInFlight
from tms_core.manager.names import NameTable
from tms_core.manager.outbox import Outbox
from tms_core.manager.pools import PoolTable
from tms_core.manager.tenants import TenantTable
from tms_core.store.protocol import StateStore, StateTransaction

log = logging.getLogger(__name__)


@dataclass
class Change:
    """What one change touched, to be written in one transaction."""

    leases: dict[LeaseId, Lease] = field(default_factory=dict)
    servers: dict[ServerId, Server] = field(default_factory=dict)
    names: dict[str, LeaseNameRecord | None] = field(default_factory=dict)
    pools: dict[str, Pool | None] = field(default_factory=dict)
    allowlist: dict[str, float | None] = field(default_factory=dict)
    """Triton binaries allowed (when) or disallowed (None)."""
    measured: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    """Daemon facts beside the state (the router's pid)."""
    states: set[LeaseId] = field(default_factory=set)
    """Leases whose state changed: names waiting for them follow at the commit."""
    publish: bool = False

    def writes_nothing(self) -> bool:
        return not (
            self.leases
            or self.servers
            or self.names
            or self.pools
            or self.allowlist
            or self.measured
            or self.tenants
            or self.meta
        )

    async def write(self, tx: StateTransaction) -> None:
        for server in self.servers.values():
            await tx.put_server(server)
        for lease in self.leases.values():
            await tx.put_lease(lease)
        for name, record in self.names.items():
            if record is None:
                await tx.delete_name(name)
            else:
                await tx.put_name(record)
        for pool_name, pool in self.pools.items():
            if pool is None:
                await tx.delete_pool(pool_name)
            else:
                await tx.put_pool(pool)
        for binary, at in self.allowlist.items():
            if at is None:
                await tx.disallow(binary)
            else:
                await tx.allow(binary, at)
        for (name, uri), (measured, at) in self.measured.items():
            await tx.put_model_memory(name, uri, measured, at)
        for tenant in self.tenants.values():
            await tx.put_tenant(tenant)
        for key, value in self.meta.items():
            await tx.set_meta(key, value)


class Ledger:
    def __init__(
        self,
        *,
        store: StateStore,
        backend: Backend,
        clock: Clock,
        outbox: Outbox,
        nodes: Sequence[Node],
    ) -> None:
        self._store = store
        self._backend = backend
        self.clock = clock
        self.outbox = outbox
        self.index = LeaseIndex()
        self.servers: dict[ServerId, Server] = {}
        self.names = NameTable()
        self.pools = PoolTable()
        self.tenants = TenantTable()
        self.measured: dict[tuple[str, str], int] = {}
        """(model name, uri) -> the most memory it was measured to take, on any server."""
        self.moving = MovesInFlight()
        self.replica_failed: dict[LeaseId, float] = {}
        """When a replica record of each lease last FAILED (memory only): a new one waits
        out the lease's up cooldown, so a replica that cannot load is not retried at once."""
        self.renew_announced: dict[LeaseId, float] = {}
        """When each live lease's last RENEWED event went out (activity renewals are thinned)."""
        self.nodes: tuple[Node, ...] = ()
        self.nodes_by_name: dict[str, Node] = {}
        self.set_nodes(nodes)
        self.stale = True
        """Whether what placement keeps must be rebuilt whole (after a reload, new nodes)."""
        self._open: Change | None = None

    def set_nodes(self, nodes: Sequence[Node]) -> None:
        self.nodes = tuple(nodes)
        self.nodes_by_name = {node.name: node for node in self.nodes}
        self.stale = True

    # ------------------------------------------------------------------ reading

    @property
    def leases(self) -> dict[LeaseId, Lease]:
        return self.index.all

    def leases_on(self, server_id: ServerId) -> list[Lease]:
        return self.index.leases_on(server_id)

    def load(self, server_id: ServerId) -> ServerLoad | None:
        return self.index.loads.get(server_id)

    def need(self, model: LeaseModel) -> int:
        """The memory placement counts for a model: declared or measured, whichever is more."""
        return max(model.memory_bytes, self.measured.get((str(model.name), model.uri), 0))

    def desired(self, server_id: ServerId) -> list[tuple[ModelName, str]]:
        """The models a server should hold: those of its holding leases and of the leases
        moving onto it."""
        wanted: dict[ModelName, str] = {}
        load = self.index.loads.get(server_id)
        if load is not None:
            for name, uri in load.wanted:
                wanted.setdefault(name, uri)
        for lease in self.moving.incoming.get(server_id, {}).values():
            for model in lease.models:
                wanted.setdefault(model.name, model.uri)
        return sorted(wanted.items())

    def published(self) -> PublishedState:
        return PublishedState(
            self.index.live, self.names.records(), self.servers, self.index.replicas
        )

    # ------------------------------------------------------------------ changing

    @property
    def change_open(self) -> Change:
        assert self._open is not None, "state changes happen inside `ledger.change()`"
        return self._open

    def save(self, lease: Lease) -> None:
        self.change_open.leases[lease.id] = lease

    def save_server(self, server: Server) -> None:
        self.change_open.servers[server.id] = server

    def add_lease(self, lease: Lease) -> None:
        self.index.add(lease)
        self.save(lease)

    def set_state(self, lease: Lease, state: LeaseState, reason: str, now: float) -> None:
        """The one place a lease's state changes: announced, re-indexed and written."""
        if (lease.state, lease.reason) != (state, reason) or lease.updated_at == lease.created_at:
            # A replica record's changes are its lease's news: watchers read that lease again.
            self.outbox.event(
                "replica" if lease.replica_of else "lease",
                lease.id,
                state.value,
                reason,
                lease_id=lease.replica_of or lease.id,
                server_id=lease.server_id or "",
            )
        lease.state = state
        lease.reason = reason
        lease.updated_at = now
        change = self.change_open
        change.states.add(lease.id)
        change.leases[lease.id] = lease
        self.index.update(lease)
        if state.ended:
            self.renew_announced.pop(lease.id, None)
        if state is LeaseState.FAILED and lease.replica_of is not None:
            self.replica_failed[lease.replica_of] = now

    def place(self, lease: Lease, server_id: ServerId | None) -> None:
        """Puts `lease` on `server_id` (None: on no server)."""
        self.index.place(lease, server_id)
        self.save(lease)
        self.change_open.publish = True

    def unplace(self, lease: Lease, reason: str, now: float) -> None:
        """Takes a lease off its server, back to PENDING with `reason`: its models are to be
        loaded afresh wherever it goes next."""
        self.place(lease, None)
        for model in lease.models:
            model.state, model.error = ModelState.PENDING, ""
        self.set_state(lease, LeaseState.PENDING, reason, now)

    def add_server(self, server: Server) -> None:
        self.servers[server.id] = server
        self.index.mark_changed(server.id)
        self.save_server(server)

    def drop_server(self, server: Server) -> None:
        self.servers.pop(server.id, None)
        self.index.mark_changed(server.id)
        self.outbox.forget_server(server.id)
        self.change_open.publish = True

    def server_state(self, server: Server, state: ServerState, reason: str) -> None:
        self.index.mark_changed(server.id)
        server.state = state
        server.reason = reason
        self.outbox.event("server", server.id, state.value, reason, server_id=server.id)
        self.save_server(server)

    def notify(self, lease: Lease) -> None:
        self.outbox.lease_changed(lease.id, ended=lease.state.ended)
        if lease.replica_of is not None:
            # Followers of the lease see its replicas come, serve and go.
            self.outbox.lease_changed(lease.replica_of, ended=False)

    def bump(self, server_id: ServerId) -> None:
        self.outbox.assignment_changed(server_id)

    def after_change(self, lease: Lease) -> None:
        self.notify(lease)
        if lease.server_id:
            self.bump(lease.server_id)
        self.outbox.deadline_moved()

    def point_name(self, name: str, lease: Lease, now: float) -> LeaseNameRecord:
        """Points `name` at the lease: at once if it is READY, else as soon as it is."""
        record = self.names.get(name)
        if record is None:
            http_port, grpc_port = self._backend.allocate_ports(2)
            record = LeaseNameRecord(name, None, http_port, grpc_port, now)
        before = (record.lease_id, record.next_lease_id)
        if lease.state is LeaseState.READY:
            record.lease_id, record.next_lease_id = lease.id, None
            self.outbox.event("name", name, "POINTED", f"to lease {lease.id}", lease_id=lease.id)
        else:
            record.next_lease_id = lease.id
            self.outbox.event(
                "name", name, "WAITING", f"for lease {lease.id} to be READY", lease_id=lease.id
            )
        record.updated_at = now
        self._put_name(record, before)
        return record

    def delete_name(self, name: str) -> LeaseNameRecord | None:
        record = self.names.get(name)
        if record is None:
            return None
        self._retag(record.lease_id, record.next_lease_id)
        self.names.delete(name)
        self.change_open.names[name] = None
        self.change_open.publish = True
        self.outbox.event("name", name, "DELETED", lease_id=record.lease_id or "")
        return record

    def _put_name(
        self, record: LeaseNameRecord, before: tuple[LeaseId | None, LeaseId | None]
    ) -> None:
        self.names.put(record)
        # Names are tags that `colocate_with` and `avoid` match: only the servers of the
        # leases the name left or reached see a different view.
        self._retag(*before, record.lease_id, record.next_lease_id)
        self.change_open.names[record.name] = record
        self.change_open.publish = True

    def _retag(self, *lease_ids: LeaseId | None) -> None:
        for lease_id in lease_ids:
            lease = self.index.live.get(lease_id) if lease_id else None
            if lease is not None and lease.server_id is not None:
                self.index.fleet_dirty.add(lease.server_id)

    def _replicas_follow(self, change: Change) -> None:
        """Ends the replica records of leases that ended or are releasing, in the same
        change: a lease's replicas never outlive it."""
        now = self.clock.now()
        for lease_id in list(change.states):
            lease = self.index.all.get(lease_id)
            if lease is None or not (lease.state.ended or lease.state is LeaseState.RELEASING):
                continue
            for replica in self.index.replicas_of(lease_id):
                if replica.state is LeaseState.PENDING:
                    self.set_state(replica, LeaseState.RELEASED, "", now)
                elif replica.state is not LeaseState.RELEASING:
                    self.set_state(replica, LeaseState.RELEASING, f"lease {lease.state.value}", now)
                self.after_change(replica)

    def _names_follow(self, change: Change) -> None:
        """Switches names waiting for a lease that became READY; drops waits on ended ones."""
        for lease_id in change.states:
            waiting = self.names.waiting_for(lease_id)
            lease = self.index.all.get(lease_id)
            if not waiting or lease is None:
                continue
            for record in waiting:
                before = (record.lease_id, record.next_lease_id)
                if lease.state is LeaseState.READY:
                    # One commit moves the name: new connections go to the new lease from here.
                    record.lease_id, record.next_lease_id = lease.id, None
                    self.outbox.event(
                        "name", record.name, "POINTED", f"to lease {lease.id}", lease_id=lease.id
                    )
                elif lease.state not in (LeaseState.PENDING, LeaseState.LOADING):
                    record.next_lease_id = None
                    self.outbox.event(
                        "name",
                        record.name,
                        "UNCHANGED",
                        f"lease {lease.id} ended {lease.state.value} before READY",
                        lease_id=lease.id,
                    )
                else:
                    continue
                record.updated_at = self.clock.now()
                self._put_name(record, before)

    # ------------------------------------------------------------------ committing

    @asynccontextmanager
    async def change(self) -> AsyncIterator[Change]:
        """One change: memory is changed inside, written at the end in one transaction, and
        announced after the commit. If anything fails, memory goes back to the store's."""
        change = self._open = Change()
        self.outbox.hold()
        try:
            yield change
            self._replicas_follow(change)
            self._names_follow(change)
            if change.leases or change.servers or change.names:
                change.publish = True
            if not change.writes_nothing():
                async with self._store.transaction() as tx:
                    await change.write(tx)
        except BaseException:
            self._open = None
            self.outbox.release(committed=False)
            await self._reload()
            raise
        self._open = None
        if change.publish:
            self.outbox.state_changed()
        self.outbox.release(committed=True)

    async def load_stored(self) -> list[Server]:
        """Takes leases, names, pools, the allowlist and measurements from the store;
        returns the stored servers for the caller to reconcile."""
        leases, servers = await self._store.load()
        extras = await self._store.load_extras()
        self.index.reset(leases)
        self.names = NameTable(extras.names)
        self.pools = PoolTable(extras.pools, extras.allowlist)
        self.tenants.reset(extras.tenants, leases)
        self.measured = extras.measured
        self.stale = True
        return servers

    async def _reload(self) -> None:
        servers = await self.load_stored()
        live: dict[ServerId, Server] = {}
        for server in servers:
            if not server.state.alive:
                continue
            current = self.servers.get(server.id)
            if current is not None:
                # What the sidecar reported is not stored: it is reported again anyway.
                server.models, server.triton_ready = current.models, current.triton_ready
            live[server.id] = server
        self.servers = live
        self.index.unsettled.update(live)
        # Moves are memory only: drop them, and the targets unload what no lease wants.
        for target in self.moving.clear():
            self.bump(target)
        log.warning("a state change failed to commit; working state reloaded from the store")
