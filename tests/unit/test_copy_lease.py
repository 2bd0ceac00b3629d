"""`copy_lease`: what every Status, List, Renew and Release answer is built from.

The copy must equal the lease and share nothing a later change to the lease could reach,
or an answer already handed to a caller would change under it (the manager mutates leases
in place under its lock).
"""

from __future__ import annotations

import copy

from tms_core.domain import (
    Lease,
    LeaseAutoscale,
    LeaseConstraints,
    LeaseModel,
    LeaseState,
    ModelState,
    copy_lease,
)
from tms_core.ids import LeaseId, ModelName


def a_lease() -> Lease:
    return Lease(
        id=LeaseId("l-1"),
        name="demo",
        state=LeaseState.READY,
        models=[LeaseModel(ModelName("add_sub"), "file:///m/add_sub", 64, ModelState.READY)],
        duration_s=600.0,
        created_at=1.0,
        expires_at=601.0,
        updated_at=2.0,
        constraints=LeaseConstraints(
            gpus=1, node_selector={"zone": "a"}, colocate_with=["l-0"], avoid=["l-9"]
        ),
        labels={"team": "search"},
        autoscale=LeaseAutoscale(min_replicas=0, max_replicas=3, park_after_s=60.0),
    )


def test_the_copy_equals_the_lease_and_shares_nothing_mutable() -> None:
    lease = a_lease()
    copied = copy_lease(lease)
    assert copied == lease == copy.deepcopy(lease)

    lease.models[0].state = ModelState.UNLOADING
    lease.models.append(LeaseModel(ModelName("other"), "file:///m/other"))
    lease.constraints.node_selector["zone"] = "b"
    lease.constraints.colocate_with.append("l-2")
    lease.labels["team"] = "ads"
    assert lease.autoscale is not None
    lease.autoscale.max_replicas = 8
    lease.state = LeaseState.RELEASING

    assert copied == a_lease()


def test_a_lease_without_optional_parts_copies_too() -> None:
    lease = a_lease()
    lease.autoscale = None
    lease.models = []
    assert copy_lease(lease) == lease
