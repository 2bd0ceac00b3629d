"""The pure parts of the Kubernetes backend: reading nodes and pods, image and URI checks."""

from __future__ import annotations

from typing import Any

import pytest

from tms_core.backends.kubernetes_objects import check_image, check_model_uri, quantity
from tms_core.backends.kubernetes_status import node_from_manifest, pod_problem
from tms_core.config import KubernetesSettings
from tms_core.errors import InvalidArgument

GiB = 1024**3


def node(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "n1",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "zone": "a"},
        },
        "spec": status.pop("spec", {}),
        "status": {
            "allocatable": {"nvidia.com/gpu": "4", "memory": "1000Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
            **status,
        },
    }


def test_a_gpu_node() -> None:
    seen = node_from_manifest(node())
    assert seen is not None
    assert seen.name == "n1" and seen.labels["zone"] == "a"
    assert seen.host_memory == 1000 * GiB
    assert [g.index for g in seen.gpus] == [0, 1, 2, 3]
    assert {g.product for g in seen.gpus} == {"NVIDIA-H100-80GB-HBM3"}
    # Without GPU Feature Discovery's memory label the GPUs have no known memory.
    assert {g.total_bytes for g in seen.gpus} == {0}


def test_nodes_that_take_no_pods_are_left_out() -> None:
    assert node_from_manifest(node(spec={"unschedulable": True})) is None
    assert node_from_manifest(node(conditions=[{"type": "Ready", "status": "False"}])) is None


def waiting(reason: str, phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "sidecar", "state": {"waiting": {"reason": reason}}}],
        },
    }


def test_pod_problems() -> None:
    assert pod_problem(waiting("CrashLoopBackOff")) == "pod p, container sidecar: CrashLoopBackOff"
    # Still trying: a first failed pull is retried, a container being created is fine.
    assert pod_problem(waiting("ErrImagePull")) is None
    assert pod_problem(waiting("ContainerCreating")) is None
    failed = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted"}}
    assert pod_problem(failed) == "pod p failed: Evicted"


def test_quantities() -> None:
    assert quantity(200) == "200"
    assert quantity(0.5) == "500m"
    assert quantity(2.0001) == "2001m"


@pytest.mark.parametrize(
    "image",
    [
        "nvcr.io/nvidia/tritonserver:24.10-py3",
        "tritonserver",
        "localhost:5000/team/triton:1",
        "registry.example.com/triton@sha256:" + "a" * 64,
    ],
)
def test_images(image: str) -> None:
    check_image(image)


@pytest.mark.parametrize("image", ["/opt/tritonserver/bin/tritonserver", "Triton:Latest", ""])
def test_not_images(image: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^tritonserver: .* is not a container image"):
        check_image(image)


def test_model_uris() -> None:
    with_volume = KubernetesSettings(model_volume={"emptyDir": {}})
    check = check_model_uri(with_volume)
    assert check("models[0]", "m", "file:///model-store/m") is None
    with pytest.raises(InvalidArgument, match=r"models\[0\]\.uri: .* file:///model-store/<model>"):
        check("models[0]", "m", "file:///elsewhere/m")
    without = check_model_uri(KubernetesSettings())
    with pytest.raises(InvalidArgument, match=r"kubernetes\.model_volume is not set"):
        without("models[1]", "m", "file:///model-store/m")
