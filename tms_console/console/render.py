"""Rich text for the console's views, built from a `Fleet` (no widgets here, so the views
redraw by swapping one renderable and the text is easy to test)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tms_console.fleet import Fleet, Slot
from tms_console.testinfer import TestInferError
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, download_progress, model_state_name, state_name
from tms_core.units import format_duration, format_size, rfc3339

BAR_WIDTH = 24


def one_line(exc: BaseException) -> str:
    """An error as a notification shows it: the message when it was written for people, the
    type as well when it was not."""
    if isinstance(exc, ClientError | TestInferError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


STATE_STYLES = {
    "PENDING": "yellow",
    "LOADING": "cyan",
    "READY": "bold green",
    "RELEASING": "magenta",
    "RELEASED": "dim",
    "EXPIRED": "dim red",
    "FAILED": "bold red",
    "PARKED": "blue",
    "FETCHING": "cyan",
    "UNLOADING": "magenta",
    "UNLOADED": "dim",
}


def memory_bar(slot: Slot, width: int = BAR_WIDTH) -> Text:
    """Measured in use (solid), declared beyond it (shaded), free (light); red where measured
    runs over what was declared."""
    measured = round(width * slot.fraction(slot.measured_bytes))
    declared = round(width * slot.fraction(slot.declared_bytes))
    bar = Text()
    bar.append("█" * min(measured, declared), style="green")
    if measured > declared:
        bar.append("█" * (measured - declared), style="red")
    else:
        bar.append("▒" * (declared - measured), style="yellow")
    bar.append("░" * (width - max(measured, declared)), style="bright_black")
    return bar


def _servers(fleet: Fleet, slot: Slot) -> Text:
    by_server: dict[str, list[str]] = {server: [] for server in slot.server_ids}
    for lease_id in dict.fromkeys(slot.lease_ids):
        lease = fleet.leases.get(lease_id)
        if lease is not None:
            by_server.setdefault(lease.server_id, []).append(lease.name or lease.id)
    text = Text()
    for i, (server, leases) in enumerate(by_server.items()):
        if i:
            text.append("  ")
        text.append(server, style="bold")
        idle = " (standby)" if server in slot.standby_ids else " (idle)"
        text.append(f" ({', '.join(leases)})" if leases else idle, style="")
    return text or Text("-", style="dim")


def fleet_view(fleet: Fleet) -> RenderableType:
    if not fleet.nodes:
        return Text("No nodes yet: waiting for the daemon.", style="dim")
    total, declared, measured = fleet.totals()
    gpus = sum(len(n.gpus) for n in fleet.nodes)
    summary = Text.assemble(
        (f"{len(fleet.nodes)} node(s), {gpus} GPU(s), {len(fleet.leases)} live lease(s)   ", ""),
        ("declared ", ""),
        (format_size(declared), "yellow"),
        ("  measured ", ""),
        (format_size(measured), "green"),
        (f"  of {format_size(total)}", ""),
    )
    legend = Text.assemble(
        ("█", "green"),
        " measured  ",
        ("▒", "yellow"),
        " declared  ",
        ("█", "red"),
        " measured over declared  ",
        ("░", "bright_black"),
        " free",
    )
    table = Table(box=None, expand=True, show_edge=False, pad_edge=False, padding=(0, 1))
    table.add_column("slot", no_wrap=True)
    table.add_column("memory", no_wrap=True, width=BAR_WIDTH)
    table.add_column("declared", justify="right", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    nvml = any(node.source == "nvml" for node in fleet.nodes)
    if nvml:
        # What NVML reads for the whole device: what TMS counts plus anything else on it.
        table.add_column("device", justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("servers (leases)", ratio=1, overflow="fold")
    for node in fleet.nodes:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        table.add_row(
            Text(node.name, style="bold underline"),
            Text(f"{node.source}{'  ' + labels if labels else ''}", style="dim"),
        )
        for slot in node.slots:
            if slot.gpu is None and node.gpus and not slot.server_ids:
                continue  # host memory matters on a GPU node only when CPU servers use it
            name = f"  {slot.label}" + (f" {slot.product}" if slot.product else "")
            device = []
            if nvml:
                read = node.source == "nvml" and slot.gpu is not None
                device = [format_size(slot.device_used_bytes) if read else "-"]
            table.add_row(
                name,
                memory_bar(slot),
                Text(format_size(slot.declared_bytes), style="yellow"),
                Text(format_size(slot.measured_bytes), style="green"),
                *device,
                format_size(slot.total_bytes),
                _servers(fleet, slot),
            )
    return Group(summary, legend, Text(""), table)


def lease_detail(lease: pb.Lease | None, events: Iterable[pb.Event], now: float) -> RenderableType:
    if lease is None:
        return Text("Select a lease to see its models, endpoint and events.", style="dim")
    state = state_name(lease.state)
    head = Text.assemble(
        (lease.name or lease.id, "bold"),
        f"  {lease.id}  " if lease.name else "  ",
        (state, STATE_STYLES.get(state, "")),
        (f"  {lease.reason}" if lease.reason else "", "italic"),
    )
    left = lease.expires_at - now
    countdown = Text.assemble(
        "expires in ",
        (format_duration(left) if left > 0 else "now", "bold red" if left < 60 else "bold"),
        f"  (duration {format_duration(lease.duration_s)}",
        f", auto-renew window {format_duration(lease.activity_window_s)})"
        if lease.activity_window_s
        else ")",
    )
    where = Text.assemble(
        "endpoint ",
        (lease.endpoints.http or "-", "bold cyan"),
        " http  ",
        (lease.endpoints.grpc or "-", "bold cyan"),
        " grpc\n",
        f"server {lease.server_id or '-'}",
        f" on {lease.node}" if lease.node else "",
        f" GPU {','.join(str(g) for g in lease.server_gpus)}" if lease.server_gpus else "",
        f"  pool {lease.pool} (quota {lease.quota})" if lease.pool else "",
    )
    if lease.HasField("autoscale"):
        scale = lease.autoscale
        low = scale.min_replicas if scale.HasField("min_replicas") else 1
        where.append(
            f"\nautoscale {low}–{scale.max_replicas} replicas on "
            f"{scale.metric or 'nv_inference_queue_duration_ms'} > {scale.target or 200:g} per pod"
        )
        where.append(f" ({len(lease.endpoints.servers)} now)" if lease.endpoints.servers else "")
        if low == 0:
            where.append("; parks when idle, wakes on a request")
    if lease.wake_s:
        where.append(f"\nlast wake took {lease.wake_s:.2f}s")
    for replica in lease.replicas:
        rstate = state_name(replica.state) + (" draining" if replica.draining else "")
        where.append(
            f"\nreplica {replica.id} {rstate} on {replica.server_id or '-'}"
            + (f" {replica.http}" if replica.http else "")
            + (f": {replica.reason}" if replica.reason else "")
        )
    models = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1))
    for column in ("model", "state", "declared", "measured", "load", "error"):
        models.add_column(
            column, style="bold" if column == "model" else "", no_wrap=column != "error"
        )
    for model in lease.models:
        mstate = model_state_name(model.state)
        progress = download_progress(model)
        models.add_row(
            model.name,
            Text(
                f"{mstate} {progress}" if progress else mstate, style=STATE_STYLES.get(mstate, "")
            ),
            format_size(model.memory_bytes) if model.memory_bytes else "-",
            format_size(model.measured_bytes) if model.measured_bytes else "-",
            f"{model.load_s:.2f}s" if model.load_s else "-",
            Text(model.error, style="red") if model.error else "",
        )
    log = Text()
    log.append("events\n", style="bold")
    for event in list(events)[-8:]:
        log.append(f"  #{event.seq} {event.kind} {event.id} ", style="dim")
        log.append(event.state, style=STATE_STYLES.get(event.state, ""))
        log.append(f" {event.reason}\n" if event.reason else "\n")
    return Group(head, countdown, where, Text(""), models, Text(""), log)


def event_line(event: pb.Event) -> Text:
    return Text.assemble(
        (rfc3339(event.at)[11:23], "dim"),
        f" #{event.seq} ",
        (f"{event.kind:<6}", "bold"),
        f" {event.id} ",
        (event.state, STATE_STYLES.get(event.state, "")),
        (f"  {event.reason}" if event.reason else "", "italic"),
    )
