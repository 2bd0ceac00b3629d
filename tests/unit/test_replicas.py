"""Replicas: a lease's models on several servers, each placed, loaded, routed and drained."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import GiB, Harness, MakeHarness, open_harness, request, served
from tms_core.api import tms_pb2 as pb
from tms_core.api.cluster import cluster_status
from tms_core.api.convert import lease_to_pb
from tms_core.domain import Lease, LeaseAutoscale, LeaseState
from tms_core.lease_request import LeaseOptions
from tms_core.routing import compute_routes

SCALED = LeaseOptions(autoscale=LeaseAutoscale(min_replicas=2, max_replicas=3, drain_s=5.0))


def replicas(h: Harness, lease: Lease) -> list[Lease]:
    return [r for r, _ in h.manager.replicas_of(h.manager.snapshot(lease.id))]


def backends(h: Harness, lease: Lease) -> set[str]:
    """Where new connections to the lease's HTTP address go now."""
    port = h.manager.snapshot(lease.id).http_port
    routes = compute_routes(h.manager.ledger.published())
    return {b for r in routes if r.listen.endswith(f":{port}") for b in r.backends}


async def ready_everywhere(h: Harness, lease: Lease) -> None:
    for replica in replicas(h, lease):
        assert replica.server_id is not None
        await h.manager.report(
            replica.server_id, triton_ready=True, models=served([("a", "file:///models/a")])
        )


async def scaled_lease(h: Harness) -> Lease:
    """A READY lease scaling 1 to 3, with 2 replicas READY."""
    h.backend.allocate_ports = lambda count: [50000 + i for i in range(count)]  # type: ignore[method-assign]
    scale = LeaseAutoscale(min_replicas=1, max_replicas=3, drain_s=5.0)
    lease = await h.manager.acquire([request("a", 2 * GiB)], LeaseOptions(autoscale=scale))
    await h.manager.set_replicas(lease.id, 2)
    await ready_everywhere(h, lease)
    return h.manager.snapshot(lease.id)


async def test_a_lease_starts_with_its_minimum_replicas_on_servers_of_their_own(
    harness: Harness,
) -> None:
    h = harness
    lease = await h.manager.acquire([request("a", 2 * GiB)], SCALED)
    held = replicas(h, lease)
    assert len(held) == 2 and len(h.backend.started) == 2
    assert held[0].id == lease.id and held[1].replica_of == lease.id
    assert held[0].server_id != held[1].server_id
    # A replica record is no lease of its own: not listed, and its id stands for the lease.
    assert [x.id for x in h.manager.list_leases()] == [lease.id]
    assert h.manager.snapshot(held[1].id).id == lease.id
    # Placement counts both replicas' memory.
    fleet = h.manager.fleet()
    assert sorted(fleet.server(s).used_bytes for s in h.backend.started)  # type: ignore[union-attr] == [2 * GiB, 2 * GiB]


async def test_the_address_leads_to_each_replica_once_it_is_ready(harness: Harness) -> None:
    h = harness
    h.backend.allocate_ports = lambda count: [50000 + i for i in range(count)]  # type: ignore[method-assign]
    lease = await h.manager.acquire([request("a", 2 * GiB)], SCALED)
    own, other = replicas(h, lease)
    assert own.server_id and other.server_id
    await h.manager.report(own.server_id, triton_ready=True, models=served([pairs_a()]))
    assert h.manager.snapshot(lease.id).state is LeaseState.READY
    first = h.manager.servers[own.server_id].http_endpoint
    assert backends(h, lease) == {first}
    await h.manager.report(other.server_id, triton_ready=True, models=served([pairs_a()]))
    second = h.manager.servers[other.server_id].http_endpoint
    assert backends(h, lease) == {first, second}
    now = h.manager.snapshot(lease.id)
    message = lease_to_pb(now, h.manager.server_of(now), replicas=h.manager.replicas_of(now))
    assert [(r.id, r.state) for r in message.replicas] == [
        (lease.id, pb.LEASE_READY),
        (other.id, pb.LEASE_READY),
    ]
    assert {s.http for s in message.endpoints.servers} == {first, second}


def pairs_a() -> tuple[str, str]:
    return ("a", "file:///models/a")


async def test_a_removed_replica_drains_before_it_unloads(harness: Harness) -> None:
    h = harness
    lease = await scaled_lease(h)
    other = replicas(h, lease)[1]
    assert other.server_id is not None
    gone = h.manager.servers[other.server_id].http_endpoint
    await h.manager.set_replicas(lease.id, 1)
    # Out of the address at once, still loaded for the drain.
    assert gone not in backends(h, lease) and len(backends(h, lease)) == 1
    assert h.desired(other.server_id) == [pairs_a()]
    assert replicas(h, lease)[1].draining_until == h.clock.now() + 5.0
    assert h.manager.next_deadline() == h.clock.now() + 5.0
    h.clock.advance(4.9)
    await h.manager.tick()
    assert h.desired(other.server_id) == [pairs_a()]
    h.clock.advance(0.1)
    await h.manager.tick()
    assert h.desired(other.server_id) == []
    await h.manager.report(other.server_id, triton_ready=True, models=[])
    assert replicas(h, lease) == [h.manager.snapshot(lease.id)]
    assert h.manager.leases[other.id].state is LeaseState.RELEASED
    states = [e.state for e in h.manager.events.kept() if e.id == other.id]
    assert all(
        e.kind == "replica" and e.lease_id == lease.id
        for e in h.manager.events.kept()
        if e.id == other.id
    )
    assert states[-3:] == ["DRAINING", "RELEASING", "RELEASED"]


async def test_replicas_end_with_their_lease(harness: Harness) -> None:
    h = harness
    lease = await scaled_lease(h)
    other = replicas(h, lease)[1]
    await h.manager.release(lease.id)
    assert h.manager.leases[other.id].state is LeaseState.RELEASING
    assert other.server_id is not None and h.desired(other.server_id) == []


async def test_a_lease_that_expires_takes_its_replicas(harness: Harness) -> None:
    h = harness
    lease = await scaled_lease(h)
    other = replicas(h, lease)[1]
    h.clock.advance(lease.duration_s + 1)
    await h.manager.tick()
    assert h.manager.snapshot(lease.id).state is LeaseState.EXPIRED
    assert h.manager.leases[other.id].state is LeaseState.RELEASING


async def test_a_failed_replica_is_replaced_after_the_cooldown(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    lease = await scaled_lease(h)
    other = replicas(h, lease)[1]
    assert other.server_id is not None
    h.backend.dead[other.server_id] = "exit code 1"
    await h.manager.tick()
    assert h.manager.leases[other.id].state is LeaseState.FAILED
    await h.manager.tick()
    assert len(replicas(h, lease)) == 1
    h.clock.advance(h.settings.autoscale.up_cooldown)
    await h.manager.tick()
    assert len(replicas(h, lease)) == 2


async def test_replicas_survive_a_restart(harness: Harness) -> None:
    h = harness
    lease = await scaled_lease(h)
    before = [(r.id, r.server_id, r.state) for r in replicas(h, lease)]
    manager = await h.restart()
    await manager.recover()
    assert [(r.id, r.server_id, r.state) for r, _ in manager.replicas_of(lease)] == before
    assert manager.snapshot(lease.id).replicas_wanted == 2


async def test_cluster_and_tenant_quota_count_the_lease_once(harness: Harness) -> None:
    h = harness
    lease = await scaled_lease(h)
    status = cluster_status(h.manager)
    assert status.nodes == [] or all(
        lease_id == lease.id for node in status.nodes for lease_id in node.cpu.lease_ids
    )
    usage = h.manager.ledger.tenants.usage("", h.manager.ledger.index.live.values())
    assert usage.leases == 1 and usage.replicas == 3


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5),
    wanted=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6),
)
def test_replicas_never_overfill_a_server(tmp_path_factory, sizes, wanted) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async def run() -> None:
        h = await open_harness(tmp_path_factory.mktemp("r"))
        try:
            leases = []
            for i, size in enumerate(sizes):
                scale = LeaseAutoscale(min_replicas=1, max_replicas=4)
                leases.append(
                    await h.manager.acquire(
                        [request(f"m{i}", size * GiB)], LeaseOptions(autoscale=scale)
                    )
                )
            for step, count in enumerate(wanted):
                await h.manager.set_replicas(leases[step % len(leases)].id, count)
                check(h)
                await h.manager.tick()
                check(h)
        finally:
            await h.store.close()

    asyncio.run(run())


def check(h: Harness) -> None:
    """No server holds more than its memory; no two replicas of a lease share a server."""
    for server in h.manager.servers.values():
        held = {
            (m.name, m.uri): m.memory_bytes
            for lease in h.manager.leases_on(server.id)
            for m in lease.models
        }
        assert sum(held.values()) <= server.capacity_bytes
    for lease in h.manager.list_leases():
        placed = [r.server_id for r, _ in h.manager.replicas_of(lease) if r.server_id]
        assert len(placed) == len(set(placed))
