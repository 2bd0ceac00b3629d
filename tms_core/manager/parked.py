"""Parking a lease, as a change to the ledger (manager/parking.py says when and why).

Apart from `Parking` so that settling a report can end a failed wake without importing
placement.
"""

from __future__ import annotations

import logging

from tms_core.domain import Lease, LeaseState, ModelState
from tms_core.manager.ledger import Ledger

log = logging.getLogger(__name__)


def may_park(lease: Lease) -> bool:
    return (
        lease.replica_of is None
        and lease.autoscale is not None
        and (lease.autoscale.min_replicas == 0)
    )


def park(ledger: Ledger, lease: Lease, reason: str, now: float) -> None:
    """Parks the lease (inside a change): off its server, its replicas to drain."""
    server_id = lease.server_id
    if lease.replicas_wanted != 0:
        lease.replicas_wanted = 0
    ledger.place(lease, None)
    for model in lease.models:
        if model.state is not ModelState.FAILED:
            model.state, model.error = ModelState.UNLOADED, ""
        model.bytes_done = model.bytes_total = 0
    lease.parked_at = now
    ledger.set_state(lease, LeaseState.PARKED, reason, now)
    ledger.notify(lease)
    if server_id:
        ledger.bump(server_id)
    ledger.outbox.deadline_moved()
    log.info("lease %s parked: %s", lease.id, reason)


def wake_failed(ledger: Ledger, lease: Lease, why: str, now: float) -> None:
    """Ends a wake that will not reach READY: the lease is PARKED again, saying why (the
    router answers the connections it held with that)."""
    lease.wake_pending = False
    lease.wake_failed_at = lease.woke_at
    park(ledger, lease, f"wake failed: {why}", now)
