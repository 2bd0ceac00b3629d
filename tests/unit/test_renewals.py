"""Renewals in group commits: concurrent renewals share commits, each is acknowledged only
once it is on disk, a failed commit fails its renewals, and a stored expiry never moves back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.conftest import Harness, request
from tests.unit.test_store import a_lease
from tms_core.domain import Lease
from tms_core.ids import LeaseId
from tms_core.lease_request import LeaseOptions
from tms_core.store import Store


async def _stored(h: Harness, lease_id: str) -> Lease:
    leases, _ = await h.store.load()
    return next(lease for lease in leases if lease.id == lease_id)


async def _ready_leases(h: Harness, count: int) -> list[Lease]:
    leases = []
    for _ in range(count):
        lease = await h.manager.acquire([request("a")], LeaseOptions(duration_s=60))
        leases.append(await h.make_ready(lease))
    return leases


async def test_concurrent_renewals_share_commits_and_are_stored(harness: Harness) -> None:
    h, m = harness, harness.manager
    leases = await _ready_leases(h, 8)
    h.clock.advance(10)
    before = m.renewals.groups
    renewed = await asyncio.gather(*(m.renew(lease.id, 600) for lease in leases))
    assert all(r.expires_at == h.clock.now() + 600 for r in renewed)
    # The first renewal commits alone; the others, queued meanwhile, in one more group.
    assert m.renewals.groups - before < len(leases)
    for lease in leases:
        assert (await _stored(h, lease.id)).expires_at == h.clock.now() + 600
    seen = [e for e in m.events.kept() if e.state == "RENEWED"]
    assert {e.lease_id for e in seen} == {lease.id for lease in leases}


async def test_a_renewal_whose_commit_fails_fails(harness: Harness) -> None:
    h, m = harness, harness.manager
    (lease,) = await _ready_leases(h, 1)
    real = h.store.extend_leases

    async def failing(expiries: object) -> None:
        raise OSError(28, "No space left on device")

    h.store.extend_leases = failing  # type: ignore[method-assign,assignment]
    with pytest.raises(OSError, match="No space left"):
        await m.renew(lease.id, 600)
    h.store.extend_leases = real  # type: ignore[method-assign]
    assert (await _stored(h, lease.id)).expires_at == lease.expires_at
    # The writer goes on with the next renewals.
    h.clock.advance(1)
    assert (await m.renew(lease.id, 900)).expires_at == h.clock.now() + 900
    assert (await _stored(h, lease.id)).expires_at == h.clock.now() + 900


async def test_a_stored_expiry_never_moves_back(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        lease = a_lease()
        async with store.transaction() as tx:
            await tx.put_lease(lease)
        await store.extend_leases(
            [
                (lease.id, lease.expires_at - 100, lease.updated_at - 1),
                (LeaseId("l-unknown"), 1.0, 1.0),
            ]
        )
        (kept,), _ = await store.load()
        assert (kept.expires_at, kept.updated_at) == (lease.expires_at, lease.updated_at)
        await store.extend_leases([(lease.id, lease.expires_at + 100, lease.updated_at + 5)])
        (moved,), _ = await store.load()
        assert (moved.expires_at, moved.updated_at) == (
            lease.expires_at + 100,
            lease.updated_at + 5,
        )
        assert moved.state is lease.state and moved.models == lease.models
    finally:
        await store.close()
