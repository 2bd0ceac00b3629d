"""Consolidation: idle leases leave lightly used servers for other running ones, loading on
the new server first, so that the emptied server stops."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.conftest import GiB, Harness, MakeHarness, pairs, request, served
from tms_core.consolidation import MovableLease, Move, Source, plan_moves
from tms_core.domain import Lease, LeaseState, ModelState, ServedModel, ServerState
from tms_core.ids import ModelName, ServerId
from tms_core.lease_request import LeaseOptions
from tms_core.manager.moves import PassPlan
from tms_core.placement import ModelNeed, ServerView

CONSOLIDATE = {"consolidate": True, "consolidate_idle_s": 60, "consolidate_interval_s": 30}


async def two_servers(h: Harness) -> tuple[Lease, Lease, str, str]:
    """`small` (1 GiB) alone on one server, `big` (3 GiB) alone on another, both READY."""
    m = h.manager
    filler = await m.acquire([request("filler", 6 * GiB)])
    filler = await h.make_ready(filler)
    big = await h.make_ready(await m.acquire([request("big", 3 * GiB)]))
    small = await h.make_ready(await m.acquire([request("small", GiB)]))
    # Best fit put `small` beside `filler` (2 GiB free there, 5 GiB beside `big`).
    assert small.server_id == filler.server_id != big.server_id
    await m.release(filler.id)
    await m.report(small.server_id or "", triton_ready=True, models=served(pairs(small)))
    assert m.snapshot(filler.id).state is LeaseState.RELEASED
    return small, big, small.server_id or "", big.server_id or ""


def served_inferences(name: str, uri: str, count: int, last_at: float) -> ServedModel:
    """A READY model as its sidecar reports it after `count` inferences, the last at
    `last_at`."""
    return ServedModel(
        ModelName(name), uri, ModelState.READY, inference_count=count, last_inference_at=last_at
    )


def events(h: Harness, lease_id: str) -> list[tuple[str, str]]:
    return [
        (e.state, e.reason)
        for e in h.manager.events.kept()
        if e.kind == "lease" and e.id == lease_id
    ]


async def test_an_idle_lease_moves_only_once_the_target_holds_its_models(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    small, big, source, target = await two_servers(h)
    h.clock.advance(61)
    await m.tick()

    # The target loads the model first; the lease still serves from the source.
    assert ("small", small.models[0].uri) in h.desired(target)
    assert ("small", small.models[0].uri) in h.desired(source)
    moving = m.snapshot(small.id)
    assert moving.state is LeaseState.READY and moving.server_id == source
    assert events(h, small.id)[-1][0] == "MOVING"
    await m.report(
        target,
        triton_ready=True,
        models=[*served(pairs(big)), *served(pairs(small), ModelState.LOADING)],
    )
    assert m.snapshot(small.id).server_id == source

    await m.report(target, triton_ready=True, models=served([*pairs(big), *pairs(small)]))
    moved = m.snapshot(small.id)
    assert moved.state is LeaseState.READY and moved.server_id == target
    assert events(h, small.id)[-1] == ("MOVED", f"consolidation: from {source} to {target}")
    assert m.moves_done == 1 and m.move_reloads == 1
    # The source no longer wants the model; once unloaded and idle past the grace, it stops.
    assert h.desired(source) == []
    await m.report(source, triton_ready=True, models=[])
    h.clock.advance(31)
    await m.tick()
    assert ServerId(source) in h.backend.stopped
    assert m.snapshot(small.id).state is LeaseState.READY
    assert m.snapshot(big.id).server_id == target


async def test_consolidation_is_off_by_default(make_harness: MakeHarness) -> None:
    h = await make_harness()
    small, _, source, target = await two_servers(h)
    h.clock.advance(600)
    await h.manager.tick()
    assert h.manager.snapshot(small.id).server_id == source
    assert ("small", small.models[0].uri) not in h.desired(target)


async def test_a_lease_that_served_recently_is_not_moved(make_harness: MakeHarness) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    small, _, source, target = await two_servers(h)
    h.clock.advance(61)
    model = small.models[0]
    await m.report(
        source,
        triton_ready=True,
        models=[served_inferences(model.name, model.uri, 3, h.clock.now() - 5)],
    )
    await m.tick()
    assert ("small", model.uri) not in h.desired(target)
    assert not any(state == "MOVING" for state, _ in events(h, small.id))


async def test_a_pass_plans_without_the_lock_and_leaves_a_source_that_changed_meanwhile(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    small, _, source, target = await two_servers(h)
    h.clock.advance(61)
    planning, resume = asyncio.Event(), asyncio.Event()
    plan = m.consolidator.plan

    async def paused_plan(inputs: PassPlan) -> list[list[Move]]:
        planning.set()
        await resume.wait()
        return await plan(inputs)

    m.consolidator.plan = paused_plan  # type: ignore[method-assign]
    passing = asyncio.create_task(m.tick())
    await planning.wait()
    # The lease serves an inference while the pass plans: the report gets the lock at once.
    model = small.models[0]
    inference = served_inferences(model.name, model.uri, 1, h.clock.now())
    await asyncio.wait_for(m.report(source, triton_ready=True, models=[inference]), 5)
    resume.set()
    await passing
    assert ("small", model.uri) not in h.desired(target)
    assert not any(state == "MOVING" for state, _ in events(h, small.id))

    # Idle long enough again, the next pass moves it.
    m.consolidator.plan = plan  # type: ignore[method-assign]
    h.clock.advance(61)
    await m.tick()
    assert ("small", model.uri) in h.desired(target)
    assert events(h, small.id)[-1][0] == "MOVING"


async def test_a_failed_load_on_the_target_abandons_the_move(make_harness: MakeHarness) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    small, big, source, target = await two_servers(h)
    h.clock.advance(61)
    await m.tick()
    assert ("small", small.models[0].uri) in h.desired(target)
    await m.report(
        target,
        triton_ready=True,
        models=[*served(pairs(big)), *served(pairs(small), ModelState.FAILED, "out of memory")],
    )
    stayed = m.snapshot(small.id)
    assert stayed.state is LeaseState.READY and stayed.server_id == source
    assert ("small", small.models[0].uri) not in h.desired(target)
    assert events(h, small.id)[-1][0] == "MOVE_ABANDONED"
    assert "out of memory" in events(h, small.id)[-1][1]
    # The source keeps serving and is not stopped.
    h.clock.advance(31)
    await m.tick()
    assert m.servers[ServerId(source)].state is ServerState.RUNNING


async def test_a_lease_released_while_moving_abandons_the_move(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    small, big, _, target = await two_servers(h)
    h.clock.advance(61)
    await m.tick()
    await m.release(small.id)
    await m.report(target, triton_ready=True, models=served([*pairs(big), *pairs(small)]))
    assert ("small", small.models[0].uri) not in h.desired(target)
    assert m.moves_done == 0


async def test_no_move_when_the_leases_do_not_fit_elsewhere(make_harness: MakeHarness) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    a = await h.make_ready(await m.acquire([request("a", 5 * GiB)]))
    b = await h.make_ready(await m.acquire([request("b", 5 * GiB)]))
    assert a.server_id != b.server_id
    h.clock.advance(61)
    await m.tick()
    assert m.snapshot(a.id).server_id == a.server_id
    assert m.snapshot(b.id).server_id == b.server_id
    assert not any(e.state == "MOVING" for e in m.events.kept())


# ---------------------------------------------------------------------- the pure decision


def _server(i: int, capacity: int, models: dict[str, int]) -> ServerView:
    return ServerView(
        id=ServerId(f"s{i}"),
        capacity_bytes=capacity,
        used_bytes=sum(models.values()),
        models={name: f"uri-{name}" for name in models},
        held={name: (f"uri-{name}", size) for name, size in models.items()},
    )


fleets = st.lists(
    st.dictionaries(
        st.sampled_from([f"m{k}" for k in range(12)]), st.integers(1, 6), min_size=0, max_size=4
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(fleets, st.integers(8, 16))
def test_plans_empty_whole_servers_within_capacity(
    fleet: list[dict[str, int]], capacity: int
) -> None:
    # Each server's models, over capacity dropped until they fit; one lease per model.
    servers: list[ServerView] = []
    sources: list[Source] = []
    for i, held in enumerate(fleet):
        models: dict[str, int] = {}
        for name, size in held.items():
            if sum(models.values()) + size <= capacity:
                models[name] = size
        view = _server(i, capacity, models)
        servers.append(view)
        sources.append(
            Source(
                view.id,
                tuple(
                    MovableLease(f"{view.id}-{n}", (ModelNeed(n, f"uri-{n}", size),))
                    for n, size in models.items()
                ),
            )
        )
    moves = plan_moves(sources, servers, server_capacity=capacity)

    by_id = {s.id: s for s in servers}
    emptied = {move.source for move in moves}
    targets = {move.target for move in moves}
    assert not emptied & targets
    for source in sources:
        moved = {move.lease_id for move in moves if move.source == source.server}
        # All or nothing: only a server left empty is worth the reloads.
        assert moved in (set(), {lease.id for lease in source.leases})
    # Never over capacity: each target's models, shared ones counted once.
    for target in targets:
        held = dict(by_id[target].held)
        for move in moves:
            if move.target == target:
                name = move.lease_id.split("-", 1)[1]
                held.setdefault(name, by_id[move.source].held[name])
        assert sum(size for _, size in held.values()) <= capacity
    # Fewer servers in use, never a new one.
    assert targets <= set(by_id)
    in_use = {s.id for s in servers if s.used_bytes}
    assert len(in_use - emptied) == len(in_use) - len(emptied & in_use)


def test_the_least_used_server_is_emptied_first() -> None:
    servers = [
        _server(0, 10, {"a": 4}),
        _server(1, 10, {"b": 2}),
        _server(2, 10, {"c": 5}),
    ]
    sources = [
        Source(s.id, (MovableLease(f"l-{n}", (ModelNeed(n, f"uri-{n}", size),)),))
        for s in servers
        for n, (_, size) in s.held.items()
    ]
    moves = plan_moves(sources, servers, server_capacity=10)
    # s1 (20 %) goes first, to the tightest fit (s2, now 7 of 10); s0 (4) then fits on no
    # server but the emptied one, so it stays.
    assert [(m.lease_id, m.source, m.target) for m in moves] == [("l-b", "s1", "s2")]


async def test_while_a_move_loads_its_room_is_taken_and_the_source_takes_no_new_lease(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    small, big, source, target = await two_servers(h)
    h.clock.advance(61)
    await m.tick()
    # 5 GiB: the source has 7 free but is being emptied; the target has 5 free, less the
    # 1 GiB loading for the move. So a server of its own.
    new = await m.acquire([request("new", 5 * GiB)])
    assert new.server_id not in (source, target)
    await m.report(target, triton_ready=True, models=served([*pairs(big), *pairs(small)]))
    assert m.snapshot(small.id).server_id == target


async def test_an_exclusive_lease_is_not_moved(make_harness: MakeHarness) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    big = await h.make_ready(await m.acquire([request("big", 3 * GiB)]))
    alone = await h.make_ready(
        await m.acquire([request("alone", GiB)], LeaseOptions(exclusive=True))
    )
    assert alone.server_id != big.server_id
    h.clock.advance(61)
    await m.tick()
    assert m.snapshot(alone.id).server_id == alone.server_id
    assert ("alone", alone.models[0].uri) not in h.desired(big.server_id or "")


async def test_one_failed_move_abandons_the_others_off_the_same_server(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(placement=CONSOLIDATE)
    m = h.manager
    filler = await h.make_ready(await m.acquire([request("filler", 6 * GiB)]))
    big = await h.make_ready(await m.acquire([request("big", 3 * GiB)]))
    one = await h.make_ready(await m.acquire([request("one", GiB)]))
    two = await h.make_ready(await m.acquire([request("two", GiB)]))
    source, target = filler.server_id or "", big.server_id or ""
    assert one.server_id == two.server_id == source != target
    await m.release(filler.id)
    await m.report(source, triton_ready=True, models=served([*pairs(one), *pairs(two)]))
    h.clock.advance(61)
    await m.tick()
    assert {name for name, _ in h.desired(target)} == {"big", "one", "two"}

    await m.report(
        target,
        triton_ready=True,
        models=[
            *served(pairs(big)),
            *served(pairs(one), ModelState.FAILED, "bad weights"),
            *served(pairs(two), ModelState.LOADING),
        ],
    )
    # The source would not be emptied: neither lease moves, and the target unloads both.
    assert {name for name, _ in h.desired(target)} == {"big"}
    assert m.snapshot(one.id).server_id == m.snapshot(two.id).server_id == source
    assert events(h, two.id)[-1][0] == "MOVE_ABANDONED"
    await m.report(target, triton_ready=True, models=served([*pairs(big), *pairs(two)]))
    assert m.snapshot(two.id).server_id == source and m.moves_done == 0
