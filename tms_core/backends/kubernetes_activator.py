"""Parked leases on Kubernetes: the activator and the switch of their Services to it. Pure,
as `kubernetes_addresses`.

The activator (manifests/base/activator.yaml) is the router of tms_core/router in pods of its
own, reading its routes from a ConfigMap the daemon writes (`activator_routes`, key
`routes.json`) and waking leases with `LeaseService.Wake` (`--wake-grpc`). Each lease that
may park (autoscale `min_replicas: 0`) gets two activator ports (HTTP, gRPC), kept for its
life, and two routes on `0.0.0.0` there:

- while the lease is PARKED, they hold connections and ask for a wake (`wake`, with the
  lease's id), answering held ones with the reason once a wake fails;
- while it wakes, they hold connections for the wake's time;
- once it serves, they lead to its READY pods, so the connections held go through.

While the lease is PARKED, or waking and not READY yet, the EndpointSlice of its Service (and
of every name pointing at it) lists the activator's pods at those ports; once READY, its
serving replicas' pods again (`kubernetes_addresses.endpoint_slice`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tms_core.backends.kubernetes_objects import (
    GRPC_PORT,
    HTTP_PORT,
    Manifest,
    object_metadata,
)
from tms_core.config import KubernetesSettings
from tms_core.domain import Lease, LeaseState, PublishedState, Server
from tms_core.ids import LeaseId, ServerId
from tms_core.router.routes import Route, RoutesError, parse_routes, routes_text
from tms_core.routing import route_waits

ROUTES_KEY = "routes.json"
LISTEN_HOST = "0.0.0.0"  # the activator's pods serve the cluster
# The router echoes a version it is given; the activator notices changes by the file itself.
ROUTES_VERSION = 1
Ports = tuple[int, int]


@dataclass(frozen=True)
class ActivatorPod:
    """One of the activator's pods, as an EndpointSlice lists it."""

    name: str
    uid: str
    ip: str
    ready: bool
    terminating: bool = False
    node: str = ""


@dataclass(frozen=True)
class Activator:
    """What the switch needs: the activator's pods and each parkable lease's ports there."""

    pods: list[ActivatorPod] = field(default_factory=list)
    ports: Mapping[LeaseId, Ports] = field(default_factory=dict)


def parkable(lease: Lease) -> bool:
    """Whether the lease may park (it then keeps activator ports for its life)."""
    return (
        not lease.state.ended
        and lease.replica_of is None
        and lease.autoscale is not None
        and lease.autoscale.min_replicas == 0
    )


def activated(lease: Lease | None) -> bool:
    """Whether the lease's addresses lead to the activator: PARKED, or woken and not READY."""
    return lease is not None and (lease.state is LeaseState.PARKED or lease.waking)


def assign_ports(
    previous: Mapping[LeaseId, Ports], leases: Iterable[Lease], first: int
) -> dict[LeaseId, Ports]:
    """Each parkable lease's ports: the ones it had, else the lowest free pair from `first`
    (leases taken in id order, so the same state gives the same ports)."""
    wanted = sorted(lease.id for lease in leases if parkable(lease))
    ports = {lid: previous[lid] for lid in wanted if lid in previous}
    taken = {port for pair in ports.values() for port in pair}
    candidate = first
    for lease_id in wanted:
        if lease_id in ports:
            continue
        while candidate in taken or candidate + 1 in taken:
            candidate += 2
        ports[lease_id] = (candidate, candidate + 1)
        taken.update(ports[lease_id])
    return ports


def ports_in(config_map: Mapping[str, Any] | None) -> dict[LeaseId, Ports]:
    """The ports recorded in the activator's routes ConfigMap, by lease (none if unreadable)."""
    text = ((config_map or {}).get("data") or {}).get(ROUTES_KEY, "")
    try:
        table = parse_routes(text)
    except RoutesError:
        return {}
    found: dict[LeaseId, dict[str, int]] = {}
    for route in table.routes:
        if route.lease and route.protocol in ("http", "grpc"):
            port = int(route.listen.rpartition(":")[2])
            found.setdefault(LeaseId(route.lease), {})[route.protocol] = port
    return {lid: (p["http"], p["grpc"]) for lid, p in found.items() if len(p) == 2}


def _ready_pods(
    servers: list[Server], pods: Mapping[ServerId, list[Any]], port: int
) -> tuple[str, ...]:
    return tuple(
        f"{pod.ip}:{port}"
        for server in servers
        for pod in sorted(pods.get(server.id, []), key=lambda p: p.name)
        if pod.ready and not pod.terminating
    )


def activator_routes(
    state: PublishedState,
    ports: Mapping[LeaseId, Ports],
    pods: Mapping[ServerId, list[Any]],
    *,
    wake_hold_s: float,
) -> list[Route]:
    """The activator's routes: two per parkable lease (see the module's docstring)."""
    routes: list[Route] = []
    for lease_id, (http, grpc) in sorted(ports.items()):
        lease = state.leases.get(lease_id)
        if lease is None:
            continue
        waits = route_waits(lease, wake_hold_s)
        serving = state.serving(lease)
        for port, protocol, target in ((http, "http", HTTP_PORT), (grpc, "grpc", GRPC_PORT)):
            routes.append(
                waits.route(
                    f"{LISTEN_HOST}:{port}",
                    _ready_pods(serving, pods, target),
                    f"lease {lease_id} {protocol}",
                    protocol,
                    lease=lease_id,
                )
            )
    return routes


def routes_config_map(
    routes: list[Route], *, namespace: str, settings: KubernetesSettings
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(settings.activator_routes, namespace, settings, "activator"),
        "data": {ROUTES_KEY: routes_text(ROUTES_VERSION, routes) + "\n"},
    }


def activator_slice_parts(
    activator: Activator, lease_id: LeaseId, namespace: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The endpoints and ports of an EndpointSlice leading to the activator for the lease;
    None when the lease has no activator ports."""
    pair = activator.ports.get(lease_id)
    if pair is None:
        return None
    endpoints: list[dict[str, Any]] = []
    for pod in sorted(activator.pods, key=lambda p: p.name):
        endpoint: dict[str, Any] = {
            "addresses": [pod.ip],
            "conditions": {
                "ready": pod.ready and not pod.terminating,
                "serving": pod.ready,
                "terminating": pod.terminating,
            },
            "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod.name, "uid": pod.uid},
        }
        if pod.node:
            endpoint["nodeName"] = pod.node
        endpoints.append(endpoint)
    ports = [
        {"name": "http", "port": pair[0], "protocol": "TCP"},
        {"name": "grpc", "port": pair[1], "protocol": "TCP"},
    ]
    return endpoints, ports


def activator_pod(pod: Mapping[str, Any]) -> ActivatorPod | None:
    """An activator pod as listed; None before it has an address."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    ip = status.get("podIP")
    if not ip:
        return None
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return ActivatorPod(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        ip=str(ip),
        ready=conditions.get("Ready") == "True",
        terminating=bool(meta.get("deletionTimestamp")),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
    )
