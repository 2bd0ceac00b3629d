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
import dataclasses
import heapq
import logging
import math
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from tms_core import consolidation, placement
from tms_core.backends.base import Backend
from tms_core.clock import Clock
from tms_core.config import Settings
from tms_core.domain import (
    Lease,
    LeaseAutoscale,
    LeaseConstraints,
    LeaseModel,
    LeaseNameRecord,
    LeaseState,
    ModelState,
    Pool,
    ServedModel,
    Server,
    ServerState,
)
from tms_core.errors import (
    AlreadyExists,
    CapacityExceeded,
    InvalidArgument,
    LeaseEnded,
    LeaseNotFound,
    NameNotFound,
    PoolInUse,
    PoolNotFound,
)
from tms_core.events import EventLog
from tms_core.ids import LeaseId, ModelName, ServerId, new_lease_id, new_server_id
from tms_core.inventory import Node
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.router.routes import Route
from tms_core.routing import compute_routes
from tms_core.store.protocol import StateStore, StateTransaction
from tms_core.units import format_duration, format_size

log = logging.getLogger(__name__)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$")
LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?$")


def check_dns_label(field: str, value: str) -> None:
    """Lease names and pool names become Kubernetes object names: DNS-1123 labels."""
    if not DNS1123_LABEL.match(value):
        raise InvalidArgument(
            field,
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
        )


@dataclass(frozen=True)
class PublishedState:
    """The live leases, the names and the servers, as just committed (read, never change)."""

    leases: Mapping[LeaseId, Lease]
    names: Mapping[str, LeaseNameRecord]
    servers: Mapping[ServerId, Server]


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


@dataclass
class _ServerLoad:
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


@dataclass
class _MoveState:
    """A consolidation move under way: the lease loads on `target` while `source` serves."""

    source: ServerId
    target: ServerId
    started_at: float


def _count(counts: dict[Any, int], key: Any, sign: int) -> None:
    value = counts.get(key, 0) + sign
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


class LeaseManager:
    def __init__(
        self,
        *,
        store: StateStore,
        backend: Backend,
        clock: Clock,
        settings: Settings,
        check_model: Callable[[str, str, str], str | None] | None = None,
        check_tritonserver: Callable[[str], None] | None = None,
        default_tritonserver: str = "",
        publish_routes: Callable[[list[Route]], None] | None = None,
        allocate_ports: Callable[[int], list[int]] | None = None,
        events: EventLog | None = None,
        nodes: Sequence[Node] = (),
        routes_settled: Callable[[], Awaitable[None]] | None = None,
        assignment_changed: Callable[[ServerId], None] | None = None,
        check_autoscale: Callable[[], None] | None = None,
        publish_state: Callable[[PublishedState], None] | None = None,
        service_host: Callable[[str], str] | None = None,
    ) -> None:
        # What placement may start servers on: the local backend's one node, or the nodes a
        # cluster backend (Kubernetes, the simulator) reports, replaced through `set_nodes`.
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self._nodes_by_name = {node.name: node for node in self.nodes}
        # Told which server's assignment changed: how a backend without sidecar processes
        # (the simulator) learns what to load, where a sidecar would watch `assignments`.
        self._assignment_hook = assignment_changed
        # Backends that cannot autoscale refuse such leases here (InvalidArgument).
        self._check_autoscale = check_autoscale
        # Whoever serves stable addresses from the whole state (Kubernetes Services) hears of
        # every commit, as the router hears of its routes.
        self._publish_state = publish_state
        self.service_host = service_host or (lambda _key: "127.0.0.1")
        self._routes_settled = routes_settled
        self._store = store
        self._backend = backend
        self._clock = clock
        self._settings = settings
        self._check_model = check_model
        self._check_tritonserver = check_tritonserver
        self.default_tritonserver = default_tritonserver
        self._publish_routes = publish_routes
        self._allocate_ports = allocate_ports or (lambda n: [0] * n)
        self.events = events or EventLog(clock)
        self.names: dict[str, LeaseNameRecord] = {}
        # Leases whose state changed since the last commit: names follow them in that commit.
        self._touched: set[LeaseId] = set()
        # Signals raised while a transaction is open wait for its commit (see `_tx`).
        self._in_tx = False
        self._held_signals: list[_Signal] = []
        self.pools: dict[str, Pool] = {}
        self.allowlist: list[str] = []
        # (model name, uri) -> the most memory it was measured to take, on any server.
        self.measured: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()
        self.leases: dict[LeaseId, Lease] = {}
        # The leases that have not ended: what every per-server operation looks through,
        # however long the history grows. Kept by `_set_state`, the one place states change.
        self._live: dict[LeaseId, Lease] = {}
        # The live leases of each server, and those that wait: kept with `_live` (and by
        # `_move`, the one place a lease changes server), so that per-server operations and
        # retries cost what that server or the queue holds, not what the fleet holds.
        self._loads: dict[ServerId, _ServerLoad] = {}
        # (expiry, lease) for every live lease: what `tick` expires without reading them all.
        self._expiries: list[tuple[float, LeaseId]] = []
        # What each live lease on a server counts in its load: (server, READY, holds models).
        self._placed: dict[LeaseId, tuple[ServerId, bool, bool]] = {}
        # Models whose reported state changed since the server was last settled.
        self._model_changes: dict[ServerId, set[ModelName]] = {}
        self._pending: dict[LeaseId, Lease] = {}
        # The fleet as placement reads it, kept current server by server: a change marks its
        # server dirty (`_touch`), and the next decision refreshes only those. None: rebuild
        # it whole (after a change that reaches every server: nodes, pools, names, measures).
        self._fleet: placement.FleetIndex | None = None
        self._fleet_dirty: set[ServerId] = set()
        # Servers changed since they were last settled: the only ones `tick` settles (a
        # settled server whose leases and reports did not change has nothing to move).
        self._unsettled: set[ServerId] = set()
        # (node, GPU index) -> server -> the memory it takes there; and each server's part.
        self._gpu_shares: dict[tuple[str, int], dict[ServerId, float]] = {}
        self._shares_of: dict[ServerId, list[tuple[str, int]]] = {}
        self.servers: dict[ServerId, Server] = {}
        self._lease_changed: dict[LeaseId, _Signal] = {}
        # When each lease's last RENEWED event was emitted (activity renewals are thinned).
        self._renew_announced: dict[LeaseId, float] = {}
        self._assignment_changed: dict[ServerId, _Signal] = {}
        self._generations: dict[ServerId, int] = {}
        # Consolidation moves under way, by lease, and the leases loading on each target.
        # Kept in memory only: a restart abandons them, and the settle then unloads what no
        # lease wants. Sources being emptied take no new lease.
        self._moves: dict[LeaseId, _MoveState] = {}
        self._incoming: dict[ServerId, dict[LeaseId, Lease]] = {}
        self._draining: dict[ServerId, int] = {}
        self._next_consolidation: float | None = None
        self.moves_done = 0
        """Leases moved by consolidation since start-up."""
        self.move_reloads = 0
        """Models loaded on a target because of a move (the cost consolidation pays)."""
        # Woken whenever a deadline (expiry, idle grace, start timeout) may have moved.
        self.deadlines_changed = asyncio.Event()

    # ------------------------------------------------------------------ start-up

    async def _load_stored(self) -> list[Server]:
        """Takes leases, names, pools, the allowlist and measurements from the store;
        returns the stored servers for the caller to reconcile."""
        leases, servers = await self._store.load()
        extras = await self._store.load_extras()
        self.leases = {lease.id: lease for lease in leases}
        self._live = {}
        self._loads = {}
        self._placed = {}
        self._expiries = []
        self._pending = {}
        self._fleet = None
        for lease in leases:
            if not lease.state.ended:
                self._index_lease(lease)
        self.names = {record.name: record for record in extras.names}
        self.pools = {pool.name: pool for pool in extras.pools}
        self.allowlist = extras.allowlist
        self.measured = extras.measured
        return servers

    async def recover(self) -> None:
        """Loads the state and makes it true again after a restart (or a crash)."""
        servers = await self._load_stored()
        now = self._clock.now()
        async with self._lock, self._tx() as tx:
            if not self.allowlist and self.default_tritonserver:
                # The allowlist starts with the configured Triton, as TMS's did.
                await tx.allow(self.default_tritonserver, now)
                self.allowlist = [self.default_tritonserver]
            for server in servers:
                if not server.state.alive:
                    if server.state is ServerState.STOPPING or (
                        server.state is ServerState.FAILED
                        and self._backend.exit_reason(server) is None
                    ):
                        # A stop the last daemon began but did not see through.
                        await self._backend.stop(server)
                    if server.state is ServerState.STOPPING:
                        self._server_state(server, ServerState.STOPPED, server.reason)
                        await tx.put_server(server)
                    continue
                if self._backend.adopt(server):
                    log.info("adopting server %s (pid %s)", server.id, server.pid)
                    server.triton_ready = False
                    self.servers[server.id] = server
                    self._touch(server.id)
                    await tx.put_server(server)
                    continue
                log.info("server %s is gone; cleaning up after it", server.id)
                await self._backend.stop(server)
                self._server_state(
                    server, ServerState.STOPPED, "not running when the daemon started"
                )
                await tx.put_server(server)
            for lease in self._live_leases():
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
                    self._move(lease, None)
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
            self._routes_changed()
        self.deadlines_changed.set()

    async def set_nodes(self, nodes: Sequence[Node]) -> None:
        """Replaces the nodes placement may use (a cluster backend calls this as its nodes
        come and go). Servers on a node no longer listed keep their leases but take no new
        ones; leases that wait are placed again, as the new nodes may have room."""
        async with self._lock:
            self.nodes = tuple(nodes)
            self._nodes_by_name = {node.name: node for node in self.nodes}
            self._fleet = None
            await self._place_pending()
        self.deadlines_changed.set()

    # ------------------------------------------------------------------ lease API

    async def acquire(
        self, models: Sequence[ModelRequest], options: LeaseOptions | None = None
    ) -> Lease:
        """Creates and places a lease of `models`, as `options` ask (None: every default)."""
        lease = self._new_lease(models, options or LeaseOptions(), allocate=True)
        now = lease.created_at
        name = lease.name
        async with self._lock:
            decision = self._decide(lease)
            if isinstance(decision, placement.Reject):
                raise CapacityExceeded(decision.reason)
            self.leases[lease.id] = lease
            if isinstance(decision, placement.Wait):
                decision = await self._preempt(lease) or decision
            self._set_state(lease, LeaseState.PENDING, "", now)
            if name:
                async with self._tx() as tx:
                    await tx.put_lease(lease)
                    await self._point_name(tx, name, lease, now)
            await self._apply_decision(lease, decision)
        self.deadlines_changed.set()
        log.info("lease %s acquired: %s", lease.id, lease.state)
        return self.snapshot(lease.id)

    async def plan(
        self, models: Sequence[ModelRequest], options: LeaseOptions | None = None
    ) -> placement.Decision:
        """What `acquire` would decide now, and why, changing nothing (`--dry-run`)."""
        lease = self._new_lease(models, options or LeaseOptions(), allocate=False)
        async with self._lock:
            return self._decide(lease)

    def _new_lease(
        self, models: Sequence[ModelRequest], options: LeaseOptions, *, allocate: bool
    ) -> Lease:
        """A validated lease, not yet placed or stored."""
        self._validate(models, options.name)
        duration = self._duration(options.duration_s, "duration")
        if options.activity_window_s:
            self._duration(options.activity_window_s, "activity_window")
        pool, quota = options.pool, options.quota
        if pool:
            if pool not in self.pools:
                known = ", ".join(sorted(self.pools)) or "none"
                raise InvalidArgument("pool", f"no pool named {pool!r} (pools: {known})")
            if quota <= 0:
                raise InvalidArgument("quota", "a pool lease needs a quota of at least 1")
            if options.tritonserver:
                raise InvalidArgument("tritonserver", "a pool lease runs on its pool's Triton")
            binary = self.pools[pool].tritonserver
        else:
            if quota:
                raise InvalidArgument("quota", "only pool leases (--pool) take a quota")
            binary = self._allowed(options.tritonserver, "tritonserver")
        constraints = self._constraints(options)
        autoscale = self._autoscale(options)
        if autoscale is not None:
            # An autoscaled server's replicas serve this lease alone (TMS: bespoke only).
            constraints.exclusive = True
        for key, value in {**options.labels, **options.node_selector}.items():
            if not LABEL.match(key) or not LABEL.match(value):
                raise InvalidArgument(
                    "labels", f"{key}={value} is not a label (letters, digits, '-', '_', '.')"
                )
        frameworks = self._frameworks(models)
        now = self._clock.now()
        http_port, grpc_port = self._allocate_ports(2) if allocate else (0, 0)
        return Lease(
            id=new_lease_id(),
            name=options.name,
            state=LeaseState.PENDING,
            models=[
                LeaseModel(
                    name=ModelName(m.name),
                    uri=m.uri,
                    memory_bytes=m.memory_bytes,
                    framework=framework,
                )
                for m, framework in zip(models, frameworks, strict=True)
            ],
            duration_s=duration,
            created_at=now,
            expires_at=now + duration,
            updated_at=now,
            activity_window_s=options.activity_window_s,
            pool=pool,
            quota=quota,
            tritonserver=binary,
            http_port=http_port,
            grpc_port=grpc_port,
            constraints=constraints,
            labels=dict(options.labels),
            priority=options.priority,
            autoscale=autoscale,
        )

    def _autoscale(self, options: LeaseOptions) -> LeaseAutoscale | None:
        wanted = options.autoscale
        if wanted is None:
            return None
        if self._check_autoscale is not None:
            self._check_autoscale()
        if options.pool:
            raise InvalidArgument("autoscale", "pool leases do not autoscale; only bespoke ones do")
        if wanted.min_replicas < 1:
            raise InvalidArgument("autoscale.min_replicas", "must be at least 1")
        if wanted.max_replicas < wanted.min_replicas:
            raise InvalidArgument(
                "autoscale.max_replicas", f"must be at least min_replicas ({wanted.min_replicas})"
            )
        if not METRIC.match(wanted.metric):
            raise InvalidArgument(
                "autoscale.metric",
                f"{wanted.metric!r} is not a metric name (letters, digits and '_', such as "
                "nv_inference_queue_duration_ms)",
            )
        if not (math.isfinite(wanted.target) and wanted.target > 0):
            raise InvalidArgument("autoscale.target", "must be a number above 0")
        return copy.copy(wanted)

    def _constraints(self, options: LeaseOptions) -> LeaseConstraints:
        gpus = options.gpus
        if gpus is None:
            # On a machine with GPUs, a lease runs on one unless it asks otherwise.
            gpus = 1 if any(node.gpus for node in self.nodes) else 0
        if gpus < 0:
            raise InvalidArgument("gpus", "must be 0 (CPU) or more")
        if options.pool and gpus and not options.gpus:
            gpus = 0
        return LeaseConstraints(
            gpus=gpus,
            gpu_product=options.gpu_product,
            node_selector=dict(options.node_selector),
            exclusive=options.exclusive,
            colocate_with=list(options.colocate_with),
            avoid=list(options.avoid),
        )

    def _frameworks(self, models: Sequence[ModelRequest]) -> list[str]:
        frameworks = []
        for i, model in enumerate(models):
            framework = (
                self._check_model(f"models[{i}]", model.name, model.uri)
                if self._check_model is not None
                else None
            )
            frameworks.append(framework or "")
        return frameworks

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
            self._emit_renewed(lease, "renewed", now)
            self._notify_lease(lease)
        self.deadlines_changed.set()
        return self.snapshot(lease.id)

    def _emit_renewed(self, lease: Lease, how: str, now: float) -> None:
        """A RENEWED event, so that watchers (the consoles' countdowns) see the new expiry
        without polling. Activity renews a used lease on every sidecar report; those are
        announced at most once per quarter of the lease's activity window."""
        if how == "active":
            last = self._renew_announced.get(lease.id)
            if last is not None and now - last < max(lease.activity_window_s / 4, 1.0):
                return
        self._renew_announced[lease.id] = now
        left = format_duration(max(0.0, lease.expires_at - now))
        self.events.emit(
            "lease",
            lease.id,
            "RENEWED",
            f"{how}; expires in {left}",
            lease_id=lease.id,
            server_id=lease.server_id or "",
        )

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

    async def note_reason(self, lease_id: str, reason: str) -> None:
        """Sets a live lease's reason without changing its state: a backend's problem with
        what serves its address (a Kubernetes Service it could not create), or "" once fixed."""
        async with self._lock:
            lease = self.leases.get(LeaseId(lease_id))
            if lease is None or lease.state.ended or lease.reason == reason:
                return
            async with self._tx() as tx:
                self._set_state(lease, lease.state, reason, self._clock.now())
                await tx.put_lease(lease)
            self._notify_lease(lease)

    def snapshot(self, lease_id: str) -> Lease:
        return copy_lease(self._get(lease_id))

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
            if self._get(lease_id).state is LeaseState.READY:
                # Whoever sees READY may call the lease's (or its name's) address at once.
                await self._settle_routes()
            # No await from the snapshot to taking the waiter: no change can slip between.
            lease = self.snapshot(lease_id)
            if stop(lease) or lease.state.ended:
                yield lease
                return
            changed = self._lease_changed.setdefault(lease.id, _Signal()).waiter()
            yield lease
            await changed.wait()

    def fleet(self) -> placement.FleetIndex:
        """The fleet as placement sees it now (read-only for callers)."""
        return self._fleet_now()

    def has_live_leases(self) -> bool:
        return bool(self._live)

    def live_count(self) -> int:
        return len(self._live)

    def leases_on(self, server_id: str) -> list[Lease]:
        """The live leases a server holds (read-only for callers), from the per-server index."""
        return self._on(ServerId(server_id))

    def server_of(self, lease: Lease) -> Server | None:
        return self.servers.get(lease.server_id) if lease.server_id else None

    # ------------------------------------------------------------------ sidecar API

    def desired(self, server_id: str) -> list[tuple[ModelName, str]]:
        """The models a server should hold now (what `assignments` yields next)."""
        server = self.servers.get(ServerId(server_id))
        return self._desired(server) if server is not None and server.state.alive else []

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
        self,
        server_id: str,
        *,
        triton_ready: bool,
        models: Iterable[ServedModel],
        leak: str = "",
    ) -> None:
        async with self._lock:
            server = self.servers.get(ServerId(server_id))
            if server is None or not server.state.alive:
                return
            now = self._clock.now()
            reported = {m.name: m for m in models}
            self._note_changes(server, reported)
            # Models that served an inference since the last report: their leases live on.
            active = {
                name
                for name, served in reported.items()
                if served.last_inference_at
                > getattr(server.models.get(name), "last_inference_at", 0.0)
            }
            server.models = reported
            server.triton_ready = triton_ready
            self._touch(server.id)
            if leak and not server.leak:
                server.leak = leak
                self.events.emit(
                    "server",
                    server.id,
                    "LEAKING",
                    f"{leak}; recycled once empty",
                    server_id=server.id,
                )
                self.deadlines_changed.set()
            async with self._tx() as tx:
                if triton_ready and server.state is ServerState.STARTING:
                    self._server_state(server, ServerState.RUNNING, "")
                    await tx.put_server(server)
                    log.info("server %s is ready", server.id)
                await self._note_memory(tx, server, now)
                await self._settle_server(tx, server, now)
                await self._note_activity(tx, server, active)
                if server.id in self._incoming:
                    await self._advance_moves(tx, server.id, now)
            # A lease that ended here may have made room for one that waits.
            await self._place_pending()

    def _note_changes(self, server: Server, reported: dict[ModelName, ServedModel]) -> None:
        changes = self._model_changes.setdefault(server.id, set())
        for name, served in reported.items():
            old = server.models.get(name)
            if old is None or (old.uri, old.state, old.error, old.load_s) != (
                served.uri,
                served.state,
                served.error,
                served.load_s,
            ):
                changes.add(name)
        changes.update(name for name in server.models if name not in reported)

    async def _note_memory(self, tx: StateTransaction, server: Server, now: float) -> None:
        """Records what models were measured to take; warns when one took more than declared.

        Placement then counts the larger of declared and measured for every model it has
        seen, so a model that under-declares is packed by what it really uses next time.
        """
        for served in server.models.values():
            measured = served.measured_bytes
            key = (str(served.name), served.uri)
            if not served.uri or measured <= self.measured.get(key, 0):
                continue
            self.measured[key] = measured
            # Every server holding the model now counts it larger.
            self._fleet = None
            await tx.put_model_memory(key[0], key[1], measured, now)
            for lease in self._on(server.id):
                for model in lease.models:
                    if (model.name, model.uri) != key:
                        continue
                    model.measured_bytes = measured
                    if 0 < model.memory_bytes < measured:
                        self.events.emit(
                            "model",
                            model.name,
                            "OVER_DECLARED",
                            f"measured {format_size(measured)}, declared "
                            f"{format_size(model.memory_bytes)}",
                            lease_id=lease.id,
                            server_id=server.id,
                        )
                    await tx.put_lease(lease)
                    self._notify_lease(lease)

    def _need(self, model: LeaseModel) -> int:
        """The memory placement counts for a model: declared or measured, whichever is more."""
        return max(model.memory_bytes, self.measured.get((str(model.name), model.uri), 0))

    async def _note_activity(
        self, tx: StateTransaction, server: Server, active: set[ModelName]
    ) -> None:
        """Moves the expiry of activity-renewed leases on `server` after their last inference.

        Such a lease lives its duration from READY, then as long as one of its models served
        an inference within the last activity window. Only the leases of the models that
        were `active` since the last report can have moved.
        """
        load = self._loads.get(server.id)
        if load is None or not active:
            return
        leases: dict[LeaseId, Lease] = {}
        for name in active:
            leases.update(load.by_model.get(name, {}))
        for lease in leases.values():
            if lease.state is not LeaseState.READY or not lease.activity_window_s:
                continue
            last = max(
                (
                    server.models[m.name].last_inference_at
                    for m in lease.models
                    if m.name in server.models and server.models[m.name].uri == m.uri
                ),
                default=0.0,
            )
            if last <= lease.last_activity_at:
                continue
            lease.last_activity_at = last
            floor = (lease.ready_at or lease.created_at) + lease.duration_s
            before = lease.expires_at
            lease.expires_at = max(lease.expires_at, floor, last + lease.activity_window_s)
            await tx.put_lease(lease)
            if lease.expires_at > before:
                self._emit_renewed(lease, "active", self._clock.now())
            self._notify_lease(lease)
            self.deadlines_changed.set()

    # ------------------------------------------------------------------ reconciler hooks

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has something to do."""
        expiry = self._next_expiry()
        deadlines = [] if expiry is None else [expiry]
        for server in self.servers.values():
            if server.state is ServerState.STARTING:
                deadlines.append(server.created_at + self._settings.local.start_timeout)
            if server.idle_since is not None:
                deadlines.append(server.idle_since + self._settings.local.idle_grace)
        for move in self._moves.values():
            deadlines.append(move.started_at + self._settings.local.start_timeout)
        if self._settings.placement.consolidate:
            if self._next_consolidation is None:
                self._next_consolidation = self._clock.now()
            deadlines.append(self._next_consolidation)
        return min(deadlines, default=None)

    async def tick(self) -> None:
        """Expires leases, stops idle servers and fails servers that died or never started."""
        to_stop: list[Server] = []
        async with self._lock:
            now = self._clock.now()
            async with self._tx() as tx:
                while (expiry := self._next_expiry()) is not None and expiry <= now:
                    _, lease_id = heapq.heappop(self._expiries)
                    lease = self._live[lease_id]
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
                    if server.id in self._unsettled:
                        await self._settle_server(tx, server, now)
                    if server.leak and server.idle_since is not None:
                        # Empty and leaking: recycle now rather than after the idle grace.
                        self._server_state(server, ServerState.STOPPING, f"recycled: {server.leak}")
                        await tx.put_server(server)
                        to_stop.append(server)
                    elif (
                        server.idle_since is not None
                        and now >= server.idle_since + self._settings.local.idle_grace
                        and not self._pool_needs(server)
                    ):
                        self._server_state(server, ServerState.STOPPING, "idle")
                        await tx.put_server(server)
                        to_stop.append(server)
                to_start = await self._fill_pools(tx, now)
                for target in list(self._incoming):
                    await self._advance_moves(tx, target, now)
                if self._settings.placement.consolidate and (
                    self._next_consolidation is None or now >= self._next_consolidation
                ):
                    self._next_consolidation = now + self._settings.placement.consolidate_interval_s
                    await self._consolidate(tx, now)
            for server in to_start:
                await self._start_server(server)
                self._bump_assignment(server.id)
            for server in to_stop:
                self._assignment_signal(server.id).fire()
            await self._place_pending()
        for server in to_stop:
            await self._stop_server(server)
        if to_stop:
            async with self._lock:
                await self._place_pending()

    # ------------------------------------------------------------------ consolidation

    def _last_use(self, lease: Lease, server: Server) -> float:
        """When the lease last served (or became READY): what idleness is counted from."""
        last = max(lease.ready_at or lease.created_at, lease.last_activity_at)
        for model in lease.models:
            served = server.models.get(model.name)
            if served is not None and served.uri == model.uri:
                last = max(last, served.last_inference_at)
        return last

    def _movable(self, lease: Lease, server: Server, now: float) -> bool:
        wanted = lease.constraints
        return (
            lease.state is LeaseState.READY
            and lease.id not in self._moves
            and not lease.pool
            and not wanted.exclusive
            and not wanted.colocate_with
            and now - self._last_use(lease, server) >= self._settings.placement.consolidate_idle_s
        )

    def _consolidation_sources(
        self, now: float, views: dict[ServerId, placement.ServerView]
    ) -> list[consolidation.Source]:
        """Running unpooled servers at most `consolidate_max_used` full whose every lease is
        idle enough to move, and that no lease elsewhere was placed beside (`colocate_with`)."""
        beside: set[str] = set()
        for lease in self._live.values():
            beside.update(lease.constraints.colocate_with)
        max_used = self._settings.placement.consolidate_max_used
        sources = []
        for server in self.servers.values():
            view = views.get(server.id)
            if (
                view is None
                or consolidation.used_fraction(view) > max_used
                or server.state is not ServerState.RUNNING
                or server.pool
                or server.leak
                or server.id in self._incoming
                or server.id in self._draining
            ):
                continue
            leases = self._on(server.id)
            if not leases or not all(self._movable(lease, server, now) for lease in leases):
                continue
            load = self._loads[server.id]
            if beside and (
                beside & load.tags.keys()
                or any(beside.intersection(self.names_of(i)) for i in load.leases)
            ):
                continue
            sources.append(
                consolidation.Source(
                    server.id,
                    tuple(
                        consolidation.MovableLease(
                            id=lease.id,
                            models=tuple(
                                placement.ModelNeed(m.name, m.uri, self._need(m), m.framework)
                                for m in lease.models
                            ),
                            binary=lease.tritonserver,
                            constraints=placement.Constraints(
                                gpus=lease.constraints.gpus,
                                gpu_product=lease.constraints.gpu_product,
                                node_selector=lease.constraints.node_selector,
                                avoid=frozenset(lease.constraints.avoid),
                            ),
                            tags=frozenset([*lease.tags, *self.names_of(lease.id)]),
                        )
                        for lease in leases
                    ),
                )
            )
        return sources

    async def _consolidate(self, tx: StateTransaction, now: float) -> None:
        """One consolidation pass: starts the moves that empty lightly used servers.

        Each moving lease's models are added to its target's assignment (the target loads
        them while the source still serves); `_advance_moves` switches the lease when the
        target reports them READY. Caller holds the lock.
        """
        fleet = self._fleet_now()
        views = {view.id: view for view in fleet.servers}
        sources = self._consolidation_sources(now, views)
        if not sources:
            return
        # Targets: running servers that hold leases (an empty one is about to stop, and
        # filling it would empty nothing).
        running = [
            view
            for view in views.values()
            if (server := self.servers.get(view.id)) is not None
            and server.state is ServerState.RUNNING
            and view.id in self._loads
        ]
        # Only the nodes of those servers: a lease can join no other (and on a large fleet
        # most nodes hold no server at all).
        on = {view.node for view in running}
        moves = consolidation.plan_moves(
            sources,
            running,
            [node for node in fleet.nodes if node.name in on],
            server_capacity=self._settings.local.server_memory,
            isolated_frameworks=frozenset(self._settings.placement.isolated_frameworks),
            max_used=self._settings.placement.consolidate_max_used,
        )
        for move in moves:
            lease = self._live[LeaseId(move.lease_id)]
            target = self.servers[move.target]
            wanted = set(self._desired(target))
            self.move_reloads += sum((m.name, m.uri) not in wanted for m in lease.models)
            self._moves[lease.id] = _MoveState(move.source, move.target, now)
            self._incoming.setdefault(move.target, {})[lease.id] = lease
            self._draining[move.source] = self._draining.get(move.source, 0) + 1
            self._touch(move.source)
            self._touch(move.target)
            self.events.emit(
                "lease",
                lease.id,
                "MOVING",
                f"consolidation: loading on {move.target} to leave {move.source}",
                lease_id=lease.id,
                server_id=move.source,
            )
            self._bump_assignment(move.target)
        for target_id in {move.target for move in moves}:
            # A target that already holds the models takes the lease at once.
            await self._advance_moves(tx, target_id, now)

    async def _advance_moves(self, tx: StateTransaction, target_id: ServerId, now: float) -> None:
        """Switches the leases moving to `target_id` whose models it reports READY; abandons
        moves that cannot finish. Caller holds the lock."""
        target = self.servers.get(target_id)
        for lease_id in list(self._incoming.get(target_id, {})):
            move = self._moves.get(lease_id)
            if move is None:
                continue  # abandoned with another move off its source, just now
            lease = self._live.get(lease_id)
            source = self.servers.get(move.source)
            if target is None or not target.state.alive:
                self._abandon(lease_id, f"{target_id} is gone")
            elif lease is None or lease.state is not LeaseState.READY:
                self._abandon(lease_id, "the lease is no longer READY")
            elif source is None or lease.server_id != move.source:
                self._abandon(lease_id, f"the lease left {move.source}")
            elif self._last_use(lease, source) > move.started_at:
                self._abandon(lease_id, "the lease served an inference")
            else:
                states = [target.models.get(m.name) for m in lease.models]
                failed = next(
                    (
                        (m, served)
                        for m, served in zip(lease.models, states, strict=True)
                        if served is not None
                        and served.uri == m.uri
                        and served.state is ModelState.FAILED
                    ),
                    None,
                )
                if failed is not None:
                    model, served = failed
                    self._abandon(
                        lease_id, f"model {model.name!r} failed on {target_id}: {served.error}"
                    )
                elif target.triton_ready and all(
                    served is not None and served.uri == m.uri and served.state is ModelState.READY
                    for m, served in zip(lease.models, states, strict=True)
                ):
                    await self._switch(tx, lease, source, target, now)
                elif now >= move.started_at + self._settings.local.start_timeout:
                    limit = format_duration(self._settings.local.start_timeout)
                    self._abandon(lease_id, f"not loaded on {target_id} within {limit}")

    def _end_move(self, lease_id: LeaseId) -> _MoveState:
        move = self._moves.pop(lease_id)
        incoming = self._incoming.get(move.target, {})
        incoming.pop(lease_id, None)
        if not incoming:
            self._incoming.pop(move.target, None)
        left = self._draining.get(move.source, 0) - 1
        if left > 0:
            self._draining[move.source] = left
        else:
            self._draining.pop(move.source, None)
        self._touch(move.source)
        self._touch(move.target)
        return move

    def _abandon(self, lease_id: LeaseId, why: str) -> None:
        """Gives a move up: the target no longer wants the lease's models (its sidecar
        unloads them) and the lease stays where it is. The other moves off the same source
        go too: it would not be emptied."""
        move = self._end_move(lease_id)
        siblings = [i for i, m in self._moves.items() if m.source == move.source]
        for other in [lease_id, *siblings]:
            if other != lease_id:
                other_move = self._end_move(other)
                self._bump_assignment(other_move.target)
            self.events.emit(
                "lease",
                other,
                "MOVE_ABANDONED",
                why if other == lease_id else f"a move off {move.source} failed: {why}",
                lease_id=other,
                server_id=move.source,
            )
        self._bump_assignment(move.target)
        log.info("move of lease %s to %s abandoned: %s", lease_id, move.target, why)

    async def _switch(
        self, tx: StateTransaction, lease: Lease, source: Server, target: Server, now: float
    ) -> None:
        """Points the lease at `target`, which holds its models READY: routes follow at the
        commit, and the source, no longer wanting them, unloads. The lease stays READY."""
        self._end_move(lease.id)
        self._move(lease, target.id)
        self._sync_models(lease, target)
        lease.updated_at = now
        self._touched.add(lease.id)
        await tx.put_lease(lease)
        self.moves_done += 1
        self.events.emit(
            "lease",
            lease.id,
            "MOVED",
            f"consolidation: from {source.id} to {target.id}",
            lease_id=lease.id,
            server_id=target.id,
        )
        self._notify_lease(lease)
        self._bump_assignment(source.id)
        self._bump_assignment(target.id)
        await self._settle_server(tx, source, now)
        log.info("lease %s moved from %s to %s", lease.id, source.id, target.id)

    def _pool_needs(self, server: Server) -> bool:
        """Whether an idle pool server must stay up to keep its pool at its minimum."""
        pool = self.pools.get(server.pool)
        if pool is None:
            return False
        running = sum(1 for s in self.servers.values() if s.pool == pool.name and s.state.alive)
        return running <= pool.min_servers

    async def _fill_pools(self, tx: StateTransaction, now: float) -> list[Server]:
        """New servers (recorded, not started) that bring each pool up to its minimum."""
        created = []
        for pool in self.pools.values():
            running = sum(1 for s in self.servers.values() if s.pool == pool.name and s.state.alive)
            for _ in range(pool.min_servers - running):
                server = self._new_server(pool.name, pool.tritonserver, now)
                await tx.put_server(server)
                self.servers[server.id] = server
                self._touch(server.id)
                created.append(server)
        return created

    async def shutdown(self, *, leave_serving: bool) -> None:
        if leave_serving:
            return
        async with self._lock:
            # Every server still held, also one whose stop (idle, failed) the reconciler had
            # begun when it was cancelled: stopping is idempotent, and none may outlive us.
            servers = list(self.servers.values())
            async with self._tx() as tx:
                for server in servers:
                    if server.state.alive:
                        self._server_state(server, ServerState.STOPPING, "daemon shut down")
                        await tx.put_server(server)
        await asyncio.gather(*(self._stop_server(s) for s in servers))

    # ------------------------------------------------------------------ names

    async def set_name(self, name: str, lease_id: str) -> LeaseNameRecord:
        """Points `name` at the lease: at once if it is READY, else as soon as it is."""
        check_dns_label("name", name)
        async with self._lock:
            lease = self._get(lease_id)
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                raise LeaseEnded(f"lease {lease_id} is {lease.state.value}; name a live lease")
            async with self._tx() as tx:
                record = await self._point_name(tx, name, lease, self._clock.now())
            self._routes_changed()
            result = copy.deepcopy(record)
        await self._settle_routes()
        return result

    async def delete_name(self, name: str) -> LeaseNameRecord:
        async with self._lock:
            record = self.names.get(name)
            if record is None:
                raise NameNotFound(name)
            async with self._tx() as tx:
                await tx.delete_name(name)
                del self.names[name]
                self._fleet = None  # names are tags that colocate_with and avoid match
            self.events.emit("name", name, "DELETED", lease_id=record.lease_id or "")
            self._routes_changed()
            return record

    def list_names(self) -> list[LeaseNameRecord]:
        return [copy.deepcopy(r) for r in sorted(self.names.values(), key=lambda r: r.name)]

    def names_of(self, lease_id: str) -> list[str]:
        """Names that point at the lease, or will once it is READY."""
        return sorted(
            r.name for r in self.names.values() if lease_id in (r.lease_id, r.next_lease_id)
        )

    async def _point_name(
        self, tx: StateTransaction, name: str, lease: Lease, now: float
    ) -> LeaseNameRecord:
        record = self.names.get(name)
        if record is None:
            http_port, grpc_port = self._allocate_ports(2)
            record = LeaseNameRecord(name, None, http_port, grpc_port, now)
            self.names[name] = record
        if lease.state is LeaseState.READY:
            record.lease_id, record.next_lease_id = lease.id, None
            self.events.emit("name", name, "POINTED", f"to lease {lease.id}", lease_id=lease.id)
        else:
            record.next_lease_id = lease.id
            self.events.emit(
                "name", name, "WAITING", f"for lease {lease.id} to be READY", lease_id=lease.id
            )
        record.updated_at = now
        self._fleet = None
        await tx.put_name(record)
        return record

    async def _names_follow(self, tx: StateTransaction) -> None:
        """Switches names waiting for a lease that became READY; drops waits on ended ones."""
        touched, self._touched = self._touched, set()
        for record in self.names.values():
            if record.next_lease_id not in touched:
                continue
            lease = self.leases.get(record.next_lease_id)
            if lease is None:
                continue
            if lease.state is LeaseState.READY:
                # One commit moves the name: new connections go to the new lease from here on.
                record.lease_id, record.next_lease_id = lease.id, None
                self.events.emit(
                    "name", record.name, "POINTED", f"to lease {lease.id}", lease_id=lease.id
                )
            elif lease.state not in (LeaseState.PENDING, LeaseState.LOADING):
                record.next_lease_id = None
                self.events.emit(
                    "name",
                    record.name,
                    "UNCHANGED",
                    f"lease {lease.id} ended {lease.state.value} before READY",
                    lease_id=lease.id,
                )
            else:
                continue
            record.updated_at = self._clock.now()
            self._fleet = None
            await tx.put_name(record)

    # ------------------------------------------------------------------ pools

    async def create_pool(self, pool: Pool) -> Pool:
        check_dns_label("name", pool.name)
        if pool.name in self.pools:
            raise AlreadyExists(f"pool {pool.name!r} already exists")
        if pool.quota_per_server <= 0:
            raise InvalidArgument("quota_per_server", "must be at least 1")
        if pool.max_servers < 1:
            raise InvalidArgument("max_servers", "must be at least 1")
        if not 0 <= pool.min_servers <= pool.max_servers:
            raise InvalidArgument(
                "min_servers", f"must be between 0 and max_servers ({pool.max_servers})"
            )
        if pool.server_memory < 0:
            raise InvalidArgument("server_memory", "must not be negative")
        pool.tritonserver = self._allowed(pool.tritonserver, "tritonserver")
        pool.created_at = self._clock.now()
        async with self._lock:
            async with self._tx() as tx:
                await tx.put_pool(pool)
                self.pools[pool.name] = pool
                self._fleet = None
            self.events.emit("pool", pool.name, "CREATED")
        self.deadlines_changed.set()
        return copy.deepcopy(pool)

    async def delete_pool(self, name: str) -> Pool:
        async with self._lock:
            pool = self.pools.get(name)
            if pool is None:
                raise PoolNotFound(name)
            holders = [
                lease.id
                for lease in self._live_leases()
                if lease.pool == name and not lease.state.ended
            ]
            if holders:
                raise PoolInUse(
                    f"pool {name!r} still holds leases {', '.join(holders)}; release them first"
                )
            async with self._tx() as tx:
                await tx.delete_pool(name)
                del self.pools[name]
                self._fleet = None
                doomed = [s for s in self.servers.values() if s.pool == name and s.state.alive]
                for server in doomed:
                    self._server_state(server, ServerState.STOPPING, f"pool {name} deleted")
                    await tx.put_server(server)
            self.events.emit("pool", name, "DELETED")
        for server in doomed:
            await self._stop_server(server)
        return pool

    def list_pools(self) -> list[Pool]:
        return [copy.deepcopy(p) for p in sorted(self.pools.values(), key=lambda p: p.name)]

    def pool_servers(self, name: str) -> list[tuple[Server, list[Lease]]]:
        if name not in self.pools:
            raise PoolNotFound(name)
        result = []
        for server in self.servers.values():
            if server.pool == name and server.state.alive:
                result.append((server, self._on(server.id)))
        return result

    # ------------------------------------------------------------------ allowlist

    async def allow(self, tritonserver: str) -> list[str]:
        if not tritonserver:
            raise InvalidArgument("tritonserver", "is empty; expected the path of a tritonserver")
        if self._check_tritonserver is not None:
            self._check_tritonserver(tritonserver)
        async with self._lock:
            if tritonserver not in self.allowlist:
                async with self._tx() as tx:
                    await tx.allow(tritonserver, self._clock.now())
                self.allowlist.append(tritonserver)
        return list(self.allowlist)

    async def disallow(self, tritonserver: str) -> list[str]:
        async with self._lock:
            if tritonserver not in self.allowlist:
                raise InvalidArgument("tritonserver", f"{tritonserver} is not on the allowlist")
            users = [p.name for p in self.pools.values() if p.tritonserver == tritonserver]
            if users:
                raise InvalidArgument(
                    "tritonserver", f"{tritonserver} is used by pools {', '.join(users)}"
                )
            async with self._tx() as tx:
                await tx.disallow(tritonserver)
            self.allowlist.remove(tritonserver)
        return list(self.allowlist)

    # ------------------------------------------------------------------ internals

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[StateTransaction]:
        """A store transaction; if it fails, memory goes back to what the store holds.

        Changes are made to the working state as they are written, so a failed commit
        (disk full, a constraint) must not leave memory ahead of the disk.
        """
        self._in_tx = True
        try:
            async with self._store.transaction() as tx:
                yield tx
                await self._names_follow(tx)
        except BaseException:
            await self._reload()
            raise
        finally:
            self._in_tx = False
            held, self._held_signals = self._held_signals, []
        # Addresses follow what was just committed (the router skips an unchanged table),
        # and only then do followers and sidecars hear of it: whoever sees READY may call
        # the lease's or its name's address at once.
        self._routes_changed()
        for signal in held:
            signal.fire()

    async def _reload(self) -> None:
        self._touched.clear()
        servers = await self._load_stored()
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
        self._fleet = None
        self._unsettled.update(live)
        # Moves are memory only: drop them, and the targets unload what no lease wants.
        for target in self._incoming:
            self._bump_assignment(target)
        self._moves.clear()
        self._incoming.clear()
        self._draining.clear()
        log.warning("a state change failed to commit; working state reloaded from the store")

    def _validate(self, models: Sequence[ModelRequest], name: str) -> None:
        if not models:
            raise InvalidArgument("models", "a lease needs at least one model")
        if name:
            check_dns_label("name", name)
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

    def _live_leases(self) -> list[Lease]:
        """The leases that have not ended (a copy: callers may end some as they go)."""
        return list(self._live.values())

    def _get(self, lease_id: str) -> Lease:
        lease = self.leases.get(LeaseId(lease_id))
        if lease is None:
            raise LeaseNotFound(lease_id)
        return lease

    def _holders(self, server: Server) -> list[Lease]:
        return [lease for lease in self._on(server.id) if lease.state.holds_models]

    def _desired(self, server: Server) -> list[tuple[ModelName, str]]:
        load = self._loads.get(server.id) or _ServerLoad()
        wanted: dict[ModelName, str] = {}
        for name, uri in load.wanted:
            wanted.setdefault(name, uri)
        for lease in self._incoming.get(server.id, {}).values():
            for model in lease.models:
                wanted.setdefault(model.name, model.uri)
        return sorted(wanted.items())

    def _views(self, without: frozenset[LeaseId] = frozenset()) -> list[placement.ServerView]:
        """The live servers as placement sees them (as if the leases `without` were gone),
        each read off a load counted afresh from its leases rather than the one kept."""
        views = []
        for server in self.servers.values():
            if not server.state.alive:
                continue
            load = _ServerLoad()
            for lease in self._on(server.id):
                if lease.id not in without:
                    load.add(lease, ready=True, holds=True)
            views.append(self._load_view(server, load))
        return views

    def _load_view(self, server: Server, load: _ServerLoad | None = None) -> placement.ServerView:
        """The server as placement sees it, read off its load (the kept one by default): it
        costs the server's distinct models and tags rather than its leases."""
        if load is None:
            load = self._loads.get(server.id) or _ServerLoad()
        pool = self.pools.get(server.pool)
        measured = self.measured
        held: dict[str, tuple[str, int]] = {}
        models: dict[str, str] = {}
        used = 0
        for (name, uri), sizes in load.declared.items():
            need = max(sizes)
            if measured:
                need = max(need, measured.get((name, uri), 0))
            held[name] = (uri, need)
            models[name] = uri
            used += need
        # Leases moving here are counted from the start of their load: nothing may take
        # the room they are about to fill.
        for lease in self._incoming.get(server.id, {}).values():
            for model in lease.models:
                uri, counted = held.get(model.name, ("", 0))
                need = self._need(model)
                if uri in ("", model.uri) and need > counted:
                    held[model.name] = (model.uri, need)
                    models[model.name] = model.uri
                    used += need - counted
        # The load's own count of tags, read in place: a server's tags include every lease id
        # on it, and copying thousands of them for each view would cost more than the rest.
        tags: AbstractSet[str] = load.tags.keys()
        if self.names:
            named = set(tags)
            for lease_id in load.leases:
                named.update(self.names_of(lease_id))
            tags = named
        for name, served in server.models.items():
            models[str(name)] = served.uri
        return placement.ServerView(
            id=server.id,
            accepting=not server.leak and server.id not in self._draining,
            binary=server.binary,
            pool=server.pool,
            quota_capacity=pool.quota_per_server if pool else 0,
            quota_used=load.quota,
            capacity_bytes=server.capacity_bytes,
            used_bytes=used,
            models=models,
            node=server.node,
            gpus=server.gpus,
            exclusive=load.exclusive > 0,
            framework_group=server.framework_group,
            tags=tags,
            held=held,
        )

    def _fleet_now(self) -> placement.FleetIndex:
        """The fleet index, brought up to date with the servers changed since the last
        decision (or rebuilt whole when a change reached them all)."""
        fleet = self._fleet
        if fleet is None:
            views = self._views()
            fleet = self._fleet = placement.FleetIndex(views, self._node_views(views))
            self._gpu_shares, self._shares_of = {}, {}
            for view in views:
                self._share_gpus(view)
            self._fleet_dirty.clear()
            return fleet
        touched: set[tuple[str, int]] = set()
        for server_id in self._fleet_dirty:
            for key in self._shares_of.pop(server_id, ()):
                self._gpu_shares[key].pop(server_id, None)
                touched.add(key)
            server = self.servers.get(server_id)
            if server is None or not server.state.alive:
                fleet.drop_server(server_id)
                continue
            view = self._load_view(server)
            fleet.put_server(view)
            touched.update(self._share_gpus(view))
        self._fleet_dirty.clear()
        for node, index in touched:
            shares = self._gpu_shares.get((node, index), {})
            fleet.set_gpu_used(node, index, int(sum(shares.values())))
        return fleet

    def _share_gpus(self, view: placement.ServerView) -> list[tuple[str, int]]:
        keys = [(view.node, index) for index in view.gpus]
        for key in keys:
            self._gpu_shares.setdefault(key, {})[view.id] = view.used_bytes / len(keys)
        if keys:
            self._shares_of[view.id] = keys
        return keys

    def _node_views(self, servers: list[placement.ServerView]) -> list[placement.NodeView]:
        """Every node's GPUs with what the servers on each take (a server's models are spread
        evenly over its GPUs)."""
        used: dict[tuple[str, int], float] = {}
        for view in servers:
            for index in view.gpus:
                key = (view.node, index)
                used[key] = used.get(key, 0) + view.used_bytes / len(view.gpus)
        return [
            placement.NodeView(
                name=node.name,
                labels=node.labels,
                gpus=tuple(
                    placement.GpuView(
                        node=node.name,
                        index=gpu.index,
                        product=gpu.product,
                        capacity_bytes=gpu.total_bytes,
                        used_bytes=int(used.get((node.name, gpu.index), 0)),
                    )
                    for gpu in node.gpus
                ),
            )
            for node in self.nodes
        ]

    def _node(self, name: str) -> Node | None:
        return self._nodes_by_name.get(name)

    def _decide(
        self,
        lease: Lease,
        *,
        without: frozenset[LeaseId] = frozenset(),
        only: ServerId | None = None,
    ) -> placement.Decision:
        pool = self.pools.get(lease.pool) if lease.pool else None
        if lease.pool and pool is None:
            return placement.Wait(f"pool {lease.pool} was deleted")
        if without or only is not None:
            # Preemption asks what-ifs: a fleet of its own, built for the question.
            views = self._views(without)
            nodes = self._node_views(views)
            if only is not None:
                views = [view for view in views if view.id == only]
            fleet = placement.FleetIndex(views, nodes)
        else:
            fleet = self._fleet_now()
        wanted = lease.constraints
        return placement.place(
            [placement.ModelNeed(m.name, m.uri, self._need(m), m.framework) for m in lease.models],
            index=fleet,
            server_capacity=self._settings.local.server_memory,
            max_servers=self._settings.local.max_servers,
            binary=lease.tritonserver,
            isolated_frameworks=frozenset(self._settings.placement.isolated_frameworks),
            constraints=placement.Constraints(
                gpus=wanted.gpus,
                gpu_product=wanted.gpu_product,
                node_selector=wanted.node_selector,
                exclusive=wanted.exclusive,
                colocate_with=frozenset(wanted.colocate_with),
                avoid=frozenset(wanted.avoid),
            ),
            pool=placement.PoolSpec(
                name=pool.name,
                quota=lease.quota,
                quota_per_server=pool.quota_per_server,
                max_servers=pool.max_servers,
                server_memory=self._pool_memory(pool),
            )
            if pool
            else None,
        )

    def _pool_memory(self, pool: Pool) -> int:
        return pool.server_memory or self._settings.local.server_memory

    def _allowed(self, tritonserver: str, field: str) -> str:
        """The Triton binary to use for `tritonserver` (default: the configured one)."""
        binary = tritonserver or self.default_tritonserver
        if tritonserver and binary not in self.allowlist:
            raise InvalidArgument(
                field, f"{tritonserver} is not on the Triton allowlist (see `tms allowlist list`)"
            )
        return binary

    async def _apply_decision(self, lease: Lease, decision: placement.Decision) -> None:
        """Commits the decision for `lease`, then acts on it. Caller holds the lock."""
        now = self._clock.now()
        new_server: Server | None = None
        async with self._tx() as tx:
            if isinstance(decision, placement.Wait | placement.Reject):
                self._set_state(lease, LeaseState.PENDING, decision.reason, now)
            else:
                if isinstance(decision, placement.StartServer):
                    new_server = self._new_server(lease.pool, lease.tritonserver, now, decision)
                    await tx.put_server(new_server)
                    self.servers[new_server.id] = new_server
                    self._touch(new_server.id)
                target = new_server.id if new_server else placement_server(decision)
                self._move(lease, target)
                self._set_state(lease, LeaseState.LOADING, "", now)
                server = self.servers[target]
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

    def _new_server(
        self,
        pool_name: str,
        binary: str,
        now: float,
        where: placement.StartServer | None = None,
    ) -> Server:
        pool = self.pools.get(pool_name)
        capacity = self._pool_memory(pool) if pool else self._settings.local.server_memory
        node = self._node(where.node) if where is not None else None
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
        elif self.nodes:
            # Pool servers are not placed by node: they run on the first (the local) node.
            server.node = self.nodes[0].name
        self.events.emit(
            "server",
            server.id,
            server.state.value,
            f"started for pool {pool_name}" if pool_name else "started",
            server_id=server.id,
        )
        return server

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
            self._touch(server.id)
            return
        async with self._tx() as tx:
            await tx.put_server(server)

    async def _stop_server(self, server: Server) -> None:
        await self._backend.stop(server)
        async with self._lock:
            async with self._tx() as tx:
                if server.state is not ServerState.FAILED:
                    self._server_state(server, ServerState.STOPPED, server.reason)
                await tx.put_server(server)
            self.servers.pop(server.id, None)
            self._touch(server.id)
            self._assignment_changed.pop(server.id, None)
            self._generations.pop(server.id, None)
            # Leases still releasing on a stopped server have nothing left to unload.
            now = self._clock.now()
            async with self._tx() as tx:
                for lease in self._on(server.id):
                    if lease.state is LeaseState.RELEASING:
                        self._set_state(lease, LeaseState.RELEASED, "", now)
                        await tx.put_lease(lease)
                        self._notify_lease(lease)
        log.info("server %s stopped (%s)", server.id, server.reason or "stopped")

    async def _fail_server(
        self, tx: StateTransaction, server: Server, reason: str, now: float
    ) -> None:
        log.warning("server %s failed: %s", server.id, reason)
        self._server_state(server, ServerState.FAILED, reason)
        await tx.put_server(server)
        for lease in self._on(server.id):
            if lease.state is LeaseState.RELEASING:
                self._set_state(lease, LeaseState.RELEASED, "", now)
            else:
                self._set_state(lease, LeaseState.FAILED, f"server {server.id}: {reason}", now)
            await tx.put_lease(lease)
            self._notify_lease(lease)

    async def _settle_server(self, tx: StateTransaction, server: Server, now: float) -> None:
        """Moves the server's leases along after its models changed. Caller holds the lock."""
        failed_any = False
        load = self._loads.get(server.id)
        changed = self._model_changes.pop(server.id, set())
        visit: dict[LeaseId, Lease] = dict(load.unsteady) if load is not None else {}
        if load is not None:
            # A READY lease moves only when the server reported a change to one of its models.
            for name in changed:
                visit.update(load.by_model.get(name, {}))
        for lease in list(visit.values()):
            if lease.state is LeaseState.READY and self._in_step(lease, server):
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
                    lease.ready_at = now
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
            busy = server.id in self._loads
            if busy and server.idle_since is not None:
                server.idle_since = None
                await tx.put_server(server)
            elif not busy and server.idle_since is None:
                server.idle_since = now
                await tx.put_server(server)
                self.deadlines_changed.set()
        self._unsettled.discard(server.id)

    def _in_step(self, lease: Lease, server: Server) -> bool:
        """Whether `_sync_models` would change nothing on the lease."""
        for model in lease.models:
            served = server.models.get(model.name)
            if (
                served is None
                or served.uri != model.uri
                or served.state is not model.state
                or served.error != model.error
                or (served.load_s and served.load_s != model.load_s)
            ):
                return False
            if self.measured and model.measured_bytes != self.measured.get(
                (str(model.name), model.uri), 0
            ):
                return False
        return True

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
            if (model.state, model.error) != (served.state, served.error):
                self.events.emit(
                    "model",
                    model.name,
                    served.state.value,
                    served.error,
                    lease_id=lease.id,
                    server_id=server.id,
                )
            model.state, model.error = served.state, served.error
            if served.load_s:
                model.load_s = served.load_s
            model.measured_bytes = self.measured.get((str(model.name), model.uri), 0)

    def _victims(self, lease: Lease) -> list[Lease]:
        """The fewest lower-priority leases whose eviction lets `lease` join a server, lowest
        priority and then newest first; [] when preemption is off or nothing would do."""
        if not self._settings.placement.preemption:
            return []
        best: list[Lease] = []
        for server in self.servers.values():
            if not server.state.alive:
                continue
            lower = sorted(
                (
                    held
                    for held in self._on(server.id)
                    if held.state.holds_models and held.priority < lease.priority
                ),
                key=lambda held: (held.priority, -held.created_at),
            )
            victims: list[Lease] = []
            for victim in lower:
                victims.append(victim)
                if best and len(victims) >= len(best):
                    break
                decision = self._decide(
                    lease, without=frozenset(v.id for v in victims), only=server.id
                )
                if isinstance(decision, placement.JoinServer):
                    best = list(victims)
                    break
        return best

    async def _preempt(self, lease: Lease) -> placement.Decision | None:
        """Evicts lower-priority leases to make room for `lease`; the new decision, or None.

        Evicted leases go back to PENDING (their models leave the server) and are placed
        again, by priority and age, when room appears.
        """
        victims = self._victims(lease)
        if not victims:
            return None
        now = self._clock.now()
        async with self._tx() as tx:
            for victim in victims:
                server_id = victim.server_id
                self._move(victim, None)
                for model in victim.models:
                    model.state, model.error = ModelState.PENDING, ""
                self._set_state(
                    victim,
                    LeaseState.PENDING,
                    f"preempted by lease {lease.id} (priority {lease.priority})",
                    now,
                )
                await tx.put_lease(victim)
                self._notify_lease(victim)
                if server_id:
                    self._bump_assignment(server_id)
        log.info("lease %s preempted %s", lease.id, ", ".join(v.id for v in victims))
        return self._decide(lease)

    async def _place_pending(self) -> None:
        """Tries the waiting leases again, oldest first. Caller holds the lock."""
        # Higher priority first, then oldest first.
        waiting = list(self._pending.values())
        for lease in sorted(waiting, key=lambda lease: (-lease.priority, lease.created_at)):
            if lease.state is not LeaseState.PENDING:
                continue
            decision = self._decide(lease)
            if isinstance(decision, placement.Wait):
                decision = await self._preempt(lease) or decision
            if isinstance(decision, placement.JoinServer | placement.StartServer):
                await self._apply_decision(lease, decision)

    def _set_state(self, lease: Lease, state: LeaseState, reason: str, now: float) -> None:
        if (lease.state, lease.reason) != (state, reason) or lease.updated_at == lease.created_at:
            self.events.emit(
                "lease",
                lease.id,
                state.value,
                reason,
                lease_id=lease.id,
                server_id=lease.server_id or "",
            )
        lease.state = state
        lease.reason = reason
        lease.updated_at = now
        self._touched.add(lease.id)
        if state.ended:
            self._unindex_lease(lease)
        else:
            self._index_lease(lease)

    def _index_lease(self, lease: Lease) -> None:
        was_ready = self._placed.get(lease.id, (None, False, False))[1]
        if lease.id not in self._live or (lease.state is LeaseState.READY and not was_ready):
            # Again at READY: a loading lease's entry was dropped (see `_next_expiry`).
            heapq.heappush(self._expiries, (lease.expires_at, lease.id))
        self._live[lease.id] = lease
        if lease.server_id is not None:
            self._touch(lease.server_id)
            now = (lease.server_id, lease.state is LeaseState.READY, lease.state.holds_models)
            before = self._placed.get(lease.id)
            if before != now:
                if before is not None:
                    self._unload(lease, before)
                self._loads.setdefault(lease.server_id, _ServerLoad()).add(lease, now[1], now[2])
                self._placed[lease.id] = now
        if lease.state is LeaseState.PENDING:
            self._pending[lease.id] = lease
        else:
            self._pending.pop(lease.id, None)

    def _unindex_lease(self, lease: Lease) -> None:
        self._live.pop(lease.id, None)
        self._renew_announced.pop(lease.id, None)
        self._pending.pop(lease.id, None)
        if lease.server_id is not None:
            self._touch(lease.server_id)
        before = self._placed.pop(lease.id, None)
        if before is not None:
            self._unload(lease, before)

    def _next_expiry(self) -> float | None:
        """When the next live lease expires. The heap holds each live lease at an expiry no
        later than its own (expiries only ever move later): stale entries are put right, and
        those of leases that ended or are releasing dropped, as they come up. A lease that is
        loading does not expire: its duration counts from READY, when it is entered again."""
        while self._expiries:
            at, lease_id = self._expiries[0]
            lease = self._live.get(lease_id)
            if lease is None or lease.state in (LeaseState.RELEASING, LeaseState.LOADING):
                heapq.heappop(self._expiries)
            elif lease.expires_at > at:
                heapq.heapreplace(self._expiries, (lease.expires_at, lease_id))
            else:
                return at
        return None

    def _unload(self, lease: Lease, placed: tuple[ServerId, bool, bool]) -> None:
        """Takes `lease` out of the load of the server it was counted on."""
        server_id, ready, holds = placed
        load = self._loads.get(server_id)
        if load is not None:
            load.add(lease, ready, holds, sign=-1)
            if not load.leases:
                del self._loads[server_id]

    def _move(self, lease: Lease, server_id: ServerId | None) -> None:
        """Puts `lease` on `server_id` (None: on no server)."""
        live = lease.id in self._live
        if live:
            self._unindex_lease(lease)
        lease.server_id = server_id
        if live:
            self._index_lease(lease)

    def _touch(self, server_id: ServerId) -> None:
        """Marks a server whose view placement reads, or whose leases' states, may have
        changed."""
        self._fleet_dirty.add(server_id)
        self._unsettled.add(server_id)

    def _on(self, server_id: ServerId) -> list[Lease]:
        """The live leases on a server (a copy: callers may end some as they go)."""
        load = self._loads.get(server_id)
        return list(load.leases.values()) if load is not None else []

    def _server_state(self, server: Server, state: ServerState, reason: str) -> None:
        self._touch(server.id)
        server.state = state
        server.reason = reason
        self.events.emit("server", server.id, state.value, reason, server_id=server.id)

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
            self._fire(signal)

    def _fire(self, signal: _Signal) -> None:
        """Fires now, or after the commit when a transaction is open (see `_tx`)."""
        if self._in_tx:
            self._held_signals.append(signal)
        else:
            signal.fire()

    async def _settle_routes(self) -> None:
        if self._routes_settled is not None:
            await self._routes_settled()

    def _routes_changed(self) -> None:
        if self._publish_routes is not None:
            self._publish_routes(compute_routes(self.leases, self.names.values(), self.servers))
        if self._publish_state is not None:
            self._publish_state(PublishedState(self._live, self.names, self.servers))

    def _assignment_signal(self, server_id: ServerId) -> _Signal:
        return self._assignment_changed.setdefault(server_id, _Signal())

    def _bump_assignment(self, server_id: ServerId) -> None:
        self._generations[server_id] = self._generations.get(server_id, 0) + 1
        self._fire(self._assignment_signal(server_id))
        if self._assignment_hook is not None:
            self._assignment_hook(server_id)


_PLAIN = (str, int, float, bool, type(None))


def copy_lease(lease: Lease) -> Lease:
    """A copy that shares nothing mutable with `lease` (as deepcopy, at a fraction of the
    cost: every acquire and release returns one). Fields of plain values are shared; the
    models are copied one level down (theirs are plain); anything else is deep-copied."""
    copied = copy.copy(lease)
    for item in dataclasses.fields(lease):
        value = getattr(lease, item.name)
        if item.name == "models":
            copied.models = [_copy_model(model) for model in lease.models]
        elif not isinstance(value, _PLAIN):
            setattr(copied, item.name, copy.deepcopy(value))
    return copied


def _copy_model(model: LeaseModel) -> LeaseModel:
    copied = copy.copy(model)
    for item in dataclasses.fields(model):
        value = getattr(model, item.name)
        if not isinstance(value, _PLAIN):
            setattr(copied, item.name, copy.deepcopy(value))
    return copied


def placement_server(decision: placement.Decision) -> ServerId:
    assert isinstance(decision, placement.JoinServer)
    return decision.server_id
