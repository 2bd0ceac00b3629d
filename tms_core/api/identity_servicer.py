"""IdentityService: API tokens, tenants with their quotas, the audit log, and WhoAmI."""

from __future__ import annotations

import math
from typing import Any, TypeAlias

from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.domain import ApiToken, AuditRecord, Tenant, TenantQuota
from tms_core.errors import InvalidArgument, Unauthenticated
from tms_core.identity import principal
from tms_core.identity.audit import AuditLog
from tms_core.identity.tokens import TokenRegistry
from tms_core.manager.facade import LeaseManager
from tms_core.manager.tenants import TenantUsage, check_tenant_name
from tms_core.store import Store

Context: TypeAlias = Any
MAX_AUDIT = 10_000


def token_to_pb(token: ApiToken, secret: str = "") -> pb.ApiToken:
    return pb.ApiToken(
        name=token.name,
        role=token.role,
        tenant=token.tenant,
        created_at=token.created_at,
        expires_at=token.expires_at or 0.0,
        revoked_at=token.revoked_at or 0.0,
        secret=secret,
    )


def _quota_pb(quota: TenantQuota | TenantUsage) -> pb.TenantQuota:
    return pb.TenantQuota(
        leases=quota.leases,
        gpus=quota.gpus,
        gpu_memory_bytes=quota.gpu_memory,
        host_memory_bytes=quota.host_memory,
        replicas=quota.replicas,
    )


def tenant_to_pb(tenant: Tenant, used: TenantUsage) -> pb.Tenant:
    return pb.Tenant(
        name=tenant.name,
        quota=_quota_pb(tenant.quota),
        over_quota=tenant.over_quota,
        used=_quota_pb(used),
        created_at=tenant.created_at,
    )


def audit_to_pb(record: AuditRecord) -> pb.AuditEntry:
    return pb.AuditEntry(
        seq=record.seq,
        at=record.at,
        who=record.who,
        role=record.role,
        tenant=record.tenant,
        method=record.method,
        target=record.target,
        outcome=record.outcome,
        detail=record.detail,
    )


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(
        self, manager: LeaseManager, registry: TokenRegistry, audit: AuditLog, store: Store
    ) -> None:
        self._manager = manager
        self._registry = registry
        self._audit = audit
        self._store = store

    async def CreateToken(self, request: pb.TokenRequest, context: Context) -> pb.ApiToken:
        expires = request.expires_in_s
        if expires < 0 or not math.isfinite(expires):
            raise InvalidArgument("expires_in_s", "must be a positive, finite duration (0: never)")
        if request.tenant:
            self._manager.check_tenant_exists(request.tenant)
        record, secret = await self._registry.create(
            request.name, request.role, tenant=request.tenant, expires_in_s=expires or None
        )
        return token_to_pb(record, secret)

    async def ListTokens(self, request: pb.Empty, context: Context) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=[token_to_pb(t) for t in self._registry.list()])

    async def RevokeToken(self, request: pb.TokenRef, context: Context) -> pb.ApiToken:
        return token_to_pb(await self._registry.revoke(request.name))

    async def PutTenant(self, request: pb.Tenant, context: Context) -> pb.Tenant:
        q = request.quota
        tenant = Tenant(
            name=request.name,
            quota=TenantQuota(
                leases=q.leases,
                gpus=q.gpus,
                gpu_memory=q.gpu_memory_bytes,
                host_memory=q.host_memory_bytes,
                replicas=q.replicas,
            ),
            over_quota=request.over_quota or "refuse",
        )
        await self._manager.put_tenant(tenant)
        return tenant_to_pb(*self._manager.tenant_usage(tenant.name))

    async def ListTenants(self, request: pb.Empty, context: Context) -> pb.ListTenantsResponse:
        return pb.ListTenantsResponse(
            tenants=[
                tenant_to_pb(*self._manager.tenant_usage(t.name))
                for t in self._manager.list_tenants()
            ]
        )

    async def TenantStatus(self, request: pb.TenantRef, context: Context) -> pb.Tenant:
        check_tenant_name(request.name)
        return tenant_to_pb(*self._manager.tenant_usage(request.name))

    async def Audit(self, request: pb.AuditRequest, context: Context) -> pb.AuditResponse:
        if not math.isfinite(request.since):
            raise InvalidArgument("since", "must be a finite time")
        if request.limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        # What was recorded a moment ago is shown too.
        await self._audit.flush()
        records = await self._store.audit(
            since=request.since,
            tenant=request.tenant if request.HasField("tenant") else None,
            limit=min(request.limit or 1000, MAX_AUDIT),
        )
        return pb.AuditResponse(entries=[audit_to_pb(r) for r in records])

    async def WhoAmI(self, request: pb.Empty, context: Context) -> pb.WhoAmIResponse:
        caller = principal.current()
        if caller is None:
            raise Unauthenticated("no caller")
        return pb.WhoAmIResponse(name=caller.name, role=caller.role.value, tenant=caller.tenant)
