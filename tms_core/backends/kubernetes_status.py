"""What the cluster reports, read as the lease manager sees it (pure): nodes as placement's
inventory, pods as a server's health, and whether a Service or autoscaler must be patched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tms_core.backends import kubernetes_objects as objects
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


def differs(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    for key in ("labels", "annotations"):
        have = existing.get("metadata", {}).get(key) or {}
        if any(have.get(k) != v for k, v in (wanted["metadata"].get(key) or {}).items()):
            return True
    have_spec = existing.get("spec") or {}
    return any(have_spec.get(k) != v for k, v in wanted["spec"].items() if k != "clusterIP")


def patch_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in manifest["metadata"].items() if k in ("labels", "annotations")}
    return {"metadata": meta, "spec": manifest["spec"]}
