"""Parking at zero with real tritonserver processes: an idle lease parks and its server stops;
the first request to its address, HTTP or gRPC through an unmodified tritonclient, is held
while the lease wakes and is then served; a wake that cannot be placed answers the held
request with the reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import add_sub_grpc, add_sub_http, copied_model, example
from tms_core.api import tms_pb2 as pb
from tms_core.domain import LeaseAutoscale
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton

PARKS = LeaseOptions(autoscale=LeaseAutoscale(min_replicas=0, max_replicas=1, park_after_s=1.0))
A = np.array([1, 2, 3, 4], dtype=np.float32)


def running_servers(daemon: Daemon) -> list[str]:
    return [
        server_id
        for node in daemon.client.cluster().nodes
        for resource in [node.cpu, *(g.memory for g in node.gpus)]
        for server_id in resource.server_ids
    ]


def parked(daemon: Daemon, lease_id: str) -> pb.Lease:
    wait_for(
        lambda: daemon.client.status(lease_id).state == pb.LEASE_PARKED,
        timeout=30,
        what="the lease to park",
    )
    return daemon.client.status(lease_id)


def test_a_parked_lease_wakes_on_its_first_http_and_grpc_request(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("servers:\n  idle_grace: 1s\n")
    daemon = make_daemon(f"--config={config}")
    lease = list(daemon.client.acquire([example("add_sub", 64 * 1024**2)], PARKS))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    http, grpc = lease.endpoints.http, lease.endpoints.grpc

    for call in (add_sub_http, add_sub_grpc):
        before = parked(daemon, lease.id)
        assert before.reason == "no inference for 1s"
        # Its addresses stay; its server stops once idle, as any empty server.
        assert (before.endpoints.http, before.endpoints.grpc) == (http, grpc)
        wait_for(lambda: not running_servers(daemon), timeout=30, what="the server to stop")
        total, diff = call(http if call is add_sub_http else grpc, A, A)
        np.testing.assert_allclose(total, A + A)
        np.testing.assert_allclose(diff, A - A)
        after = daemon.client.status(lease.id)
        assert after.id == lease.id and after.state == pb.LEASE_READY
        assert after.reason.startswith("woke in ") and after.wake_s > 0

    states = [
        (e.state, e.reason)
        for e in daemon.client.watch(follow=False)
        if e.kind == "lease" and e.id == lease.id
    ]
    assert [s for s, _ in states].count("PARKED") == 2
    assert ("PENDING", f"waking: a connection to port {http.rpartition(':')[2]}") in states
    daemon.client.release(lease.id)


def test_a_wake_that_cannot_be_placed_answers_the_held_requests_with_why(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("servers:\n  memory: 1GiB\n  max_servers: 1\n  idle_grace: 1s\n")
    daemon = make_daemon(f"--config={config}")
    lease = list(daemon.client.acquire([example("add_sub", 512 * 1024**2)], PARKS))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    parked(daemon, lease.id)
    # The one server there may be is taken by a lease that leaves no room.
    filler = copied_model(tmp_path / "models", "filler", 1024**3)
    other = list(daemon.client.acquire([filler], LeaseOptions()))[-1]
    assert other.state == pb.LEASE_READY, other.reason

    with pytest.raises(InferenceServerException) as http_error:
        add_sub_http(lease.endpoints.http, A, A)
    assert "wake failed: " in str(http_error.value)
    with pytest.raises(InferenceServerException) as grpc_error:
        add_sub_grpc(lease.endpoints.grpc, A, A)
    assert "wake failed: " in str(grpc_error.value)
    assert "StatusCode.UNAVAILABLE" in str(grpc_error.value)
    after = daemon.client.status(lease.id)
    assert after.state == pb.LEASE_PARKED and after.reason.startswith("wake failed: ")

    # Room again: the next request wakes it and is served.
    daemon.client.release(other.id)
    total, _ = add_sub_grpc(lease.endpoints.grpc, A, A)
    np.testing.assert_allclose(total, A + A)
    daemon.client.release(lease.id)
