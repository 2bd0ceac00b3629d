"""Standby servers: `servers.standby` started, empty servers kept ready for bespoke leases
(and `servers.standby_tritons`, as many per other Triton).

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
        # How many of each Triton: the default's, then the others named.
        self._wanted = {binary: settings.servers.standby} if settings.servers.standby else {}
        for triton, count in settings.servers.standby_tritons.items():
            if count:
                self._wanted[triton] = self._wanted.get(triton, 0) + count

    def is_standby(self, server: Server) -> bool:
        """Whether `server` is a standby server now: alive, unpooled, of a Triton kept on
        standby (and of no isolated framework), holding nothing and placed for by no lease."""
        ledger = self._ledger
        return (
            server.state.alive
            and not server.pool
            and server.binary in self._wanted
            and not server.framework_group
            and not server.leak
            and server.id not in ledger.index.loads
            and not ledger.leases_on(server.id)
        )

    def servers(self, binary: str | None = None) -> list[Server]:
        """The standby servers now (of one Triton, given `binary`)."""
        return [
            s
            for s in self._ledger.servers.values()
            if self.is_standby(s) and binary in (None, s.binary)
        ]

    def keeps(self, server: Server) -> bool:
        """Whether an idle server must stay up: one of no more than its Triton's count."""
        wanted = self._wanted.get(server.binary, 0)
        return wanted > 0 and self.is_standby(server) and len(self.servers(server.binary)) <= wanted

    def shortfall(self, now: float) -> list[Server]:
        """Records (in the open change) a server for each standby missing, where placement
        says one would start; none while the fleet is full (leases come first)."""
        if not self._wanted:
            return []  # (the pass over every server is skipped where there are none)
        have: dict[str, int] = {}
        for server in self.servers():
            have[server.binary] = have.get(server.binary, 0) + 1
        missing = {b: n - have.get(b, 0) for b, n in self._wanted.items() if n > have.get(b, 0)}
        if missing and any(
            lease.state is LeaseState.LOADING for lease in self._ledger.index.live.values()
        ):
            # Replaced once no model loads: starting tritonserver and its sidecar takes CPU
            # that the load which took the standby server is waiting on (a pass follows
            # within the reconciler's 0.5 s).
            return []
        started: list[Server] = []
        for binary, count in missing.items():
            for _ in range(count):
                decision = self._views.decide(self._shape(binary, now))
                if not isinstance(decision, placement.StartServer):
                    reason = getattr(decision, "reason", "")
                    log.debug("standby server of %s not started: %s", binary, reason)
                    break
                started.append(self._lifecycle.new_server("", binary, now, decision))
        return started

    def _shape(self, binary: str, now: float) -> Lease:
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
            tritonserver=binary,
            constraints=LeaseConstraints(gpus=gpus, exclusive=True),
        )
