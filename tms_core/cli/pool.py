"""`tms pool …`: Triton pools that leases share by quota (create, delete, list, status)."""

from __future__ import annotations

from pathlib import Path

import click

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import pool_to_dict
from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    daemon_options,
    one_line_errors,
    output_option,
    pass_context,
)
from tms_core.cli.spec import local_path
from tms_core.units import parse_size


@click.group()
@daemon_options
def pool() -> None:
    """Triton pools: servers that leases share, each taking part of a server's quota."""


def _show(ctx: Context, record: pb.Pool, fmt: str | None) -> None:
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(pool_to_dict(record))
    elif mode == "porcelain":
        print(record.name)
    else:
        output.print_pool(record)


@pool.command()
@click.argument("name")
@click.option(
    "--quota",
    "--quota-per-server",
    "quota",
    type=int,
    required=True,
    help="Quota units each server offers (units are yours to choose, e.g. GiB).",
)
@click.option(
    "--max",
    "--max-servers",
    "max_servers",
    type=int,
    required=True,
    help="At most this many servers.",
)
@click.option(
    "--min",
    "--min-servers",
    "min_servers",
    type=int,
    default=0,
    show_default=True,
    help="Keep at least this many servers running.",
)
@click.option("--memory", help="Memory each server offers (e.g. 8GiB) [servers.memory].")
@click.option(
    "--tritonserver",
    "--triton-image",
    "tritonserver",
    metavar="PATH",
    help="The Triton binary for the pool's servers; must be on the allowlist [the default].",
)
@output_option
@daemon_options
@pass_context
@one_line_errors
def create(
    ctx: Context,
    name: str,
    quota: int,
    max_servers: int,
    min_servers: int,
    memory: str | None,
    tritonserver: str | None,
    fmt: str | None,
) -> None:
    """Create a pool."""
    memory_bytes = 0
    if memory is not None:
        try:
            memory_bytes = parse_size(memory)
        except ValueError as exc:
            raise ValueError(f"--memory: {exc}") from None
    record = ctx.client.create_pool(
        name,
        quota_per_server=quota,
        max_servers=max_servers,
        min_servers=min_servers,
        server_memory_bytes=memory_bytes,
        tritonserver=local_path(tritonserver, Path.cwd()) if tritonserver else "",
    )
    _show(ctx, record, fmt)


@pool.command()
@click.argument("name")
@output_option
@daemon_options
@pass_context
@one_line_errors
def delete(ctx: Context, name: str, fmt: str | None) -> None:
    """Delete a pool that holds no leases; its servers stop."""
    record = ctx.client.delete_pool(name)
    if ctx.mode(fmt) == "human":
        output.out.print(f"deleted pool [bold]{record.name}[/]")
    else:
        _show(ctx, record, fmt)


@pool.command(name="list")
@output_option
@daemon_options
@pass_context
@one_line_errors
def list_(ctx: Context, fmt: str | None) -> None:
    """List the pools."""
    pools = ctx.client.list_pools()
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(output.pools_json(pools))
    elif mode == "porcelain":
        output.print_rows(output.pool_row(p) for p in pools)
    else:
        output.print_pools(pools)


@pool.command()
@click.argument("name")
@output_option
@daemon_options
@pass_context
@one_line_errors
def status(ctx: Context, name: str, fmt: str | None) -> None:
    """Show a pool and its servers: the quota each uses and the leases on it."""
    record = ctx.client.pool_status(name)
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(pool_to_dict(record))
    elif mode == "porcelain":
        output.print_rows(output.pool_server_row(s) for s in record.servers)
    else:
        output.print_pool(record)
