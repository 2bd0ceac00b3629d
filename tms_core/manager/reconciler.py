"""The reconciler: the part of the manager that owns time.

One pass (`tick`) expires leases, fails servers whose processes died or never became ready,
settles servers whose reports changed, recycles leaking servers, stops idle ones, keeps
pools at their minimum and `servers.standby` empty servers started, advances consolidation
moves, runs a consolidation pass when one is due, and starts the router again if it died.
`run` is the daemon's loop: a pass, then sleep until the next deadline (or a change that may
have moved one), checking process health at least every `HEALTH_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import logging

from tms_core.clock import Clock
from tms_core.config import Settings
from tms_core.domain import Lease, LeaseState, Server, ServerState
from tms_core.ids import LeaseId, ServerId
from tms_core.manager.autoscaler import Autoscaler
from tms_core.manager.ledger import Ledger
from tms_core.manager.lifecycle import ServerLifecycle
from tms_core.manager.moves import Consolidator, PassPlan
from tms_core.manager.parking import Parking
from tms_core.manager.placing import Placer
from tms_core.manager.replicas import Replicas
from tms_core.manager.settle import Settler
from tms_core.manager.standby import Standby
from tms_core.units import format_duration

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.5
"""Process health is checked at least this often, whatever the next deadline."""

ACTIVITY_FRESH_S = 2.0
"""A sidecar reads Triton's inference statistics every second and reports a change at once
(a heartbeat every 2 s otherwise). A report received this long after an activity-renewed
lease's expiry carries statistics read after it, even on a loaded machine: only such a
report may end the lease for inactivity (the daemon asks for one then)."""

ACTIVITY_GIVE_UP_S = 8.0
"""An activity-renewed lease whose server sends no report for this long past its expiry
ends anyway: its sidecar is dead or stuck (revival restarts it)."""


class Reconciler:
    def __init__(
        self,
        *,
        ledger: Ledger,
        autoscaler: Autoscaler,
        replicas: Replicas,
        parking: Parking,
        standby: Standby,
        lifecycle: ServerLifecycle,
        settler: Settler,
        placer: Placer,
        consolidator: Consolidator,
        settings: Settings,
        clock: Clock,
        lock: asyncio.Lock,
    ) -> None:
        self._ledger = ledger
        self._replicas = replicas
        self._parking = parking
        self._standby = standby
        self._autoscaler = autoscaler
        self._lifecycle = lifecycle
        self._settler = settler
        self._placer = placer
        self._consolidator = consolidator
        self._settings = settings
        self._clock = clock
        self._lock = lock
        # The first consolidation pass is due at once; each pass sets the next.
        self._next_consolidation = clock.now()
        # Activity-renewed leases past their expiry, waiting for a fresh report from their
        # server before ending: the expiry they had, and whether a report was asked for.
        self._idle_checks: dict[LeaseId, tuple[float, bool]] = {}

    def awaits_report(self, server_id: ServerId) -> bool:
        """Whether a lease on the server waits for its next report to end or live on."""
        leases = self._ledger.leases
        return any(
            leases[lease_id].server_id == server_id
            for lease_id in self._idle_checks
            if lease_id in leases
        )

    def _awaits_fresh_activity(self, lease: Lease, now: float) -> bool:
        """Whether an activity-renewed lease due to expire must wait for a fresh report
        (see ACTIVITY_FRESH_S); asks its sidecar for one once the report would be fresh."""
        if not lease.activity_window_s or lease.state is not LeaseState.READY:
            return False
        if lease.server_id is None:
            return False
        due, asked = self._idle_checks.get(lease.id, (lease.expires_at, False))
        reported = self._settler.reported_at.get(lease.server_id, 0.0)
        if reported >= due + ACTIVITY_FRESH_S or now >= due + ACTIVITY_GIVE_UP_S:
            self._idle_checks.pop(lease.id, None)
            return False
        if now >= due + ACTIVITY_FRESH_S and not asked:
            # A new assignment generation wakes the sidecar, which reports at once.
            self._ledger.bump(lease.server_id)
            asked = True
        self._idle_checks[lease.id] = (due, asked)
        return True

    def check_idle(self, now: float, server_id: ServerId | None = None) -> None:
        """Ends the waiting activity-renewed leases (on `server_id`, or all) that a fresh
        report showed idle, and lets those that it (or a renewal) moved live on. Inside a
        change: the reconciler's pass, and a report from a server with such leases."""
        ledger = self._ledger
        for lease_id, (due, _) in list(self._idle_checks.items()):
            lease = ledger.leases.get(lease_id)
            if server_id is not None and lease is not None and lease.server_id != server_id:
                continue
            if lease is None or lease.state is not LeaseState.READY or lease.expires_at > due:
                self._idle_checks.pop(lease_id, None)
                if lease is not None:
                    ledger.index.update(lease)  # back on the expiry heap
                continue
            if not self._awaits_fresh_activity(lease, now):
                self._expire(lease, now)

    def _expire(self, lease: Lease, now: float) -> None:
        self._ledger.set_state(lease, LeaseState.EXPIRED, "not renewed in time", now)
        self._ledger.after_change(lease)
        log.info("lease %s expired", lease.id)

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has something to do."""
        ledger = self._ledger
        servers = self._settings.servers
        expiry = ledger.index.next_expiry()
        deadlines = [] if expiry is None else [expiry]
        for server in ledger.servers.values():
            restart_at = self._lifecycle.restart_at(server)
            if restart_at is not None:
                deadlines.append(restart_at)
            elif server.state is ServerState.STARTING:
                deadlines.append(self._lifecycle.started_at(server) + servers.start_timeout)
            if server.idle_since is not None and not self._kept(server):
                # (An idle server its pool needs for its minimum, or a standby server, has no
                # deadline: it stays.)
                deadlines.append(server.idle_since + servers.idle_grace)
        for due, asked in self._idle_checks.values():
            deadlines.append(due + (ACTIVITY_GIVE_UP_S if asked else ACTIVITY_FRESH_S))
        for move in ledger.moving.moves.values():
            deadlines.append(move.started_at + servers.start_timeout)
        if self._settings.placement.consolidate:
            deadlines.append(self._next_consolidation)
        for upcoming in (
            self._replicas.next_deadline(),
            self._autoscaler.next_deadline(),
            self._parking.next_deadline(),
        ):
            if upcoming is not None:
                deadlines.append(upcoming)
        return min(deadlines, default=None)

    async def tick(self) -> None:
        """One pass over everything time decides (see the module docstring)."""
        ledger = self._ledger
        to_stop: list[Server] = []
        to_start: list[Server] = []
        to_restart: list[Server] = []
        plan: PassPlan | None = None
        async with self._lock:
            now = self._clock.now()
            async with ledger.change():
                while (lease := ledger.index.pop_expired(now)) is not None:
                    if not self._awaits_fresh_activity(lease, now):
                        self._expire(lease, now)
                self.check_idle(now)
                # Idle leases that may park, before the servers: one left empty is idle now.
                self._parking.tick(now)
                for server in list(ledger.servers.values()):
                    if self._lifecycle.restart_at(server) is None:
                        if server.state.alive and self._stop_or_fail(server, now):
                            to_stop.append(server)
                            continue
                    # A restart due now (a first one is due at once) happens in this pass.
                    restart_at = self._lifecycle.restart_at(server)
                    if restart_at is not None and now >= restart_at:
                        to_restart.append(server)
                for pool in ledger.pools.shortfall(ledger.servers):
                    to_start.append(self._lifecycle.new_server(pool.name, pool.tritonserver, now))
                # Standby servers after the pools' minimum, and after the pass has stopped
                # what it stops: a server this pass stopped is replaced.
                to_start.extend(self._standby.shortfall(now))
                # The backend's spare sidecar likewise, once no model loads (the scan only
                # when one was used).
                if self._lifecycle.needs_refill() and not any(
                    lease.state is LeaseState.LOADING for lease in ledger.index.live.values()
                ):
                    self._lifecycle.refill()
                self._consolidator.advance_all(now)
                if self._settings.placement.consolidate and now >= self._next_consolidation:
                    interval = self._settings.placement.consolidate_interval_s
                    self._next_consolidation = now + interval
                    plan = self._consolidator.prepare(now)
                for server in to_stop:
                    ledger.outbox.forget_server(server.id)
            for server in to_restart:
                await self._lifecycle.restart(server)
                if not server.state.alive:
                    to_stop.append(server)
            for server in to_start:
                if await self._lifecycle.start(server):
                    async with ledger.change():
                        ledger.bump(server.id)
            await self._placer.place_pending(sweep=True)
            # Scaling decisions, then replicas follow what their leases want: new ones
            # placed, drained ones unloaded.
            await self._autoscaler.tick()
            await self._replicas.reconcile()
        for server in to_stop:
            await self._lifecycle.stop(server)
        if to_stop:
            async with self._lock:
                await self._placer.place_pending()
        # Lease and name addresses live in the router: a dead one is replaced at once.
        await self._lifecycle.revive_router()
        if plan is not None:
            await self._consolidate(plan)

    async def _consolidate(self, plan: PassPlan) -> None:
        """The rest of a consolidation pass: planned without the lock (on a large fleet a
        plan takes a tenth of a second, which decisions need not wait for), then the moves
        still valid started under it."""
        groups = await self._consolidator.plan(plan)
        if not groups:
            return
        async with self._lock:
            async with self._ledger.change():
                self._consolidator.apply(plan, groups, self._clock.now())

    def _kept(self, server: Server) -> bool:
        """Whether an idle server stays up: its pool's minimum or the standby count needs it."""
        return self._ledger.pools.needs(server, self._ledger.servers) or self._standby.keeps(server)

    def _stop_or_fail(self, server: Server, now: float) -> bool:
        """Fails a dead server, settles a changed one, and marks it STOPPING when it should
        stop (leaking and empty, or idle past the grace). Whether it is to be stopped."""
        ledger = self._ledger
        servers = self._settings.servers
        reason = self._lifecycle.exit_reason(server)
        died = reason is not None
        if (
            reason is None
            and server.state is ServerState.STARTING
            and now - self._lifecycle.started_at(server) > servers.start_timeout
        ):
            reason = f"not ready within {format_duration(servers.start_timeout)}"
        if reason is not None:
            if self._lifecycle.crashed(server, reason, now, died=died):
                return False
            self._lifecycle.give_up(server, reason, now)
            return True
        if server.id in ledger.index.unsettled:
            self._settler.settle(server, now)
        if server.leak and server.idle_since is not None:
            # Empty and leaking: recycle now rather than after the idle grace.
            ledger.server_state(server, ServerState.STOPPING, f"recycled: {server.leak}")
            return True
        if (
            server.idle_since is not None
            and now >= server.idle_since + servers.idle_grace
            and not self._kept(server)
        ):
            ledger.server_state(server, ServerState.STOPPING, "idle")
            return True
        return False

    async def run(self) -> None:
        """The daemon's reconciler loop (run it as a named, guarded task)."""
        changed = self._ledger.outbox.deadlines_changed
        while True:
            changed.clear()
            await self.tick()
            now = self._clock.now()
            deadline = self.next_deadline()
            wake_at = now + HEALTH_INTERVAL_S
            if deadline is not None:
                wake_at = min(deadline, wake_at)
            await self._clock.sleep_until(wake_at, changed)
            # A pass that found work due at once goes again, but never without letting the
            # API and the sidecars in: a deadline that a pass cannot move must not starve them.
            await asyncio.sleep(0)
