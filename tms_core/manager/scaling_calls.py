"""The calls that scale a lease by hand: replicas set, parked, woken.

A part of `LeaseManager` (its base class), like `Catalog`: the same lock and the same
one-change-per-call rule. The autoscaler and parking decide the same things on their own
(manager/autoscaler.py, manager/parking.py); these are the API's way in, and the router's
for a connection that waits at a parked lease's address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tms_core.domain import Lease, LeaseState
from tms_core.errors import InvalidArgument, LeaseEnded
from tms_core.manager.ledger import Ledger
from tms_core.manager.outbox import Outbox
from tms_core.manager.parking import Parking
from tms_core.manager.replicas import Replicas


class ScalingCalls:
    # Set by `LeaseManager.__init__`.
    ledger: Ledger
    outbox: Outbox
    parking: Parking
    replicas: Replicas
    _lock: asyncio.Lock
    _get: Callable[[str], Lease]
    snapshot: Callable[[str], Lease]

    async def set_replicas(self, lease_id: str, wanted: int) -> Lease:
        """Sets how many replicas an autoscaling lease wants now (within its autoscale
        range) and brings its replicas to it; 0 parks a lease that may park, and more wakes
        a parked one. The autoscaler goes on deciding from there."""
        async with self._lock:
            lease = self._get(lease_id)
            scale = lease.autoscale
            if scale is None:
                raise InvalidArgument(
                    "replicas", f"lease {lease.id} does not autoscale; it has one server"
                )
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                raise LeaseEnded(f"lease {lease.id} is {lease.state.value}")
            if not scale.min_replicas <= wanted <= scale.max_replicas:
                raise InvalidArgument(
                    "replicas",
                    f"{wanted} is outside the lease's autoscale range "
                    f"{scale.min_replicas}:{scale.max_replicas}",
                )
            if wanted == 0:
                if lease.state is not LeaseState.PARKED:
                    await self.parking.park_now(lease, "scaled to 0 by request")
                return self.snapshot(lease.id)
            await self.parking.wake(lease, "scaled up by request")
            async with self.ledger.change():
                self.replicas.set_wanted(lease, wanted)
            await self.replicas.reconcile([lease.id])
        self.outbox.deadline_moved()
        return self.snapshot(lease.id)

    async def wake(self, lease_id: str, why: str = "woken by request") -> Lease:
        """Wakes a PARKED lease (placed now, or PARKED again saying why it cannot be); any
        other lease is returned as it is."""
        async with self._lock:
            lease = self._get(lease_id)
            await self.parking.wake(lease, why)
        self.outbox.deadline_moved()
        return self.snapshot(lease.id)

    async def wake_address(self, port: int) -> None:
        """A connection waits at a router port: wakes the parked lease it leads to."""
        for lease in list(self.ledger.index.live.values()):
            if lease.state is LeaseState.PARKED and port in (lease.http_port, lease.grpc_port):
                await self.wake(lease.id, f"a connection to port {port}")
                return
        for record in self.ledger.names.records().values():
            if port in (record.http_port, record.grpc_port) and record.lease_id:
                await self.wake(record.lease_id, f"a connection to name {record.name}")
                return
