"""The simulator: a virtual fleet driven by the real lease manager and placement.

Servers exist only as records. Starting one takes `start_s` of simulated time, loading a
model `load_s(name, uri)`; unloading is immediate. A simulated sidecar per server loads what
the manager assigns and reports through the manager's own sidecar API (`report`), so every
lease goes through the same states, decisions and reasons as on real servers. Time is a
`ManualClock` that jumps from one event to the next, and the state is kept in a
`MemoryStore`, so a day of a thousand-node fleet runs in seconds.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence

from tms_core.clock import ManualClock
from tms_core.config import Settings
from tms_core.domain import Lease, LeaseState, ModelState, ServedModel
from tms_core.events import Event, EventLog
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.inventory import Node
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.manager.facade import LeaseManager
from tms_core.sim.backend import SimBackend, SimServer
from tms_core.store.memory import MemoryStore


class SimFleet:
    """A virtual fleet: the lease manager over simulated servers, with an event queue.

    `at(t, action)` schedules a coroutine (an arrival, a release) at simulated time `t`;
    `run()` plays the events in time order, lets the simulated sidecars answer the manager
    after each, and calls the manager's `tick` (expiry, idle servers) every `tick_s`.
    """

    def __init__(
        self,
        *,
        nodes: Sequence[Node],
        settings: Settings,
        start_s: float = 10.0,
        load_s: Callable[[str, str], float] = lambda name, uri: 5.0,
        tick_s: float = 30.0,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.clock = ManualClock(start)
        self.start_s = start_s
        self.load_s = load_s
        self.tick_s = tick_s
        self.store = MemoryStore()
        self._dirty: dict[ServerId, None] = {}
        self.backend = SimBackend(
            started=lambda server_id: self.after(start_s, lambda: self.triton_ready(server_id)),
            assignment_changed=self._dirty.setdefault,
        )
        self._waiting: dict[LeaseId, float] = {}
        self.manager = LeaseManager(
            store=self.store,
            backend=self.backend,
            clock=self.clock,
            settings=settings,
            nodes=nodes,
            probe=self,
            events=_LeavingPending(self.clock, self._left_pending),
        )
        self._queue: list[tuple[float, int, Callable[[], Awaitable[object] | None]]] = []
        self._order = itertools.count()
        self.loads = 0
        self.decision_s: list[float] = []
        """Wall time of each placement decision made for a new lease (`acquire`)."""
        self.decision_cpu_s: list[float] = []
        """The same decisions' CPU time (what other processes on the machine do not add)."""
        self.pending_s: dict[LeaseId, float] = {}
        """How long each lease acquired through `acquire` waited in PENDING."""
        self._timing = False
        self.consolidate_s: list[float] = []
        """Wall time of each consolidation pass, reading its inputs to starting its moves."""
        self.consolidate_locked_s: list[float] = []
        """How long each pass held the manager's lock (planning runs without it)."""

    # -- the manager's probe: the decision latency the benchmark reports is bringing the
    # fleet index up to date and placing, for each new lease

    def decided(self, wall_s: float, cpu_s: float) -> None:
        if self._timing:
            self.decision_s.append(wall_s)
            self.decision_cpu_s.append(cpu_s)

    def consolidated(self, wall_s: float, locked_s: float) -> None:
        self.consolidate_s.append(wall_s)
        self.consolidate_locked_s.append(locked_s)

    @property
    def now(self) -> float:
        return self.clock.now()

    def at(self, when: float, action: Callable[[], Awaitable[object] | None]) -> None:
        heapq.heappush(self._queue, (when, next(self._order), action))

    def after(self, delay: float, action: Callable[[], Awaitable[object] | None]) -> None:
        self.at(self.now + delay, action)

    async def start(self) -> None:
        await self.manager.recover()

    async def acquire(
        self, models: Sequence[ModelRequest], options: LeaseOptions | None = None
    ) -> Lease:
        self._timing = True
        try:
            lease = await self.manager.acquire(models, options)
        finally:
            self._timing = False
        if lease.state is LeaseState.PENDING:
            self._waiting[lease.id] = lease.created_at
        else:
            self.pending_s[lease.id] = 0.0
        return lease

    async def run(self, until: float | None = None) -> None:
        """Plays the queued events (and those they queue) up to `until`; without `until`,
        until none remain and every lease and server has ended."""
        next_tick = self.now + self.tick_s
        while True:
            if not self._queue and (
                until is not None or not (self.manager.servers or self.manager.has_live_leases())
            ):
                return
            when = self._queue[0][0] if self._queue else math.inf
            if until is not None and min(when, next_tick) > until:
                return
            if next_tick <= when:
                self._advance(next_tick)
                await self.manager.tick()
                await self._answer()
                next_tick += self.tick_s
                continue
            _, _, action = heapq.heappop(self._queue)
            self._advance(when)
            result = action()
            if result is not None:
                await result
            await self._answer()

    def _advance(self, when: float) -> None:
        if when > self.now:
            self.clock.advance(when - self.now)

    async def triton_ready(self, server_id: ServerId) -> None:
        sim = self.backend.servers.get(server_id)
        if sim is not None:
            sim.started = True
            self._dirty[server_id] = None

    async def loaded(self, server_id: ServerId, name: ModelName, uri: str, took: float) -> None:
        sim = self.backend.servers.get(server_id)
        model = sim.models.get(name) if sim is not None else None
        if (
            sim is None
            or model is None
            or model.uri != uri
            or model.state is not ModelState.LOADING
        ):
            return
        sim.models[name] = ServedModel(name, uri, ModelState.READY, load_s=took)
        self.loads += 1
        await self._report(server_id, sim)

    async def inference(self, server_id: ServerId, names: Sequence[str]) -> None:
        """Records an inference on the named models now (activity-renewed leases live on)."""
        sim = self.backend.servers.get(server_id)
        if sim is None:
            return
        for name in names:
            model = sim.models.get(ModelName(name))
            if model is not None:
                # A new record, as a sidecar's report is: the manager compares it with the
                # one it holds to see what changed.
                sim.models[model.name] = dataclasses.replace(
                    model,
                    last_inference_at=self.now,
                    inference_count=model.inference_count + 1,
                )
        await self._report(server_id, sim)

    async def _answer(self) -> None:
        """The simulated sidecars act on the assignments that changed: start loading what
        is new (once their Triton is up), unload what is no longer wanted, and report."""
        while self._dirty:
            server_id = next(iter(self._dirty))
            del self._dirty[server_id]
            sim = self.backend.servers.get(server_id)
            if sim is None:
                continue
            wanted = dict(self.manager.desired(server_id))
            for name in list(sim.models):
                if wanted.get(name) != sim.models[name].uri:
                    del sim.models[name]
            if sim.started:
                for name, uri in wanted.items():
                    if name not in sim.models:
                        sim.models[name] = ServedModel(name, uri, ModelState.LOADING)
                        took = self.load_s(name, uri)
                        self.after(took, self._load_done(server_id, name, uri, took))
            # A sidecar reports on every assignment it receives, changed or not: the daemon
            # asks for a fresh report that way (before ending an activity-renewed lease).
            await self._report(server_id, sim)

    def _left_pending(self, lease_id: str) -> None:
        since = self._waiting.pop(LeaseId(lease_id), None)
        if since is not None:
            self.pending_s[LeaseId(lease_id)] = self.now - since

    def _load_done(
        self, server_id: ServerId, name: ModelName, uri: str, took: float
    ) -> Callable[[], Awaitable[None]]:
        return lambda: self.loaded(server_id, name, uri, took)

    async def _report(self, server_id: ServerId, sim: SimServer) -> None:
        await self.manager.report(
            server_id, triton_ready=sim.started, models=list(sim.models.values())
        )

    # -- what the fleet holds now, for measurements

    def gpu_memory(self) -> dict[tuple[str, int], int]:
        """Declared memory held on each GPU that holds any: each server's distinct models
        counted once (as placement counts them), spread evenly over its GPUs."""
        used: dict[tuple[str, int], int] = {}
        for server in self.manager.servers.values():
            if not server.state.alive or not server.gpus:
                continue
            held: dict[tuple[str, str], int] = {}
            for lease in self.manager.leases_on(server.id):
                if lease.state.holds_models or lease.state is LeaseState.RELEASING:
                    for model in lease.models:
                        key = (str(model.name), model.uri)
                        held[key] = max(held.get(key, 0), model.memory_bytes)
            memory = sum(held.values())
            if not memory:
                continue
            for index in server.gpus:
                gpu = (server.node, index)
                used[gpu] = used.get(gpu, 0) + memory // len(server.gpus)
        return used

    def gpu_usage(self) -> tuple[int, int]:
        """(GPUs holding at least one lease's models, the memory they hold), read off the
        fleet index placement decides on (the same counting as `gpu_memory`, kept current
        instead of recounted: the benchmark samples it thousands of times)."""
        fleet = self.manager.fleet()
        return fleet.gpus_in_use, fleet.gpu_used_bytes

    def lease(self, lease_id: LeaseId) -> Lease:
        return self.manager.leases[lease_id]


# Lease events name states, or what happened to the lease (RENEWED) without a change.
_NOT_PENDING = frozenset(s.value for s in LeaseState if s is not LeaseState.PENDING)


class _LeavingPending(EventLog):
    """The manager's event log, telling the fleet when a lease leaves PENDING (from its
    events, rather than by reading every waiting lease after each simulated event)."""

    def __init__(self, clock: ManualClock, left: Callable[[str], None]) -> None:
        super().__init__(clock)
        self._left = left

    def emit(
        self,
        kind: str,
        subject: str,
        state: str,
        reason: str = "",
        *,
        lease_id: str = "",
        server_id: str = "",
        progress: tuple[int, int] = (0, 0),
    ) -> Event:
        event = super().emit(
            kind, subject, state, reason, lease_id=lease_id, server_id=server_id, progress=progress
        )
        if kind == "lease" and state in _NOT_PENDING:
            self._left(subject)
        return event
