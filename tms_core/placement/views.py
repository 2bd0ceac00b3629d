"""What placement reads and answers: the views of models, GPUs, nodes and servers, the
constraints and pool terms of a request, and the decisions (pure data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from tms_core.ids import ServerId


@dataclass(frozen=True)
class ModelNeed:
    name: str
    uri: str
    memory_bytes: int
    framework: str = ""
    """The model's backend or platform from its config.pbtxt (`python`, `pytorch`, ...)."""


@dataclass(frozen=True)
class GpuView:
    node: str
    index: int
    product: str
    capacity_bytes: int
    used_bytes: int
    """Memory the models of every server on this GPU take (declared or measured, the larger)."""

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes

    @property
    def label(self) -> str:
        return f"{self.node}/gpu-{self.index}"


@dataclass(frozen=True)
class NodeView:
    name: str
    gpus: tuple[GpuView, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Constraints:
    """What a lease asks of the server it lands on, beyond memory."""

    gpus: int = 0
    """GPUs the server must have; 0 places the lease on a CPU server."""
    gpu_product: str = ""
    """A substring of the GPU name (`A100`, `H100 80GB`); "" takes any."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    exclusive: bool = False
    """A server of its own: joins none, and none joins it."""
    colocate_with: frozenset[str] = frozenset()
    """Lease names or `key=value` labels: join only a server that holds one of them."""
    avoid: frozenset[str] = frozenset()
    """Lease names or `key=value` labels: never join a server that holds one of them."""


@dataclass(frozen=True)
class ServerView:
    """What placement needs to know of one live server."""

    id: ServerId
    capacity_bytes: int
    used_bytes: int
    # name -> uri of the models its leases hold; two different models of one name cannot
    # share a Triton, whose model names are unique.
    models: dict[str, str]
    accepting: bool = True
    binary: str = ""
    pool: str = ""
    quota_capacity: int = 0
    quota_used: int = 0
    node: str = ""
    gpus: tuple[int, ...] = ()
    exclusive: bool = False
    framework_group: str = ""
    """The isolated framework this server was started for; "" for the shareable kind."""
    tags: AbstractSet[str] = frozenset()
    """Ids, names and `key=value` labels of the leases it holds."""
    held: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """The models its leases hold, name -> (uri, bytes counted in `used_bytes`): a lease
    that asks for one of them shares it (Triton loads a model once) and adds no memory."""

    def extra_bytes(self, models: Sequence[ModelNeed]) -> int:
        """The memory `models` would add here: what the server's leases do not hold yet."""
        extra = 0
        for model in models:
            uri, counted = self.held.get(model.name, ("", 0))
            extra += (
                max(0, model.memory_bytes - counted) if uri == model.uri else model.memory_bytes
            )
        return extra

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes

    @property
    def free_quota(self) -> int:
        return self.quota_capacity - self.quota_used


@dataclass(frozen=True)
class PoolSpec:
    """The pool a lease asks to join, and how much of a pool server's quota it takes."""

    name: str
    quota: int
    quota_per_server: int
    max_servers: int
    server_memory: int


@dataclass(frozen=True)
class JoinServer:
    server_id: ServerId
    why: str


@dataclass(frozen=True)
class StartServer:
    why: str
    node: str = ""
    gpus: tuple[int, ...] = ()
    framework_group: str = ""


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Reject:
    reason: str


Decision = JoinServer | StartServer | Wait | Reject


def framework_group(
    models: Sequence[ModelNeed], isolated: frozenset[str]
) -> tuple[str, str | None]:
    """(the isolated framework the models need a server of, or ""; a problem, or None).

    Frameworks that keep memory after an unload (PyTorch, TensorFlow) get servers of their own
    so that a leak never hits another framework's models.
    """
    kinds = {m.framework for m in models}
    groups = kinds & isolated
    if not groups:
        return "", None
    if len(kinds) > 1:
        return "", (
            f"the lease mixes frameworks {', '.join(sorted(kinds))}; "
            f"{', '.join(sorted(groups))} must not share a server with others "
            "(placement.isolated_frameworks)"
        )
    return next(iter(groups)), None
