"""Ensembles in a lease, with a real tritonserver: the steps load first and once each, the
ensemble answers through the lease address, and one whose steps are missing or broken fails
saying which."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import Daemon
from tests.integration.helpers import index
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import ModelRequest

pytestmark = pytest.mark.triton

STEP_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

STEP_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

{broken}

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = ({expression}).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""

# Comments and single quotes, as people write them; the steps are found all the same.
ENSEMBLE_CONFIG = """
# double, then add one
name: "pipeline"
platform: 'ensemble'
max_batch_size: 0
input [ { name: "IN", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "double"  # model_name: "not_a_step"
      model_version: -1
      input_map { key: "X" value: "IN" } output_map { key: "Y" value: "twice" } },
    { model_name: 'increment', model_version: -1,
      input_map { key: "X" value: "twice" } output_map { key: "Y" value: "OUT" } }
  ]
}
"""


def step(root: Path, name: str, expression: str, broken: str = "") -> ModelRequest:
    model = root / name
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(STEP_CONFIG.format(name=name))
    (model / "1" / "model.py").write_text(STEP_MODEL.format(expression=expression, broken=broken))
    return ModelRequest(name, model.as_uri(), 0)


def pipeline(root: Path) -> ModelRequest:
    model = root / "pipeline"
    (model / "1").mkdir(parents=True)  # an ensemble's version directory is empty
    (model / "config.pbtxt").write_text(ENSEMBLE_CONFIG)
    return ModelRequest("pipeline", model.as_uri(), 0)


def loads_of(daemon: Daemon, server_id: str, model: str) -> int:
    """How many times the server's Triton started loading `model`, from its own log."""
    log = (daemon.state_dir / "servers" / server_id / "tritonserver.log").read_text()
    return log.count(f'"loading: {model}:1"')


def test_an_ensemble_loads_after_its_steps_once_each_and_answers(
    daemon: Daemon, tmp_path: Path
) -> None:
    # The ensemble first in the lease: the order given does not matter.
    models = [
        pipeline(tmp_path),
        step(tmp_path, "double", "x * 2"),
        step(tmp_path, "increment", "x + 1"),
    ]
    lease = list(daemon.client.acquire(models))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    assert {m.name: m.state for m in lease.models} == {
        "pipeline": pb.MODEL_READY,
        "double": pb.MODEL_READY,
        "increment": pb.MODEL_READY,
    }
    # Each step was loaded once: Triton loads again, with the ensemble, a step still loading
    # or one whose files its own load changed.
    for name in ("double", "increment", "pipeline"):
        assert loads_of(daemon, lease.server_id, name) == 1, name

    x = np.arange(4, dtype=np.float32)
    for protocol, address in (
        (httpclient, lease.endpoints.http),
        (grpcclient, lease.endpoints.grpc),
    ):
        client = protocol.InferenceServerClient(address)
        try:
            given = protocol.InferInput("IN", [4], "FP32")
            given.set_data_from_numpy(x)
            out = client.infer("pipeline", [given]).as_numpy("OUT")
        finally:
            client.close()
        np.testing.assert_allclose(out, x * 2 + 1)

    server = lease.endpoints.servers[0].http
    assert daemon.client.release(lease.id).state == pb.LEASE_RELEASED
    assert not {"pipeline", "double", "increment"} & set(index(server))


def test_an_ensemble_without_its_steps_fails_naming_them(daemon: Daemon, tmp_path: Path) -> None:
    failed = list(daemon.client.acquire([pipeline(tmp_path)]))[-1]
    assert failed.state == pb.LEASE_FAILED
    error = failed.models[0].error
    assert "'double', 'increment'" in error and "add each step to the lease" in error
    assert "pipeline" in failed.reason


def test_an_ensemble_whose_step_fails_says_which(daemon: Daemon, tmp_path: Path) -> None:
    models = [
        pipeline(tmp_path),
        step(tmp_path, "double", "x * 2", broken="raise RuntimeError('no weights here')"),
        step(tmp_path, "increment", "x + 1"),
    ]
    failed = list(daemon.client.acquire(models))[-1]
    assert failed.state == pb.LEASE_FAILED
    by_name = {m.name: m for m in failed.models}
    assert by_name["double"].state == pb.MODEL_FAILED
    assert "no weights here" in by_name["double"].error
    # The lease says why, whether it names the step or the ensemble that waited for it.
    assert "no weights here" in failed.reason
