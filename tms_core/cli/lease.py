"""`tms lease …`: acquire, status, list, renew, release."""

from __future__ import annotations

import json
import sys

import click

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import lease_to_dict, parse_model_arg
from tms_core.cli import output
from tms_core.cli.common import Context, one_line_errors, pass_context
from tms_core.units import parse_duration

OUTPUT = click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="Output format.",
)


def _duration(value: str | None, field: str) -> float:
    if value is None:
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def _show(lease: pb.Lease, fmt: str) -> None:
    if fmt == "json":
        output.print_json(lease)
    else:
        output.print_lease(lease)


@click.group()
def lease() -> None:
    """Acquire and manage leases on models."""


@lease.command()
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    required=True,
    metavar="name=N,uri=U[,memory=M]",
    help="A model to lease (repeat for several). URI: file:///path or a local path.",
)
@click.option("--name", default="", help="A name for the lease (DNS-1123 label).")
@click.option("--duration", help="How long the lease lives without renewal (e.g. 10m, 1h).")
@click.option("--no-wait", is_flag=True, help="Return once the lease is accepted.")
@OUTPUT
@pass_context
@one_line_errors
def acquire(
    ctx: Context, models: tuple[str, ...], name: str, duration: str | None, no_wait: bool, fmt: str
) -> None:
    """Acquire a lease: place the models on a server, load them, print the endpoints."""
    specs = []
    for i, text in enumerate(models):
        try:
            specs.append(parse_model_arg(text))
        except ValueError as exc:
            raise ValueError(f"--model #{i + 1}: {exc}") from None
    updates = ctx.client.acquire(specs, name=name, duration_s=_duration(duration, "--duration"))
    if no_wait:
        final = next(updates)
        updates.close()
    else:
        final = output.follow_with_progress(updates, show=fmt == "human" and sys.stderr.isatty())
    _show(final, fmt)
    if final.state == pb.LEASE_FAILED:
        sys.exit(1)


@lease.command()
@click.argument("lease_id")
@OUTPUT
@pass_context
@one_line_errors
def status(ctx: Context, lease_id: str, fmt: str) -> None:
    """Show one lease."""
    _show(ctx.client.status(lease_id), fmt)


@lease.command(name="list")
@click.option("-a", "--all", "include_ended", is_flag=True, help="Include ended leases.")
@OUTPUT
@pass_context
@one_line_errors
def list_(ctx: Context, include_ended: bool, fmt: str) -> None:
    """List the leases."""
    leases = ctx.client.list_leases(include_ended=include_ended)
    if fmt == "json":
        print(json.dumps([lease_to_dict(lease) for lease in leases], indent=2))
    else:
        output.print_table(leases)


@lease.command()
@click.argument("lease_id")
@click.option("--duration", help="Extend to this long from now [the lease's own duration].")
@OUTPUT
@pass_context
@one_line_errors
def renew(ctx: Context, lease_id: str, duration: str | None, fmt: str) -> None:
    """Renew a lease so it does not expire."""
    _show(ctx.client.renew(lease_id, _duration(duration, "--duration")), fmt)


@lease.command()
@click.argument("lease_id")
@click.option("--no-wait", is_flag=True, help="Return without waiting for the unload.")
@OUTPUT
@pass_context
@one_line_errors
def release(ctx: Context, lease_id: str, no_wait: bool, fmt: str) -> None:
    """Release a lease: its models are unloaded (unless another lease holds them)."""
    _show(ctx.client.release(lease_id, wait=not no_wait), fmt)
