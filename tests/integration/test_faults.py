"""The daemon killed with SIGKILL at the worst moments, then started again on its state."""

from __future__ import annotations

import signal
from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import Daemon, processes_under, wait_for
from tests.integration.helpers import add_sub_http, example, index
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton

A = np.array([1, 2, 3, 4], dtype=np.float32)
ENDED = (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED)


def tritonservers(daemon: Daemon) -> set[int]:
    from pathlib import Path

    return {
        pid
        for pid in processes_under(daemon.state_dir / "servers")
        if "tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        and "--model-repository"
        in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    }


def assert_consistent(daemon: Daemon) -> None:
    """Nothing loaded that no lease holds, and no tritonserver beyond the live servers."""
    live = [lease for lease in daemon.client.list_leases() if lease.state not in ENDED]
    held: dict[str, set[str]] = {}
    addresses: dict[str, str] = {}
    for lease in live:
        wait_for(
            lambda lease=lease: daemon.client.status(lease.id).state == pb.LEASE_READY,
            timeout=30,
            what=f"lease {lease.id} to settle READY",
        )
        lease = daemon.client.status(lease.id)
        held.setdefault(lease.server_id, set()).update(m.name for m in lease.models)
        addresses[lease.server_id] = lease.endpoints.servers[0].http
    for server_id, models in held.items():
        wait_for(
            lambda server_id=server_id, models=models: (
                {n for n, s in index(addresses[server_id]).items() if s == "READY"} == models
            ),
            timeout=30,
            what=f"server {server_id} to hold exactly {sorted(models)}",
        )
        assert set(index(addresses[server_id])) == models, "a stale model directory is left"
    wait_for(
        lambda: len(tritonservers(daemon)) <= len(held) + 1,
        timeout=30,
        what="no more tritonservers than live servers (plus one idling)",
    )


def test_sigkill_during_acquire(make_daemon: Callable[..., Daemon]) -> None:
    first = make_daemon("--idle-grace=1s")
    updates = first.client.acquire([example("add_sub")], LeaseOptions(duration_s=600))
    started = next(updates)
    assert started.state in (pb.LEASE_PENDING, pb.LEASE_LOADING)
    first.stop(signal.SIGKILL)  # while Triton is loading the model

    second = make_daemon("--idle-grace=1s")
    lease = second.client.wait_until_ready(started.id)
    assert lease.state == pb.LEASE_READY
    total, _ = add_sub_http(lease.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)
    assert_consistent(second)
    second.client.release(lease.id)
    wait_for(lambda: not tritonservers(second), timeout=20, what="the idle server to stop")


def test_sigkill_during_release(make_daemon: Callable[..., Daemon]) -> None:
    first = make_daemon("--idle-grace=1s")
    *_, kept = first.client.acquire([example("blob_classifier")], LeaseOptions(duration_s=600))
    going = list(first.client.acquire([example("add_sub")], LeaseOptions(duration_s=600)))[-1]
    assert going.server_id == kept.server_id
    releasing = first.client.release(going.id, wait=False)
    assert releasing.state == pb.LEASE_RELEASING
    first.stop(signal.SIGKILL)  # while the sidecar unloads add_sub

    second = make_daemon("--idle-grace=1s")
    *_, ended = second.client.follow(going.id)
    assert ended.state == pb.LEASE_RELEASED
    assert second.client.status(kept.id).state == pb.LEASE_READY
    assert_consistent(second)
    assert set(index(kept.endpoints.servers[0].http)) == {"blob_classifier"}


def test_sigkill_while_idle_keeps_leases_and_expiry(make_daemon: Callable[..., Daemon]) -> None:
    first = make_daemon("--idle-grace=1s")
    lease = list(
        first.client.acquire([example("add_sub")], LeaseOptions(name="steady", duration_s=600))
    )[-1]
    servers_before = tritonservers(first)
    first.stop(signal.SIGKILL)
    # Clients keep working with no daemon at all.
    total, _ = add_sub_http(lease.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)

    second = make_daemon("--idle-grace=1s")
    after = second.client.status(lease.id)
    assert after.state == pb.LEASE_READY
    assert after.expires_at == pytest.approx(lease.expires_at)
    assert after.endpoints.http == lease.endpoints.http
    assert after.name == "steady"
    assert tritonservers(second) == servers_before  # adopted, not restarted
    assert_consistent(second)
