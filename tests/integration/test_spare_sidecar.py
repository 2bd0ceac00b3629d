"""The spare sidecar (`local.spare_sidecar`): started ahead, handed to the next server, gone
with its daemon however the daemon ends."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, processes_under, wait_for
from tests.integration.helpers import example, refuses
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
    except OSError:
        return []


def spares(daemon: Daemon) -> list[int]:
    """The daemon's waiting spare sidecars (their command line names their log)."""
    return [pid for pid in processes_under(daemon.state_dir) if "--spare" in argv(pid)]


def sidecar_of(daemon: Daemon, server_id: str) -> list[int]:
    return [
        pid
        for pid in processes_under(daemon.state_dir)
        if "sidecar" in argv(pid) and f"--server-id={server_id}" in argv(pid)
    ]


def test_a_new_server_takes_the_waiting_sidecar_and_another_waits(daemon: Daemon) -> None:
    wait_for(lambda: len(spares(daemon)) == 1, timeout=10, what="a spare sidecar")
    (spare,) = spares(daemon)

    lease = list(daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=600)))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason

    # The spare is the server's sidecar now, and reads as one started for it.
    assert sidecar_of(daemon, lease.server_id) == [spare]
    command = argv(spare)
    assert command[1:3] == ["-m", "sidecar"] and "--spare" not in command
    assert f"--model-dir={daemon.state_dir}/servers/{lease.server_id}/models" in command
    log = (daemon.state_dir / "servers" / lease.server_id / "sidecar.log").read_text()
    assert "loaded add_sub" in log
    wait_for(lambda: len(spares(daemon)) == 1, timeout=10, what="the next spare")
    assert spares(daemon) != [spare]

    # Its server stops as any other: the handed sidecar goes with it, the spare stays.
    daemon.client.release(lease.id)
    direct = lease.endpoints.servers[0]
    wait_for(lambda: refuses(direct.http), timeout=15, what="the idle server to stop")
    wait_for(
        lambda: not processes_under(daemon.state_dir / "servers"),
        timeout=10,
        what="the server's processes to exit",
    )
    assert len(spares(daemon)) == 1


def test_a_killed_daemons_spare_exits_by_itself(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon()
    wait_for(lambda: len(spares(daemon)) == 1, timeout=10, what="a spare sidecar")
    daemon.stop(signal.SIGKILL)
    # Its stdin was the daemon's pipe: end of input, and it goes.
    wait_for(lambda: not spares(daemon), timeout=15, what="the spare to exit")
    # The next daemon (which adopts the router, left running) keeps one of its own.
    second = make_daemon()
    wait_for(lambda: len(spares(second)) == 1, timeout=10, what="the next daemon's spare")


def test_with_the_setting_off_no_spare_waits_and_servers_start_as_before(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("local:\n  spare_sidecar: false\n")
    daemon = make_daemon(f"--config={config}")
    lease = list(daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=600)))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    assert len(sidecar_of(daemon, lease.server_id)) == 1
    assert spares(daemon) == []
