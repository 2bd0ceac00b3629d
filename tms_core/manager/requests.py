"""Lease requests: validating what a caller asked for and building the lease from it.

Pure: every bad field raises InvalidArgument naming it and what was expected. What needs
I/O (reading a model's configuration, asking the backend whether it autoscales) is done by
the caller and handed in.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tms_core.config import Settings
from tms_core.domain import Lease, LeaseAutoscale, LeaseConstraints, LeaseModel, LeaseState
from tms_core.errors import InvalidArgument
from tms_core.ids import LeaseId, ModelName
from tms_core.inventory import Node
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.units import format_duration

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")
"""A model's name is its directory in Triton's repository: never `.`, `..` or hidden."""
METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}\Z")
LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?\Z")
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def check_dns_label(field: str, value: str) -> None:
    """Lease names and pool names become Kubernetes object names: DNS-1123 labels."""
    if not DNS1123_LABEL.match(value):
        raise InvalidArgument(
            field,
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
        )


MIN_ACTIVITY_WINDOW_S = 1.0
"""Sidecars read Triton's inference statistics every second: a shorter activity window
could not be honoured."""

MAX_REPLICAS = 1000
"""Replicas an autoscaled lease may ask for at most: a bound on what one request can make the
cluster schedule."""

LEASE_ID_SHAPE = re.compile(r"^l-[0-9a-f]{12}\Z")


def check_lease_name(field: str, value: str) -> None:
    """A lease name is a DNS-1123 label that cannot be mistaken for a lease id, since
    wherever a lease id is accepted a name is too."""
    check_dns_label(field, value)
    if LEASE_ID_SHAPE.match(value):
        raise InvalidArgument(
            field,
            f"{value!r} has the shape of a lease id (l- and 12 hex digits); "
            "choose a name that cannot be mistaken for one",
        )


def check_models(models: Sequence[ModelRequest]) -> list[ModelRequest]:
    """The models, checked; a `sha256` is folded into the URI as `#sha256=` (where the
    sidecars read it), naming the field when it is malformed or disagrees with the URI's."""
    if not models:
        raise InvalidArgument("models", "a lease needs at least one model")
    seen: set[str] = set()
    for i, model in enumerate(models):
        field = f"models[{i}]"
        if not MODEL_NAME.match(model.name):
            raise InvalidArgument(
                f"{field}.name",
                f"{model.name!r} is not a Triton model name (letters, digits, '_', '.', '-';"
                " starting with a letter, digit or '_')",
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
    return [with_sha256(f"models[{i}]", m) for i, m in enumerate(models)]


def with_sha256(field: str, model: ModelRequest) -> ModelRequest:
    """`model` with its `sha256` (if any) in its URI's fragment."""
    base, _, fragment = model.uri.partition("#")
    named = ""
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not SHA256.match(value.lower()):
            raise InvalidArgument(
                f"{field}.uri", f"the fragment {fragment!r} must be sha256=<64 hex digits>"
            )
        named = value.lower()
    wanted = model.sha256.strip().lower()
    if wanted and not SHA256.match(wanted):
        raise InvalidArgument(
            f"{field}.sha256", f"{model.sha256!r} is not a sha256 digest (64 hex digits)"
        )
    if wanted and named and wanted != named:
        raise InvalidArgument(
            f"{field}.sha256", f"differs from the sha256 in the URI's fragment ({named})"
        )
    digest = wanted or named
    if not digest:
        return model
    return dataclasses.replace(model, uri=f"{base}#sha256={digest}", sha256=digest)


def duration(seconds: float, field: str, settings: Settings) -> float:
    """A lease duration in seconds (0: the default), within `lease.max_duration`."""
    if seconds < 0:
        raise InvalidArgument(field, "must not be negative")
    if not math.isfinite(seconds):
        raise InvalidArgument(field, f"{seconds} is not a duration; expected finite seconds")
    chosen = seconds or settings.lease.default_duration
    cap = settings.lease.max_duration
    if chosen > cap:
        raise InvalidArgument(
            field,
            f"{format_duration(chosen)} is over the maximum of {format_duration(cap)} "
            "(lease.max_duration)",
        )
    return chosen


SCALING_METRICS = {
    "nv_inference_queue_duration_ms": "average queue time per request, in milliseconds",
    "nv_inference_pending_request_count": "requests waiting or running, per replica",
    "nv_inference_count_per_second": "inferences per second, per replica",
}
"""The metrics the daemon scales replicas on, read by each replica's sidecar from its Triton
(`manager/scaling.py`). With `kubernetes.autoscale_mode: hpa` any Prometheus metric name."""

_TIMINGS = (
    "up_window_s",
    "down_window_s",
    "up_cooldown_s",
    "down_cooldown_s",
    "drain_s",
    "park_after_s",
)


def autoscale(options: LeaseOptions, *, hpa: bool = False) -> LeaseAutoscale | None:
    wanted = options.autoscale
    if wanted is None:
        return None
    if options.pool:
        raise InvalidArgument("autoscale", "pool leases do not autoscale; only bespoke ones do")
    if wanted.min_replicas < 0:
        raise InvalidArgument(
            "autoscale.min_replicas", "must be 0 (park when idle) or more; 1 when not given"
        )
    if wanted.min_replicas == 0 and hpa:
        raise InvalidArgument(
            "autoscale.min_replicas",
            "0 (parking) needs the daemon's own autoscaling; a HorizontalPodAutoscaler "
            "(kubernetes.autoscale_mode: hpa) does not scale to zero",
        )
    if wanted.max_replicas < 1:
        raise InvalidArgument("autoscale.max_replicas", "must be at least 1")
    if wanted.max_replicas > MAX_REPLICAS:
        raise InvalidArgument(
            "autoscale.max_replicas", f"{wanted.max_replicas} is over the limit of {MAX_REPLICAS}"
        )
    if wanted.max_replicas < wanted.min_replicas:
        raise InvalidArgument(
            "autoscale.max_replicas", f"must be at least min_replicas ({wanted.min_replicas})"
        )
    if hpa and not METRIC.match(wanted.metric):
        raise InvalidArgument(
            "autoscale.metric",
            f"{wanted.metric!r} is not a metric name (letters, digits and '_', such as "
            "nv_inference_queue_duration_ms)",
        )
    if not hpa and wanted.metric not in SCALING_METRICS:
        raise InvalidArgument(
            "autoscale.metric",
            f"{wanted.metric!r} is not one the daemon scales on; expected one of "
            + ", ".join(SCALING_METRICS),
        )
    if not (math.isfinite(wanted.target) and wanted.target > 0):
        raise InvalidArgument("autoscale.target", "must be a number above 0")
    for key in _TIMINGS:
        value = getattr(wanted, key)
        if not (math.isfinite(value) and value >= 0):
            raise InvalidArgument(f"autoscale.{key}", "must be 0 (the daemon's default) or more")
    return copy.copy(wanted)


def constraints(options: LeaseOptions, nodes: Sequence[Node]) -> LeaseConstraints:
    gpus = options.gpus
    if gpus is None:
        # On a machine with GPUs, a lease runs on one unless it asks otherwise.
        gpus = 1 if any(node.gpus for node in nodes) else 0
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


def check_labels(options: LeaseOptions) -> None:
    for key, value in {**options.labels, **options.node_selector}.items():
        if not LABEL.match(key) or not LABEL.match(value):
            raise InvalidArgument(
                "labels", f"{key}={value} is not a label (letters, digits, '-', '_', '.')"
            )


@dataclass(frozen=True)
class Resolved:
    """What the caller looked up for a request: the pool's quota rules, the Triton binary,
    each model's framework and the lease's ports."""

    tritonserver: str
    frameworks: Sequence[str]
    ports: tuple[int, int]
    hpa_autoscaling: bool = False
    """Whether the backend scales autoscaling leases with a HorizontalPodAutoscaler (one
    exclusive server whose pods it multiplies) rather than the daemon's replicas."""


def build_lease(
    lease_id: LeaseId,
    models: Sequence[ModelRequest],
    options: LeaseOptions,
    resolved: Resolved,
    *,
    nodes: Sequence[Node],
    settings: Settings,
    now: float,
) -> Lease:
    """A validated lease, not yet placed or stored."""
    lasts = duration(options.duration_s, "duration", settings)
    if options.activity_window_s:
        duration(options.activity_window_s, "activity_window", settings)
        if options.activity_window_s < MIN_ACTIVITY_WINDOW_S:
            raise InvalidArgument(
                "activity_window",
                f"{options.activity_window_s:g}s is shorter than {MIN_ACTIVITY_WINDOW_S:g}s, "
                "the period at which servers read their inference statistics",
            )
    wanted = constraints(options, nodes)
    scaling = autoscale(options, hpa=resolved.hpa_autoscaling)
    if scaling is not None and resolved.hpa_autoscaling:
        # An HPA multiplies the server's pods: they must serve this lease alone.
        wanted.exclusive = True
    check_labels(options)
    return Lease(
        id=lease_id,
        name=options.name,
        state=LeaseState.PENDING,
        models=[
            LeaseModel(
                name=ModelName(m.name),
                uri=m.uri,
                memory_bytes=m.memory_bytes,
                framework=framework,
            )
            for m, framework in zip(models, resolved.frameworks, strict=True)
        ],
        duration_s=lasts,
        created_at=now,
        expires_at=now + lasts,
        updated_at=now,
        activity_window_s=options.activity_window_s,
        pool=options.pool,
        quota=options.quota,
        tritonserver=resolved.tritonserver,
        http_port=resolved.ports[0],
        grpc_port=resolved.ports[1],
        constraints=wanted,
        labels=dict(options.labels),
        priority=options.priority,
        autoscale=scaling,
        # A lease that may park starts with one replica: it was asked for to be used.
        replicas_wanted=(
            max(scaling.min_replicas, 1) if scaling and not resolved.hpa_autoscaling else 1
        ),
    )
