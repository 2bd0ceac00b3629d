"""The daemon's autoscaling: Triton's metrics from sidecar reports to scaling decisions, with
windows and cooldowns on the manual clock, each decision an event naming the metric."""

from __future__ import annotations

import pytest

from sidecar.triton_metrics import parse
from tests.unit.conftest import GiB, Harness, MakeHarness, request
from tms_core.domain import Lease, LeaseAutoscale, ModelState, ServedModel, TritonLoad
from tms_core.ids import ModelName, ServerId
from tms_core.lease_request import LeaseOptions
from tms_core.manager.scaling import LoadTracker, Stabiliser, recommend

URI = "file:///models/a"
QUEUE = LeaseAutoscale(
    min_replicas=1,
    max_replicas=3,
    target=200.0,
    up_window_s=10.0,
    down_window_s=30.0,
    up_cooldown_s=20.0,
    down_cooldown_s=20.0,
    drain_s=2.0,
)


class Load:
    """What one replica's sidecar reports: cumulative counters it keeps adding to."""

    def __init__(self) -> None:
        self.queue_us = 0.0
        self.requests = 0

    def add(self, requests: int, queue_ms_each: float) -> TritonLoad:
        self.requests += requests
        self.queue_us += requests * queue_ms_each * 1000
        return TritonLoad(self.queue_us, self.requests, self.requests, 0.0)


async def report(h: Harness, server_id: str, load: TritonLoad) -> None:
    model = ServedModel(ModelName("a"), URI, ModelState.READY, load=load)
    await h.manager.report(server_id, triton_ready=True, models=[model])


async def lease_on(h: Harness, scale: LeaseAutoscale = QUEUE) -> Lease:
    lease = await h.manager.acquire([request("a", GiB)], LeaseOptions(autoscale=scale))
    assert lease.server_id is not None
    await report(h, lease.server_id, TritonLoad())
    return h.manager.snapshot(lease.id)


def scaling_events(h: Harness, lease: Lease) -> list[tuple[str, str]]:
    return [
        (e.state, e.reason)
        for e in h.manager.events.kept()
        if e.id == lease.id and e.state.startswith("SCALED")
    ]


async def test_a_queue_above_target_for_the_window_adds_a_replica(harness: Harness) -> None:
    h = harness
    lease = await lease_on(h)
    assert lease.server_id is not None
    load = Load()
    # 350 ms queue time per request: above the 200 ms target, for less than the window.
    for _ in range(5):
        h.clock.advance(1.0)
        await report(h, lease.server_id, load.add(20, 350.0))
        await h.manager.tick()
    assert h.manager.snapshot(lease.id).replicas_wanted == 1
    for _ in range(6):
        h.clock.advance(1.0)
        await report(h, lease.server_id, load.add(20, 350.0))
        await h.manager.tick()
    current = h.manager.snapshot(lease.id)
    assert current.replicas_wanted == 2
    assert len(h.manager.replicas_of(current)) == 2
    [(state, reason)] = scaling_events(h, lease)
    assert state == "SCALED_UP"
    assert reason == (
        "nv_inference_queue_duration_ms 350 above target 200 for 10s over 1 serving replica: 1 → 2"
    )


async def test_a_report_over_target_wakes_the_reconciler_at_once(harness: Harness) -> None:
    # The reconciler's loop sleeps until its next deadline or a change that may move one: a
    # reading that asks for another count is such a change, so the window starts at once.
    h = harness
    lease = await lease_on(h)
    assert lease.server_id is not None
    woken = h.manager.ledger.outbox.deadlines_changed
    load = Load()
    h.clock.advance(1.0)
    await report(h, lease.server_id, load.add(20, 10.0))
    woken.clear()
    h.clock.advance(1.0)
    await report(h, lease.server_id, load.add(20, 10.0))
    assert not woken.is_set()  # under the target: nothing to look at
    h.clock.advance(1.0)
    await report(h, lease.server_id, load.add(20, 350.0))
    assert woken.is_set()


async def test_a_short_burst_adds_nothing(harness: Harness) -> None:
    h = harness
    lease = await lease_on(h)
    assert lease.server_id is not None
    load = Load()
    for queue in (500.0, 500.0, 500.0, 10.0, 500.0, 500.0):
        h.clock.advance(3.0)
        await report(h, lease.server_id, load.add(20, queue))
        await h.manager.tick()
    assert h.manager.snapshot(lease.id).replicas_wanted == 1
    assert scaling_events(h, lease) == []


async def test_quiet_for_the_down_window_removes_the_replica(harness: Harness) -> None:
    h = harness
    lease = await lease_on(h, QUEUE)
    await h.manager.set_replicas(lease.id, 2)
    replica = h.manager.replicas_of(h.manager.snapshot(lease.id))[1][0]
    assert lease.server_id is not None and replica.server_id is not None
    await report(h, replica.server_id, TritonLoad())
    # Requests flow but wait for nothing: fewer replicas would do.
    loads = {lease.server_id: Load(), replica.server_id: Load()}
    for _ in range(30):  # the window counts from the first reading below, at 1 s
        h.clock.advance(1.0)
        for server_id, load in loads.items():
            await report(h, server_id, load.add(5, 1.0))
        await h.manager.tick()
    assert h.manager.snapshot(lease.id).replicas_wanted == 2
    h.clock.advance(1.0)
    for server_id, load in loads.items():
        await report(h, server_id, load.add(5, 1.0))
    await h.manager.tick()
    assert h.manager.snapshot(lease.id).replicas_wanted == 1
    [(state, reason)] = scaling_events(h, lease)
    assert state == "SCALED_DOWN"
    assert "below target 200 for 30s over 2 serving replicas: 2 → 1" in reason
    # Drained first: still loaded until the drain is over, then released.
    assert h.desired(replica.server_id) == [("a", URI)]
    h.clock.advance(2.0)
    await h.manager.tick()
    assert h.desired(replica.server_id) == []


async def test_the_cooldown_holds_the_next_decision(make_harness: MakeHarness) -> None:
    h = await make_harness()
    lease = await lease_on(h)
    assert lease.server_id is not None
    start = h.clock.now()
    loads = {lease.server_id: Load()}
    for _ in range(40):
        h.clock.advance(1.0)
        for server_id, load in loads.items():
            await report(h, server_id, load.add(20, 350.0))
        await h.manager.tick()
        # Each new replica READY at once, and as loaded as the first.
        for replica, _server in h.manager.replicas_of(h.manager.snapshot(lease.id))[1:]:
            if replica.server_id is not None and replica.server_id not in loads:
                loads[replica.server_id] = Load()
                await report(h, replica.server_id, TritonLoad())
    at = [
        e.at - start for e in h.manager.events.kept() if e.id == lease.id and e.state == "SCALED_UP"
    ]
    # Above target for the 10 s window: 2; still above, but the second waits out the 20 s
    # cooldown after the first: 3, the maximum.
    assert at == [11.0, 31.0]
    assert h.manager.snapshot(lease.id).replicas_wanted == 3


@pytest.mark.parametrize(
    ("value", "serving", "current", "expected"),
    [(350.0, 1, 1, 2), (210.0, 1, 1, 1), (100.0, 2, 2, 1), (900.0, 1, 1, 3), (0.0, 2, 2, 1)],
)
def test_the_recommendation_is_the_hpas(
    value: float, serving: int, current: int, expected: int
) -> None:
    assert recommend(value, 200.0, serving, current, 1, 3) == expected


def test_the_stabiliser_takes_the_most_conservative_count_in_the_window() -> None:
    state = Stabiliser()
    timing = {"windows": (10.0, 30.0), "cooldowns": (0.0, 0.0)}
    assert state.observe(4, 1, 0.0, **timing) is None
    assert state.observe(2, 1, 5.0, **timing) is None
    assert state.observe(5, 1, 10.0, **timing) == 2


def test_the_sidecar_reads_triton_metrics() -> None:
    text = (
        "# HELP nv_inference_count Number of inferences performed\n"
        'nv_inference_count{model="a",version="1"} 40\n'
        'nv_inference_count{model="a",version="2"} 2\n'
        'nv_inference_request_success{model="a",version="1"} 30\n'
        'nv_inference_request_failure{model="a",reason="BACKEND",version="1"} 1\n'
        'nv_inference_queue_duration_us{model="a",version="1"} 12500\n'
        'nv_inference_pending_request_count{model="a",version="1"} 3\n'
        'nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5\n'
    )
    load = parse(text)["a"]
    assert (load.inferences, load.requests, load.queue_us, load.pending) == (42, 31, 12500, 3)


def test_rates_are_over_the_sidecars_readings_not_its_reports() -> None:
    # A report sent for another change (a model's memory, the inference statistics) carries
    # the last reading again: it must not read as an interval with no inferences in it.
    tracker = LoadTracker()
    server, name = ServerId("s-1"), ModelName("a")
    tracker.note(server, name, TritonLoad(0, 0, 0, 0, read_at=100.0), at=5000.0)
    tracker.note(server, name, TritonLoad(0, 50, 50, 0, read_at=100.25), at=5000.3)
    tracker.note(server, name, TritonLoad(0, 50, 50, 0, read_at=100.25), at=5000.31)
    per_second = tracker.metric("nv_inference_count_per_second", [(server, [name])], 5000.4)
    assert per_second == (200.0, 1)
    # Idle: the next reading (a heartbeat's) says nothing changed over its interval.
    tracker.note(server, name, TritonLoad(0, 50, 50, 0, read_at=102.25), at=5002.3)
    assert tracker.metric("nv_inference_count_per_second", [(server, [name])], 5002.4) == (0.0, 1)
