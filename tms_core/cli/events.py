"""`tms events`: the daemon's log of lease, model, server, name and pool state changes.

Without `-f` it prints the events the daemon keeps and returns; with `-f` it keeps following
until interrupted.
"""

from __future__ import annotations

import click

from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    daemon_options,
    one_line_errors,
    output_option,
    pass_context,
)


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    metavar="SEQ",
    help="Only events after this sequence number.",
)
@output_option
@daemon_options
@pass_context
@one_line_errors
def events(ctx: Context, follow: bool, since: int, fmt: str | None) -> None:
    """Print the daemon's kept events (lease, model, server, name, pool); -f follows."""
    mode = ctx.mode(fmt)
    client = ctx.client
    if follow:
        try:
            for event in client.watch(since_seq=since, replay=True):
                output.print_event(event, mode)
        except KeyboardInterrupt:
            pass
        return
    for event in client.watch(since_seq=since, replay=True, follow=False):
        output.print_event(event, mode)
