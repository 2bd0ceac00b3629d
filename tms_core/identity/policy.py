"""What each RPC needs: the one table the interceptor checks every call against.

`Access` is the least role a method needs; `Owned` names the request field that points at a
lease or a lease name, which a `user` may touch only when it belongs to its own tenant. A
method missing from the table needs `admin`, so a new RPC is closed until it is listed.
`activator` may call `LeaseService.Wake` (of any lease: it wakes whatever lease a connection
waits for) and nothing else, not even reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tms_core.errors import PermissionDenied
from tms_core.identity.principal import Principal, Role


class Access(enum.Enum):
    PUBLIC = "nobody in particular"  # health checks
    READ = "viewer"
    LEASE = "user"
    WAKE = "user (or activator)"
    ADMIN = "admin"
    SIDECAR = "sidecar"


class Owned(enum.Enum):
    LEASE_ID = "id"
    """`request.id` is a lease id."""
    LEASE_ID_OF_NAME = "lease_id"
    """`request.lease_id` is a lease id and `request.name` a lease name."""
    NAME = "name"
    """`request.name` is a lease name."""


@dataclass(frozen=True)
class Rule:
    access: Access
    changes_state: bool = False
    owned: Owned | None = None


_LEASE = "/tms.v1.LeaseService/"
_NAMES = "/tms.v1.LeaseNameService/"
_POOLS = "/tms.v1.PoolService/"
_ALLOW = "/tms.v1.AllowlistService/"
_IDENT = "/tms.v1.IdentityService/"

RULES: dict[str, Rule] = {
    _LEASE + "Acquire": Rule(Access.LEASE, changes_state=True),
    _LEASE + "Plan": Rule(Access.LEASE),
    _LEASE + "Status": Rule(Access.READ),
    _LEASE + "List": Rule(Access.READ),
    _LEASE + "Follow": Rule(Access.READ),
    _LEASE + "Renew": Rule(Access.LEASE, changes_state=True, owned=Owned.LEASE_ID),
    _LEASE + "Release": Rule(Access.LEASE, changes_state=True, owned=Owned.LEASE_ID),
    _LEASE + "Wake": Rule(Access.WAKE, changes_state=True, owned=Owned.LEASE_ID),
    _LEASE + "Scale": Rule(Access.LEASE, changes_state=True, owned=Owned.LEASE_ID),
    _NAMES + "SetName": Rule(Access.LEASE, changes_state=True, owned=Owned.LEASE_ID_OF_NAME),
    _NAMES + "DeleteName": Rule(Access.LEASE, changes_state=True, owned=Owned.NAME),
    _NAMES + "ListNames": Rule(Access.READ),
    _POOLS + "CreatePool": Rule(Access.ADMIN, changes_state=True),
    _POOLS + "DeletePool": Rule(Access.ADMIN, changes_state=True),
    _POOLS + "ListPools": Rule(Access.READ),
    _POOLS + "PoolStatus": Rule(Access.READ),
    _ALLOW + "AllowlistAdd": Rule(Access.ADMIN, changes_state=True),
    _ALLOW + "AllowlistRemove": Rule(Access.ADMIN, changes_state=True),
    _ALLOW + "AllowlistList": Rule(Access.READ),
    "/tms.v1.EventService/Watch": Rule(Access.READ),
    "/tms.v1.ClusterService/Cluster": Rule(Access.READ),
    "/tms.v1.ClusterService/Models": Rule(Access.READ),
    "/tms.v1.SidecarService/Connect": Rule(Access.SIDECAR),
    "/tms.v1.SidecarService/Report": Rule(Access.SIDECAR),
    _IDENT + "CreateToken": Rule(Access.ADMIN, changes_state=True),
    _IDENT + "RevokeToken": Rule(Access.ADMIN, changes_state=True),
    _IDENT + "ListTokens": Rule(Access.ADMIN),
    _IDENT + "PutTenant": Rule(Access.ADMIN, changes_state=True),
    _IDENT + "ListTenants": Rule(Access.READ),
    _IDENT + "TenantStatus": Rule(Access.READ),
    _IDENT + "Audit": Rule(Access.ADMIN),
    _IDENT + "WhoAmI": Rule(Access.READ),
    "/grpc.health.v1.Health/Check": Rule(Access.PUBLIC),
    "/grpc.health.v1.Health/Watch": Rule(Access.PUBLIC),
    "/grpc.health.v1.Health/List": Rule(Access.PUBLIC),
}
ADMIN_ONLY = Rule(Access.ADMIN)

_GRANTS: dict[Role, frozenset[Access]] = {
    Role.ADMIN: frozenset({Access.PUBLIC, Access.READ, Access.LEASE, Access.WAKE, Access.ADMIN}),
    Role.USER: frozenset({Access.PUBLIC, Access.READ, Access.LEASE, Access.WAKE}),
    Role.VIEWER: frozenset({Access.PUBLIC, Access.READ}),
    Role.SIDECAR: frozenset({Access.PUBLIC, Access.SIDECAR}),
    # Not limited by tenant: the interceptor checks owners for `user` tokens only.
    Role.ACTIVATOR: frozenset({Access.PUBLIC, Access.WAKE}),
}


def rule_for(method: str) -> Rule:
    return RULES.get(method, ADMIN_ONLY)


def short(method: str) -> str:
    """`LeaseService.Release` from `/tms.v1.LeaseService/Release`."""
    service, _, name = method.rpartition("/")
    return f"{service.rpartition('.')[2]}.{name}"


def authorize(principal: Principal, method: str, rule: Rule) -> None:
    """Raises PermissionDenied naming what was missing when the role may not call `method`."""
    if rule.access in _GRANTS[principal.role]:
        return
    if principal.role is Role.SIDECAR:
        raise PermissionDenied(
            f"{short(method)}: a sidecar credential is good only for SidecarService calls of "
            f"its own server; use an API token"
        )
    if rule.access is Access.SIDECAR:
        raise PermissionDenied(
            f"{short(method)} needs the credential of that server's sidecar; an API token "
            f"({principal.name!r}, role {principal.role.value}) is not one"
        )
    raise PermissionDenied(
        f"{short(method)} needs the {rule.access.value} role; token {principal.name!r} has "
        f"role {principal.role.value}"
    )


def authorize_server(principal: Principal, method: str, server_id: str) -> None:
    """A sidecar speaks only for its own server."""
    if principal.server_id != server_id:
        raise PermissionDenied(
            f"{short(method)} for server {server_id!r}: this credential is for server "
            f"{principal.server_id!r} only"
        )


def authorize_tenant(principal: Principal, method: str, what: str, tenant: str) -> None:
    """A user touches only its own tenant's leases and names; admins touch any."""
    if principal.role is Role.ADMIN or tenant == principal.tenant:
        return
    owner = f"tenant {tenant!r}" if tenant else "no tenant"
    raise PermissionDenied(
        f"{short(method)}: {what} belongs to {owner}; token {principal.name!r} may change "
        f"only tenant {principal.tenant!r}'s leases (or needs the admin role)"
    )
