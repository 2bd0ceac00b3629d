"""Placement: where a lease's models go. A pure function of the request and the fleet.

The decision is one of: join a live server, start a new one (on which node and GPUs), wait
(with the reason, naming the resource that binds), or reject (the request can never fit). A
lease's models always go to one server together (as in TMS), so placement is all-or-nothing
by construction. The algorithm is described in docs/placement.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tms_core.ids import ServerId
from tms_core.units import format_size


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
    tags: frozenset[str] = frozenset()
    """Names and `key=value` labels of the leases it holds."""

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


def place(
    models: Sequence[ModelNeed],
    servers: Sequence[ServerView],
    *,
    server_capacity: int,
    max_servers: int,
    binary: str = "",
    pool: PoolSpec | None = None,
    constraints: Constraints | None = None,
    nodes: Sequence[NodeView] = (),
    isolated_frameworks: frozenset[str] = frozenset(),
) -> Decision:
    """Best fit by the tightest resource: the live server the lease fills most tightly, else
    a new server on the node and GPUs it fills most tightly, else wait.

    A bespoke lease considers only unpooled servers running its Triton `binary`; a pool lease
    only its pool's servers, which must also have its quota free. GPU servers are matched by
    GPU count, product and node labels, and each of their GPUs must have the lease's share of
    memory free (other servers may share a GPU).
    """
    want = constraints or Constraints()
    need = sum(m.memory_bytes for m in models)
    group, problem = framework_group(models, isolated_frameworks)
    if problem:
        return Reject(problem)
    gpu_index = {(g.node, g.index): g for n in nodes for g in n.gpus}
    node_labels = {n.name: n.labels for n in nodes}

    rejection = _never_fits(need, want, pool, server_capacity, nodes)
    if rejection:
        return Reject(rejection)

    def node_matches(node: str) -> bool:
        labels = node_labels.get(node, {})
        return all(labels.get(k) == v for k, v in want.node_selector.items())

    def gpus_of(server: ServerView) -> list[GpuView]:
        return [gpu_index[(server.node, i)] for i in server.gpus if (server.node, i) in gpu_index]

    best: tuple[float, ServerView, int] | None = None
    largest_free: tuple[int, str] = (0, "")
    largest_quota = 0
    candidates = [
        s for s in servers if (s.pool == pool.name if pool else s.pool == "" and s.binary == binary)
    ]
    for server in candidates:
        if not server.accepting or server.exclusive or want.exclusive:
            continue
        if len(server.gpus) != want.gpus or server.framework_group != group:
            continue
        if (want.gpus or want.node_selector) and not node_matches(server.node):
            continue
        gpus = gpus_of(server)
        if len(gpus) != len(server.gpus):
            # GPUs the inventory no longer lists (it changed since the server started): their
            # product and free memory cannot be checked, so the server takes no new lease.
            continue
        if want.gpu_product and not all(want.gpu_product in g.product for g in gpus):
            continue
        if want.avoid & server.tags:
            continue
        if want.colocate_with and not want.colocate_with & server.tags:
            continue
        if any(server.models.get(m.name, m.uri) != m.uri for m in models):
            continue
        if pool is not None:
            largest_quota = max(largest_quota, server.free_quota)
            if server.free_quota < pool.quota:
                continue
        if gpus:
            share = need / len(gpus)
            tightest = min(gpus, key=lambda g: g.free_bytes)
            if tightest.free_bytes > largest_free[0]:
                largest_free = (tightest.free_bytes, tightest.label)
            if tightest.free_bytes < share:
                continue
            leftover = min((g.free_bytes - share) / g.capacity_bytes for g in gpus)
            room = tightest.free_bytes * len(gpus)
        else:
            if server.free_bytes > largest_free[0]:
                largest_free = (server.free_bytes, server.id)
            if server.free_bytes < need:
                continue
            leftover = (server.free_bytes - need) / max(server.capacity_bytes, 1)
            room = server.free_bytes
        if pool is not None:
            # Pool leases pack by quota first: the unit the administrator sized servers in.
            leftover = (server.free_quota - pool.quota) / max(
                server.quota_capacity, 1
            ) + leftover / 1e6
        if best is None or leftover < best[0]:
            best = (leftover, server, room)
    if best is not None:
        _, server, room = best
        return JoinServer(
            server.id, f"{format_size(room)} free on {server.id}, needs {format_size(need)}"
        )

    if want.colocate_with:
        return Wait(
            f"must run beside a lease named or labelled {', '.join(sorted(want.colocate_with))};"
            " none of their servers has room"
        )
    if pool is not None:
        if len(candidates) >= pool.max_servers:
            return Wait(
                f"pool {pool.name} is full: needs {pool.quota} quota and {format_size(need)}; "
                f"largest free is {largest_quota} quota and all {pool.max_servers} servers "
                "are running"
            )
    elif sum(1 for s in servers if s.pool == "") >= max_servers:
        return Wait(
            f"needs {format_size(need)} of memory; largest free is "
            f"{format_size(largest_free[0])} and all {max_servers} servers are running"
        )
    if want.gpus == 0:
        matching = [n.name for n in nodes if node_matches(n.name)]
        node = matching[0] if matching else ""
        return StartServer(
            f"no running server has {format_size(need)} free", node=node, framework_group=group
        )
    return _start_on_gpus(need, want, nodes, node_matches, group)


def _never_fits(
    need: int,
    want: Constraints,
    pool: PoolSpec | None,
    server_capacity: int,
    nodes: Sequence[NodeView],
) -> str | None:
    if want.exclusive and want.colocate_with:
        return (
            "exclusive and colocate_with contradict each other: an exclusive server has no one else"
        )
    if want.node_selector and not any(
        all(node.labels.get(k) == v for k, v in want.node_selector.items()) for node in nodes
    ):
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(want.node_selector.items()))
        return f"no node has the labels {wanted} (node_selector)"
    if pool is not None and pool.quota > pool.quota_per_server:
        return f"needs {pool.quota} quota; a server of pool {pool.name} has {pool.quota_per_server}"
    if want.gpus == 0:
        capacity = pool.server_memory if pool else server_capacity
        if need > capacity:
            return f"needs {format_size(need)} of memory; a server offers {format_size(capacity)}"
        return None
    best = 0
    most_gpus = 0
    for node in nodes:
        if not all(node.labels.get(k) == v for k, v in want.node_selector.items()):
            continue
        fitting = sorted(
            (g.capacity_bytes for g in node.gpus if want.gpu_product in g.product), reverse=True
        )
        most_gpus = max(most_gpus, len(fitting))
        if len(fitting) >= want.gpus:
            best = max(best, fitting[want.gpus - 1] * want.gpus)
    if most_gpus < want.gpus:
        what = f"{want.gpus} GPU(s)" + (
            f" of product {want.gpu_product}" if want.gpu_product else ""
        )
        where = " on a node matching the selector" if want.node_selector else " on one node"
        return f"needs {what}{where}; the most there are is {most_gpus}"
    if need > best:
        return (
            f"needs {format_size(need)} of GPU memory over {want.gpus} GPU(s); "
            f"the largest GPUs offer {format_size(best)}"
        )
    return None


def _start_on_gpus(
    need: int,
    want: Constraints,
    nodes: Sequence[NodeView],
    node_matches: object,
    group: str,
) -> Decision:
    share = need / want.gpus
    best: tuple[float, NodeView, tuple[GpuView, ...]] | None = None
    largest: GpuView | None = None
    for node in nodes:
        if not node_matches(node.name):  # type: ignore[operator]
            continue
        usable = [g for g in node.gpus if want.gpu_product in g.product]
        for g in usable:
            if largest is None or g.free_bytes > largest.free_bytes:
                largest = g
        fitting = sorted((g for g in usable if g.free_bytes >= share), key=lambda g: g.free_bytes)
        if len(fitting) < want.gpus:
            continue
        chosen = tuple(fitting[: want.gpus])
        leftover = sum((g.free_bytes - share) / g.capacity_bytes for g in chosen)
        if best is None or leftover < best[0]:
            best = (leftover, node, chosen)
    if best is not None:
        _, node, chosen = best
        return StartServer(
            f"{', '.join(g.label for g in chosen)} fit {format_size(int(share))} per GPU "
            "most tightly",
            node=node.name,
            gpus=tuple(g.index for g in chosen),
            framework_group=group,
        )
    where = f"{format_size(largest.free_bytes)} on {largest.label}" if largest else "none"
    return Wait(f"needs {format_size(int(share))} GPU memory; largest free is {where}")
