"""Standby servers: `servers.standby` started, empty servers kept ready for bespoke leases.

A cold lease (or a new replica) placed on a standby server waits only for its models to
load, not for `tritonserver` to start. A standby server is an ordinary unpooled server of
the backend's default Triton, started where placement would start one for a lease of the
default shape (a GPU of its own on a machine with GPUs, else a CPU server): it counts against
`servers.max_servers` like any running server, shows in `tms cluster`, and a lease joins it
as it joins any server with room. When one is taken, a reconciler's pass starts another once
no model is loading; the idle stop leaves the empty ones alone while there are no more than
`servers.standby`.

Answered without I/O, inside the reconciler's change (the caller holds the manager's lock).
"""

from __future__ import annotations

import logging

from tms_core import placement
from tms_core.config import Settings
from tms_core.domain import Lease, LeaseConstraints, LeaseState, Server
from tms_core.ids import LeaseId
from tms_core.manager.ledger import Ledger
from tms_core.manager.lifecycle import ServerLifecycle
from tms_core.manager.views import FleetViews

log = logging.getLogger(__name__)


class Standby:
    def __init__(
        self,
        ledger: Ledger,
        views: FleetViews,
        lifecycle: ServerLifecycle,
        settings: Settings,
        *,
        binary: str,
    ) -> None:
        self._ledger = ledger
        self._views = views
        self._lifecycle = lifecycle
        self._wanted = settings.servers.standby
        self._binary = binary

    def is_standby(self, server: Server) -> bool:
        """Whether `server` is a standby server now: alive, unpooled, of the default Triton
        (and of no isolated framework), holding nothing and placed for by no lease."""
        ledger = self._ledger
        return (
            server.state.alive
            and not server.pool
            and server.binary == self._binary
            and not server.framework_group
            and not server.leak
            and server.id not in ledger.index.loads
            and not ledger.leases_on(server.id)
        )

    def servers(self) -> list[Server]:
        return [s for s in self._ledger.servers.values() if self.is_standby(s)]

    def keeps(self, server: Server) -> bool:
        """Whether an idle server must stay up: it is one of no more than `standby`."""
        return self._wanted > 0 and self.is_standby(server) and len(self.servers()) <= self._wanted

    def shortfall(self, now: float) -> list[Server]:
        """Records (in the open change) a server for each standby missing, where placement
        says one would start; none while the fleet is full (leases come first)."""
        if not self._wanted:
            return []  # (the pass over every server is skipped where there are none)
        missing = self._wanted - len(self.servers())
        if missing > 0 and any(
            lease.state is LeaseState.LOADING for lease in self._ledger.index.live.values()
        ):
            # Replaced once no model loads: starting tritonserver and its sidecar takes CPU
            # that the load which took the standby server is waiting on (a pass follows
            # within the reconciler's 0.5 s).
            return []
        started: list[Server] = []
        for _ in range(max(0, missing)):
            decision = self._views.decide(self._shape(now))
            if not isinstance(decision, placement.StartServer):
                reason = getattr(decision, "reason", "")
                log.debug("standby server not started: %s", reason)
                break
            started.append(self._lifecycle.new_server("", self._binary, now, decision))
        return started

    def _shape(self, now: float) -> Lease:
        """The lease a standby server is started for: no models, the default Triton and GPU
        count, and exclusive so that placement starts a server rather than join one."""
        gpus = 1 if any(node.gpus for node in self._ledger.nodes) else 0
        return Lease(
            id=LeaseId("standby"),
            name="",
            state=LeaseState.PENDING,
            models=[],
            duration_s=0.0,
            created_at=now,
            expires_at=now,
            updated_at=now,
            tritonserver=self._binary,
            constraints=LeaseConstraints(gpus=gpus, exclusive=True),
        )
