"""A lease in use never ends: an activity-renewed lease past its expiry ends only once a
report read after that moment shows no inference (or its server stays silent too long)."""

from __future__ import annotations

import pytest

from tests.unit.conftest import Harness, pairs, request, served
from tms_core.domain import Lease, LeaseState
from tms_core.errors import InvalidArgument
from tms_core.lease_request import LeaseOptions
from tms_core.manager.reconciler import ACTIVITY_FRESH_S, ACTIVITY_GIVE_UP_S


async def used_lease(h: Harness) -> Lease:
    lease = await h.manager.acquire(
        [request("a")], LeaseOptions(duration_s=10, activity_window_s=10)
    )
    return await h.make_ready(lease)


async def report(h: Harness, lease: Lease, last_inference_at: float = 0.0) -> None:
    models = served(pairs(lease))
    models[0].last_inference_at = last_inference_at
    assert lease.server_id is not None
    await h.manager.report(lease.server_id, triton_ready=True, models=models)


async def test_an_inference_reported_late_keeps_the_lease(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await used_lease(h)
    assert lease.server_id is not None
    h.clock.advance(10)  # its expiry: no report since READY
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.READY  # waits for a fresh report
    generation = m.outbox.generation(lease.server_id)
    h.clock.advance(ACTIVITY_FRESH_S)
    await m.tick()
    # It asked the sidecar for one (a new generation wakes it).
    assert m.outbox.generation(lease.server_id) == generation + 1
    # The report shows an inference from just before the expiry: the lease lives on.
    await report(h, lease, last_inference_at=h.clock.now() - ACTIVITY_FRESH_S - 0.5)
    await m.tick()
    renewed = m.snapshot(lease.id)
    assert renewed.state is LeaseState.READY
    assert renewed.expires_at == pytest.approx(h.clock.now() - ACTIVITY_FRESH_S - 0.5 + 10)
    # Then unused: it ends one window after that inference, once a fresh report says so.
    h.clock.advance(renewed.expires_at - h.clock.now() + ACTIVITY_FRESH_S)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.READY
    await report(h, lease, last_inference_at=renewed.last_activity_at)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.EXPIRED


async def test_a_silent_server_does_not_keep_a_lease_forever(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await used_lease(h)
    h.clock.advance(10)
    await m.tick()
    assert m.next_deadline() == pytest.approx(h.clock.now() + ACTIVITY_FRESH_S)
    h.clock.advance(ACTIVITY_FRESH_S)
    await m.tick()
    assert m.next_deadline() == pytest.approx(h.clock.now() - ACTIVITY_FRESH_S + ACTIVITY_GIVE_UP_S)
    h.clock.advance(ACTIVITY_GIVE_UP_S - ACTIVITY_FRESH_S)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.EXPIRED


async def test_a_lease_without_an_activity_window_ends_on_time(harness: Harness) -> None:
    h, m = harness, harness.manager
    lease = await h.make_ready(await m.acquire([request("a")], LeaseOptions(duration_s=10)))
    h.clock.advance(10)
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.EXPIRED


async def test_an_activity_window_under_a_second_is_refused(harness: Harness) -> None:
    with pytest.raises(InvalidArgument) as info:
        await harness.manager.acquire([request("a")], LeaseOptions(activity_window_s=0.5))
    assert info.value.field == "activity_window"
    assert "shorter than 1s" in info.value.message
