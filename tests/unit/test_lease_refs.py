"""A lease name addresses its lease wherever a lease id is accepted, and the two never collide."""

from __future__ import annotations

import pytest

from tests.unit.conftest import Harness, request
from tms_core.domain import LeaseState
from tms_core.errors import InvalidArgument, LeaseNotFound
from tms_core.lease_request import LeaseOptions


async def test_a_name_addresses_status_renew_follow_and_release(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire([request("a")], LeaseOptions(name="front", duration_s=60))
    # Not READY yet: the name will point at it, and already addresses it.
    assert m.snapshot("front").id == lease.id
    lease = await harness.make_ready(lease)
    assert m.snapshot("front").id == lease.id

    harness.clock.advance(30)
    renewed = await m.renew("front", 120)
    assert renewed.id == lease.id and renewed.expires_at == harness.clock.now() + 120

    follower = m.follow("front")
    assert (await anext(follower)).id == lease.id
    await follower.aclose()

    released = await m.release("front")
    assert released.id == lease.id and released.state is LeaseState.RELEASING


async def test_a_name_set_later_addresses_its_lease_and_follows_a_repoint(
    harness: Harness,
) -> None:
    m = harness.manager
    first = await harness.make_ready(await m.acquire([request("a")]))
    second = await harness.make_ready(await m.acquire([request("b")]))
    await m.set_name("front", first.id)
    assert m.resolve("front") == first.id
    # A name can also be named by another name's lease.
    await m.set_name("front", second.id)
    assert m.resolve("front") == second.id
    await m.set_name("also", "front")
    assert m.resolve("also") == second.id


async def test_an_id_wins_and_names_shaped_like_ids_are_refused(harness: Harness) -> None:
    m = harness.manager
    lease = await m.acquire([request("a")])
    assert m.resolve(lease.id) == lease.id
    for name in (lease.id, "l-0123456789ab"):
        with pytest.raises(InvalidArgument) as info:
            await m.set_name(name, lease.id)
        assert info.value.field == "name" and "shape of a lease id" in info.value.message
        with pytest.raises(InvalidArgument):
            await m.acquire([request("b")], LeaseOptions(name=name))
    # Names that only start like an id are fine.
    await m.set_name("l-front", lease.id)
    assert m.resolve("l-front") == lease.id


async def test_an_unknown_name_is_not_found(harness: Harness) -> None:
    with pytest.raises(LeaseNotFound) as info:
        await harness.manager.renew("nobody")
    assert info.value.message == "no lease with id or name 'nobody'"
