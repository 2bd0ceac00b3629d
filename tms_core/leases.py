"""The lease manager: the lease state machine and the servers that hold leases.

States: PENDING → LOADING → READY → RELEASING → RELEASED, and EXPIRED or FAILED (with a
reason). Every change is committed to the store first and applied in memory after, so what a
caller sees has always reached the disk. Decisions are serialised by one lock; the processes
themselves are started and stopped by the backend, and models are loaded by each server's
sidecar, which this manager feeds with assignments and hears from through reports.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tms_core import placement
from tms_core.backends.base import Backend
from tms_core.clock import Clock
from tms_core.config import Settings
from tms_core.domain import (
    Lease,
    LeaseModel,
    LeaseState,
    ModelState,
    ServedModel,
    Server,
    ServerState,
)
from tms_core.errors import CapacityExceeded, InvalidArgument, LeaseEnded, LeaseNotFound
from tms_core.ids import LeaseId, ModelName, ServerId, new_lease_id, new_server_id
from tms_core.store import Store, Transaction
from tms_core.units import format_duration

log = logging.getLogger(__name__)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class ModelRequest:
    name: str
    uri: str
    memory_bytes: int = 0


@dataclass(frozen=True)
class Assignment:
    generation: int
    models: list[tuple[ModelName, str]]


class _Signal:
    """A broadcast 'something changed' that waiters can await without missing a change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event


class LeaseManager:
    def __init__(
        self,
        *,
        store: Store,
        backend: Backend,
        clock: Clock,
        settings: Settings,
        check_model: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._backend = backend
        self._clock = clock
        self._settings = settings
        self._check_model = check_model
        self._lock = asyncio.Lock()
        self.leases: dict[LeaseId, Lease] = {}
        self.servers: dict[ServerId, Server] = {}
        self._lease_changed: dict[LeaseId, _Signal] = {}
        self._assignment_changed: dict[ServerId, _Signal] = {}
        self._generations: dict[ServerId, int] = {}
        # Woken whenever a deadline (expiry, idle grace, start timeout) may have moved.
        self.deadlines_changed = asyncio.Event()

    # ------------------------------------------------------------------ start-up

    async def recover(self) -> None:
        """Loads the state and makes it true again after a restart (or a crash)."""
        leases, servers = await self._store.load()
        self.leases = {lease.id: lease for lease in leases}
        now = self._clock.now()
        async with self._lock, self._tx() as tx:
            for server in servers:
                if not server.state.alive:
                    continue
                if self._backend.adopt(server):
                    log.info("adopting server %s (pid %s)", server.id, server.pid)
                    server.triton_ready = False
                    self.servers[server.id] = server
                    await tx.put_server(server)
                    continue
                log.info("server %s is gone; cleaning up after it", server.id)
                await self._backend.stop(server)
                server.state = ServerState.STOPPED
                server.reason = "not running when the daemon started"
                await tx.put_server(server)
            for lease in self.leases.values():
                if lease.state.ended:
                    continue
                held = lease.server_id in self.servers
                if lease.state is LeaseState.RELEASING and not held:
                    self._set_state(lease, LeaseState.RELEASED, "", now)
                elif lease.expires_at <= now and lease.state is not LeaseState.RELEASING:
                    self._set_state(
                        lease, LeaseState.EXPIRED, "expired while the daemon was down", now
                    )
                elif lease.state.holds_models and not held:
                    lease.server_id = None
                    for model in lease.models:
                        model.state, model.error = ModelState.PENDING, ""
                    self._set_state(
                        lease,
                        LeaseState.PENDING,
                        "its server was gone when the daemon started",
                        now,
                    )
                else:
                    continue
                await tx.put_lease(lease)
        async with self._lock:
            await self._place_pending()
        self.deadlines_changed.set()

    # ------------------------------------------------------------------ lease API

    async def acquire(
        self, models: Sequence[ModelRequest], *, name: str = "", duration_s: float = 0.0
    ) -> Lease:
        self._validate(models, name)
        duration = self._duration(duration_s, "duration")
        now = self._clock.now()
        lease = Lease(
            id=new_lease_id(),
            name=name,
            state=LeaseState.PENDING,
            models=[
                LeaseModel(name=ModelName(m.name), uri=m.uri, memory_bytes=m.memory_bytes)
                for m in models
            ],
            duration_s=duration,
            created_at=now,
            expires_at=now + duration,
            updated_at=now,
        )
        async with self._lock:
            decision = self._decide(lease)
            if isinstance(decision, placement.Reject):
                raise CapacityExceeded(decision.reason)
            self.leases[lease.id] = lease
            await self._apply_decision(lease, decision)
        self.deadlines_changed.set()
        log.info("lease %s acquired: %s", lease.id, lease.state)
        return self.snapshot(lease.id)

    async def renew(self, lease_id: str, duration_s: float = 0.0) -> Lease:
        async with self._lock:
            lease = self._get(lease_id)
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                raise LeaseEnded(f"lease {lease_id} is {lease.state.value} and cannot be renewed")
            duration = self._duration(duration_s or lease.duration_s, "duration")
            now = self._clock.now()
            async with self._tx() as tx:
                lease.expires_at = max(lease.expires_at, now + duration)
                lease.updated_at = now
                await tx.put_lease(lease)
            self._notify_lease(lease)
        self.deadlines_changed.set()
        return self.snapshot(lease.id)

    async def release(self, lease_id: str) -> Lease:
        async with self._lock:
            lease = self._get(lease_id)
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                return self.snapshot(lease.id)
            now = self._clock.now()
            async with self._tx() as tx:
                if lease.state is LeaseState.PENDING:
                    self._set_state(lease, LeaseState.RELEASED, "", now)
                else:
                    self._set_state(lease, LeaseState.RELEASING, "", now)
                await tx.put_lease(lease)
                if lease.server_id:
                    await self._settle_server(tx, self.servers[lease.server_id], now)
            self._after_change(lease)
            await self._place_pending()
        return self.snapshot(lease.id)

    def snapshot(self, lease_id: str) -> Lease:
        return copy.deepcopy(self._get(lease_id))

    def list_leases(self, *, include_ended: bool = False) -> list[Lease]:
        return [
            copy.deepcopy(lease)
            for lease in self.leases.values()
            if include_ended or not lease.state.ended
        ]

    async def follow(
        self, lease_id: str, *, until: Callable[[Lease], bool] | None = None
    ) -> AsyncIterator[Lease]:
        """The lease now and after each change, until it has ended (or `until` holds)."""
        stop = until or (lambda lease: lease.state.ended)
        while True:
            lease = self.snapshot(lease_id)
            if stop(lease) or lease.state.ended:
                yield lease
                return
            changed = self._lease_changed.setdefault(lease.id, _Signal()).waiter()
            yield lease
            await changed.wait()

    def server_of(self, lease: Lease) -> Server | None:
        return self.servers.get(lease.server_id) if lease.server_id else None

    # ------------------------------------------------------------------ sidecar API

    def has_server(self, server_id: str) -> bool:
        return server_id in self.servers

    async def assignments(self, server_id: str) -> AsyncIterator[Assignment]:
        """The models a server should hold: now, then after every change, while it lives."""
        sid = ServerId(server_id)
        signal = self._assignment_changed.setdefault(sid, _Signal())
        while sid in self.servers and self.servers[sid].state.alive:
            changed = signal.waiter()
            yield Assignment(self._generations.get(sid, 0), self._desired(self.servers[sid]))
            await changed.wait()

    async def report(
        self, server_id: str, *, triton_ready: bool, models: Iterable[ServedModel]
    ) -> None:
        async with self._lock:
            server = self.servers.get(ServerId(server_id))
            if server is None or not server.state.alive:
                return
            now = self._clock.now()
            server.models = {m.name: m for m in models}
            server.triton_ready = triton_ready
            async with self._tx() as tx:
                if triton_ready and server.state is ServerState.STARTING:
                    server.state = ServerState.RUNNING
                    await tx.put_server(server)
                    log.info("server %s is ready", server.id)
                await self._settle_server(tx, server, now)
            # A lease that ended here may have made room for one that waits.
            await self._place_pending()

    # ------------------------------------------------------------------ reconciler hooks

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has something to do."""
        deadlines = [
            lease.expires_at
            for lease in self.leases.values()
            if not lease.state.ended and lease.state is not LeaseState.RELEASING
        ]
        for server in self.servers.values():
            if server.state is ServerState.STARTING:
                deadlines.append(server.created_at + self._settings.local.start_timeout)
            if server.idle_since is not None:
                deadlines.append(server.idle_since + self._settings.local.idle_grace)
        return min(deadlines, default=None)

    async def tick(self) -> None:
        """Expires leases, stops idle servers and fails servers that died or never started."""
        to_stop: list[Server] = []
        async with self._lock:
            now = self._clock.now()
            async with self._tx() as tx:
                for lease in list(self.leases.values()):
                    if (
                        not lease.state.ended
                        and lease.state is not LeaseState.RELEASING
                        and lease.expires_at <= now
                    ):
                        self._set_state(lease, LeaseState.EXPIRED, "not renewed in time", now)
                        await tx.put_lease(lease)
                        self._after_change(lease)
                        log.info("lease %s expired", lease.id)
                for server in list(self.servers.values()):
                    if not server.state.alive:
                        continue
                    reason = self._backend.exit_reason(server)
                    if (
                        reason is None
                        and server.state is ServerState.STARTING
                        and (now - server.created_at > self._settings.local.start_timeout)
                    ):
                        limit = format_duration(self._settings.local.start_timeout)
                        reason = f"not ready within {limit}"
                    if reason is not None:
                        await self._fail_server(tx, server, reason, now)
                        to_stop.append(server)
                        continue
                    await self._settle_server(tx, server, now)
                    if (
                        server.idle_since is not None
                        and now >= server.idle_since + self._settings.local.idle_grace
                    ):
                        server.state = ServerState.STOPPING
                        server.reason = "idle"
                        await tx.put_server(server)
                        to_stop.append(server)
            for server in to_stop:
                self._assignment_signal(server.id).fire()
            await self._place_pending()
        for server in to_stop:
            await self._stop_server(server)
        if to_stop:
            async with self._lock:
                await self._place_pending()

    async def shutdown(self, *, leave_serving: bool) -> None:
        if leave_serving:
            return
        async with self._lock:
            servers = [s for s in self.servers.values() if s.state.alive]
            async with self._tx() as tx:
                for server in servers:
                    server.state = ServerState.STOPPING
                    server.reason = "daemon shut down"
                    await tx.put_server(server)
        await asyncio.gather(*(self._stop_server(s) for s in servers))

    # ------------------------------------------------------------------ internals

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Transaction]:
        """A store transaction; if it fails, memory goes back to what the store holds.

        Changes are made to the working state as they are written, so a failed commit
        (disk full, a constraint) must not leave memory ahead of the disk.
        """
        try:
            async with self._store.transaction() as tx:
                yield tx
        except BaseException:
            await self._reload()
            raise

    async def _reload(self) -> None:
        leases, servers = await self._store.load()
        self.leases = {lease.id: lease for lease in leases}
        live: dict[ServerId, Server] = {}
        for server in servers:
            if not server.state.alive:
                continue
            current = self.servers.get(server.id)
            if current is not None:
                # What the sidecar reported is not stored: it is reported again anyway.
                server.models, server.triton_ready = current.models, current.triton_ready
            live[server.id] = server
        self.servers = live
        log.warning("a state change failed to commit; working state reloaded from the store")

    def _validate(self, models: Sequence[ModelRequest], name: str) -> None:
        if not models:
            raise InvalidArgument("models", "a lease needs at least one model")
        if name and not DNS1123_LABEL.match(name):
            raise InvalidArgument(
                "name",
                f"{name!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters)",
            )
        seen: set[str] = set()
        for i, model in enumerate(models):
            field = f"models[{i}]"
            if not MODEL_NAME.match(model.name):
                raise InvalidArgument(
                    f"{field}.name",
                    f"{model.name!r} is not a Triton model name (letters, digits, '_', '.', '-')",
                )
            if model.name in seen:
                raise InvalidArgument(f"{field}.name", f"{model.name!r} appears twice in the lease")
            seen.add(model.name)
            if not model.uri:
                raise InvalidArgument(
                    f"{field}.uri", "is empty; expected a URI such as file:///models/x"
                )
            if model.memory_bytes < 0:
                raise InvalidArgument(f"{field}.memory", "must not be negative")
            if self._check_model is not None:
                self._check_model(field, model.name, model.uri)

    def _duration(self, seconds: float, field: str) -> float:
        if seconds < 0:
            raise InvalidArgument(field, "must not be negative")
        if not math.isfinite(seconds):
            raise InvalidArgument(field, f"{seconds} is not a duration; expected finite seconds")
        duration = seconds or self._settings.lease.default_duration
        cap = self._settings.lease.max_duration
        if duration > cap:
            raise InvalidArgument(
                field,
                f"{format_duration(duration)} is over the maximum of {format_duration(cap)} "
                "(lease.max_duration)",
            )
        return duration

    def _get(self, lease_id: str) -> Lease:
        lease = self.leases.get(LeaseId(lease_id))
        if lease is None:
            raise LeaseNotFound(lease_id)
        return lease

    def _holders(self, server: Server) -> list[Lease]:
        return [
            lease
            for lease in self.leases.values()
            if lease.server_id == server.id and lease.state.holds_models
        ]

    def _desired(self, server: Server) -> list[tuple[ModelName, str]]:
        wanted: dict[ModelName, str] = {}
        for lease in self._holders(server):
            for model in lease.models:
                wanted.setdefault(model.name, model.uri)
        return sorted(wanted.items())

    def _views(self) -> list[placement.ServerView]:
        views = []
        for server in self.servers.values():
            if not server.state.alive:
                continue
            holders = [
                lease
                for lease in self.leases.values()
                if lease.server_id == server.id and not lease.state.ended
            ]
            views.append(
                placement.ServerView(
                    id=server.id,
                    capacity_bytes=server.capacity_bytes,
                    used_bytes=sum(lease.memory_bytes for lease in holders),
                    models={str(m.name): m.uri for lease in holders for m in lease.models}
                    | {str(name): served.uri for name, served in server.models.items()},
                )
            )
        return views

    def _decide(self, lease: Lease) -> placement.Decision:
        return placement.place(
            [placement.ModelNeed(m.name, m.uri, m.memory_bytes) for m in lease.models],
            self._views(),
            server_capacity=self._settings.local.server_memory,
            max_servers=self._settings.local.max_servers,
        )

    async def _apply_decision(self, lease: Lease, decision: placement.Decision) -> None:
        """Commits the decision for `lease`, then acts on it. Caller holds the lock."""
        now = self._clock.now()
        new_server: Server | None = None
        async with self._tx() as tx:
            if isinstance(decision, placement.Wait | placement.Reject):
                self._set_state(lease, LeaseState.PENDING, decision.reason, now)
            else:
                if isinstance(decision, placement.StartServer):
                    new_server = self._backend.new_server(
                        new_server_id(),
                        capacity_bytes=self._settings.local.server_memory,
                        now=now,
                    )
                    await tx.put_server(new_server)
                    self.servers[new_server.id] = new_server
                lease.server_id = new_server.id if new_server else placement_server(decision)
                self._set_state(lease, LeaseState.LOADING, "", now)
                server = self.servers[lease.server_id]
                server.idle_since = None
                await tx.put_server(server)
                self._sync_models(lease, server)
            await tx.put_lease(lease)
        self._notify_lease(lease)
        if new_server is not None:
            await self._start_server(new_server)
        if lease.server_id in self.servers and lease.server_id is not None:
            self._bump_assignment(lease.server_id)
            # Joining a server that already holds every model makes the lease READY at once.
            async with self._tx() as tx:
                await self._settle_server(tx, self.servers[lease.server_id], now)

    async def _start_server(self, server: Server) -> None:
        try:
            await self._backend.start(server)
        except OSError as exc:
            async with self._tx() as tx:
                await self._fail_server(
                    tx, server, f"could not start tritonserver: {exc}", self._clock.now()
                )
            # Whatever did start (tritonserver before a failed sidecar) must not linger.
            await self._backend.stop(server)
            self.servers.pop(server.id, None)
            return
        async with self._tx() as tx:
            await tx.put_server(server)

    async def _stop_server(self, server: Server) -> None:
        await self._backend.stop(server)
        async with self._lock:
            async with self._tx() as tx:
                if server.state is not ServerState.FAILED:
                    server.state = ServerState.STOPPED
                await tx.put_server(server)
            self.servers.pop(server.id, None)
            self._assignment_changed.pop(server.id, None)
            self._generations.pop(server.id, None)
            # Leases still releasing on a stopped server have nothing left to unload.
            now = self._clock.now()
            async with self._tx() as tx:
                for lease in self.leases.values():
                    if lease.server_id == server.id and lease.state is LeaseState.RELEASING:
                        self._set_state(lease, LeaseState.RELEASED, "", now)
                        await tx.put_lease(lease)
                        self._notify_lease(lease)
        log.info("server %s stopped (%s)", server.id, server.reason or "stopped")

    async def _fail_server(self, tx: Transaction, server: Server, reason: str, now: float) -> None:
        log.warning("server %s failed: %s", server.id, reason)
        server.state = ServerState.FAILED
        server.reason = reason
        await tx.put_server(server)
        for lease in self.leases.values():
            if lease.server_id != server.id or lease.state.ended:
                continue
            if lease.state is LeaseState.RELEASING:
                self._set_state(lease, LeaseState.RELEASED, "", now)
            else:
                self._set_state(lease, LeaseState.FAILED, f"server {server.id}: {reason}", now)
            await tx.put_lease(lease)
            self._notify_lease(lease)

    async def _settle_server(self, tx: Transaction, server: Server, now: float) -> None:
        """Moves the server's leases along after its models changed. Caller holds the lock."""
        failed_any = False
        for lease in list(self.leases.values()):
            if lease.server_id != server.id or lease.state.ended:
                continue
            before = (lease.state, [(m.state, m.error) for m in lease.models])
            if lease.state is LeaseState.LOADING:
                self._sync_models(lease, server)
                failed = [m for m in lease.models if m.state is ModelState.FAILED]
                if failed:
                    model = failed[0]
                    self._set_state(
                        lease, LeaseState.FAILED, f"model {model.name!r}: {model.error}", now
                    )
                    failed_any = True
                elif server.triton_ready and all(m.state is ModelState.READY for m in lease.models):
                    self._set_state(lease, LeaseState.READY, "", now)
                    # The duration counts from READY: loading time is not the holder's to pay.
                    # A renewal made while loading may already reach further.
                    lease.expires_at = max(lease.expires_at, now + lease.duration_s)
            elif lease.state is LeaseState.READY:
                self._sync_models(lease, server)
            elif lease.state is LeaseState.RELEASING:
                self._sync_models(lease, server)
                still_wanted = {name for name, _ in self._desired(server)}
                # A model missing from the reports is gone only once the sidecar has spoken
                # since this daemon took the server over (an adopted server starts silent).
                if server.triton_ready and all(
                    m.name in still_wanted
                    or m.name not in server.models
                    or server.models[m.name].state is ModelState.UNLOADED
                    for m in lease.models
                ):
                    self._set_state(lease, LeaseState.RELEASED, "", now)
            if (lease.state, [(m.state, m.error) for m in lease.models]) != before:
                await tx.put_lease(lease)
                self._after_change(lease)
        if failed_any:
            self._bump_assignment(server.id)
        if server.state is ServerState.RUNNING or server.state is ServerState.STARTING:
            busy = any(
                lease.server_id == server.id and not lease.state.ended
                for lease in self.leases.values()
            )
            if busy and server.idle_since is not None:
                server.idle_since = None
                await tx.put_server(server)
            elif not busy and server.idle_since is None:
                server.idle_since = now
                await tx.put_server(server)
                self.deadlines_changed.set()

    def _sync_models(self, lease: Lease, server: Server) -> None:
        for model in lease.models:
            served = server.models.get(model.name)
            if served is None or served.uri != model.uri:
                if model.state is not ModelState.FAILED:
                    model.state = (
                        ModelState.UNLOADED
                        if lease.state is LeaseState.RELEASING
                        and model.state is not ModelState.PENDING
                        else ModelState.PENDING
                    )
                continue
            model.state, model.error = served.state, served.error
            if served.load_s:
                model.load_s = served.load_s

    async def _place_pending(self) -> None:
        """Tries the waiting leases again, oldest first. Caller holds the lock."""
        for lease in sorted(self.leases.values(), key=lambda lease: lease.created_at):
            if lease.state is not LeaseState.PENDING:
                continue
            decision = self._decide(lease)
            if isinstance(decision, placement.JoinServer | placement.StartServer):
                await self._apply_decision(lease, decision)

    def _set_state(self, lease: Lease, state: LeaseState, reason: str, now: float) -> None:
        lease.state = state
        lease.reason = reason
        lease.updated_at = now

    def _after_change(self, lease: Lease) -> None:
        self._notify_lease(lease)
        if lease.server_id:
            self._bump_assignment(lease.server_id)
        self.deadlines_changed.set()

    def _notify_lease(self, lease: Lease) -> None:
        # An ended lease changes no more: its followers get this last word and the signal goes.
        signal = (
            self._lease_changed.pop(lease.id, None)
            if lease.state.ended
            else self._lease_changed.get(lease.id)
        )
        if signal is not None:
            signal.fire()

    def _assignment_signal(self, server_id: ServerId) -> _Signal:
        return self._assignment_changed.setdefault(server_id, _Signal())

    def _bump_assignment(self, server_id: ServerId) -> None:
        self._generations[server_id] = self._generations.get(server_id, 0) + 1
        self._assignment_signal(server_id).fire()


def placement_server(decision: placement.Decision) -> ServerId:
    assert isinstance(decision, placement.JoinServer)
    return decision.server_id
