"""`tms allowlist …`: the Triton binaries that pools and bespoke leases may run."""

from __future__ import annotations

import copy
from pathlib import Path

import click
from rich.markup import escape

from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    daemon_options,
    one_line_errors,
    output_option,
    pass_context,
)
from tms_core.cli.spec import local_path


@click.group()
@daemon_options
def allowlist() -> None:
    """The Triton binaries (tritonserver paths) that leases and pools may run."""


def _path(text: str) -> str:
    # The daemon compares paths as text: make relative ones absolute, keep symlinks as given.
    return local_path(text, Path.cwd())


def _done(ctx: Context, path: str, entries: list[str], fmt: str | None, verb: str) -> None:
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(entries)
    elif mode == "porcelain":
        print(path)
    else:
        output.out.print(f"{verb} {escape(path)}")


@allowlist.command()
@click.argument("path")
@output_option
@daemon_options
@pass_context
@one_line_errors
def add(ctx: Context, path: str, fmt: str | None) -> None:
    """Allow a tritonserver binary (an absolute path on the daemon's machine)."""
    path = _path(path)
    _done(ctx, path, ctx.client.allowlist_add(path), fmt, "allowed")


@allowlist.command(name="list")
@output_option
@daemon_options
@pass_context
@one_line_errors
def list_(ctx: Context, fmt: str | None) -> None:
    """List the allowed tritonserver binaries, one a line."""
    entries = ctx.client.allowlist()
    if ctx.mode(fmt) == "json":
        output.dump(entries)
    else:
        for entry in entries:
            print(entry)


@allowlist.command()
@click.argument("path")
@output_option
@daemon_options
@pass_context
@one_line_errors
def rm(ctx: Context, path: str, fmt: str | None) -> None:
    """Remove a tritonserver binary from the allowlist (not one a pool uses)."""
    path = _path(path)
    _done(ctx, path, ctx.client.allowlist_remove(path), fmt, "removed")


_remove = copy.copy(rm)
_remove.hidden = True
allowlist.add_command(_remove, name="remove")
