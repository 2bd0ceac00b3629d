"""`tms console`: the fleet at a glance and the leases on it, live from the daemon's Watch
stream, with every action a key away (and in the command palette)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    ProgressBar,
    RichLog,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import Worker, WorkerState

from tms_console.console.forms import ConfirmScreen, CreateLeaseScreen, NameScreen
from tms_console.console.infer import InferPane
from tms_console.console.messages import FeedStatus, FeedUpdate, LeaseChanged
from tms_console.console.render import (
    STATE_STYLES,
    event_line,
    fleet_view,
    lease_detail,
    one_line,
)
from tms_console.feed import LIVE, UNREACHABLE, FleetFeed
from tms_console.fleet import SORT_KEYS, Fleet, LeaseRow, Update, lease_row
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import TmsClient
from tms_core.units import format_duration

COLUMNS = ("id", "name", "state", "models", "owner", "server", "expires", "activity")
WIDTHS = {"models": 22, "activity": 16}  # the rest fit their contents
MIN_REDRAW_GAP_S = 0.05  # at most twenty redraws a second, however many events arrive


class TmsConsole(App[None]):
    CSS_PATH = Path(__file__).with_name("console.tcss")
    TITLE = "TMS console"

    BINDINGS = [
        Binding("f", "show('fleet')", "Fleet"),
        Binding("l", "show('leases')", "Leases"),
        Binding("e", "show('events')", "Events"),
        Binding("i", "show('infer')", "Infer"),
        Binding("n", "create", "New lease"),
        Binding("r", "renew", "Renew"),
        Binding("d", "release", "Release"),
        Binding("a", "name", "Name"),
        Binding("t", "test", "Test inference"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(
        self,
        target: str,
        *,
        live: bool = True,
        clock: Callable[[], float] = time.time,
        retry_s: float = 1.0,
        client_factory: Callable[[str], TmsClient] = TmsClient,
    ) -> None:
        """`client_factory` makes the clients (the command line's token and TLS files)."""
        super().__init__()
        self.target = target
        self.clock = clock
        self.client = client_factory(target)
        self.fleet = Fleet(clock=clock)
        self.live = live
        self.feed = FleetFeed(
            target, self._deliver, self._status, retry_s=retry_s, client_factory=client_factory
        )
        self.connection = "connecting"
        self._down = False  # told the user the daemon is unreachable, not yet that it is back
        self.sort_column = "expires"
        self.sort_reverse = False
        self.filter_text = ""
        self.selected: str | None = None
        self._drawn: dict[str, int] = {}  # view → the fleet version it shows
        self._redraw_timer: Timer | None = None
        self._last_redraw = 0.0
        self._rows: dict[str, tuple[object, ...]] = {}
        self._order: list[str] = []
        self._logged = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="banner")
        with TabbedContent(initial="fleet", id="tabs"):
            with TabPane("Fleet", id="fleet"), VerticalScroll():
                yield Static("", id="fleet-view")
            with TabPane("Leases", id="leases"):
                yield Input(
                    placeholder="filter: id, name, state, model, owner, server", id="filter"
                )
                with Horizontal(id="leases-body"):
                    yield DataTable(id="lease-table", cursor_type="row", zebra_stripes=True)
                    with Vertical(id="detail-pane"):
                        yield Static("", id="detail")
                        yield ProgressBar(id="detail-progress", show_eta=False)
            with TabPane("Events", id="events"):
                yield RichLog(id="event-log", max_lines=2000, wrap=False, markup=False)
            with TabPane("Test inference", id="infer"):
                yield InferPane(self.fleet, id="infer-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"connecting to {self.target}…"
        table = self.query_one("#lease-table", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column, width=WIDTHS.get(column))
        self.query_one("#detail-progress").display = False
        self.set_interval(1.0, self.tick)
        if self.live:
            self.feed.start()
        self.redraw()

    def on_unmount(self) -> None:
        self.feed.stop()
        self.client.close()

    # The feed (its own threads) → the app's thread.

    # post_message is thread-safe and does not wait: the feed never blocks on the app, and
    # stopping the feed while the app shuts down cannot deadlock.
    def _deliver(self, update: Update) -> None:
        self.post_message(FeedUpdate(update))

    def _status(self, state: str, message: str) -> None:
        self.post_message(FeedStatus(state, message))

    @on(FeedUpdate)
    def _feed_update(self, message: FeedUpdate) -> None:
        self.apply_update(message.update)

    @on(FeedStatus)
    def _feed_status(self, message: FeedStatus) -> None:
        self.set_connection(message.state, message.message)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The last guard: an action that failed in a way nobody foresaw is a notification."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(one_line(event.worker.error), title="Failed", severity="error")

    def apply_update(self, update: Update) -> None:
        self.fleet.apply_update(update)
        self.schedule_redraw()

    def fleet_changed(self, lease: pb.Lease) -> None:
        """An action's answer: shown at once, before the event stream says so."""
        self.fleet.apply_lease(lease)
        self.redraw()

    @on(LeaseChanged)
    def _lease_changed(self, message: LeaseChanged) -> None:
        self.fleet_changed(message.lease)

    def schedule_redraw(self) -> None:
        """Redraws soon: at once after a quiet spell, else once the minimum gap has passed,
        so a stream of updates costs one redraw per gap and not one per update."""
        if self._redraw_timer is not None:
            return
        wait = self._last_redraw + MIN_REDRAW_GAP_S - time.monotonic()
        self._redraw_timer = self.set_timer(max(wait, 0.001), self._timed_redraw)

    def _timed_redraw(self) -> None:
        self._redraw_timer = None
        self.redraw()

    def set_connection(self, state: str, message: str) -> None:
        """The title, the banner, and one notification when the daemon goes and one when it
        is back (the feed says `connecting` before each retry: that is not news)."""
        self.connection = state
        banner = self.query_one("#banner", Static)
        if state == LIVE:
            self.sub_title = f"live at {self.target}"
            banner.display = False
            if self._down:
                self._down = False
                self.notify(f"Reconnected to {self.target}.", title="Daemon back")
        elif state == UNREACHABLE:
            self.sub_title = f"daemon unreachable at {self.target}"
            banner.update(Text(f"⚠ {message} — retrying by itself", style="bold"))
            banner.display = True
            if not self._down:
                self._down = True
                self.notify(message, title="Daemon unreachable", severity="error")
        else:
            self.sub_title = f"connecting to {message}…"

    # Drawing

    def active_view(self) -> str | None:
        """The view on screen; None while the app is starting or closing (timers still fire)."""
        if not self.is_running:
            # Shutdown prunes the widgets while the timers' tasks still run: a tick then
            # would find the tabs but not the table inside them.
            return None
        tabs = self.query("#tabs").results(TabbedContent)
        return next((t.active for t in tabs), None)

    def redraw(self) -> None:
        """Brings the views up to the fleet; hidden ones wait until they are shown."""
        self._last_redraw = time.monotonic()
        active = self.active_view()
        if active is None:
            return
        version = self.fleet.version
        views: dict[str, Callable[[], None]] = {
            "fleet": lambda: self.query_one("#fleet-view", Static).update(fleet_view(self.fleet)),
            "leases": self._draw_leases,
            "events": self._draw_events,
            "infer": lambda: self.query_one(InferPane).refresh_leases(self.fleet.ready_leases()),
        }
        for view, draw in views.items():
            if (view == active or view == "infer") and self._drawn.get(view) != version:
                self._drawn[view] = version
                draw()

    def _draw_leases(self) -> None:
        self._draw_table()
        self._draw_detail()

    def tick(self) -> None:
        """Countdowns move every second, events or not."""
        if self.active_view() != "leases":
            return
        now = self.clock()
        table = self.query_one("#lease-table", DataTable)
        for lease_id in self._order:
            lease = self.fleet.leases.get(lease_id)
            if lease is None:
                continue
            row = self._cells(lease_row(lease), now)
            if row != self._rows.get(lease_id):
                for column, (old, new) in zip(
                    COLUMNS, zip(self._rows[lease_id], row, strict=True), strict=True
                ):
                    if old != new:
                        table.update_cell(lease_id, column, new)
                self._rows[lease_id] = row
        self._draw_detail()

    def _cells(self, row: LeaseRow, now: float) -> tuple[object, ...]:
        return (
            row.id,
            row.name,
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            row.models,
            row.owner,
            row.server,
            row.expires_text(now),
            row.activity(now),
        )

    def _draw_table(self) -> None:
        now = self.clock()
        rows = self.fleet.rows(
            sort=self.sort_column, reverse=self.sort_reverse, filter_text=self.filter_text
        )
        table = self.query_one("#lease-table", DataTable)
        order = [row.id for row in rows]
        cells = {row.id: self._cells(row, now) for row in rows}
        if order != self._order:
            selected = self.selected
            table.clear()
            for lease_id in order:
                table.add_row(*cells[lease_id], key=lease_id)
            if selected in cells:
                # Clearing put the cursor on the first row: back to the lease it was on.
                table.move_cursor(row=order.index(selected), animate=False)
        else:
            for lease_id in order:
                old = self._rows.get(lease_id)
                if old == cells[lease_id]:
                    continue
                for column, value, before in zip(COLUMNS, cells[lease_id], old or (), strict=False):
                    if value != before:
                        table.update_cell(lease_id, column, value)
        self._order, self._rows = order, cells
        sort_label = f"{self.sort_column} {'↓' if self.sort_reverse else '↑'}"
        table.border_title = f"{len(order)} of {len(self.fleet.leases)} leases · sort {sort_label}"

    def _draw_detail(self) -> None:
        lease = self.fleet.leases.get(self.selected) if self.selected else None
        events = self.fleet.lease_events(lease.id) if lease else []
        self.query_one("#detail", Static).update(lease_detail(lease, events, self.clock()))
        bar = self.query_one("#detail-progress", ProgressBar)
        loading = lease is not None and lease.state in (pb.LEASE_PENDING, pb.LEASE_LOADING)
        bar.display = loading
        if loading and lease is not None:
            ready = sum(1 for m in lease.models if m.state == pb.MODEL_READY)
            bar.update(total=len(lease.models), progress=ready)

    def _draw_events(self) -> None:
        log = self.query_one("#event-log", RichLog)
        events = list(self.fleet.events)
        new = min(len(events), self.fleet.events_seen - self._logged)
        for event in events[len(events) - new :]:
            log.write(event_line(event))
        self._logged = self.fleet.events_seen

    # Selection and the table

    @on(DataTable.RowHighlighted, "#lease-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected = event.row_key.value if event.row_key else None
        self._draw_detail()

    @on(DataTable.HeaderSelected, "#lease-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self._force_redraw()

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._force_redraw()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#lease-table").focus()

    def _force_redraw(self) -> None:
        self._drawn.clear()
        self.redraw()

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_shown(self) -> None:
        self.redraw()

    # Actions

    def action_show(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        if tab == "leases":
            self.query_one("#lease-table").focus()

    def action_leave_field(self) -> None:
        """Escape from a text field gives the letter keys back to the views and actions."""
        if isinstance(self.focused, Input):
            active = self.active_view()
            if active == "leases":
                self.query_one("#lease-table").focus()
            else:
                self.set_focus(None)

    def action_filter(self) -> None:
        self.action_show("leases")
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        keys = list(SORT_KEYS)
        self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self.sort_reverse = False
        self.notify(f"Leases sorted by {self.sort_column}.", timeout=2)
        self._force_redraw()

    def select_lease(self, lease_id: str) -> None:
        """Puts the table's cursor on the lease (its detail follows)."""
        if lease_id in self._order:
            self.selected = lease_id
            self.query_one("#lease-table", DataTable).move_cursor(
                row=self._order.index(lease_id), animate=False
            )
            self._draw_detail()  # the cursor may have been there already: no event then

    def _chosen(self) -> pb.Lease | None:
        lease = self.fleet.leases.get(self.selected) if self.selected else None
        if lease is None:
            self.notify("Select a lease in the Leases view first (l).", severity="warning")
        return lease

    def action_create(self) -> None:
        def created(lease: pb.Lease | None) -> None:
            if lease is not None:
                self.fleet_changed(lease)
                self.notify(
                    f"Lease {lease.name or lease.id} is READY at {lease.endpoints.http}.",
                    title="Lease created",
                )
                self.action_show("leases")
                self._force_redraw()
                self.select_lease(lease.id)

        self.push_screen(CreateLeaseScreen(self.client), created)

    def action_renew(self) -> None:
        lease = self._chosen()
        if lease is not None:
            self.renew(lease.id)

    @work(thread=True, exit_on_error=False, group="actions")
    def renew(self, lease_id: str) -> None:
        try:
            lease = self.client.renew(lease_id)
        except Exception as exc:  # shown, never a traceback
            self.call_from_thread(
                self.notify, one_line(exc), title="Renew failed", severity="error"
            )
            return
        self.call_from_thread(self.fleet_changed, lease)
        left = format_duration(lease.expires_at - self.clock())
        self.call_from_thread(
            self.notify, f"Lease {lease_id} now expires in {left}.", title="Renewed"
        )

    def action_release(self) -> None:
        lease = self._chosen()
        if lease is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.release(lease.id)

        label = f"{lease.name} ({lease.id})" if lease.name else lease.id
        models = ", ".join(m.name for m in lease.models)
        self.push_screen(
            ConfirmScreen(
                f"Release lease {label}?\nIts models ({models}) will be unloaded.", "Release"
            ),
            answered,
        )

    @work(thread=True, exit_on_error=False, group="actions")
    def release(self, lease_id: str) -> None:
        try:
            lease = self.client.release(lease_id, wait=False)
        except Exception as exc:  # shown, never a traceback
            self.call_from_thread(
                self.notify, one_line(exc), title="Release failed", severity="error"
            )
            return
        self.call_from_thread(self.fleet_changed, lease)
        self.call_from_thread(self.notify, f"Lease {lease_id} is being released.", title="Released")

    def action_name(self) -> None:
        lease = self._chosen()
        if lease is None:
            return

        def pointed(record: pb.LeaseName | None) -> None:
            if record is None:
                return
            if record.next_lease_id:
                message = f"{record.name} will point at {record.next_lease_id} once it is READY."
            else:
                message = f"{record.name} points at {record.lease_id} ({record.endpoints.http})."
            self.notify(message, title="Name set")

        self.push_screen(NameScreen(lease, self.client), pointed)

    def action_test(self) -> None:
        lease = self._chosen()
        if lease is None:
            return
        self.action_show("infer")
        self.query_one(InferPane).choose(lease.id)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in (
            ("Fleet view", "GPU occupancy, servers and leases per node", "show('fleet')"),
            ("Leases view", "The leases table and the selected lease's detail", "show('leases')"),
            ("Events log", "Every lease, model, server, name and pool change", "show('events')"),
            ("Test inference", "Send a test request to the selected READY lease", "test"),
            ("New lease", "Create a lease from a form", "create"),
            ("Renew lease", "Renew the selected lease for its own duration", "renew"),
            ("Release lease", "Release the selected lease (asks first)", "release"),
            ("Point a name", "Create a name or re-point it at the selected lease", "name"),
            ("Filter leases", "Filter the leases table", "filter"),
            ("Sort leases", "Sort the leases table by the next column", "sort"),
        ):
            yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))
