"""Parking at zero: a lease that may (autoscale MIN 0) parks when idle and wakes on use.

A READY lease whose models saw no inference for its park window (`autoscale.park_after`, or
its own `park_after_s`) **parks**: in one change its replicas are set to drain, it leaves its
server (whose sidecar unloads the models no other lease holds, and which stops once idle, as
any empty server does) and it is PARKED, keeping its id, name, expiry and addresses. The
router holds connections to those addresses and asks the daemon to wake the lease; `Wake`
(the API, `tms lease wake`) does the same.

A **wake** is a placement: the lease goes PENDING and is placed at once (joining a server, or
starting one, preempting where the settings allow); the router holds the connections for the
whole wake (`autoscale.wake_timeout`) and forwards them once the lease is READY. A wake that
cannot be placed, whose models fail to load, or that is not READY within the wake timeout
**fails**: the lease is PARKED again with the reason, which the router answers the held
connections with; the next connection tries again. Every step is an event: `PARKED` with
the idle time, `PENDING` ("waking: ..."), `READY` ("woke in 1.52s") or `PARKED` ("wake
failed: ..."). The caller holds the manager's lock.
"""

from __future__ import annotations

import logging

from tms_core import placement
from tms_core.config import Settings
from tms_core.domain import Lease, LeaseState, ModelState
from tms_core.manager.ledger import Ledger
from tms_core.manager.parked import may_park, park, wake_failed
from tms_core.manager.placing import Placer
from tms_core.manager.replicas import Replicas, timing
from tms_core.manager.views import FleetViews

log = logging.getLogger(__name__)


class Parking:
    def __init__(
        self,
        ledger: Ledger,
        views: FleetViews,
        placer: Placer,
        replicas: Replicas,
        settings: Settings,
    ) -> None:
        self._ledger = ledger
        self._views = views
        self._placer = placer
        self._replicas = replicas
        self._settings = settings

    def park_after(self, lease: Lease) -> float:
        return timing(lease.autoscale, self._settings, "park_after")

    @property
    def wake_timeout(self) -> float:
        return self._settings.autoscale.wake_timeout

    def _parks_at(self, lease: Lease) -> float | None:
        """When a READY lease that may park does, if nothing is used before then."""
        if lease.state is not LeaseState.READY or not may_park(lease):
            return None
        used = max(lease.ready_at or lease.created_at, lease.last_activity_at, lease.woke_at or 0)
        return used + self.park_after(lease)

    def next_deadline(self) -> float | None:
        due = []
        for lease in self._ledger.index.scaled.values():
            at = self._parks_at(lease)
            if at is not None:
                due.append(at)
            elif lease.waking and lease.woke_at is not None:
                due.append(lease.woke_at + self.wake_timeout)
        return min(due, default=None)

    def tick(self, now: float) -> None:
        """Parks the idle leases and fails the wakes past their timeout (inside a change)."""
        ledger = self._ledger
        for lease in list(ledger.index.scaled.values()):
            at = self._parks_at(lease)
            if at is not None and now >= at:
                park(ledger, lease, f"no inference for {self.park_after(lease):g}s", now)
            elif lease.waking and lease.woke_at is not None:
                if now >= lease.woke_at + self.wake_timeout:
                    where = f"{lease.state.value}: {lease.reason}" if lease.reason else ""
                    wake_failed(
                        ledger,
                        lease,
                        f"not READY within {self.wake_timeout:g}s"
                        + (f" ({where})" if where else ""),
                        now,
                    )

    async def park_now(self, lease: Lease, reason: str) -> None:
        """Parks a lease that may park, whatever its state short of ending."""
        async with self._ledger.change():
            park(self._ledger, lease, reason, self._ledger.clock.now())
        await self._replicas.reconcile([lease.id])

    async def wake(self, lease: Lease, why: str) -> None:
        """Wakes a PARKED lease: placed now, or PARKED again saying why it cannot be."""
        if lease.state is not LeaseState.PARKED:
            return
        ledger = self._ledger
        now = ledger.clock.now()
        async with ledger.change():
            lease.woke_at = now
            lease.wake_pending = True
            lease.wake_failed_at = None
            lease.parked_at = None
            lease.replicas_wanted = 1
            for model in lease.models:
                model.state, model.error = ModelState.PENDING, ""
            ledger.set_state(lease, LeaseState.PENDING, f"waking: {why}", now)
            ledger.notify(lease)
        decision = self._views.decide(lease)
        if isinstance(decision, placement.Wait):
            decision = await self._placer.preempt(lease) or decision
        if isinstance(decision, placement.JoinServer | placement.StartServer):
            log.info("lease %s waking (%s)", lease.id, why)
            await self._placer.apply(lease, decision)
            return
        async with ledger.change():
            wake_failed(ledger, lease, decision.reason, ledger.clock.now())
