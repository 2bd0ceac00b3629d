"""`place`: where a lease's models go, decided over a `FleetIndex` (docs/placement.md)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from tms_core.ids import ServerId
from tms_core.placement.fleet_index import FleetIndex
from tms_core.placement.views import (
    Constraints,
    Decision,
    GpuView,
    JoinServer,
    ModelNeed,
    NodeView,
    PoolSpec,
    Reject,
    ServerView,
    StartServer,
    Wait,
    framework_group,
)
from tms_core.units import format_size


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
