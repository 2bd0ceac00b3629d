"""Each view of the console at a fixed terminal size, with a fixed fleet at a fixed time.

The SVGs under __snapshots__ were looked at by eye before they were committed; after a
deliberate change, `pytest tests/console/test_snapshots.py --snapshot-update` and look again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select

from tests.console import fixed_fleet
from tms_console import testinfer
from tms_console.console.app import TmsConsole
from tms_console.console.infer import InferPane
from tms_console.feed import LIVE, UNREACHABLE

SIZE = (160, 45)
Snap = Callable[..., bool]


def console(connection: str = LIVE) -> TmsConsole:
    app = TmsConsole("127.0.0.1:30345", live=False, clock=lambda: fixed_fleet.NOW)
    app.fleet.apply_update(fixed_fleet.update())

    def connected() -> None:
        message = "daemon unreachable at 127.0.0.1:30345 (is `tms daemon` running?)"
        app.set_connection(connection, message if connection == UNREACHABLE else app.target)

    app.call_later(connected)
    return app


def test_fleet_view(snap_compare: Snap) -> None:
    assert snap_compare(console(), terminal_size=SIZE)


def test_leases_view_with_a_loading_lease_selected(snap_compare: Snap) -> None:
    # Sorted by expiry, the fifth row is the LOADING lease: its detail shows a progress bar.
    assert snap_compare(console(), press=["l", "down", "down", "down", "down"], terminal_size=SIZE)


def test_leases_filtered_and_sorted_by_name(snap_compare: Snap) -> None:
    async def filter_ready(pilot: Pilot[None]) -> None:
        await pilot.press("slash", *"ready", "enter")
        app = pilot.app
        assert isinstance(app, TmsConsole)
        app.sort_column = "name"
        app._force_redraw()

    assert snap_compare(console(), run_before=filter_ready, terminal_size=SIZE)


def test_events_view(snap_compare: Snap) -> None:
    assert snap_compare(console(), press=["e"], terminal_size=SIZE)


def test_create_form_with_validation_messages(snap_compare: Snap) -> None:
    async def fill(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        form = pilot.app.screen
        form.query_one("#model-0-name", Input).value = "add_sub"
        form.query_one("#model-0-memory", Input).value = "lots"
        form.query_one("#duration", Input).value = "soon"
        await pilot.press("ctrl+s")

    assert snap_compare(console(), run_before=fill, terminal_size=SIZE)


def test_release_confirmation(snap_compare: Snap) -> None:
    assert snap_compare(console(), press=["l", "down", "down", "down", "d"], terminal_size=SIZE)


def test_daemon_unreachable_banner(snap_compare: Snap) -> None:
    assert snap_compare(console(UNREACHABLE), terminal_size=SIZE)


def _infer_ready(latencies_ms: list[float]) -> Callable[[Pilot[None]], Awaitable[None]]:
    """The pane as it is after reading add_sub's signature and sending a few times (what
    Triton answered is given here: the pane's rendering is under test, not Triton)."""

    async def run(pilot: Pilot[None]) -> None:
        await pilot.press("i")
        pane = pilot.app.query_one(InferPane)
        lease, model = (
            pane.query_one("#infer-lease", Select),
            pane.query_one("#infer-model", Select),
        )
        with pane.prevent(Select.Changed):
            lease.value = "ls-a1"
            model.set_options([("llama-8b", "llama-8b")])
            model.value = "llama-8b"
        spec = testinfer.TensorSpec
        signature = testinfer.ModelSignature(
            name="add_sub",
            versions=("1",),
            platform="python",
            inputs=(spec("INPUT0", "FP32", (4,)), spec("INPUT1", "FP32", (4,))),
            outputs=(spec("OUTPUT0", "FP32", (4,)), spec("OUTPUT1", "FP32", (4,))),
        )
        await pane._show_signature(signature)
        pane.query_one("#input-0", Input).value = "1 2 3 4"
        a = np.array([1, 2, 3, 4], dtype=np.float32)
        b = np.array([4, 3, 2, 1], dtype=np.float32)
        for latency in latencies_ms:
            result: Any = testinfer.InferResult(
                model="add_sub",
                protocol="http",
                endpoint="127.0.0.1:40322",
                inputs={"INPUT0": a, "INPUT1": b},
                outputs={"OUTPUT0": a + b, "OUTPUT1": a - b},
                latency_s=latency / 1000,
            )
            pane._show_result(result)
        await pilot.pause()

    return run


def test_test_inference_with_outputs_and_latency_sparkline(snap_compare: Snap) -> None:
    latencies = [0.9, 0.7, 0.65, 1.4, 0.6, 0.62, 0.8, 0.58, 0.61, 2.1, 0.6, 0.59]
    assert snap_compare(console(), run_before=_infer_ready(latencies), terminal_size=SIZE)


@pytest.mark.parametrize("gpus", [64])
def test_fleet_view_with_64_gpus(snap_compare: Snap, gpus: int) -> None:
    app = console()
    update = fixed_fleet.update()
    update.cluster = fixed_fleet.cluster(gpus_per_node=8, nodes=gpus // 8)
    app.fleet.apply_update(update)
    assert snap_compare(app, terminal_size=SIZE)
