"""What the cluster reports, read as the lease manager sees it (pure): nodes as placement's
inventory, pods as a server's health and as endpoints, and whether a Service, EndpointSlice
or autoscaler must be patched."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tms_core.backends import kubernetes_addresses as addresses
from tms_core.backends import kubernetes_objects as objects
from tms_core.ids import ServerId
from tms_core.inventory import Gpu, Node
from tms_core.units import parse_size

# Containers waiting for one of these will not get better by waiting longer (a first failed
# pull, ErrImagePull, is retried by the kubelet: only its back-off counts).
STUCK = {
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
}


def node_from_manifest(node: Mapping[str, Any]) -> Node | None:
    """A schedulable, ready node as placement sees it: GPUs from the device plugin's
    allocatable `nvidia.com/gpu` and GPU Feature Discovery's product and memory labels."""
    meta, spec, status = node.get("metadata", {}), node.get("spec", {}), node.get("status", {})
    if spec.get("unschedulable"):
        return None
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    if conditions.get("Ready", "True") != "True":
        return None
    labels = dict(meta.get("labels") or {})
    allocatable = status.get("allocatable") or {}
    try:
        count = int(allocatable.get(objects.GPU_RESOURCE, "0"))
    except ValueError:
        count = 0
    memory_mib = labels.get("nvidia.com/gpu.memory", "0")
    gpu_bytes = int(memory_mib) * 1024**2 if memory_mib.isdigit() else 0
    product = labels.get("nvidia.com/gpu.product", "NVIDIA GPU")
    try:
        host_memory = parse_size(str(allocatable.get("memory", "0")).replace("i", "iB"))
    except ValueError:
        host_memory = 0
    return Node(
        name=str(meta.get("name", "")),
        host_memory=host_memory,
        gpus=tuple(Gpu(index=i, product=product, total_bytes=gpu_bytes) for i in range(count)),
        labels=labels,
        source="kubernetes",
    )


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a server's pod will not serve, or None while it may."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status", {})
    if status.get("phase") == "Failed":
        return f"pod {name} failed: {status.get('reason') or status.get('message') or 'Failed'}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return f"pod {name}, container {container.get('name')}: {waiting['reason']}{detail}"
    return None


def pod_address(pod: Mapping[str, Any]) -> addresses.PodAddress | None:
    """A server's pod as its lease's EndpointSlice lists it; None before it has an address."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    server_id = (meta.get("labels") or {}).get(objects.SERVER_LABEL)
    ip = status.get("podIP")
    if not server_id or not ip:
        return None
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return addresses.PodAddress(
        server_id=ServerId(server_id),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        ip=str(ip),
        ready=conditions.get("Ready") == "True",
        terminating=bool(meta.get("deletionTimestamp")),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
    )


# What the daemon writes of each kind (beyond labels and annotations): a Service's spec, an
# EndpointSlice's top-level fields (it has no spec).
_SLICE_FIELDS = ("addressType", "endpoints", "ports")


def _content(manifest: Mapping[str, Any]) -> dict[str, Any]:
    if manifest.get("kind") == "ConfigMap":
        return {"data": manifest.get("data") or {}}
    if manifest.get("kind") == "EndpointSlice":
        return {k: manifest.get(k) for k in _SLICE_FIELDS}
    return dict(manifest.get("spec") or {})


def differs(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    for key in ("labels", "annotations"):
        have = existing.get("metadata", {}).get(key) or {}
        if any(have.get(k) != v for k, v in (wanted["metadata"].get(key) or {}).items()):
            return True
    want, have = _content(wanted), _content(existing)
    if wanted.get("kind") == "Service" and "selector" not in want and have.get("selector"):
        return True  # a name now pointing at a lease with replicas: its selector must go
    return any(have.get(k) != v for k, v in want.items() if k != "clusterIP")


def patch_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch bringing an object to `manifest` (a null deletes a field)."""
    meta = {k: v for k, v in manifest["metadata"].items() if k in ("labels", "annotations")}
    if manifest.get("kind") in ("EndpointSlice", "ConfigMap"):
        return {"metadata": meta, **_content(manifest)}
    spec = dict(manifest["spec"])
    if manifest.get("kind") == "Service":
        spec.setdefault("selector", None)
    return {"metadata": meta, "spec": spec}


class KubernetesApiError(OSError):
    """A Kubernetes API call that failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, action: str, status: int, message: str) -> None:
        self.action, self.status = action, status
        code = f"HTTP {status}" if status else "no answer"
        super().__init__(f"Kubernetes API: {action} failed ({code}): {message}")


def api_message(exc: Any) -> str:
    """The message of the API's answer to a failed call (the client's ApiException)."""
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "no message")
