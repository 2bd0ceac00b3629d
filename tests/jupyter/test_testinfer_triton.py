"""Test inference through a real lease on a real Triton, over both protocols."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import Daemon
from tests.integration.helpers import example
from tms_console.testinfer import TestInferError, read_signature, run_test_inference
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def test_signature_typed_and_random_inference_on_add_sub(daemon: Daemon) -> None:
    lease = daemon.client.wait_until_ready(
        list(
            daemon.client.acquire([example("add_sub", 64 * 1024**2)], LeaseOptions(duration_s=600))
        )[-1].id
    )
    assert lease.state == pb.LEASE_READY, lease.reason

    for protocol in ("http", "grpc"):
        endpoint = lease.endpoints.http if protocol == "http" else lease.endpoints.grpc
        signature = read_signature(endpoint, "add_sub", protocol)
        assert [s.describe() for s in signature.inputs] == ["INPUT0 FP32[4]", "INPUT1 FP32[4]"]
        assert [s.name for s in signature.outputs] == ["OUTPUT0", "OUTPUT1"]

        result = run_test_inference(
            lease,
            values={"INPUT0": "1, 2, 3, 4", "INPUT1": [0.5, 0.5, 0.5, 0.5]},
            protocol=protocol,
        )
        np.testing.assert_allclose(result.outputs["OUTPUT0"], [1.5, 2.5, 3.5, 4.5])
        np.testing.assert_allclose(result.outputs["OUTPUT1"], [0.5, 1.5, 2.5, 3.5])
        assert result.protocol == protocol and result.endpoint == endpoint
        assert 0 < result.latency_s < 30

        # Random inputs: the outputs are still the model's arithmetic on what was sent.
        result = run_test_inference(lease, "add_sub", protocol=protocol)
        a, b = result.inputs["INPUT0"], result.inputs["INPUT1"]
        np.testing.assert_allclose(result.outputs["OUTPUT0"], a + b, rtol=1e-6)
        np.testing.assert_allclose(result.outputs["OUTPUT1"], a - b, rtol=1e-6)

    with pytest.raises(TestInferError, match=r"INPUT1: expected shape INPUT1 FP32\[4\], got \[2\]"):
        run_test_inference(lease, values={"INPUT1": "1, 2"})

    daemon.client.release(lease.id)
    released = daemon.client.status(lease.id)
    with pytest.raises(TestInferError, match="is RELEASED, not READY"):
        run_test_inference(released)
