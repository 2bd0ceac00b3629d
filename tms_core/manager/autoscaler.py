"""The autoscaler: the daemon's scaling decisions for autoscaling leases, on Triton's signals.

Sidecar reports feed it what each replica's Triton metrics endpoint said (`note`); the
reconciler's pass asks it to decide (`tick`): for every READY autoscaling lease, the metric
over its serving replicas, the replica count that asks for, and — once that has held for the
lease's window and outside its cooldown (`scaling.Stabiliser`) — a new count, recorded on the
lease and announced as a `lease SCALED_UP|SCALED_DOWN` event naming the metric's value, the
target and the counts, then carried out by `Replicas`. Memory only: a restarted daemon
starts its windows afresh. The caller holds the manager's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tms_core.config import Settings
from tms_core.domain import Lease, LeaseState, ServedModel
from tms_core.ids import LeaseId, ServerId
from tms_core.manager.ledger import Ledger
from tms_core.manager.replicas import Replicas, timing
from tms_core.manager.scaling import LoadTracker, Stabiliser, recommend

log = logging.getLogger(__name__)


class Autoscaler:
    def __init__(
        self, ledger: Ledger, replicas: Replicas, settings: Settings, *, hpa: bool
    ) -> None:
        self._ledger = ledger
        self._replicas = replicas
        self._settings = settings
        self._hpa = hpa
        self.load = LoadTracker()
        self._state: dict[LeaseId, Stabiliser] = {}

    def note(self, server_id: ServerId, models: Iterable[ServedModel], now: float) -> bool:
        """Takes what a server's sidecar read of its Triton's metrics; whether a lease it
        serves now asks for another replica count (a pass should look at once rather than
        at its next deadline: a load step is met a pass sooner)."""
        noted = False
        for served in models:
            if served.load is not None:
                self.load.note(server_id, served.name, served.load, now)
                noted = True
        if not noted or self._hpa:
            return False
        index = self._ledger.index
        for held in self._ledger.leases_on(server_id):
            lease = index.scaled.get(held.replica_of or held.id)
            if lease is not None and self._asks_change(lease, now):
                return True
        return False

    def _asks_change(self, lease: Lease, now: float) -> bool:
        scale = lease.autoscale
        if scale is None or lease.state is not LeaseState.READY:
            return False
        serving = self._ledger.published().serving(lease)
        names = [m.name for m in lease.models]
        measured = self.load.metric(scale.metric, ((s.id, names) for s in serving), now)
        if measured is None:
            return False
        value, count = measured
        current = lease.replicas_wanted
        # Down to one at least: to zero is parking's, on idleness (manager/parking.py).
        wanted = recommend(
            value, scale.target, count, current, max(scale.min_replicas, 1), scale.max_replicas
        )
        return wanted != current

    def _timings(self, lease: Lease) -> tuple[tuple[float, float], tuple[float, float]]:
        def get(key: str) -> float:
            return timing(lease.autoscale, self._settings, key)

        return (get("up_window"), get("down_window")), (get("up_cooldown"), get("down_cooldown"))

    def next_deadline(self) -> float | None:
        due = []
        for lease_id, state in self._state.items():
            lease = self._ledger.index.scaled.get(lease_id)
            if lease is not None:
                at = state.due(*self._timings(lease))
                # One already past waits for the next pass's reading, not a busy loop.
                if at is not None and at > self._ledger.clock.now():
                    due.append(at)
        return min(due, default=None)

    async def tick(self) -> None:
        """Decides for every autoscaling lease, then brings the changed ones' replicas along."""
        if self._hpa:
            return  # A HorizontalPodAutoscaler decides (kubernetes.autoscale_mode: hpa).
        ledger = self._ledger
        index = ledger.index
        for gone in [i for i in self._state if i not in index.scaled]:
            del self._state[gone]
        now = ledger.clock.now()
        published = ledger.published()
        changed: list[LeaseId] = []
        async with ledger.change():
            for lease in list(index.scaled.values()):
                scale = lease.autoscale
                if scale is None or lease.state is not LeaseState.READY:
                    continue
                serving = published.serving(lease)
                names = [m.name for m in lease.models]
                measured = self.load.metric(scale.metric, ((s.id, names) for s in serving), now)
                if measured is None:
                    continue
                value, count = measured
                current = lease.replicas_wanted
                wanted = recommend(
                    value,
                    scale.target,
                    count,
                    current,
                    max(scale.min_replicas, 1),
                    scale.max_replicas,
                )
                state = self._state.setdefault(lease.id, Stabiliser())
                windows, cooldowns = self._timings(lease)
                decided = state.observe(wanted, current, now, windows=windows, cooldowns=cooldowns)
                if decided is None or decided == current:
                    continue
                up = decided > current
                window = windows[0] if up else windows[1]
                reason = (
                    f"{scale.metric} {value:.4g} {'above' if up else 'below'} target "
                    f"{scale.target:g} for {window:g}s over {count} serving replica"
                    f"{'s' if count != 1 else ''}: {current} → {decided}"
                )
                ledger.outbox.event(
                    "lease",
                    lease.id,
                    "SCALED_UP" if up else "SCALED_DOWN",
                    reason,
                    lease_id=lease.id,
                    server_id=lease.server_id or "",
                )
                log.info("lease %s: %s", lease.id, reason)
                self._replicas.set_wanted(lease, decided)
                changed.append(lease.id)
        if changed:
            await self._replicas.reconcile(changed)
