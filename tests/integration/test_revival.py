"""Revival with real Triton: a server whose `tritonserver` or sidecar is SIGKILLed comes back
and its leases answer again at the same addresses, with nothing done by their holders; a
model that crashes Triton on every load is failed after the documented number of tries."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import add_sub_http, copied_model, example
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions, ModelRequest

pytestmark = pytest.mark.triton

A = np.array([1, 2, 3, 4], dtype=np.float32)


def revival_config(tmp_path: Path, *, max_restarts: int = 3) -> str:
    config = tmp_path / "tms.yaml"
    config.write_text(
        f"servers:\n  max_restarts: {max_restarts}\n  restart_backoff: 0.2s\n  idle_grace: 1s\n"
    )
    return f"--config={config}"


def lease_events(daemon: Daemon, lease_id: str) -> list[tuple[str, str]]:
    return [
        (e.state, e.reason)
        for e in daemon.client.watch(follow=False)
        if e.kind == "lease" and e.id == lease_id
    ]


def answers(address: str) -> bool:
    try:
        total, _ = add_sub_http(address, A, A)
    except Exception:  # any failure to answer is a "no"
        return False
    return bool(np.allclose(total, A + A))


def ready_named_lease(daemon: Daemon) -> pb.Lease:
    *_, lease = daemon.client.acquire([example("add_sub")], LeaseOptions(name="adder"))
    assert lease.state == pb.LEASE_READY and answers(lease.endpoints.http)
    return lease


def test_a_killed_tritonserver_comes_back_and_its_lease_answers_again(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(revival_config(tmp_path))
    lease = ready_named_lease(daemon)
    [name] = daemon.client.list_names()
    server_http = lease.endpoints.servers[0].http
    os.kill(_triton_pid(daemon, lease), signal.SIGKILL)

    # No action by the holder: the lease goes LOADING (saying why), then READY again.
    wait_for(
        lambda: [s for s, _ in lease_events(daemon, lease.id)].count("READY") == 2,
        timeout=60,
        what="the lease to be READY again",
    )
    events = lease_events(daemon, lease.id)
    loading = [r for s, r in events if s == "LOADING" and r]
    assert loading, events
    assert loading[0].startswith("server restarting after tritonserver exited")
    assert "(restart 1 of 3)" in loading[0]
    revived = daemon.client.status(lease.id)
    assert revived.state == pb.LEASE_READY and revived.server_id == lease.server_id
    # Same lease and name addresses; the server itself listens on new ports.
    assert revived.endpoints.http == lease.endpoints.http
    assert revived.endpoints.servers[0].http != server_http
    wait_for(lambda: answers(lease.endpoints.http), timeout=10, what="the lease address")
    wait_for(lambda: answers(name.endpoints.http), timeout=10, what="the name address")
    daemon.client.release(lease.id)


def _triton_pid(daemon: Daemon, lease: pb.Lease) -> int:
    return _pid_of(daemon, lease, "tritonserver")


def _pid_of(daemon: Daemon, lease: pb.Lease, what: str) -> int:
    """The pid of the lease's server's `tritonserver` or `sidecar`, from its command line
    (0: none runs)."""
    server_dir = str(daemon.state_dir / "servers" / lease.server_id)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if what == "tritonserver" and "--model-repository" in cmdline and server_dir in cmdline:
            return int(entry.name)
        if (
            what == "sidecar"
            and "sidecar" in cmdline
            and f"--server-id={lease.server_id}" in (cmdline.replace("\0", " "))
        ):
            return int(entry.name)
    return 0  # none (yet)


def test_a_killed_sidecar_is_replaced_while_the_lease_serves_on(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(revival_config(tmp_path))
    lease = ready_named_lease(daemon)
    old = _pid_of(daemon, lease, "sidecar")
    assert old
    os.kill(old, signal.SIGKILL)
    wait_for(
        lambda: _pid_of(daemon, lease, "sidecar") not in (0, old),
        timeout=30,
        what="a new sidecar",
    )
    assert daemon.client.status(lease.id).state == pb.LEASE_READY
    assert answers(lease.endpoints.http)
    # The new sidecar does the sidecar's work: a second lease loads, a release unloads.
    *_, second = daemon.client.acquire([copied_model(tmp_path, "add_sub_2", 0)])
    assert second.state == pb.LEASE_READY and second.server_id == lease.server_id
    assert daemon.client.release(second.id).state == pb.LEASE_RELEASED
    assert daemon.client.status(lease.id).state == pb.LEASE_READY


def crashing_model(root: Path) -> ModelRequest:
    """A Python-backend model whose initialize() SIGKILLs its tritonserver: every load
    crashes the server."""
    request = copied_model(root, "crasher", 0)
    model = root / "crasher"
    (model / "1" / "model.py").write_text(
        "import os, signal\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    return request


def test_a_crash_looping_model_is_failed_with_the_crash_history(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(revival_config(tmp_path, max_restarts=1))
    started = time.monotonic()
    *_, lease = daemon.client.acquire([crashing_model(tmp_path)], LeaseOptions(duration_s=600))
    assert lease.state == pb.LEASE_FAILED, lease
    # Its server was restarted once, then it went elsewhere once, and crashed there too.
    assert " crashed 2 times: " in lease.reason and "; before that server " in lease.reason
    assert lease.reason.count("tritonserver exited") == 4, lease.reason
    states = [s for s, _ in lease_events(daemon, lease.id)]
    assert states.count("PENDING") == 2 and states[-1] == "FAILED"
    assert time.monotonic() - started < 120
