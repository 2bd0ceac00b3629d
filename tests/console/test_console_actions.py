"""The console driven end to end with Textual's Pilot against a real daemon and real Triton:
create → READY shown → test inference shows the right output → renew moves the countdown →
a name points at it → release removes it; and the daemon going away and coming back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import DataTable, Input, Select, Static
from textual.widgets.data_table import CellDoesNotExist

from tests.conftest import EXAMPLES, Daemon
from tests.console.conftest import text_of, until
from tests.integration.helpers import broken_model
from tms_console.console.app import TmsConsole
from tms_console.console.infer import InferPane

pytestmark = pytest.mark.triton


def cell(app: TmsConsole, lease_id: str, column: str) -> str:
    """What the leases table shows; "" while the lease has no row (yet, or any more)."""
    table = app.query_one("#lease-table", DataTable)
    try:
        return str(table.get_cell(lease_id, column))
    except CellDoesNotExist:
        return ""


def seconds(text: str) -> int:
    """`9m58s` → 598."""
    minutes, _, rest = text.partition("m")
    return int(minutes) * 60 + int(rest.rstrip("s"))


async def test_create_infer_renew_name_release(daemon: Daemon) -> None:
    app = TmsConsole(daemon.target, retry_s=0.2)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.connection == "live", within=10, what="the feed")

        # Create, from the form, with one field typed by keys.
        await pilot.press("n")
        form = app.screen
        await pilot.press(*"calc")
        form.query_one("#model-0-name", Input).value = "add_sub"
        form.query_one("#model-0-uri", Input).value = str(EXAMPLES / "add_sub")
        form.query_one("#model-0-memory", Input).value = "64MiB"
        form.query_one("#duration", Input).value = "10m"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is not form, within=60, what="the lease READY")
        [lease_id] = list(app.fleet.leases)
        await until(
            pilot,
            lambda: cell(app, lease_id, "state") == "READY",
            within=10,
            what="READY in the table",
        )
        assert cell(app, lease_id, "name") == "calc" and cell(app, lease_id, "models") == "add_sub"
        detail = text_of(app.query_one("#detail", Static))
        assert "READY" in detail and app.fleet.leases[lease_id].endpoints.http in detail

        # Test inference with typed values: add_sub gives the sum and the difference.
        await pilot.press("t")
        pane = app.query_one(InferPane)
        await until(pilot, lambda: pane.signature is not None, within=15, what="the signature")
        pane.query_one("#input-0", Input).value = "1 2 3 4"
        pane.query_one("#input-1", Input).value = "4 3 2 1"
        await pilot.click("#send")
        await until(pilot, lambda: len(pane.latencies) == 1, within=15, what="the result")
        output = text_of(pane.query_one("#infer-output", Static))
        assert "OUTPUT0" in output and "[5, 5, 5, 5]" in output, output
        assert "OUTPUT1" in output and "[-3, -1, 1, 3]" in output, output
        # Random inputs of the right dtype and shape, and add_sub's answer to them.
        await pilot.click("#randomize")
        assert pane.query_one("#input-0", Input).value == ""
        await pilot.click("#send")
        await until(pilot, lambda: len(pane.latencies) == 2, within=15, what="a second result")
        result = pane.last_result
        assert result is not None and "2 sent" in text_of(pane.query_one("#latency"))
        a, b = result.inputs["INPUT0"], result.inputs["INPUT1"]
        assert a.dtype == np.float32 and a.shape == (4,) and not np.array_equal(a, [1, 2, 3, 4])
        assert np.allclose(result.outputs["OUTPUT0"], a + b)
        assert np.allclose(result.outputs["OUTPUT1"], a - b)

        # The same over gRPC, to the lease's gRPC address; a sparkline of its own.
        pane.query_one("#infer-protocol", Select).value = "grpc"
        await pilot.pause()
        assert pane.latencies == []
        await pilot.click("#send")
        await until(pilot, lambda: len(pane.latencies) == 1, within=15, what="a gRPC result")
        result = pane.last_result
        assert result is not None and result.protocol == "grpc"
        assert result.endpoint == app.fleet.leases[lease_id].endpoints.grpc
        assert np.allclose(
            result.outputs["OUTPUT0"], result.inputs["INPUT0"] + result.inputs["INPUT1"]
        )
        assert "over grpc" in text_of(pane.query_one("#latency"))

        # Renew moves the countdown back up to the lease's duration.
        await pilot.press("l")
        before = app.fleet.leases[lease_id].expires_at
        # The countdown ticks down from 10m00s before a renewal can move it back up.
        await until(
            pilot,
            lambda: seconds(cell(app, lease_id, "expires")) < 600,
            within=5,
            what="the countdown to tick",
        )
        shown_before = seconds(cell(app, lease_id, "expires"))
        await pilot.press("r")
        await until(
            pilot,
            lambda: app.fleet.leases[lease_id].expires_at > before,
            within=10,
            what="the renewal",
        )
        await until(
            pilot,
            lambda: seconds(cell(app, lease_id, "expires")) > shown_before,
            within=5,
            what="the countdown to move",
        )

        # Point a name at it.
        await pilot.press("a")
        app.screen.query_one("#name", Input).value = "calc-live"
        await pilot.press("enter")
        await until(
            pilot,
            lambda: any(n.name == "calc-live" for n in daemon.client.list_names()),
            within=10,
            what="the name",
        )

        # Release, after saying yes.
        await pilot.press("d")
        await pilot.press("y")
        await until(
            pilot,
            lambda: (
                lease_id not in app.fleet.leases
                and not app.query_one("#lease-table", DataTable).row_count
            ),
            within=30,
            what="the released lease to leave the table",
        )


async def test_validation_messages_sit_next_to_the_field(daemon: Daemon) -> None:
    app = TmsConsole(daemon.target, retry_s=0.2)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.connection == "live", within=10, what="the feed")
        await pilot.press("n")
        form = app.screen
        form.query_one("#model-0-name", Input).value = "add_sub"
        form.query_one("#model-0-memory", Input).value = "lots"
        form.query_one("#duration", Input).value = "soon"
        await pilot.press("ctrl+s")
        await pilot.pause()
        text = lambda widget_id: text_of(form.query_one(f"#{widget_id}", Static))  # noqa: E731
        assert "URI is needed" in text("err-models-0-uri")
        assert "'lots' is not a size" in text("err-models-0-memory")
        assert "'soon' is not a duration" in text("err-duration")
        # The daemon's own checks land beside their field too.
        form.query_one("#model-0-uri", Input).value = str(EXAMPLES / "add_sub")
        form.query_one("#model-0-memory", Input).value = ""
        form.query_one("#duration", Input).value = ""
        form.query_one("#name", Input).value = "Not_A_Label"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "DNS-1123" in text("err-name"), within=10, what="the error")
        assert app.screen is form and not daemon.client.list_leases()

        # Autoscaling: checked here first, then by the daemon (a metric it does not scale on).
        form.query_one("#name", Input).value = ""
        form.query_one("#autoscale", Input).value = "3:1"
        form.query_one("#autoscale-target", Input).value = "-5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "'3:1' needs 0 <= MIN <= MAX" in text("err-autoscale")
        assert "'-5' is not a number above 0" in text("err-autoscale-target")
        assert form.query_one("#autoscale", Input).has_focus
        form.query_one("#autoscale", Input).value = "1:3"
        form.query_one("#autoscale-target", Input).value = "150"
        form.query_one("#autoscale-metric", Input).value = "gpu_temperature"
        await pilot.press("ctrl+s")
        await until(
            pilot,
            lambda: "is not one the daemon scales on" in text("err-autoscale-metric"),
            within=10,
            what="the daemon's refusal beside the metric field",
        )
        assert text("err-autoscale-target") == "" and not daemon.client.list_leases()


async def test_unreachable_daemon_shows_and_reconnects_by_itself(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon("--idle-grace=1s")
    app = TmsConsole(daemon.target, retry_s=0.2)
    states: list[str] = []
    shown = app.set_connection

    def set_connection(state: str, message: str) -> None:
        states.append(state)
        shown(state, message)

    app.set_connection = set_connection  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.connection == "live", within=10, what="the feed")
        daemon.stop()
        await until(pilot, lambda: app.connection == "unreachable", within=10, what="the loss")
        banner = app.query_one("#banner", Static)
        assert banner.display and "unreachable" in text_of(banner)
        assert "unreachable" in app.sub_title
        # Several retries fail meanwhile; the user hears of the loss once.
        await until(pilot, lambda: states.count("unreachable") >= 3, within=10, what="retries")
        make_daemon("--idle-grace=1s")
        await until(pilot, lambda: app.connection == "live", within=20, what="the reconnect")
        assert not banner.display and app.sub_title.startswith("live")
        titles = [n.title for n in app._notifications]
        assert titles.count("Daemon unreachable") == 1 and titles.count("Daemon back") == 1


async def test_a_lease_that_fails_to_load_says_why_in_the_form(
    daemon: Daemon, tmp_path: Path
) -> None:
    broken = broken_model(tmp_path / "repo")
    app = TmsConsole(daemon.target, retry_s=0.2)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.connection == "live", within=10, what="the feed")
        await pilot.press("n")
        form = app.screen
        form.query_one("#model-0-name", Input).value = broken.name
        form.query_one("#model-0-uri", Input).value = broken.uri
        await pilot.press("ctrl+s")
        await until(
            pilot,
            lambda: "weights are corrupt" in text_of(form.query_one("#err-form", Static)),
            within=60,
            what="the failure in the form",
        )
        assert app.screen is form and not form.sending
        # Textual delivers a notification as a message: it shows a moment after the form's text.
        await until(
            pilot,
            lambda: any(n.title == "Lease failed" for n in app._notifications),
            within=5,
            what="the notification",
        )
        notes = [n for n in app._notifications if n.title == "Lease failed"]
        assert "weights are corrupt" in notes[0].message
        # The failed lease has ended: it is not in the table.
        await pilot.press("escape")
        await until(pilot, lambda: not app.fleet.leases, within=10, what="no live lease")
