"""The live-lease index: every lease, the live ones by server with what they add up to, the
waiting ones, and the expiry heap, kept in step in one place (`LeaseIndex.update`).

Per-server operations and retries cost what that server or the queue holds, not what the
fleet holds, however long the history grows. The one expiry rule lives here too
(`counts_down`): the daemon's reconciler and a restarted daemon's recovery both read it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from tms_core.domain import Lease, LeaseState
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.manager.waiting import WaitingRoom


def counts_down(lease: Lease) -> bool:
    """Whether the lease's expiry is running: waiting for room, READY or PARKED. A loading
    lease's duration counts from READY, and a releasing one is already on its way out. A
    replica record has no expiry of its own: it ends with its lease."""
    return lease.replica_of is None and lease.state in (
        LeaseState.PENDING,
        LeaseState.READY,
        LeaseState.PARKED,
    )


@dataclass
class ServerLoad:
    """What the live leases on one server add up to, kept as leases come, go and change
    state, so that a server holding thousands of leases (a popular model, shared) costs what
    its distinct models cost, not what its leases do, on every report and decision."""

    leases: dict[LeaseId, Lease] = field(default_factory=dict)
    unsteady: dict[LeaseId, Lease] = field(default_factory=dict)
    """The leases not READY: what a settle must look at whatever the server reported."""
    by_model: dict[ModelName, dict[LeaseId, Lease]] = field(default_factory=dict)
    wanted: dict[tuple[ModelName, str], int] = field(default_factory=dict)
    """Models of the leases that hold them (LOADING, READY), with how many ask."""
    declared: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    """Every model of the live leases -> {declared bytes: how many leases declare that}."""
    tags: dict[str, int] = field(default_factory=dict)
    quota: int = 0
    exclusive: int = 0

    def add(self, lease: Lease, ready: bool, holds: bool, sign: int = 1) -> None:
        if sign > 0:
            self.leases[lease.id] = lease
            if not ready:
                self.unsteady[lease.id] = lease
        else:
            self.leases.pop(lease.id, None)
            self.unsteady.pop(lease.id, None)
        for model in lease.models:
            on = self.by_model.setdefault(model.name, {})
            if sign > 0:
                on[lease.id] = lease
            else:
                on.pop(lease.id, None)
                if not on:
                    del self.by_model[model.name]
            if holds:
                _count(self.wanted, (model.name, model.uri), sign)
            sizes = self.declared.setdefault((str(model.name), model.uri), {})
            _count(sizes, model.memory_bytes, sign)
            if not sizes:
                del self.declared[(str(model.name), model.uri)]
        for tag in lease.tags:
            _count(self.tags, tag, sign)
        self.quota += sign * lease.quota
        self.exclusive += sign * lease.constraints.exclusive


def _count(counts: dict[Any, int], key: Any, sign: int) -> None:
    value = counts.get(key, 0) + sign
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


_Placed = tuple[ServerId, bool, bool]


class LeaseIndex:
    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.all: dict[LeaseId, Lease] = {}
        """Every lease this daemon knows, ended ones too (what `tms lease list -a` shows)."""
        self.live: dict[LeaseId, Lease] = {}
        self.pending: dict[LeaseId, Lease] = {}
        self.beside: dict[LeaseId, Lease] = {}
        """The live leases placed beside others (`colocate_with`): few, and what a
        consolidation pass must not pull apart."""
        self.waiting = WaitingRoom()
        """The pending leases again, arranged by the room that would let them go."""
        self.replicas: dict[LeaseId, dict[LeaseId, Lease]] = {}
        """The live replica records of each lease that has some (manager/replicas.py)."""
        self.scaled: dict[LeaseId, Lease] = {}
        """The live leases that autoscale: what the autoscaler and replicas look at."""
        self.loads: dict[ServerId, ServerLoad] = {}
        # What each live lease on a server counts in its load: (server, READY, holds models).
        self._placed: dict[LeaseId, _Placed] = {}
        # (expiry, lease) for leases whose expiry runs: what the reconciler expires without
        # reading them all. Expiries only ever move later; stale entries are put right (or
        # dropped) as they come up.
        self._expiries: list[tuple[float, LeaseId]] = []
        self._in_heap: set[LeaseId] = set()
        self.fleet_dirty: set[ServerId] = set()
        """Servers whose view placement reads may have changed since it last looked."""
        self.unsettled: set[ServerId] = set()
        """Servers whose leases or reports changed since they were last settled."""

    def reset(self, leases: list[Lease]) -> None:
        self._clear()
        for lease in leases:
            self.all[lease.id] = lease
            if not lease.state.ended:
                self.update(lease)

    def add(self, lease: Lease) -> None:
        self.all[lease.id] = lease
        self.update(lease)

    def update(self, lease: Lease) -> None:
        """Brings the indexes in step with the lease's state and server, after either changed."""
        if lease.state.ended:
            self._drop(lease)
            return
        self.live[lease.id] = lease
        if lease.replica_of is not None:
            self.replicas.setdefault(lease.replica_of, {})[lease.id] = lease
        elif lease.autoscale is not None:
            self.scaled[lease.id] = lease
        if lease.constraints.colocate_with:
            self.beside[lease.id] = lease
        if counts_down(lease) and lease.id not in self._in_heap:
            heapq.heappush(self._expiries, (lease.expires_at, lease.id))
            self._in_heap.add(lease.id)
        if lease.state is LeaseState.PENDING:
            self.pending[lease.id] = lease
            self.waiting.add(lease)
        else:
            self.pending.pop(lease.id, None)
            self.waiting.remove(lease)
        before = self._placed.get(lease.id)
        placed = (
            None
            if lease.server_id is None
            else (lease.server_id, lease.state is LeaseState.READY, lease.state.holds_models)
        )
        if lease.server_id is not None:
            self.mark_changed(lease.server_id)
        if before != placed:
            if before is not None:
                self._uncount(lease, before)
            if placed is not None:
                self.loads.setdefault(placed[0], ServerLoad()).add(lease, placed[1], placed[2])
                self._placed[lease.id] = placed

    def place(self, lease: Lease, server_id: ServerId | None) -> None:
        """Puts `lease` on `server_id` (None: on no server)."""
        before = self._placed.pop(lease.id, None)
        if before is not None:
            self._uncount(lease, before)
        lease.server_id = server_id
        if lease.id in self.live:
            self.update(lease)

    def _drop(self, lease: Lease) -> None:
        self.live.pop(lease.id, None)
        self.scaled.pop(lease.id, None)
        if lease.replica_of is not None:
            siblings = self.replicas.get(lease.replica_of, {})
            siblings.pop(lease.id, None)
            if not siblings:
                self.replicas.pop(lease.replica_of, None)
        self.beside.pop(lease.id, None)
        self.pending.pop(lease.id, None)
        self.waiting.remove(lease)
        if lease.server_id is not None:
            self.mark_changed(lease.server_id)
        before = self._placed.pop(lease.id, None)
        if before is not None:
            self._uncount(lease, before)

    def _uncount(self, lease: Lease, placed: _Placed) -> None:
        server_id, ready, holds = placed
        self.mark_changed(server_id)
        load = self.loads.get(server_id)
        if load is not None:
            load.add(lease, ready, holds, sign=-1)
            if not load.leases:
                del self.loads[server_id]

    def mark_changed(self, server_id: ServerId) -> None:
        """Marks a server whose view, or whose leases' states, may have changed."""
        self.fleet_dirty.add(server_id)
        self.unsettled.add(server_id)

    def replicas_of(self, lease_id: LeaseId) -> list[Lease]:
        """The live replica records of a lease, oldest first."""
        return sorted(self.replicas.get(lease_id, {}).values(), key=lambda r: r.created_at)

    def leases_on(self, server_id: ServerId) -> list[Lease]:
        """The live leases on a server (a copy: callers may end some as they go)."""
        load = self.loads.get(server_id)
        return list(load.leases.values()) if load is not None else []

    def next_expiry(self) -> float | None:
        """When the next lease whose expiry runs expires."""
        heap = self._expiries
        while heap:
            at, lease_id = heap[0]
            lease = self.live.get(lease_id)
            if lease is None or not counts_down(lease):
                heapq.heappop(heap)
                self._in_heap.discard(lease_id)
            elif lease.expires_at > at:
                heapq.heapreplace(heap, (lease.expires_at, lease_id))
            else:
                return at
        return None

    def pop_expired(self, now: float) -> Lease | None:
        """The next lease due to expire by `now`, taken off the heap; None when none is."""
        at = self.next_expiry()
        if at is None or at > now:
            return None
        _, lease_id = heapq.heappop(self._expiries)
        self._in_heap.discard(lease_id)
        return self.live[lease_id]
