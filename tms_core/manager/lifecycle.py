"""Server lifecycle: new servers, starting, stopping, failing, and adopting what an earlier
daemon left running. The only part of the manager that runs servers through the backend.

Every state change is committed before the backend acts on it (a server is STOPPING in the
store before its processes are signalled), so a daemon that dies in between finishes the job
when it starts again (`recover`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from tms_core import placement
from tms_core.backends.base import Backend
from tms_core.config import Settings
from tms_core.domain import LeaseState, ModelState, Server, ServerState
from tms_core.ids import LeaseId, ServerId, new_server_id
from tms_core.manager.ledger import Ledger
from tms_core.manager.views import FleetViews

log = logging.getLogger(__name__)


@dataclass
class Crashes:
    """A server's recent crashes (memory only: a restarted daemon starts counting afresh),
    and where its revival stands."""

    history: list[tuple[float, str]] = field(default_factory=list)
    restart_at: float | None = None
    """When the next restart is due; None once it has started (or none is planned)."""
    started_at: float = 0.0
    """When it was last restarted: its start timeout counts from here."""
    report_floor: int = 0
    """Reports from an assignment generation below this come from a sidecar of before the
    restart (still in flight when it was killed) and are ignored."""
    first_start: bool = False
    """The server has never been ready: this is its one retry of a failed start."""

    def describe(self) -> str:
        return "; ".join(
            f"{time.strftime('%H:%M:%S', time.localtime(at))} {reason}"
            for at, reason in self.history
        )


class ServerLifecycle:
    def __init__(
        self,
        ledger: Ledger,
        backend: Backend,
        views: FleetViews,
        settings: Settings,
        lock: asyncio.Lock,
    ) -> None:
        self._ledger = ledger
        self._backend = backend
        self._views = views
        self._settings = settings
        self._lock = lock
        self.crashes: dict[ServerId, Crashes] = {}
        # Leases already placed elsewhere after their server crashed too often, with the
        # history of that server: a second such crash fails them.
        self._relocated: dict[LeaseId, str] = {}
        self.restarts = 0
        """Servers restarted after a crash (their processes started again)."""

    def needs_refill(self) -> bool:
        """Whether what the next server's start uses ahead (the backend's spare sidecar) was
        used up; `refill` replaces it."""
        return self._backend.needs_refill()

    def refill(self) -> None:
        self._backend.refill()

    def new_server(
        self,
        pool_name: str,
        binary: str,
        now: float,
        where: placement.StartServer | None = None,
    ) -> Server:
        """A server recorded in the open change, not yet started."""
        ledger = self._ledger
        pool = ledger.pools.get(pool_name)
        capacity = self._views.pool_memory(pool) if pool else self._settings.servers.memory
        node = ledger.nodes_by_name.get(where.node) if where is not None else None
        if where is not None and where.gpus and node is not None:
            capacity = sum(g.total_bytes for g in node.gpus if g.index in where.gpus)
        server = self._backend.new_server(
            new_server_id(),
            capacity_bytes=capacity,
            now=now,
            binary=pool.tritonserver if pool else binary,
        )
        server.pool = pool_name
        if where is not None:
            server.node, server.gpus = where.node, where.gpus
            server.framework_group = where.framework_group
        elif ledger.nodes:
            # Pool servers are not placed by node: they run on the first (the local) node.
            server.node = ledger.nodes[0].name
        ledger.outbox.event(
            "server",
            server.id,
            server.state.value,
            f"started for pool {pool_name}" if pool_name else "started",
            server_id=server.id,
        )
        ledger.add_server(server)
        return server

    async def start(self, server: Server) -> bool:
        """Starts a recorded server; False (and the server FAILED) if it could not start.
        Caller holds the lock."""
        ledger = self._ledger
        try:
            await self._backend.start(server)
        except OSError as exc:
            async with ledger.change():
                self.fail(server, f"could not start tritonserver: {exc}", ledger.clock.now())
            # Whatever did start (tritonserver before a failed sidecar) must not linger.
            await self._backend.stop(server)
            async with ledger.change():
                ledger.drop_server(server)
            return False
        async with ledger.change():
            ledger.save_server(server)
        return True

    async def stop(self, server: Server) -> None:
        """Stops a server already marked STOPPING or FAILED; takes the lock after the
        backend has stopped it."""
        await self._backend.stop(server)
        ledger = self._ledger
        self.crashes.pop(server.id, None)
        async with self._lock, ledger.change():
            if server.state is not ServerState.FAILED:
                ledger.server_state(server, ServerState.STOPPED, server.reason)
            else:
                ledger.save_server(server)
            ledger.drop_server(server)
            # Leases still releasing on a stopped server have nothing left to unload.
            now = ledger.clock.now()
            for lease in ledger.leases_on(server.id):
                if lease.state is LeaseState.RELEASING:
                    ledger.set_state(lease, LeaseState.RELEASED, "", now)
                    ledger.notify(lease)
        log.info("server %s stopped (%s)", server.id, server.reason or "stopped")

    def exit_reason(self, server: Server) -> str | None:
        """None while the server's processes run; otherwise why they are gone."""
        return self._backend.exit_reason(server)

    def fail(self, server: Server, reason: str, now: float) -> None:
        """Marks the server FAILED and its leases with it (inside a change)."""
        log.warning("server %s failed: %s", server.id, reason)
        ledger = self._ledger
        ledger.server_state(server, ServerState.FAILED, reason)
        for lease in ledger.leases_on(server.id):
            if lease.state is LeaseState.RELEASING:
                ledger.set_state(lease, LeaseState.RELEASED, "", now)
            else:
                ledger.set_state(lease, LeaseState.FAILED, f"server {server.id}: {reason}", now)
            ledger.notify(lease)

    # ------------------------------------------------------------------ revival

    def started_at(self, server: Server) -> float:
        """When the server last started (its start timeout counts from here)."""
        crashes = self.crashes.get(server.id)
        return crashes.started_at if crashes and crashes.started_at else server.created_at

    def restart_at(self, server: Server) -> float | None:
        crashes = self.crashes.get(server.id)
        return crashes.restart_at if crashes else None

    def stale_report(self, server_id: ServerId, generation: int | None) -> bool:
        """Whether a report comes from a sidecar of before the server's restart, or arrives
        while the restart waits (the dead server's sidecar may still be talking)."""
        crashes = self.crashes.get(server_id)
        if crashes is None:
            return False
        if crashes.restart_at is not None:
            return True
        return generation is not None and generation < crashes.report_floor

    def crashed(self, server: Server, reason: str, now: float, *, died: bool) -> bool:
        """Handles a server whose process `died` (or that was not ready in time after a
        restart), inside a change. Revives it when it may: a dead sidecar beside a running
        Triton is replaced at once (its leases stay READY); otherwise a restart is planned,
        after a backoff, and its leases go back to LOADING, saying why. Returns False when
        the server is not to be revived (it crashed too often, or it never got ready and
        its one more start failed too or timed out): the caller then fails it (`give_up`)."""
        ledger = self._ledger
        known = self.crashes.get(server.id)
        if not self._backend.revives_servers:
            return False
        settings = self._settings.servers
        if known is not None and server.state is ServerState.RUNNING:
            known.first_start = False
        first_start = server.state is ServerState.STARTING and (known is None or known.first_start)
        if first_start:
            # Never ready. A process that died as it started is started once more, on new
            # ports: tritonserver exits at once when a port it was given was taken between
            # being picked and being bound (they are free when picked, not held). A second
            # failure, or a start that timed out, is the binary's or the configuration's and
            # would only repeat (`give_up` then fails the server, not moving its leases).
            if known is not None or not died or settings.max_restarts < 1:
                return False
        elif known is None and server.state is not ServerState.RUNNING:
            return False
        crashes = known or self.crashes.setdefault(server.id, Crashes(first_start=first_start))
        crashes.history = [c for c in crashes.history if c[0] > now - settings.restart_window]
        crashes.history.append((now, reason))
        restarts = len(crashes.history)
        if restarts > settings.max_restarts:
            return False
        what = f"restart {restarts} of {settings.max_restarts}"
        if died and self._backend.restart_sidecar(server):
            log.warning("server %s: %s; sidecar restarted (%s)", server.id, reason, what)
            ledger.save_server(server)
            ledger.outbox.event(
                "server", server.id, "SIDECAR_RESTARTED", f"{reason} ({what})", server_id=server.id
            )
            return True
        delay = 0.0 if restarts == 1 else settings.restart_backoff * 2 ** (restarts - 2)
        crashes.restart_at = now + delay
        log.warning("server %s: %s; restarting in %.1fs (%s)", server.id, reason, delay, what)
        server.models = {}
        server.triton_ready = False
        ledger.server_state(server, ServerState.STARTING, f"restarting after {reason} ({what})")
        lease_reason = f"server restarting after {reason} ({what})"
        for lease in ledger.leases_on(server.id):
            if lease.state is LeaseState.RELEASING:
                ledger.set_state(lease, LeaseState.RELEASED, "", now)
            else:
                for model in lease.models:
                    model.state, model.error = ModelState.PENDING, ""
                ledger.set_state(lease, LeaseState.LOADING, lease_reason, now)
            ledger.notify(lease)
        ledger.outbox.deadline_moved()
        return True

    async def restart(self, server: Server) -> None:
        """Starts a server whose restart is due again (the caller holds the lock): its
        sidecar then loads its leases' models as for a new server."""
        ledger = self._ledger
        crashes = self.crashes[server.id]
        try:
            restarted = await self._backend.restart(server)
        except OSError as exc:
            restarted = False
            crashes.history.append((ledger.clock.now(), f"could not restart: {exc}"))
        now = ledger.clock.now()
        async with ledger.change():
            crashes.restart_at = None
            if not restarted:
                self.give_up(server, server.reason, now)
                return
            self.restarts += 1
            crashes.started_at = now
            ledger.server_state(server, ServerState.STARTING, server.reason)
            ledger.change_open.publish = True
            ledger.bump(server.id)
        # The bump was delivered with the commit: the new sidecar's reports carry this
        # generation or a later one, the killed one's an earlier one.
        crashes.report_floor = ledger.outbox.generation(server.id)
        log.info("server %s restarted (pid %s)", server.id, server.pid)

    def give_up(self, server: Server, reason: str, now: float) -> None:
        """Fails a server that crashed too often (inside a change). Its leases are placed
        elsewhere once (they wait PENDING for placement); a lease that comes back here a
        second time is failed with both crash histories."""
        crashes = self.crashes.pop(server.id, None)
        if crashes is None:
            self.fail(server, reason, now)
            return
        if crashes.first_start:
            crashes.history.append((now, reason))
            self.fail(server, f"failed to start twice: {crashes.describe()}", now)
            return
        history = crashes.describe()
        count = len(crashes.history)
        summary = f"server {server.id} crashed {count} times: {history}"
        log.warning("giving up on server %s: %s", server.id, summary)
        ledger = self._ledger
        ledger.server_state(server, ServerState.FAILED, f"crashed {count} times: {history}")
        for lease in ledger.leases_on(server.id):
            earlier = self._relocated.get(lease.id)
            if lease.state is LeaseState.RELEASING:
                ledger.set_state(lease, LeaseState.RELEASED, "", now)
            elif earlier is None:
                self._relocated[lease.id] = summary
                ledger.unplace(lease, f"{summary}; placing it elsewhere", now)
            else:
                ledger.set_state(lease, LeaseState.FAILED, f"{summary}; before that {earlier}", now)
            ledger.notify(lease)

    async def revive_router(self) -> None:
        """Starts the router again if it died (on the same addresses, from the last routes
        written), recording its pid for the next daemon and saying so in an event."""
        try:
            pid = await self._backend.revive_router()
        except RuntimeError as exc:
            log.error("%s; trying again", exc)
            return
        if pid is None:
            return
        ledger = self._ledger
        async with self._lock, ledger.change() as change:
            change.meta["router_pid"] = str(pid)
            ledger.outbox.event(
                "router",
                "router",
                "RESTARTED",
                f"the router had exited; pid {pid} serves the lease and name addresses again",
            )

    async def recover(self, servers: list[Server]) -> None:
        """Makes the stored servers true again after a restart (inside a change): adopts
        those still running, finishes stops an earlier daemon began, forgets the gone."""
        ledger = self._ledger
        for server in servers:
            if not server.state.alive:
                if server.state is ServerState.STOPPING or (
                    server.state is ServerState.FAILED and self._backend.exit_reason(server) is None
                ):
                    # A stop the last daemon began but did not see through.
                    await self._backend.stop(server)
                if server.state is ServerState.STOPPING:
                    ledger.server_state(server, ServerState.STOPPED, server.reason)
                continue
            if self._backend.adopt(server):
                log.info("adopting server %s (pid %s)", server.id, server.pid)
                server.triton_ready = False
                ledger.add_server(server)
                continue
            log.info("server %s is gone; cleaning up after it", server.id)
            await self._backend.stop(server)
            ledger.server_state(server, ServerState.STOPPED, "not running when the daemon started")

    async def shutdown(self) -> None:
        """Stops every server still held, also one whose stop (idle, failed) the reconciler
        had begun when it was cancelled: stopping is idempotent, and none may outlive us."""
        ledger = self._ledger
        async with self._lock:
            try:
                async with ledger.change():
                    for server in list(ledger.servers.values()):
                        if server.state.alive:
                            ledger.server_state(server, ServerState.STOPPING, "daemon shut down")
            except Exception:
                # A failed commit reloads the working state: the servers are stopped anyway.
                log.exception("marking the servers STOPPING failed; stopping them regardless")
            # Read after the change: a reload (a reconciler's change cancelled mid-commit, or
            # this one failing) replaces the server records, and each must be stopped.
            servers = list(ledger.servers.values())
        outcomes = await asyncio.gather(*(self.stop(s) for s in servers), return_exceptions=True)
        for server, outcome in zip(servers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("stopping server %s at shutdown failed: %r", server.id, outcome)
