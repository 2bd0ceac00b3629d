"""`tms target …`: daemons saved by name on this machine, and the default one.

These commands only edit the targets file (see target_store); they never call a daemon.
"""

from __future__ import annotations

import copy

import click
from rich.table import Table

from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    one_line_errors,
    output_option,
    pass_context,
    porcelain_option,
)
from tms_core.cli.target_store import Targets, check_name, normalize_address


@click.group()
@porcelain_option
def target() -> None:
    """Saved daemons: `-t NAME` instead of host:port, and the default target."""


def _done(ctx: Context, name: str, message: str) -> None:
    if ctx.porcelain:
        print(name)
    else:
        output.out.print(message)


@target.command()
@click.argument("name")
@click.argument("address", metavar="HOST:PORT|URL")
@click.option(
    "--token",
    "api_token",
    metavar="TOKEN",
    help="Save this API token with the target (the file is then readable by you only).",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, exists=True, resolve_path=True),
    help="Save the PEM authority of an https:// daemon's certificate (its path).",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, exists=True, resolve_path=True),
    help="Save a PEM client certificate for a daemon requiring one (its path).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, exists=True, resolve_path=True),
    help="Save the PEM private key of --cert (its path).",
)
@porcelain_option
@pass_context
@one_line_errors
def add(
    ctx: Context,
    name: str,
    address: str,
    api_token: str | None,
    ca: str | None,
    cert: str | None,
    key: str | None,
) -> None:
    """Save a daemon's address (with its API token and TLS files) under NAME."""
    check_name(name)
    saved = Targets.load()
    if name in saved.targets:
        raise ValueError(
            f"target {name!r} already exists ({saved.targets[name]}); "
            f"remove it first with `tms target remove {name}`"
        )
    saved.targets[name] = normalize_address(address)
    if api_token:
        saved.tokens[name] = api_token
    if (cert is None) != (key is None):
        raise ValueError("--cert and --key go together")
    files = {k: v for k, v in (("ca", ca), ("cert", cert), ("key", key)) if v}
    if files:
        saved.tls[name] = files
    saved.save()
    _done(ctx, name, f"saved target [bold]{name}[/] = {saved.targets[name]}")


@target.command(name="list")
@output_option
@porcelain_option
@pass_context
@one_line_errors
def list_(ctx: Context, fmt: str | None) -> None:
    """List the saved targets; the default is marked with *."""
    saved = Targets.load()
    names = sorted(saved.targets)
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(
            [{"name": n, "address": saved.targets[n], "default": n == saved.default} for n in names]
        )
    elif mode == "porcelain":
        output.print_rows(
            [n, saved.targets[n], "true" if n == saved.default else "false"] for n in names
        )
    elif not names:
        output.out.print("no saved targets; add one with `tms target add NAME HOST:PORT`")
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("", "NAME", "ADDRESS"):
            table.add_column(column, no_wrap=True)
        for n in names:
            table.add_row("*" if n == saved.default else "", n, saved.targets[n])
        output.out.print(table)


@target.command()
@click.argument("name")
@porcelain_option
@pass_context
@one_line_errors
def remove(ctx: Context, name: str) -> None:
    """Forget a saved target (and the default, if it was the default)."""
    saved = Targets.load()
    if name not in saved.targets:
        raise ValueError(saved.unknown(name))
    del saved.targets[name]
    saved.tokens.pop(name, None)
    saved.tls.pop(name, None)
    if saved.default == name:
        saved.default = None
    saved.save()
    _done(ctx, name, f"removed target [bold]{name}[/]")


@target.command(name="set")
@click.argument("name")
@porcelain_option
@pass_context
@one_line_errors
def set_(ctx: Context, name: str) -> None:
    """Make a saved target the default (used when neither -t nor $TMS_TARGET is given)."""
    saved = Targets.load()
    address = saved.address_of(name)
    saved.default = name
    saved.save()
    _done(ctx, name, f"default target: [bold]{name}[/] ({address})")


_rm = copy.copy(remove)
_rm.hidden = True
target.add_command(_rm, name="rm")
