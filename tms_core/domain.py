"""The daemon's working state: leases, their models and the servers that hold them.

These are plain dataclasses; the store persists them and the lease manager changes them.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

from tms_core.ids import LeaseId, ModelName, ServerId


class LeaseState(enum.StrEnum):
    PENDING = "PENDING"
    LOADING = "LOADING"
    READY = "READY"
    RELEASING = "RELEASING"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    PARKED = "PARKED"
    """Idle at zero replicas: no models loaded, addresses kept; a connection wakes it."""

    @property
    def ended(self) -> bool:
        return self in (LeaseState.RELEASED, LeaseState.EXPIRED, LeaseState.FAILED)

    @property
    def holds_models(self) -> bool:
        """Whether the lease's models should be (or stay) loaded on its server."""
        return self in (LeaseState.LOADING, LeaseState.READY)


class ModelState(enum.StrEnum):
    PENDING = "PENDING"
    FETCHING = "FETCHING"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"


class ServerState(enum.StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def alive(self) -> bool:
        return self in (ServerState.STARTING, ServerState.RUNNING)


@dataclass
class LeaseModel:
    name: ModelName
    uri: str
    memory_bytes: int = 0
    state: ModelState = ModelState.PENDING
    error: str = ""
    load_s: float = 0.0
    measured_bytes: int = 0
    framework: str = ""
    bytes_done: int = 0
    """While FETCHING: bytes downloaded so far (memory only, like `bytes_total`)."""
    bytes_total: int = 0


@dataclass
class LeaseConstraints:
    gpus: int = 0
    gpu_product: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    exclusive: bool = False
    colocate_with: list[str] = field(default_factory=list)
    avoid: list[str] = field(default_factory=list)


@dataclass
class LeaseAutoscale:
    """The lease's replicas follow a Triton metric between `min_replicas` and
    `max_replicas`: decided by the daemon from what each replica's sidecar reads of its
    Triton (docs/leases.md, Autoscaling), or, with `kubernetes.autoscale_mode: hpa`, by a
    HorizontalPodAutoscaler on a metric served through the Prometheus adapter."""

    min_replicas: int = 1
    """0: the lease parks (`LeaseState.PARKED`) once idle for its park window."""
    max_replicas: int = 1
    metric: str = "nv_inference_queue_duration_ms"
    """What replicas follow; the default is the average queue time per request, in
    milliseconds (see `tms_core.manager.scaling.METRICS` for the others)."""
    target: float = 200.0
    """The metric's average value per replica above which replicas are added."""
    up_window_s: float = 0.0
    """The metric must ask for more replicas this long before they are added; 0: the
    daemon's `autoscale.up_window` (the same for the fields below)."""
    down_window_s: float = 0.0
    """The metric must ask for fewer replicas this long before one is removed."""
    up_cooldown_s: float = 0.0
    """No replica is added for this long after a scaling decision."""
    down_cooldown_s: float = 0.0
    """No replica is removed for this long after a scaling decision."""
    drain_s: float = 0.0
    """A replica being removed leaves the lease's address this long before its models are
    unloaded, so that requests under way finish."""
    park_after_s: float = 0.0
    """With `min_replicas` 0: no inference for this long and the lease parks; 0: the
    daemon's `autoscale.park_after`."""


@dataclass
class Lease:
    id: LeaseId
    name: str
    state: LeaseState
    models: list[LeaseModel]
    duration_s: float
    created_at: float
    expires_at: float
    updated_at: float
    reason: str = ""
    server_id: ServerId | None = None
    activity_window_s: float = 0.0
    last_activity_at: float = 0.0
    pool: str = ""
    quota: int = 0
    tritonserver: str = ""
    ready_at: float | None = None
    # The router's stable addresses for this lease (0 until allocated).
    http_port: int = 0
    grpc_port: int = 0
    constraints: LeaseConstraints = field(default_factory=lambda: LeaseConstraints())
    labels: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    autoscale: LeaseAutoscale | None = None
    tenant: str = ""
    """The tenant whose quota the lease counts against ("": none, no quota)."""
    replica_of: LeaseId | None = None
    """Set on a replica record: the lease whose models it holds on one more server. Such a
    record is internal (never listed, placed like any lease, ended with its lease)."""
    replicas_wanted: int = 1
    """On a lease: how many servers should hold its models, itself included."""
    draining_until: float | None = None
    """On a replica being removed: out of the lease's address; unloaded at this time."""
    parked_at: float | None = None
    """PARKED since (None: not parked)."""
    woke_at: float | None = None
    """When its last wake began: a connection (or `Wake`) while it was PARKED."""
    wake_s: float = 0.0
    """How long its last wake took, from the wake to READY (0: none finished yet)."""
    wake_pending: bool = False
    """A wake began and has not reached READY nor failed yet."""
    wake_failed_at: float | None = None
    """PARKED after a wake that failed: when that wake began (`reason` says why)."""

    @property
    def waking(self) -> bool:
        """On its way from PARKED to READY: woken, and not READY since."""
        return self.wake_pending and self.state in (LeaseState.PENDING, LeaseState.LOADING)

    @property
    def wake_failed(self) -> bool:
        """PARKED again after a wake that did not reach READY (`reason` says why)."""
        return self.state is LeaseState.PARKED and self.wake_failed_at is not None

    @property
    def tags(self) -> set[str]:
        """What `colocate_with` and `avoid` of other leases match: its id, labels, names."""
        return {self.id, *(f"{k}={v}" for k, v in self.labels.items())}

    @property
    def memory_bytes(self) -> int:
        return sum(m.memory_bytes for m in self.models)


@dataclass(frozen=True)
class CachedModel:
    """One model in a node's cache."""

    name: str
    uri: str
    bytes: int
    last_used: float
    in_use: bool
    version: str = ""


@dataclass(frozen=True)
class NodeCache:
    """A node's model cache as a sidecar there last read it (memory only: the daemon learns
    it again from the next report after a restart)."""

    size_bytes: int
    cap_bytes: int
    models: tuple[CachedModel, ...]
    read_at: float
    server_id: str = ""


@dataclass(frozen=True)
class TritonLoad:
    """A model's load as its server's sidecar read Triton's metrics endpoint: counters
    cumulative since the model loaded, and the requests pending at the time."""

    queue_us: float = 0.0
    requests: int = 0
    inferences: int = 0
    pending: float = 0.0
    read_at: float = 0.0
    """When the sidecar read them (its own clock, seconds; 0: not said): rates are taken
    over the interval between readings, not between reports, which other changes also send."""


@dataclass
class ServedModel:
    """A model as the server's sidecar last reported it."""

    name: ModelName
    uri: str
    state: ModelState
    error: str = ""
    load_s: float = 0.0
    memory_bytes: int = 0
    inference_count: int = 0
    last_inference_at: float = 0.0
    gpu_memory_bytes: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    load: TritonLoad | None = None
    """What the metrics endpoint said (None: not read); what autoscaling decides on."""

    @property
    def measured_bytes(self) -> int:
        """What placement should count: GPU memory where the model is on a GPU, else RSS."""
        return self.gpu_memory_bytes or self.memory_bytes


@dataclass
class LeaseNameRecord:
    """A stable name: new connections to its addresses go to `lease_id`'s servers."""

    name: str
    lease_id: LeaseId | None
    http_port: int
    grpc_port: int
    updated_at: float
    # Re-pointing waits for this lease to be READY, so the name never routes to nothing.
    next_lease_id: LeaseId | None = None


@dataclass
class Pool:
    name: str
    tritonserver: str
    server_memory: int
    min_servers: int
    max_servers: int
    quota_per_server: int
    created_at: float


@dataclass
class TenantQuota:
    """What a tenant's live leases may add up to; 0 is no limit."""

    leases: int = 0
    gpus: int = 0
    gpu_memory: int = 0
    host_memory: int = 0
    replicas: int = 0


@dataclass
class Tenant:
    name: str
    quota: TenantQuota
    over_quota: str = "refuse"
    """What a lease beyond the quota does: `refuse` (RESOURCE_EXHAUSTED) or `wait` (PENDING
    until the tenant's other leases make room)."""
    created_at: float = 0.0


@dataclass
class ApiToken:
    """An API token as kept: its hash only (the token is shown once, at creation)."""

    name: str
    hash: str
    role: str
    tenant: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


@dataclass
class AuditRecord:
    """One state-changing call (or a refused one): who, what, when, and the outcome."""

    at: float
    who: str
    role: str
    tenant: str
    method: str
    target: str
    outcome: str
    detail: str = ""
    seq: int = 0


@dataclass
class Server:
    id: ServerId
    state: ServerState
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    work_dir: str
    capacity_bytes: int
    created_at: float
    pid: int | None = None
    sidecar_pid: int | None = None
    binary: str = ""
    reason: str = ""
    idle_since: float | None = None
    triton_ready: bool = False
    pool: str = ""
    node: str = ""
    gpus: tuple[int, ...] = ()
    framework_group: str = ""
    leak: str = ""
    """Memory an unload did not give back (from the sidecar): the server takes no new lease
    and is recycled once empty."""
    models: dict[ModelName, ServedModel] = field(default_factory=dict)

    @property
    def http_endpoint(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_endpoint(self) -> str:
        return f"{self.host}:{self.metrics_port}"


@dataclass(frozen=True)
class PublishedState:
    """The live leases, the names and the servers, as just committed (read, never change):
    what the stable addresses (the router's routes, Kubernetes Services) are made from."""

    leases: Mapping[LeaseId, Lease]
    names: Mapping[str, LeaseNameRecord]
    servers: Mapping[ServerId, Server]
    replicas: Mapping[LeaseId, Mapping[LeaseId, Lease]] = field(default_factory=dict)
    """The live replica records of each lease that has some (also among `leases`)."""

    def serving(self, lease: Lease | None) -> list[Server]:
        """The servers a lease's stable address leads to: its own while the lease is READY
        (a LOADING one, a restarting server's included, would refuse or fail requests: the
        router holds its connections instead), and each replica's while READY and not
        draining (also while the lease itself waits to be placed again)."""
        if lease is None or lease.state.ended or lease.state is LeaseState.RELEASING:
            return []
        found = []
        own = self.servers.get(lease.server_id) if lease.server_id else None
        if own is not None and own.state.alive and lease.state is LeaseState.READY:
            found.append(own)
        for replica in self.replicas.get(lease.id, {}).values():
            server = self.servers.get(replica.server_id) if replica.server_id else None
            if (
                server is not None
                and server.state.alive
                and replica.state is LeaseState.READY
                and replica.draining_until is None
                and all(server.id != other.id for other in found)
            ):
                found.append(server)
        return found


@dataclass(frozen=True)
class Assignment:
    """The models a server should hold, numbered so that a sidecar can tell news apart."""

    generation: int
    models: list[tuple[ModelName, str]]


_PLAIN = (str, int, float, bool, type(None))
_T = TypeVar("_T")


def copy_lease(lease: Lease) -> Lease:
    """A copy that shares nothing mutable with `lease` (as deepcopy, at a fraction of the
    cost: every acquire, renewal and release returns one). Plain values are shared; lists,
    dicts and dataclasses are copied level by level; anything else is deep-copied."""
    return _copied(lease)


def _copied(value: _T) -> _T:
    if isinstance(value, _PLAIN):
        return value
    kind: type = type(value)
    if kind is list:
        return cast(_T, [_copied(item) for item in cast(list[object], value)])
    if kind is dict:
        # Keys are hashable, so as good as immutable here (strings in every domain dict).
        items = cast(dict[object, object], value).items()
        return cast(_T, {key: _copied(item) for key, item in items})
    names = _field_names(kind)
    if names is None:
        return copy.deepcopy(value)
    state = getattr(value, "__dict__", None)
    if state is None:  # slots
        copied = copy.copy(value)
    else:
        # What copy.copy does for a plain instance, without its __reduce_ex__ round trip
        # (a third of the copy's cost).
        copied = object.__new__(kind)
        copied.__dict__.update(state)
    for name in names:
        item = getattr(value, name)
        if not isinstance(item, _PLAIN):
            object.__setattr__(copied, name, _copied(item))
    return copied


@functools.cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    """A dataclass's field names (None for any other type); read once per class, since
    `dataclasses.fields` showed in the renewal path's profile."""
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple(item.name for item in dataclasses.fields(kind))
