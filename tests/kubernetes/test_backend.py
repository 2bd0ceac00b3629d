"""The Kubernetes backend against an API stand-in speaking the real HTTP API on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kubernetes.conftest import NAMESPACE, GiB, Kube, kube_settings, open_kube
from tests.kubernetes.standin import Cluster, api_request
from tms_core.backends.kubernetes_objects import SERVER_LABEL
from tms_core.domain import LeaseAutoscale, LeaseState, ServerState
from tms_core.errors import InvalidArgument
from tms_core.lease_request import LeaseOptions, ModelRequest


def models(*names: str) -> list[ModelRequest]:
    return [ModelRequest(name, f"file:///model-store/{name}", GiB) for name in names]


def add_node(cluster: Cluster, name: str, labels: dict[str, str], gpus: int = 0) -> None:
    """A ready node, as the kubelet, device plugin and GPU Feature Discovery would show it."""
    api_request(
        cluster,
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {
                "allocatable": {"nvidia.com/gpu": str(gpus), "memory": "500Gi", "cpu": "64"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
    )


def selector_of(service: dict) -> str:  # type: ignore[type-arg]
    return str(service["spec"]["selector"][SERVER_LABEL])


async def test_acquire_creates_a_deployment_and_a_service(kube: Kube) -> None:
    lease = await kube.manager.acquire(models("add_sub"))
    await kube.sync()
    assert lease.server_id is not None
    deployments = kube.cluster.objects("deployments", NAMESPACE)
    assert list(deployments) == [f"tms-{lease.server_id}"]
    deployment = deployments[f"tms-{lease.server_id}"]
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "tms"
    assert labels["app.kubernetes.io/part-of"] == "tms"
    assert labels["team"] == "vision"
    assert deployment["metadata"]["annotations"] == {"owner": "ml-platform@example.com"}
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"][SERVER_LABEL] == lease.server_id
    assert pod["metadata"]["labels"]["team"] == "vision"
    triton, sidecar = pod["spec"]["containers"]
    assert (triton["name"], sidecar["name"]) == ("tritonserver", "sidecar")
    assert triton["image"] == kube.settings.kubernetes.triton_image
    assert "--model-control-mode=explicit" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # A CPU server: its memory is the capacity placement counts, and it gets no GPU.
    assert triton["resources"]["limits"] == {"cpu": "2", "memory": str(8 * GiB)}
    assert f"--server-id={lease.server_id}" in sidecar["args"]
    # One shared work volume; the model volume is the sidecar's alone, read-only.
    assert triton["volumeMounts"] == [{"name": "work", "mountPath": "/tms"}]
    assert sidecar["volumeMounts"] == [
        {"name": "work", "mountPath": "/tms"},
        {"name": "model-store", "mountPath": "/model-store", "readOnly": True},
    ]
    assert "--model-repository=/tms/models" in triton["args"]

    service = kube.cluster.objects("services", NAMESPACE)[lease.id]
    assert selector_of(service) == lease.server_id
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    # Clients are told the Service's DNS name.
    assert kube.manager.service_host(lease.id) == f"{lease.id}.{NAMESPACE}.svc.cluster.local"
    assert (lease.http_port, lease.grpc_port) == (8000, 8001)


async def test_model_uris_must_be_on_the_model_volume(kube: Kube) -> None:
    with pytest.raises(InvalidArgument, match=r"models\[0\]\.uri: 'gs://b/x' cannot be read"):
        await kube.manager.acquire([ModelRequest("x", "gs://b/x", GiB)])
    assert kube.cluster.objects("deployments", NAMESPACE) == {}


async def test_remote_models_are_checked_for_presence_by_the_daemon(kube: Kube) -> None:
    # No credentials anywhere: refused at once, naming the model, and nothing is created.
    with pytest.raises(InvalidArgument, match=r"models\[0\]\.uri: model 'x': s3://b/x"):
        await kube.manager.acquire([ModelRequest("x", "s3://b/x", GiB)])
    assert kube.cluster.objects("deployments", NAMESPACE) == {}


async def test_a_second_lease_on_the_server_gets_its_own_service(kube: Kube) -> None:
    first = await kube.manager.acquire(models("add_sub"))
    await kube.report(first)
    second = await kube.manager.acquire(models("blob_classifier"))
    assert second.server_id == first.server_id
    await kube.sync()
    services = kube.cluster.objects("services", NAMESPACE)
    assert set(services) == {first.id, second.id}
    assert selector_of(services[first.id]) == selector_of(services[second.id]) == first.server_id
    assert len(kube.cluster.objects("deployments", NAMESPACE)) == 1


async def test_autoscaling_lease_gets_an_hpa_on_its_deployment(hpa_kube: Kube) -> None:
    kube = hpa_kube
    add_node(kube.cluster, "cpu-node-1", {"pool": "a100"})
    await kube.sync()
    lease = await kube.manager.acquire(
        models("add_sub"),
        LeaseOptions(
            autoscale=LeaseAutoscale(min_replicas=2, max_replicas=4, target=0.5),
            node_selector={"pool": "a100"},
        ),
    )
    assert lease.constraints.exclusive
    await kube.sync()
    deployment = kube.cluster.objects("deployments", NAMESPACE)[f"tms-{lease.server_id}"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "a100"}
    hpa = kube.cluster.objects("horizontalpodautoscalers", NAMESPACE)[lease.id]
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"tms-{lease.server_id}",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 4)
    metric = spec["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "nv_inference_queue_duration_ms"
    assert metric["target"] == {"type": "AverageValue", "averageValue": "500m"}
    # Owned by the Deployment: deleting the server deletes its autoscaler.
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]


async def test_autoscale_values_are_checked(hpa_kube: Kube) -> None:
    kube = hpa_kube
    with pytest.raises(InvalidArgument, match=r"autoscale\.max_replicas: must be at least"):
        await kube.manager.acquire(
            models("add_sub"),
            LeaseOptions(autoscale=LeaseAutoscale(min_replicas=3, max_replicas=2)),
        )
    with pytest.raises(InvalidArgument, match=r"autoscale\.metric"):
        await kube.manager.acquire(
            models("add_sub"),
            LeaseOptions(autoscale=LeaseAutoscale(metric="queue time", max_replicas=2)),
        )


async def test_release_deletes_the_service_then_the_idle_server(kube: Kube) -> None:
    lease = await kube.manager.acquire(
        models("add_sub"), LeaseOptions(autoscale=LeaseAutoscale(min_replicas=1, max_replicas=3))
    )
    lease = await kube.report(lease)
    assert lease.state is LeaseState.READY
    await kube.sync()
    assert lease.id in kube.cluster.objects("services", NAMESPACE)
    await kube.manager.release(lease.id)
    assert lease.server_id is not None
    await kube.unloaded(lease.server_id)
    assert kube.manager.snapshot(lease.id).state is LeaseState.RELEASED
    await kube.sync()
    assert kube.cluster.objects("services", NAMESPACE) == {}
    assert kube.cluster.objects("horizontalpodautoscalers", NAMESPACE) == {}
    # The server stays for its idle grace, then goes with its Deployment.
    assert list(kube.cluster.objects("deployments", NAMESPACE)) == [f"tms-{lease.server_id}"]
    kube.clock.advance(31)
    await kube.manager.tick()
    assert kube.cluster.objects("deployments", NAMESPACE) == {}


async def test_repointing_a_name_changes_its_service_selector(kube: Kube) -> None:
    first = await kube.manager.acquire(models("add_sub"), LeaseOptions(name="web"))
    await kube.report(first)
    second = await kube.manager.acquire(models("add_sub"), LeaseOptions(exclusive=True))
    await kube.report(second)
    assert first.server_id != second.server_id
    await kube.sync()
    services = kube.cluster.objects("services", NAMESPACE)
    assert selector_of(services["web"]) == first.server_id
    await kube.manager.set_name("web", second.id)
    await kube.sync()
    web = kube.cluster.objects("services", NAMESPACE)["web"]
    assert selector_of(web) == second.server_id
    assert web["metadata"]["labels"]["tms/name"] == "web"


async def test_restart_adopts_what_exists_and_deletes_orphans(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = kube_settings(cluster, tmp_path)
    state = tmp_path / "state.db"
    first = await open_kube(cluster, state, settings)
    lease = await first.manager.acquire(models("add_sub"))
    await first.report(lease)
    await first.sync()
    before = cluster.objects("deployments", NAMESPACE)[f"tms-{lease.server_id}"]
    await first.store.close()

    # While the daemon is down: a Deployment and a Service that its state knows nothing of.
    orphan = dict(before, metadata={**before["metadata"], "name": "tms-s-orphan"})
    orphan["metadata"]["labels"] = {**before["metadata"]["labels"], SERVER_LABEL: "s-orphan"}
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        orphan["metadata"].pop(key)
    api_request(cluster, "POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", orphan)
    stale = dict(cluster.objects("services", NAMESPACE)[lease.id])
    stale["metadata"] = {"name": "l-gone", "labels": stale["metadata"]["labels"]}
    api_request(cluster, "POST", f"/api/v1/namespaces/{NAMESPACE}/services", stale)

    second = await open_kube(cluster, state, settings)
    try:
        assert lease.server_id in second.manager.servers
        assert second.manager.snapshot(lease.id).state is LeaseState.READY
        await second.sync()
        deployments = cluster.objects("deployments", NAMESPACE)
        assert set(deployments) == {f"tms-{lease.server_id}"}
        # Adopted, not recreated.
        assert deployments[f"tms-{lease.server_id}"]["metadata"]["uid"] == before["metadata"]["uid"]
        assert set(cluster.objects("services", NAMESPACE)) == {lease.id}
    finally:
        await second.store.close()


async def test_restart_recreates_a_deleted_server(cluster: Cluster, tmp_path: Path) -> None:
    settings = kube_settings(cluster, tmp_path)
    state = tmp_path / "state.db"
    first = await open_kube(cluster, state, settings)
    lease = await first.manager.acquire(models("add_sub"))
    await first.sync()
    await first.store.close()
    api_request(
        cluster, "DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/tms-{lease.server_id}"
    )

    second = await open_kube(cluster, state, settings)
    try:
        now = second.manager.snapshot(lease.id)
        assert now.state is LeaseState.LOADING
        assert now.server_id != lease.server_id
        await second.sync()
        assert list(cluster.objects("deployments", NAMESPACE)) == [f"tms-{now.server_id}"]
        assert selector_of(cluster.objects("services", NAMESPACE)[lease.id]) == now.server_id
    finally:
        await second.store.close()


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (403, "HTTP 403"),
        (409, "HTTP 409"),
        (422, "HTTP 422"),
        (500, "HTTP 500"),
        (0, "timed out after 1s"),
    ],
)
async def test_api_errors_on_create_fail_the_lease_with_the_reason(
    kube: Kube, status: int, words: str
) -> None:
    kube.cluster.fail("POST", r"/deployments$", status, stall_s=3.0)
    lease = await kube.manager.acquire(models("add_sub"))
    assert lease.state is LeaseState.FAILED
    assert "could not start" in lease.reason
    assert f"creating Deployment tms-{lease.server_id}" in lease.reason
    assert words in lease.reason
    # The daemon goes on: the next lease gets a server.
    again = await kube.manager.acquire(models("add_sub"))
    assert again.state is LeaseState.LOADING


@pytest.mark.parametrize("status", [403, 409, 422, 500, 0])
async def test_api_errors_on_services_become_the_lease_reason(kube: Kube, status: int) -> None:
    kube.cluster.fail("POST", r"/services$", status, stall_s=3.0)
    lease = await kube.manager.acquire(models("add_sub"))
    await kube.sync()
    now = kube.manager.snapshot(lease.id)
    assert now.state is LeaseState.LOADING
    assert now.reason.startswith(f"Service/{lease.id}: Kubernetes API: creating Service")
    # Retried on the next pass; the reason goes once the Service is there.
    await kube.sync()
    assert lease.id in kube.cluster.objects("services", NAMESPACE)
    assert kube.manager.snapshot(lease.id).reason == ""


async def test_list_errors_leave_the_daemon_running(kube: Kube) -> None:
    lease = await kube.manager.acquire(models("add_sub"))
    kube.cluster.fail("GET", r"/pods$", 500)
    kube.cluster.fail("GET", r"/nodes$", 403)
    kube.cluster.fail("GET", r"/services$", 0, stall_s=3.0)
    await kube.sync()
    assert "timed out" in kube.manager.snapshot(lease.id).reason
    await kube.sync()
    assert lease.id in kube.cluster.objects("services", NAMESPACE)


async def test_a_crashing_pod_fails_its_server_and_leases(kube: Kube) -> None:
    lease = await kube.manager.acquire(models("add_sub"))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"tms-{lease.server_id}-abc12",
            "labels": {
                "app.kubernetes.io/managed-by": "tms",
                "tms/kind": "server",
                SERVER_LABEL: lease.server_id,
            },
        },
        "spec": {"containers": [{"name": "tritonserver", "image": "x"}]},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "tritonserver",
                    "ready": False,
                    "restartCount": 0,
                    "image": "x",
                    "imageID": "",
                    "state": {
                        "waiting": {"reason": "ImagePullBackOff", "message": "no such image"}
                    },
                }
            ],
        },
    }
    api_request(kube.cluster, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    await kube.sync()
    await kube.manager.tick()
    now = kube.manager.snapshot(lease.id)
    assert now.state is LeaseState.FAILED
    assert "container tritonserver: ImagePullBackOff: no such image" in now.reason
    assert lease.server_id is not None
    assert kube.manager.servers.get(lease.server_id) is None or (
        kube.manager.servers[lease.server_id].state is not ServerState.RUNNING
    )


async def test_nodes_feed_placement_with_their_gpus(kube: Kube) -> None:
    add_node(
        kube.cluster,
        "gpu-node-1",
        {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"},
        gpus=2,
    )
    await kube.sync()
    (seen,) = kube.backend.nodes
    assert seen.name == "gpu-node-1"
    assert [(g.product, g.total_bytes) for g in seen.gpus] == [
        ("NVIDIA-A100-SXM4-80GB", 80 * GiB)
    ] * 2
    lease = await kube.manager.acquire(models("add_sub"), LeaseOptions(gpus=1, gpu_product="A100"))
    deployment = kube.cluster.objects("deployments", NAMESPACE)[f"tms-{lease.server_id}"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-node-1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


async def test_secrets_of_servers_that_are_gone_are_deleted(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = kube_settings(cluster, tmp_path)
    state = tmp_path / "state.db"
    first = await open_kube(cluster, state, settings)
    lease = await first.manager.acquire(models("add_sub"))
    await first.report(lease)
    await first.sync()
    kept = f"tms-{lease.server_id}-sidecar"
    assert kept in cluster.objects("secrets", NAMESPACE)
    await first.store.close()

    # While the daemon is down: the credential of a server its state knows nothing of (its
    # Deployment deleted by hand, say), and a Secret of someone else's.
    made = cluster.objects("secrets", NAMESPACE)[kept]
    orphan = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "tms-s-orphan-sidecar",
            "namespace": NAMESPACE,
            "labels": {**made["metadata"]["labels"], SERVER_LABEL: "s-orphan"},
        },
        "stringData": {"token": "tmss_s-orphan.x"},
    }
    theirs = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tms-repositories", "namespace": NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": "x"},
    }
    for secret in (orphan, theirs):
        api_request(cluster, "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)

    second = await open_kube(cluster, state, settings)
    try:
        await second.sync()
        assert set(cluster.objects("secrets", NAMESPACE)) == {kept, "tms-repositories"}
        # A server that stops takes its Secret with it, and nothing else.
        await second.manager.release(lease.id)
        assert lease.server_id is not None
        await second.unloaded(lease.server_id)
        second.clock.advance(31)
        await second.manager.tick()
        await second.sync()
        assert set(cluster.objects("secrets", NAMESPACE)) == {"tms-repositories"}
    finally:
        await second.store.close()
