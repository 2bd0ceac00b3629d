"""A standby server with real tritonserver processes: started empty, taken by a cold lease
that then needs only its model load, replaced, and never stopped by the idle stop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import add_sub_http, example
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def servers(daemon: Daemon) -> tuple[list[str], list[str]]:
    """(servers, standby servers) as `tms cluster` lists them."""
    found: list[str] = []
    standby: list[str] = []
    for node in daemon.client.cluster().nodes:
        for resource in [node.cpu, *(g.memory for g in node.gpus)]:
            found.extend(resource.server_ids)
            standby.extend(resource.standby_server_ids)
    return found, standby


def server_states(daemon: Daemon) -> dict[str, list[str]]:
    """Each server's states, in order, from the kept events."""
    states: dict[str, list[str]] = {}
    for event in daemon.client.watch(follow=False):
        if event.kind == "server":
            states.setdefault(event.id, []).append(event.state)
    return states


def test_a_cold_lease_takes_the_standby_server(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("servers:\n  standby: 1\n  idle_grace: 1s\n")
    daemon = make_daemon(f"--config={config}")
    wait_for(
        lambda: (
            len(servers(daemon)[1]) == 1
            and server_states(daemon).get(servers(daemon)[1][0], [])[-1:] == ["RUNNING"]
        ),
        timeout=30,
        what="a standby server RUNNING",
    )
    [standby] = servers(daemon)[1]

    lease = list(daemon.client.acquire([example("add_sub", 64 * 1024**2)], LeaseOptions()))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    # It joined the waiting server: no server was started for it.
    assert lease.server_id == standby
    a = np.array([1, 2, 3, 4], dtype=np.float32)
    total, _ = add_sub_http(lease.endpoints.http, a, a)
    np.testing.assert_allclose(total, a + a)

    # Another server takes its place.
    wait_for(
        lambda: len(servers(daemon)[1]) == 1 and servers(daemon)[1] != [standby],
        timeout=30,
        what="a new standby server",
    )
    [replacement] = servers(daemon)[1]
    wait_for(
        lambda: server_states(daemon).get(replacement, [])[-1:] == ["RUNNING"],
        timeout=30,
        what="the new standby server RUNNING",
    )
    released = daemon.client.release(lease.id)
    assert released.state == pb.LEASE_RELEASED
    # Two empty servers now: one stops after the grace, one stays as the standby.
    wait_for(lambda: len(servers(daemon)[0]) == 1, timeout=30, what="one server to stop")
    assert servers(daemon)[1] == servers(daemon)[0]
