"""The `tms` command tree (also installed as `tmsctl`).

Every failure ends in one line on stderr and a non-zero exit: 1 for a failed operation, 2 for
a command line the parser refuses.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

import tms_core
from tms_core.cli.common import Context, daemon_options, fail, one_line_errors

PLUGIN_GROUP = "tms.cli_plugins"
# The built-in subcommands, imported only when named: `tms --version` and `tms lease list`
# load what they run and nothing else (no numpy, settings models or table renderers).
BUILTIN = {
    "lease": "tms_core.cli.lease:lease",
    "pool": "tms_core.cli.pool:pool",
    "allowlist": "tms_core.cli.allowlist:allowlist",
    "events": "tms_core.cli.events:events",
    "target": "tms_core.cli.target:target",
    "demo": "tms_core.cli.demo:demo",
    "cluster": "tms_core.cli.cluster:cluster",
    "models": "tms_core.cli.cluster:models",
    "token": "tms_core.cli.identity:token",
    "tenant": "tms_core.cli.identity:tenant",
    "audit": "tms_core.cli.identity:audit",
    "whoami": "tms_core.cli.identity:whoami",
}


def plugin_names() -> list[str]:
    """Commands other installed packages add to `tms` through the `tms.cli_plugins`
    entry-point group (`tms console` comes from tms_console)."""
    import importlib.metadata

    return [entry.name for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP)]


def plugin_command(name: str) -> click.Command | None:
    """The plugin command `name`, imported only now: tms_core names no plugin, so it stays
    headless, and a plugin that fails to load breaks only its own command."""
    import importlib.metadata

    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP, name=name):
        try:
            command = entry.load()
            if not isinstance(command, click.Command):
                raise TypeError(f"{entry.value} is not a click command")
        except Exception as exc:
            return _broken_plugin(name, exc)
        return command
    return None


def _broken_plugin(name: str, error: Exception) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def broken(args: tuple[str, ...]) -> None:
        """(Not available: its package failed to load.)"""
        fail(f"tms {name} is not available: {type(error).__name__}: {error}")
        sys.exit(1)

    return broken


class TmsGroup(click.Group):
    """Click's group, with usage errors on one line like every other error, and the plugin
    commands listed and loaded on demand."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # name -> "module:attribute" of commands imported when first named.
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy, *plugin_names()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command), self.lazy[cmd_name]
            self.add_command(command, cmd_name)
        elif command is None:
            command = plugin_command(cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = exc.format_message()
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message += f" (see '{exc.ctx.command_path} -h')"
            fail(message)
            sys.exit(exc.exit_code)
        except click.Abort:
            fail("interrupted")
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=TmsGroup, lazy=BUILTIN, context_settings={"help_option_names": ["-h", "--help"]})
@daemon_options
# The version from the package itself: reading the installed metadata costs a short command
# a fifth of its start (tests/unit/test_cli_start.py checks the two agree).
@click.version_option(version=tms_core.__version__, package_name="tms")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Leases on Triton models: acquire, renew, release, and the daemon that serves them.

    The daemon is the one named by -t (a saved target, host:port or http(s)://host:port),
    else $TMS_TARGET, else the default saved with `tms target set`, else 127.0.0.1:30345.
    """
    ctx.call_on_close(ctx.ensure_object(Context).close)


@cli.command()
@click.option("--listen", help="host:port for the gRPC API [127.0.0.1:30345].")
@click.option(
    "--sidecar-listen", help="host:port for the sidecars' own listener [127.0.0.1, any port]."
)
@click.option("--state", type=click.Path(path_type=Path), help="SQLite state file.")
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="YAML settings.")
@click.option(
    "--tritonserver",
    type=click.Path(path_type=Path),
    envvar="TMS_TRITONSERVER",
    help="tritonserver binary to run [the nvidia-pytriton wheel's].",
)
@click.option("--idle-grace", help="How long an idle server keeps running (e.g. 30s).")
@click.option("--gpus", help="GPUs to place on when NVML finds none (e.g. 2x80GiB).")
@click.option("--duration", "default_duration", help="Default lease duration (e.g. 1h).")
@click.option(
    "--leave-serving", is_flag=True, default=None, help="Leave servers running on shutdown."
)
@click.option("--log-level", default="INFO", show_default=True)
@one_line_errors
def daemon(
    listen: str | None,
    sidecar_listen: str | None,
    state: Path | None,
    config: Path | None,
    tritonserver: Path | None,
    idle_grace: str | None,
    gpus: str | None,
    default_duration: str | None,
    leave_serving: bool | None,
    log_level: str,
) -> None:
    """Run the daemon: the API, the lease state and the local Triton servers."""
    import asyncio
    import logging

    from tms_core.config import load_settings
    from tms_core.daemon import serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(
        config,
        daemon={
            "listen": listen,
            "sidecar_listen": sidecar_listen,
            "state": state,
            "leave_serving": leave_serving,
        },
        servers={"idle_grace": idle_grace},
        local={"tritonserver": tritonserver, "gpus": gpus},
        lease={"default_duration": default_duration},
    )
    asyncio.run(serve(settings))


def main() -> None:
    name = Path(sys.argv[0]).name if sys.argv else ""
    # `python -m tms_core.cli.main` names itself main.py: call it what users type.
    cli(prog_name="tms" if not name or name.endswith(".py") else name)


if __name__ == "__main__":
    main()
