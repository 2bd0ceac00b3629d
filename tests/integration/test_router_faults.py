"""The router under faults, with real Triton: connections to a lease whose `tritonserver`
died wait and are served once it is READY again; a killed router is replaced on the same
addresses; inference through lease and name addresses never fails while the daemon is
SIGKILLed and started again, and a lease whose expiry passed meanwhile is EXPIRED."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import Traffic, example
from tests.integration.test_revival import (
    _pid_of,
    _triton_pid,
    answers,
    ready_named_lease,
    revival_config,
)
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def port_closed(address: str) -> bool:
    """Whether nothing accepts TCP connections at `address` any more."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return True
    return False


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True  # gone, or reaped between the two looks
    return stat.split(") ", 1)[1].startswith("Z")


def test_new_connections_to_a_restarting_lease_wait_and_are_served(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(revival_config(tmp_path))
    lease = ready_named_lease(daemon)
    [name] = daemon.client.list_names()
    triton = _triton_pid(daemon, lease)
    sidecar = _pid_of(daemon, lease, "sidecar")
    os.kill(triton, signal.SIGKILL)
    wait_for(lambda: gone(triton), timeout=10, what="tritonserver to die")
    # The leader shows as a zombie while its other threads still exit, holding the sockets:
    # a connection then would reach the dying server, not the crashed one's successor.
    old_http = lease.endpoints.servers[0].http
    wait_for(lambda: port_closed(old_http), timeout=10, what="the dead server's port to close")

    # Every call from here opens a new connection after the crash: none may be refused.
    with Traffic(
        [lease.endpoints.http, name.endpoints.http], [lease.endpoints.grpc, name.endpoints.grpc]
    ) as traffic:
        wait_for(
            lambda: (
                daemon.client.status(lease.id).state == pb.LEASE_READY
                and daemon.client.status(lease.id).endpoints.servers[0].http
                != lease.endpoints.servers[0].http
            ),
            timeout=60,
            what="the lease READY on the restarted server",
        )
        answered = traffic.answered
        wait_for(lambda: traffic.answered >= answered + 8, timeout=30, what="more answers")
    assert traffic.failures == []
    assert "holding a connection" in (daemon.state_dir / "router.log").read_text()
    # Only Triton was started again: the sidecar that outlived it loaded the models there.
    assert _pid_of(daemon, lease, "sidecar") == sidecar


def _router_pid(daemon: Daemon) -> int:
    routes = str(daemon.state_dir / "routes.json")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "tms_core.router" in cmdline and routes in cmdline and not gone(int(entry.name)):
            return int(entry.name)
    return 0


def test_a_killed_router_is_started_again_on_the_same_addresses(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(revival_config(tmp_path))
    lease = ready_named_lease(daemon)
    [name] = daemon.client.list_names()
    old = _router_pid(daemon)
    assert old
    os.kill(old, signal.SIGKILL)
    wait_for(
        lambda: any(
            e.kind == "router" and e.state == "RESTARTED" for e in daemon.client.watch(follow=False)
        ),
        timeout=30,
        what="a router RESTARTED event",
    )
    assert _router_pid(daemon) not in (0, old)
    wait_for(lambda: answers(lease.endpoints.http), timeout=10, what="the lease address")
    assert answers(name.endpoints.http)
    # The daemon routes through the new router: a new lease gets addresses that answer.
    *_, second = daemon.client.acquire([example("add_sub")])
    assert second.state == pb.LEASE_READY and answers(second.endpoints.http)


def test_inference_flows_while_the_daemon_is_killed_and_started_again(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    first = make_daemon(revival_config(tmp_path))
    lease = ready_named_lease(first)
    [name] = first.client.list_names()
    *_, short = first.client.acquire([example("add_sub")], LeaseOptions(duration_s=2))
    assert short.state == pb.LEASE_READY
    with Traffic(
        [lease.endpoints.http, name.endpoints.http], [lease.endpoints.grpc, name.endpoints.grpc]
    ) as traffic:
        wait_for(lambda: traffic.answered >= 4, timeout=30, what="traffic to flow")
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        # Down for longer than the short lease had left: it expires during the outage.
        down_at = traffic.answered
        wait_for(
            lambda: traffic.answered >= down_at + 8 and time.time() > short.expires_at,
            timeout=30,
            what="answers while the daemon is down, past the short lease's expiry",
        )
        second = make_daemon(revival_config(tmp_path))
        back_at = traffic.answered
        wait_for(lambda: traffic.answered >= back_at + 8, timeout=30, what="answers after")
    assert traffic.failures == []
    assert second.client.status(lease.id).state == pb.LEASE_READY
    # Its expiry passed while no daemon ran: EXPIRED at start-up, as the running daemon would.
    ended = second.client.status(short.id)
    assert ended.state == pb.LEASE_EXPIRED
    assert answers(lease.endpoints.http) and answers(name.endpoints.http)
