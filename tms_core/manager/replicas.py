"""Replicas: a lease's models held on more servers than its own, each placed like a lease.

A lease that wants N replicas (`Lease.replicas_wanted`, its autoscale minimum at first, then
what the autoscaler decides) keeps N - 1 **replica records**: internal leases tied to it
(`replica_of`), with its models, constraints, binary and tenant, placed by the same
placement engine (so every replica's memory and GPUs are counted), loaded and revived by the
same machinery, never listed as leases, with no expiry of their own, and ended with their
lease in the same change (`Ledger._replicas_follow`). A replica record avoids the servers of
its lease and of its siblings, so each replica is a server more.

The lease's stable address leads to its serving replicas (`PublishedState.serving`): a new
one from the commit that makes it READY. One that is removed is **drained** first: out of the
address at once (the router and Services keep open connections), still loaded for the
lease's drain period, then released, which unloads its models. The caller holds the
manager's lock.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from tms_core.config import Settings
from tms_core.domain import Lease, LeaseAutoscale, LeaseModel, LeaseState
from tms_core.ids import LeaseId, new_lease_id
from tms_core.manager.ledger import Ledger
from tms_core.manager.placing import Placer
from tms_core.manager.views import FleetViews

log = logging.getLogger(__name__)

REPLICA_LABEL = "tms.replica-of"
"""The label every replica record carries (its lease's id): what siblings avoid."""


def timing(autoscale: LeaseAutoscale | None, settings: Settings, key: str) -> float:
    """A lease's own `<key>_s` autoscale timing, else the daemon's `autoscale.<key>`."""
    own = getattr(autoscale, f"{key}_s", 0.0) if autoscale is not None else 0.0
    return float(own or getattr(settings.autoscale, key))


def replica_record(lease: Lease, now: float) -> Lease:
    """A new, unplaced replica record of `lease`."""
    constraints = dataclasses.replace(
        lease.constraints,
        node_selector=dict(lease.constraints.node_selector),
        colocate_with=list(lease.constraints.colocate_with),
        # Never beside the lease or another of its replicas: a replica is a server more.
        avoid=[*lease.constraints.avoid, lease.id, f"{REPLICA_LABEL}={lease.id}"],
    )
    return Lease(
        id=new_lease_id(),
        name="",
        state=LeaseState.PENDING,
        models=[
            LeaseModel(m.name, m.uri, m.memory_bytes, framework=m.framework) for m in lease.models
        ],
        duration_s=lease.duration_s,
        created_at=now,
        expires_at=lease.expires_at,
        updated_at=now,
        pool=lease.pool,
        quota=lease.quota,
        tritonserver=lease.tritonserver,
        constraints=constraints,
        labels={REPLICA_LABEL: lease.id},
        priority=lease.priority,
        tenant=lease.tenant,
        replica_of=lease.id,
    )


class Replicas:
    def __init__(
        self, ledger: Ledger, views: FleetViews, placer: Placer, settings: Settings
    ) -> None:
        self._ledger = ledger
        self._views = views
        self._placer = placer
        self._settings = settings

    def drain_s(self, lease: Lease) -> float:
        return timing(lease.autoscale, self._settings, "drain")

    def next_deadline(self) -> float | None:
        """When the next draining replica is due to be unloaded."""
        due = [
            replica.draining_until
            for replicas in self._ledger.index.replicas.values()
            for replica in replicas.values()
            if replica.draining_until is not None
        ]
        return min(due, default=None)

    def set_wanted(self, lease: Lease, wanted: int) -> None:
        """Records how many replicas the lease wants (inside a change)."""
        if lease.replicas_wanted != wanted:
            lease.replicas_wanted = wanted
            self._ledger.save(lease)
            self._ledger.notify(lease)

    async def reconcile(self, lease_ids: Iterable[LeaseId] | None = None) -> None:
        """Brings the leases' replica records (all leases with some, or wanting some, by
        default) to what each wants, and unloads drained replicas that are due. Replicas
        added are placed after the change that records them, like new leases."""
        ledger = self._ledger
        index = ledger.index
        if lease_ids is None:
            lease_ids = {*index.replicas, *index.scaled}
        if not lease_ids:
            return
        now = ledger.clock.now()
        added: list[Lease] = []
        async with ledger.change():
            for lease_id in lease_ids:
                lease = index.live.get(lease_id)
                if lease is None or lease.replica_of is not None:
                    continue
                if lease.state is not LeaseState.RELEASING:
                    added.extend(self._scale(lease, now))
                for replica in index.replicas_of(lease.id):
                    due = replica.draining_until
                    if due is not None and due <= now and replica.state is LeaseState.READY:
                        ledger.set_state(replica, LeaseState.RELEASING, "drained", now)
                        ledger.after_change(replica)
        for replica in added:
            # Placed like any lease; one that waits is tried again as room appears.
            await self._placer.apply(replica, self._views.decide(replica))

    def _scale(self, lease: Lease, now: float) -> list[Lease]:
        """Adds or drains replica records so that the lease has what it wants (inside a
        change); returns the records added."""
        ledger = self._ledger
        active = [
            replica
            for replica in ledger.index.replicas_of(lease.id)
            if replica.draining_until is None and replica.state is not LeaseState.RELEASING
        ]
        missing = lease.replicas_wanted - 1 - len(active)
        added: list[Lease] = []
        if missing > 0 and lease.state.holds_models:
            # The lease itself first: replicas come once it is placed (LOADING or READY).
            cooldown = timing(lease.autoscale, self._settings, "up_cooldown")
            if now < ledger.replica_failed.get(lease.id, float("-inf")) + cooldown:
                return []
            for _ in range(missing):
                replica = replica_record(lease, now)
                ledger.add_lease(replica)
                ledger.set_state(replica, LeaseState.PENDING, "", now)
                ledger.notify(replica)
                added.append(replica)
        elif missing < 0:
            # The least useful first: waiting, then loading, then the newest serving.
            rank = {LeaseState.PENDING: 0, LeaseState.LOADING: 1}
            for replica in sorted(active, key=lambda r: (rank.get(r.state, 2), -r.created_at))[
                :-missing
            ]:
                self._remove(replica, now)
        return added

    def _remove(self, replica: Lease, now: float) -> None:
        ledger = self._ledger
        if replica.state is LeaseState.PENDING:
            ledger.set_state(replica, LeaseState.RELEASED, "scaled down", now)
        elif replica.state is LeaseState.READY:
            # Out of the address at this commit; unloaded once requests under way are done.
            lease = ledger.index.all[replica.replica_of] if replica.replica_of else replica
            replica.draining_until = now + self.drain_s(lease)
            ledger.save(replica)
            ledger.change_open.publish = True
            ledger.outbox.event(
                "replica",
                replica.id,
                "DRAINING",
                f"scaled down; unloaded in {self.drain_s(lease):g}s",
                lease_id=lease.id,
                server_id=replica.server_id or "",
            )
            ledger.outbox.deadline_moved()
        else:
            ledger.set_state(replica, LeaseState.RELEASING, "scaled down", now)
        ledger.after_change(replica)
