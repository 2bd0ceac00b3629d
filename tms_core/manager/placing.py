"""Placing leases: acting on placement's decisions, preemption, and retrying the waiting.

The decision itself is the pure `placement.place` over the fleet views; here it is committed
(the lease LOADING on its server, or PENDING with the reason) and then acted on (a new server
started, the server's sidecar told). The caller holds the manager's lock.
"""

from __future__ import annotations

import heapq
import logging

from tms_core import placement
from tms_core.config import Settings
from tms_core.domain import Lease, LeaseState, Server
from tms_core.manager.ledger import Ledger
from tms_core.manager.lifecycle import ServerLifecycle
from tms_core.manager.settle import Settler
from tms_core.manager.views import FleetViews

log = logging.getLogger(__name__)


class Placer:
    def __init__(
        self,
        ledger: Ledger,
        views: FleetViews,
        lifecycle: ServerLifecycle,
        settler: Settler,
        settings: Settings,
    ) -> None:
        self._ledger = ledger
        self._views = views
        self._lifecycle = lifecycle
        self._settler = settler
        self._settings = settings
        self._newly_held: set[tuple[str, str]] = set()
        """Models placed on a server since waiting leases were last tried."""

    async def apply(self, lease: Lease, decision: placement.Decision) -> None:
        """Commits the decision for `lease`, then acts on it."""
        async with self._ledger.change():
            new_server = self.commit(lease, decision)
        await self.act(lease, new_server)

    def commit(self, lease: Lease, decision: placement.Decision) -> Server | None:
        """Records the decision in the open change: the lease LOADING on its server (a new
        one, returned, when it starts one) or PENDING with the reason it waits."""
        ledger = self._ledger
        now = ledger.clock.now()
        new_server: Server | None = None
        if isinstance(decision, placement.Wait | placement.Reject):
            ledger.set_state(lease, LeaseState.PENDING, decision.reason, now)
        else:
            if isinstance(decision, placement.StartServer):
                new_server = self._lifecycle.new_server(
                    lease.pool, lease.tritonserver, now, decision
                )
                target = new_server.id
            else:
                assert isinstance(decision, placement.JoinServer)
                target = decision.server_id
            ledger.place(lease, target)
            self._newly_held.update((str(m.name), m.uri) for m in lease.models)
            ledger.set_state(lease, LeaseState.LOADING, "", now)
            server = ledger.servers[target]
            server.idle_since = None
            ledger.save_server(server)
            self._settler.sync_models(lease, server)
        ledger.notify(lease)
        return new_server

    async def act(self, lease: Lease, new_server: Server | None) -> None:
        """Starts the server a committed decision asked for and tells the lease's server."""
        ledger = self._ledger
        if new_server is not None:
            await self._lifecycle.start(new_server)
        server_id = lease.server_id
        if server_id is not None and server_id in ledger.servers:
            # Joining a server that already holds every model makes the lease READY at once.
            async with ledger.change():
                ledger.bump(server_id)
                self._settler.settle(ledger.servers[server_id], ledger.clock.now())

    def _victims(self, lease: Lease) -> list[Lease]:
        """The fewest lower-priority leases whose eviction lets `lease` join a server, lowest
        priority and then newest first; [] when preemption is off or nothing would do."""
        if not self._settings.placement.preemption:
            return []
        best: list[Lease] = []
        for server in self._ledger.servers.values():
            if not server.state.alive:
                continue
            lower = sorted(
                (
                    held
                    for held in self._ledger.leases_on(server.id)
                    if held.state.holds_models and held.priority < lease.priority
                ),
                key=lambda held: (held.priority, -held.created_at),
            )
            victims: list[Lease] = []
            for victim in lower:
                victims.append(victim)
                if best and len(victims) >= len(best):
                    break
                decision = self._views.decide(
                    lease, without=frozenset(v.id for v in victims), only=server.id
                )
                if isinstance(decision, placement.JoinServer):
                    best = list(victims)
                    break
        return best

    async def preempt(self, lease: Lease) -> placement.Decision | None:
        """Evicts lower-priority leases to make room for `lease`; the new decision, or None.

        Evicted leases go back to PENDING (their models leave the server) and are placed
        again, by priority and age, when room appears.
        """
        victims = self._victims(lease)
        if not victims:
            return None
        ledger = self._ledger
        now = ledger.clock.now()
        async with ledger.change():
            for victim in victims:
                server_id = victim.server_id
                ledger.unplace(
                    victim, f"preempted by lease {lease.id} (priority {lease.priority})", now
                )
                ledger.notify(victim)
                if server_id:
                    ledger.bump(server_id)
        log.info("lease %s preempted %s", lease.id, ", ".join(v.id for v in victims))
        return self._views.decide(lease)

    async def _admit(self, lease: Lease) -> bool:
        """Whether a lease waiting for its tenant's quota fits it now; it then counts
        against the quota (in this change) and waits for room like any other."""
        ledger = self._ledger
        over = ledger.tenants.over(lease, ledger.index.live.values())
        if over is not None:
            return False
        async with ledger.change():
            ledger.tenants.waiting.discard(lease.id)
            ledger.set_state(lease, LeaseState.PENDING, "", ledger.clock.now())
            ledger.notify(lease)
        return True

    async def place_pending(self, *, sweep: bool = False) -> None:
        """Tries again the waiting leases that could use the room there is now: higher
        priority first, then oldest first.

        Asked are the leases whose GPU share fits in the largest free GPU, those asking for
        a model a server has taken on since the last try (they may join it, adding less),
        and those no GPU bounds (manager/waiting.py); with `sweep` (the reconciler's
        ticks), also those asking for any model a server holds. Leases waiting for their
        tenant's quota are always asked. With preemption on, every waiting lease is asked,
        as a higher-priority one may evict its way in."""
        index = self._ledger.index
        held, self._newly_held = self._newly_held, set()
        if not index.pending:
            return
        if self._settings.placement.preemption:
            asked = list(index.pending.values())
        else:
            fleet = self._views.fleet()
            room = index.waiting
            chosen = dict(room.unbounded)
            for lease_id in self._ledger.tenants.waiting:
                if lease_id in index.pending:
                    chosen[lease_id] = index.pending[lease_id]
            for lease in room.within(fleet.largest_free_gpu()):
                chosen[lease.id] = lease
            for key in room.models() if sweep else held:
                if fleet.holds(*key):
                    for lease in room.wanting(key):
                        chosen[lease.id] = lease
            asked = list(chosen.values())
        queue = [(-lease.priority, lease.created_at, lease.id, lease) for lease in asked]
        heapq.heapify(queue)
        seen = {lease.id for lease in asked}
        while queue:
            order, created, lease_id, lease = heapq.heappop(queue)
            if lease.state is not LeaseState.PENDING:
                continue
            if lease.id in self._ledger.tenants.waiting and not await self._admit(lease):
                continue
            decision = self._views.decide(lease)
            if isinstance(decision, placement.Wait):
                decision = await self.preempt(lease) or decision
            if isinstance(decision, placement.JoinServer | placement.StartServer):
                await self.apply(lease, decision)
                # The leases after this one that ask for a model it brought may now join.
                for model in lease.models:
                    for other in index.waiting.wanting((str(model.name), model.uri)):
                        entry = (-other.priority, other.created_at, other.id, other)
                        if other.id not in seen and entry[:3] > (order, created, lease_id):
                            seen.add(other.id)
                            heapq.heappush(queue, entry)
