"""Roles and principals: who a call comes from, as the interceptor resolved it."""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ADMIN = "admin"
    """Pools, the allowlist, tenants, tokens, the audit log and any lease."""
    USER = "user"
    """Acquires; renews, releases and names its own tenant's leases; reads the fleet."""
    VIEWER = "viewer"
    """Reads only."""
    SIDECAR = "sidecar"
    """One server's sidecar: that server's Connect and Report, nothing else."""
    ACTIVATOR = "activator"
    """The activator on Kubernetes: `LeaseService.Wake` of any lease, nothing else."""


TOKEN_ROLES = (Role.ADMIN, Role.USER, Role.VIEWER, Role.ACTIVATOR)


def parse_role(text: str) -> Role:
    try:
        role = Role(text)
    except ValueError:
        role = None
    if role is None or role not in TOKEN_ROLES:
        raise ValueError(f"role {text!r}: expected one of {', '.join(TOKEN_ROLES)}")
    return role


@dataclass(frozen=True)
class Principal:
    name: str
    """The token's name, `sidecar:<server>`, or `local` when tokens are not checked."""
    role: Role
    tenant: str = ""
    server_id: str = ""
    """For a sidecar: the one server it speaks for."""

    @property
    def who(self) -> str:
        return self.name


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tms_principal", default=None
)


def current() -> Principal | None:
    """The principal of the call being served (set by the interceptor)."""
    return _current.get()


def set_current(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)
