"""The lease state machine, driven through a fake backend, a manual clock and fake sidecar reports.

A sidecar is simulated by `manager.report(server_id, ...)`; the reconciler by `manager.tick()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

import pytest

from tests.unit.conftest import GiB, Harness, MakeHarness, pairs, request, served
from tms_core.domain import Assignment, Lease, LeaseState, ModelState, ServerState
from tms_core.errors import CapacityExceeded, InvalidArgument, LeaseEnded, LeaseNotFound
from tms_core.ids import ModelName, ServerId
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.manager.facade import LeaseManager


def assignment_stream(manager: LeaseManager, server_id: str) -> AsyncGenerator[Assignment, None]:
    """What a connected sidecar is told: the assignment now, then after every change."""
    return cast(AsyncGenerator[Assignment, None], manager.assignments(server_id))


async def first_assignment(manager: LeaseManager, server_id: str) -> Assignment:
    """What a sidecar connecting now would be told to hold."""
    async with aclosing(assignment_stream(manager, server_id)) as stream:
        return await anext(stream)


async def stored(h: Harness, lease_id: str) -> Lease:
    leases, _ = await h.store.load()
    return next(lease for lease in leases if lease.id == lease_id)


async def ready_lease(h: Harness, *models: ModelRequest, duration_s: float = 0.0) -> Lease:
    lease = await h.manager.acquire(
        models or [request("resnet")], LeaseOptions(duration_s=duration_s)
    )
    lease = await h.make_ready(lease)
    assert lease.state is LeaseState.READY
    return lease


async def unload_all(h: Harness, server_id: str | None) -> None:
    """The sidecar reports that it has unloaded every model."""
    assert server_id is not None
    await h.manager.report(server_id, triton_ready=True, models=[])


# ---------------------------------------------------------------------- acquire and load


async def test_acquire_starts_a_server_and_loads(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await m.acquire(
        [request("resnet", 2 * GiB)], LeaseOptions(name="my-lease", duration_s=120)
    )

    assert lease.state is LeaseState.LOADING
    assert lease.name == "my-lease"
    assert lease.id.startswith("l-")
    assert lease.server_id is not None
    assert h.backend.created == h.backend.started == [lease.server_id]
    server = m.servers[lease.server_id]
    assert server.state is ServerState.STARTING
    assert server.pid is not None and server.sidecar_pid is not None
    assert [(model.name, model.state) for model in lease.models] == [("resnet", ModelState.PENDING)]
    assignment = await first_assignment(m, lease.server_id)
    assert assignment.models == [("resnet", "file:///models/resnet")]
    # What the caller saw is on disk.
    on_disk = await stored(h, lease.id)
    assert on_disk.state is LeaseState.LOADING
    assert on_disk.server_id == lease.server_id
    _, servers = await h.store.load()
    assert [(s.id, s.pid) for s in servers] == [(server.id, server.pid)]


async def test_lease_is_ready_once_every_model_is_ready(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await m.acquire([request("a"), request("b")], LeaseOptions(duration_s=120))
    sid = lease.server_id
    assert sid is not None
    h.clock.advance(5)

    # One model loaded, one still loading: the lease keeps LOADING and shows both.
    await m.report(
        sid,
        triton_ready=True,
        models=[
            *served([("a", "file:///models/a")]),
            *served([("b", "file:///models/b")], ModelState.LOADING),
        ],
    )
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.LOADING
    assert [(x.name, x.state) for x in lease.models] == [
        ("a", ModelState.READY),
        ("b", ModelState.LOADING),
    ]
    assert m.servers[sid].state is ServerState.RUNNING

    h.clock.advance(5)
    await m.report(sid, triton_ready=True, models=served(pairs(lease)))
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.READY
    assert lease.reason == ""
    # The duration counts from READY, not from the request.
    assert lease.expires_at == h.clock.now() + 120
    assert (await stored(h, lease.id)).state is LeaseState.READY


async def test_not_ready_while_triton_is_not_ready(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire([request("a")])
    assert lease.server_id is not None
    await m.report(lease.server_id, triton_ready=False, models=served(pairs(lease)))
    assert m.snapshot(lease.id).state is LeaseState.LOADING
    assert m.servers[lease.server_id].state is ServerState.STARTING


async def test_report_for_an_unknown_server_is_ignored(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire([request("a")])
    await m.report("s-unknown", triton_ready=True, models=served(pairs(lease)))
    assert m.snapshot(lease.id).state is LeaseState.LOADING


async def test_a_second_lease_joins_the_server_when_it_fits(harness: Harness) -> None:
    h, m = harness, harness.manager
    first = await ready_lease(h, request("a", 2 * GiB))
    second = await m.acquire([request("b", 2 * GiB)])
    assert second.state is LeaseState.LOADING
    assert second.server_id == first.server_id
    assert len(h.backend.created) == 1
    assert second.server_id is not None
    assert (await first_assignment(m, second.server_id)).models == [
        ("a", "file:///models/a"),
        ("b", "file:///models/b"),
    ]
    second = await h.make_ready(second)
    assert second.state is LeaseState.READY
    assert m.snapshot(first.id).state is LeaseState.READY


async def test_a_lease_for_loaded_models_is_ready_at_once(harness: Harness) -> None:
    h, m = harness, harness.manager
    first = await ready_lease(h, request("a"))
    second = await m.acquire([request("a")], LeaseOptions(duration_s=60))
    assert second.state is LeaseState.READY
    assert second.server_id == first.server_id
    assert second.expires_at == h.clock.now() + 60


async def test_a_lease_that_does_not_fit_gets_its_own_server(harness: Harness) -> None:
    h, m = harness, harness.manager
    first = await ready_lease(h, request("a", 6 * GiB))
    second = await m.acquire([request("b", 4 * GiB)])
    assert second.state is LeaseState.LOADING
    assert second.server_id not in (None, first.server_id)
    assert len(h.backend.created) == 2


async def test_a_different_model_of_the_same_name_gets_its_own_server(harness: Harness) -> None:
    h, m = harness, harness.manager
    first = await ready_lease(h, request("a", GiB, uri="file:///one/a"))
    second = await m.acquire([request("a", GiB, uri="file:///two/a")])
    assert second.server_id not in (None, first.server_id)


async def test_a_lease_larger_than_a_server_is_refused(harness: Harness) -> None:
    h, m = harness, harness.manager
    with pytest.raises(CapacityExceeded) as info:
        await m.acquire([request("a", 6 * GiB), request("b", 3 * GiB)])
    assert "needs 9.0 GiB" in info.value.message
    assert "a server offers 8.0 GiB" in info.value.message
    assert m.list_leases(include_ended=True) == []
    assert h.backend.created == []


# ---------------------------------------------------------------------- failures


async def test_one_failed_model_fails_the_whole_lease(harness: Harness) -> None:
    h, m = harness, harness.manager
    other = await ready_lease(h, request("other"))
    lease = await m.acquire([request("a"), request("b"), request("c")])
    sid = lease.server_id
    assert sid is not None and sid == other.server_id

    await m.report(
        sid,
        triton_ready=True,
        models=[
            *served([("other", "file:///models/other"), ("a", "file:///models/a")]),
            *served([("b", "file:///models/b")], ModelState.FAILED, "CUDA out of memory"),
            *served([("c", "file:///models/c")], ModelState.LOADING),
        ],
    )
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.FAILED
    assert lease.reason == "model 'b': CUDA out of memory"
    assert lease.models[1].error == "CUDA out of memory"
    # All or nothing: the lease's other models are no longer wanted on the server, while the
    # other lease's model stays.
    assert h.desired(sid) == [(ModelName("other"), "file:///models/other")]
    assert (await first_assignment(m, sid)).models == [("other", "file:///models/other")]
    assert m.snapshot(other.id).state is LeaseState.READY
    assert (await stored(h, lease.id)).state is LeaseState.FAILED
    # An ended lease is listed only when asked for.
    assert [x.id for x in m.list_leases()] == [other.id]
    assert {x.id for x in m.list_leases(include_ended=True)} == {other.id, lease.id}


async def test_a_dead_server_fails_its_leases(harness: Harness) -> None:
    h, m = harness, harness.manager
    ready = await ready_lease(h, request("a"))
    loading = await m.acquire([request("b")])
    sid = ready.server_id
    assert sid is not None and loading.server_id == sid

    await m.tick()
    assert m.snapshot(ready.id).state is LeaseState.READY

    h.backend.dead[sid] = "tritonserver exited with code 1"
    await m.tick()
    for lease_id in (ready.id, loading.id):
        lease = m.snapshot(lease_id)
        assert lease.state is LeaseState.FAILED
        assert lease.reason == f"server {sid}: tritonserver exited with code 1"
    assert h.backend.stopped == [sid]
    assert not m.has_server(sid)
    _, servers = await h.store.load()
    assert [(s.state, s.reason) for s in servers] == [
        (ServerState.FAILED, "tritonserver exited with code 1")
    ]


async def test_a_server_that_never_gets_ready_fails_its_leases(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await m.acquire([request("a")])
    assert m.next_deadline() == h.clock.now() + 60  # start_timeout, before the lease expires
    h.clock.advance(60)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.LOADING
    h.clock.advance(1)
    await m.tick()
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.FAILED
    assert lease.reason == f"server {lease.server_id}: not ready within 1m00s"
    assert h.backend.stopped == [lease.server_id]


async def test_a_server_that_cannot_start_fails_its_lease(harness: Harness) -> None:
    h, m = harness, harness.manager

    async def cannot_start(server: object) -> None:
        raise OSError("exec format error")

    h.backend.start = cannot_start  # type: ignore[method-assign]
    lease = await m.acquire([request("a")])
    assert lease.state is LeaseState.FAILED
    assert lease.reason == (
        f"server {lease.server_id}: could not start tritonserver: exec format error"
    )


# ---------------------------------------------------------------------- release


async def test_release_unloads_then_ends(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"))
    sid = lease.server_id
    assert sid is not None

    released = await m.release(lease.id)
    assert released.state is LeaseState.RELEASING
    assert h.desired(sid) == []
    assert (await stored(h, lease.id)).state is LeaseState.RELEASING
    # Releasing again is harmless and changes nothing.
    assert (await m.release(lease.id)).state is LeaseState.RELEASING
    # Not released while Triton still holds the model.
    await m.report(sid, triton_ready=True, models=served(pairs(lease), ModelState.UNLOADING))
    assert m.snapshot(lease.id).state is LeaseState.RELEASING

    await m.report(sid, triton_ready=True, models=served(pairs(lease), ModelState.UNLOADED))
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.RELEASED
    assert (await stored(h, lease.id)).state is LeaseState.RELEASED
    # Ended leases cannot be renewed.
    with pytest.raises(LeaseEnded, match="RELEASED"):
        await m.renew(lease.id)


async def test_release_of_a_model_another_lease_holds_ends_at_once(harness: Harness) -> None:
    h, m = harness, harness.manager
    first = await ready_lease(h, request("a"))
    second = await m.acquire([request("a")])
    assert second.state is LeaseState.READY
    # "a" stays loaded for the other lease, so the first has nothing to wait for.
    assert (await m.release(first.id)).state is LeaseState.RELEASED
    assert first.server_id is not None
    assert h.desired(first.server_id) == [(ModelName("a"), "file:///models/a")]
    assert m.snapshot(second.id).state is LeaseState.READY


async def test_idle_server_is_stopped_after_the_grace(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"))
    sid = lease.server_id
    assert sid is not None
    await m.release(lease.id)
    await unload_all(h, sid)
    assert m.snapshot(lease.id).state is LeaseState.RELEASED
    assert m.servers[sid].idle_since == h.clock.now()
    assert m.next_deadline() == h.clock.now() + 30

    h.clock.advance(29)
    await m.tick()
    assert m.has_server(sid)
    assert h.backend.stopped == []

    h.clock.advance(1)
    await m.tick()
    assert h.backend.stopped == [sid]
    assert not m.has_server(sid)
    assert m.next_deadline() is None
    _, servers = await h.store.load()
    assert [(s.id, s.state, s.reason) for s in servers] == [(sid, ServerState.STOPPED, "idle")]


async def test_a_new_lease_keeps_an_idle_server(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"))
    await m.release(lease.id)
    await unload_all(h, lease.server_id)
    h.clock.advance(20)
    again = await m.acquire([request("b")])
    assert again.server_id == lease.server_id
    h.clock.advance(20)
    await m.tick()
    assert h.backend.stopped == []
    assert m.has_server(lease.server_id or "")


# ---------------------------------------------------------------------- expiry and renewal


async def test_a_lease_expires_when_not_renewed(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"), duration_s=120)
    assert m.next_deadline() == lease.expires_at

    h.clock.advance(119)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.READY

    h.clock.advance(1)
    await m.tick()
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.EXPIRED
    assert lease.reason == "not renewed in time"
    assert lease.server_id is not None
    assert h.desired(lease.server_id) == []
    assert (await stored(h, lease.id)).state is LeaseState.EXPIRED
    with pytest.raises(LeaseEnded, match="EXPIRED"):
        await m.renew(lease.id)


async def test_renew_pushes_the_expiry_out(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"), duration_s=120)
    old_expiry = lease.expires_at

    h.clock.advance(100)
    renewed = await m.renew(lease.id)  # by the lease's own duration
    assert renewed.expires_at == h.clock.now() + 120 == old_expiry + 100
    assert (await stored(h, lease.id)).expires_at == renewed.expires_at

    h.clock.advance(21)  # past the old expiry
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.READY

    renewed = await m.renew(lease.id, 1800)
    assert renewed.expires_at == h.clock.now() + 1800
    # A shorter renewal never shortens the lease.
    assert (await m.renew(lease.id, 10)).expires_at == renewed.expires_at

    h.clock.advance(1800)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.EXPIRED


def renewals(h: Harness, lease_id: str) -> list[str]:
    return [
        e.reason
        for e in h.manager.events.kept()
        if e.kind == "lease" and e.state == "RENEWED" and e.lease_id == lease_id
    ]


async def test_a_renewal_is_announced_to_watchers(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"), duration_s=120)
    assert renewals(h, lease.id) == []

    h.clock.advance(100)
    await m.renew(lease.id, 600)
    assert renewals(h, lease.id) == ["renewed; expires in 10m00s"]


async def test_activity_renewals_are_announced_at_most_once_per_quarter_window(
    harness: Harness,
) -> None:
    h, m = harness, harness.manager
    lease = await m.acquire([request("a")], LeaseOptions(duration_s=20, activity_window_s=40))
    lease = await h.make_ready(lease)
    assert lease.server_id is not None

    async def used_at(t: float) -> None:
        reported = served(pairs(lease))
        reported[0].last_inference_at = t
        await m.report(lease.server_id or "", triton_ready=True, models=reported)

    for _ in range(8):  # a report every 2 s, each after a new inference
        h.clock.advance(2)
        await used_at(h.clock.now())
    # 16 s of use, one announcement per 10 s (a quarter of the 40 s window).
    assert [r.startswith("active; expires in") for r in renewals(h, lease.id)] == [True, True]
    assert m.snapshot(lease.id).expires_at == h.clock.now() + 40 > lease.expires_at


async def test_a_renewal_while_loading_is_kept(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await m.acquire([request("a")], LeaseOptions(duration_s=60))
    renewed = await m.renew(lease.id, 3000)
    h.clock.advance(1)
    lease = await h.make_ready(lease)
    assert lease.expires_at >= renewed.expires_at


async def test_durations_over_the_maximum_are_refused(harness: Harness) -> None:
    h, m = harness, harness.manager
    with pytest.raises(InvalidArgument) as info:
        await m.acquire([request("a")], LeaseOptions(duration_s=3601))
    assert info.value.field == "duration"
    assert "lease.max_duration" in info.value.message
    assert "1h00m" in info.value.message

    lease = await ready_lease(h, request("a"), duration_s=600)
    with pytest.raises(InvalidArgument) as info:
        await m.renew(lease.id, 7200)
    assert info.value.field == "duration"
    assert info.value.message.startswith("duration: 2h00m is over the maximum of 1h00m")
    assert m.snapshot(lease.id).expires_at == lease.expires_at

    with pytest.raises(InvalidArgument, match="must not be negative"):
        await m.renew(lease.id, -1)


async def test_the_default_duration_applies(harness: Harness) -> None:
    lease = await ready_lease(harness, request("a"))
    assert lease.duration_s == 600
    assert lease.expires_at == harness.clock.now() + 600


async def test_a_nan_duration_is_an_invalid_argument(harness: Harness) -> None:
    m = harness.manager
    with pytest.raises(InvalidArgument):
        await m.acquire([request("a")], LeaseOptions(duration_s=float("nan")))
    assert m.list_leases() == []


# ---------------------------------------------------------------------- invalid requests


@pytest.mark.parametrize(
    ("models", "name", "field", "words"),
    [
        ([], "", "models", "at least one model"),
        ([request("a")], "Bad_Name", "name", "'Bad_Name' is not a DNS-1123 label"),
        ([request("a")], "-x", "name", "DNS-1123"),
        ([request("a")], "x" * 64, "name", "DNS-1123"),
        (
            [request("a"), request("a", uri="file:///other/a")],
            "",
            "models[1].name",
            "'a' appears twice",
        ),
        ([request("a"), ModelRequest("b", "")], "", "models[1].uri", "is empty"),
        ([ModelRequest("bad name", "file:///m")], "", "models[0].name", "not a Triton model name"),
        ([ModelRequest("", "file:///m")], "", "models[0].name", "not a Triton model name"),
        # A model's name is its directory in the server's repository.
        ([ModelRequest("..", "file:///m")], "", "models[0].name", "not a Triton model name"),
        ([ModelRequest(".", "file:///m")], "", "models[0].name", "not a Triton model name"),
        ([ModelRequest(".hidden", "file:///m")], "", "models[0].name", "not a Triton model name"),
        ([ModelRequest("a\n", "file:///m")], "", "models[0].name", "not a Triton model name"),
        ([ModelRequest("a", "file:///m", -1)], "", "models[0].memory", "must not be negative"),
        ([ModelRequest("a", "file:///m", 0, "abc")], "", "models[0].sha256", "64 hex digits"),
        (
            [ModelRequest("a", "file:///m#sha256=" + "1" * 64, 0, "2" * 64)],
            "",
            "models[0].sha256",
            "differs from the sha256 in the URI's fragment",
        ),
        ([ModelRequest("a", "file:///m#md5=x")], "", "models[0].uri", "sha256=<64 hex digits>"),
    ],
)
async def test_invalid_requests_name_the_field(
    harness: Harness, models: list[ModelRequest], name: str, field: str, words: str
) -> None:
    h, m = harness, harness.manager
    with pytest.raises(InvalidArgument) as info:
        await m.acquire(models, LeaseOptions(name=name))
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: ")
    assert words in info.value.message
    assert m.list_leases(include_ended=True) == []
    assert h.backend.created == []


async def test_a_good_name_is_kept(harness: Harness) -> None:
    lease = await harness.manager.acquire([request("a")], LeaseOptions(name="team-a-1"))
    assert lease.name == "team-a-1"


async def test_the_model_check_is_asked_with_the_field(make_harness: MakeHarness) -> None:
    h = await make_harness()
    calls: list[tuple[str, str, str]] = []

    def check(field: str, name: str, uri: str) -> None:
        calls.append((field, name, uri))
        if name == "missing":
            raise InvalidArgument(f"{field}.uri", "model directory /m/missing does not exist")

    h.backend.check_model = check  # type: ignore[method-assign,assignment]
    m = h.manager
    with pytest.raises(InvalidArgument) as info:
        await m.acquire([request("ok"), request("missing")])
    assert info.value.field == "models[1].uri"
    assert calls == [
        ("models[0]", "ok", "file:///models/ok"),
        ("models[1]", "missing", "file:///models/missing"),
    ]


@pytest.mark.parametrize("call", ["snapshot", "renew", "release"])
async def test_an_unknown_lease_is_not_found(harness: Harness, call: str) -> None:
    m = harness.manager
    with pytest.raises(LeaseNotFound) as info:
        if call == "snapshot":
            m.snapshot("l-nope")
        elif call == "renew":
            await m.renew("l-nope")
        else:
            await m.release("l-nope")
    assert info.value.message == "no lease with id or name 'l-nope'"


# ---------------------------------------------------------------------- max_servers


async def test_at_max_servers_a_lease_waits_then_takes_the_freed_server(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(servers={"max_servers": 1, "memory": 2 * GiB})
    m = h.manager
    first = await ready_lease(h, request("a", 2 * GiB))
    waiting = await m.acquire([request("b", 2 * GiB)])
    assert waiting.state is LeaseState.PENDING
    assert waiting.server_id is None
    assert waiting.reason == (
        "needs 2.0 GiB of memory; largest free is 0 B and all 1 servers are running"
    )
    assert len(h.backend.created) == 1
    assert (await stored(h, waiting.id)).state is LeaseState.PENDING

    await m.release(first.id)
    # Still unloading: its memory is not free yet.
    assert m.snapshot(waiting.id).state is LeaseState.PENDING
    await unload_all(h, first.server_id)
    assert m.snapshot(first.id).state is LeaseState.RELEASED
    await m.tick()

    placed = m.snapshot(waiting.id)
    assert placed.state is LeaseState.LOADING
    assert placed.reason == ""
    assert placed.server_id == first.server_id
    assert len(h.backend.created) == 1
    assert (await h.make_ready(placed)).state is LeaseState.READY


async def test_at_max_servers_a_lease_waits_for_a_server_to_go(make_harness: MakeHarness) -> None:
    # The waiting lease cannot join the running server (a different model of the same name),
    # so it starts a server of its own once the first one has been stopped.
    h = await make_harness(servers={"max_servers": 1})
    m = h.manager
    first = await ready_lease(h, request("a", GiB, uri="file:///one/a"))
    waiting = await m.acquire([request("a", GiB, uri="file:///two/a")])
    assert waiting.state is LeaseState.PENDING
    assert "all 1 servers are running" in waiting.reason

    assert first.server_id is not None
    h.backend.dead[first.server_id] = "killed"
    await m.tick()
    assert m.snapshot(first.id).state is LeaseState.FAILED
    placed = m.snapshot(waiting.id)
    assert placed.state is LeaseState.LOADING
    assert placed.server_id not in (None, first.server_id)
    assert len(h.backend.created) == 2


async def test_releasing_a_waiting_lease_ends_it_at_once(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"max_servers": 1, "memory": GiB})
    await ready_lease(h, request("a", GiB))
    waiting = await h.manager.acquire([request("b", GiB)])
    assert waiting.state is LeaseState.PENDING
    assert (await h.manager.release(waiting.id)).state is LeaseState.RELEASED


async def test_a_waiting_lease_can_expire(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"max_servers": 1, "memory": GiB})
    await ready_lease(h, request("a", GiB), duration_s=3600)
    waiting = await h.manager.acquire([request("b", GiB)], LeaseOptions(duration_s=60))
    h.clock.advance(60)
    await h.manager.tick()
    assert h.manager.snapshot(waiting.id).state is LeaseState.EXPIRED


# ---------------------------------------------------------------------- restart


async def test_restart_without_the_server_re_places_ready_leases(harness: Harness) -> None:
    h = harness
    lease = await ready_lease(h, request("a"), duration_s=600)
    old_sid = lease.server_id
    h.clock.advance(10)

    m = await h.restart()
    h.backend.adopt_result = False
    await m.recover()

    assert h.backend.adopt_calls == [old_sid]
    assert h.backend.stopped == [old_sid]
    recovered = m.snapshot(lease.id)
    assert recovered.state is LeaseState.LOADING
    assert recovered.server_id not in (None, old_sid)
    assert [x.state for x in recovered.models] == [ModelState.PENDING]
    assert [x.id for x in m.list_leases()] == [lease.id]
    assert not m.has_server(old_sid or "")
    assert recovered.server_id is not None
    assert (await first_assignment(m, recovered.server_id)).models == [("a", "file:///models/a")]
    _, servers = await h.store.load()
    states = {s.id: (s.state, s.reason) for s in servers}
    assert states[ServerId(old_sid or "")] == (
        ServerState.STOPPED,
        "not running when the daemon started",
    )
    assert (await h.make_ready(recovered)).state is LeaseState.READY


async def test_restart_adopts_a_running_server(harness: Harness) -> None:
    h = harness
    lease = await ready_lease(h, request("a"), duration_s=600)
    await h.manager.acquire([request("b")])

    m = await h.restart()
    h.backend.adopt_result = True
    await m.recover()

    assert h.backend.adopt_calls == [lease.server_id]
    assert h.backend.stopped == []
    assert len(h.backend.created) == 1
    recovered = m.snapshot(lease.id)
    assert recovered.state is LeaseState.READY
    assert recovered.server_id == lease.server_id
    assert recovered.expires_at == lease.expires_at
    assert recovered.server_id is not None
    server = m.servers[recovered.server_id]
    assert server.state is ServerState.RUNNING
    assert server.triton_ready is False
    # The sidecar reconnects and is told to hold both leases' models.
    assert (await first_assignment(m, recovered.server_id)).models == [
        ("a", "file:///models/a"),
        ("b", "file:///models/b"),
    ]


async def test_restart_ends_what_ended_while_down(harness: Harness) -> None:
    h = harness
    expiring = await ready_lease(h, request("a"), duration_s=60)
    releasing = await ready_lease(h, request("b"), duration_s=600)
    await h.manager.release(releasing.id)
    h.clock.advance(61)

    m = await h.restart()
    h.backend.adopt_result = False
    await m.recover()

    expired = m.snapshot(expiring.id)
    assert expired.state is LeaseState.EXPIRED
    assert expired.reason == "expired while the daemon was down"
    assert m.snapshot(releasing.id).state is LeaseState.RELEASED
    assert m.list_leases() == []
    assert (await stored(h, expiring.id)).state is LeaseState.EXPIRED


# ---------------------------------------------------------------------- follow


async def test_follow_yields_the_lease_after_each_change(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await m.acquire([request("a")])
    sid = lease.server_id
    assert sid is not None
    seen: asyncio.Queue[Lease] = asyncio.Queue()

    async def collect() -> list[LeaseState]:
        states = []
        async for current in m.follow(lease.id):
            states.append(current.state)
            seen.put_nowait(current)
        return states

    follower = asyncio.create_task(collect())
    try:
        # Each step waits until the follower has seen the previous change.
        assert (await seen.get()).state is LeaseState.LOADING
        await m.report(sid, triton_ready=True, models=served(pairs(lease), ModelState.LOADING))
        current = await seen.get()
        assert (current.state, current.models[0].state) == (LeaseState.LOADING, ModelState.LOADING)
        await m.report(sid, triton_ready=True, models=served(pairs(lease)))
        assert (await seen.get()).state is LeaseState.READY
        await m.release(lease.id)
        assert (await seen.get()).state is LeaseState.RELEASING
        await unload_all(h, sid)
        states = await asyncio.wait_for(follower, timeout=5)
    finally:
        follower.cancel()
    # It stops by itself once the lease has ended.
    assert states == [
        LeaseState.LOADING,
        LeaseState.LOADING,
        LeaseState.READY,
        LeaseState.RELEASING,
        LeaseState.RELEASED,
    ]


async def test_follow_stops_when_until_holds(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire([request("a")])
    stream = m.follow(lease.id, until=lambda x: x.state is LeaseState.LOADING)
    assert [x.state async for x in stream] == [LeaseState.LOADING]


async def test_follow_an_unknown_lease(harness: Harness) -> None:
    with pytest.raises(LeaseNotFound):
        await anext(harness.manager.follow("l-nope"))


async def test_assignments_follow_the_server(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await ready_lease(h, request("a"))
    sid = lease.server_id
    assert sid is not None
    async with aclosing(assignment_stream(m, sid)) as stream:
        first = await anext(stream)
        assert first.models == [("a", "file:///models/a")]
        await m.acquire([request("b")])
        second = await anext(stream)
        assert second.generation > first.generation
        assert second.models == [("a", "file:///models/a"), ("b", "file:///models/b")]


async def test_waiting_leases_are_placed_by_priority_then_age(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"max_servers": 1, "memory": 2 * GiB})
    m = h.manager
    first = await ready_lease(h, request("a", 2 * GiB))
    older_low = await m.acquire([request("b", 2 * GiB)])
    h.clock.advance(1)
    newer_high = await m.acquire([request("c", 2 * GiB)], LeaseOptions(priority=10))
    h.clock.advance(1)
    newest_high = await m.acquire([request("d", 2 * GiB)], LeaseOptions(priority=10))
    assert {m.snapshot(x.id).state for x in (older_low, newer_high, newest_high)} == {
        LeaseState.PENDING
    }

    await m.release(first.id)
    await unload_all(h, first.server_id)
    await m.tick()
    # Highest priority first; among equals, the oldest.
    assert m.snapshot(newer_high.id).state is LeaseState.LOADING
    assert m.snapshot(newest_high.id).state is LeaseState.PENDING
    assert m.snapshot(older_low.id).state is LeaseState.PENDING


async def test_plan_decides_without_creating_anything(harness: Harness) -> None:
    h, m = harness, harness.manager
    decision = await m.plan([request("a", GiB)])
    assert decision.__class__.__name__ == "StartServer"
    assert m.list_leases() == [] and h.backend.created == []


async def test_preemption_is_off_by_default(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"max_servers": 1, "memory": 2 * GiB})
    low = await ready_lease(h, request("a", 2 * GiB))
    high = await h.manager.acquire([request("b", 2 * GiB)], LeaseOptions(priority=5))
    assert high.state is LeaseState.PENDING
    assert h.manager.snapshot(low.id).state is LeaseState.READY


async def test_preemption_evicts_the_fewest_lower_priority_leases(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(
        servers={"max_servers": 1, "memory": 3 * GiB}, placement={"preemption": True}
    )
    m = h.manager
    keep = await ready_lease(h, request("a", GiB))
    h.clock.advance(1)
    older = await m.acquire([request("b", GiB)], LeaseOptions(priority=1))
    h.clock.advance(1)
    newer = await m.acquire([request("c", GiB)], LeaseOptions(priority=1))
    sid = keep.server_id
    assert older.server_id == newer.server_id == sid

    high = await m.acquire([request("d", GiB)], LeaseOptions(priority=5))
    # One eviction frees enough: the lowest priority goes first, the newest among equals
    # (but `keep`, priority 0, is lower still).
    assert high.state is LeaseState.LOADING and high.server_id == sid
    evicted = m.snapshot(keep.id)
    assert evicted.state is LeaseState.PENDING and evicted.server_id is None
    assert evicted.reason == f"preempted by lease {high.id} (priority 5)"
    assert m.snapshot(older.id).state is LeaseState.LOADING
    assert m.snapshot(newer.id).state is LeaseState.LOADING
    assert ("a", keep.models[0].uri) not in h.desired(sid)

    # The evicted lease is placed again when room appears.
    await m.release(high.id)
    await unload_all(h, sid)
    await m.tick()
    back = m.snapshot(keep.id)
    assert back.state in (LeaseState.LOADING, LeaseState.READY) and back.server_id == sid


async def test_preemption_never_evicts_equal_or_higher_priority(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(
        servers={"max_servers": 1, "memory": 2 * GiB}, placement={"preemption": True}
    )
    first = await ready_lease(h, request("a", 2 * GiB))
    waiting = await h.manager.acquire([request("b", 2 * GiB)])
    assert waiting.state is LeaseState.PENDING
    assert h.manager.snapshot(first.id).state is LeaseState.READY


async def test_a_lease_that_loads_longer_than_its_duration_lives_its_duration_from_ready(
    harness: Harness,
) -> None:
    """Loading time is not the holder's to pay: a slow load does not expire the lease."""
    h, m = harness, harness.manager
    lease = await m.acquire([request("a")], LeaseOptions(duration_s=60))
    assert lease.state is LeaseState.LOADING and lease.server_id is not None
    # The server is up; the model takes 90 s to load.
    await m.report(
        lease.server_id, triton_ready=True, models=served(pairs(lease), ModelState.LOADING)
    )
    h.clock.advance(90)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.LOADING
    ready = await h.make_ready(lease)
    assert ready.state is LeaseState.READY
    assert ready.expires_at == h.clock.now() + 60
    assert m.next_deadline() == ready.expires_at
    h.clock.advance(59)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.READY
    h.clock.advance(1)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.EXPIRED


async def test_a_snapshot_shares_nothing_that_can_change_with_the_lease(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire(
        [request("a")],
        LeaseOptions(labels={"team": "ml"}, node_selector={}, avoid=["x"], colocate_with=[]),
    )
    live = m.leases[lease.id]
    snap = m.snapshot(lease.id)
    assert snap == live
    snap.labels["team"] = "cv"
    snap.constraints.avoid.append("y")
    snap.models[0].state = ModelState.FAILED
    assert live.labels == {"team": "ml"}
    assert live.constraints.avoid == ["x"]
    assert live.models[0].state is not ModelState.FAILED


async def test_a_sha256_key_goes_into_the_uri_fragment_the_sidecar_checks(
    harness: Harness,
) -> None:
    digest = "AB" * 32
    lease = await harness.manager.acquire([ModelRequest("a", "file:///m", 0, digest)])
    assert lease.models[0].uri == f"file:///m#sha256={digest.lower()}"
