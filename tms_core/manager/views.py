"""Fleet views: the translation from the manager's state to what `placement` reads.

`FleetViews` keeps a `placement.FleetIndex` current server by server: the ledger's index
marks a server dirty when its leases or view change, and the next decision refreshes only
those. It is rebuilt whole only when a change reaches every server (new nodes, a reload);
`rebuilds` counts that. What-if questions (preemption) get a fleet of their own.
"""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet

from tms_core import placement
from tms_core.config import Settings
from tms_core.domain import Lease, Pool, Server
from tms_core.ids import LeaseId, ServerId
from tms_core.manager.index import ServerLoad
from tms_core.manager.ledger import Ledger
from tms_core.manager.probe import Probe


class FleetViews:
    def __init__(self, ledger: Ledger, settings: Settings, probe: Probe | None = None) -> None:
        self._ledger = ledger
        self._settings = settings
        self._probe = probe
        self._fleet: placement.FleetIndex | None = None
        # (node, GPU index) -> server -> the memory it takes there; and each server's part.
        self._gpu_shares: dict[tuple[str, int], dict[ServerId, float]] = {}
        self._shares_of: dict[ServerId, list[tuple[str, int]]] = {}
        self.rebuilds = 0
        """How often the fleet index was built whole (start-up, new nodes, a reload)."""

    def pool_memory(self, pool: Pool) -> int:
        return pool.server_memory or self._settings.servers.memory

    def views(self, without: frozenset[LeaseId] = frozenset()) -> list[placement.ServerView]:
        """The live servers as placement sees them (as if the leases `without` were gone),
        each read off a load counted afresh from its leases rather than the one kept."""
        views = []
        for server in self._ledger.servers.values():
            if not server.state.alive:
                continue
            load = ServerLoad()
            for lease in self._ledger.leases_on(server.id):
                if lease.id not in without:
                    load.add(lease, ready=True, holds=True)
            views.append(self.load_view(server, load))
        return views

    def load_view(self, server: Server, load: ServerLoad | None = None) -> placement.ServerView:
        """The server as placement sees it, read off its load (the kept one by default): it
        costs the server's distinct models and tags rather than its leases."""
        ledger = self._ledger
        if load is None:
            load = ledger.load(server.id) or ServerLoad()
        pool = ledger.pools.get(server.pool)
        measured = ledger.measured
        held: dict[str, tuple[str, int]] = {}
        models: dict[str, str] = {}
        used = 0
        for (name, uri), sizes in load.declared.items():
            need = max(sizes)
            if measured:
                need = max(need, measured.get((name, uri), 0))
            held[name] = (uri, need)
            models[name] = uri
            used += need
        # Leases moving here are counted from the start of their load: nothing may take
        # the room they are about to fill.
        for lease in ledger.moving.incoming.get(server.id, {}).values():
            for model in lease.models:
                uri, counted = held.get(model.name, ("", 0))
                need = ledger.need(model)
                if uri in ("", model.uri) and need > counted:
                    held[model.name] = (model.uri, need)
                    models[model.name] = model.uri
                    used += need - counted
        # The load's own count of tags, read in place: a server's tags include every lease id
        # on it, and copying thousands of them for each view would cost more than the rest.
        tags: AbstractSet[str] = load.tags.keys()
        if len(ledger.names):
            named = set(tags)
            for lease_id in load.leases:
                named.update(ledger.names.names_of(lease_id))
            tags = named
        for name, served in server.models.items():
            models[str(name)] = served.uri
        return placement.ServerView(
            id=server.id,
            accepting=not server.leak and server.id not in ledger.moving.draining,
            binary=server.binary,
            pool=server.pool,
            quota_capacity=pool.quota_per_server if pool else 0,
            quota_used=load.quota,
            capacity_bytes=server.capacity_bytes,
            used_bytes=used,
            models=models,
            node=server.node,
            gpus=server.gpus,
            exclusive=load.exclusive > 0,
            framework_group=server.framework_group,
            tags=tags,
            held=held,
        )

    def fleet(self) -> placement.FleetIndex:
        """The fleet index, brought up to date with the servers changed since the last
        decision (or rebuilt whole when a change reached them all)."""
        ledger = self._ledger
        dirty = ledger.index.fleet_dirty
        fleet = self._fleet
        if fleet is None or ledger.stale:
            ledger.stale = False
            self.rebuilds += 1
            views = self.views()
            fleet = self._fleet = placement.FleetIndex(views, self.node_views(views))
            self._gpu_shares, self._shares_of = {}, {}
            for view in views:
                self._share_gpus(view)
            dirty.clear()
            return fleet
        touched: set[tuple[str, int]] = set()
        for server_id in dirty:
            for key in self._shares_of.pop(server_id, ()):
                self._gpu_shares[key].pop(server_id, None)
                touched.add(key)
            server = ledger.servers.get(server_id)
            if server is None or not server.state.alive:
                fleet.drop_server(server_id)
                continue
            view = self.load_view(server)
            fleet.put_server(view)
            touched.update(self._share_gpus(view))
        dirty.clear()
        for node, index in touched:
            shares = self._gpu_shares.get((node, index), {})
            fleet.set_gpu_used(node, index, int(sum(shares.values())))
        return fleet

    def refresh_servers(self, server_ids: AbstractSet[ServerId]) -> None:
        """Marks servers whose view changed for a reason the index does not see (a model
        measured larger than declared)."""
        self._ledger.index.fleet_dirty.update(server_ids)

    def _share_gpus(self, view: placement.ServerView) -> list[tuple[str, int]]:
        keys = [(view.node, index) for index in view.gpus]
        for key in keys:
            self._gpu_shares.setdefault(key, {})[view.id] = view.used_bytes / len(keys)
        if keys:
            self._shares_of[view.id] = keys
        return keys

    def node_views(self, servers: list[placement.ServerView]) -> list[placement.NodeView]:
        """Every node's GPUs with what the servers on each take (a server's models are spread
        evenly over its GPUs)."""
        used: dict[tuple[str, int], float] = {}
        for view in servers:
            for index in view.gpus:
                key = (view.node, index)
                used[key] = used.get(key, 0) + view.used_bytes / len(view.gpus)
        return [
            placement.NodeView(
                name=node.name,
                labels=node.labels,
                gpus=tuple(
                    placement.GpuView(
                        node=node.name,
                        index=gpu.index,
                        product=gpu.product,
                        capacity_bytes=gpu.total_bytes,
                        used_bytes=int(used.get((node.name, gpu.index), 0)),
                    )
                    for gpu in node.gpus
                ),
            )
            for node in self._ledger.nodes
        ]

    def decide(
        self,
        lease: Lease,
        *,
        without: frozenset[LeaseId] = frozenset(),
        only: ServerId | None = None,
    ) -> placement.Decision:
        """Where `lease` would go now (as if the leases `without` were gone, or only on the
        server `only`)."""
        if self._probe is None:
            return self._decide(lease, without, only)
        began, began_cpu = time.perf_counter(), time.thread_time()
        try:
            return self._decide(lease, without, only)
        finally:
            self._probe.decided(time.perf_counter() - began, time.thread_time() - began_cpu)

    def _decide(
        self, lease: Lease, without: frozenset[LeaseId], only: ServerId | None
    ) -> placement.Decision:
        pool = self._ledger.pools.get(lease.pool)
        if lease.pool and pool is None:
            return placement.Wait(f"pool {lease.pool} was deleted")
        if without or only is not None:
            # Preemption asks what-ifs: a fleet of its own, built for the question.
            views = self.views(without)
            nodes = self.node_views(views)
            if only is not None:
                views = [view for view in views if view.id == only]
            fleet = placement.FleetIndex(views, nodes)
        else:
            fleet = self.fleet()
        wanted = lease.constraints
        return placement.place(
            [
                placement.ModelNeed(m.name, m.uri, self._ledger.need(m), m.framework)
                for m in lease.models
            ],
            index=fleet,
            server_capacity=self._settings.servers.memory,
            max_servers=self._settings.servers.max_servers,
            binary=lease.tritonserver,
            isolated_frameworks=frozenset(self._settings.placement.isolated_frameworks),
            constraints=placement.Constraints(
                gpus=wanted.gpus,
                gpu_product=wanted.gpu_product,
                node_selector=wanted.node_selector,
                exclusive=wanted.exclusive,
                colocate_with=frozenset(wanted.colocate_with),
                avoid=frozenset(wanted.avoid),
            ),
            pool=placement.PoolSpec(
                name=pool.name,
                quota=lease.quota,
                quota_per_server=pool.quota_per_server,
                max_servers=pool.max_servers,
                server_memory=self.pool_memory(pool),
            )
            if pool
            else None,
        )
