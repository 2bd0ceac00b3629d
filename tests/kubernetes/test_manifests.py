"""Every object the backend generates and every object the install manifests render are valid
Kubernetes (the official schemas of 1.29 to 1.33, offline, strict), and the daemon's Role grants
exactly what its backend calls."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.kubernetes.conftest import NAMESPACE, GiB, Kube
from tests.kubernetes.monitoring_schema import SCHEMAS as MONITORING
from tests.kubernetes.standin import api_request
from tms_core.backends.kubernetes import API_CALLS
from tms_core.backends.kubernetes_addresses import PodAddress, desired_objects
from tms_core.backends.kubernetes_objects import ServerPlan, server_deployment
from tms_core.backends.kubernetes_secrets import TOKEN_KEY
from tms_core.config import KubernetesSettings
from tms_core.domain import (
    Lease,
    LeaseAutoscale,
    LeaseModel,
    LeaseNameRecord,
    LeaseState,
    Server,
    ServerState,
)
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.repos.settings import Repository, RepositorySettings

VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
MONITORING_DIR = MANIFESTS / "components" / "monitoring"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
KUBECTL = shutil.which("kubectl")


def validate(obj: dict[str, Any], version: str) -> None:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} on {version}"
    if obj.get("apiVersion") == "monitoring.coreos.com/v1":
        try:
            jsonschema.validate(obj, MONITORING[obj["kind"]])
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


SETTINGS = KubernetesSettings(
    labels={"team": "vision"},
    annotations={"owner": "ml@example.com"},
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    model_volume={"persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
)


def generated() -> list[dict[str, Any]]:
    """One of every kind of object the backend makes: CPU, GPU and autoscaled servers, lease
    and name Services (serving and not yet), an autoscaler."""
    cpu = Server(ServerId("s-00000001"), ServerState.RUNNING, "h", 8000, 8001, 8002, "", GiB, 0.0)
    gpu = Server(
        ServerId("s-00000002"),
        ServerState.RUNNING,
        "h",
        8000,
        8001,
        8002,
        "",
        80 * GiB,
        0.0,
        node="gpu-node-1",
        gpus=(0, 1),
    )
    autoscaled = LeaseAutoscale(min_replicas=2, max_replicas=5, target=0.25)

    def lease(lease_id: str, server: Server | None, **extra: Any) -> Lease:
        return Lease(
            id=LeaseId(lease_id),
            name="",
            state=LeaseState.READY if server else LeaseState.PENDING,
            models=[LeaseModel(ModelName("m"), "file:///model-store/m")],
            duration_s=60,
            created_at=0,
            expires_at=60,
            updated_at=0,
            server_id=server.id if server else None,
            **extra,
        )

    leases = {
        LeaseId("l-1"): lease("l-1", cpu),
        LeaseId("l-2"): lease("l-2", gpu, autoscale=autoscaled),
        LeaseId("l-3"): lease("l-3", None),
    }
    names = {"web": LeaseNameRecord("web", LeaseId("l-1"), 8000, 8001, 0.0)}
    servers = {cpu.id: cpu, gpu.id: gpu}
    desired = desired_objects(
        leases,
        names,
        servers,
        namespace=NAMESPACE,
        # The HPA mode, so that its autoscaler is validated too.
        settings=SETTINGS.model_copy(update={"autoscale_mode": "hpa"}),
        owner_uids={gpu.id: "0d4f2c6e-2f0e-4a53-9d0c-5b6a8f1e2d3c"},
    )
    deployments = [
        server_deployment(cpu, ServerPlan("nvcr.io/nvidia/tritonserver:24.10-py3"), **KW),
        server_deployment(gpu, ServerPlan("nvcr.io/nvidia/tritonserver:24.10-py3"), **KW),
        server_deployment(
            gpu,
            ServerPlan("nvcr.io/nvidia/tritonserver:24.10-py3", autoscaled, {"zone": "a"}),
            **KW,
        ),
    ]
    with_repositories = SETTINGS.model_copy(
        update={"repository_secret": "tms-repositories", "model_cache_path": "/var/cache/tms"}
    )
    deployments.append(
        server_deployment(
            cpu,
            ServerPlan("nvcr.io/nvidia/tritonserver:24.10-py3"),
            namespace=NAMESPACE,
            settings=with_repositories,
            repositories=REPOSITORIES,
            triton_args=["--disable-auto-complete-config"],
        )
    )
    # The daemon's own replicas: the autoscaling lease's Service and its name's have no
    # selector, and EndpointSlices list the pods of its serving replicas.
    replica = lease("l-4", cpu, replica_of=LeaseId("l-2"))
    pod = PodAddress(
        cpu.id, "tms-s-00000001-x1", "5b1c9a2e-0f6d-4c1e-8a3b-2d4e6f8a0b1c", "10.0.0.1", True
    )
    spread = desired_objects(
        {**leases, replica.id: replica},
        {**names, "api": LeaseNameRecord("api", LeaseId("l-2"), 8000, 8001, 0.0)},
        servers,
        namespace=NAMESPACE,
        settings=SETTINGS,
        replicas={LeaseId("l-2"): {replica.id: replica}},
        pods={cpu.id: [pod]},
    )
    assert "selector" not in spread.services["l-2"]["spec"]
    assert len(spread.endpoint_slices) == 2
    objects = [
        *deployments,
        *desired.services.values(),
        *desired.autoscalers.values(),
        *spread.services.values(),
        *spread.endpoint_slices.values(),
    ]
    assert len(desired.services) == 4 and len(desired.autoscalers) == 1
    return objects


KW: dict[str, Any] = {"namespace": NAMESPACE, "settings": SETTINGS}

REPOSITORIES = RepositorySettings(
    repositories=[
        Repository(prefix="s3://models/", endpoint_url="http://minio:9000", credentials="minio")
    ],
    secrets_file=Path("/etc/tms/secrets.yaml"),
)


def test_more_triton_arguments_follow_the_ones_tms_sets() -> None:
    server = Server(
        ServerId("s-00000001"), ServerState.RUNNING, "h", 8000, 8001, 8002, "", GiB, 0.0
    )
    manifest = server_deployment(
        server,
        ServerPlan("nvcr.io/nvidia/tritonserver:24.10-py3"),
        triton_args=["--disable-auto-complete-config", "--log-verbose=1"],
        **KW,
    )
    (triton,) = (
        c for c in manifest["spec"]["template"]["spec"]["containers"] if c["name"] == "tritonserver"
    )
    assert triton["args"][0].startswith("--model-repository=")
    assert triton["args"][-2:] == ["--disable-auto-complete-config", "--log-verbose=1"]


def test_sidecars_get_the_repository_secret_and_the_node_cache_never_a_credential() -> None:
    deployments = [o for o in generated() if o["kind"] == "Deployment"]
    pod = deployments[-1]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "sidecar")
    assert {"secretRef": {"name": "tms-repositories", "optional": True}} in sidecar["envFrom"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts["repository-secret"] == "/etc/tms/repositories"
    assert mounts["model-cache"] == "/var/cache/tms/models"
    assert "--cache-dir=/var/cache/tms/models" in sidecar["args"]
    [settings] = [e["value"] for e in sidecar["env"] if e["name"] == "TMS_REPOSITORIES"]
    given = RepositorySettings.model_validate_json(settings)
    # The sidecar reads the Secret's file where the pod mounts it.
    assert given.secrets_file == Path("/etc/tms/repositories/secrets.yaml")
    assert given.repositories[0].credentials == "minio"


@pytest.mark.parametrize("version", VERSIONS)
def test_generated_objects_are_valid(version: str) -> None:
    for obj in generated():
        validate(obj, version)


def test_an_invalid_object_is_caught() -> None:
    # The check can fail: a Deployment with a string for replicas is refused.
    bad = generated()[0]
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)


def kustomize(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with Kustomize 5) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_overlays_are_valid(overlay: str, version: str) -> None:
    objects = kustomize(overlay)
    kinds = {obj["kind"] for obj in objects}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"} <= kinds
    assert {"PersistentVolumeClaim", "Deployment", "Service"} <= kinds
    for obj in objects:
        validate(obj, version)


def test_a_misspelt_monitor_field_is_caught() -> None:
    monitor = yaml.safe_load((MONITORING_DIR / "podmonitor-sidecars.yaml").read_text())
    monitor["spec"]["podMetricsEndpoint"] = monitor["spec"].pop("podMetricsEndpoints")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, MONITORING["PodMonitor"])


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with Kustomize 5) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_is_in_the_daemons_namespace(overlay: str) -> None:
    cluster_wide = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    misplaced = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in kustomize(overlay)
        if o["kind"] not in cluster_wide and o["metadata"].get("namespace") != "tms"
    ]
    assert not misplaced, f"{overlay}: not in namespace tms: {misplaced}"


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with Kustomize 5) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sidecars_reach_a_listener_of_their_own(overlay: str) -> None:
    from tms_core.config import Settings

    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(overlay)}
    settings = Settings(**yaml.safe_load(objects[("ConfigMap", "tms-config")]["data"]["tms.yaml"]))
    sidecar_port = int(settings.daemon.sidecar_listen.rpartition(":")[2])
    assert sidecar_port != int(settings.daemon.listen.rpartition(":")[2])
    # kubernetes.daemon_address (what sidecars dial) is the Service's port to that listener.
    service_name, _, port = settings.kubernetes.daemon_address.rpartition(":")
    service = objects[("Service", service_name)]
    [to_sidecars] = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    [daemon] = objects[("Deployment", "tms")]["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in daemon["ports"]}
    assert named[to_sidecars["targetPort"]] == sidecar_port
    # Where a NetworkPolicy guards the daemon, the server pods may reach that port.
    policy = objects.get(("NetworkPolicy", "tms-api"))
    if policy is not None:
        [rule] = [
            r
            for r in policy["spec"]["ingress"]
            if {"port": sidecar_port, "protocol": "TCP"} in r["ports"]
        ]
        [source] = rule["from"]
        assert source["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": "tms",
            "tms/kind": "server",
        }


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with Kustomize 5) is not installed")
def test_the_monitors_scrape_ports_the_daemon_and_the_sidecars_serve() -> None:
    from tms_core.config import Settings

    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize("prod-monitoring")}
    settings = Settings(**yaml.safe_load(objects[("ConfigMap", "tms-config")]["data"]["tms.yaml"]))
    daemon_pod = objects[("Deployment", "tms")]["spec"]["template"]
    [daemon] = daemon_pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in daemon["ports"]}
    assert settings.daemon.metrics_listen == f"0.0.0.0:{ports['metrics']}"
    # The ServiceMonitor finds the metrics Service, whose port leads to the daemon's.
    monitor = objects[("ServiceMonitor", "tms-daemon")]["spec"]
    service = objects[("Service", "tms-metrics")]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= daemon_pod["metadata"]["labels"].items()
    [endpoint] = monitor["endpoints"]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] == "metrics"
    # The PodMonitor selects the server pods the backend makes, at their sidecar's port.
    pods = objects[("PodMonitor", "tms-sidecars")]["spec"]
    server_pod = generated()[0]["spec"]["template"]
    assert pods["selector"]["matchLabels"].items() <= server_pod["metadata"]["labels"].items()
    sidecar = next(c for c in server_pod["spec"]["containers"] if c["name"] == "sidecar")
    sidecar_ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    [endpoint] = pods["podMetricsEndpoints"]
    assert sidecar_ports[endpoint["port"]] == settings.kubernetes.sidecar_metrics_port
    assert f"--metrics-listen=0.0.0.0:{sidecar_ports[endpoint['port']]}" in sidecar["args"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with Kustomize 5) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemon_runs_alone_with_valid_settings(overlay: str) -> None:
    from tms_core.config import Settings

    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(overlay)}
    deployment = objects[("Deployment", "tms")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    settings = Settings(**yaml.safe_load(objects[("ConfigMap", "tms-config")]["data"]["tms.yaml"]))
    assert settings.daemon.backend == "kubernetes"
    assert str(settings.daemon.state).startswith("/var/lib/tms/")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "tms-state"


@pytest.mark.parametrize("version", VERSIONS)
def test_base_files_are_valid_without_kustomize(version: str) -> None:
    for path in sorted((MANIFESTS / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            validate(doc, version)


def granted() -> set[tuple[str, str, str]]:
    rules = []
    for name in ("role.yaml", "clusterrole.yaml"):
        rules.extend(yaml.safe_load((MANIFESTS / "base" / name).read_text())["rules"])
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_role_grants_exactly_what_the_backend_calls() -> None:
    assert granted() == set(API_CALLS)


async def test_the_backend_makes_no_call_outside_the_role(hpa_kube: Kube) -> None:
    # A session that touches every kind of call: servers, Services, names, an autoscaler,
    # health, nodes, a release and the stop of an idle server.
    kube = hpa_kube
    api_request(
        kube.cluster,
        "POST",
        "/api/v1/nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
    )
    await kube.sync()
    lease = await kube.manager.acquire(
        [ModelRequest("m", "file:///model-store/m", GiB)],
        LeaseOptions(name="web", autoscale=LeaseAutoscale(max_replicas=2)),
    )
    await kube.report(lease)
    await kube.sync()
    other = await kube.manager.acquire([ModelRequest("m", "file:///model-store/m", GiB)])
    await kube.report(other)
    await kube.manager.set_name("web", other.id)
    await kube.sync()
    for held in (lease, other):
        await kube.manager.release(held.id)
        assert held.server_id is not None
        await kube.unloaded(held.server_id)
    await kube.sync()
    kube.clock.advance(31)
    await kube.manager.tick()
    await kube.sync()
    made = set(kube.cluster.calls)
    assert made <= granted(), f"calls the Role does not grant: {sorted(made - granted())}"
    # And the session did exercise most of the Role (EndpointSlices are written for the
    # daemon's own replicas, the next test; the activator's routes change only as leases
    # that may park come and go, tests/kubernetes/test_activator.py).
    slices = {("discovery.k8s.io", "endpointslices", v) for v in ("create", "patch", "delete")}
    slices |= {("", "configmaps", v) for v in ("patch", "delete")}
    # The activator's token Secret is read and written by the daemon at start
    # (tests/kubernetes/test_activator_token.py), not by the backend's session.
    slices |= {("", "secrets", v) for v in ("get", "patch")}
    assert len(made) >= len(granted() - slices) - 1


async def test_replicas_make_no_call_outside_the_role(kube: Kube) -> None:
    lease = await kube.manager.acquire(
        [ModelRequest("m", "file:///model-store/m", GiB)],
        LeaseOptions(name="web", autoscale=LeaseAutoscale(max_replicas=2)),
    )
    await kube.report(lease)
    await kube.sync()
    other = await kube.manager.acquire([ModelRequest("m", "file:///model-store/m", GiB)])
    await kube.report(other)
    await kube.manager.set_name("web", other.id)
    await kube.sync()
    made = set(kube.cluster.calls)
    assert made <= granted(), f"calls the Role does not grant: {sorted(made - granted())}"
    assert {("discovery.k8s.io", "endpointslices", v) for v in ("create", "delete")} <= made


def test_the_daemon_may_read_and_replace_only_the_activators_token_secret() -> None:
    name = KubernetesSettings().activator_token_secret
    rules = yaml.safe_load((MANIFESTS / "base" / "role.yaml").read_text())["rules"]
    for rule in rules:
        if "secrets" in rule["resources"] and {"get", "patch"} & set(rule["verbs"]):
            assert rule["resourceNames"] == [name]
    # What the activator mounts: that Secret, its key `token` as --token-file.
    docs = yaml.safe_load_all((MANIFESTS / "base" / "activator.yaml").read_text())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "token")
    assert volume["secret"]["secretName"] == name
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "token")
    assert f"--token-file={mount['mountPath']}/{TOKEN_KEY}" in container["command"]
    # Replicas sharing a node would all pin to its highest CPU (tms_core/router/cpu.py).
    assert "--cpu=none" in container["command"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with Kustomize 5) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_activator_may_reach_the_port_it_wakes_leases_on(overlay: str) -> None:
    """Where a NetworkPolicy guards the daemon, a rule lets the activator's pods reach the
    API port its `--wake-grpc` names (the Service's target), and no other pod of the cluster."""
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(overlay)}
    activator = objects[("Deployment", "tms-activator")]["spec"]["template"]
    [container] = activator["spec"]["containers"]
    [target] = [a.split("=", 1)[1] for a in container["command"] if a.startswith("--wake-grpc=")]
    service_name, _, port = target.removeprefix("https://").rpartition(":")
    [service_port] = [
        p for p in objects[("Service", service_name)]["spec"]["ports"] if p["port"] == int(port)
    ]
    [daemon] = objects[("Deployment", "tms")]["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in daemon["ports"]}
    container_port = named.get(service_port["targetPort"], service_port["targetPort"])
    policy = objects.get(("NetworkPolicy", "tms-api"))
    if policy is None:
        return
    rules = [
        r
        for r in policy["spec"]["ingress"]
        if {"port": container_port, "protocol": "TCP"} in r.get("ports", [])
    ]
    assert rules, f"no rule lets anything reach port {container_port}"
    labels = activator["metadata"]["labels"]
    assert any(
        all(labels.get(k) == v for k, v in source["podSelector"]["matchLabels"].items())
        for rule in rules
        for source in rule.get("from", [])
        if "podSelector" in source and not source.get("namespaceSelector")
    )
