"""Server lifecycle: new servers, starting, stopping, failing, and adopting what an earlier
daemon left running. The only part of the manager that runs servers through the backend.

Every state change is committed before the backend acts on it (a server is STOPPING in the
store before its processes are signalled), so a daemon that dies in between finishes the job
when it starts again (`recover`).
"""

from __future__ import annotations

import asyncio
import logging

from tms_core import placement
from tms_core.backends.base import Backend
from tms_core.config import Settings
from tms_core.domain import LeaseState, Server, ServerState
from tms_core.ids import new_server_id
from tms_core.manager.ledger import Ledger
from tms_core.manager.views import FleetViews

log = logging.getLogger(__name__)


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
            servers = list(ledger.servers.values())
            async with ledger.change():
                for server in servers:
                    if server.state.alive:
                        ledger.server_state(server, ServerState.STOPPING, "daemon shut down")
        await asyncio.gather(*(self.stop(s) for s in servers))
