"""What a caller asks of a lease: its models and its options, the one type every door uses.

The API converts protobuf to and from these (`tms_core.api.convert`), the CLI's spec files,
the console's form and the `%tms` magics build them, and the lease manager validates them
(`tms_core.manager.requests`). Plain values only: this module sits with the domain types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Imported where used: the CLI reads this module on `tms lease list`, which needs no
    # domain model (its import is a good part of a short command's start).
    from tms_core.domain import LeaseAutoscale


@dataclass(frozen=True)
class ModelRequest:
    """One model of a lease: its Triton name, where it comes from, and what it declares."""

    name: str
    uri: str
    memory_bytes: int = 0
    sha256: str = ""
    """The hex sha256 of the archive or file `uri` names (also `uri#sha256=`); "": none."""


@dataclass(frozen=True)
class LeaseOptions:
    """Everything a lease asks for besides its models (every field optional).

    A new field needs its place in `tms_core.api.convert` (the wire), `tms_core.cli.spec`
    (spec files and flags) and the proto; tests/unit/test_lease_options.py checks both.
    """

    name: str = ""
    """A stable name (a DNS-1123 label) whose address follows this lease once READY."""
    duration_s: float = 0.0
    """How long the lease lives from READY; 0: `lease.default_duration`."""
    activity_window_s: float = 0.0
    """Renewed while a model served an inference within this window; 0: renewed by hand."""
    pool: str = ""
    """Join this Triton pool instead of getting a server of its own; "": a bespoke server."""
    quota: int = 0
    """A pool lease's share of a pool server (pool leases only)."""
    tritonserver: str = ""
    """A Triton binary or image from the allowlist; "": the configured default."""
    gpus: int | None = None
    """GPUs the server needs; None: 1 on a machine with GPUs, else 0."""
    gpu_product: str = ""
    """Only GPUs whose product name contains this (such as A100); "": any."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """Only nodes with all these labels."""
    exclusive: bool = False
    """A server of its own, shared with no other lease."""
    colocate_with: Sequence[str] = ()
    """Join only a server holding a lease with one of these ids, names or key=value labels
    (never start one)."""
    avoid: Sequence[str] = ()
    """Never join a server holding a lease with one of these ids, names or key=value labels."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The lease's own labels, for `colocate_with` and `avoid` of later leases."""
    priority: int = 0
    """Higher is placed first when leases wait."""
    autoscale: LeaseAutoscale | None = None
    """The lease's replicas follow a metric (docs/leases.md, Autoscaling); None: one."""


def autoscale_request(
    min_replicas: int | None = None,
    max_replicas: int = 0,
    metric: str = "",
    target: float = 0.0,
    **timings: float,
) -> LeaseAutoscale:
    """An autoscale request with the documented defaults for what is left at 0 or "" (or
    None): one replica at least, at most `min_replicas` (at least 1), and
    `LeaseAutoscale`'s metric and target. `min_replicas=0` asks for parking at zero.

    The API applies it to what arrives on the wire; spec files and the console's form to the
    fields they were given. `timings` are `LeaseAutoscale`'s `*_s` fields."""
    from tms_core.domain import LeaseAutoscale

    default = LeaseAutoscale()
    minimum = default.min_replicas if min_replicas is None else min_replicas
    return LeaseAutoscale(
        min_replicas=minimum,
        max_replicas=max_replicas or max(minimum, 1),
        metric=metric or default.metric,
        target=target or default.target,
        # The timings stay 0 where not given: the daemon's settings apply (and may change).
        **timings,
    )
