"""Consolidation: which lightly used servers to empty, and where their leases go. Pure.

Given the live servers, the nodes, and the servers whose every lease could move (idle
enough, READY, not exclusive or pooled), it answers with the moves that empty whole servers
onto other running ones: a source is taken only when every one of its leases joins another
running server (placement's own `place`, never starting one), so each accepted source is a
server, and its GPUs, no longer in use. The manager carries the moves out (load on the
target first, switch, then unload); see docs/placement.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from tms_core.ids import ServerId
from tms_core.placement import (
    Constraints,
    FleetIndex,
    JoinServer,
    ModelNeed,
    NodeView,
    ServerView,
    place,
)


@dataclass(frozen=True)
class MovableLease:
    """What placement needs to know of a lease that could move."""

    id: str
    models: tuple[ModelNeed, ...]
    binary: str = ""
    constraints: Constraints = field(default_factory=Constraints)
    tags: frozenset[str] = frozenset()
    """Its id, names and `key=value` labels: they go with it to the target."""


@dataclass(frozen=True)
class Source:
    """A server that could be emptied, with every live lease it holds."""

    server: ServerId
    leases: tuple[MovableLease, ...]


@dataclass(frozen=True)
class Move:
    lease_id: str
    source: ServerId
    target: ServerId


def used_fraction(server: ServerView) -> float:
    return server.used_bytes / max(server.capacity_bytes, 1)


def plan_moves(
    sources: Sequence[Source],
    servers: Sequence[ServerView],
    nodes: Sequence[NodeView] = (),
    *,
    server_capacity: int,
    isolated_frameworks: frozenset[str] = frozenset(),
    max_sources: int = 0,
    max_used: float = 1.0,
) -> list[Move]:
    """The moves that empty the least used `sources` onto the other `servers`.

    Sources are tried least used fraction first; one whose leases do not all fit elsewhere
    is left as it is (the fleet as it was before trying it). A server that takes a lease is
    no longer a source, and an emptied source takes none. `max_sources` (0: no limit) caps
    the servers emptied in one plan; sources using more than `max_used` of their capacity
    are not tried.
    """
    steps = plan_steps(
        sources,
        servers,
        nodes,
        server_capacity=server_capacity,
        isolated_frameworks=isolated_frameworks,
        max_sources=max_sources,
        max_used=max_used,
    )
    return [move for planned in steps for move in planned]


def plan_steps(
    sources: Sequence[Source],
    servers: Sequence[ServerView],
    nodes: Sequence[NodeView] = (),
    *,
    server_capacity: int,
    isolated_frameworks: frozenset[str] = frozenset(),
    max_sources: int = 0,
    max_used: float = 1.0,
) -> Iterator[list[Move]]:
    """`plan_moves` one source at a time: yields the moves that empty each source tried
    (none when it stays), so that a caller can let other work in between sources."""
    views = {view.id: view for view in servers}
    fleet = FleetIndex(servers, nodes)
    gpu_used: dict[tuple[str, int], int] = {}
    for node in fleet.nodes:
        for gpu in node.gpus:
            gpu_used[(node.name, gpu.index)] = gpu.used_bytes
    emptied: set[ServerId] = set()
    targets: set[ServerId] = set()
    candidates = [
        s
        for s in sources
        if s.server in views and s.leases and used_fraction(views[s.server]) <= max_used
    ]
    candidates.sort(key=lambda s: (used_fraction(views[s.server]), views[s.server].used_bytes))

    def set_view(view: ServerView | None, old: ServerView) -> None:
        """Puts `view` (None: drops `old`) and moves the GPUs' use by the difference."""
        before = old.used_bytes if old.id in views else 0
        after = view.used_bytes if view is not None else 0
        if view is None:
            fleet.drop_server(old.id)
            views.pop(old.id, None)
        else:
            fleet.put_server(view)
            views[view.id] = view
        for index in old.gpus:
            key = (old.node, index)
            gpu_used[key] = gpu_used.get(key, 0) + (after - before) // len(old.gpus)
            fleet.set_gpu_used(old.node, index, gpu_used[key])

    for source in candidates:
        if max_sources and len(emptied) >= max_sources:
            break
        if source.server in targets or source.server in emptied:
            continue
        original = views[source.server]
        # What to put back if one of its leases finds no place.
        saved: dict[ServerId, ServerView] = {}
        set_view(None, original)
        planned: list[Move] = []
        for lease in source.leases:
            decision = place(
                lease.models,
                index=fleet,
                server_capacity=server_capacity,
                # A move is worth making only onto a running server: a decision to start one
                # (allowed here so that `place` need not explain a wait) means none has room.
                max_servers=sys.maxsize,
                binary=lease.binary,
                constraints=lease.constraints,
                isolated_frameworks=isolated_frameworks,
            )
            if not isinstance(decision, JoinServer) or decision.server_id == source.server:
                break
            target = views[decision.server_id]
            saved.setdefault(target.id, target)
            set_view(_with_lease(target, lease), target)
            planned.append(Move(lease.id, source.server, target.id))
        else:
            emptied.add(source.server)
            targets.update(move.target for move in planned)
            yield planned
            continue
        for target in saved.values():
            set_view(target, views[target.id])
        set_view(original, original)
        yield []


def _with_lease(server: ServerView, lease: MovableLease) -> ServerView:
    """`server` as it is once `lease` has joined it."""
    held = dict(server.held)
    models = dict(server.models)
    used = server.used_bytes
    for model in lease.models:
        uri, counted = held.get(model.name, ("", 0))
        if uri == model.uri and counted >= model.memory_bytes:
            continue
        used += model.memory_bytes - (counted if uri == model.uri else 0)
        held[model.name] = (model.uri, model.memory_bytes)
        models[model.name] = model.uri
    return replace(
        server,
        used_bytes=used,
        held=held,
        models=models,
        tags=frozenset(server.tags) | lease.tags,
        exclusive=server.exclusive or lease.constraints.exclusive,
    )
