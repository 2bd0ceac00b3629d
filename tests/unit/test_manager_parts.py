"""What the lease manager's parts promise, checked through what a user sees: leases caught
loading by a restart load on, watchers never see what a failed commit rolled back, naming a
lease costs placement nothing whole, and the simulator uses only the manager's public face."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.unit.conftest import Harness, request, served
from tms_core.domain import LeaseState, ModelState, Pool
from tms_core.lease_request import LeaseOptions
from tms_core.manager.facade import LeaseManager
from tms_core.store.protocol import StateTransaction

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_a_lease_loading_at_a_restart_loads_on_and_becomes_ready(harness: Harness) -> None:
    h = harness
    lease = await h.manager.acquire([request("a")], LeaseOptions(duration_s=60))
    assert lease.state is LeaseState.LOADING and lease.server_id is not None
    # The daemon is down for longer than the lease's duration while its model loads.
    h.clock.advance(120)
    m = await h.restart()
    h.backend.adopt_result = True
    await m.recover()

    caught = m.snapshot(lease.id)
    assert caught.state is LeaseState.LOADING
    assert caught.server_id == lease.server_id
    await m.report(lease.server_id, triton_ready=True, models=served([("a", "file:///models/a")]))
    ready = m.snapshot(lease.id)
    assert ready.state is LeaseState.READY
    # Its duration counts from READY, as it would have without the restart.
    assert ready.expires_at == h.clock.now() + 60
    await m.tick()
    assert m.snapshot(lease.id).state is LeaseState.READY


class FailingCommits:
    """A store whose transactions fail at the commit (a full disk), until told otherwise."""

    def __init__(self, manager: LeaseManager, harness: Harness) -> None:
        self.failing = False
        store = harness.store
        real = store.transaction

        @asynccontextmanager
        async def transaction() -> AsyncIterator[StateTransaction]:
            async with real() as tx:
                yield tx
                if self.failing:
                    raise OSError(28, "No space left on device")

        store.transaction = transaction  # type: ignore[method-assign]


async def test_a_watcher_never_sees_an_event_of_a_rolled_back_change(harness: Harness) -> None:
    h, m = harness, harness.manager
    kept = await m.acquire([request("a")])
    await h.make_ready(kept)
    commits = FailingCommits(m, h)
    seen = m.events.last_seq

    commits.failing = True
    with pytest.raises(OSError, match="No space left"):
        await m.acquire([request("b")], LeaseOptions(name="b-name"))
    with pytest.raises(OSError, match="No space left"):
        await m.release(kept.id)

    assert m.events.kept(seen) == [], "no event of a change that did not commit"
    assert [lease.id for lease in m.list_leases()] == [kept.id]
    assert m.snapshot(kept.id).state is LeaseState.READY
    assert m.list_names() == []

    commits.failing = False
    await m.release(kept.id)
    states = [(e.kind, e.state) for e in m.events.kept(seen)]
    assert ("lease", "RELEASING") in states


async def test_naming_a_lease_does_not_rebuild_the_fleet_index(harness: Harness) -> None:
    h, m = harness, harness.manager
    first = await h.make_ready(await m.acquire([request("a")]))
    second = await h.make_ready(await m.acquire([request("b")]))
    rebuilds = m.views.rebuilds

    await m.set_name("front", first.id)
    await m.set_name("front", second.id)
    await m.delete_name("front")
    # A lease that asks to sit beside a name sees the name's server: the index is current.
    await m.set_name("beside", second.id)
    third = await m.acquire([request("c")], LeaseOptions(colocate_with=["beside"]))

    assert third.server_id == second.server_id
    assert m.views.rebuilds == rebuilds
    assert m.names_of(second.id) == ["beside"]


def test_the_simulator_drives_the_manager_through_public_names_only() -> None:
    private = []
    for path in sorted((REPO_ROOT / "tms_core" / "sim").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                private.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert private == []


async def test_a_model_reported_failed_fails_its_lease_and_says_which(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire([request("a"), request("b")])
    assert lease.server_id is not None
    await m.report(
        lease.server_id,
        triton_ready=True,
        models=[
            *served([("a", "file:///models/a")]),
            *served([("b", "file:///models/b")], ModelState.FAILED, "bad config"),
        ],
    )
    failed = m.snapshot(lease.id)
    assert failed.state is LeaseState.FAILED
    assert failed.reason == "model 'b': bad config"
    assert m.desired(lease.server_id) == []


async def test_no_deadline_is_left_in_the_past_by_a_pass(harness: Harness) -> None:
    """An idle server its pool keeps for the minimum has no idle deadline: a deadline a pass
    cannot move would spin the reconciler and starve the API."""
    h, m = harness, harness.manager
    await m.create_pool(
        Pool("warm", "", 0, min_servers=1, max_servers=2, quota_per_server=4, created_at=0)
    )
    await m.tick()
    (server_id,) = list(m.servers)
    await m.report(server_id, triton_ready=True, models=[])
    h.clock.advance(h.settings.servers.idle_grace + 1)
    await m.tick()
    assert list(m.servers) == [server_id], "the pool's minimum server stays"
    deadline = m.next_deadline()
    assert deadline is None or deadline > h.clock.now()
