"""Parking at zero: an idle lease that may park leaves its server and keeps its addresses; a
wake places it again, or parks it again saying why it could not."""

from __future__ import annotations

import itertools

import pytest

from tests.unit.conftest import GiB, Harness, MakeHarness, pairs, request, served
from tms_core.domain import Lease, LeaseAutoscale, LeaseState, ModelState, ServedModel
from tms_core.errors import InvalidArgument
from tms_core.ids import ModelName
from tms_core.lease_request import LeaseOptions
from tms_core.manager.requests import autoscale
from tms_core.router.routes import Route
from tms_core.routing import compute_routes

PARKS = LeaseOptions(
    name="calc", autoscale=LeaseAutoscale(min_replicas=0, max_replicas=2, park_after_s=60.0)
)


def routes(h: Harness, lease: Lease) -> list[Route]:
    """The router's routes for the lease's own ports (http, grpc)."""
    now = h.manager.snapshot(lease.id)
    ports = (now.http_port, now.grpc_port)
    table = compute_routes(h.manager.ledger.published(), wake_hold_s=120.0)
    return [r for r in table if int(r.listen.rpartition(":")[2]) in ports]


async def ready_lease(h: Harness) -> Lease:
    ports = itertools.count(50000)
    h.backend.allocate_ports = lambda count: [next(ports) for _ in range(count)]  # type: ignore[method-assign]
    lease = await h.manager.acquire([request("a", 2 * GiB)], PARKS)
    return await h.make_ready(lease)


async def test_an_idle_lease_parks_after_its_window_and_keeps_its_addresses(
    harness: Harness,
) -> None:
    h = harness
    lease = await ready_lease(h)
    assert lease.state is LeaseState.READY and lease.replicas_wanted == 1
    server = lease.server_id
    assert server is not None
    assert h.manager.next_deadline() == pytest.approx(h.clock.now() + 60.0)
    h.clock.advance(59.0)
    await h.manager.tick()
    assert h.manager.snapshot(lease.id).state is LeaseState.READY
    h.clock.advance(1.0)
    await h.manager.tick()
    parked = h.manager.snapshot(lease.id)
    assert parked.state is LeaseState.PARKED and parked.reason == "no inference for 60s"
    assert parked.server_id is None and parked.replicas_wanted == 0
    assert (parked.id, parked.http_port, parked.grpc_port) == (lease.id, 50000, 50001)
    assert h.manager.names_of(lease.id) == ["calc"]
    assert parked.parked_at == h.clock.now()
    # The server is told to unload, and holds nothing placement would count.
    assert h.desired(server) == []
    assert h.manager.fleet().server(server).used_bytes == 0  # type: ignore[union-attr]
    # Its addresses stay bound and wake it.
    assert [(r.wake, r.backends, r.hold_s, r.error) for r in routes(h, lease)] == [
        (True, (), 120.0, ""),
        (True, (), 120.0, ""),
    ]
    # Nothing to wait for in a parked lease but its expiry.
    assert h.manager.next_deadline() == pytest.approx(parked.expires_at)


async def test_inference_keeps_a_lease_from_parking(harness: Harness) -> None:
    h = harness
    lease = await ready_lease(h)
    assert lease.server_id is not None
    h.clock.advance(50.0)
    used = [
        ServedModel(
            ModelName("a"),
            "file:///models/a",
            ModelState.READY,
            inference_count=3,
            last_inference_at=h.clock.now(),
        )
    ]
    await h.manager.report(lease.server_id, triton_ready=True, models=used)
    h.clock.advance(20.0)
    await h.manager.tick()
    assert h.manager.snapshot(lease.id).state is LeaseState.READY
    h.clock.advance(40.0)
    await h.manager.tick()
    assert h.manager.snapshot(lease.id).state is LeaseState.PARKED


async def park(h: Harness, lease: Lease) -> Lease:
    """Parks the lease by hand; its server's sidecar then reports the models unloaded."""
    assert lease.server_id is not None
    await h.manager.set_replicas(lease.id, 0)
    parked = h.manager.snapshot(lease.id)
    assert parked.state is LeaseState.PARKED and parked.reason == "scaled to 0 by request"
    await h.manager.report(lease.server_id, triton_ready=True, models=[])
    return parked


async def test_a_wake_places_the_lease_and_the_address_leads_to_it_once_ready(
    harness: Harness,
) -> None:
    h = harness
    lease = await park(h, await ready_lease(h))
    # Its server left idle stops after the grace, as any empty server.
    h.clock.advance(31.0)
    await h.manager.tick()
    assert len(h.backend.stopped) == 1
    h.clock.advance(100.0)
    await h.manager.wake_address(lease.grpc_port)
    waking = h.manager.snapshot(lease.id)
    assert waking.state is LeaseState.LOADING and waking.woke_at == h.clock.now()
    assert waking.server_id is not None and len(h.backend.started) == 2
    # Held for the whole wake, not the router's default.
    assert [(r.hold, r.wake, r.hold_s) for r in routes(h, lease)] == [(True, False, 120.0)] * 2
    h.clock.advance(1.5)
    ready = await h.make_ready(waking)
    assert ready.state is LeaseState.READY and ready.reason == "woke in 1.50s"
    assert ready.wake_s == pytest.approx(1.5) and ready.replicas_wanted == 1
    server = h.manager.servers[ready.server_id]  # type: ignore[index]
    assert [r.backends for r in routes(h, lease)] == [
        (server.http_endpoint,),
        (server.grpc_endpoint,),
    ]
    # A second wake of a READY lease changes nothing.
    await h.manager.wake(lease.id)
    assert h.manager.snapshot(lease.id).state is LeaseState.READY


async def test_a_wake_that_cannot_be_placed_parks_again_saying_why(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(servers={"max_servers": 1})
    lease = await park(h, await ready_lease(h))
    # The only server there may be is taken by a lease that fills it.
    h.clock.advance(31.0)
    await h.manager.tick()
    other = await h.manager.acquire([request("big", 8 * GiB)])
    assert other.state is LeaseState.LOADING
    await h.manager.wake(lease.id)
    failed = h.manager.snapshot(lease.id)
    assert failed.state is LeaseState.PARKED and failed.reason.startswith("wake failed: ")
    assert failed.wake_failed and failed.server_id is None
    # The router answers the connections it held with that, once; the next one tries again.
    assert {(r.error, r.error_at) for r in routes(h, lease)} == {(failed.reason, failed.woke_at)}
    await h.manager.release(other.id)
    await h.manager.report(other.server_id, triton_ready=True, models=[])  # type: ignore[arg-type]
    await h.manager.wake(lease.id)
    assert h.manager.snapshot(lease.id).state is LeaseState.LOADING


async def test_a_wake_whose_model_fails_to_load_parks_the_lease_instead_of_failing_it(
    harness: Harness,
) -> None:
    h = harness
    lease = await park(h, await ready_lease(h))
    await h.manager.wake(lease.id)
    waking = h.manager.snapshot(lease.id)
    assert waking.server_id is not None
    await h.manager.report(
        waking.server_id,
        triton_ready=True,
        models=served(pairs(waking), ModelState.FAILED, "out of memory"),
    )
    after = h.manager.snapshot(lease.id)
    assert after.state is LeaseState.PARKED
    assert after.reason == "wake failed: model 'a': out of memory"
    assert h.desired(waking.server_id) == []


async def test_a_wake_not_ready_within_the_timeout_parks_again(harness: Harness) -> None:
    h = harness
    lease = await park(h, await ready_lease(h))
    await h.manager.wake(lease.id)
    assert h.manager.next_deadline() == pytest.approx(h.clock.now() + 120.0)
    h.clock.advance(120.0)
    await h.manager.tick()
    after = h.manager.snapshot(lease.id)
    assert after.state is LeaseState.PARKED
    assert after.reason == "wake failed: not READY within 120s"


async def test_a_parked_lease_is_released_at_once_and_survives_a_restart(
    harness: Harness,
) -> None:
    h = harness
    lease = await park(h, await ready_lease(h))
    manager = await h.restart()
    await manager.recover()
    again = manager.snapshot(lease.id)
    assert again.state is LeaseState.PARKED and again.parked_at == lease.parked_at
    assert again.replicas_wanted == 0
    released = await manager.release(lease.id)
    assert released.state is LeaseState.RELEASED


async def test_replicas_set_by_hand_stay_within_the_range(harness: Harness) -> None:
    h = harness
    lease = await ready_lease(h)
    with pytest.raises(InvalidArgument, match="3 is outside the lease's autoscale range 0:2"):
        await h.manager.set_replicas(lease.id, 3)
    plain = await h.manager.acquire([request("b")])
    with pytest.raises(InvalidArgument, match="does not autoscale"):
        await h.manager.set_replicas(plain.id, 2)
    parked = await park(h, lease)
    await h.manager.set_replicas(parked.id, 2)
    woken = h.manager.snapshot(lease.id)
    assert woken.state is LeaseState.LOADING and woken.replicas_wanted == 2


def test_parking_needs_the_daemons_own_autoscaling() -> None:
    with pytest.raises(InvalidArgument, match=r"autoscale\.min_replicas: 0 \(parking\) needs"):
        autoscale(PARKS, hpa=True)
    with pytest.raises(InvalidArgument, match=r"autoscale\.max_replicas: must be at least 1"):
        autoscale(LeaseOptions(autoscale=LeaseAutoscale(min_replicas=0, max_replicas=0)))
    assert autoscale(PARKS) == PARKS.autoscale
