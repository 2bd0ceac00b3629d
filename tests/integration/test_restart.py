"""A daemon started again on the same state file keeps its leases and accounts for servers."""

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


def test_graceful_restart_lists_leases_and_reloads_them(make_daemon: Callable[..., Daemon]) -> None:
    first = make_daemon()
    ready = list(
        first.client.acquire([example("add_sub")], LeaseOptions(name="kept", duration_s=600))
    )[-1]
    released = list(first.client.acquire([example("add_sub")]))[-1]
    first.client.release(released.id)
    assert first.stop() == 0
    # A graceful stop stops the servers it started.
    assert not processes_under(first.state_dir / "servers")

    second = make_daemon()
    leases = {lease.id: lease for lease in second.client.list_leases(include_ended=True)}
    assert set(leases) == {ready.id, released.id}
    assert leases[released.id].state == pb.LEASE_RELEASED
    assert leases[ready.id].name == "kept"
    assert leases[ready.id].expires_at == pytest.approx(ready.expires_at)
    # The live lease is placed again on a new server and serves again.
    again = second.client.wait_until_ready(ready.id)
    assert again.state == pb.LEASE_READY
    total, _ = add_sub_http(again.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)


def test_sigkill_then_restart_adopts_running_servers(make_daemon: Callable[..., Daemon]) -> None:
    first = make_daemon()
    lease = list(first.client.acquire([example("add_sub")], LeaseOptions(duration_s=600)))[-1]
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # Inference does not go through the daemon: the lease's address (the router) keeps
    # answering while the daemon is down.
    total, _ = add_sub_http(lease.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)

    second = make_daemon()
    adopted = second.client.status(lease.id)
    assert adopted.state == pb.LEASE_READY
    assert adopted.endpoints.http == lease.endpoints.http
    # The adopted server still obeys: releasing unloads its model.
    assert second.client.release(lease.id).state == pb.LEASE_RELEASED
    assert "add_sub" not in index(lease.endpoints.servers[0].http)


def test_leave_serving_keeps_servers_for_the_next_daemon(
    make_daemon: Callable[..., Daemon],
) -> None:
    first = make_daemon("--leave-serving")
    lease = list(first.client.acquire([example("add_sub")], LeaseOptions(duration_s=600)))[-1]
    assert first.stop() == 0
    assert index(lease.endpoints.servers[0].http) == {"add_sub": "READY"}

    second = make_daemon()
    assert second.client.status(lease.id).endpoints.http == lease.endpoints.http
    second.stop()
    # Without --leave-serving, the second daemon's shutdown stops what it adopted.
    wait_for(
        lambda: not processes_under(second.state_dir / "servers"),
        timeout=15,
        what="the adopted server to stop with the daemon",
    )
