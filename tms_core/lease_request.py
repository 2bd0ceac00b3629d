"""What a caller asks of a lease: its models and its options, the one type every door uses.

The API converts protobuf to and from these (`tms_core.api.convert`), the CLI's spec files,
the console's form and the `%tms` magics build them, and the lease manager validates them
(`tms_core.manager.requests`). Plain values only: this module sits with the domain types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tms_core.domain import LeaseAutoscale


@dataclass(frozen=True)
class ModelRequest:
    """One model of a lease: its Triton name, where it comes from, and what it declares."""

    name: str
    uri: str
    memory_bytes: int = 0


@dataclass(frozen=True)
class LeaseOptions:
    """Everything a lease asks for besides its models (every field optional)."""

    name: str = ""
    """A stable name (a DNS-1123 label) whose address follows this lease once READY."""
    duration_s: float = 0.0
    """How long the lease lives from READY; 0: `lease.default_duration`."""
    activity_window_s: float = 0.0
    """Renewed while a model served an inference within this window; 0: renewed by hand."""
    pool: str = ""
    quota: int = 0
    """A pool lease's share of a pool server (pool leases only)."""
    tritonserver: str = ""
    """A Triton binary or image from the allowlist; "": the configured default."""
    gpus: int | None = None
    """GPUs the server needs; None: 1 on a machine with GPUs, else 0."""
    gpu_product: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    exclusive: bool = False
    colocate_with: Sequence[str] = ()
    avoid: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    autoscale: LeaseAutoscale | None = None
