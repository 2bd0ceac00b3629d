"""Measured memory: recorded after a model loads, and used for the next placement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.integration.helpers import example
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton

MiB = 1024**2


def test_measured_memory_is_recorded_and_used_for_placement(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("servers:\n  memory: 100MiB\n  idle_grace: 1s\n")
    daemon = make_daemon(f"--config={config}")

    # First time nothing better is known: blob_classifier under-declares (1 MiB) and joins
    # add_sub (40 MiB declared) on one server: 41 MiB of 100.
    adder = list(daemon.client.acquire([example("add_sub", 40 * MiB)]))[-1]
    blob = list(daemon.client.acquire([example("blob_classifier", 1 * MiB)]))[-1]
    assert blob.state == adder.state == pb.LEASE_READY
    assert blob.server_id == adder.server_id

    # The sidecar measured what the model really takes (its Python-backend stub's memory),
    # and the daemon said it was more than declared.
    measured = daemon.client.status(blob.id).models[0].measured_bytes
    assert measured > 30 * MiB, measured
    warning = None
    for event in daemon.client.watch(replay=True):
        if event.kind == "model" and event.state == "OVER_DECLARED" and event.lease_id == blob.id:
            warning = event
            break
    assert warning is not None and "declared 1.0 MiB" in warning.reason

    daemon.client.release(blob.id)
    daemon.client.release(adder.id)

    # The same declarations again, in the other order: placement now counts what
    # blob_classifier was measured to take, and add_sub no longer fits beside it.
    blob_again = list(daemon.client.acquire([example("blob_classifier", 1 * MiB)]))[-1]
    adder_again = list(daemon.client.acquire([example("add_sub", 40 * MiB)]))[-1]
    assert blob_again.state == adder_again.state == pb.LEASE_READY
    assert blob_again.server_id != adder_again.server_id
    assert blob_again.models[0].measured_bytes >= measured
