"""Placement: where a lease's models go. A pure function of the request and the fleet.

The decision is one of: join a live server, start a new one (on which node and GPUs), wait
(with the reason, naming the resource that binds), or reject (the request can never fit). A
lease's models always go to one server together (as in TMS), so placement is all-or-nothing
by construction. The algorithm is described in docs/placement.md.

`views` holds what placement reads and answers (pure data), `fleet_index` the fleet kept
sorted by free memory, `deciding` the decision itself.
"""

from tms_core.placement.deciding import place
from tms_core.placement.fleet_index import FleetIndex, GpuKey
from tms_core.placement.views import (
    Constraints,
    Decision,
    GpuView,
    JoinServer,
    ModelNeed,
    NodeView,
    PoolSpec,
    Reject,
    ServerView,
    StartServer,
    Wait,
    framework_group,
)

__all__ = [
    "Constraints",
    "Decision",
    "FleetIndex",
    "GpuKey",
    "GpuView",
    "JoinServer",
    "ModelNeed",
    "NodeView",
    "PoolSpec",
    "Reject",
    "ServerView",
    "StartServer",
    "Wait",
    "framework_group",
    "place",
]
