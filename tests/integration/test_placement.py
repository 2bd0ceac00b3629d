"""Placement with real Triton on declared GPUs: best fit, GPU binding, constraints, the
cluster view and dry runs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Daemon, processes_under
from tests.integration.helpers import example
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ModelArg

pytestmark = pytest.mark.triton

GiB = 1024**3


def visible_devices(daemon: Daemon, server_http: str) -> str:
    """CUDA_VISIBLE_DEVICES of the tritonserver serving `server_http`."""
    port = server_http.rpartition(":")[2]
    for pid in processes_under(daemon.state_dir / "servers"):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if "tritonserver" in cmdline and f"--http-port={port}" in cmdline:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            for entry in environ:
                if entry.startswith(b"CUDA_VISIBLE_DEVICES="):
                    return entry.split(b"=", 1)[1].decode()
            return ""
    raise AssertionError(f"no tritonserver serves {server_http}")


def pytorch_model(root: Path) -> ModelArg:
    model = root / "torchy"
    shutil.copytree(EXAMPLES / "add_sub", model)
    config = (model / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(
        config.replace('name: "add_sub"', 'name: "torchy"').replace('"python"', '"pytorch"')
    )
    return ModelArg("torchy", model.as_uri(), GiB)


def test_gpu_placement_end_to_end(make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = make_daemon("--gpus=2x16GiB", "--idle-grace=1s")
    client = daemon.client

    big = list(client.acquire([example("add_sub", 10 * GiB)]))[-1]
    assert big.state == pb.LEASE_READY and big.gpus == 1
    assert list(big.server_gpus) == [0]
    # The server sees only its GPU.
    assert visible_devices(daemon, big.endpoints.servers[0].http) == "0"

    # 8 GiB no longer fits beside 10 GiB on a 16 GiB GPU: a server on the other GPU.
    other = list(client.acquire([example("blob_classifier", 8 * GiB)]))[-1]
    assert list(other.server_gpus) == [1] and other.server_id != big.server_id
    assert visible_devices(daemon, other.endpoints.servers[0].http) == "1"

    # 4 GiB fits both; best fit takes the GPU it fills most tightly (6 GiB free on gpu-0).
    plan = client.plan([example("add_sub", 4 * GiB)])
    assert plan.decision == "join" and plan.server_id == big.server_id

    # Constraints: exclusive starts its own server; avoid keeps away from a lease.
    plan = client.plan([example("add_sub", 1 * GiB)], exclusive=True)
    assert plan.decision == "start"
    plan = client.plan([example("add_sub", 1 * GiB)], avoid=[big.id])
    assert plan.decision == "join" and plan.server_id == other.server_id
    plan = client.plan([example("add_sub", 1 * GiB)], gpus=0)
    assert plan.decision == "start" and list(plan.gpus) == []
    plan = client.plan([example("add_sub", 20 * GiB)])
    assert plan.decision == "reject" and "the largest GPUs offer 16.0 GiB" in plan.reason
    plan = client.plan([example("blob_classifier", 9 * GiB)])
    assert plan.decision == "wait"
    assert plan.reason.startswith("needs 9.0 GiB GPU memory; largest free is 8.0 GiB on ")
    assert plan.reason.endswith("/gpu-1")

    # Framework isolation: a PyTorch model never joins the Python models' servers, and a
    # lease may not mix it with them.
    torchy = pytorch_model(tmp_path)
    plan = client.plan([torchy])
    assert plan.decision in ("start", "wait") and plan.server_id == ""
    plan = client.plan([torchy, example("add_sub")])
    assert plan.decision == "reject" and "pytorch must not share a server" in plan.reason

    # The cluster view accounts what each GPU holds.
    (node,) = client.cluster().nodes
    assert node.source == "declared"
    gpu0, gpu1 = node.gpus
    assert gpu0.memory.total_bytes == 16 * GiB
    assert gpu0.memory.declared_bytes == 10 * GiB and list(gpu0.memory.server_ids) == [
        big.server_id
    ]
    assert gpu1.memory.declared_bytes == 8 * GiB and list(gpu1.memory.lease_ids) == [other.id]
    assert gpu0.memory.measured_bytes > 0  # the sidecar measured add_sub's stub
    models = {m.name: m for m in client.models().models}
    assert models["add_sub"].declared_bytes == 10 * GiB
    assert models["add_sub"].framework == "python"
    assert models["blob_classifier"].measured_bytes > 0

    # Dry runs changed nothing.
    assert {lease.id for lease in client.list_leases()} == {big.id, other.id}
