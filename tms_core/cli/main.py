"""The `tms` command tree. Every failure ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from tms_core.api.client import default_target
from tms_core.cli import demo, lease
from tms_core.cli.common import Context, one_line_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-t",
    "--target",
    default=default_target,
    show_default="127.0.0.1:30345, or $TMS_TARGET",
    help="host:port of the tms daemon.",
)
@click.version_option(package_name="tms")
@click.pass_context
def cli(ctx: click.Context, target: str) -> None:
    """Leases on Triton models: acquire, renew, release, and the daemon that serves them."""
    ctx.obj = Context(target)


@cli.command()
@click.option("--listen", help="host:port for the gRPC API [127.0.0.1:30345].")
@click.option("--state", type=click.Path(path_type=Path), help="SQLite state file.")
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="YAML settings.")
@click.option(
    "--tritonserver",
    type=click.Path(path_type=Path),
    envvar="TMS_TRITONSERVER",
    help="tritonserver binary to run [the nvidia-pytriton wheel's].",
)
@click.option("--idle-grace", help="How long an idle server keeps running (e.g. 30s).")
@click.option("--duration", "default_duration", help="Default lease duration (e.g. 1h).")
@click.option(
    "--leave-serving", is_flag=True, default=None, help="Leave servers running on shutdown."
)
@click.option("--log-level", default="INFO", show_default=True)
@one_line_errors
def daemon(
    listen: str | None,
    state: Path | None,
    config: Path | None,
    tritonserver: Path | None,
    idle_grace: str | None,
    default_duration: str | None,
    leave_serving: bool | None,
    log_level: str,
) -> None:
    """Run the daemon: the API, the lease state and the local Triton servers."""
    from tms_core.config import load_settings
    from tms_core.daemon import serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(
        config,
        daemon={"listen": listen, "state": state, "leave_serving": leave_serving},
        local={"tritonserver": tritonserver, "idle_grace": idle_grace},
        lease={"default_duration": default_duration},
    )
    asyncio.run(serve(settings))


cli.add_command(lease.lease)
cli.add_command(demo.demo)


def main() -> None:
    cli(prog_name=Path(sys.argv[0]).name if sys.argv else "tms")


if __name__ == "__main__":
    main()
