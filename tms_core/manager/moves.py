"""Consolidation moves: idle leases leave lightly used servers when that empties one.

A pass (`Consolidator.run_pass`, from the reconciler) plans moves with the pure
`tms_core.consolidation`; each moving lease's models are added to its target's assignment,
the target loads them while the source still serves, and `advance` switches the lease in one
commit once the target reports them READY. Only then does the source unload, and the emptied
source stops as any idle server does. A move is abandoned on a failed load, a timeout, an
inference, a release, or the target going away; the other moves off its source go with it.
"""

from __future__ import annotations

import logging
import time

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

    def _sources(
        self, now: float, views: dict[ServerId, placement.ServerView]
    ) -> list[consolidation.Source]:
        """Running unpooled servers at most `consolidate_max_used` full whose every lease is
        idle enough to move, and that no lease elsewhere was placed beside (`colocate_with`)."""
        ledger = self._ledger
        beside: set[str] = set()
        for lease in ledger.index.live.values():
            beside.update(lease.constraints.colocate_with)
        max_used = self._settings.placement.consolidate_max_used
        sources = []
        for server in ledger.servers.values():
            view = views.get(server.id)
            if (
                view is None
                or consolidation.used_fraction(view) > max_used
                or server.state is not ServerState.RUNNING
                or server.pool
                or server.leak
                or server.id in ledger.moving.incoming
                or server.id in ledger.moving.draining
            ):
                continue
            leases = ledger.leases_on(server.id)
            if not leases or not all(self._movable(lease, server, now) for lease in leases):
                continue
            load = ledger.index.loads[server.id]
            names = ledger.names
            if beside and (
                beside & load.tags.keys()
                or any(beside.intersection(names.names_of(i)) for i in load.leases)
            ):
                continue
            sources.append(
                consolidation.Source(
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
            )
        return sources

    def run_pass(self, now: float) -> None:
        """One consolidation pass: starts the moves that empty lightly used servers."""
        began = time.perf_counter()
        try:
            self._run_pass(now)
        finally:
            if self._probe is not None:
                self._probe.consolidated(time.perf_counter() - began)

    def _run_pass(self, now: float) -> None:
        ledger = self._ledger
        fleet = self._views.fleet()
        views = {view.id: view for view in fleet.servers}
        sources = self._sources(now, views)
        if not sources:
            return
        # Targets: running servers that hold leases (an empty one is about to stop, and
        # filling it would empty nothing).
        running = [
            view
            for view in views.values()
            if (server := ledger.servers.get(view.id)) is not None
            and server.state is ServerState.RUNNING
            and view.id in ledger.index.loads
        ]
        # Only the nodes of those servers: a lease can join no other (and on a large fleet
        # most nodes hold no server at all).
        on = {view.node for view in running}
        moves = consolidation.plan_moves(
            sources,
            running,
            [node for node in fleet.nodes if node.name in on],
            server_capacity=self._settings.servers.memory,
            isolated_frameworks=frozenset(self._settings.placement.isolated_frameworks),
            max_used=self._settings.placement.consolidate_max_used,
        )
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
