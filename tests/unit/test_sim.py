"""The simulator on small generated traces: what a user of the fleet would see holds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tms_core.domain import LeaseState
from tms_core.placement import FleetIndex
from tms_core.sim.backend import parse_fleet
from tms_core.sim.fleet import SimFleet
from tms_core.sim.trace import (
    GiB,
    Played,
    TraceSpec,
    generate,
    keep_everything_loaded,
    play_activity,
    play_per_request,
)

SMALL = TraceSpec(
    nodes=3,
    gpus_per_node=4,
    gpu_gib=80,
    requests=400,
    models=40,
    arrivals_per_s=0.5,
    mean_hold_s=300.0,
    seed=3,
)


def watch(fleet: SimFleet, every: float, problems: list[str]) -> None:
    """Checks, every `every` simulated seconds while leases live: no GPU holds more than it
    has, and the fleet placement decides on is the fleet as it is."""

    def check() -> None:
        for gpu, used in fleet.gpu_memory().items():
            if used > SMALL.gpu_gib * GiB:
                problems.append(f"{gpu} holds {used / GiB:.1f} GiB at {fleet.now}")
        kept = fleet.manager.fleet()
        views = fleet.manager.views.views()
        fresh = FleetIndex(views, fleet.manager.views.node_views(views))
        if sorted(kept.servers, key=lambda v: v.id) != sorted(fresh.servers, key=lambda v: v.id):
            problems.append(f"the kept fleet index has other servers at {fleet.now}")
        if kept.nodes != fresh.nodes:
            problems.append(f"the kept fleet index has other GPU use at {fleet.now}")
        if fleet.manager.has_live_leases() or not fleet.manager.leases:
            fleet.after(every, check)

    fleet.after(every, check)


def assert_counts_add_up(played: Played, requests: int) -> None:
    fleet = played.fleet
    leases = [fleet.lease(lease_id) for lease_id in played.lease_ids]
    assert len(leases) == requests
    assert len(fleet.decision_s) == requests, "one placement decision per request"
    assert set(fleet.pending_s) == {lease.id for lease in leases}
    assert all(lease.state.ended for lease in leases)
    assert not fleet.manager.servers, "idle servers stop once every lease has ended"
    assert fleet.loads <= requests
    assert len(played.ttfi_s) == sum(1 for lease in leases if lease.ready_at is not None)
    assert all(t >= 0 for t in played.ttfi_s)


async def test_per_request_leases_all_end_within_capacity() -> None:
    trace = generate(SMALL)
    problems: list[str] = []
    played = await play_per_request(trace, watch=lambda fleet: watch(fleet, 20.0, problems))
    assert problems == []
    assert_counts_add_up(played, SMALL.requests)
    leases = [played.fleet.lease(lease_id) for lease_id in played.lease_ids]
    # Every lease was released by its holder; none failed or expired.
    assert {lease.state for lease in leases} == {LeaseState.RELEASED}
    # A lease that started its server waited for the start and its model's load.
    started = [t for t in played.ttfi_s if t >= SMALL.start_s]
    assert started and min(played.ttfi_s) == 0.0, "some joined a server holding their model"
    peak = max(played.samples, key=lambda s: s.gpus_in_use)
    assert peak.gpus_in_use * SMALL.gpu_gib * GiB >= peak.declared_bytes


async def test_a_full_fleet_makes_leases_wait_and_still_serves_them_all() -> None:
    spec = replace(SMALL, nodes=1, gpus_per_node=2, requests=150, arrivals_per_s=1.0)
    trace = generate(spec)
    problems: list[str] = []
    played = await play_per_request(trace, watch=lambda fleet: watch(fleet, 5.0, problems))
    assert problems == []
    assert_counts_add_up(played, spec.requests)
    waited = [s for s in played.fleet.pending_s.values() if s > 0]
    assert waited, "a fleet of two GPUs must make some of 150 leases wait"
    assert max(s.gpus_in_use for s in played.samples) <= 2


async def test_activity_renewed_leases_live_while_used_then_expire() -> None:
    trace = generate(SMALL)
    played = await play_activity(trace, window_s=120.0)
    leases = [played.fleet.lease(lease_id) for lease_id in played.lease_ids]
    assert all(lease.state.ended for lease in leases)
    assert {lease.state for lease in leases} == {LeaseState.EXPIRED}
    # One lease per model at a time: fewer leases than requests, one per request served.
    assert len(leases) < SMALL.requests
    assert len(played.ttfi_s) == SMALL.requests
    for lease in leases:
        assert lease.ready_at is not None
        # It lived at least its window past READY, and past the last use a request made of
        # it (the inferences kept it alive), by at most a window and a tick.
        assert lease.updated_at >= lease.ready_at + 120.0
        used = played.used_until[lease.id]
        assert used <= lease.updated_at <= max(used, lease.ready_at) + 120.0 + 60.0, lease.id


def test_keeping_everything_loaded_costs_the_most_memory_and_waits_least() -> None:
    trace = generate(SMALL)
    gib_hours, ttfi = keep_everything_loaded(trace)
    assert len(ttfi) == SMALL.requests
    distinct = len({r.model for r in trace.requests})
    assert sum(1 for t in ttfi if t > 0) >= distinct
    assert gib_hours > 0


def test_a_fleet_is_nodes_by_gpus_by_size() -> None:
    nodes = parse_fleet("2x4x80GiB")
    assert [n.name for n in nodes] == ["node-0", "node-1"]
    assert {g.total_bytes for n in nodes for g in n.gpus} == {80 * GiB}
    assert [len(n.gpus) for n in nodes] == [4, 4]


def test_a_fleet_that_is_not_nodes_by_gpus_by_size_is_refused_with_the_form() -> None:
    with pytest.raises(ValueError, match="NODESxGPUSxSIZE"):
        parse_fleet("4 nodes")


async def test_consolidation_moves_idle_leases_and_uses_fewer_gpu_hours() -> None:
    # Long holds: leases end one by one well after the arrivals, leaving GPUs lightly used.
    spec = replace(SMALL, requests=300, mean_hold_s=3000.0)
    trace = generate(spec)
    plain = await play_per_request(trace)
    problems: list[str] = []
    moved = await play_per_request(
        trace, consolidate=True, watch=lambda fleet: watch(fleet, 20.0, problems)
    )
    assert problems == []
    fleet = moved.fleet
    assert fleet.manager.moves_done > 0 and fleet.manager.move_reloads > 0
    leases = [fleet.lease(lease_id) for lease_id in moved.lease_ids]
    # Moves never cost a lease: every one served until its holder released it.
    assert {lease.state for lease in leases} == {LeaseState.RELEASED}
    assert not fleet.manager.servers
    assert moved.gpu_hours(60.0) < plain.gpu_hours(60.0)
    # A moved lease's models were loaded again on its new server: loads add up to that.
    assert fleet.loads >= plain.fleet.loads
