"""`tms console`, added to the `tms` command through the `tms.cli_plugins` entry point.

Light on purpose: every `tms` command loads this module, so Textual is imported only when
the console starts.
"""

from __future__ import annotations

import click

from tms_core.cli.common import Context, daemon_options, one_line_errors, pass_context


@click.command()
@click.option(
    "--retry",
    "retry_s",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between reconnect attempts while the daemon is unreachable.",
)
@daemon_options
@pass_context
@one_line_errors
def console(ctx: Context, retry_s: float) -> None:
    """Open the terminal console: GPU occupancy, leases, actions and test inference."""
    from tms_console.console.app import TmsConsole

    TmsConsole(ctx.target, retry_s=retry_s, client_factory=ctx.make_client).run()
