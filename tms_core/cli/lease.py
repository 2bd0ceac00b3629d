"""`tms lease …`: acquire (or TMS's `create`), status, list, renew, release, and lease names."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import lease_to_dict, name_to_dict, parse_model_arg
from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    daemon_options,
    fail,
    one_line_errors,
    output_option,
    pass_context,
)

if TYPE_CHECKING:
    from tms_core.cli.spec import AutoscaleFields, LeaseSpec

# tms_core.cli.spec (lease files: yaml, the request dataclasses) is imported by the commands
# that read flags into a lease, not by `tms lease list` (benchmarks/cli_start.py).

F = TypeVar("F", bound=Callable[..., Any])


def _duration(value: str | None, field: str) -> float | None:
    from tms_core.cli.spec import parse_duration_field

    return None if value is None else parse_duration_field(value, field)


def _show(ctx: Context, lease: pb.Lease, fmt: str | None) -> None:
    mode = ctx.mode(fmt)
    if mode == "json":
        output.print_json(lease)
    elif mode == "porcelain":
        output.print_rows([output.lease_row(lease)])
    else:
        output.print_lease(lease)


@click.group()
@daemon_options
def lease() -> None:
    """Acquire and manage leases on models."""


def acquire_options(func: F) -> F:
    options = [
        click.option(
            "-f",
            "--file",
            "spec_file",
            type=click.Path(path_type=Path, dir_okay=False),
            help="A lease spec (YAML) whose keys mirror these flags; flags win over it.",
        ),
        click.option(
            "-m",
            "--model",
            "models",
            multiple=True,
            metavar="name=N,uri=U[,memory=M][,sha256=H]",
            help="A model to lease (repeat for several). URI: file:///path, a local path, "
            "s3://bucket/prefix or https://host/model.tar.gz; sha256: the archive's or "
            "file's digest, checked before use.",
        ),
        click.option("--name", help="A name for the lease (DNS-1123 label)."),
        click.option(
            "--duration",
            help="How long the lease lives without renewal (e.g. 10m, 1h); with "
            "--activity-window, the minimum.",
        ),
        click.option(
            "--activity-window",
            help="Renew automatically while the models are used within this window (e.g. 5m).",
        ),
        click.option(
            "-p",
            "--pool",
            "--triton-pool",
            "pool",
            help="Join this Triton pool instead of getting a server of its own.",
        ),
        click.option("--quota", type=int, help="Pool quota units the lease takes (with --pool)."),
        click.option(
            "--tritonserver",
            "--triton-image",
            "tritonserver",
            metavar="PATH",
            help="The Triton binary for the lease's own server; must be on the allowlist.",
        ),
        click.option(
            "--gpus", type=click.IntRange(min=0), help="GPUs for its server (0: CPU) [1 if any]."
        ),
        click.option("--gpu-product", help="Only GPUs whose name contains this (e.g. A100)."),
        click.option(
            "--node-selector",
            "node_selector",
            multiple=True,
            metavar="KEY=VALUE",
            help="Only nodes with this label (repeat for several).",
        ),
        click.option("--exclusive", is_flag=True, default=None, help="A server of its own."),
        click.option(
            "--colocate-with",
            "colocate_with",
            multiple=True,
            metavar="LEASE|KEY=VALUE",
            help="Run beside this lease (id or name) or label.",
        ),
        click.option(
            "--avoid",
            multiple=True,
            metavar="LEASE|KEY=VALUE",
            help="Never share a server with this lease (id or name) or label.",
        ),
        click.option(
            "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the lease."
        ),
        click.option("--priority", type=int, help="Higher is placed first when leases wait."),
        click.option(
            "--autoscale",
            metavar="MIN:MAX",
            help="Keep the models on MIN to MAX replicas, scaled by the daemon on a metric; "
            "MIN 0: park when idle, wake on the first request.",
        ),
        click.option(
            "--park-after",
            metavar="DURATION",
            help="With --autoscale 0:MAX: park after this long without an inference [5m].",
        ),
        click.option(
            "--autoscale-metric",
            metavar="NAME",
            help="Metric to scale on, per replica [nv_inference_queue_duration_ms].",
        ),
        click.option(
            "--autoscale-target",
            type=float,
            metavar="VALUE",
            help="Average metric value per pod above which replicas are added [200].",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Print where the lease would go and why; change nothing.",
        ),
        click.option("--no-wait", is_flag=True, help="Return once the lease is accepted."),
        output_option,
        daemon_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def spec_from_flags(
    models: tuple[str, ...],
    name: str | None,
    duration: str | None,
    activity_window: str | None,
    pool: str | None,
    quota: int | None,
    tritonserver: str | None,
    gpus: int | None = None,
    gpu_product: str | None = None,
    node_selector: tuple[str, ...] = (),
    exclusive: bool | None = None,
    colocate_with: tuple[str, ...] = (),
    avoid: tuple[str, ...] = (),
    labels: tuple[str, ...] = (),
    priority: int | None = None,
    autoscale: str | None = None,
    autoscale_metric: str | None = None,
    autoscale_target: float | None = None,
    park_after: str | None = None,
) -> LeaseSpec:
    from tms_core.cli.spec import LeaseSpec, local_path

    parsed = []
    for i, text in enumerate(models):
        try:
            parsed.append(parse_model_arg(text))
        except ValueError as exc:
            raise ValueError(f"--model #{i + 1}: {exc}") from None
    return LeaseSpec(
        models=tuple(parsed) or None,
        name=name,
        duration_s=_duration(duration, "--duration"),
        activity_window_s=_duration(activity_window, "--activity-window"),
        pool=pool,
        quota=quota,
        tritonserver=local_path(tritonserver, Path.cwd()) if tritonserver else None,
        gpus=gpus,
        gpu_product=gpu_product,
        node_selector=_pairs(node_selector, "--node-selector"),
        exclusive=exclusive,
        colocate_with=colocate_with or None,
        avoid=avoid or None,
        labels=_pairs(labels, "--label"),
        priority=priority,
        autoscale=_autoscale_flags(autoscale, autoscale_metric, autoscale_target, park_after),
    )


def _autoscale_flags(
    replicas: str | None, metric: str | None, target: float | None, park_after: str | None
) -> AutoscaleFields | None:
    from tms_core.cli.spec import parse_duration_field, parse_replicas

    given: AutoscaleFields = parse_replicas(replicas) if replicas else {}
    if park_after is not None:
        given["park_after_s"] = parse_duration_field(park_after, "--park-after")
    if metric is not None:
        given["metric"] = metric
    if target is not None:
        if target <= 0:
            raise ValueError("--autoscale-target: must be above 0")
        given["target"] = target
    return given or None


def _pairs(items: tuple[str, ...], flag: str) -> dict[str, str] | None:
    if not items:
        return None
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag}: {item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def _acquire(
    ctx: Context,
    *,
    spec_file: Path | None,
    no_wait: bool,
    dry_run: bool = False,
    fmt: str | None,
    id_only: bool,
    **flags: Any,
) -> None:
    from tms_core.cli.spec import LeaseSpec, load_spec

    spec = (load_spec(spec_file) if spec_file else LeaseSpec()).overridden_by(
        spec_from_flags(**flags)
    )
    if not spec.models:
        raise ValueError("no models to lease: give -m name=NAME,uri=URI, or models: in a -f file")
    mode = ctx.mode(fmt)
    options = spec.options()
    if dry_run:
        output.print_plan(ctx.client.plan(spec.models, options), mode)
        return
    updates = ctx.client.acquire(spec.models, options)
    if no_wait:
        final = next(updates)
        updates.close()
    else:
        final = output.follow_with_progress(updates, show=mode == "human" and sys.stderr.isatty())
    if mode == "json":
        output.print_json(final)
    elif mode == "porcelain" or id_only:
        print(final.id)
    else:
        output.print_lease(final)
    if final.state == pb.LEASE_FAILED:
        fail(f"lease {final.id} FAILED: {final.reason}")
        sys.exit(1)


@lease.command()
@acquire_options
@pass_context
@one_line_errors
def acquire(ctx: Context, /, **options: Any) -> None:
    """Acquire a lease: place the models on a server, load them, print the endpoints."""
    _acquire(ctx, id_only=False, **options)


@lease.command()
@acquire_options
@pass_context
@one_line_errors
def create(ctx: Context, /, **options: Any) -> None:
    """Acquire a lease, TMS style: print only its id; a FAILED lease exits 1."""
    _acquire(ctx, id_only=True, **options)


@lease.command()
@click.argument("lease_id", metavar="LEASE")
@output_option
@daemon_options
@pass_context
@one_line_errors
def status(ctx: Context, lease_id: str, fmt: str | None) -> None:
    """Show one lease (LEASE: its id or a name pointing at it)."""
    _show(ctx, ctx.client.status(lease_id), fmt)


@lease.command()
@click.argument("lease_id", metavar="LEASE")
@click.option("--no-wait", is_flag=True, help="Return once the wake has begun.")
@output_option
@daemon_options
@pass_context
@one_line_errors
def wake(ctx: Context, lease_id: str, no_wait: bool, fmt: str | None) -> None:
    """Wake a PARKED lease (as its first request would) and wait until it is READY."""
    woken = ctx.client.wake(lease_id, wait=not no_wait)
    _show(ctx, woken, fmt)
    if woken.state == pb.LEASE_PARKED and woken.woke_at and woken.reason:
        fail(f"lease {woken.id} did not wake: {woken.reason}")
        sys.exit(1)


@lease.command()
@click.argument("lease_id", metavar="LEASE")
@click.argument("replicas", type=click.IntRange(min=0))
@output_option
@daemon_options
@pass_context
@one_line_errors
def scale(ctx: Context, lease_id: str, replicas: int, fmt: str | None) -> None:
    """Set an autoscaling lease's replicas now (0 parks one whose MIN is 0); the
    autoscaler goes on from there."""
    _show(ctx, ctx.client.scale(lease_id, replicas), fmt)


@lease.command(name="list")
@click.option("-a", "--all", "include_ended", is_flag=True, help="Include ended leases.")
@output_option
@daemon_options
@pass_context
@one_line_errors
def list_(ctx: Context, include_ended: bool, fmt: str | None) -> None:
    """List the leases."""
    leases = ctx.client.list_leases(include_ended=include_ended)
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump([lease_to_dict(lease) for lease in leases])
    elif mode == "porcelain":
        output.print_rows(output.lease_row(lease) for lease in leases)
    else:
        output.print_table(leases)


@lease.command()
@click.argument("lease_id", metavar="LEASE")
@click.option("--duration", help="Extend to this long from now [the lease's own duration].")
@output_option
@daemon_options
@pass_context
@one_line_errors
def renew(ctx: Context, lease_id: str, duration: str | None, fmt: str | None) -> None:
    """Renew a lease (by id or name) so it does not expire."""
    _show(ctx, ctx.client.renew(lease_id, _duration(duration, "--duration") or 0.0), fmt)


@lease.command()
@click.argument("lease_id", metavar="LEASE")
@click.option("--no-wait", is_flag=True, help="Return without waiting for the unload.")
@output_option
@daemon_options
@pass_context
@one_line_errors
def release(ctx: Context, lease_id: str, no_wait: bool, fmt: str | None) -> None:
    """Release a lease (by id or name): its models are unloaded (unless another lease
    holds them)."""
    _show(ctx, ctx.client.release(lease_id, wait=not no_wait), fmt)


@lease.group(name="name")
@daemon_options
def name_group() -> None:
    """Stable names for leases, with addresses that follow the name from lease to lease."""


def _show_name(ctx: Context, record: pb.LeaseName, fmt: str | None) -> None:
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(name_to_dict(record))
    elif mode == "porcelain":
        print(record.name)
    else:
        output.print_name(record)


@name_group.command(name="create")
@click.argument("name")
@click.argument("lease_id", metavar="LEASE")
@output_option
@daemon_options
@pass_context
@one_line_errors
def name_create(ctx: Context, name: str, lease_id: str, fmt: str | None) -> None:
    """Point NAME at LEASE (an id or a name; creating NAME); it moves once LEASE is READY."""
    _show_name(ctx, ctx.client.set_name(name, lease_id), fmt)


@name_group.command(name="delete")
@click.argument("name")
@output_option
@daemon_options
@pass_context
@one_line_errors
def name_delete(ctx: Context, name: str, fmt: str | None) -> None:
    """Delete a lease name (the lease itself stays)."""
    record = ctx.client.delete_name(name)
    if ctx.mode(fmt) == "human":
        output.out.print(f"deleted name [bold]{record.name}[/]")
    else:
        _show_name(ctx, record, fmt)


@name_group.command(name="list")
@output_option
@daemon_options
@pass_context
@one_line_errors
def name_list(ctx: Context, fmt: str | None) -> None:
    """List the lease names."""
    records = ctx.client.list_names()
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(output.names_json(records))
    elif mode == "porcelain":
        output.print_rows(output.name_row(r) for r in records)
    else:
        output.print_names(records)
