"""The reconciler: the part of the manager that owns time.

One pass (`tick`) expires leases, fails servers whose processes died or never became ready,
settles servers whose reports changed, recycles leaking servers, stops idle ones, keeps
pools at their minimum, advances consolidation moves and runs a consolidation pass when one
is due. `run` is the daemon's loop: a pass, then sleep until the next deadline (or a change
that may have moved one), checking process health at least every `HEALTH_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import logging

from tms_core.clock import Clock
from tms_core.config import Settings
from tms_core.domain import LeaseState, Server, ServerState
from tms_core.manager.ledger import Ledger
from tms_core.manager.lifecycle import ServerLifecycle
from tms_core.manager.moves import Consolidator
from tms_core.manager.placing import Placer
from tms_core.manager.settle import Settler
from tms_core.units import format_duration

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.5
"""Process health is checked at least this often, whatever the next deadline."""


class Reconciler:
    def __init__(
        self,
        *,
        ledger: Ledger,
        lifecycle: ServerLifecycle,
        settler: Settler,
        placer: Placer,
        consolidator: Consolidator,
        settings: Settings,
        clock: Clock,
        lock: asyncio.Lock,
    ) -> None:
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._settler = settler
        self._placer = placer
        self._consolidator = consolidator
        self._settings = settings
        self._clock = clock
        self._lock = lock
        # The first consolidation pass is due at once; each pass sets the next.
        self._next_consolidation = clock.now()

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has something to do."""
        ledger = self._ledger
        servers = self._settings.servers
        expiry = ledger.index.next_expiry()
        deadlines = [] if expiry is None else [expiry]
        for server in ledger.servers.values():
            if server.state is ServerState.STARTING:
                deadlines.append(server.created_at + servers.start_timeout)
            if server.idle_since is not None and not ledger.pools.needs(server, ledger.servers):
                # (An idle server its pool needs for its minimum has no deadline: it stays.)
                deadlines.append(server.idle_since + servers.idle_grace)
        for move in ledger.moving.moves.values():
            deadlines.append(move.started_at + servers.start_timeout)
        if self._settings.placement.consolidate:
            deadlines.append(self._next_consolidation)
        return min(deadlines, default=None)

    async def tick(self) -> None:
        """One pass over everything time decides (see the module docstring)."""
        ledger = self._ledger
        to_stop: list[Server] = []
        to_start: list[Server] = []
        async with self._lock:
            now = self._clock.now()
            async with ledger.change():
                while (lease := ledger.index.pop_expired(now)) is not None:
                    ledger.set_state(lease, LeaseState.EXPIRED, "not renewed in time", now)
                    ledger.after_change(lease)
                    log.info("lease %s expired", lease.id)
                for server in list(ledger.servers.values()):
                    if server.state.alive and self._stop_or_fail(server, now):
                        to_stop.append(server)
                for pool in ledger.pools.shortfall(ledger.servers):
                    to_start.append(self._lifecycle.new_server(pool.name, pool.tritonserver, now))
                self._consolidator.advance_all(now)
                if self._settings.placement.consolidate and now >= self._next_consolidation:
                    interval = self._settings.placement.consolidate_interval_s
                    self._next_consolidation = now + interval
                    self._consolidator.run_pass(now)
                for server in to_stop:
                    ledger.outbox.forget_server(server.id)
            for server in to_start:
                if await self._lifecycle.start(server):
                    async with ledger.change():
                        ledger.bump(server.id)
            await self._placer.place_pending(sweep=True)
        for server in to_stop:
            await self._lifecycle.stop(server)
        if to_stop:
            async with self._lock:
                await self._placer.place_pending()

    def _stop_or_fail(self, server: Server, now: float) -> bool:
        """Fails a dead server, settles a changed one, and marks it STOPPING when it should
        stop (leaking and empty, or idle past the grace). Whether it is to be stopped."""
        ledger = self._ledger
        servers = self._settings.servers
        reason = self._lifecycle.exit_reason(server)
        if (
            reason is None
            and server.state is ServerState.STARTING
            and now - server.created_at > servers.start_timeout
        ):
            reason = f"not ready within {format_duration(servers.start_timeout)}"
        if reason is not None:
            self._lifecycle.fail(server, reason, now)
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
            and not ledger.pools.needs(server, ledger.servers)
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
