"""`%tms dashboard`: GPU occupancy, the live leases table, and create / renew / release.

The fleet model is `tms_console.fleet.Fleet`, fed by `tms_console.feed.FleetFeed` in
threads of its own (the kernel stays free); each batch is applied under a lock and the
widgets are redrawn from the model. A second thread redraws every `refresh_interval` so
the countdowns move. Closing the widget stops both threads and the Watch stream.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from tms_console.feed import CONNECTING, LIVE, UNREACHABLE, FleetFeed
from tms_console.fleet import Fleet, LeaseRow, Slot, Update, snapshot
from tms_console.jupyter.views import (
    DECLARED_COLOR,
    MEASURED_COLOR,
    html_table,
    shown_slots,
    slot_members,
    slot_title,
    slot_usage,
)
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, TmsClient, parse_model_arg, state_name
from tms_core.cli.spec import parse_duration_field
from tms_core.errors import TmsError
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.units import format_duration, parse_size

TABLE_COLUMNS = (
    "id",
    "name",
    "state",
    "models",
    "server",
    "replicas",
    "expires in",
    "activity",
)


class SlotBars(w.HBox):
    """One GPU (or a node's host memory): declared and measured bars, servers and leases."""

    def __init__(self, slot: Slot) -> None:
        self.title = w.HTML(layout=w.Layout(width="240px"))
        self.declared = w.FloatProgress(
            min=0.0, max=1.0, description="declared", style={"bar_color": DECLARED_COLOR}
        )
        self.measured = w.FloatProgress(
            min=0.0, max=1.0, description="measured", style={"bar_color": MEASURED_COLOR}
        )
        self.detail = w.HTML()
        super().__init__(
            [self.title, w.VBox([self.declared, self.measured]), self.detail],
            layout=w.Layout(align_items="center"),
        )
        self.add_class("tms-slot")
        self.slot_key = slot.key
        self.show(slot)

    def show(self, slot: Slot) -> None:
        self.title.value = f"<b>{slot_title(slot)}</b>"
        self.declared.value = slot.fraction(slot.declared_bytes)
        self.measured.value = slot.fraction(slot.measured_bytes)
        self.detail.value = f"{slot_usage(slot)}<br><small>{slot_members(slot)}</small>"


def lease_table(rows: list[LeaseRow], now: float) -> str:
    if not rows:
        return "<p class='tms-no-leases'>no leases</p>"
    cells = (
        (
            r.id,
            r.name or "-",
            r.state,
            r.models,
            r.server or "-",
            r.replicas,
            r.expires_text(now),
            r.activity(now),
        )
        for r in rows
    )
    return html_table(TABLE_COLUMNS, cells, "tms-leases")


class Dashboard(w.VBox):
    """The fleet, live. `start()` begins following the daemon; `close()` stops it."""

    def __init__(
        self,
        target: str,
        *,
        client: TmsClient | None = None,
        refresh_interval: float = 1.0,
        on_acquired: Callable[[pb.Lease], None] = lambda lease: None,
        client_factory: Callable[[str], TmsClient] = TmsClient,
    ) -> None:
        self.target = target
        self.client = client or client_factory(target)
        self.fleet = Fleet()
        self.refresh_interval = refresh_interval
        self._on_acquired = on_acquired
        self._client_factory = client_factory
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._stop_callbacks: list[Callable[[], None]] = []
        self._feed: FleetFeed | None = None
        self._ticker: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self.connection = CONNECTING
        self.connection_detail = target

        self.header = w.HTML()
        self.occupancy = w.VBox()
        self.occupancy.add_class("tms-occupancy")
        self.table = w.HTML()
        self.table.add_class("tms-leases-table")
        self.lease_picker = w.Dropdown(description="lease", options=[])
        self.renew_for = w.Text(placeholder="its own duration", description="renew for")
        self.renew_button = w.Button(description="Renew", icon="clock")
        self.release_button = w.Button(description="Release", icon="times", button_style="danger")
        self.new_button = w.ToggleButton(description="New lease…", icon="plus")
        self.form_model = w.Text(description="model", placeholder="add_sub")
        self.form_uri = w.Text(description="uri", placeholder="file:///models/add_sub or a path")
        self.form_memory = w.Text(description="memory", placeholder="e.g. 512MiB (optional)")
        self.form_duration = w.Text(description="duration", placeholder="e.g. 10m (optional)")
        self.form_name = w.Text(description="name", placeholder="lease name (optional)")
        self.acquire_button = w.Button(description="Acquire", button_style="primary")
        self.form = w.VBox(
            [
                self.form_model,
                self.form_uri,
                self.form_memory,
                self.form_duration,
                self.form_name,
                self.acquire_button,
            ],
            layout=w.Layout(display="none"),
        )
        self.message = w.HTML()
        self.message.add_class("tms-message")

        self.renew_button.on_click(lambda _: self.renew_selected())
        self.release_button.on_click(lambda _: self.release_selected())
        self.acquire_button.on_click(lambda _: self.acquire_from_form())
        self.new_button.observe(self._toggle_form, names="value")

        super().__init__(
            [
                self.header,
                w.HTML("<b>GPU occupancy</b>"),
                self.occupancy,
                w.HTML("<b>Leases</b>"),
                self.table,
                w.HBox(
                    [
                        self.lease_picker,
                        self.renew_for,
                        self.renew_button,
                        self.release_button,
                        self.new_button,
                    ]
                ),
                self.form,
                self.message,
            ]
        )
        self.add_class("tms-dashboard")
        self.render()

    # Life

    def start(self) -> Dashboard:
        """Draws the fleet once, then follows the daemon in background threads.

        The first picture is fetched here, on the kernel's own thread, so that the widgets
        for the GPUs exist before the cell ends: widgets first made by a background thread
        reach a live notebook, but not a notebook saved by nbconvert/nbclient."""
        try:
            self.apply(snapshot(self.client))
        except ClientError as exc:
            self._connection(UNREACHABLE, str(exc))  # the feed keeps trying
        self._feed = FleetFeed(
            self.target,
            self.apply,
            self._connection,
            retry_s=self.refresh_interval,
            client_factory=self._client_factory,
        ).start()
        self._ticker = threading.Thread(target=self._tick, name="tms-dashboard-tick", daemon=True)
        self._ticker.start()
        return self

    @property
    def running(self) -> bool:
        return self._feed is not None and self._feed.running

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._stop_callbacks.append(callback)

    def stop(self) -> None:
        """Stops following the daemon (the widget stays, frozen); safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._feed is not None:
            self._feed.stop()
        if self._ticker is not None:
            self._ticker.join(5)
        for worker in self._workers:
            worker.join(5)
        for callback in self._stop_callbacks:
            callback()
        with self._lock:
            self.connection, self.connection_detail = "stopped", self.target
            self._render_header()

    def close(self) -> None:
        self.stop()
        super().close()

    def _tick(self) -> None:
        while not self._stopped.wait(self.refresh_interval):
            self.render()

    # The model

    def apply(self, update: Update) -> None:
        """Applies a feed batch to the fleet and redraws (any thread)."""
        with self._lock:
            self.fleet.apply_update(update)
            self.render()

    def _connection(self, state: str, detail: str) -> None:
        with self._lock:
            self.connection, self.connection_detail = state, detail
            self._render_header()

    # Drawing

    def render(self) -> None:
        with self._lock:
            self._render_header()
            self._render_occupancy()
            now = self.fleet.clock()
            rows = self.fleet.rows(sort="expires")
            self.table.value = lease_table(rows, now)
            options = [(f"{r.name or r.id} · {r.state}", r.id) for r in rows]
            if list(self.lease_picker.options) != options:
                selected = self.lease_picker.value
                self.lease_picker.options = options
                ids = [value for _, value in options]
                self.lease_picker.value = selected if selected in ids else (ids[0] if ids else None)

    def _render_header(self) -> None:
        state = self.connection
        color = {"live": "#2e7d32", "connecting": "#8a6d00"}.get(state, "#c62828")
        detail = self.connection_detail if state != LIVE else self.target
        count = len(self.fleet.leases)
        self.header.value = (
            f"<b>TMS</b> {detail} · <span style='color:{color}'>{state}</span> · "
            f"{count} live lease{'' if count == 1 else 's'} · updated "
            f"{time.strftime('%H:%M:%S', time.localtime(self.fleet.clock()))}"
        )

    def _render_occupancy(self) -> None:
        slots = shown_slots(self.fleet)
        rows = list(self.occupancy.children)
        if [getattr(r, "slot_key", None) for r in rows] == [s.key for s in slots]:
            for row, slot in zip(rows, slots, strict=True):
                row.show(slot)
            return
        fresh: list[w.Widget] = [SlotBars(slot) for slot in slots]
        self.occupancy.children = fresh or [w.HTML("<i>no nodes yet</i>")]
        for old in rows:
            if isinstance(old, SlotBars):
                old.close()

    # Actions

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#c62828" if error else "inherit"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _toggle_form(self, change: dict[str, Any]) -> None:
        self.form.layout.display = "flex" if change["new"] else "none"

    def _selected(self) -> str | None:
        lease_id = self.lease_picker.value
        if not lease_id:
            self._say("no lease selected", error=True)
            return None
        return str(lease_id)

    def renew_selected(self) -> None:
        lease_id = self._selected()
        if lease_id is None:
            return
        try:
            text = self.renew_for.value.strip()
            seconds = parse_duration_field(text, "renew for") if text else 0.0
            lease = self.client.renew(lease_id, seconds)
        except (ClientError, TmsError, ValueError) as exc:
            self._say(str(exc), error=True)
            return
        left = format_duration(lease.expires_at - time.time())
        self._say(f"renewed {lease_id}: expires in {left}")
        with self._lock:
            self.fleet.apply_lease(lease)
            self.render()

    def release_selected(self) -> None:
        lease_id = self._selected()
        if lease_id is None:
            return
        try:
            lease = self.client.release(lease_id, wait=False)
        except (ClientError, TmsError) as exc:
            self._say(str(exc), error=True)
            return
        self._say(f"releasing {lease_id}: {state_name(lease.state)}")

    def form_models(self) -> list[ModelRequest]:
        """The form's model, checked; raises `ValueError` naming the field."""
        name = self.form_model.value.strip()
        uri = self.form_uri.value.strip()
        if not name:
            raise ValueError("model: give the model's name (as in its config.pbtxt)")
        if not uri:
            raise ValueError("uri: give the model repository (file:///… or a local path)")
        memory = self.form_memory.value.strip()
        if memory:
            try:
                parse_size(memory)
            except ValueError as exc:
                raise ValueError(f"memory: {exc}") from None
        text = f"name={name},uri={uri}" + (f",memory={memory}" if memory else "")
        return [parse_model_arg(text)]

    def acquire_from_form(self) -> threading.Thread | None:
        """Acquires what the form says in a worker thread; progress goes to the message."""
        try:
            models = self.form_models()
            duration_text = self.form_duration.value.strip()
            duration = parse_duration_field(duration_text, "duration") if duration_text else 0.0
        except ValueError as exc:
            self._say(str(exc), error=True)
            return None
        name = self.form_name.value.strip()
        self.acquire_button.disabled = True
        self._say(f"acquiring {models[0].name}…")
        worker = threading.Thread(
            target=self._acquire,
            args=(models, name, duration),
            name="tms-dashboard-acquire",
            daemon=True,
        )
        self._workers.append(worker)
        worker.start()
        return worker

    def _acquire(self, models: list[ModelRequest], name: str, duration: float) -> None:
        client = self._client_factory(self.target)
        lease: pb.Lease | None = None
        try:
            tied = False
            for lease in client.acquire(models, LeaseOptions(name=name, duration_s=duration)):
                if not tied:
                    self._on_acquired(lease)
                    tied = True
                self._say(f"{lease.id}: {state_name(lease.state)}…")
                if self._stopped.is_set():
                    break
            if lease is not None and lease.state == pb.LEASE_READY:
                self._say(f"{lease.id} READY at {lease.endpoints.http}")
            elif lease is not None and lease.state == pb.LEASE_FAILED:
                self._say(f"{lease.id} FAILED: {lease.reason}", error=True)
        except (ClientError, TmsError) as exc:
            self._say(str(exc), error=True)
        finally:
            client.close()
            self.acquire_button.disabled = False
