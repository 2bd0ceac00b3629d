"""`%tms …` and `%%tms lease`: the CLI's lease commands, returning Python objects.

The flags are the CLI's own (`tms_core.cli.lease`'s click options), parsed by click without
its exit handling, so `%tms acquire` takes exactly what `tms lease acquire` takes. Every
mistake becomes one `UsageError` line: IPython prints it without a traceback.
"""

from __future__ import annotations

import difflib
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Float, TraitError, Unicode, validate

from tms_console.jupyter.lease import KernelLeases, NotebookLease
from tms_console.jupyter.views import ClusterView, InferView, LeaseList
from tms_console.testinfer import PROTOCOLS, TestInferError
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, TmsClient, state_name
from tms_core.cli import output, target_store
from tms_core.cli.common import Context, daemon_options
from tms_core.cli.lease import acquire_options, spec_from_flags
from tms_core.cli.spec import LeaseSpec, parse_duration_field, spec_from_data
from tms_core.errors import TmsError

SUBCOMMANDS = (
    "target",
    "cluster",
    "leases",
    "acquire",
    "status",
    "renew",
    "wake",
    "release",
    "infer",
    "dashboard",
    "infer-widget",
)
CELL_SUBCOMMANDS = ("lease",)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Call(Context):
    """The click context object of one magic call: the CLI's, plus what the call returns."""

    def __init__(self, target: str | None) -> None:
        super().__init__(target)
        self.result: Any = None


def _keep_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--keep",
        is_flag=True,
        help="Keep the lease when the kernel shuts down (by default the kernel releases it).",
    )(func)


@magics_class
class TmsMagics(Magics):
    """`%tms SUBCOMMAND …` (see `%tms help`); settings with `%config TmsMagics.<name> = …`."""

    target = Unicode(
        "",
        help="The daemon: host:port, http(s)://host:port or a saved target name "
        "[$TMS_TARGET, the saved default, or the local daemon].",
    ).tag(config=True)
    token = Unicode(
        "",
        help="A bearer token sent with every call to the daemon (for a daemon behind an "
        "authenticating proxy) [$TMS_TOKEN].",
    ).tag(config=True)
    ca_file = Unicode(
        "",
        help="PEM authority of an https:// daemon's certificate [$TMS_CA_FILE, else the system's].",
    ).tag(config=True)
    cert_file = Unicode(
        "", help="PEM client certificate, for a daemon that requires one [$TMS_CERT_FILE]."
    ).tag(config=True)
    key_file = Unicode("", help="PEM private key of cert_file [$TMS_KEY_FILE].").tag(config=True)
    refresh_interval = Float(
        1.0, help="Seconds between the dashboard's redraws of countdowns and retries."
    ).tag(config=True)
    release_on_exit = Bool(
        True,
        help="Release the leases acquired here when the kernel shuts down (`--keep` and "
        "`lease.keep()` opt one out).",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._clients: dict[tuple[str, ...], TmsClient] = {}
        self.kernel_leases = KernelLeases(self._new_client)
        self.widgets: list[Any] = []  # live dashboards, stopped when the extension unloads

    @validate("refresh_interval")
    def _check_interval(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0.05 <= value <= 3600:
            raise TraitError(f"refresh_interval: expected 0.05 to 3600 seconds, got {value}")
        return value

    @validate("target")
    def _check_target(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value and target_store.looks_like_address(value):
            try:
                return target_store.normalize_address(value)
            except ValueError as exc:
                raise TraitError(f"target: {exc}") from None
        return value

    # Clients

    def resolve_target(self, flag: str | None = None) -> str:
        try:
            return target_store.resolve(flag or self.target or None)
        except ValueError as exc:
            raise UsageError(one_line(str(exc))) from None

    def _token(self) -> str:
        return self.token or os.environ.get("TMS_TOKEN", "")

    def _tls(self) -> tuple[str, str, str]:
        return (self.ca_file, self.cert_file, self.key_file)

    def _new_client(self, target: str) -> TmsClient:
        ca, cert, key = self._tls()
        try:
            return TmsClient(
                target,
                token=self._token() or None,
                ca_file=ca or None,
                cert_file=cert or None,
                key_file=key or None,
            )
        except ClientError as exc:
            raise UsageError(one_line(str(exc))) from None

    def client(self, target: str | None = None) -> TmsClient:
        address = self.resolve_target(target)
        key = (address, self._token(), *self._tls())
        if key not in self._clients:
            self._clients[key] = self._new_client(address)
        return self._clients[key]

    def close(self) -> None:
        for widget in list(self.widgets):
            widget.close()
        self.widgets.clear()
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # The magic

    @line_cell_magic
    def tms(self, line: str, cell: str | None = None) -> Any:
        """Leases from the notebook: `%tms acquire -m name=add_sub,uri=./add_sub`, `%tms
        leases`, `%tms dashboard` … (`%tms help` lists them; `%tms CMD --help` explains one).
        As a cell magic, `%%tms lease` takes a lease spec in YAML."""
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%tms: {exc}") from None
        if cell is not None:
            if not args or args[0] not in CELL_SUBCOMMANDS:
                raise UsageError("%%tms: expected `%%tms lease [VAR] [--keep] [--no-wait]`")
            return self._cell_lease(args[1:], cell)
        if not args or args[0] in ("help", "-h", "--help"):
            print(self._help())
            return None
        name, rest = args[0], args[1:]
        if name not in SUBCOMMANDS:
            close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(SUBCOMMANDS)}"
            raise UsageError(f"%tms: unknown subcommand {name!r}; {hint}")
        return self._run(self._commands()[name], rest)

    def _help(self) -> str:
        lines = ["%tms SUBCOMMAND [ARGS] (%tms SUBCOMMAND --help for its flags):"]
        for name, command in self._commands().items():
            lines.append(f"  {name:<13} {command.get_short_help_str(70)}")
        lines.append(
            "  %%tms lease [VAR] [--keep] [--no-wait]   acquire the YAML lease spec in the cell"
        )
        return "\n".join(lines)

    def _run(self, command: click.Command, args: list[str]) -> Any:
        call = _Call(None)
        try:
            command.main(
                args,
                prog_name=f"%tms {command.name}",
                standalone_mode=False,
                obj=call,
            )
        except click.ClickException as exc:
            raise UsageError(one_line(f"%tms {command.name}: {exc.format_message()}")) from None
        except click.exceptions.Abort:
            raise UsageError(f"%tms {command.name}: interrupted") from None
        except (ClientError, TmsError, TestInferError, ValueError, OSError) as exc:
            raise UsageError(one_line(str(exc))) from None
        except KeyboardInterrupt:
            raise UsageError(f"%tms {command.name}: interrupted") from None
        return call.result

    # Subcommands (click commands whose callbacks set `call.result`)

    def _commands(self) -> dict[str, click.Command]:
        magics = self
        pass_call = click.make_pass_decorator(_Call)

        @click.command(name="target")
        @click.argument("action", required=False, type=click.Choice(["use", "list"]))
        @click.argument("value", required=False)
        @pass_call
        def target(call: _Call, action: str | None, value: str | None) -> None:
            """Show the daemon this notebook talks to; `use NAME|HOST:PORT` changes it,
            `list` shows the saved targets (`tms target add` saves them)."""
            if action == "use":
                if not value:
                    raise click.UsageError("`use` needs a saved target name or HOST:PORT")
                call.result = magics.resolve_target(value)
                magics.target = value
            elif action == "list":
                saved = target_store.Targets.load()
                call.result = {name: address for name, address in sorted(saved.targets.items())}
                if not saved.targets:
                    print(f"no saved targets ({saved.path})")
                for name, address in call.result.items():
                    mark = "*" if name == saved.default else " "
                    print(f"{mark} {name:<16} {address}")
            else:
                if value:
                    raise click.UsageError("expected `use NAME|HOST:PORT` or `list`")
                call.result = magics.resolve_target()

        @click.command(name="cluster")
        @daemon_options
        @pass_call
        def cluster(call: _Call) -> None:
            """GPU occupancy: per node and GPU, memory declared and measured, servers, leases."""
            client = magics.client(call.target_arg)
            call.result = ClusterView.fetch(client)

        @click.command(name="leases")
        @click.option("-a", "--all", "include_ended", is_flag=True, help="Include ended leases.")
        @daemon_options
        @pass_call
        def leases(call: _Call, include_ended: bool) -> None:
            """The leases, as a table (a list of lease objects)."""
            client = magics.client(call.target_arg)
            found = client.list_leases(include_ended=include_ended)
            call.result = LeaseList(magics._wrap(lease, client) for lease in found)

        @click.command(name="acquire")
        @acquire_options
        @_keep_options
        @pass_call
        def acquire(call: _Call, /, **options: Any) -> None:
            """Acquire a lease (the flags of `tms lease acquire`); returns the lease object."""
            keep = options.pop("keep")
            spec_file = options.pop("spec_file")
            no_wait = options.pop("no_wait")
            dry_run = options.pop("dry_run")
            fmt = options.pop("fmt")
            base = LeaseSpec()
            if spec_file is not None:
                from tms_core.cli.spec import load_spec

                base = load_spec(spec_file)
            spec = base.overridden_by(spec_from_flags(**options))
            call.result = magics.acquire(
                spec,
                target=call.target_arg,
                keep=keep,
                no_wait=no_wait,
                dry_run=dry_run,
                mode=call.mode(fmt),
            )

        @click.command(name="status")
        @click.argument("lease")
        @daemon_options
        @pass_call
        def status(call: _Call, lease: str) -> None:
            """A lease's state, models and endpoints."""
            client = magics.client(call.target_arg)
            call.result = magics._wrap(client.status(magics.lease_id(lease, client)), client)

        @click.command(name="renew")
        @click.argument("lease")
        @click.option("--duration", help="Extend to this long from now [the lease's own].")
        @daemon_options
        @pass_call
        def renew(call: _Call, lease: str, duration: str | None) -> None:
            """Extend a lease."""
            seconds = parse_duration_field(duration, "--duration") if duration else 0.0
            client = magics.client(call.target_arg)
            renewed = client.renew(magics.lease_id(lease, client), seconds)
            call.result = magics._wrap(renewed, client)

        @click.command(name="wake")
        @click.argument("lease")
        @daemon_options
        @pass_call
        def wake(call: _Call, lease: str) -> None:
            """Wake a PARKED lease and wait until it is READY (or PARKED again, saying why)."""
            client = magics.client(call.target_arg)
            woken = client.wake(magics.lease_id(lease, client))
            call.result = magics._wrap(woken, client)

        @click.command(name="release")
        @click.argument("lease")
        @click.option("--no-wait", is_flag=True, help="Return without waiting for the unload.")
        @daemon_options
        @pass_call
        def release(call: _Call, lease: str, no_wait: bool) -> None:
            """Release a lease (and untie it from the kernel)."""
            client = magics.client(call.target_arg)
            lease_id = magics.lease_id(lease, client)
            released = client.release(lease_id, wait=not no_wait)
            magics.kernel_leases.forget(lease_id)
            call.result = magics._wrap(released, client)

        @click.command(name="infer")
        @click.argument("lease")
        @click.argument("inputs", nargs=-1, metavar="[NAME=VALUE]...")
        @click.option("-m", "--model", help="The model to call [the lease's only one].")
        @click.option("--protocol", type=click.Choice(PROTOCOLS), default="http", show_default=True)
        @daemon_options
        @pass_call
        def infer(
            call: _Call, lease: str, inputs: tuple[str, ...], model: str | None, protocol: str
        ) -> None:
            """A test inference: inputs not given are random (VALUE: `1,2,3,4` or JSON)."""
            values = {}
            for item in inputs:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise click.UsageError(f"{item!r}: expected NAME=VALUE")
                values[key] = value
            client = magics.client(call.target_arg)
            held = magics._wrap(client.status(magics.lease_id(lease, client)), client)
            try:
                result = held.infer_result(model, values, protocol=protocol, fill_random=True)
            finally:
                held.close()
            call.result = InferView(result)

        @click.command(name="dashboard")
        @daemon_options
        @pass_call
        def dashboard(call: _Call) -> None:
            """A live GPU occupancy panel and leases table, with create, renew and release."""
            from tms_console.jupyter.dashboard import Dashboard

            address = magics.resolve_target(call.target_arg)
            widget = Dashboard(
                address,
                client=magics.client(call.target_arg),
                refresh_interval=magics.refresh_interval,
                on_acquired=lambda lease: magics._tie(lease, address, keep=False),
                client_factory=magics._new_client,
            )
            magics._track(widget)
            call.result = widget.start()

        @click.command(name="infer-widget")
        @click.argument("lease", required=False)
        @click.option("-m", "--model", help="The model to call [the lease's first].")
        @daemon_options
        @pass_call
        def infer_widget(call: _Call, lease: str | None, model: str | None) -> None:
            """A form built from the model's metadata that sends a test inference."""
            from tms_console.jupyter.infer_widget import InferWidget

            client = magics.client(call.target_arg)
            lease_id = magics.lease_id(lease, client) if lease else None
            widget = InferWidget(client, lease_id=lease_id, model=model)
            magics._track(widget)
            call.result = widget

        return {
            "target": target,
            "cluster": cluster,
            "leases": leases,
            "acquire": acquire,
            "status": status,
            "renew": renew,
            "wake": wake,
            "release": release,
            "infer": infer,
            "dashboard": dashboard,
            "infer-widget": infer_widget,
        }

    # The work behind the subcommands

    def acquire(
        self,
        spec: LeaseSpec,
        *,
        target: str | None = None,
        keep: bool = False,
        no_wait: bool = False,
        dry_run: bool = False,
        mode: str = "human",
    ) -> Any:
        """Acquires `spec`; `mode` is the CLI's output mode: `human` shows the states on one
        line, `json` prints the lease's JSON at the end, `porcelain` only its id."""
        if not spec.models:
            raise ValueError(
                "no models to lease: give -m name=NAME,uri=URI, or models: in the spec"
            )
        options = spec.options()
        client = self.client(target)
        if dry_run:
            output.print_plan(client.plan(spec.models, options), mode)
            return None
        address = self.resolve_target(target)
        started = time.monotonic()
        updates = client.acquire(spec.models, options)
        final: pb.Lease | None = None
        last_state = ""
        try:
            for final in updates:
                state = state_name(final.state)
                if not last_state:
                    self._tie(final, address, keep=keep)
                    if mode == "human":
                        print(f"lease {final.id}: {state}", end="", flush=True)
                elif state != last_state and mode == "human":
                    print(f" → {state}", end="", flush=True)
                last_state = state
                if no_wait:
                    break
        except KeyboardInterrupt:
            print(flush=True)
            where = f" (lease {final.id})" if final is not None else ""
            raise UsageError(f"%tms acquire: stopped waiting; the lease goes on{where}") from None
        finally:
            updates.close()
        if final is None:
            raise UsageError("%tms acquire: the daemon sent no lease")
        if mode == "human":
            print(f" ({time.monotonic() - started:.1f} s)", flush=True)
        if final.state == pb.LEASE_FAILED:
            self.kernel_leases.forget(final.id)
            raise UsageError(one_line(f"lease {final.id} FAILED: {final.reason}"))
        if mode == "json":
            output.print_json(final)
        elif mode == "porcelain":
            print(final.id, flush=True)
        return self._wrap(final, client)

    def _tie(self, lease: pb.Lease, target: str, *, keep: bool) -> None:
        if self.release_on_exit and not keep:
            self.kernel_leases.tie(lease.id, target)

    def _wrap(self, lease: pb.Lease, client: TmsClient) -> NotebookLease:
        return NotebookLease(lease, client, self.kernel_leases)

    def _track(self, widget: Any) -> None:
        self.widgets.append(widget)
        widget.on_stop(lambda: self.widgets.remove(widget) if widget in self.widgets else None)

    def lease_id(self, ref: str, client: TmsClient) -> str:
        """A lease id from an id, a lease name, or a notebook variable holding a lease."""
        held = self.shell.user_ns.get(ref) if self.shell is not None else None
        if isinstance(held, NotebookLease):
            return held.id
        # The daemon resolves ids and names alike (and reports one it does not know).
        return client.status(ref).id

    def _cell_lease(self, args: list[str], cell: str) -> Any:
        command = self._cell_command()
        call = _Call(None)
        try:
            command.main(args, prog_name="%%tms lease", standalone_mode=False, obj=call)
        except click.ClickException as exc:
            raise UsageError(one_line(f"%%tms lease: {exc.format_message()}")) from None
        if call.result is None:  # --help
            return None
        var, keep, no_wait = call.result
        try:
            data = yaml.safe_load(cell)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise UsageError(f"%%tms lease: the cell is not valid YAML: {problem}{at}") from None
        try:
            spec = spec_from_data(data, base=Path.cwd(), where="%%tms lease: ")
        except ValueError as exc:
            raise UsageError(one_line(str(exc))) from None
        try:
            lease = self.acquire(spec, target=call.target_arg, keep=keep, no_wait=no_wait)
        except (ClientError, TmsError, ValueError) as exc:
            raise UsageError(one_line(str(exc))) from None
        if var and self.shell is not None:
            self.shell.user_ns[var] = lease
        return lease

    def _cell_command(self) -> click.Command:
        @click.command(name="lease")
        @click.argument("var", required=False)
        @_keep_options
        @click.option("--no-wait", is_flag=True, help="Return once the lease is accepted.")
        @daemon_options
        @click.pass_obj
        def lease(call: _Call, var: str | None, keep: bool, no_wait: bool) -> None:
            """Acquire the lease spec (YAML, the keys of `tms lease acquire -f`) in the cell;
            VAR also names a notebook variable for the lease."""
            if var is not None and not var.isidentifier():
                raise click.UsageError(f"{var!r} is not a Python variable name")
            call.result = (var, keep, no_wait)

        return lease
