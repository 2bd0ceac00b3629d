"""The console's keys, mouse and command palette on a fixed fleet (no daemon needed: the
actions that call the daemon are driven end to end in test_console_actions.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from textual.command import CommandList
from textual.widgets import DataTable, Input, TabbedContent

from tests.console import fixed_fleet
from tests.console.conftest import render_text, text_of, until
from tms_console.console.app import TmsConsole
from tms_console.console.render import lease_detail
from tms_core.api import tms_pb2 as pb


def console(clock: list[float] | None = None) -> TmsConsole:
    now = clock or [fixed_fleet.NOW]
    app = TmsConsole("127.0.0.1:1", live=False, clock=lambda: now[0])
    app.fleet.apply_update(fixed_fleet.update())
    return app


def ids(app: TmsConsole) -> list[str]:
    table = app.query_one("#lease-table", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_command_palette_runs_the_consoles_actions() -> None:
    app = console()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"Events log")
        await until(
            pilot,
            lambda: any(c.option_count for c in app.screen.query(CommandList)),
            within=5,
            what="the palette to find it",
        )
        await pilot.press("enter")
        await until(
            pilot,
            lambda: app.query_one("#tabs", TabbedContent).active == "events",
            within=5,
            what="the events view",
        )
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {
            "New lease",
            "Renew lease",
            "Release lease",
            "Point a name",
            "Test inference",
            "Filter leases",
            "Sort leases",
            "Fleet view",
            "Leases view",
            "Events log",
        } <= titles


async def test_mouse_switches_views_and_sorts_by_a_clicked_header() -> None:
    app = console()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.click("Tab#--content-tab-leases")
        assert app.query_one("#tabs", TabbedContent).active == "leases"
        assert ids(app)[:2] == ["ls-c6", "ls-a2"]  # by expiry, soonest first
        table = app.query_one("#lease-table", DataTable)
        name_x = sum(c.get_render_width(table) for c in table.ordered_columns[:1]) + 2
        await pilot.click("#lease-table", offset=(name_x, 1))
        await pilot.pause()
        assert app.sort_column == "name"
        assert ids(app)[:4] == ["ls-a1", "ls-c6", "ls-b4", "ls-a3"]  # chat, classify, embed, vision
        await pilot.click("#lease-table", offset=(name_x, 1))
        await pilot.pause()
        named = [i for i in ids(app) if app.fleet.leases[i].name]
        assert app.sort_reverse and named == ["ls-a3", "ls-b4", "ls-c6", "ls-a1"]
        # Clicking a row shows that lease in the detail pane.
        await pilot.click("#lease-table", offset=(4, 3))
        await pilot.pause()
        assert app.selected == ids(app)[1]
        assert app.selected in text_of(app.query_one("#detail"))  # type: ignore[arg-type]


async def test_filter_and_sort_keys() -> None:
    app = console()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("slash", *"ana")
        assert app.query_one("#filter", Input).has_focus
        assert sorted(ids(app)) == ["ls-a1", "ls-b7"]
        await pilot.press("enter")  # back to the table, the filter kept
        assert app.query_one("#lease-table").has_focus and len(ids(app)) == 2
        await pilot.press("slash", "escape")  # escape leaves the field too
        assert app.query_one("#lease-table").has_focus
        await pilot.press("e")  # and the letter keys work again
        assert app.query_one("#tabs", TabbedContent).active == "events"
        await pilot.press("l")
        app.query_one("#filter", Input).value = ""
        await pilot.pause()
        assert len(ids(app)) == 7
        await pilot.press("s")
        assert app.sort_column == "activity"  # the column after "expires"
        assert ids(app)[0] == "ls-c6"  # used 2s ago: the most recent first


async def test_countdowns_tick_without_events() -> None:
    clock = [fixed_fleet.NOW]
    app = console(clock)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("l")
        table = app.query_one("#lease-table", DataTable)
        assert str(table.get_cell("ls-c6", "expires")) == "42s"
        clock[0] += 30
        await until(
            pilot,
            lambda: str(table.get_cell("ls-c6", "expires")) == "12s",
            within=3,
            what="the countdown",
        )
        clock[0] += 30
        await until(
            pilot,
            lambda: str(table.get_cell("ls-c6", "expires")) == "expired",
            within=3,
            what="expired",
        )


async def test_actions_without_a_lease_say_what_to_do() -> None:
    app = TmsConsole("127.0.0.1:1", live=False)
    async with app.run_test(size=(120, 30)) as pilot:
        for key in ("r", "d", "a", "t"):
            await pilot.press(key)
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert messages.count("Select a lease in the Leases view first (l).") == 4
        assert app.screen is app.screen_stack[0]  # no dialog opened


async def test_an_unforeseen_failure_is_a_notification_not_a_traceback() -> None:
    app = console()

    def renew(lease_id: str, duration_s: float = 0.0) -> object:
        raise RuntimeError(f"boom on {lease_id}")

    app.client.renew = renew  # type: ignore[method-assign, assignment]
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("l", "r")
        await until(pilot, lambda: bool(app._notifications), within=5, what="a notification")
        [note] = list(app._notifications)
        assert (note.title, note.severity) == ("Renew failed", "error")
        assert note.message == "RuntimeError: boom on ls-c6"
        assert app.is_running


async def test_the_console_follows_the_lease_the_form_is_creating() -> None:
    """The form is given the client; each step of the new lease reaches the console (as a
    message) while the form still shows it, and the READY lease is chosen in the table."""

    def calc(state: int, model_state: int) -> pb.Lease:
        return fixed_fleet.lease(
            "ls-f0",
            "calc",
            state,
            "srv-a0",
            "gpu-node-a",
            [0],
            [("add_sub", 64 * 2**20, 0, model_state)],
            expires_in=600,
        )

    go_on = threading.Event()

    def acquire(*args: Any, **kwargs: Any) -> Iterator[pb.Lease]:
        yield calc(pb.LEASE_LOADING, pb.MODEL_LOADING)
        go_on.wait(10)
        yield calc(pb.LEASE_READY, pb.MODEL_READY)

    app = console()
    app.client.acquire = acquire  # type: ignore[method-assign, assignment]
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("n")
        form = app.screen
        form.query_one("#model-0-name", Input).value = "add_sub"
        form.query_one("#model-0-uri", Input).value = "s3://models/add_sub"
        await pilot.press("ctrl+s")
        await until(
            pilot,
            lambda: (
                "LOADING" in text_of(form.query_one("#progress-text"))  # type: ignore[arg-type]
                and "ls-f0" in app.fleet.leases
            ),
            within=5,
            what="the loading lease in the form and the console",
        )
        assert app.screen is form and app.fleet.leases["ls-f0"].state == pb.LEASE_LOADING
        go_on.set()
        await until(pilot, lambda: app.screen is not form, within=5, what="the form to close")
        await pilot.pause()
        table = app.query_one("#lease-table", DataTable)
        assert str(table.get_cell("ls-f0", "state")) == "READY" and app.selected == "ls-f0"
        assert "Lease created" in [n.title for n in app._notifications]


async def test_the_chosen_lease_keeps_the_cursor_when_the_table_is_rebuilt() -> None:
    app = console()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("l")
        app.select_lease("ls-b4")
        await pilot.pause()
        assert app.selected == "ls-b4" and "embed" in text_of(app.query_one("#detail"))  # type: ignore[arg-type]
        await pilot.press("s")  # a new order rebuilds the table
        await pilot.pause()
        table = app.query_one("#lease-table", DataTable)
        assert ids(app)[table.cursor_row] == "ls-b4" and app.selected == "ls-b4"
        await pilot.press("down")  # and the keys still move it
        await pilot.pause()
        assert app.selected == ids(app)[table.cursor_row] != "ls-b4"


def test_the_detail_of_an_autoscaling_lease_names_its_replicas_and_metric() -> None:
    lease = fixed_fleet.leases()[0]
    lease.autoscale.CopyFrom(pb.Autoscale(min_replicas=2, max_replicas=6, target=150))
    lease.endpoints.servers.add(server_id="s-1")
    lease.endpoints.servers.add(server_id="s-2")
    text = render_text(lease_detail(lease, [], fixed_fleet.NOW))
    assert "autoscale 2–6 replicas on nv_inference_queue_duration_ms > 150 per pod (2 now)" in text
    plain = render_text(lease_detail(fixed_fleet.leases()[1], [], fixed_fleet.NOW))
    assert "autoscale" not in plain


async def test_a_timer_that_fires_while_the_console_closes_draws_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shutdown removes the widgets while the timers' tasks still run; a tick that comes as
    the lease table is being removed must not fail the console."""
    app = console()
    seen: list[str | None] = []

    def tick_as_the_table_goes(table: DataTable[object]) -> None:
        if table.id == "lease-table":
            seen.append(app.active_view())
            app.tick()
            app.redraw()

    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("l")
        await until(pilot, lambda: app.active_view() == "leases", within=5, what="the leases")
        monkeypatch.setattr(DataTable, "on_unmount", tick_as_the_table_goes, raising=False)
    assert seen == [None]
