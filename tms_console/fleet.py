"""The fleet as the consoles show it, with no UI library: node → GPU (or host memory) → the
memory declared and measured in use there, the servers and leases on it; and the leases as
table rows (expires in, activity).

Built once from `TmsClient.cluster()` and `list_leases()`, then kept current from `watch()`
events: each event is applied at once where it says enough (a lease's new state, a server
that stopped) and names what to fetch again (`Followup`): the leases it touched, one at a
time, or the cluster's topology when servers came or went. `fetch` gets those into an
`Update`, which `Fleet.apply_update` applies in one pass; `tms_console.feed.FleetFeed` runs
that loop in threads for the Textual console and the Jupyter dashboard, and `Fleet.sync`
does it in one call.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import (
    ClientError,
    TmsClient,
    download_progress,
    model_state_name,
    state_name,
)
from tms_core.units import format_duration

# Above this many leases to fetch again, one List is cheaper than that many Status calls.
LIST_THRESHOLD = 32

ENDED = frozenset({"RELEASED", "EXPIRED", "FAILED"})
SERVER_GONE = frozenset({"STOPPING", "STOPPED", "FAILED"})


@dataclass
class Slot:
    """One GPU, or a node's host memory (where CPU servers run)."""

    node: str
    gpu: int | None  # None: host memory
    product: str
    total_bytes: int
    declared_bytes: int = 0
    measured_bytes: int = 0
    device_used_bytes: int = 0  # NVML's reading of the whole device; 0 when declared
    server_ids: list[str] = field(default_factory=list)
    lease_ids: list[str] = field(default_factory=list)
    standby_ids: set[str] = field(default_factory=set)
    """Its servers kept started and empty for cold leases (`servers.standby`)."""

    @property
    def key(self) -> str:
        return f"{self.node}/host" if self.gpu is None else f"{self.node}/gpu{self.gpu}"

    @property
    def label(self) -> str:
        return "host" if self.gpu is None else f"GPU {self.gpu}"

    def fraction(self, used: int) -> float:
        return min(1.0, used / self.total_bytes) if self.total_bytes > 0 else 0.0


@dataclass
class Node:
    name: str
    source: str  # nvml | declared
    labels: dict[str, str]
    host: Slot
    gpus: list[Slot]

    @property
    def slots(self) -> list[Slot]:
        return [*self.gpus, self.host]


@dataclass(frozen=True)
class LeaseRow:
    """A lease as one line of the leases table."""

    id: str
    name: str
    state: str
    models: str
    owner: str
    server: str
    pool: str
    expires_at: float
    activity_window_s: float
    last_activity_at: float
    replicas: str = "-"
    """An autoscaling lease's serving replicas / wanted, and its range: `2/2 of 1:4`."""

    def expires_in(self, now: float) -> float:
        return self.expires_at - now

    def expires_text(self, now: float) -> str:
        if self.state in ENDED or not self.expires_at:
            return "-"
        left = self.expires_in(now)
        return "expired" if left <= 0 else format_duration(left)

    def activity(self, now: float) -> str:
        """When it was last used; ↻ and the window for leases that use keeps alive."""
        used = (
            f"{format_duration(now - self.last_activity_at)} ago" if self.last_activity_at else ""
        )
        if self.activity_window_s > 0:
            return f"{used or 'unused'} ↻{format_duration(self.activity_window_s)}"
        return used or "-"

    def matches(self, text: str) -> bool:
        """Case-insensitive substring match on any column a person would filter by."""
        needle = text.strip().lower()
        if not needle:
            return True
        haystack = (self.id, self.name, self.state, self.models, self.owner, self.server)
        return any(needle in value.lower() for value in haystack)


def lease_row(lease: pb.Lease) -> LeaseRow:
    return LeaseRow(
        id=lease.id,
        name=lease.name,
        state=state_name(lease.state),
        models=", ".join(_model_text(m) for m in lease.models),
        owner=lease.labels.get("owner", ""),
        server=lease.server_id,
        pool=lease.pool,
        expires_at=lease.expires_at,
        activity_window_s=lease.activity_window_s,
        last_activity_at=lease.last_activity_at,
        replicas=_replicas_text(lease),
    )


def _replicas_text(lease: pb.Lease) -> str:
    if not lease.HasField("autoscale"):
        return "-"
    scale = lease.autoscale
    low = scale.min_replicas if scale.HasField("min_replicas") else 1
    serving = len(lease.endpoints.servers)
    return f"{serving}/{lease.replicas_wanted} of {low}:{scale.max_replicas}"


SORT_KEYS: dict[str, Callable[[LeaseRow], object]] = {
    "id": lambda r: r.id,
    "name": lambda r: (r.name == "", r.name),
    "state": lambda r: r.state,
    "models": lambda r: r.models,
    "owner": lambda r: (r.owner == "", r.owner),
    "server": lambda r: (r.server == "", r.server),
    "expires": lambda r: r.expires_at,
    "activity": lambda r: -r.last_activity_at,
}


@dataclass
class Followup:
    """What an event says should be fetched again."""

    lease_ids: set[str] = field(default_factory=set)
    cluster: bool = False

    def merge(self, other: Followup) -> None:
        self.lease_ids |= other.lease_ids
        self.cluster = self.cluster or other.cluster

    def __bool__(self) -> bool:
        return bool(self.lease_ids) or self.cluster


class Fleet:
    """The whole fleet, kept current from events. Not thread-safe: one owner applies."""

    def __init__(self, *, keep_events: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.nodes: list[Node] = []
        self.leases: dict[str, pb.Lease] = {}  # live leases (not ended)
        self.events: collections.deque[pb.Event] = collections.deque(maxlen=keep_events)
        self.last_seq = 0  # the newest event applied
        self.events_seen = 0  # how many were ever applied, for views that append what is new
        self.version = 0  # bumped on every change, for views that redraw only when it moves
        self._idle_servers: dict[str, set[str]] = {}  # slot key → servers from the cluster
        self._gone_servers: set[str] = set()
        self._seen: set[tuple[int, float]] = set()

    # Loading

    def load(self, client: TmsClient) -> None:
        """Everything from scratch: topology, servers and live leases."""
        cluster = client.cluster()
        leases = client.list_leases()
        self.apply_cluster(cluster)
        self.apply_leases(leases, complete=True)

    def apply_cluster(self, status: pb.ClusterStatus) -> None:
        nodes = []
        servers: dict[str, set[str]] = {}
        for node in status.nodes:
            host = Slot(
                node.name,
                None,
                "",
                node.cpu.total_bytes,
                standby_ids=set(node.cpu.standby_server_ids),
            )
            gpus = [
                Slot(
                    node.name,
                    gpu.index,
                    gpu.product,
                    gpu.memory.total_bytes,
                    device_used_bytes=gpu.device_used_bytes,
                    standby_ids=set(gpu.memory.standby_server_ids),
                )
                for gpu in node.gpus
            ]
            servers[host.key] = set(node.cpu.server_ids)
            for gpu, slot in zip(node.gpus, gpus, strict=True):
                servers[slot.key] = set(gpu.memory.server_ids)
            nodes.append(Node(node.name, node.source, dict(node.labels), host, gpus))
        self.nodes = nodes
        self._idle_servers = servers
        self._gone_servers.clear()
        self._recount()

    def apply_leases(self, leases: Iterable[pb.Lease], *, complete: bool = False) -> None:
        """Updates these leases; with `complete`, they are all the live ones there are."""
        if complete:
            self.leases = {}
        for lease in leases:
            self._put(lease)
        self._recount()

    def apply_lease(self, lease: pb.Lease) -> None:
        self._put(lease)
        self._recount()

    def _put(self, lease: pb.Lease) -> None:
        if lease.state in (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED):
            self.leases.pop(lease.id, None)
        else:
            self.leases[lease.id] = lease

    # Events

    def apply_event(self, event: pb.Event) -> Followup:
        """Records the event, applies what it says, and names what to fetch again."""
        follow = self._apply_event(event)
        self._recount()
        return follow

    def _apply_event(self, event: pb.Event) -> Followup:
        key = (event.seq, event.at)
        if key in self._seen:
            return Followup()  # replayed after a reconnect
        if len(self.events) == self.events.maxlen:
            self._seen.discard((self.events[0].seq, self.events[0].at))
        self._seen.add(key)
        self.last_seq = event.seq
        self.events_seen += 1
        self.events.append(event)
        lease = self.leases.get(event.lease_id) if event.lease_id else None
        if event.kind == "lease" and lease is not None:
            if event.state in ENDED:
                del self.leases[event.lease_id]
            elif f"LEASE_{event.state}" in pb.LeaseState.keys():
                lease.state = pb.LeaseState.Value(f"LEASE_{event.state}")  # type: ignore[assignment]
                lease.reason = event.reason
        elif event.kind == "model" and lease is not None:
            for model in lease.models:
                if model.name == event.id and f"MODEL_{event.state}" in pb.ModelState.keys():
                    model.state = pb.ModelState.Value(f"MODEL_{event.state}")  # type: ignore[assignment]
                    model.error = event.reason if event.state == "FAILED" else model.error
                    # A FETCHING event carries the download's progress (zeros otherwise).
                    model.bytes_done, model.bytes_total = event.bytes_done, event.bytes_total
        elif event.kind == "server" and event.state in SERVER_GONE:
            self._gone_servers.add(event.id)
        return followup(event)

    def sync(self, client: TmsClient, follow: Followup) -> None:
        """Fetches what `follow` names and applies it; a lease gone or ended leaves."""
        self.apply_update(fetch(client, follow))

    def apply_update(self, update: Update) -> None:
        """Applies a feed's batch: its events first, then what was fetched after them."""
        for event in update.events:
            self._apply_event(event)
        if update.cluster is not None:
            self.apply_cluster(update.cluster)
        if update.complete:
            self.leases = {}
        for lease in update.leases:
            self._put(lease)
        for lease_id in update.missing:
            self.leases.pop(lease_id, None)
        self._recount()

    # Views

    def rows(
        self, *, sort: str = "expires", reverse: bool = False, filter_text: str = ""
    ) -> list[LeaseRow]:
        if sort not in SORT_KEYS:
            raise ValueError(f"sort: {sort!r} is not a column; expected one of {list(SORT_KEYS)}")
        rows = [lease_row(lease) for lease in self.leases.values()]
        rows = [r for r in rows if r.matches(filter_text)]
        key = SORT_KEYS[sort]
        return sorted(rows, key=lambda r: (key(r), r.id), reverse=reverse)

    def ready_leases(self) -> list[pb.Lease]:
        return [lease for lease in self.leases.values() if lease.state == pb.LEASE_READY]

    def lease_events(self, lease_id: str) -> list[pb.Event]:
        return [e for e in self.events if e.lease_id == lease_id or e.id == lease_id]

    def slots(self) -> list[Slot]:
        return [slot for node in self.nodes for slot in node.slots]

    def totals(self) -> tuple[int, int, int]:
        """(total, declared, measured) bytes over every GPU, or over hosts without GPUs."""
        slots = [s for n in self.nodes for s in (n.gpus or [n.host])]
        return (
            sum(s.total_bytes for s in slots),
            sum(s.declared_bytes for s in slots),
            sum(s.measured_bytes for s in slots),
        )

    # Occupancy from the leases, so a lease event moves the bars without a cluster call.

    def _recount(self) -> None:
        self.version += 1
        by_key = {slot.key: slot for slot in self.slots()}
        for slot in by_key.values():
            slot.declared_bytes = slot.measured_bytes = 0
            slot.lease_ids = []
            slot.server_ids = sorted(self._idle_servers.get(slot.key, set()) - self._gone_servers)
        by_server: dict[str, list[pb.Lease]] = {}
        for lease in self.leases.values():
            if lease.server_id and lease.server_id not in self._gone_servers:
                by_server.setdefault(lease.server_id, []).append(lease)
        for server_id, leases in by_server.items():
            first = leases[0]
            keys = [f"{first.node}/gpu{i}" for i in first.server_gpus] or [f"{first.node}/host"]
            targets = [by_key[k] for k in keys if k in by_key]
            if not targets:
                continue
            declared: dict[tuple[str, str], int] = {}
            measured: dict[tuple[str, str], int] = {}
            for lease in leases:
                for model in lease.models:
                    key = (model.name, model.uri)
                    declared[key] = max(declared.get(key, 0), model.memory_bytes)
                    measured[key] = max(measured.get(key, 0), model.measured_bytes)
            for slot in targets:
                # A server's models are spread evenly over its GPUs, as `tms cluster` counts.
                slot.declared_bytes += sum(declared.values()) // len(targets)
                slot.measured_bytes += sum(measured.values()) // len(targets)
                if server_id not in slot.server_ids:
                    slot.server_ids.append(server_id)
                slot.lease_ids.extend(lease.id for lease in leases)


def model_lines(lease: pb.Lease) -> list[tuple[str, str, str]]:
    """(name, state, error) for each of the lease's models."""
    return [(m.name, model_state_name(m.state), m.error) for m in lease.models]


@dataclass
class Update:
    """A batch for `Fleet.apply_update`: events, and what was fetched because of them."""

    events: list[pb.Event] = field(default_factory=list)
    cluster: pb.ClusterStatus | None = None
    leases: list[pb.Lease] = field(default_factory=list)
    complete: bool = False  # `leases` are all the live leases there are
    missing: set[str] = field(default_factory=set)  # leases the daemon no longer has


def followup(event: pb.Event) -> Followup:
    """What to fetch again after `event`, whatever the fleet already holds."""
    if event.kind in ("lease", "model", "name") and event.lease_id:
        return Followup(lease_ids={event.lease_id})
    if event.kind == "server" and event.state not in SERVER_GONE:
        return Followup(cluster=True)
    return Followup()


def fetch(client: TmsClient, follow: Followup) -> Update:
    """Fetches what `follow` names: the cluster, and the leases one by one or all at once."""
    update = Update(cluster=client.cluster() if follow.cluster else None)
    if len(follow.lease_ids) > LIST_THRESHOLD:
        update.leases, update.complete = client.list_leases(), True
        return update
    for lease_id in sorted(follow.lease_ids):
        try:
            update.leases.append(client.status(lease_id))
        except ClientError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            update.missing.add(lease_id)  # gone from the store: long ended
    return update


def snapshot(client: TmsClient) -> Update:
    return Update(cluster=client.cluster(), leases=client.list_leases(), complete=True)


def _model_text(model: pb.ModelStatus) -> str:
    """The model's name, with its download's progress while it is fetched."""
    progress = download_progress(model)
    return f"{model.name} ({progress})" if progress else model.name
