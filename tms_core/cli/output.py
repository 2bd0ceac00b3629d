"""How things are shown: human tables by default, JSON with `-o json`, tab-separated with `-z`.

Porcelain (`-z`) lines have a fixed column order (docs/cli.md) and `-` for empty values, so
`cut -f` and `read` in scripts keep working; values never contain tabs or newlines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import (
    ENDED,
    event_to_dict,
    lease_to_dict,
    model_state_name,
    name_to_dict,
    pool_to_dict,
    state_name,
)
from tms_core.units import format_duration, format_size, rfc3339

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table


class _LazyConsole:
    """A rich `Console`, made (and rich imported) on first use: rich's import is a good part
    of a short command's start, and `tms --version` or `tms lease list` print without it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        """The console itself, for rich objects that take one (`Progress(console=...)`):
        they use it as a context manager and in other ways no attribute lookup passes on."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


# Piped into a file or another program, tables keep whole lines (ids, addresses) rather
# than wrapping to 80 columns.
out: Any = _LazyConsole(highlight=False, width=None if sys.stdout.isatty() else 240)
err: Any = _LazyConsole(stderr=True, highlight=False)


def escape(text: str) -> str:
    """rich's markup escape, imported on first use."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


# How far along a model is, for its progress bar.
_MODEL_STEPS = {
    pb.MODEL_PENDING: 0,
    pb.MODEL_FETCHING: 1,
    pb.MODEL_LOADING: 2,
    pb.MODEL_READY: 3,
    pb.MODEL_FAILED: 3,
}


def print_json(lease: pb.Lease) -> None:
    dump(lease_to_dict(lease))


def dump(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _cell(value: object) -> str:
    text = " ".join(str(value).split())
    return text or "-"


def print_rows(rows: Iterable[Sequence[object]]) -> None:
    """Porcelain: one tab-separated line per row, no header, `-` for empty values."""
    for row in rows:
        print("\t".join(_cell(value) for value in row), flush=True)


def lease_row(lease: pb.Lease) -> list[object]:
    """id, name, state, models, http, grpc, expires_at, pool."""
    return [
        lease.id,
        lease.name,
        state_name(lease.state),
        ",".join(m.name for m in lease.models),
        lease.endpoints.http,
        lease.endpoints.grpc,
        "" if lease.state in ENDED else rfc3339(lease.expires_at),
        lease.pool,
    ]


def name_row(record: pb.LeaseName) -> list[object]:
    """name, lease_id, next_lease_id, http, grpc."""
    return [
        record.name,
        record.lease_id,
        record.next_lease_id,
        record.endpoints.http,
        record.endpoints.grpc,
    ]


def pool_row(pool: pb.Pool) -> list[object]:
    """name, quota_per_server, min_servers, max_servers, servers, memory bytes, tritonserver."""
    return [
        pool.name,
        pool.quota_per_server,
        pool.min_servers,
        pool.max_servers,
        len(pool.servers),
        pool.server_memory_bytes,
        pool.tritonserver,
    ]


def pool_server_row(server: pb.PoolServer) -> list[object]:
    """server_id, state, quota_used, quota_free, lease_ids, http."""
    return [
        server.server_id,
        server.state,
        server.quota_used,
        server.quota_free,
        ",".join(server.lease_ids),
        server.http,
    ]


def event_row(event: pb.Event) -> list[object]:
    """seq, at, kind, id, state, reason, lease_id, server_id."""
    return [
        event.seq,
        rfc3339(event.at),
        event.kind,
        event.id,
        event.state,
        event.reason,
        event.lease_id,
        event.server_id,
    ]


def format_event(event: pb.Event) -> str:
    """`2026-11-24T21:00:00.000Z  lease  l-abc  READY  reason`."""
    line = f"{rfc3339(event.at)}  {event.kind:<6} {event.id}  {event.state}"
    return line + (f"  {' '.join(event.reason.split())}" if event.reason else "")


def print_event(event: pb.Event, mode: str) -> None:
    if mode == "json":
        print(json.dumps(event_to_dict(event)), flush=True)
    elif mode == "porcelain":
        print_rows([event_row(event)])
    else:
        print(format_event(event), flush=True)


def _table(*columns: str, wrap: str = "") -> Table:
    """Columns never cut; only the `wrap` one (a long path) may fold onto more lines."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column != wrap, overflow="fold")
    return table


def print_names(records: Iterable[pb.LeaseName]) -> None:
    table = _table("NAME", "LEASE", "NEXT", "HTTP", "GRPC")
    for r in records:
        table.add_row(
            r.name,
            r.lease_id or "-",
            r.next_lease_id or "-",
            r.endpoints.http or "-",
            r.endpoints.grpc or "-",
        )
    out.print(table)


def print_name(record: pb.LeaseName) -> None:
    out.print(f"name [bold]{record.name}[/] -> {record.lease_id or '(no lease yet)'}")
    if record.next_lease_id:
        out.print(f"  next      {record.next_lease_id} (the name moves once it is READY)")
    if record.endpoints.http:
        out.print(f"  http      {record.endpoints.http}")
        out.print(f"  grpc      {record.endpoints.grpc}")


def _memory(pool: pb.Pool) -> str:
    return format_size(pool.server_memory_bytes) if pool.server_memory_bytes else "default"


def print_pools(pools: Iterable[pb.Pool]) -> None:
    table = _table(
        "NAME",
        "QUOTA/SERVER",
        "MIN",
        "MAX",
        "SERVERS",
        "MEMORY",
        "TRITONSERVER",
        wrap="TRITONSERVER",
    )
    for p in pools:
        table.add_row(
            p.name,
            str(p.quota_per_server),
            str(p.min_servers),
            str(p.max_servers),
            str(len(p.servers)),
            _memory(p),
            escape(p.tritonserver) or "-",
        )
    out.print(table)


def print_pool(pool: pb.Pool) -> None:
    out.print(f"pool [bold]{pool.name}[/]")
    out.print(f"  quota     {pool.quota_per_server} per server")
    out.print(f"  servers   {len(pool.servers)} (min {pool.min_servers}, max {pool.max_servers})")
    out.print(f"  memory    {_memory(pool)} per server")
    out.print(f"  triton    {escape(pool.tritonserver) or 'default'}", soft_wrap=True)
    if pool.servers:
        table = _table("SERVER", "STATE", "USED", "FREE", "LEASES", "HTTP")
        for s in pool.servers:
            table.add_row(
                s.server_id,
                s.state,
                str(s.quota_used),
                str(s.quota_free),
                ",".join(s.lease_ids) or "-",
                s.http or "-",
            )
        out.print(table)


def pools_json(pools: Iterable[pb.Pool]) -> list[dict[str, Any]]:
    return [pool_to_dict(p) for p in pools]


def names_json(records: Iterable[pb.LeaseName]) -> list[dict[str, Any]]:
    return [name_to_dict(r) for r in records]


def print_lease(lease: pb.Lease) -> None:
    data = lease_to_dict(lease)
    state = data["state"]
    colour = {"READY": "green", "FAILED": "red", "EXPIRED": "yellow", "PARKED": "blue"}.get(
        state, "cyan"
    )
    out.print(f"lease [bold]{lease.id}[/]" + (f" ({lease.name})" if lease.name else ""))
    out.print(f"  state     [{colour}]{state}[/]" + (f": {lease.reason}" if lease.reason else ""))
    if lease.endpoints.http:
        out.print(f"  http      {lease.endpoints.http}")
        out.print(f"  grpc      {lease.endpoints.grpc}")
        out.print(f"  metrics   {lease.endpoints.metrics}")
    if lease.state not in (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED):
        left = format_duration(lease.expires_at - time.time())
        out.print(f"  expires   {data['expires_at']} (in {left})")
        if lease.activity_window_s:
            window = format_duration(lease.activity_window_s)
            out.print(f"  renews    while used within {window}")
    if lease.pool:
        out.print(f"  pool      {lease.pool} (quota {lease.quota})")
    if lease.HasField("autoscale"):
        scale = lease.autoscale
        out.print(
            f"  autoscale {scale.min_replicas}-{scale.max_replicas} replicas, "
            f"{scale.metric} above {scale.target:g} per replica "
            f"(wants {lease.replicas_wanted})"
        )
        if scale.min_replicas == 0:
            parks = format_duration(scale.park_after_s) if scale.park_after_s else "the default"
            out.print(f"  parks     after {parks} without an inference; wakes on a request")
    if lease.state == pb.LEASE_PARKED and lease.parked_at:
        out.print(f"  parked    {format_duration(time.time() - lease.parked_at)} ago")
    if lease.wake_s:
        out.print(f"  woke      in {lease.wake_s:.2f}s (last wake)")
    for replica in data["replicas"]:
        where = replica["server"] or "-"
        state = replica["state"] + (" draining" if replica["draining"] else "")
        reason = f": {replica['reason']}" if replica["reason"] else ""
        address = replica["http"]
        out.print(f"  replica   {replica['id']}  {state}  server {where}  {address}{reason}")
    for model in data["models"]:
        line = f"  model     {model['name']}  {model['state']}"
        if model["load_s"]:
            line += f"  loaded in {model['load_s']:.2f}s"
        out.print(line + (f"  [red]{model['error']}[/]" if model["error"] else ""))


def print_table(leases: Iterable[pb.Lease]) -> None:
    now = time.time()
    rows = []
    for lease in leases:
        ended = lease.state in (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED)
        rows.append(
            [
                lease.id,
                lease.name or "-",
                state_name(lease.state),
                ",".join(m.name for m in lease.models),
                lease.endpoints.http or "-",
                lease.endpoints.grpc or "-",
                "-" if ended else format_duration(lease.expires_at - now),
            ]
        )
    print_columns(["ID", "NAME", "STATE", "MODELS", "HTTP", "GRPC", "EXPIRES IN"], rows)


def print_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns two spaces apart, as a borderless rich table draws them, but without
    rich (`tms lease list` is a short command). Cells are never cut: ids and addresses are
    copied by hand."""
    cells = [[" ".join(cell.split()) for cell in row] for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(header)]

    def line(row: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        return "  ".join(padded).rstrip()

    title = line(header)
    print(f"\x1b[1m{title}\x1b[0m" if sys.stdout.isatty() else title)
    for row in cells:
        print(line(row))
    sys.stdout.flush()


class DownloadRates:
    """Each model's download rate, from the progress updates seen since its fetch began."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[float, int]] = {}

    def describe(self, model: pb.ModelStatus, now: float) -> tuple[float, str]:
        """(how far along the model is, of 3 steps; bytes and rate while it downloads)."""
        steps = float(_MODEL_STEPS.get(model.state, 0))
        if model.state != pb.MODEL_FETCHING or not (model.bytes_done or model.bytes_total):
            self._first.pop(model.name, None)
            return steps, ""
        first_at, first_done = self._first.setdefault(model.name, (now, model.bytes_done))
        text = format_size(model.bytes_done)
        if model.bytes_total:
            steps += min(1.0, model.bytes_done / model.bytes_total)
            text += f" / {format_size(model.bytes_total)}"
        if now > first_at and model.bytes_done > first_done:
            text += f"  {format_size(int((model.bytes_done - first_done) / (now - first_at)))}/s"
        return steps, text


def follow_with_progress(updates: Iterator[pb.Lease], *, show: bool) -> pb.Lease:
    """Consumes `updates`, drawing a bar per model while it loads (with the bytes and the
    rate while it downloads); returns the last update."""
    last: pb.Lease | None = None
    if not show:
        for last in updates:  # noqa: B007 - the last one is returned
            pass
        assert last is not None
        return last
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<24}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[state]:<10}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[bytes]}"),
        console=err.real,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        rates = DownloadRates()
        for last in updates:
            now = time.monotonic()
            for model in last.models:
                if model.name not in tasks:
                    tasks[model.name] = progress.add_task(model.name, total=3, state="", bytes="")
                completed, transferred = rates.describe(model, now)
                progress.update(
                    tasks[model.name],
                    completed=completed,
                    state=model_state_name(model.state),
                    bytes=transferred,
                )
    assert last is not None
    return last


def print_plan(plan: pb.PlanResponse, mode: str) -> None:
    """A dry run's decision: what acquire would do now, and why."""
    if mode == "json":
        print(
            json.dumps(
                {
                    "decision": plan.decision,
                    "server": plan.server_id,
                    "node": plan.node,
                    "gpus": list(plan.gpus),
                    "reason": plan.reason,
                },
                indent=2,
            )
        )
        return
    if plan.decision == "join":
        where = f"join server {plan.server_id}"
    elif plan.decision == "start":
        gpus = ",".join(str(g) for g in plan.gpus)
        where = f"start a server on {plan.node or 'this node'}" + (
            f" GPUs {gpus}" if gpus else " (CPU)"
        )
    elif plan.decision == "wait":
        where = "wait PENDING"
    else:
        where = "refuse the lease"
    if mode == "porcelain":
        print(
            "\t".join(
                [
                    plan.decision,
                    plan.server_id,
                    plan.node,
                    ",".join(map(str, plan.gpus)),
                    plan.reason,
                ]
            )
        )
        return
    out.print(f"would {escape(where)}: {escape(plan.reason)}", soft_wrap=True)
