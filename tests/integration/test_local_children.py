"""No process the local backend started outlives the daemon's shutdown.

A server whose start a cancelled task began is never recorded, so its stop is never asked:
`LocalBackend.kill_children`, the daemon's last step at shutdown, kills what is left. Here a
real tritonserver and sidecar are started and then forgotten, as such a start leaves them.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tms_core.backends.local import LocalBackend
from tms_core.ids import ServerId
from tms_core.triton.locate import locate


def group_members(pgid: int) -> list[int]:
    """Processes in process group `pgid` (a zombie not yet reaped counts as gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and int(stat[2]) == pgid:
            members.append(int(entry.name))
    return members


async def test_processes_left_by_an_unrecorded_start_are_killed_with_their_groups(
    tmp_path: Path,
) -> None:
    backend = LocalBackend(
        install=locate(None, None, work_dir=tmp_path),
        work_dir=tmp_path / "servers",
        # No daemon listens there: the sidecar keeps retrying, as a live process would.
        daemon_address="127.0.0.1:9",
        sidecar_credential=lambda server_id: "not-a-token",
    )
    server = backend.new_server(ServerId("s-forgotten"), capacity_bytes=1 << 30, now=0.0)
    await backend.start(server)
    try:
        assert server.pid and server.sidecar_pid
        assert group_members(server.pid) and group_members(server.sidecar_pid)

        killed = backend.kill_children()

        assert sorted(killed) == sorted([server.pid, server.sidecar_pid])
        # SIGKILL and the reaping are done when kill_children returns; the kernel may take a
        # moment more to tear down a group member the leader started.
        deadline = time.monotonic() + 10
        while group_members(server.pid) or group_members(server.sidecar_pid):
            assert time.monotonic() < deadline, "a killed group still has members"
            await asyncio.sleep(0.05)
        assert backend.kill_children() == []  # nothing left to kill the second time
    finally:
        for pid in (server.pid, server.sidecar_pid):
            if pid:
                try:
                    os.killpg(pid, 9)
                except ProcessLookupError:
                    pass
