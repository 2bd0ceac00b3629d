"""The Kubernetes objects of servers, as plain manifests (dicts), from the daemon's state.

Pure functions with no client import: the adapter (`kubernetes.py`) sends what these build,
and the tests validate every one of them against the official schemas.

- A server is a Deployment `tms-<server id>` whose pods run `tritonserver` and the sidecar
  over a shared model volume; its sidecar's credential is a Secret of its own.
- The addresses (Services, EndpointSlices) and autoscalers: `kubernetes_addresses`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from tms_core.config import KubernetesSettings
from tms_core.domain import LeaseAutoscale, Server
from tms_core.errors import InvalidArgument
from tms_core.repos.settings import RepositorySettings

MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
MANAGER = "tms"
SERVER_LABEL = "tms/server"
LEASE_LABEL = "tms/lease"
NAME_LABEL = "tms/name"
KIND_LABEL = "tms/kind"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
# Triton's repository and the sidecar's staging beside it share one volume, so the sidecar's
# atomic renames stay on one filesystem.
WORK_DIR = "/tms"
MODEL_DIR = f"{WORK_DIR}/models"
GPU_RESOURCE = "nvidia.com/gpu"

Manifest = dict[str, Any]


IMAGE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


def check_image(image: str) -> None:
    """With this backend the Triton allowlist holds container images."""
    if not IMAGE.match(image):
        raise InvalidArgument(
            "tritonserver",
            f"{image!r} is not a container image reference (such as "
            "nvcr.io/nvidia/tritonserver:24.10-py3); the kubernetes backend runs images",
        )


def check_model_uri(settings: KubernetesSettings) -> Callable[[str, str, str], str | None]:
    """The check of a lease's model URIs: the sidecar in the pod reads `file://` paths on the
    model volume (the daemon cannot look inside it, so the framework is not known here)."""

    def check(field: str, name: str, uri: str) -> str | None:
        parsed = urlparse(uri)
        if parsed.scheme in ("s3", "http", "https"):
            return None  # the sidecars pull it themselves (the presence check is the daemon's)
        path = unquote(parsed.path) if parsed.scheme == "file" else ""
        root = settings.model_volume_path.rstrip("/") + "/"
        if not path.startswith(root) or not settings.model_volume:
            where = (
                f"file://{root}<model>"
                if settings.model_volume
                else "a file:// URI on the model volume (kubernetes.model_volume is not set)"
            )
            raise InvalidArgument(
                f"{field}.uri", f"{uri!r} cannot be read by the servers' sidecars; expected {where}"
            )
        return None

    return check


def deployment_name(server_id: str) -> str:
    return f"tms-{server_id}"


def secret_name(server_id: str) -> str:
    return f"tms-{server_id}-sidecar"


SIDECAR_TOKEN_KEY = "token"


def sidecar_secret(
    server: Server, credential: str, *, namespace: str, settings: KubernetesSettings
) -> Manifest:
    """The server's sidecar credential, good only for that server's reports to the daemon."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(
            secret_name(server.id), namespace, settings, "server", **{SERVER_LABEL: server.id}
        ),
        "type": "Opaque",
        "stringData": {SIDECAR_TOKEN_KEY: credential},
    }


def managed_selector(kind: str) -> str:
    """The label selector that finds every object of `kind` the daemon made."""
    return f"{MANAGED_BY}={MANAGER},{KIND_LABEL}={kind}"


def _labels(settings: KubernetesSettings, kind: str, **extra: str) -> dict[str, str]:
    # The administrator's labels first: ours must win, or objects could not be found again.
    return {
        **settings.labels,
        MANAGED_BY: MANAGER,
        PART_OF: settings.part_of,
        KIND_LABEL: kind,
        **extra,
    }


def object_metadata(
    name: str, namespace: str, settings: KubernetesSettings, kind: str, **extra: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": _labels(settings, kind, **extra),
    }
    if settings.annotations:
        meta["annotations"] = dict(settings.annotations)
    return meta


def quantity(value: float) -> str:
    """A Kubernetes quantity for a plain number (`200`, `0.5` as `500m`)."""
    if value == int(value):
        return str(int(value))
    return f"{math.ceil(value * 1000)}m"


@dataclass(frozen=True)
class ServerPlan:
    """What a server's Deployment needs beyond the server record."""

    image: str
    autoscale: LeaseAutoscale | None = None
    node_selector: Mapping[str, str] | None = None


REPOSITORY_SECRET_DIR = "/etc/tms/repositories"
MODEL_CACHE_DIR = "/var/cache/tms/models"


def server_deployment(
    server: Server,
    plan: ServerPlan,
    *,
    namespace: str,
    settings: KubernetesSettings,
    repositories: RepositorySettings | None = None,
    triton_args: Sequence[str] = (),
) -> Manifest:
    name = deployment_name(server.id)
    gpus = len(server.gpus)
    memory = str(settings.gpu_server_memory if gpus else server.capacity_bytes)
    limits: dict[str, str] = {"cpu": settings.cpu, "memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    node_selector = dict(plan.node_selector or {})
    if server.node and plan.autoscale is None:
        # Placement chose the node (and counted its GPUs there); replicas of an autoscaled
        # server go wherever the scheduler finds room.
        node_selector["kubernetes.io/hostname"] = server.node
    tolerations = [dict(t) for t in settings.tolerations]
    if gpus:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    env = [] if gpus else [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]
    pod_labels = _labels(settings, "server", **{SERVER_LABEL: server.id})
    pod_annotations = {
        **settings.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
    }
    volume_mount = [{"name": "work", "mountPath": WORK_DIR}]
    sidecar_mounts: list[dict[str, Any]] = list(volume_mount)
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    if settings.model_volume:
        # Where file:// model URIs point: the administrator's volume, read-only.
        volumes.append({"name": "model-store", **settings.model_volume})
        sidecar_mounts.append(
            {"name": "model-store", "mountPath": settings.model_volume_path, "readOnly": True}
        )

    sidecar_args: list[str] = []
    sidecar_env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    sidecar_env_from: list[dict[str, Any]] = []
    if settings.model_cache_path:
        # The node's cache, shared by every server pod on it (hard links need it on the same
        # file system as the models, so the model directory falls back to copies).
        volumes.append(
            {
                "name": "model-cache",
                "hostPath": {"path": settings.model_cache_path, "type": "DirectoryOrCreate"},
            }
        )
        sidecar_mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_DIR})
        sidecar_args.append(f"--cache-dir={MODEL_CACHE_DIR}")
    changes: dict[str, Any] = {"cache_dir": None}
    if settings.repository_secret:
        # Credentials only ever come from the Secret, never from this manifest.
        volumes.append(
            {
                "name": "repository-secret",
                "secret": {"secretName": settings.repository_secret, "optional": True},
            }
        )
        sidecar_mounts.append(
            {"name": "repository-secret", "mountPath": REPOSITORY_SECRET_DIR, "readOnly": True}
        )
        sidecar_env_from.append(
            {"secretRef": {"name": settings.repository_secret, "optional": True}}
        )
        changes["secrets_file"] = f"{REPOSITORY_SECRET_DIR}/secrets.yaml"
    if repositories is not None:
        sidecar_env.append(
            {"name": "TMS_REPOSITORIES", "value": repositories.to_sidecar_json(**changes)}
        )

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        }

    triton = {
        "name": "tritonserver",
        "image": plan.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={MODEL_DIR}",
            "--model-control-mode=explicit",
            f"--http-port={HTTP_PORT}",
            f"--grpc-port={GRPC_PORT}",
            f"--metrics-port={METRICS_PORT}",
            "--exit-timeout-secs=5",
            *triton_args,
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": {"requests": dict(limits), "limits": limits},
        # Large images and first loads are slow: the startup probe holds the others off.
        "startupProbe": probe("/v2/health/live", 5, 120),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "readinessProbe": probe("/v2/health/ready", 2, 3),
        "volumeMounts": volume_mount,
    }
    metrics_args: list[str] = []
    metrics_ports: list[dict[str, Any]] = []
    if settings.sidecar_metrics_port:
        # On the pod's address, for the PodMonitor: model names and timings, no secrets.
        metrics_args.append(f"--metrics-listen=0.0.0.0:{settings.sidecar_metrics_port}")
        metrics_ports.append(
            {
                "name": "sidecar-metrics",
                "containerPort": settings.sidecar_metrics_port,
                "protocol": "TCP",
            }
        )
    sidecar = {
        "name": "sidecar",
        "image": settings.sidecar_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "sidecar"],
        "args": [
            f"--daemon={settings.daemon_address}",
            f"--server-id={server.id}",
            f"--triton-grpc=127.0.0.1:{GRPC_PORT}",
            f"--triton-metrics=127.0.0.1:{METRICS_PORT}",
            f"--model-dir={MODEL_DIR}",
            *sidecar_args,
            *metrics_args,
        ],
        **({"ports": metrics_ports} if metrics_ports else {}),
        "env": [
            *sidecar_env,
            {
                "name": "TMS_SIDECAR_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": secret_name(server.id), "key": SIDECAR_TOKEN_KEY}
                },
            },
        ],
        **({"envFrom": sidecar_env_from} if sidecar_env_from else {}),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "1Gi"},
        },
        "volumeMounts": sidecar_mounts,
    }
    pod_spec: dict[str, Any] = {
        "containers": [triton, sidecar],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
        # The sidecar measures each model's memory by its backend processes in /proc.
        "shareProcessNamespace": True,
        "enableServiceLinks": False,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(
            name, namespace, settings, "server", **{SERVER_LABEL: server.id}
        ),
        "spec": {
            "replicas": plan.autoscale.min_replicas if plan.autoscale else 1,
            "selector": {"matchLabels": {MANAGED_BY: MANAGER, SERVER_LABEL: server.id}},
            # A server's GPUs are counted once: never two pods of it during a change.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
