"""Standby servers (`servers.standby`): started, empty servers kept for cold leases."""

from __future__ import annotations

import pytest

from tests.unit.conftest import GiB, Harness, MakeHarness, make_settings, request
from tms_core.api.cluster import cluster_status
from tms_core.domain import LeaseState, ServerState
from tms_core.errors import ConfigError
from tms_core.inventory import Gpu, Node
from tms_core.lease_request import LeaseOptions


async def running(h: Harness) -> list[str]:
    """Reports every started server's Triton ready and empty; the live servers' ids."""
    for server in list(h.manager.servers.values()):
        if server.state.alive and not h.manager.leases_on(server.id):
            await h.manager.report(server.id, triton_ready=True, models=[])
    return sorted(s.id for s in h.manager.servers.values() if s.state.alive)


async def test_standby_servers_start_and_a_cold_lease_takes_one(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"standby": 2})
    await h.manager.tick()
    standby = await running(h)
    assert len(standby) == 2 and len(h.backend.started) == 2
    assert all(h.manager.servers[s].state is ServerState.RUNNING for s in standby)

    lease = await h.manager.acquire([request("a", GiB)])
    # Joined a running server: only its model to load, no tritonserver to start.
    assert lease.server_id in standby
    assert lease.state is LeaseState.LOADING
    assert len(h.backend.started) == 2
    # Not while its model loads (a server's start would take CPU the load waits on)...
    await h.manager.tick()
    assert len(h.backend.started) == 2
    # ...but the pass after it is READY starts a server in its place.
    await h.make_ready(lease)
    await h.manager.tick()
    assert len(h.backend.started) == 3
    assert len([s for s in await running(h) if not h.manager.leases_on(s)]) == 2


async def test_the_idle_stop_leaves_the_standby_count(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"standby": 1, "idle_grace": 30.0})
    await h.manager.tick()
    await running(h)
    lease = await h.manager.acquire([request("a", GiB)])
    await h.make_ready(lease)
    await h.manager.tick()  # a new standby server
    await running(h)
    h.clock.advance(60)
    await h.manager.tick()
    assert h.backend.stopped == []  # the idle standby stays past the grace

    await h.manager.release(lease.id)
    assert lease.server_id is not None
    await h.manager.report(lease.server_id, triton_ready=True, models=[])
    # Two empty servers now: one is stopped after the grace, one is kept.
    h.clock.advance(31)
    await h.manager.tick()
    assert len(h.backend.stopped) == 1
    alive = [s for s in h.manager.servers.values() if s.state.alive]
    assert len(alive) == 1 and not h.manager.leases_on(alive[0].id)
    h.clock.advance(600)
    await h.manager.tick()
    assert len(h.backend.stopped) == 1
    assert h.manager.next_deadline() is None or h.manager.next_deadline() > h.clock.now()


async def test_standby_servers_count_against_the_server_limit(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"standby": 2, "max_servers": 3})
    await h.manager.tick()
    await running(h)
    # A lease of its own needs a server of its own: the third.
    first = await h.manager.acquire([request("a", GiB)], LeaseOptions(exclusive=True))
    assert first.server_id is not None and len(h.backend.started) == 3
    second = await h.manager.acquire([request("b", GiB)], LeaseOptions(exclusive=True))
    assert second.state is LeaseState.PENDING
    assert "all 3 servers are running" in second.reason


def node(name: str, gpus: int = 0) -> Node:
    return Node(
        name=name,
        host_memory=64 * GiB,
        gpus=tuple(Gpu(index=i, product="NVIDIA H100", total_bytes=80 * GiB) for i in range(gpus)),
    )


async def test_tms_cluster_shows_standby_servers(make_harness: MakeHarness) -> None:
    h = await make_harness(servers={"standby": 1})
    await h.manager.set_nodes([node("n0")])
    await h.manager.tick()
    [standby] = await running(h)
    lease = await h.manager.acquire([request("a", GiB)])
    await h.make_ready(lease)
    await h.manager.tick()
    await running(h)
    [cpu] = [node.cpu for node in cluster_status(h.manager).nodes]
    assert lease.server_id in cpu.server_ids
    assert standby == lease.server_id
    [other] = [s for s in cpu.server_ids if s != lease.server_id]
    assert list(cpu.standby_server_ids) == [other]


async def test_no_standby_by_default(harness: Harness) -> None:
    await harness.manager.tick()
    assert harness.backend.started == []


async def test_on_a_gpu_machine_a_standby_server_has_a_gpu_of_its_own(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(servers={"standby": 1})
    await h.manager.set_nodes([node("g0", gpus=2)])
    await h.manager.tick()
    [standby] = await running(h)
    assert h.manager.servers[standby].gpus == (0,)
    # A lease of the default shape (a GPU, on a machine with GPUs) takes it.
    lease = await h.manager.acquire([request("a", GiB)])
    assert lease.server_id == standby and lease.state is LeaseState.LOADING


async def test_standby_servers_of_another_triton_are_kept_for_leases_asking_for_it(
    make_harness: MakeHarness,
) -> None:
    other = "/opt/tritonserver-24.08/bin/tritonserver"
    h = await make_harness(servers={"standby": 1, "standby_tritons": {other: 1}})
    await h.manager.tick()
    await running(h)
    binaries = sorted(s.binary for s in h.manager.servers.values())
    assert binaries == sorted([h.backend.default_tritonserver, other])
    await h.manager.allow(other)
    lease = await h.manager.acquire([request("a", GiB)], LeaseOptions(tritonserver=other))
    # It joined the waiting server of its Triton: nothing started for it.
    assert lease.server_id is not None and h.manager.servers[lease.server_id].binary == other
    assert len(h.backend.started) == 2
    await h.make_ready(lease)
    await h.manager.tick()
    assert [s.binary for s in h.manager.standby.servers()].count(other) == 1
    # The idle stop keeps one of each, and no more.
    assert all(h.manager.reconciler._kept(s) for s in h.manager.standby.servers())


def test_a_standby_triton_needs_a_count_of_zero_or_more() -> None:
    with pytest.raises(
        ConfigError, match=r"servers\.standby_tritons: .*/x/tritonserver: expected a count of 0"
    ):
        make_settings(servers={"standby_tritons": {"/x/tritonserver": -1}})
