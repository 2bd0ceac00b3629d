"""A lease end to end with real tritonserver processes: acquire, infer, release, idle stop."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import Daemon, processes_under, wait_for
from tests.integration.helpers import (
    add_sub_grpc,
    add_sub_http,
    broken_model,
    example,
    index,
    refuses,
)
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def test_acquire_infer_release_and_idle_stop(daemon: Daemon) -> None:
    updates = list(
        daemon.client.acquire([example("add_sub", 64 * 1024**2)], LeaseOptions(duration_s=600))
    )
    states = [u.state for u in updates]
    assert states[-1] == pb.LEASE_READY, updates[-1].reason
    assert pb.LEASE_LOADING in states
    lease = updates[-1]
    assert lease.models[0].state == pb.MODEL_READY and lease.models[0].load_s > 0

    a = np.array([1, 2, 3, 4], dtype=np.float32)
    b = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    direct = lease.endpoints.servers[0]
    assert direct.http != lease.endpoints.http  # the lease's own address is the router's
    for call, endpoint in (
        (add_sub_http, lease.endpoints.http),
        (add_sub_grpc, lease.endpoints.grpc),
        (add_sub_http, direct.http),
        (add_sub_grpc, direct.grpc),
    ):
        total, diff = call(endpoint, a, b)
        np.testing.assert_allclose(total, a + b)
        np.testing.assert_allclose(diff, a - b)
    assert index(direct.http) == {"add_sub": "READY"}

    released = daemon.client.release(lease.id)
    assert released.state == pb.LEASE_RELEASED
    # Released means unloaded: the model is gone from the repository index, not just idle.
    assert "add_sub" not in index(direct.http)

    # With no lease left the server stops after its idle grace (1 s here).
    wait_for(lambda: refuses(direct.http), timeout=15, what="the idle server to stop")
    wait_for(
        lambda: not processes_under(daemon.state_dir / "servers"),
        timeout=10,
        what="tritonserver and sidecar processes to exit",
    )
    assert daemon.client.status(lease.id).state == pb.LEASE_RELEASED


def test_two_leases_share_a_server_with_room(daemon: Daemon) -> None:
    first = list(daemon.client.acquire([example("add_sub", 1024**2)]))[-1]
    second = list(daemon.client.acquire([example("blob_classifier", 1024**2)]))[-1]
    assert first.state == second.state == pb.LEASE_READY
    assert first.server_id == second.server_id
    assert first.endpoints.servers[0].http == second.endpoints.servers[0].http

    client = grpcclient.InferenceServerClient(second.endpoints.grpc)
    features = np.array([[4, 4, 0, 0]], dtype=np.float32)
    request = grpcclient.InferInput("features", [1, 4], "FP32")
    request.set_data_from_numpy(features)
    result = client.infer("blob_classifier", [request])
    client.close()
    assert result.as_numpy("class_index").tolist() == [1]

    daemon.client.release(first.id)
    # Releasing one lease leaves the other's model serving.
    assert index(second.endpoints.servers[0].http) == {"blob_classifier": "READY"}


def test_failed_model_fails_the_whole_lease(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    holder = list(daemon.client.acquire([example("add_sub")]))[-1]
    assert holder.state == pb.LEASE_READY

    updates = list(
        daemon.client.acquire([example("blob_classifier"), broken_model(tmp_path / "repo")])
    )
    failed = updates[-1]
    assert failed.state == pb.LEASE_FAILED
    assert "broken" in failed.reason and "weights are corrupt" in failed.reason
    by_name = {m.name: m for m in failed.models}
    assert by_name["broken"].state == pb.MODEL_FAILED
    assert "weights are corrupt" in by_name["broken"].error
    assert failed.server_id == holder.server_id

    # All or nothing: the lease's good model is unloaded again, the other lease is untouched.
    wait_for(
        lambda: set(index(holder.endpoints.servers[0].http)) == {"add_sub"},
        timeout=15,
        what="the failed lease's models to leave the server",
    )
    assert index(holder.endpoints.servers[0].http) == {"add_sub": "READY"}
    assert daemon.client.status(holder.id).state == pb.LEASE_READY
