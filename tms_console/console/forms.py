"""The console's dialogs: create a lease, confirm a release, point a name at a lease.

Errors go next to the field they are about: sizes and durations are checked here, the rest by
the daemon, whose refusals name the field (`models[0].uri: ...`, `duration: ...`).

The dialogs are given the client they call and answer with their result (`dismiss`) or with
a message (`messages.LeaseChanged`); they know nothing of the app that opens them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from tms_console.console.messages import LeaseChanged
from tms_console.console.render import one_line
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, ModelArg, TmsClient, model_state_name, state_name
from tms_core.cli.spec import parse_replicas
from tms_core.lease_request import LeaseOptions, ModelRequest, autoscale_request
from tms_core.units import parse_duration, parse_size


def field_cell(input_id: str, placeholder: str, *, error: str = "") -> Vertical:
    """An input with the place for its validation message beneath it (named after the
    request field, `error`, where that differs from the input's id)."""
    return Vertical(
        Input(placeholder=placeholder, id=input_id),
        Label("", id=error_id(error or input_id), classes="field-error"),
        classes="cell",
    )


def error_id(field_name: str) -> str:
    """The id of the error label beside a field: `models[0].uri` → `err-models-0-uri`."""
    return "err-" + field_name.replace("[", "-").replace("].", "-").replace(".", "-")


@dataclass
class LeaseForm:
    """What the create form holds, checked: `errors` maps field names to messages."""

    name: str = ""
    models: list[ModelArg] = field(default_factory=list)
    duration_s: float = 0.0
    activity_window_s: float = 0.0
    pool: str = ""
    quota: int = 0
    autoscale: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def acquire_args(self) -> tuple[list[ModelRequest], LeaseOptions]:
        """`TmsClient.acquire`'s arguments: the models and the options the form was given."""
        return list(self.models), LeaseOptions(
            name=self.name,
            duration_s=self.duration_s,
            activity_window_s=self.activity_window_s,
            pool=self.pool,
            quota=self.quota,
            autoscale=autoscale_request(**self.autoscale) if self.autoscale else None,
        )


def check_form(
    *,
    name: str,
    models: list[tuple[str, str, str]],
    duration: str,
    activity_window: str,
    pool: str,
    quota: str,
    replicas: str = "",
    metric: str = "",
    target: str = "",
) -> LeaseForm:
    form = LeaseForm(name=name.strip(), pool=pool.strip())
    for i, (model_name, uri, memory) in enumerate(models):
        prefix = f"models[{i}]"
        model_name, uri, memory = model_name.strip(), uri.strip(), memory.strip()
        if not (model_name or uri or memory) and i > 0:
            continue  # an empty extra row
        if not model_name:
            form.errors[f"{prefix}.name"] = "a model name is needed (as in Triton)"
        if not uri:
            form.errors[f"{prefix}.uri"] = "a URI is needed: file:///path, s3://… or a local path"
        elif not urlparse(uri).scheme:
            # The daemon runs in another directory: send the path the user meant.
            uri = Path(uri).expanduser().resolve().as_uri()
        size = 0
        if memory:
            try:
                size = parse_size(memory)
            except ValueError as exc:
                form.errors[f"{prefix}.memory"] = str(exc)
        form.models.append(ModelArg(model_name, uri, size))
    for key, text in (("duration", duration), ("activity_window", activity_window)):
        if text.strip():
            try:
                seconds = parse_duration(text)
            except ValueError as exc:
                form.errors[key] = str(exc)
            else:
                setattr(form, "duration_s" if key == "duration" else "activity_window_s", seconds)
    if quota.strip():
        try:
            form.quota = int(quota)
            if form.quota < 1:
                raise ValueError
        except ValueError:
            form.errors["quota"] = f"{quota!r} is not a whole number of at least 1"
    if form.quota and not form.pool:
        form.errors["quota"] = "only pool leases take a quota: name a pool too"
    form.autoscale = _autoscale(form, replicas.strip(), metric.strip(), target.strip())
    return form


def _autoscale(form: LeaseForm, replicas: str, metric: str, target: str) -> dict[str, Any] | None:
    """The autoscale request, or None when the section is left empty."""
    if not replicas:
        if metric or target:
            form.errors["autoscale"] = "set the replicas (MIN:MAX, such as 1:4) to autoscale"
        return None
    wanted: dict[str, Any] = {}
    try:
        wanted.update(parse_replicas(replicas, "replicas"))
    except ValueError as exc:
        form.errors["autoscale"] = str(exc)
    if metric:
        wanted["metric"] = metric
    if target:
        try:
            wanted["target"] = float(target)
            if not wanted["target"] > 0:
                raise ValueError
        except ValueError:
            form.errors["autoscale.target"] = f"{target!r} is not a number above 0"
    return wanted


# The daemon's names for fields the form shows in one place.
FIELD_ALIASES = {"autoscale.min_replicas": "autoscale", "autoscale.max_replicas": "autoscale"}


def split_field_error(message: str) -> tuple[str, str]:
    """(`field`, `problem`) from the daemon's `field: problem`; ("form", message) otherwise."""
    head, sep, rest = message.partition(": ")
    known = (
        "name",
        "duration",
        "activity_window",
        "pool",
        "quota",
        "models",
        "tritonserver",
        "autoscale",
    )
    if sep and (head in known or head.startswith(("models[", "autoscale."))):
        return FIELD_ALIASES.get(head, head), rest
    return "form", message


class ModelRow(Horizontal):
    def __init__(self, index: int) -> None:
        super().__init__(classes="model-row")
        self.index = index

    def compose(self) -> ComposeResult:
        i = self.index
        with Vertical(classes="cell"):
            yield Input(placeholder="model name", id=f"model-{i}-name")
            yield Label("", id=error_id(f"models[{i}].name"), classes="field-error")
        with Vertical(classes="cell wide"):
            yield Input(placeholder="URI: file:///…, s3://… or a path", id=f"model-{i}-uri")
            yield Label("", id=error_id(f"models[{i}].uri"), classes="field-error")
        with Vertical(classes="cell"):
            yield Input(placeholder="memory, e.g. 2GiB", id=f"model-{i}-memory")
            yield Label("", id=error_id(f"models[{i}].memory"), classes="field-error")

    def values(self) -> tuple[str, str, str]:
        i = self.index
        return (
            self.query_one(f"#model-{i}-name", Input).value,
            self.query_one(f"#model-{i}-uri", Input).value,
            self.query_one(f"#model-{i}-memory", Input).value,
        )


class CreateLeaseScreen(ModalScreen[pb.Lease | None]):
    """A form for a new lease; once sent, a progress bar until it is READY or FAILED."""

    BINDINGS = [
        Binding("escape", "cancel", "Close"),
        Binding("ctrl+s", "submit", "Create"),
        Binding("ctrl+n", "add_model", "Add model"),
    ]

    def __init__(self, client: TmsClient) -> None:
        super().__init__()
        self.client = client
        self.rows = 1
        self.sending = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog wide-dialog"):
            with VerticalScroll(id="form-body"):
                yield Label("New lease", classes="title")
                yield Input(placeholder="name (optional): a DNS-1123 label such as chat", id="name")
                yield Label("", id=error_id("name"), classes="field-error")
                yield Label("Models", classes="section")
                with Vertical(id="models"):
                    yield ModelRow(0)
                yield Label("", id=error_id("models"), classes="field-error")
                yield Button("+ model (ctrl+n)", id="add-model")
                with Horizontal(classes="fields"):
                    yield field_cell("duration", "duration, e.g. 1h (default)")
                    yield field_cell("activity_window", "auto-renew window, e.g. 10m")
                with Horizontal(classes="fields"):
                    yield field_cell("pool", "pool (optional)")
                    yield field_cell("quota", "quota (pool leases)")
                yield Label("Autoscaling (replicas; empty: off)", classes="section")
                with Horizontal(classes="fields"):
                    yield field_cell("autoscale", "replicas MIN:MAX, e.g. 1:4")
                    yield field_cell(
                        "autoscale-metric", "metric [queue duration]", error="autoscale.metric"
                    )
                    yield field_cell(
                        "autoscale-target", "target per replica [200]", error="autoscale.target"
                    )
            yield Label("", id=error_id("form"), classes="field-error")
            yield ProgressBar(id="progress", show_eta=False)
            yield Label("", id="progress-text")
            with Horizontal(classes="buttons"):
                yield Button("Create (ctrl+s)", variant="primary", id="create")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#progress").display = False
        self.query_one("#name", Input).focus()

    def action_add_model(self) -> None:
        row = ModelRow(self.rows)
        self.rows += 1
        self.query_one("#models").mount(row)
        self.call_after_refresh(lambda: self.query_one(f"#model-{row.index}-name").focus())

    @on(Button.Pressed, "#add-model")
    def _add_model(self) -> None:
        self.action_add_model()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if self.sending:
            self.notify("The lease goes on being created; follow it in the Leases view.", timeout=4)
        self.dismiss(None)

    @on(Button.Pressed, "#create")
    @on(Input.Submitted)
    def action_submit(self) -> None:
        if self.sending:
            return
        for label in self.query(".field-error").results(Label):
            label.update("")

        def value(widget_id: str) -> str:
            return self.query_one(f"#{widget_id}", Input).value

        form = check_form(
            name=value("name"),
            models=[row.values() for row in self.query(ModelRow).results(ModelRow)],
            duration=value("duration"),
            activity_window=value("activity_window"),
            pool=value("pool"),
            quota=value("quota"),
            replicas=value("autoscale"),
            metric=value("autoscale-metric"),
            target=value("autoscale-target"),
        )
        if form.errors:
            for field_name, message in form.errors.items():
                self.show_error(field_name, message)
            self.focus_field(next(iter(form.errors)))
            return
        self.sending = True
        self.query_one("#create", Button).disabled = True
        bar = self.query_one("#progress", ProgressBar)
        bar.display = True
        bar.update(total=len(form.models), progress=0)
        self.query_one("#progress-text", Label).update("sending…")
        self.create(form)

    def focus_field(self, field_name: str) -> None:
        """Puts the cursor in the field an error is about, so fixing it is one keystroke away."""
        widget_id = field_name.replace("models[", "model-").replace("].", "-").replace(".", "-")
        for found in self.query(f"#{widget_id}").results(Input):
            found.focus()

    def show_error(self, field_name: str, message: str) -> None:
        try:
            label = self.query_one(f"#{error_id(field_name)}", Label)
        except Exception:
            label = self.query_one(f"#{error_id('form')}", Label)
            message = f"{field_name}: {message}"
        label.update(message)

    @work(thread=True, exit_on_error=False, exclusive=True, group="create")
    def create(self, form: LeaseForm) -> None:
        try:
            lease = None
            for lease in self.client.acquire(*form.acquire_args()):
                self.app.call_from_thread(self._progress, lease)
            self.app.call_from_thread(self._finished, lease, None)
        except Exception as exc:  # shown, never a traceback
            error = exc if isinstance(exc, ClientError) else ClientError(one_line(exc))
            self.app.call_from_thread(self._finished, None, error)

    def _progress(self, lease: pb.Lease) -> None:
        ready = sum(1 for m in lease.models if m.state == pb.MODEL_READY)
        self.query_one("#progress", ProgressBar).update(progress=ready)
        models = ", ".join(f"{m.name} {model_state_name(m.state)}" for m in lease.models)
        self.query_one("#progress-text", Label).update(
            f"lease {lease.id} {state_name(lease.state)}: {models}"
        )
        # Posted to the app, not bubbled up through this screen: the steps then reach the app
        # in order and ahead of the lease that `dismiss` hands it, even if the screen closes
        # before its own queue has passed them on.
        self.app.post_message(LeaseChanged(lease))

    def _finished(self, lease: pb.Lease | None, error: ClientError | None) -> None:
        self.sending = False
        self.query_one("#create", Button).disabled = False
        if error is not None:
            self.query_one("#progress").display = False
            self.query_one("#progress-text", Label).update("")
            if error.code == grpc.StatusCode.INVALID_ARGUMENT:
                field_name, problem = split_field_error(str(error))
                self.show_error(field_name, problem)
                self.focus_field(field_name)
            else:
                self.show_error("form", str(error))
            self.notify(str(error), title="Lease not created", severity="error")
            return
        if lease is None or lease.state != pb.LEASE_READY:
            reason = lease.reason if lease is not None else "no answer"
            self.show_error("form", f"lease {lease.id if lease else ''} failed: {reason}")
            self.notify(reason, title="Lease failed", severity="error")
            return
        if self.is_attached:
            self.dismiss(lease)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class NameScreen(ModalScreen[pb.LeaseName | None]):
    """Creates a name or re-points it at the chosen lease (the switch waits for READY)."""

    BINDINGS = [Binding("escape", "cancel", "Close")]

    def __init__(self, lease: pb.Lease, client: TmsClient) -> None:
        super().__init__()
        self.lease = lease
        self.client = client

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Point a name at lease {self.lease.id}", classes="title")
            yield Input(value=self.lease.name, placeholder="name, e.g. chat", id="name")
            yield Label("", id=error_id("name"), classes="field-error")
            with Horizontal(classes="buttons"):
                yield Button("Point (enter)", variant="primary", id="point")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#point")
    @on(Input.Submitted)
    def _point(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self.query_one(f"#{error_id('name')}", Label).update("a name is needed")
            return
        self.point(name)

    @work(thread=True, exit_on_error=False, exclusive=True, group="name")
    def point(self, name: str) -> None:
        try:
            record = self.client.set_name(name, self.lease.id)
        except Exception as exc:  # shown, never a traceback
            message = split_field_error(one_line(exc))[1]
            self.app.call_from_thread(self.query_one(f"#{error_id('name')}", Label).update, message)
            return
        self.app.call_from_thread(self.dismiss, record)
