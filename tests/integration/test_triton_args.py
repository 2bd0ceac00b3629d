"""`servers.triton_args`: more tritonserver arguments reach every server the daemon starts,
here `--disable-auto-complete-config` with a real tritonserver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Daemon
from tests.integration.helpers import add_sub_http, example
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton

A = np.array([1, 2, 3, 4], dtype=np.float32)


def command_lines() -> list[list[bytes]]:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            lines.append((proc / "cmdline").read_bytes().split(b"\0"))
        except OSError:
            continue
    return lines


def test_more_triton_arguments_reach_the_server(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("servers:\n  triton_args: ['--disable-auto-complete-config']\n")
    daemon = make_daemon(f"--config={config}")
    lease = list(daemon.client.acquire([example("add_sub")]))[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    total, _ = add_sub_http(lease.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)

    repository = f"--model-repository={daemon.state_dir / 'servers' / lease.server_id / 'models'}"
    (command,) = [c for c in command_lines() if repository.encode() in c]
    assert b"--disable-auto-complete-config" in command
    # Triton's own account of its options, at the top of its log.
    log = (daemon.state_dir / "servers" / lease.server_id / "tritonserver.log").read_text()
    (row,) = [line for line in log.splitlines() if line.startswith("| strict_model_config")]
    assert row.split("|")[2].strip() == "1"
