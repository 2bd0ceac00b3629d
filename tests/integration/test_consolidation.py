"""Consolidation with real Triton: an idle lease moves to another running server, loaded
there first, and its stable address answers throughout; the emptied server stops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import add_sub_http, copied_model, example
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton

MiB = 1024**2
A = np.array([1, 2, 3, 4], dtype=np.float32)


def test_an_idle_lease_moves_and_its_address_keeps_answering(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text(
        "servers:\n  memory: 1000MiB\n  idle_grace: 1s\n"
        "placement:\n  consolidate: true\n  consolidate_idle_s: 2s\n"
        "  consolidate_interval_s: 1s\n"
    )
    daemon = make_daemon(f"--config={config}")
    client = daemon.client
    filler = list(client.acquire([copied_model(tmp_path, "filler", 700 * MiB)]))[-1]
    big = list(client.acquire([copied_model(tmp_path, "big", 400 * MiB)]))[-1]
    small = list(client.acquire([example("add_sub", 200 * MiB)]))[-1]
    assert filler.state == big.state == small.state == pb.LEASE_READY
    # Best fit put `small` beside `filler` (300 MiB free there, 600 MiB beside `big`).
    assert small.server_id == filler.server_id != big.server_id
    source, target = small.server_id, big.server_id
    out, _ = add_sub_http(small.endpoints.http, A, A)
    assert out.tolist() == (A + A).tolist()

    # Once `filler` is gone the two servers hold 200 and 400 MiB of 1000: either lease,
    # once idle for 2 s, can join the other's server (which one moves depends on whether
    # `filler` has finished unloading when the pass runs), and one server is left.
    def servers() -> set[str]:
        return {s for node in client.cluster().nodes for s in node.cpu.server_ids}

    assert {source, target} <= servers()
    client.release(filler.id)

    def together() -> bool:
        return client.status(small.id).server_id == client.status(big.id).server_id

    wait_for(together, timeout=60, what="the two leases to share one server")
    kept = client.status(small.id).server_id
    gone = source if kept == target else target
    for lease in (client.status(small.id), client.status(big.id)):
        assert lease.state == pb.LEASE_READY
    # The stable address reaches the model where it is now.
    moved = client.status(small.id)
    assert moved.endpoints.http == small.endpoints.http
    out, _ = add_sub_http(moved.endpoints.http, A, A)
    assert out.tolist() == (A + A).tolist()
    wait_for(
        lambda: gone not in servers(),
        timeout=60,
        what="the emptied server to stop",
    )
