"""The reclaim check: a server whose unload does not give memory back is marked, takes no new
lease, and is recycled as soon as it is empty."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Daemon, wait_for
from tests.integration.helpers import example, refuses
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import ModelRequest

pytestmark = pytest.mark.triton


def leaky_model(root: Path) -> ModelRequest:
    """add_sub, except that unloading it leaves a process (and its memory) behind."""
    model = root / "leaky"
    shutil.copytree(EXAMPLES / "add_sub", model)
    config = model / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "add_sub"', 'name: "leaky"'))
    code = (model / "1" / "model.py").read_text()
    code += (
        "\n\n    def finalize(self):\n"
        "        import os, time\n"
        "        if os.fork() == 0:  # a child that outlives the model, as a leak would\n"
        "            time.sleep(600)\n"
        "            os._exit(0)\n"
    )
    (model / "1" / "model.py").write_text(code)
    return ModelRequest("leaky", model.as_uri())


def test_a_leaking_server_is_avoided_then_recycled(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon("--idle-grace=60s")
    client = daemon.client
    leaky = list(client.acquire([leaky_model(tmp_path)]))[-1]
    kept = list(client.acquire([example("add_sub")]))[-1]
    assert leaky.state == kept.state == pb.LEASE_READY
    assert leaky.server_id == kept.server_id
    server_http = kept.endpoints.servers[0].http

    assert client.release(leaky.id).state == pb.LEASE_RELEASED
    leaking = None
    for event in client.watch(replay=True):
        if event.kind == "server" and event.state == "LEAKING":
            leaking = event
            break
    assert leaking is not None and leaking.server_id == kept.server_id
    assert "leaky still holds" in leaking.reason

    # New leases no longer join it, though it has room.
    plan = client.plan([example("blob_classifier")])
    assert plan.decision == "start"

    # Once empty it is recycled at once, not after the 60 s idle grace.
    client.release(kept.id)
    wait_for(lambda: refuses(server_http), timeout=15, what="the leaking server to be recycled")
    stopped = [
        e
        for e in client.watch(replay=True, follow=False)
        if e.kind == "server" and e.id == kept.server_id and e.state == "STOPPING"
    ]
    assert stopped and stopped[-1].reason.startswith("recycled: leaky still holds")
