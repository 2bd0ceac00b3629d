"""The test inference pane: pick a READY lease and one of its models, fill its inputs (random
of the right dtype and shape, or typed), send, and see the outputs and the latency; repeated
sends draw a latency sparkline. The Triton work is `tms_console.testinfer`'s.

The pane is given the fleet it picks leases from; the app tells it which leases are READY
(`refresh_leases`) and which one to test (`choose`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Sparkline, Static

from tms_console import testinfer
from tms_console.console.render import one_line
from tms_console.fleet import Fleet
from tms_core.api import tms_pb2 as pb

KEEP_LATENCIES = 60


def format_array(array: np.ndarray[Any, Any], limit: int = 12) -> str:
    flat = array.reshape(-1)
    shown = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in flat[:limit]]
    items = ", ".join(f"{v:.4g}" if isinstance(v, float | np.floating) else str(v) for v in shown)
    more = f", … ({flat.size} values)" if flat.size > limit else ""
    return f"{array.dtype} {list(array.shape)}: [{items}{more}]"


class InferPane(Vertical):
    def __init__(self, fleet: Fleet, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fleet = fleet
        self.signature: testinfer.ModelSignature | None = None
        self.latencies: list[float] = []
        self.last_result: testinfer.InferResult | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="pickers"):
            yield Select[str]([], prompt="READY lease", id="infer-lease")
            yield Select[str]([], prompt="model", id="infer-model")
            yield Select[str](
                [("HTTP", "http"), ("gRPC", "grpc")],
                value="http",
                allow_blank=False,
                id="infer-protocol",
            )
        yield Label("Pick a READY lease and a model.", id="signature")
        with VerticalScroll(id="infer-inputs"):
            pass
        with Horizontal(classes="buttons"):
            yield Button("Send (enter)", variant="primary", id="send", disabled=True)
            yield Button("Random inputs", id="randomize")
        yield Static("", id="infer-output")
        yield Label("", id="latency")
        yield Sparkline([], id="latency-spark")

    def refresh_leases(self, leases: list[pb.Lease]) -> None:
        """Keeps the lease list to the READY ones, leaving the choice alone if it still is."""
        select = self.query_one("#infer-lease", Select)
        options = [(f"{lease.name or lease.id} ({lease.id})", lease.id) for lease in leases]
        if [v for _, v in options] == [v for _, v in getattr(self, "_options", [])]:
            return
        self._options = options
        current = select.value
        select.set_options(options)
        if current in {v for _, v in options}:
            select.value = current

    def choose(self, lease_id: str) -> None:
        lease = self.fleet.leases.get(lease_id)
        if lease is None or lease.state != pb.LEASE_READY:
            state = "gone" if lease is None else pb.LeaseState.Name(lease.state)
            self.notify(
                f"lease {lease_id} is {state.removeprefix('LEASE_')}, not READY",
                severity="warning",
            )
            return
        self.refresh_leases(self.fleet.ready_leases())
        self.query_one("#infer-lease", Select).value = lease_id

    @property
    def protocol(self) -> str:
        value = self.query_one("#infer-protocol", Select).value
        return value if isinstance(value, str) else "http"

    @on(Select.Changed, "#infer-protocol")
    def _protocol_changed(self) -> None:
        # One sparkline per protocol: their latencies do not compare.
        self.latencies = []
        self.query_one("#latency-spark", Sparkline).data = []
        self.query_one("#latency", Label).update("")

    def _lease(self) -> pb.Lease | None:
        value = self.query_one("#infer-lease", Select).value
        return self.fleet.leases.get(value) if isinstance(value, str) else None

    @on(Select.Changed, "#infer-lease")
    def _lease_changed(self) -> None:
        lease = self._lease()
        models = [(m.name, m.name) for m in lease.models] if lease else []
        select = self.query_one("#infer-model", Select)
        select.set_options(models)
        if len(models) >= 1:
            select.value = models[0][1]

    @on(Select.Changed, "#infer-model")
    def _model_changed(self) -> None:
        lease, model = self._lease(), self.query_one("#infer-model", Select).value
        self.signature = None
        self.query_one("#send", Button).disabled = True
        if lease is None or not isinstance(model, str):
            return
        self.query_one("#signature", Label).update(f"reading {model}'s inputs from Triton…")
        self.read_signature(lease, model)

    @work(thread=True, exit_on_error=False, exclusive=True, group="signature")
    def read_signature(self, lease: pb.Lease, model: str) -> None:
        try:
            protocol = self.protocol
            endpoint = testinfer.lease_endpoint(lease, protocol)
            signature = testinfer.read_signature(endpoint, model, protocol)
        except Exception as exc:  # shown, never a traceback
            self.app.call_from_thread(self._failed, one_line(exc))
            return
        self.app.call_from_thread(self._show_signature, signature)  # type: ignore[arg-type]

    def _failed(self, message: str) -> None:
        self.query_one("#signature", Label).update(Text(message, style="red"))
        self.notify(message, title="Test inference", severity="error")

    async def _show_signature(self, signature: testinfer.ModelSignature) -> None:
        self.signature = signature
        self.latencies = []
        self.query_one("#latency-spark", Sparkline).data = []
        self.query_one("#latency", Label).update("")
        self.query_one("#infer-output", Static).update("")
        outputs = ", ".join(o.describe() for o in signature.outputs)
        self.query_one("#signature", Label).update(
            f"{signature.name} ({signature.platform or 'model'}) → {outputs}"
        )
        box = self.query_one("#infer-inputs", VerticalScroll)
        await box.remove_children()
        for i, spec in enumerate(signature.inputs):
            await box.mount(
                Horizontal(
                    Label(spec.describe(), classes="input-name"),
                    Input(placeholder="random; or values: 1 2 3, [[1,2]]", id=f"input-{i}"),
                    classes="input-row",
                )
            )
        self.query_one("#send", Button).disabled = False
        # Ready to type values, or to press Enter for random ones.
        first = self.query("#infer-inputs Input")
        (first.first() if first else self.query_one("#send", Button)).focus()

    @on(Button.Pressed, "#randomize")
    def _randomize(self) -> None:
        for field in self.query("#infer-inputs Input").results(Input):
            field.value = ""

    @on(Button.Pressed, "#send")
    @on(Input.Submitted, "#infer-inputs Input")
    def action_send(self) -> None:
        lease, signature = self._lease(), self.signature
        if lease is None or signature is None:
            self.notify("Pick a READY lease and a model first.", severity="warning")
            return
        typed = {
            spec.name: self.query_one(f"#input-{i}", Input).value
            for i, spec in enumerate(signature.inputs)
            if self.query_one(f"#input-{i}", Input).value.strip()
        }
        self.query_one("#send", Button).disabled = True
        self.send(lease, signature, typed, self.protocol)

    @work(thread=True, exit_on_error=False, exclusive=True, group="send")
    def send(
        self,
        lease: pb.Lease,
        signature: testinfer.ModelSignature,
        typed: dict[str, str],
        protocol: str,
    ) -> None:
        try:
            inputs = testinfer.build_inputs(signature, typed)
            endpoint = testinfer.lease_endpoint(lease, protocol)
            result = testinfer.send(endpoint, signature, inputs, protocol)
        except Exception as exc:  # shown, never a traceback
            self.app.call_from_thread(self._send_failed, one_line(exc))
            return
        self.app.call_from_thread(self._show_result, result)

    def _send_failed(self, message: str) -> None:
        self.query_one("#send", Button).disabled = False
        self.query_one("#infer-output", Static).update(Text(message, style="red"))
        self.notify(message, title="Test inference", severity="error")

    def _show_result(self, result: testinfer.InferResult) -> None:
        self.last_result = result
        self.query_one("#send", Button).disabled = False
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2))
        table.add_column("", style="dim")
        table.add_column("tensor", style="bold")
        table.add_column("value", overflow="fold")
        for name, array in result.inputs.items():
            table.add_row("in", name, format_array(array))
        for name, array in result.outputs.items():
            table.add_row("out", name, Text(format_array(array), style="green"))
        self.query_one("#infer-output", Static).update(table)
        self.latencies = [*self.latencies, result.latency_s * 1000][-KEEP_LATENCIES:]
        self.query_one("#latency-spark", Sparkline).data = self.latencies
        last, best = self.latencies[-1], min(self.latencies)
        self.query_one("#latency", Label).update(
            f"latency {last:.2f} ms over {result.protocol} to {result.endpoint}"
            f"   ({len(self.latencies)} sent, best {best:.2f} ms)"
        )
