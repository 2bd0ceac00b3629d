"""Replicas on Kubernetes, against the API stand-in: each replica is a server Deployment of
its own, and the lease's Service (and its name's) follows the serving replicas through an
EndpointSlice the daemon writes: a replica's pod is listed once the replica is READY, and
taken out when it drains."""

from __future__ import annotations

from typing import Any

from tests.kubernetes.conftest import NAMESPACE, GiB, Kube
from tests.kubernetes.standin import api_request
from tms_core.backends.kubernetes_objects import SERVER_LABEL
from tms_core.domain import Lease, LeaseAutoscale, LeaseState, ModelState, ServedModel
from tms_core.ids import ModelName
from tms_core.lease_request import LeaseOptions, ModelRequest

MODELS = [ModelRequest("m", "file:///model-store/m", GiB)]
READY = ModelState.READY
SCALED = LeaseOptions(autoscale=LeaseAutoscale(min_replicas=1, max_replicas=3, drain_s=5.0))


def add_pod(kube: Kube, server_id: str, ip: str, *, ready: bool = True) -> None:
    """The server's pod as the scheduler and kubelet would show it: on a node, with an IP."""
    api_request(
        kube.cluster,
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"tms-{server_id}-x1",
                "labels": {
                    "app.kubernetes.io/managed-by": "tms",
                    "tms/kind": "server",
                    SERVER_LABEL: server_id,
                },
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "tritonserver", "image": "x"}]},
            "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        },
    )


def endpoints(kube: Kube, service: str) -> list[tuple[str, bool]]:
    """The addresses the Service's EndpointSlice lists, with their readiness."""
    slices = kube.cluster.objects("endpointslices", NAMESPACE)
    found = slices[f"{service}-replicas"]
    assert found["metadata"]["labels"]["kubernetes.io/service-name"] == service
    return [(e["addresses"][0], e["conditions"]["ready"]) for e in found["endpoints"]]


def service(kube: Kube, name: str) -> dict[str, Any]:
    return kube.cluster.objects("services", NAMESPACE)[name]


def replica_servers(kube: Kube, lease: Lease) -> list[str]:
    held = kube.manager.replicas_of(kube.manager.snapshot(lease.id))
    return [r.server_id or "" for r, _ in held]


async def test_the_service_follows_the_serving_replicas(kube: Kube) -> None:
    lease = await kube.manager.acquire(MODELS, SCALED)
    await kube.manager.set_name("web", lease.id)
    await kube.report(lease)
    await kube.sync()
    # The lease's Service and its name's list endpoints themselves: no selector.
    for name in (lease.id, "web"):
        assert "selector" not in service(kube, name)["spec"]
        assert endpoints(kube, name) == []  # no pod yet

    [own] = replica_servers(kube, lease)
    add_pod(kube, own, "10.0.0.1")
    await kube.sync()
    assert endpoints(kube, lease.id) == endpoints(kube, "web") == [("10.0.0.1", True)]

    # A second replica: a Deployment of its own, chosen by placement.
    await kube.manager.set_replicas(lease.id, 2)
    own, second = replica_servers(kube, lease)
    assert second and second != own
    assert set(kube.cluster.objects("deployments", NAMESPACE)) == {f"tms-{own}", f"tms-{second}"}
    add_pod(kube, second, "10.0.0.2")
    await kube.sync()
    # Its pod runs, but its models are not loaded: not in the address yet.
    assert endpoints(kube, lease.id) == [("10.0.0.1", True)]
    # Its sidecar reports the model loaded.
    await kube.manager.report(
        second, triton_ready=True, models=[ServedModel(ModelName("m"), MODELS[0].uri, READY)]
    )
    now = kube.manager.snapshot(lease.id)
    assert [r.state for r, _ in kube.manager.replicas_of(now)] == [LeaseState.READY] * 2
    await kube.sync()
    assert endpoints(kube, lease.id) == [("10.0.0.1", True), ("10.0.0.2", True)]
    assert endpoints(kube, "web") == endpoints(kube, lease.id)

    # Scaled down: out of the address at once, its Deployment kept while it drains.
    await kube.manager.set_replicas(lease.id, 1)
    await kube.sync()
    assert endpoints(kube, lease.id) == [("10.0.0.1", True)]
    assert f"tms-{second}" in kube.cluster.objects("deployments", NAMESPACE)
    kube.clock.advance(6)
    await kube.manager.tick()
    # Drained: its sidecar is told to unload, and reports its server empty.
    await kube.unloaded(second)
    kube.clock.advance(31)  # the idle grace
    await kube.manager.tick()
    await kube.sync()
    assert set(kube.cluster.objects("deployments", NAMESPACE)) == {f"tms-{own}"}
    assert endpoints(kube, lease.id) == [("10.0.0.1", True)]

    await kube.manager.release(lease.id)
    await kube.unloaded(own)
    await kube.sync()
    assert lease.id not in kube.cluster.objects("services", NAMESPACE)
    assert f"{lease.id}-replicas" not in kube.cluster.objects("endpointslices", NAMESPACE)
    # The name outlives its lease: its Service stays, leading nowhere.
    assert "web" in kube.cluster.objects("services", NAMESPACE)


async def test_a_pod_not_ready_is_listed_not_ready(kube: Kube) -> None:
    lease = await kube.manager.acquire(MODELS, SCALED)
    await kube.report(lease)
    assert lease.server_id is not None
    add_pod(kube, lease.server_id, "10.0.0.7", ready=False)
    await kube.sync()
    assert endpoints(kube, lease.id) == [("10.0.0.7", False)]


async def test_a_name_moved_between_kinds_of_lease_changes_how_its_service_selects(
    kube: Kube,
) -> None:
    plain = await kube.manager.acquire(MODELS)
    scaled = await kube.manager.acquire(MODELS, SCALED)
    for lease in (plain, scaled):
        await kube.report(lease)
    await kube.manager.set_name("web", plain.id)
    await kube.sync()
    assert service(kube, "web")["spec"]["selector"][SERVER_LABEL] == plain.server_id
    assert "web-replicas" not in kube.cluster.objects("endpointslices", NAMESPACE)

    await kube.manager.set_name("web", scaled.id)
    assert scaled.server_id is not None
    add_pod(kube, scaled.server_id, "10.0.0.3")
    await kube.sync()
    assert not service(kube, "web")["spec"].get("selector")
    assert endpoints(kube, "web") == [("10.0.0.3", True)]

    await kube.manager.set_name("web", plain.id)
    await kube.sync()
    assert service(kube, "web")["spec"]["selector"][SERVER_LABEL] == plain.server_id
    assert "web-replicas" not in kube.cluster.objects("endpointslices", NAMESPACE)
