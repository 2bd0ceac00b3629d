"""The waiting room: pending leases by the GPU room that would let them go, and by model."""

from __future__ import annotations

from tms_core.domain import Lease, LeaseConstraints, LeaseModel, LeaseState
from tms_core.ids import LeaseId, ModelName
from tms_core.manager.waiting import WaitingRoom, share_of

GiB = 1024**3


def waiting(lease_id: str, gib: int, *, gpus: int = 1, pool: str = "", model: str = "m") -> Lease:
    return Lease(
        id=LeaseId(lease_id),
        name="",
        state=LeaseState.PENDING,
        models=[LeaseModel(ModelName(model), f"file:///{model}", gib * GiB)],
        duration_s=60.0,
        created_at=float(len(lease_id)),
        expires_at=100.0,
        updated_at=0.0,
        constraints=LeaseConstraints(gpus=gpus),
        pool=pool,
    )


def test_leases_come_out_by_the_room_they_need() -> None:
    room = WaitingRoom()
    small, big, pair = waiting("l-small", 4), waiting("l-big", 40), waiting("l-pair", 40, gpus=2)
    cpu, pooled = waiting("l-cpu", 1, gpus=0), waiting("l-pool", 1, pool="p")
    for lease in (small, big, pair, cpu, pooled):
        room.add(lease)
        room.add(lease)  # adding again changes nothing
    assert share_of(pair) == 20 * GiB
    assert [lease.id for lease in room.within(3 * GiB)] == []
    assert [lease.id for lease in room.within(20 * GiB)] == ["l-small", "l-pair"]
    assert [lease.id for lease in room.within(80 * GiB)] == ["l-small", "l-pair", "l-big"]
    # CPU and pool leases are bounded by servers' memory and quota, not a GPU: always asked.
    assert set(room.unbounded) == {"l-cpu", "l-pool"}
    assert len(room) == 5

    room.remove(pair)
    room.remove(pair)
    assert [lease.id for lease in room.within(80 * GiB)] == ["l-small", "l-big"]
    assert {lease.id for lease in room.wanting(("m", "file:///m"))} == {
        "l-small",
        "l-big",
        "l-cpu",
        "l-pool",
    }
    for lease in (small, big, cpu, pooled):
        room.remove(lease)
    assert room.models() == [] and len(room) == 0
