"""How leases are shown: human tables by default, one JSON object with `-o json`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import lease_to_dict, model_state_name, state_name
from tms_core.units import format_duration

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# How far along a model is, for its progress bar.
_MODEL_STEPS = {
    pb.MODEL_PENDING: 0,
    pb.MODEL_FETCHING: 1,
    pb.MODEL_LOADING: 2,
    pb.MODEL_READY: 3,
    pb.MODEL_FAILED: 3,
}


def print_json(lease: pb.Lease) -> None:
    print(json.dumps(lease_to_dict(lease), indent=2))


def print_lease(lease: pb.Lease) -> None:
    data = lease_to_dict(lease)
    state = data["state"]
    colour = {"READY": "green", "FAILED": "red", "EXPIRED": "yellow"}.get(state, "cyan")
    out.print(f"lease [bold]{lease.id}[/]" + (f" ({lease.name})" if lease.name else ""))
    out.print(f"  state     [{colour}]{state}[/]" + (f": {lease.reason}" if lease.reason else ""))
    if lease.endpoints.http:
        out.print(f"  http      {lease.endpoints.http}")
        out.print(f"  grpc      {lease.endpoints.grpc}")
        out.print(f"  metrics   {lease.endpoints.metrics}")
    if lease.state not in (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED):
        left = format_duration(lease.expires_at - time.time())
        out.print(f"  expires   {data['expires_at']} (in {left})")
    for model in data["models"]:
        line = f"  model     {model['name']}  {model['state']}"
        if model["load_s"]:
            line += f"  loaded in {model['load_s']:.2f}s"
        out.print(line + (f"  [red]{model['error']}[/]" if model["error"] else ""))


def print_table(leases: Iterable[pb.Lease]) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "STATE", "MODELS", "HTTP", "GRPC", "EXPIRES IN"):
        # Ids and addresses are copied by hand: never cut them.
        table.add_column(column, no_wrap=column != "MODELS", overflow="fold")
    now = time.time()
    for lease in leases:
        ended = lease.state in (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED)
        table.add_row(
            lease.id,
            lease.name or "-",
            state_name(lease.state),
            ",".join(m.name for m in lease.models),
            lease.endpoints.http or "-",
            lease.endpoints.grpc or "-",
            "-" if ended else format_duration(lease.expires_at - now),
        )
    out.print(table)


def follow_with_progress(updates: Iterator[pb.Lease], *, show: bool) -> pb.Lease:
    """Consumes `updates`, drawing a bar per model while it loads; returns the last update."""
    last: pb.Lease | None = None
    if not show:
        for last in updates:  # noqa: B007 - the last one is returned
            pass
        assert last is not None
        return last
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<24}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[state]:<10}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        for last in updates:
            for model in last.models:
                if model.name not in tasks:
                    tasks[model.name] = progress.add_task(model.name, total=3, state="")
                progress.update(
                    tasks[model.name],
                    completed=_MODEL_STEPS.get(model.state, 0),
                    state=model_state_name(model.state),
                )
    assert last is not None
    return last
