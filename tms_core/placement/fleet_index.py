"""`FleetIndex`: the fleet as placement reads it, servers and GPUs kept sorted by free memory."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tms_core.ids import ServerId
from tms_core.placement.views import GpuView, NodeView, ServerView

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
        return [node for name in self._nodes if (node := self.node(name)) is not None]

    def node(self, name: str) -> NodeView | None:
        """One node with its GPUs as they are now."""
        n = self._nodes.get(name)
        if n is None:
            return None
        return NodeView(n.name, tuple(self._gpus[(n.name, g.index)] for g in n.gpus), n.labels)

    def server(self, server_id: ServerId) -> ServerView | None:
        return self._servers.get(server_id)

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
