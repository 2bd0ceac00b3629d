"""Tenants and their quotas: what a tenant's live leases add up to, and whether one more fits.

Pure: the manager asks here under its lock, immediately before the change that records the
lease, so two acquires can never both take the last of a quota. A lease beyond its tenant's
quota is refused, or (`over_quota: wait`) waits PENDING with a reason naming the quota and is
admitted, oldest first, once the tenant's other leases make room.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

from tms_core.domain import Lease, LeaseState, Tenant, TenantQuota
from tms_core.errors import InvalidArgument
from tms_core.ids import LeaseId
from tms_core.units import format_size

TENANT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
OVER_QUOTA = ("refuse", "wait")
QUOTA_WAIT = "waiting for tenant quota: "
"""The reason of a lease that waits for its tenant's quota (read back after a restart)."""

_SIZES = ("gpu_memory", "host_memory")


@dataclass
class TenantUsage:
    leases: int = 0
    gpus: int = 0
    gpu_memory: int = 0
    host_memory: int = 0
    replicas: int = 0

    def add(self, lease: Lease) -> None:
        self.leases += 1
        gpus = lease.constraints.gpus
        self.gpus += gpus
        if gpus > 0:
            self.gpu_memory += lease.memory_bytes
        else:
            self.host_memory += lease.memory_bytes
        self.replicas += lease.autoscale.max_replicas if lease.autoscale else 1


def check_tenant_name(name: str) -> None:
    if not TENANT_NAME.match(name):
        raise InvalidArgument(
            "tenant",
            f"{name!r} is not a tenant name (lower-case letters, digits and '-', starting and "
            "ending with a letter or digit, at most 63 characters)",
        )


def check_tenant(tenant: Tenant) -> None:
    check_tenant_name(tenant.name)
    if tenant.over_quota not in OVER_QUOTA:
        raise InvalidArgument("over_quota", f"{tenant.over_quota!r}: expected refuse or wait")
    for item in fields(TenantQuota):
        if getattr(tenant.quota, item.name) < 0:
            raise InvalidArgument(f"quota.{item.name}", "must not be negative (0: no limit)")


def _show(key: str, value: int) -> str:
    return format_size(value) if key in _SIZES else str(value)


class TenantTable:
    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self.tenants: dict[str, Tenant] = {t.name: t for t in tenants}
        self.waiting: set[LeaseId] = set()
        """Leases that wait for their tenant's quota (they count against nothing yet)."""

    def reset(self, tenants: Iterable[Tenant], leases: Iterable[Lease]) -> None:
        self.tenants = {t.name: t for t in tenants}
        self.waiting = {
            lease.id
            for lease in leases
            if lease.state is LeaseState.PENDING and lease.reason.startswith(QUOTA_WAIT)
        }

    def usage(self, tenant: str, live: Iterable[Lease]) -> TenantUsage:
        used = TenantUsage()
        for lease in live:
            # A released lease's memory is still counted by placement until it is unloaded,
            # but its holder has given it up: it no longer takes the tenant's quota.
            # A replica record counts in its lease's `replicas` (its autoscale maximum).
            if (
                lease.tenant == tenant
                and lease.replica_of is None
                and lease.id not in self.waiting
                and lease.state is not LeaseState.RELEASING
            ):
                used.add(lease)
        return used

    def over(self, lease: Lease, live: Iterable[Lease]) -> str | None:
        """Why `lease` does not fit its tenant's quota beside the tenant's admitted live
        leases (naming the quota), or None when it fits or its tenant has no quota."""
        tenant = self.tenants.get(lease.tenant) if lease.tenant else None
        if tenant is None:
            return None
        used = self.usage(tenant.name, (held for held in live if held.id != lease.id))
        wants = TenantUsage()
        wants.add(lease)
        for item in fields(TenantQuota):
            key = item.name
            limit = getattr(tenant.quota, key)
            have, want = getattr(used, key), getattr(wants, key)
            if limit and want and have + want > limit:
                return (
                    f"tenant {tenant.name!r} quota {key} is {_show(key, limit)}: "
                    f"{_show(key, have)} in use, this lease needs {_show(key, want)}"
                )
        return None
