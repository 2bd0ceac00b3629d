"""`%tms infer-widget`: a form built from a model's metadata that sends a test inference.

One text box per declared input (empty: random values of the right dtype and shape); the
call runs in a worker thread and the outputs and latency appear below the form.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from tms_console.jupyter.views import InferView
from tms_console.testinfer import (
    PROTOCOLS,
    ModelSignature,
    TestInferError,
    build_inputs,
    lease_endpoint,
    read_signature,
    send,
)
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, TmsClient


class InferWidget(w.VBox):
    """Pick a READY lease and model, fill in inputs (or leave them random), press Send."""

    def __init__(
        self, client: TmsClient, *, lease_id: str | None = None, model: str | None = None
    ) -> None:
        self.client = client
        self.leases: dict[str, pb.Lease] = {}
        self.signature: ModelSignature | None = None
        self.result: InferView | None = None
        self._stop_callbacks: list[Callable[[], None]] = []
        self._worker: threading.Thread | None = None

        self.lease_picker = w.Dropdown(description="lease", options=[])
        self.model_picker = w.Dropdown(description="model", options=[])
        self.protocol = w.ToggleButtons(options=list(PROTOCOLS), value="http")
        self.inputs = w.VBox()
        self.send_button = w.Button(description="Send", button_style="primary", icon="play")
        self.latency = w.HTML()
        self.outputs = w.HTML()
        self.message = w.HTML()
        self.message.add_class("tms-message")
        self.send_button.on_click(lambda _: self.send_inference())
        super().__init__(
            [
                w.HBox([self.lease_picker, self.model_picker, self.protocol]),
                self.inputs,
                w.HBox([self.send_button, self.latency]),
                self.outputs,
                self.message,
            ]
        )
        self.add_class("tms-infer-widget")
        self.reload_leases(lease_id)
        if model and model in self.model_picker.options:
            self.model_picker.value = model
        elif model:
            self._say(f"model {model!r} is not in the chosen lease", error=True)
        self.lease_picker.observe(lambda _: self._lease_changed(), names="value")
        self.model_picker.observe(lambda _: self.load_signature(), names="value")
        self.protocol.observe(lambda _: self.load_signature(), names="value")
        self.load_signature()

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._stop_callbacks.append(callback)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.join(35)
        for callback in self._stop_callbacks:
            callback()
        self._stop_callbacks.clear()
        super().close()

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#c62828" if error else "inherit"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    # Choosing what to call

    def reload_leases(self, lease_id: str | None = None) -> None:
        """The READY leases, from the daemon; `lease_id` is chosen if given."""
        try:
            found = self.client.list_leases()
        except ClientError as exc:
            self._say(str(exc), error=True)
            return
        self.leases = {lease.id: lease for lease in found if lease.state == pb.LEASE_READY}
        if lease_id and lease_id not in self.leases:
            self._say(f"lease {lease_id} is not READY (or not live)", error=True)
        options = [(f"{lease.name or lease.id}", lease.id) for lease in self.leases.values()]
        self.lease_picker.options = options
        if lease_id in self.leases:
            self.lease_picker.value = lease_id
        elif options:
            self.lease_picker.value = options[0][1]
        self._set_models()

    def _set_models(self) -> None:
        lease = self.leases.get(self.lease_picker.value or "")
        names = [m.name for m in lease.models] if lease else []
        self.model_picker.options = names
        self.model_picker.value = names[0] if names else None

    def _lease_changed(self) -> None:
        self._set_models()
        self.load_signature()

    def load_signature(self) -> None:
        """Reads the chosen model's inputs from Triton and builds one box per input."""
        lease = self.leases.get(self.lease_picker.value or "")
        model = self.model_picker.value
        self.signature = None
        self.inputs.children = []
        self.send_button.disabled = True
        if lease is None or not model:
            self._say("no READY lease to call (acquire one, then reopen)", error=True)
            return
        try:
            endpoint = lease_endpoint(lease, self.protocol.value)
            self.signature = read_signature(endpoint, model, self.protocol.value)
        except TestInferError as exc:
            self._say(str(exc), error=True)
            return
        boxes = []
        for spec in self.signature.inputs:
            box = w.Text(
                description=spec.name,
                placeholder=f"{spec.describe()}: random if empty; 1,2,3 or JSON",
                layout=w.Layout(width="520px"),
                style={"description_width": "initial"},
            )
            box.add_class("tms-input")
            boxes.append(box)
        self.inputs.children = boxes
        self.send_button.disabled = False
        outputs = ", ".join(o.describe() for o in self.signature.outputs)
        self._say(f"{self.signature.name} at {endpoint} ({self.protocol.value}): returns {outputs}")

    def values(self) -> dict[str, Any]:
        boxes = [c for c in self.inputs.children if isinstance(c, w.Text)]
        return {box.description: box.value for box in boxes if box.value.strip()}

    # Sending

    def send_inference(self) -> threading.Thread | None:
        """Builds the inputs (an error names the input) and sends them in a worker thread."""
        lease = self.leases.get(self.lease_picker.value or "")
        if self.signature is None or lease is None:
            self._say("nothing to call: choose a READY lease and model", error=True)
            return None
        try:
            arrays = build_inputs(self.signature, self.values())
            endpoint = lease_endpoint(lease, self.protocol.value)
        except TestInferError as exc:
            self._say(str(exc), error=True)
            return None
        self.send_button.disabled = True
        self._say(f"sending to {self.signature.name}…")
        signature, protocol = self.signature, self.protocol.value
        worker = threading.Thread(
            target=self._call,
            args=(endpoint, signature, arrays, protocol),
            name="tms-infer-send",
            daemon=True,
        )
        self._worker = worker
        worker.start()
        return worker

    def _call(
        self, endpoint: str, signature: ModelSignature, arrays: dict[str, Any], protocol: str
    ) -> None:
        try:
            view = InferView(send(endpoint, signature, arrays, protocol))
        except TestInferError as exc:
            self._say(str(exc), error=True)
        else:
            self.result = view
            self.latency.value = f"<b>{view.latency_s * 1000:.1f} ms</b>"
            self.outputs.value = view._repr_html_()
            self._say(f"{signature.name} answered over {protocol}")
        finally:
            self.send_button.disabled = False
