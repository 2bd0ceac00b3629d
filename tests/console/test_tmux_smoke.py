"""`tms console` in a real terminal (tmux): it starts, shows a live lease from a real daemon,
answers keys, and quits on `q`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import example
from tms_core.lease_request import LeaseOptions

# .ci/run installs tmux and sets TMS_REQUIRE_TMUX: there the test fails rather than skips.
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        shutil.which("tmux") is None and not os.environ.get("TMS_REQUIRE_TMUX"),
        reason="tmux is not installed",
    ),
]

TMS = Path(sys.executable).with_name("tms")


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout


def test_console_in_tmux(daemon: Daemon) -> None:
    lease = daemon.client.wait_until_ready(
        next(iter(daemon.client.acquire([example("add_sub")], LeaseOptions(name="smoke")))).id
    )
    session = f"tms-console-{uuid.uuid4().hex[:8]}"
    # COLUMNS and LINES from the test's environment would override the terminal's own size.
    command = f"env -u COLUMNS -u LINES TMS_TARGET={daemon.target} {TMS} console"
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "45", command)
    try:
        screen = lambda: tmux("capture-pane", "-p", "-t", session)  # noqa: E731
        wait_for(lambda: "live at" in screen(), timeout=30, what="the console to go live")
        wait_for(
            lambda: f"{lease.server_id} (smoke)" in screen(),
            timeout=10,
            what="the fleet view's server and lease",
        )

        tmux("send-keys", "-t", session, "l")
        wait_for(lambda: "READY" in screen() and lease.id in screen(), timeout=10, what="leases")
        assert "smoke" in screen() and "add_sub" in screen()

        tmux("send-keys", "-t", session, "e")
        wait_for(lambda: f"lease  {lease.id} READY" in screen(), timeout=10, what="the events")

        tmux("send-keys", "-t", session, "q")
        wait_for(
            lambda: (
                session not in subprocess.run(["tmux", "ls"], capture_output=True, text=True).stdout
            ),
            timeout=10,
            what="the console to quit",
        )
    except BaseException:
        print(screen())
        raise
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
