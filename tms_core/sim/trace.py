"""Generated lease traces for the simulator, and the policies played over them.

A trace is a list of requests: at a time (Poisson arrivals) a user needs one model (Zipf
popularity over a catalogue whose sizes are log-normal, clipped to a range) for a while
(exponential holding time). `play_per_request` runs it through the simulated fleet with one
lease per request; `play_activity` with one lease per model that lives on while it is used
(activity renewal). docs/placement.md ("Simulator") describes the parameters.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tms_core.config import Settings, load_settings
from tms_core.domain import LeaseState
from tms_core.ids import LeaseId
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.sim.backend import parse_fleet
from tms_core.sim.fleet import SimFleet

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class TraceSpec:
    nodes: int = 1000
    gpus_per_node: int = 8
    gpu_gib: int = 80
    requests: int = 50_000
    models: int = 20_000
    zipf_s: float = 0.8
    """Popularity of the k-th model is proportional to 1 / k**zipf_s."""
    memory_median_gib: float = 4.0
    memory_sigma: float = 1.2
    """Of the log-normal model sizes, before clipping to [memory_min_gib, memory_max_gib]."""
    memory_min_gib: float = 0.5
    memory_max_gib: float = 40.0
    arrivals_per_s: float = 4.0
    mean_hold_s: float = 3600.0
    start_s: float = 10.0
    """Simulated start of a Triton server."""
    load_s_base: float = 2.0
    load_s_per_gib: float = 0.5
    """Simulated model load: base + per GiB of the model."""
    seed: int = 7
    priorities: int = 1
    """Priority classes, drawn uniformly per request (0 to priorities - 1) from a generator
    of their own, so that the rest of the trace is the same whatever their number."""

    @property
    def fleet(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}x{self.gpu_gib}GiB"


@dataclass(frozen=True)
class Request:
    at: float
    model: int
    hold_s: float
    priority: int = 0


@dataclass
class Trace:
    spec: TraceSpec
    requests: list[Request]
    memory: list[int]
    """Bytes of each model of the catalogue."""

    def load_s(self, model: int) -> float:
        return self.spec.load_s_base + self.spec.load_s_per_gib * self.memory[model] / GiB

    def model_request(self, model: int) -> ModelRequest:
        return ModelRequest(f"m{model}", f"sim://models/m{model}", self.memory[model])


def generate(spec: TraceSpec) -> Trace:
    rng = random.Random(spec.seed)
    memory = []
    for _ in range(spec.models):
        gib = rng.lognormvariate(math.log(spec.memory_median_gib), spec.memory_sigma)
        gib = min(max(gib, spec.memory_min_gib), spec.memory_max_gib)
        memory.append(int(gib * GiB) // MiB * MiB)
    weights = [1 / (k + 1) ** spec.zipf_s for k in range(spec.models)]
    cumulative = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    requests = []
    now = 0.0
    ranks = random.Random(spec.seed + 1)
    for _ in range(spec.requests):
        now += rng.expovariate(spec.arrivals_per_s)
        model = min(bisect.bisect_left(cumulative, rng.random() * total), spec.models - 1)
        hold = rng.expovariate(1 / spec.mean_hold_s)
        priority = ranks.randrange(spec.priorities) if spec.priorities > 1 else 0
        requests.append(Request(now, model, hold, priority))
    return Trace(spec, requests, memory)


def sim_settings(spec: TraceSpec, *, consolidate: bool = False) -> Settings:
    """The manager's settings for a trace; `consolidate` turns consolidation on (moves after
    10 minutes without an inference, a pass every 5 minutes: the defaults)."""
    return load_settings(
        servers={
            "memory": spec.gpu_gib * GiB,
            "max_servers": spec.nodes * spec.gpus_per_node * 4,
            "idle_grace": 60.0,
            "start_timeout": 600.0,
        },
        lease={"default_duration": 3600.0, "max_duration": 365 * 86400.0},
        placement={"consolidate": consolidate},
    )


@dataclass
class Sample:
    at: float
    gpus_in_use: int
    declared_bytes: int
    leases: int


@dataclass
class Played:
    fleet: SimFleet
    samples: list[Sample] = field(default_factory=list)
    ttfi_s: list[float] = field(default_factory=list)
    """Time from each request to its model being READY for it (0 when it already was)."""
    lease_ids: list[LeaseId] = field(default_factory=list)
    used_until: dict[LeaseId, float] = field(default_factory=dict)
    """(Activity renewal) when the last request a lease served stopped using it."""
    servers_started: int = 0
    start: float = 0.0
    """The simulated time the trace's second 0 is played at."""

    def memory_gib_hours(self, sample_s: float) -> float:
        return sum(s.declared_bytes for s in self.samples) * sample_s / GiB / 3600

    def gpu_hours(self, sample_s: float) -> float:
        """GPUs in use, integrated over the samples."""
        return sum(s.gpus_in_use for s in self.samples) * sample_s / 3600


def _fleet(trace: Trace, tick_s: float, consolidate: bool = False) -> SimFleet:
    spec = trace.spec
    catalogue = {f"m{k}": k for k in range(spec.models)}
    return SimFleet(
        nodes=parse_fleet(spec.fleet),
        settings=sim_settings(spec, consolidate=consolidate),
        start_s=spec.start_s,
        load_s=lambda name, uri: trace.load_s(catalogue[name]),
        tick_s=tick_s,
    )


def _sampling(fleet: SimFleet, played: Played, every: float, until: float) -> None:
    def sample() -> None:
        gpus, declared = fleet.gpu_usage()
        played.samples.append(Sample(fleet.now, gpus, declared, fleet.manager.live_count()))
        if fleet.now + every <= until:
            fleet.after(every, sample)

    fleet.after(every, sample)


async def play_per_request(
    trace: Trace,
    *,
    sample_s: float = 60.0,
    watch: Callable[[SimFleet], None] | None = None,
    consolidate: bool = False,
) -> Played:
    """One lease per request, released when the request's holding time is over.
    `watch` is handed the fleet before it runs (to schedule checks). With `consolidate`,
    the manager consolidates; the simulated holders report no inferences, so every lease
    READY for 10 minutes may move."""
    fleet = _fleet(trace, sample_s, consolidate)
    if watch is not None:
        watch(fleet)
    await fleet.start()
    played = Played(fleet, start=fleet.now)
    start = fleet.now
    end = start + max(r.at + r.hold_s for r in trace.requests)

    def arrive(request: Request) -> object:
        async def act() -> None:
            lease = await fleet.acquire(
                [trace.model_request(request.model)],
                LeaseOptions(duration_s=request.hold_s + 3600, priority=request.priority),
            )
            played.lease_ids.append(lease.id)
            fleet.at(fleet.now + request.hold_s, lambda: fleet.manager.release(lease.id))

        return act

    for request in trace.requests:
        fleet.at(start + request.at, arrive(request))  # type: ignore[arg-type]
    _sampling(fleet, played, sample_s, end)
    await fleet.run()
    for lease_id in played.lease_ids:
        lease = fleet.lease(lease_id)
        if lease.ready_at is not None:
            played.ttfi_s.append(lease.ready_at - lease.created_at)
    played.servers_started = fleet.backend.started
    return played


async def play_activity(trace: Trace, *, window_s: float = 600.0, sample_s: float = 60.0) -> Played:
    """One lease per model, renewed by activity: a request finds its model's lease (or
    acquires one), and its inferences keep the lease alive until `window_s` after the last."""
    fleet = _fleet(trace, sample_s)
    await fleet.start()
    played = Played(fleet, start=fleet.now)
    start = fleet.now
    end = start + max(r.at + r.hold_s for r in trace.requests)
    live: dict[int, LeaseId] = {}
    busy_until: dict[int, float] = {}
    waiting: list[tuple[float, LeaseId]] = []

    async def keep_alive(model: int) -> None:
        lease_id = live.get(model)
        if lease_id is None:
            return
        lease = fleet.lease(lease_id)
        if lease.state.ended:
            return
        if lease.server_id is not None and lease.state is LeaseState.READY:
            await fleet.inference(lease.server_id, [f"m{model}"])
        if fleet.now < busy_until[model]:
            fleet.after(min(window_s / 2, busy_until[model] - fleet.now), lambda: keep_alive(model))

    def arrive(request: Request) -> object:
        async def act() -> None:
            model = request.model
            lease_id = live.get(model)
            lease = fleet.lease(lease_id) if lease_id else None
            if lease is None or lease.state.ended or lease.state is LeaseState.RELEASING:
                lease = await fleet.acquire(
                    [trace.model_request(model)],
                    LeaseOptions(duration_s=window_s, activity_window_s=window_s),
                )
                live[model] = lease.id
                played.lease_ids.append(lease.id)
                renewing = False
            else:
                renewing = fleet.now < busy_until.get(model, 0)
            waiting.append((fleet.now, lease.id))
            busy_until[model] = max(busy_until.get(model, 0), fleet.now + request.hold_s)
            played.used_until[lease.id] = max(
                played.used_until.get(lease.id, 0.0), fleet.now + request.hold_s
            )
            if not renewing:
                await keep_alive(model)

        return act

    for request in trace.requests:
        fleet.at(start + request.at, arrive(request))  # type: ignore[arg-type]
    _sampling(fleet, played, sample_s, end)
    await fleet.run()
    for asked, lease_id in waiting:
        lease = fleet.lease(lease_id)
        if lease.ready_at is not None:
            played.ttfi_s.append(max(0.0, lease.ready_at - asked))
    played.servers_started = fleet.backend.started
    return played


def keep_everything_loaded(trace: Trace) -> tuple[float, list[float]]:
    """(memory GiB-hours, time to first inference per request) when every model stays
    loaded from its first request to the end of the trace: computed, not simulated. The
    fleet's servers are kept running, so a model's first request waits for its load only."""
    end = max(r.at + r.hold_s for r in trace.requests)
    first: dict[int, float] = {}
    ttfi = []
    for request in trace.requests:
        if request.model not in first:
            first[request.model] = request.at
            ttfi.append(trace.load_s(request.model))
        else:
            # Loaded since an earlier request (or still loading for one moments ago).
            ready = first[request.model] + trace.load_s(request.model)
            ttfi.append(max(0.0, ready - request.at))
    hours = sum(trace.memory[m] * (end - at) for m, at in first.items()) / GiB / 3600
    return hours, ttfi
