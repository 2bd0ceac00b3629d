"""`tms token …`, `tms tenant …` and `tms audit`: who may call the daemon, tenants' quotas,
and what was done (docs/security.md)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from tms_core.api import tms_pb2 as pb
from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    daemon_options,
    one_line_errors,
    output_option,
    pass_context,
)
from tms_core.units import format_size, parse_duration, parse_size, rfc3339


def _when(at: float) -> str:
    return rfc3339(at) if at else ""


def token_to_dict(token: pb.ApiToken) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": token.name,
        "role": token.role,
        "tenant": token.tenant,
        "created_at": _when(token.created_at),
        "expires_at": _when(token.expires_at),
        "revoked_at": _when(token.revoked_at),
    }
    if token.secret:
        data["token"] = token.secret
    return data


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


# ---------------------------------------------------------------------- tokens


@click.group()
@daemon_options
def token() -> None:
    """API tokens: create (shown once), list, revoke (takes effect at once)."""


@token.command()
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["admin", "user", "viewer", "activator"]),
    required=True,
    help="admin: everything; user: its tenant's leases; viewer: read only; activator: "
    "LeaseService.Wake of any lease, nothing else (the Kubernetes activator's).",
)
@click.option("--tenant", default="", help="The tenant a user's leases count against.")
@click.option("--expires", metavar="DURATION", help="Expire after this long (e.g. 30d).")
@output_option
@daemon_options
@pass_context
@one_line_errors
def create(
    ctx: Context, name: str, role: str, tenant: str, expires: str | None, fmt: str | None
) -> None:
    """Create a token; it is printed once and never again."""
    expires_s = 0.0
    if expires is not None:
        try:
            expires_s = parse_duration(expires)
        except ValueError as exc:
            raise ValueError(f"--expires: {exc}") from None
    made = ctx.client.create_token(name, role, tenant=tenant, expires_in_s=expires_s)
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(token_to_dict(made))
    elif mode == "porcelain":
        print(made.secret)
    else:
        output.out.print(f"token [bold]{escape(made.name)}[/] ({made.role}) created:")
        print(made.secret)
        output.err.print("it is shown only now: keep it (e.g. `tms target add NAME ADDR --token`)")


@token.command(name="list")
@output_option
@daemon_options
@pass_context
@one_line_errors
def list_tokens(ctx: Context, fmt: str | None) -> None:
    """List tokens (never their secrets)."""
    tokens = ctx.client.list_tokens()
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump([token_to_dict(t) for t in tokens])
        return
    rows = [
        [
            t.name,
            t.role,
            t.tenant,
            "revoked" if t.revoked_at else ("expired" if 0 < t.expires_at <= time.time() else ""),
            _when(t.expires_at),
        ]
        for t in tokens
    ]
    if mode == "porcelain":
        output.print_rows(rows)
        return
    table = _table("NAME", "ROLE", "TENANT", "STATE", "EXPIRES")
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    output.out.print(table)


@token.command()
@click.argument("name")
@output_option
@daemon_options
@pass_context
@one_line_errors
def revoke(ctx: Context, name: str, fmt: str | None) -> None:
    """Revoke a token: its next call is refused."""
    revoked = ctx.client.revoke_token(name)
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump(token_to_dict(revoked))
    elif mode == "porcelain":
        print(revoked.name)
    else:
        output.out.print(f"revoked token [bold]{escape(revoked.name)}[/]")


# ---------------------------------------------------------------------- tenants

_QUOTAS = (
    ("leases", "leases", False),
    ("gpus", "gpus", False),
    ("gpu_memory", "gpu_memory_bytes", True),
    ("host_memory", "host_memory_bytes", True),
    ("replicas", "replicas", False),
)


def _quota_dict(quota: pb.TenantQuota) -> dict[str, int]:
    return {key: getattr(quota, field) for key, field, _ in _QUOTAS}


def tenant_to_dict(tenant: pb.Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "over_quota": tenant.over_quota,
        "quota": _quota_dict(tenant.quota),
        "used": _quota_dict(tenant.used),
    }


def _use(tenant: pb.Tenant, key: str, field: str, size: bool) -> str:
    used, limit = getattr(tenant.used, field), getattr(tenant.quota, field)
    show = format_size if size else str
    return f"{show(used)}/{show(limit) if limit else '-'}"


def _print_tenants(tenants: list[pb.Tenant], mode: str) -> None:
    if mode == "json":
        output.dump([tenant_to_dict(t) for t in tenants])
        return
    rows = [
        [t.name, t.over_quota, *(_use(t, k, f, size) for k, f, size in _QUOTAS)] for t in tenants
    ]
    if mode == "porcelain":
        output.print_rows(rows)
        return
    table = _table("TENANT", "OVER QUOTA", *(k.upper().replace("_", " ") for k, _, _ in _QUOTAS))
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    output.out.print(table)


@click.group()
@daemon_options
def tenant() -> None:
    """Tenants and their quotas: what their live leases may add up to (used/limit)."""


@tenant.command(name="create")
@click.argument("name")
@click.option("--leases", type=click.IntRange(min=0), default=0, help="Live leases [no limit].")
@click.option("--gpus", type=click.IntRange(min=0), default=0, help="GPUs [no limit].")
@click.option("--gpu-memory", metavar="SIZE", help="GPU memory, e.g. 80GiB [no limit].")
@click.option("--host-memory", metavar="SIZE", help="Host memory of CPU leases [no limit].")
@click.option("--replicas", type=click.IntRange(min=0), default=0, help="Replicas [no limit].")
@click.option(
    "--over-quota",
    type=click.Choice(["refuse", "wait"]),
    default="refuse",
    show_default=True,
    help="A lease beyond the quota is refused, or waits PENDING for room.",
)
@output_option
@daemon_options
@pass_context
@one_line_errors
def create_tenant(
    ctx: Context,
    name: str,
    leases: int,
    gpus: int,
    gpu_memory: str | None,
    host_memory: str | None,
    replicas: int,
    over_quota: str,
    fmt: str | None,
) -> None:
    """Create a tenant, or set an existing tenant's quotas (0 or unset: no limit)."""
    sizes = {}
    for flag, value in (("--gpu-memory", gpu_memory), ("--host-memory", host_memory)):
        try:
            sizes[flag] = parse_size(value) if value else 0
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    made = ctx.client.put_tenant(
        pb.Tenant(
            name=name,
            over_quota=over_quota,
            quota=pb.TenantQuota(
                leases=leases,
                gpus=gpus,
                gpu_memory_bytes=sizes["--gpu-memory"],
                host_memory_bytes=sizes["--host-memory"],
                replicas=replicas,
            ),
        )
    )
    _print_tenants([made], ctx.mode(fmt))


@tenant.command(name="list")
@output_option
@daemon_options
@pass_context
@one_line_errors
def list_tenants(ctx: Context, fmt: str | None) -> None:
    """List tenants with their use against each quota."""
    _print_tenants(ctx.client.list_tenants(), ctx.mode(fmt))


@tenant.command(name="status")
@click.argument("name")
@output_option
@daemon_options
@pass_context
@one_line_errors
def tenant_status(ctx: Context, name: str, fmt: str | None) -> None:
    """One tenant's use against each quota."""
    _print_tenants([ctx.client.tenant_status(name)], ctx.mode(fmt))


# ---------------------------------------------------------------------- audit


def audit_to_dict(entry: pb.AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": rfc3339(entry.at),
        "who": entry.who,
        "role": entry.role,
        "tenant": entry.tenant,
        "method": entry.method,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }


@click.command()
@click.option("--since", metavar="DURATION", help="Only the last DURATION (e.g. 1h).")
@click.option("--tenant", "tenant_name", help="Only calls by this tenant's tokens.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@output_option
@daemon_options
@pass_context
@one_line_errors
def audit(
    ctx: Context, since: str | None, tenant_name: str | None, limit: int, fmt: str | None
) -> None:
    """State-changing and refused calls: who, what, when and the outcome (admins only)."""
    since_at = 0.0
    if since is not None:
        try:
            since_at = time.time() - parse_duration(since)
        except ValueError as exc:
            raise ValueError(f"--since: {exc}") from None
    entries = ctx.client.audit(since=since_at, tenant=tenant_name, limit=limit)
    mode = ctx.mode(fmt)
    if mode == "json":
        output.dump([audit_to_dict(e) for e in entries])
        return
    rows = [
        [rfc3339(e.at), e.who, e.role, e.tenant, e.method, e.target, e.outcome, e.detail]
        for e in entries
    ]
    if mode == "porcelain":
        output.print_rows(rows)
        return
    table = _table("AT", "WHO", "ROLE", "TENANT", "CALL", "TARGET", "OUTCOME", "DETAIL")
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    output.out.print(table)


@click.command()
@output_option
@daemon_options
@pass_context
@one_line_errors
def whoami(ctx: Context, fmt: str | None) -> None:
    """Who the daemon takes you for: the token's name, role and tenant."""
    me = ctx.client.whoami()
    if ctx.mode(fmt) == "json":
        output.dump({"name": me.name, "role": me.role, "tenant": me.tenant})
    else:
        print(f"{me.name}\t{me.role}\t{me.tenant}")
