"""The lease manager over several nodes: placement spreads over all of them, and the node
list can be replaced while the manager runs (as a cluster backend does)."""

from __future__ import annotations

from tests.unit.conftest import GiB, MakeHarness, request
from tms_core.domain import LeaseState
from tms_core.inventory import Gpu, Node
from tms_core.manager.facade import LeaseManager


def node(name: str, gpus: int, *, labels: dict[str, str] | None = None) -> Node:
    return Node(
        name=name,
        host_memory=64 * GiB,
        gpus=tuple(
            Gpu(index=i, product="NVIDIA H100 80GB", total_bytes=80 * GiB) for i in range(gpus)
        ),
        labels=labels or {},
    )


async def manager(make_harness: MakeHarness, *nodes: Node) -> LeaseManager:
    h = await make_harness(servers={"max_servers": 16})
    return LeaseManager(
        store=h.store,
        backend=h.backend,
        clock=h.clock,
        settings=h.settings,
        nodes=nodes,
    )


async def test_gpu_leases_spread_over_every_node_once_one_is_full(
    make_harness: MakeHarness,
) -> None:
    m = await manager(make_harness, node("n0", 2), node("n1", 2))
    leases = [await m.acquire([request(f"m{i}", 60 * GiB)]) for i in range(4)]
    places = {
        (m.servers[lease.server_id].node, m.servers[lease.server_id].gpus)
        for lease in leases
        if lease.server_id
    }
    assert places == {("n0", (0,)), ("n0", (1,)), ("n1", (0,)), ("n1", (1,))}
    # Each server has its GPU's memory, from the node it runs on.
    assert {m.servers[lease.server_id].capacity_bytes for lease in leases if lease.server_id} == {
        80 * GiB
    }
    fifth = await m.acquire([request("m4", 60 * GiB)])
    assert fifth.state is LeaseState.PENDING
    assert "GPU memory" in fifth.reason


async def test_a_node_added_at_run_time_takes_the_lease_that_waits(
    make_harness: MakeHarness,
) -> None:
    m = await manager(make_harness, node("n0", 1))
    first = await m.acquire([request("a", 60 * GiB)])
    waiting = await m.acquire([request("b", 60 * GiB)])
    assert (first.state, waiting.state) == (LeaseState.LOADING, LeaseState.PENDING)
    await m.set_nodes([node("n0", 1), node("n1", 1, labels={"zone": "b"})])
    placed = m.snapshot(waiting.id)
    assert placed.state is LeaseState.LOADING
    assert placed.server_id is not None and m.servers[placed.server_id].node == "n1"
    # The default for a lease on a fleet with GPUs is one GPU, wherever they are.
    assert placed.constraints.gpus == 1


async def test_a_node_removed_at_run_time_takes_no_new_lease(make_harness: MakeHarness) -> None:
    m = await manager(make_harness, node("n0", 1), node("n1", 1))
    first = await m.acquire([request("a", 10 * GiB)])
    assert first.server_id is not None
    gone = m.servers[first.server_id].node
    kept = next(n for n in m.nodes if n.name != gone)
    await m.set_nodes([kept])
    second = await m.acquire([request("b", 10 * GiB)])
    # It would have fitted beside the first lease; that node is no longer listed.
    assert second.server_id != first.server_id
    assert second.server_id is not None and m.servers[second.server_id].node == kept.name
    # The lease already there keeps its server.
    assert m.snapshot(first.id).server_id == first.server_id
