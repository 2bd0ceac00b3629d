"""The addresses of leases and names on Kubernetes, and their autoscalers, as plain
manifests (dicts) from the daemon's published state. Pure, as `kubernetes_objects`.

- Every live lease has a Service named after its id, and every lease name a Service named
  after the name; each selects the pods of the server that holds the lease (re-pointing a
  name changes its Service's selector).
- A lease whose replicas the daemon decides (autoscaling, `autoscale_mode: replicas`) spans
  several servers: its Service, and that of a name pointing at it, has no selector; the
  daemon writes its EndpointSlice (`<service>-replicas`), listing the pods of the lease's
  serving replicas (`PublishedState.serving`), so a replica is in the address from the
  commit that makes it READY and out of it from the one that drains it.
- While a lease is PARKED, or waking and not READY yet, that EndpointSlice lists the
  activator's pods instead, at the lease's activator ports (`kubernetes_activator`), and the
  daemon writes the activator's routes ConfigMap.
- With `autoscale_mode: hpa`, an autoscaling lease has a HorizontalPodAutoscaler (named after
  its id) on its server's Deployment, owned by that Deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tms_core.backends.kubernetes_activator import (
    Activator,
    activated,
    activator_routes,
    activator_slice_parts,
    routes_config_map,
)
from tms_core.backends.kubernetes_objects import (
    GRPC_PORT,
    HTTP_PORT,
    LEASE_LABEL,
    MANAGED_BY,
    MANAGER,
    METRICS_PORT,
    NAME_LABEL,
    SERVER_LABEL,
    Manifest,
    deployment_name,
    object_metadata,
    quantity,
)
from tms_core.config import KubernetesSettings
from tms_core.domain import Lease, LeaseAutoscale, LeaseNameRecord, PublishedState, Server
from tms_core.ids import LeaseId, ServerId

# What matches no pod: a Service whose lease has no server yet keeps its name and address.
NO_SERVER = ""
# An EndpointSlice's Service, and who writes it (not the endpoint slice controller).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER = "tms.io/daemon"
PORTS = (("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT))


def _service(
    name: str,
    server_id: str | None,
    *,
    namespace: str,
    settings: KubernetesSettings,
    kind: str,
    replicated: bool = False,
    **extra: str,
) -> Manifest:
    """A lease's or a name's Service: selecting its server's pods, or, `replicated`, with no
    selector (its EndpointSlice lists the pods of every serving replica)."""
    spec: dict[str, Any] = {"type": settings.service_type}
    if not replicated:
        spec["selector"] = {MANAGED_BY: MANAGER, SERVER_LABEL: server_id or NO_SERVER}
    spec["ports"] = [
        # Without a selector the EndpointSlice's ports (the same numbers) are the targets.
        {
            "name": port,
            "port": number,
            "targetPort": number if replicated else port,
            "protocol": "TCP",
        }
        for port, number in PORTS
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(name, namespace, settings, kind, **extra),
        "spec": spec,
    }


@dataclass(frozen=True)
class PodAddress:
    """A server's pod as an EndpointSlice lists it (read from the pods by the adapter)."""

    server_id: ServerId
    name: str
    uid: str
    ip: str
    ready: bool
    terminating: bool = False
    node: str = ""


def endpoint_slice(
    service: str,
    servers: list[Server],
    pods: Mapping[ServerId, list[PodAddress]],
    *,
    namespace: str,
    settings: KubernetesSettings,
    activator: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
    **extra: str,
) -> Manifest:
    """The EndpointSlice of a Service without a selector: the pods of `servers` (a lease's
    serving replicas), each with its readiness as the kubelet reports it; or, given
    `activator` (endpoints and ports), the activator's pods."""
    meta = object_metadata(f"{service}-replicas", namespace, settings, "endpoints", **extra)
    meta["labels"] |= {SERVICE_NAME_LABEL: service, SLICE_MANAGED_BY: SLICE_MANAGER}
    if activator is not None:
        endpoints, ports = activator
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta,
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
    endpoints = []
    for server in servers:
        for pod in sorted(pods.get(server.id, []), key=lambda p: p.name):
            endpoint: dict[str, Any] = {
                "addresses": [pod.ip],
                "conditions": {
                    "ready": pod.ready and not pod.terminating,
                    "serving": pod.ready,
                    "terminating": pod.terminating,
                },
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod.name,
                    "uid": pod.uid,
                },
            }
            if pod.node:
                endpoint["nodeName"] = pod.node
            endpoints.append(endpoint)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port, "port": number, "protocol": "TCP"} for port, number in PORTS],
    }


def _serving(lease: Lease | None, servers: Mapping[ServerId, Server]) -> ServerId | None:
    if lease is None or not lease.state.holds_models or not lease.server_id:
        return None
    server = servers.get(lease.server_id)
    return server.id if server is not None and server.state.alive else None


def _replicated(lease: Lease | None, settings: KubernetesSettings) -> bool:
    """Whether the daemon spreads the lease over replica servers (its Service then lists
    their pods itself); an autoscaling lease's is fixed for its life."""
    return lease is not None and lease.autoscale is not None and settings.autoscale_mode != "hpa"


def lease_service(
    lease: Lease,
    servers: Mapping[ServerId, Server],
    *,
    namespace: str,
    settings: KubernetesSettings,
) -> Manifest:
    return _service(
        lease.id,
        _serving(lease, servers),
        namespace=namespace,
        settings=settings,
        kind="lease",
        replicated=_replicated(lease, settings),
        **{LEASE_LABEL: lease.id},
    )


def name_service(
    record: LeaseNameRecord,
    leases: Mapping[LeaseId, Lease],
    servers: Mapping[ServerId, Server],
    *,
    namespace: str,
    settings: KubernetesSettings,
) -> Manifest:
    lease = leases.get(record.lease_id) if record.lease_id else None
    return _service(
        record.name,
        _serving(lease, servers),
        namespace=namespace,
        settings=settings,
        kind="name",
        replicated=_replicated(lease, settings),
        **{NAME_LABEL: record.name},
    )


def lease_hpa(
    lease: Lease,
    autoscale: LeaseAutoscale,
    server_id: str,
    *,
    namespace: str,
    settings: KubernetesSettings,
    owner_uid: str = "",
) -> Manifest:
    target = deployment_name(server_id)
    meta = object_metadata(
        lease.id,
        namespace,
        settings,
        "autoscaler",
        **{LEASE_LABEL: lease.id, SERVER_LABEL: server_id},
    )
    if owner_uid:
        # Deleting the server's Deployment deletes its autoscaler with it.
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": target, "uid": owner_uid}
        ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": autoscale.min_replicas,
            "maxReplicas": autoscale.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": autoscale.metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": quantity(autoscale.target),
                        },
                    },
                }
            ],
        },
    }


@dataclass(frozen=True)
class Desired:
    """The Services, EndpointSlices and autoscalers the daemon's state asks for, by name."""

    services: dict[str, Manifest]
    autoscalers: dict[str, Manifest]
    # Which lease each object is for, so a failure to write it becomes that lease's reason.
    lease_of: dict[str, str]
    endpoint_slices: dict[str, Manifest] = field(default_factory=dict)
    config_maps: dict[str, Manifest] = field(default_factory=dict)


def desired_objects(
    leases: Mapping[LeaseId, Lease],
    names: Mapping[str, LeaseNameRecord],
    servers: Mapping[ServerId, Server],
    *,
    namespace: str,
    settings: KubernetesSettings,
    owner_uids: Mapping[ServerId, str] | None = None,
    replicas: Mapping[LeaseId, Mapping[LeaseId, Lease]] | None = None,
    pods: Mapping[ServerId, list[PodAddress]] | None = None,
    activator: Activator | None = None,
    wake_hold_s: float = 0.0,
) -> Desired:
    """`replicas` are the live replica records of each lease (`PublishedState.replicas`),
    `pods` the pods listed, by server: what EndpointSlices are made of. With `activator`,
    parked and waking leases' slices lead to it, and its routes ConfigMap is written."""
    state = PublishedState(leases, names, servers, replicas or {})
    services: dict[str, Manifest] = {}
    slices: dict[str, Manifest] = {}
    autoscalers: dict[str, Manifest] = {}
    lease_of: dict[str, str] = {}

    def follow(service: str, lease: Lease | None, **extra: str) -> None:
        # A Service without a selector: its slice lists the serving replicas' pods.
        if lease is not None and _replicated(lease, settings):
            to_activator = None
            if activator is not None and activated(lease):
                to_activator = activator_slice_parts(activator, lease.id, namespace)
            slice_ = endpoint_slice(
                service,
                state.serving(lease),
                pods or {},
                namespace=namespace,
                settings=settings,
                activator=to_activator,
                **extra,
            )
            slices[slice_["metadata"]["name"]] = slice_
            lease_of[f"EndpointSlice/{slice_['metadata']['name']}"] = lease.id

    for lease in leases.values():
        # A replica record is reached through its lease's Service, never one of its own.
        if lease.state.ended or lease.replica_of is not None:
            continue
        services[lease.id] = lease_service(lease, servers, namespace=namespace, settings=settings)
        lease_of[f"Service/{lease.id}"] = lease.id
        follow(lease.id, lease, **{LEASE_LABEL: lease.id})
        server_id = _serving(lease, servers)
        if (
            lease.autoscale is not None
            and server_id is not None
            and settings.autoscale_mode == "hpa"
        ):
            autoscalers[lease.id] = lease_hpa(
                lease,
                lease.autoscale,
                server_id,
                namespace=namespace,
                settings=settings,
                owner_uid=(owner_uids or {}).get(server_id, ""),
            )
            lease_of[f"HorizontalPodAutoscaler/{lease.id}"] = lease.id
    for record in names.values():
        services[record.name] = name_service(
            record, leases, servers, namespace=namespace, settings=settings
        )
        target = record.next_lease_id or record.lease_id
        if target:
            lease_of[f"Service/{record.name}"] = target
        pointed = leases.get(record.lease_id) if record.lease_id else None
        follow(record.name, pointed, **{NAME_LABEL: record.name})
    config_maps: dict[str, Manifest] = {}
    if activator is not None:
        routes = activator_routes(state, activator.ports, pods or {}, wake_hold_s=wake_hold_s)
        config_maps[settings.activator_routes] = routes_config_map(
            routes, namespace=namespace, settings=settings
        )
    return Desired(services, autoscalers, lease_of, slices, config_maps)
