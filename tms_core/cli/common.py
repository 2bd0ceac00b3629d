"""What every `tms` subcommand shares: the target, the output mode, the client, one-line errors.

The root group and every command that talks to the daemon take `-t/--target` and
`-z/--porcelain`, so both `tms -t prod lease list` and the TMS documentation's
`tmsctl lease create -m … -t HOST:PORT -z` work; a flag given after the subcommand wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tms_core.cli import target_store

if TYPE_CHECKING:
    from tms_core.api.client import TmsClient

# The client, grpc and the output module are imported when a command runs, not when the
# root group is built: `tms --version` needs none of them.

F = TypeVar("F", bound=Callable[..., Any])
# The environment variables of the TLS files (tms_core.api.client_tls.ENV, without its grpc).
TLS_ENV = {"ca": "TMS_CA_FILE", "cert": "TMS_CERT_FILE", "key": "TMS_KEY_FILE"}


def fail(message: str) -> None:
    """Prints `error: message` as one line on stderr."""
    from tms_core.cli import output

    output.err.print(f"[red]error:[/] {output.escape(message)}", soft_wrap=True)


def one_line_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from tms_core.api.client import ClientError
        from tms_core.errors import TmsError

        try:
            return func(*args, **kwargs)
        except (ClientError, TmsError, ValueError) as exc:
            fail(str(exc))
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (`tms events | head`): stop quietly, as other tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


class Context:
    """The options every command shares; the client is made on first use."""

    def __init__(self, target: str | None = None, *, porcelain: bool = False) -> None:
        self.target_arg = target
        self.token_arg: str | None = None
        self.tls_args: dict[str, str] = {}
        self.porcelain = porcelain
        self._client: TmsClient | None = None

    @property
    def target(self) -> str:
        return target_store.resolve(self.target_arg)

    @property
    def token(self) -> str | None:
        """`--token`, else `$TMS_TOKEN`, else the token saved with the target; None leaves
        the client to find a local daemon's own (docs/security.md)."""
        saved = target_store.resolve_with_token(self.target_arg)[1]
        return self.token_arg or os.environ.get("TMS_TOKEN") or saved

    @property
    def tls_files(self) -> dict[str, str | None]:
        """`--ca`, `--cert`, `--key`, each else its `TMS_*_FILE` variable, else the file saved
        with the target (None: the system's authorities, no client certificate)."""
        saved = target_store.saved_tls(self.target_arg)
        return {
            f"{name}_file": self.tls_args.get(name) or os.environ.get(env) or saved.get(name)
            for name, env in TLS_ENV.items()
        }

    def make_client(self, target: str) -> TmsClient:
        """A client of `target` with this command's token and TLS files (the console's feed
        makes its own)."""
        from tms_core.api.client import TmsClient

        files = self.tls_files
        return TmsClient(
            target,
            token=self.token,
            ca_file=files["ca_file"],
            cert_file=files["cert_file"],
            key_file=files["key_file"],
        )

    @property
    def client(self) -> TmsClient:
        if self._client is None:
            self._client = self.make_client(self.target)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def mode(self, fmt: str | None) -> str:
        """`json`, `porcelain` or `human`: an explicit `-o` wins over `-z`."""
        if fmt is not None:
            return fmt
        return "porcelain" if self.porcelain else "human"


pass_context = click.make_pass_decorator(Context, ensure=True)

TARGET_HELP = "The daemon: host:port, http(s)://host:port or a saved target name."
PORCELAIN_HELP = "Script-friendly output: ids and tab-separated lines, no headers."


def _set_target(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).target_arg = value


def _set_token(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).token_arg = value


def _set_tls(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and param.name is not None:
        ctx.ensure_object(Context).tls_args[param.name] = value


def _set_porcelain(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).porcelain = True


target_option = click.option(
    "-t",
    "--target",
    metavar="TARGET",
    expose_value=False,
    callback=_set_target,
    help=TARGET_HELP,
)
token_option = click.option(
    "--token",
    metavar="TOKEN",
    expose_value=False,
    callback=_set_token,
    help="API token [$TMS_TOKEN, the target's saved token, or a local daemon's own].",
)
_tls_path = click.Path(dir_okay=False, resolve_path=True)
ca_option = click.option(
    "--ca",
    type=_tls_path,
    expose_value=False,
    callback=_set_tls,
    help="PEM authority that signed an https:// daemon's certificate [$TMS_CA_FILE, the "
    "target's saved one, else the system's].",
)
cert_option = click.option(
    "--cert",
    type=_tls_path,
    expose_value=False,
    callback=_set_tls,
    help="PEM client certificate, for a daemon that requires one [$TMS_CERT_FILE].",
)
key_option = click.option(
    "--key",
    type=_tls_path,
    expose_value=False,
    callback=_set_tls,
    help="PEM private key of --cert [$TMS_KEY_FILE].",
)
porcelain_option = click.option(
    "-z",
    "--porcelain",
    is_flag=True,
    expose_value=False,
    callback=_set_porcelain,
    help=PORCELAIN_HELP,
)


def daemon_options(func: F) -> F:
    """`-t`, `--token`, the TLS files and `-z` on a subcommand: the same as on the root, and
    they win."""
    return target_option(token_option(ca_option(cert_option(key_option(porcelain_option(func))))))


output_option = click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["human", "json"]),
    default=None,
    help="Output format [human, or porcelain with -z].",
)
