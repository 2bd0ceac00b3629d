"""Parked leases on Kubernetes, against the API stand-in: while a lease is PARKED (and while
it wakes), its Service's EndpointSlice, and its name's, lead to the activator's pods at the
lease's activator ports, and the activator's routes ConfigMap holds connections there and
asks for a wake of that lease; once READY, the slice lists the server's pods again and the
activator's routes forward to them. Every object is checked against the official schemas."""

from __future__ import annotations

import json
from typing import Any

from tests.kubernetes.conftest import NAMESPACE, GiB, Kube
from tests.kubernetes.standin import api_request
from tests.kubernetes.test_manifests import VERSIONS, validate
from tests.kubernetes.test_replicas import add_pod, replica_servers
from tms_core.domain import LeaseAutoscale, LeaseState
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.router.routes import parse_routes

MODELS = [ModelRequest("m", "file:///model-store/m", GiB)]
PARKS = LeaseOptions(autoscale=LeaseAutoscale(min_replicas=0, max_replicas=2, park_after_s=60.0))


def add_activator_pod(kube: Kube, ip: str) -> None:
    api_request(
        kube.cluster,
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "tms-activator-x1",
                "labels": {
                    "app.kubernetes.io/name": "tms",
                    "app.kubernetes.io/component": "activator",
                },
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "activator", "image": "x"}]},
            "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
    )


def slice_of(kube: Kube, service: str) -> dict[str, Any]:
    found = kube.cluster.objects("endpointslices", NAMESPACE)[f"{service}-replicas"]
    for version in VERSIONS:
        validate(found, version)
    return found


def listed(kube: Kube, service: str) -> tuple[list[str], dict[str, int]]:
    found = slice_of(kube, service)
    return (
        [e["addresses"][0] for e in found["endpoints"]],
        {p["name"]: p["port"] for p in found["ports"]},
    )


def activator_routes(kube: Kube) -> list[Any]:
    config_map = kube.cluster.objects("configmaps", NAMESPACE)["tms-activator-routes"]
    for version in VERSIONS:
        validate(config_map, version)
    return list(parse_routes(config_map["data"]["routes.json"]).routes)


async def test_the_service_switches_to_the_activator_while_parked_and_back(kube: Kube) -> None:
    add_activator_pod(kube, "10.9.0.1")
    lease = await kube.manager.acquire(MODELS, PARKS)
    await kube.manager.set_name("web", lease.id)
    [own] = replica_servers(kube, lease)
    add_pod(kube, own, "10.0.0.1")
    await kube.report(lease)
    await kube.sync()
    # Serving: the server's pod, at Triton's ports.
    for name in (lease.id, "web"):
        assert listed(kube, name) == (["10.0.0.1"], {"http": 8000, "grpc": 8001, "metrics": 8002})
    # The activator's routes for the lease exist already, leading to the READY pod.
    routes = activator_routes(kube)
    assert [(r.listen, r.backends, r.wake, r.lease) for r in routes] == [
        ("0.0.0.0:20000", ("10.0.0.1:8000",), False, lease.id),
        ("0.0.0.0:20001", ("10.0.0.1:8001",), False, lease.id),
    ]

    # Parked: the lease's Service and its name's lead to the activator, at its ports.
    await kube.manager.set_replicas(lease.id, 0)
    assert kube.manager.snapshot(lease.id).state is LeaseState.PARKED
    await kube.sync()
    for name in (lease.id, "web"):
        assert listed(kube, name) == (["10.9.0.1"], {"http": 20000, "grpc": 20001})
        assert "selector" not in kube.cluster.objects("services", NAMESPACE)[name]["spec"]
    routes = activator_routes(kube)
    assert [(r.backends, r.wake, r.lease, r.protocol, r.hold_s) for r in routes] == [
        ((), True, lease.id, "http", 120.0),
        ((), True, lease.id, "grpc", 120.0),
    ]

    # Woken (as the activator's Wake call does): still the activator while it loads.
    await kube.unloaded(own)
    await kube.manager.wake(lease.id)
    waking = kube.manager.snapshot(lease.id)
    assert waking.state in (LeaseState.PENDING, LeaseState.LOADING) and waking.waking
    await kube.sync()
    assert listed(kube, lease.id) == (["10.9.0.1"], {"http": 20000, "grpc": 20001})
    assert [(r.hold, r.wake) for r in activator_routes(kube)] == [(True, False)] * 2

    # READY: the server's pods again; the activator forwards what it held to them.
    [server] = replica_servers(kube, waking)
    if server != own:
        add_pod(kube, server, "10.0.0.2")
    ip = "10.0.0.1" if server == own else "10.0.0.2"
    ready = await kube.report(waking)
    assert ready.state is LeaseState.READY
    await kube.sync()
    for name in (lease.id, "web"):
        assert listed(kube, name) == ([ip], {"http": 8000, "grpc": 8001, "metrics": 8002})
    routes = activator_routes(kube)
    assert [(r.listen, r.backends, r.wake) for r in routes] == [
        ("0.0.0.0:20000", (f"{ip}:8000",), False),
        ("0.0.0.0:20001", (f"{ip}:8001",), False),
    ]

    # Released: its activator ports are free again, and its routes gone.
    await kube.manager.release(lease.id)
    await kube.unloaded(server)
    assert kube.manager.snapshot(lease.id).state.ended
    await kube.sync()
    assert activator_routes(kube) == []


async def test_activator_ports_are_kept_per_lease_while_others_come_and_go(kube: Kube) -> None:
    first = await kube.manager.acquire(MODELS, PARKS)
    second = await kube.manager.acquire(MODELS, PARKS)
    await kube.sync()
    ports = {r.lease: r.listen for r in activator_routes(kube) if r.protocol == "http"}
    assert sorted(ports.values()) == ["0.0.0.0:20000", "0.0.0.0:20002"]
    await kube.manager.release(first.id)
    [server] = replica_servers(kube, first)
    await kube.unloaded(server)
    await kube.sync()
    # The second keeps its ports when the first's are freed.
    kept = {r.lease: r.listen for r in activator_routes(kube) if r.protocol == "http"}
    assert kept == {second.id: ports[second.id]}
    raw = kube.cluster.objects("configmaps", NAMESPACE)["tms-activator-routes"]
    assert json.loads(raw["data"]["routes.json"])["routes"][0]["lease"] == second.id
