"""Consolidation moves: idle leases leave lightly used servers when that empties one.

A pass runs in three steps from the reconciler: `prepare` reads the sources and targets under
the manager's lock; `plan` runs the pure `tms_core.consolidation` planner without it, source
by source, letting API calls and reports in between; `apply`, under the lock again, starts
the moves of each source whose servers are still exactly as planned (any change meanwhile
leaves that source for the next pass). Each moving lease's models are added to its target's
assignment, the target loads them while the source still serves, and `advance` switches the
lease in one commit once the target reports them READY. Only then does the source unload,
and the emptied source stops as any idle server does. A move is abandoned on a failed load,
a timeout, an inference, a release, or the target going away; the other moves off its source
go with it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tms_core import consolidation, placement
from tms_core.config import Settings
from tms_core.domain import Lease, LeaseState, ModelState, Server, ServerState
from tms_core.ids import LeaseId, ServerId
from tms_core.manager.ledger import Ledger
from tms_core.manager.probe import Probe
from tms_core.manager.settle import Settler
from tms_core.manager.views import FleetViews
from tms_core.units import format_duration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassPlan:
    """A consolidation pass's inputs, read under the lock and planned on without it."""

    sources: tuple[consolidation.Source, ...]
    running: tuple[placement.ServerView, ...]
    nodes: tuple[placement.NodeView, ...]
    began: float
    """`time.perf_counter()` when the pass began (the probe's measure, not domain time)."""
    locked_s: float
    """How long reading the inputs held the lock."""


def last_use(lease: Lease, server: Server) -> float:
    """When the lease last served (or became READY): what idleness is counted from."""
    last = max(lease.ready_at or lease.created_at, lease.last_activity_at)
    for model in lease.models:
        served = server.models.get(model.name)
        if served is not None and served.uri == model.uri:
            last = max(last, served.last_inference_at)
    return last


class Consolidator:
    def __init__(
        self,
        ledger: Ledger,
        views: FleetViews,
        settler: Settler,
        settings: Settings,
        probe: Probe | None = None,
    ) -> None:
        self._ledger = ledger
        self._views = views
        self._settler = settler
        self._settings = settings
        self._probe = probe
        self.moves_done = 0
        """Leases moved by consolidation since start-up."""
        self.move_reloads = 0
        """Models loaded on a target because of a move (the cost consolidation pays)."""

    def _movable(self, lease: Lease, server: Server, now: float) -> bool:
        wanted = lease.constraints
        return (
            lease.state is LeaseState.READY
            and lease.id not in self._ledger.moving.moves
            and not lease.pool
            and not wanted.exclusive
            and not wanted.colocate_with
            and now - last_use(lease, server) >= self._settings.placement.consolidate_idle_s
        )

    def _beside(self) -> set[str]:
        """The ids, names and labels that some live lease asked to be placed beside."""
        beside: set[str] = set()
        for lease in self._ledger.index.beside.values():
            beside.update(lease.constraints.colocate_with)
        return beside

    def _source(
        self,
        server: Server,
        now: float,
        view_of: Callable[[ServerId], placement.ServerView | None],
        beside: set[str],
    ) -> consolidation.Source | None:
        """The server as a source to empty: running, unpooled, at most
        `consolidate_max_used` full, every lease idle enough to move, and no lease elsewhere
        placed beside one of its own (`colocate_with`). None when it is not one."""
        ledger = self._ledger
        view = view_of(server.id)
        if (
            view is None
            or consolidation.used_fraction(view) > self._settings.placement.consolidate_max_used
            or server.state is not ServerState.RUNNING
            or server.pool
            or server.leak
            or server.id in ledger.moving.incoming
            or server.id in ledger.moving.draining
        ):
            return None
        leases = ledger.leases_on(server.id)
        if not leases or not all(self._movable(lease, server, now) for lease in leases):
            return None
        load = ledger.index.loads[server.id]
        names = ledger.names
        if beside and (
            beside & load.tags.keys()
            or any(beside.intersection(names.names_of(i)) for i in load.leases)
        ):
            return None
        return consolidation.Source(
            server.id,
            tuple(
                consolidation.MovableLease(
                    id=lease.id,
                    models=tuple(
                        placement.ModelNeed(m.name, m.uri, ledger.need(m), m.framework)
                        for m in lease.models
                    ),
                    binary=lease.tritonserver,
                    constraints=placement.Constraints(
                        gpus=lease.constraints.gpus,
                        gpu_product=lease.constraints.gpu_product,
                        node_selector=lease.constraints.node_selector,
                        avoid=frozenset(lease.constraints.avoid),
                    ),
                    tags=frozenset([*lease.tags, *names.names_of(lease.id)]),
                )
                for lease in leases
            ),
        )

    def prepare(self, now: float) -> PassPlan | None:
        """What a consolidation pass plans on, read under the lock: the sources and the
        running servers (targets) as they are now. None when no server could be emptied."""
        began = time.perf_counter()
        ledger = self._ledger
        fleet = self._views.fleet()
        views = {view.id: view for view in fleet.servers}
        beside = self._beside()
        sources = [
            source
            for server in ledger.servers.values()
            if (source := self._source(server, now, views.get, beside)) is not None
        ]
        if not sources:
            return None
        # Targets: running servers that hold leases (an empty one is about to stop, and
        # filling it would empty nothing).
        running = tuple(
            view
            for view in views.values()
            if (server := ledger.servers.get(view.id)) is not None
            and server.state is ServerState.RUNNING
            and view.id in ledger.index.loads
        )
        # Only the nodes of those servers: a lease can join no other (and on a large fleet
        # most nodes hold no server at all).
        on = {view.node for view in running}
        return PassPlan(
            sources=tuple(sources),
            running=running,
            nodes=tuple(
                node
                for name in fleet.node_names()
                if name in on and (node := fleet.node(name)) is not None
            ),
            began=began,
            locked_s=time.perf_counter() - began,
        )

    async def plan(self, plan: PassPlan) -> list[list[consolidation.Move]]:
        """The moves of `plan`, source by source (the pure planner), computed without the
        manager's lock: API calls and reports go on between sources."""
        groups = []
        steps = consolidation.plan_steps(
            plan.sources,
            plan.running,
            plan.nodes,
            server_capacity=self._settings.servers.memory,
            isolated_frameworks=frozenset(self._settings.placement.isolated_frameworks),
            max_used=self._settings.placement.consolidate_max_used,
        )
        for planned in steps:
            if planned:
                groups.append(planned)
            await asyncio.sleep(0)
        if not groups and self._probe is not None:
            # The pass ends here: nothing to apply.
            self._probe.consolidated(time.perf_counter() - plan.began, plan.locked_s)
        return groups

    def apply(self, plan: PassPlan, groups: list[list[consolidation.Move]], now: float) -> None:
        """Starts the planned moves whose source and targets are still as they were planned
        (inside a change, under the lock). A source that changed meanwhile (a lease came,
        went, or served; a target filled up) is left for the next pass: its plan may no
        longer empty it."""
        began = time.perf_counter()
        try:
            self._apply(plan, groups, now)
        finally:
            if self._probe is not None:
                locked = plan.locked_s + time.perf_counter() - began
                self._probe.consolidated(time.perf_counter() - plan.began, locked)

    def _apply(self, plan: PassPlan, groups: list[list[consolidation.Move]], now: float) -> None:
        ledger = self._ledger
        fleet = self._views.fleet()
        planned_views = {view.id: view for view in plan.running}
        planned_gpus = {(gpu.node, gpu.index): gpu for node in plan.nodes for gpu in node.gpus}
        planned_sources = {source.server: source for source in plan.sources}
        beside = self._beside()

        def unchanged(server_id: ServerId) -> bool:
            view = fleet.server(server_id)
            server = ledger.servers.get(server_id)
            return (
                view is not None
                and view == planned_views.get(server_id)
                and server is not None
                and server.state is ServerState.RUNNING
                and all(
                    fleet.gpu(view.node, index) == planned_gpus.get((view.node, index))
                    for index in view.gpus
                )
            )

        moves: list[consolidation.Move] = []
        for group in groups:
            source_id = group[0].source
            server = ledger.servers.get(source_id)
            if (
                server is None
                or self._source(server, now, fleet.server, beside) != planned_sources[source_id]
                or not all(unchanged(target) for target in {move.target for move in group})
            ):
                continue
            moves.extend(group)
        self._begin(moves, now)

    def _begin(self, moves: list[consolidation.Move], now: float) -> None:
        ledger = self._ledger
        for move in moves:
            lease = ledger.index.live[LeaseId(move.lease_id)]
            wanted = set(ledger.desired(move.target))
            self.move_reloads += sum((m.name, m.uri) not in wanted for m in lease.models)
            ledger.moving.begin(lease, move.source, move.target, now)
            ledger.index.mark_changed(move.source)
            ledger.index.mark_changed(move.target)
            ledger.outbox.event(
                "lease",
                lease.id,
                "MOVING",
                f"consolidation: loading on {move.target} to leave {move.source}",
                lease_id=lease.id,
                server_id=move.source,
            )
            ledger.bump(move.target)
        for target_id in {move.target for move in moves}:
            # A target that already holds the models takes the lease at once.
            self.advance(target_id, now)

    def advance_all(self, now: float) -> None:
        for target in list(self._ledger.moving.incoming):
            self.advance(target, now)

    def advance(self, target_id: ServerId, now: float) -> None:
        """Switches the leases moving to `target_id` whose models it reports READY; abandons
        moves that cannot finish."""
        ledger = self._ledger
        target = ledger.servers.get(target_id)
        timeout = self._settings.servers.start_timeout
        for lease_id in list(ledger.moving.incoming.get(target_id, {})):
            move = ledger.moving.moves.get(lease_id)
            if move is None:
                continue  # abandoned with another move off its source, just now
            lease = ledger.index.live.get(lease_id)
            source = ledger.servers.get(move.source)
            if target is None or not target.state.alive:
                self._abandon(lease_id, f"{target_id} is gone")
            elif lease is None or lease.state is not LeaseState.READY:
                self._abandon(lease_id, "the lease is no longer READY")
            elif source is None or lease.server_id != move.source:
                self._abandon(lease_id, f"the lease left {move.source}")
            elif last_use(lease, source) > move.started_at:
                self._abandon(lease_id, "the lease served an inference")
            else:
                states = [target.models.get(m.name) for m in lease.models]
                failed = next(
                    (
                        (m, served)
                        for m, served in zip(lease.models, states, strict=True)
                        if served is not None
                        and served.uri == m.uri
                        and served.state is ModelState.FAILED
                    ),
                    None,
                )
                if failed is not None:
                    model, served = failed
                    self._abandon(
                        lease_id, f"model {model.name!r} failed on {target_id}: {served.error}"
                    )
                elif target.triton_ready and all(
                    served is not None and served.uri == m.uri and served.state is ModelState.READY
                    for m, served in zip(lease.models, states, strict=True)
                ):
                    self._switch(lease, source, target, now)
                elif now >= move.started_at + timeout:
                    self._abandon(
                        lease_id, f"not loaded on {target_id} within {format_duration(timeout)}"
                    )

    def _end(self, lease_id: LeaseId) -> ServerId:
        move = self._ledger.moving.end(lease_id)
        self._ledger.index.mark_changed(move.source)
        self._ledger.index.mark_changed(move.target)
        return move.target

    def _abandon(self, lease_id: LeaseId, why: str) -> None:
        """Gives a move up: the target no longer wants the lease's models (its sidecar
        unloads them) and the lease stays where it is. The other moves off the same source
        go too: it would not be emptied."""
        ledger = self._ledger
        move = ledger.moving.moves[lease_id]
        self._end(lease_id)
        siblings = [i for i, m in ledger.moving.moves.items() if m.source == move.source]
        for other in [lease_id, *siblings]:
            if other != lease_id:
                ledger.bump(self._end(other))
            ledger.outbox.event(
                "lease",
                other,
                "MOVE_ABANDONED",
                why if other == lease_id else f"a move off {move.source} failed: {why}",
                lease_id=other,
                server_id=move.source,
            )
        ledger.bump(move.target)
        log.info("move of lease %s to %s abandoned: %s", lease_id, move.target, why)

    def _switch(self, lease: Lease, source: Server, target: Server, now: float) -> None:
        """Points the lease at `target`, which holds its models READY: routes follow at the
        commit, and the source, no longer wanting them, unloads. The lease stays READY."""
        ledger = self._ledger
        self._end(lease.id)
        ledger.place(lease, target.id)
        self._settler.sync_models(lease, target)
        lease.updated_at = now
        ledger.change_open.states.add(lease.id)
        self.moves_done += 1
        ledger.outbox.event(
            "lease",
            lease.id,
            "MOVED",
            f"consolidation: from {source.id} to {target.id}",
            lease_id=lease.id,
            server_id=target.id,
        )
        ledger.notify(lease)
        ledger.bump(source.id)
        ledger.bump(target.id)
        self._settler.settle(source, now)
        log.info("lease %s moved from %s to %s", lease.id, source.id, target.id)
