"""Placement with real Triton on declared GPUs: best fit, GPU binding, constraints, the
cluster view and dry runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Daemon, processes_under
from tests.integration.helpers import copied_model, example
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions, ModelRequest

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


def pytorch_model(root: Path) -> ModelRequest:
    model = root / "torchy"
    shutil.copytree(EXAMPLES / "add_sub", model)
    config = (model / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(
        config.replace('name: "add_sub"', 'name: "torchy"').replace('"python"', '"pytorch"')
    )
    return ModelRequest("torchy", model.as_uri(), GiB)


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
    plan = client.plan([example("add_sub", 1 * GiB)], LeaseOptions(exclusive=True))
    assert plan.decision == "start"
    plan = client.plan([example("add_sub", 1 * GiB)], LeaseOptions(avoid=[big.id]))
    assert plan.decision == "join" and plan.server_id == other.server_id
    plan = client.plan([example("add_sub", 1 * GiB)], LeaseOptions(gpus=0))
    assert plan.decision == "start" and list(plan.gpus) == []
    plan = client.plan([example("add_sub", 20 * GiB)])
    assert plan.decision == "reject" and "the largest GPUs offer 16.0 GiB" in plan.reason
    # A model no server holds (a lease for a held one shares its copy and adds only what it
    # declares beyond it).
    plan = client.plan([copied_model(tmp_path, "adder2", 9 * GiB)])
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


def test_cluster_models_and_dry_run_from_the_cli(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon("--gpus=16GiB,8GiB", "--idle-grace=1s")
    uri = EXAMPLES / "add_sub"
    dry = daemon.cli("lease", "acquire", "-m", f"name=add_sub,uri={uri},memory=6GiB", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # Best fit: the 8 GiB GPU is the tighter one that holds 6 GiB.
    assert dry.stdout.startswith("would start a server on ") and " GPUs 1: " in dry.stdout
    assert daemon.cli("lease", "list", "-z").stdout == ""  # a dry run creates nothing

    made = daemon.cli("lease", "acquire", "-m", f"name=add_sub,uri={uri},memory=6GiB", "-z")
    assert made.returncode == 0, made.stderr
    lease_id = made.stdout.strip()

    cluster = json.loads(daemon.cli("cluster", "-o", "json").stdout)
    (node,) = cluster
    assert node["source"] == "declared"
    assert [g["total_bytes"] for g in node["gpus"]] == [16 * GiB, 8 * GiB]
    assert node["gpus"][1]["declared_bytes"] == 6 * GiB and node["gpus"][1]["leases"] == [lease_id]
    human = daemon.cli("cluster").stdout
    assert "gpu-1 declared GPU" in human and "declared    6.0 GiB" in human

    models = daemon.cli("models").stdout
    assert "add_sub" in models and "python" in models and "6.0 GiB" in models
    rows = [line.split("\t") for line in daemon.cli("models", "-z").stdout.splitlines()]
    assert rows[0][0] == "add_sub" and rows[0][3] == str(6 * GiB) and int(rows[0][4]) > 0

    refused = daemon.cli(
        "lease", "acquire", "-m", f"name=add_sub,uri={uri},memory=40GiB", "--dry-run"
    )
    assert refused.returncode == 0
    assert "would refuse the lease: needs 40.0 GiB of GPU memory" in refused.stdout
