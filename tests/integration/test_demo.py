"""`tms demo`, the README's first command, end to end: it starts its own daemon, leases the
example models with progress bars, answers through both clients, and cleans up after itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton


def test_the_demo_runs_the_whole_flow_and_leaves_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMS_")}
    env["HOME"] = str(tmp_path)  # no saved targets or tokens of the machine's user
    env["TMPDIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "tms_core.cli.main", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    # The progress bars are drawn (on stderr) and every model reaches READY.
    assert "READY" in run.stderr
    assert "[1. 2. 3. 4.] + [10. 20. 30. 40.] = [11. 22. 33. 44.]" in out
    assert "features [4. 4. 0. 0.] -> class 1" in out
    assert re.search(r"lease l-[0-9a-f]{12} is RELEASED", out)
    assert out.rstrip().endswith("done")
    # Its throw-away directory (state, logs) is gone once it succeeded.
    log = re.search(r"\(log: (\S+)\)", out)
    assert log is not None and not Path(log.group(1)).parent.exists()
    assert not list(tmp_path.glob("tms-demo-*"))
