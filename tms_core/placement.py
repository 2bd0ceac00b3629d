"""Placement: where a lease's models go. A pure function of the request and the fleet.

The decision is one of: join a live server, start a new one (on which node and GPUs), wait
(with the reason, naming the resource that binds), or reject (the request can never fit). A
lease's models always go to one server together (as in TMS), so placement is all-or-nothing
by construction. The algorithm is described in docs/placement.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

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


GpuKey = tuple[str, int]
"""(node name, GPU index)."""


class FleetIndex:
    """The fleet as placement reads it, with the live servers and the GPUs kept sorted by free
    memory, so that a decision looks at the few that could fit rather than at all of them.

    Built from views (`FleetIndex(servers, nodes)`), or kept current by its owner through
    `put_server`, `drop_server`, `set_gpu_used` and `set_nodes`: the lease manager keeps one
    for the whole fleet and changes only what a state change touched. It is a plain data
    structure: placement stays a pure function of the request and the index.

    What the sorted paths serve exactly (the same decision as looking at everything): joining
    an unpooled server whose GPUs are all listed and of one capacity, and a new one-GPU
    server when every GPU of the fleet has one capacity. Everything else (pools, mixed
    capacities, several GPUs for a new server, the explanations of a wait) reads every
    server or GPU, as before.
    """

    def __init__(self, servers: Sequence[ServerView] = (), nodes: Sequence[NodeView] = ()) -> None:
        self._servers: dict[ServerId, ServerView] = {}
        self._seq: dict[ServerId, int] = {}
        self._next_seq = 0
        self._unpooled = 0
        self._nodes: dict[str, NodeView] = {}
        self._node_order: dict[str, int] = {}
        self._gpus: dict[GpuKey, GpuView] = {}
        self._gpu_position: dict[GpuKey, int] = {}
        self._servers_on: dict[GpuKey, set[ServerId]] = {}
        # (binary, GPU count, framework group, capacity) -> [(free, seq, id)], ascending.
        self._join: dict[tuple[str, int, str, int], list[tuple[int, int, ServerId]]] = {}
        self._join_entry: dict[
            ServerId, tuple[tuple[str, int, str, int], tuple[int, int, ServerId]]
        ] = {}
        # Unpooled servers the sorted lists cannot order (GPUs of mixed capacity or unlisted).
        self._irregular: dict[ServerId, None] = {}
        # (model name, uri) -> the unpooled servers whose leases hold it.
        self._holding: dict[tuple[str, str], set[ServerId]] = {}
        # (capacity, product) -> [(free, node order, position, node, index)], ascending.
        self._free_gpus: dict[tuple[int, str], list[tuple[int, int, int, str, int]]] = {}
        self._capacities: dict[int, int] = {}
        self.gpus_in_use = 0
        """GPUs with any memory used."""
        self.gpu_used_bytes = 0
        """Memory used over all GPUs."""
        self._reach: dict[tuple[int, str, tuple[tuple[str, str], ...]], tuple[int, int]] = {}
        self.set_nodes(nodes)
        for server in servers:
            self.put_server(server)

    # -- reading

    @property
    def servers(self) -> list[ServerView]:
        return list(self._servers.values())

    @property
    def nodes(self) -> list[NodeView]:
        """The nodes with their GPUs as they are now."""
        return [
            NodeView(n.name, tuple(self._gpus[(n.name, g.index)] for g in n.gpus), n.labels)
            for n in self._nodes.values()
        ]

    def node_names(self) -> Iterable[str]:
        return self._nodes.keys()

    def gpu(self, node: str, index: int) -> GpuView | None:
        return self._gpus.get((node, index))

    def node_labels(self, node: str) -> Mapping[str, str]:
        found = self._nodes.get(node)
        return found.labels if found is not None else {}

    def unpooled_servers(self) -> int:
        return self._unpooled

    def seq(self, server_id: ServerId) -> int:
        return self._seq[server_id]

    # -- keeping it current

    def set_nodes(self, nodes: Sequence[NodeView]) -> None:
        """Replaces the nodes and their GPUs (with what is used on each)."""
        self._nodes = {n.name: n for n in nodes}
        self._node_order = {n.name: i for i, n in enumerate(nodes)}
        self._gpus = {}
        self._gpu_position = {}
        self._free_gpus = {}
        self._capacities = {}
        self._reach = {}
        self.gpus_in_use = self.gpu_used_bytes = 0
        for node in nodes:
            for position, gpu in enumerate(node.gpus):
                key = (node.name, gpu.index)
                if key in self._gpus:
                    continue  # a GPU listed twice counts once, at its first place
                self._gpu_position[key] = position
                self._add_gpu(gpu)
        for server in list(self._servers.values()):
            self._rekey(server)

    def set_gpu_used(self, node: str, index: int, used_bytes: int) -> None:
        key = (node, index)
        gpu = self._gpus.get(key)
        if gpu is None or gpu.used_bytes == used_bytes:
            return
        self._remove_gpu(gpu)
        self._add_gpu(replace(gpu, used_bytes=used_bytes))
        for server_id in self._servers_on.get(key, ()):
            self._rekey(self._servers[server_id])

    def put_server(self, server: ServerView) -> None:
        old = self._servers.get(server.id)
        if old is None:
            self._seq[server.id] = self._next_seq
            self._next_seq += 1
            self._unpooled += server.pool == ""
        else:
            self._unpooled -= old.pool == ""
            self._unpooled += server.pool == ""
            self._forget(old)
        self._servers[server.id] = server
        if not server.pool:
            for name, (uri, _) in server.held.items():
                self._holding.setdefault((name, uri), set()).add(server.id)
        for index in server.gpus:
            self._servers_on.setdefault((server.node, index), set()).add(server.id)
        self._rekey(server)

    def drop_server(self, server_id: ServerId) -> None:
        old = self._servers.pop(server_id, None)
        if old is None:
            return
        self._unpooled -= old.pool == ""
        self._forget(old)
        self._unkey(server_id)
        del self._seq[server_id]

    def _forget(self, server: ServerView) -> None:
        for name, (uri, _) in server.held.items():
            holders = self._holding.get((name, uri))
            if holders is not None:
                holders.discard(server.id)
                if not holders:
                    del self._holding[(name, uri)]
        for index in server.gpus:
            on = self._servers_on.get((server.node, index))
            if on is not None:
                on.discard(server.id)
                if not on:
                    del self._servers_on[(server.node, index)]

    def _add_gpu(self, gpu: GpuView) -> None:
        key = (gpu.node, gpu.index)
        self._gpus[key] = gpu
        self._capacities[gpu.capacity_bytes] = self._capacities.get(gpu.capacity_bytes, 0) + 1
        self.gpus_in_use += gpu.used_bytes > 0
        self.gpu_used_bytes += gpu.used_bytes
        entry = (
            gpu.free_bytes,
            self._node_order[gpu.node],
            self._gpu_position[key],
            gpu.node,
            gpu.index,
        )
        bisect.insort(self._free_gpus.setdefault((gpu.capacity_bytes, gpu.product), []), entry)

    def largest_free_gpu(self) -> int:
        """The most memory free on any one GPU (0 where there are none)."""
        return max((entries[-1][0] for entries in self._free_gpus.values() if entries), default=0)

    def holds(self, name: str, uri: str) -> bool:
        """Whether any server holds (or is loading) the model."""
        return bool(self._holding.get((name, uri)))

    def _remove_gpu(self, gpu: GpuView) -> None:
        key = (gpu.node, gpu.index)
        entry = (
            gpu.free_bytes,
            self._node_order[gpu.node],
            self._gpu_position[key],
            gpu.node,
            gpu.index,
        )
        _remove_sorted(self._free_gpus[(gpu.capacity_bytes, gpu.product)], entry)
        self._capacities[gpu.capacity_bytes] -= 1
        self.gpus_in_use -= gpu.used_bytes > 0
        self.gpu_used_bytes -= gpu.used_bytes
        if not self._capacities[gpu.capacity_bytes]:
            del self._capacities[gpu.capacity_bytes]
        del self._gpus[key]

    def _unkey(self, server_id: ServerId) -> None:
        self._irregular.pop(server_id, None)
        placed = self._join_entry.pop(server_id, None)
        if placed is not None:
            group, entry = placed
            _remove_sorted(self._join[group], entry)

    def _rekey(self, server: ServerView) -> None:
        self._unkey(server.id)
        if server.pool:
            return  # pool leases read their pool's servers one by one
        if not server.gpus:
            group = (server.binary, 0, server.framework_group, server.capacity_bytes)
            free = server.free_bytes
        else:
            gpus = [self._gpus.get((server.node, i)) for i in server.gpus]
            capacities = {g.capacity_bytes for g in gpus if g is not None}
            if None in gpus or len(capacities) != 1:
                self._irregular[server.id] = None
                return
            group = (server.binary, len(gpus), server.framework_group, capacities.pop())
            free = min(g.free_bytes for g in gpus if g is not None)
        entry = (free, self._seq[server.id], server.id)
        bisect.insort(self._join.setdefault(group, []), entry)
        self._join_entry[server.id] = (group, entry)

    # -- answers placement memoises (they depend on the nodes only)

    def selector_matches(self, selector: Mapping[str, str]) -> bool:
        return self.gpu_reach(-1, "", selector)[0] > 0

    def gpu_reach(self, gpus: int, product: str, selector: Mapping[str, str]) -> tuple[int, int]:
        """(the most GPUs of `product` on one node matching `selector`; the most memory
        `gpus` of them offer on one node, as `gpus` times the smallest). With gpus=-1: (the
        number of matching nodes, 0)."""
        key = (gpus, product, tuple(sorted(selector.items())))
        found = self._reach.get(key)
        if found is None:
            found = self._compute_reach(gpus, product, selector)
            self._reach[key] = found
        return found

    def _compute_reach(
        self, gpus: int, product: str, selector: Mapping[str, str]
    ) -> tuple[int, int]:
        matching = [
            n
            for n in self._nodes.values()
            if all(n.labels.get(k) == v for k, v in selector.items())
        ]
        if gpus < 0:
            return len(matching), 0
        best = most = 0
        for node in matching:
            fitting = sorted(
                (g.capacity_bytes for g in node.gpus if product in g.product), reverse=True
            )
            most = max(most, len(fitting))
            if 0 < gpus <= len(fitting):
                best = max(best, fitting[gpus - 1] * gpus)
        return most, best


def _remove_sorted(items: list[Any], entry: Any) -> None:
    at = bisect.bisect_left(items, entry)
    if at < len(items) and items[at] == entry:
        del items[at]


def place(
    models: Sequence[ModelNeed],
    servers: Sequence[ServerView] = (),
    *,
    server_capacity: int,
    max_servers: int,
    binary: str = "",
    pool: PoolSpec | None = None,
    constraints: Constraints | None = None,
    nodes: Sequence[NodeView] = (),
    isolated_frameworks: frozenset[str] = frozenset(),
    index: FleetIndex | None = None,
) -> Decision:
    """Best fit by the tightest resource: the live server the lease fills most tightly, else
    a new server on the node and GPUs it fills most tightly, else wait.

    A bespoke lease considers only unpooled servers running its Triton `binary`; a pool lease
    only its pool's servers, which must also have its quota free. GPU servers are matched by
    GPU count, product and node labels, and each of their GPUs must have the lease's share of
    memory free (other servers may share a GPU).

    The fleet is `servers` and `nodes`, or `index` (a `FleetIndex` kept by the caller) in
    their place; the decision is the same either way.
    """
    fleet = index if index is not None else FleetIndex(servers, nodes)
    want = constraints or Constraints()
    need = sum(m.memory_bytes for m in models)
    group, problem = framework_group(models, isolated_frameworks)
    if problem:
        return Reject(problem)

    rejection = _never_fits(need, want, pool, server_capacity, fleet)
    if rejection:
        return Reject(rejection)

    def node_matches(node: str) -> bool:
        labels = fleet.node_labels(node)
        return all(labels.get(k) == v for k, v in want.node_selector.items())

    def gpus_of(server: ServerView) -> list[GpuView]:
        found = (fleet.gpu(server.node, i) for i in server.gpus)
        return [g for g in found if g is not None]

    def joinable(server: ServerView) -> tuple[int, float, int] | None:
        """(memory it adds, leftover, room) where the lease can join `server`; None where it
        cannot."""
        if not server.accepting or server.exclusive or want.exclusive:
            return None
        if len(server.gpus) != want.gpus or server.framework_group != group:
            return None
        if (want.gpus or want.node_selector) and not node_matches(server.node):
            return None
        gpus = gpus_of(server)
        if len(gpus) != len(server.gpus):
            # GPUs the inventory no longer lists (it changed since the server started): their
            # product and free memory cannot be checked, so the server takes no new lease.
            return None
        if want.gpu_product and not all(want.gpu_product in g.product for g in gpus):
            return None
        if want.avoid & server.tags:
            return None
        if want.colocate_with and not want.colocate_with & server.tags:
            return None
        if any(server.models.get(m.name, m.uri) != m.uri for m in models):
            return None
        if pool is not None:
            scan.largest_quota = max(scan.largest_quota, server.free_quota)
            if server.free_quota < pool.quota:
                return None
        extra = server.extra_bytes(models) if server.held else need
        if gpus:
            share = extra / len(gpus)
            tightest = min(gpus, key=lambda g: g.free_bytes)
            if tightest.free_bytes > scan.largest_free[0]:
                scan.largest_free = (tightest.free_bytes, tightest.label)
            if tightest.free_bytes < share:
                return None
            leftover = min((g.free_bytes - share) / g.capacity_bytes for g in gpus)
            room = tightest.free_bytes * len(gpus)
        else:
            if server.free_bytes > scan.largest_free[0]:
                scan.largest_free = (server.free_bytes, server.id)
            if server.free_bytes < extra:
                return None
            leftover = (server.free_bytes - extra) / max(server.capacity_bytes, 1)
            room = server.free_bytes
        if pool is not None:
            # Pool leases pack by quota first: the unit the administrator sized servers in.
            leftover = (server.free_quota - pool.quota) / max(
                server.quota_capacity, 1
            ) + leftover / 1e6
        return extra, leftover, room

    scan = _Scan()
    candidates: list[ServerView] | None = None
    if pool is None and not want.exclusive:
        best = _sorted_join(fleet, models, need, want, binary, group, joinable)
    else:
        candidates = _candidates(fleet, pool, binary)
        best = _linear_join(fleet, candidates, joinable)
    if best is not None:
        server, extra, room = best
        shared = "" if extra == need else f" (shares {format_size(need - extra)} it holds)"
        return JoinServer(
            server.id,
            f"{format_size(room)} free on {server.id}, needs {format_size(extra)}{shared}",
        )

    if want.colocate_with:
        return Wait(
            f"must run beside a lease named or labelled {', '.join(sorted(want.colocate_with))};"
            " none of their servers has room"
        )
    if pool is not None:
        candidates = candidates if candidates is not None else _candidates(fleet, pool, binary)
        if len(candidates) >= pool.max_servers:
            return Wait(
                f"pool {pool.name} is full: needs {pool.quota} quota and {format_size(need)}; "
                f"largest free is {scan.largest_quota} quota and all {pool.max_servers} servers "
                "are running"
            )
    elif fleet.unpooled_servers() >= max_servers:
        if candidates is None:
            # The explanation names the largest free space of every server that could have
            # taken the lease: only a full pass finds it.
            scan = _Scan()
            _linear_join(fleet, _candidates(fleet, pool, binary), joinable)
        return Wait(
            f"needs {format_size(need)} of memory; largest free is "
            f"{format_size(scan.largest_free[0])} and all {max_servers} servers are running"
        )
    if want.gpus == 0:
        node = next((name for name in fleet.node_names() if node_matches(name)), "")
        return StartServer(
            f"no running server has {format_size(need)} free", node=node, framework_group=group
        )
    return _start_on_gpus(need, want, fleet, node_matches, group)


class _Scan:
    """What a pass over the servers learnt for the explanation of a wait."""

    def __init__(self) -> None:
        self.largest_free: tuple[int, str] = (0, "")
        self.largest_quota = 0


def _candidates(fleet: FleetIndex, pool: PoolSpec | None, binary: str) -> list[ServerView]:
    return [
        s
        for s in fleet.servers
        if (s.pool == pool.name if pool else s.pool == "" and s.binary == binary)
    ]


Fit = tuple[int, float, int]
"""(memory the lease adds, leftover fraction, room): the smallest first two win."""


def _linear_join(
    fleet: FleetIndex,
    candidates: Sequence[ServerView],
    joinable: Callable[[ServerView], Fit | None],
) -> tuple[ServerView, int, int] | None:
    best: tuple[Fit, ServerView] | None = None
    for server in candidates:
        fit = joinable(server)
        if fit is not None and (best is None or fit[:2] < best[0][:2]):
            best = (fit, server)
    return (best[1], best[0][0], best[0][2]) if best is not None else None


def _sorted_join(
    fleet: FleetIndex,
    models: Sequence[ModelNeed],
    need: int,
    want: Constraints,
    binary: str,
    group: str,
    joinable: Callable[[ServerView], Fit | None],
) -> tuple[ServerView, int, int] | None:
    """The best server to join, without reading them all: the servers that hold one of the
    lease's models already (where it adds less memory), and, in each sorted list (one
    capacity), the first server with room for all of it that passes every filter: it fills
    the lease most tightly of those adding the whole need. Of all these, the one adding the
    least, then the tightest, then the first listed, as a full pass would choose."""
    best: tuple[int, float, int, ServerView, int] | None = None

    def consider(server: ServerView) -> bool:
        nonlocal best
        fit = joinable(server)
        if fit is None:
            return False
        key = (fit[0], fit[1], fleet.seq(server.id))
        if best is None or key < best[:3]:
            best = (*key, server, fit[2])
        return True

    seen: set[ServerId] = set()
    for model in models:
        for server_id in fleet._holding.get((model.name, model.uri), ()):
            if server_id not in seen:
                seen.add(server_id)
                if fleet._servers[server_id].binary == binary:
                    consider(fleet._servers[server_id])
    share = need / want.gpus if want.gpus else need
    for (key_binary, count, key_group, _), entries in fleet._join.items():
        if (key_binary, count, key_group) != (binary, want.gpus, group):
            continue
        for _, _, server_id in entries[bisect.bisect_left(entries, (share,)) :]:
            if consider(fleet._servers[server_id]):
                break
    for server_id in fleet._irregular:
        if fleet._servers[server_id].binary == binary:
            consider(fleet._servers[server_id])
    return (best[3], best[0], best[4]) if best is not None else None


def _never_fits(
    need: int,
    want: Constraints,
    pool: PoolSpec | None,
    server_capacity: int,
    fleet: FleetIndex,
) -> str | None:
    if want.exclusive and want.colocate_with:
        return (
            "exclusive and colocate_with contradict each other: an exclusive server has no one else"
        )
    if want.node_selector and not fleet.selector_matches(want.node_selector):
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(want.node_selector.items()))
        return f"no node has the labels {wanted} (node_selector)"
    if pool is not None and pool.quota > pool.quota_per_server:
        return f"needs {pool.quota} quota; a server of pool {pool.name} has {pool.quota_per_server}"
    if want.gpus == 0:
        capacity = pool.server_memory if pool else server_capacity
        if need > capacity:
            return f"needs {format_size(need)} of memory; a server offers {format_size(capacity)}"
        return None
    most_gpus, best = fleet.gpu_reach(want.gpus, want.gpu_product, want.node_selector)
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
    fleet: FleetIndex,
    node_matches: Callable[[str], bool],
    group: str,
) -> Decision:
    share = need / want.gpus
    if want.gpus == 1 and len(fleet._capacities) == 1:
        # One capacity everywhere: the fullest GPU that fits is the tightest fit, and the
        # first of equals (by node, then by place on the node) is the one a full pass takes.
        best: tuple[int, int, int, str, int] | None = None
        for (_, product), entries in fleet._free_gpus.items():
            if want.gpu_product not in product:
                continue
            for entry in entries[bisect.bisect_left(entries, (share,)) :]:
                if node_matches(entry[3]):
                    if best is None or entry < best:
                        best = entry
                    break
        if best is not None:
            gpu = fleet.gpu(best[3], best[4])
            assert gpu is not None
            return StartServer(
                f"{gpu.label} fit {format_size(int(share))} per GPU most tightly",
                node=gpu.node,
                gpus=(gpu.index,),
                framework_group=group,
            )
        # Nothing fits. The wait names the largest free GPU, found in the same sorted lists
        # rather than by a pass over every node: in a saturated fleet every waiting lease
        # asks this again whenever room frees up.
        top: tuple[int, int, int, str, int] | None = None
        for (_, product), entries in fleet._free_gpus.items():
            if want.gpu_product not in product:
                continue
            most = next((e for e in reversed(entries) if node_matches(e[3])), None)
            if most is None:
                continue
            # The first of equals in node order, as a pass over the nodes meets them.
            for entry in entries[bisect.bisect_left(entries, (most[0],)) :]:
                if node_matches(entry[3]):
                    most = entry
                    break
            if top is None or (-most[0], most[1:3]) < (-top[0], top[1:3]):
                top = most
        found = fleet.gpu(top[3], top[4]) if top is not None else None
        return _gpu_wait(share, found)
    chosen_node: NodeView | None = None
    chosen: tuple[GpuView, ...] = ()
    least = 0.0
    largest: GpuView | None = None
    for node in fleet.nodes:
        if not node_matches(node.name):
            continue
        usable = [g for g in node.gpus if want.gpu_product in g.product]
        for g in usable:
            if largest is None or g.free_bytes > largest.free_bytes:
                largest = g
        fitting = sorted((g for g in usable if g.free_bytes >= share), key=lambda g: g.free_bytes)
        if len(fitting) < want.gpus:
            continue
        picked = tuple(fitting[: want.gpus])
        leftover = sum((g.free_bytes - share) / g.capacity_bytes for g in picked)
        if chosen_node is None or leftover < least:
            chosen_node, chosen, least = node, picked, leftover
    if chosen_node is not None:
        return StartServer(
            f"{', '.join(g.label for g in chosen)} fit {format_size(int(share))} per GPU "
            "most tightly",
            node=chosen_node.name,
            gpus=tuple(g.index for g in chosen),
            framework_group=group,
        )
    return _gpu_wait(share, largest)


def _gpu_wait(share: float, largest: GpuView | None) -> Wait:
    where = f"{format_size(largest.free_bytes)} on {largest.label}" if largest else "none"
    return Wait(f"needs {format_size(int(share))} GPU memory; largest free is {where}")
