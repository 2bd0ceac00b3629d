"""Leases tied to a real IPython kernel: released when the kernel shuts down, unless kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from tests.conftest import Daemon, wait_for
from tests.jupyter.conftest import ADD_SUB, KERNEL_NAME
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton


def _run(client: object, code: str) -> None:
    reply = client.execute_interactive(code, timeout=90)  # type: ignore[attr-defined]
    assert reply["content"]["status"] == "ok", reply["content"]


def test_kernel_shutdown_releases_its_leases_but_not_kept_ones(
    daemon: Daemon, jupyter_env: Path
) -> None:
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel()
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        _run(client, "%load_ext tms_console")
        _run(client, f"%config TmsMagics.target = {daemon.target!r}")
        model = f"name=add_sub,uri={ADD_SUB},memory=64MiB"
        _run(client, f"tied = %tms acquire -m {model}")
        _run(client, f"kept = %tms acquire -m {model} --keep")
        _run(client, f"%%tms lease --keep\nmodels:\n  - name: add_sub\n    uri: {ADD_SUB}\n")
    finally:
        client.stop_channels()
    leases = {lease.id: lease for lease in daemon.client.list_leases()}
    assert len(leases) == 3 and all(x.state == pb.LEASE_READY for x in leases.values())

    km.shutdown_kernel(now=False)  # what Jupyter does when a notebook's kernel is shut down
    assert not km.is_alive()

    def states() -> list[int]:
        return sorted(daemon.client.status(lease_id).state for lease_id in leases)

    # One lease was tied to the kernel; the two kept ones outlive it.
    wait_for(
        lambda: states() == sorted([pb.LEASE_RELEASED, pb.LEASE_READY, pb.LEASE_READY]),
        timeout=30,
        what="the kernel's lease to be released",
    )
    for lease_id in leases:
        daemon.client.release(lease_id)
