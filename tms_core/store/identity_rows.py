"""The SQL of the identity tables: tenants, API tokens (hashed) and the audit log.

Kept apart from `sqlite.py`, which delegates here, so the lease tables read on their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

import aiosqlite

from tms_core.domain import ApiToken, AuditRecord, Tenant, TenantQuota


async def put_tenant(db: aiosqlite.Connection, tenant: Tenant) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO tenants (name, quota, over_quota, created_at) VALUES (?, ?, ?, ?)",
        (tenant.name, json.dumps(asdict(tenant.quota)), tenant.over_quota, tenant.created_at),
    )


async def load_tenants(db: aiosqlite.Connection) -> list[Tenant]:
    async with db.execute(
        "SELECT name, quota, over_quota, created_at FROM tenants ORDER BY name"
    ) as cur:
        return [
            Tenant(row[0], TenantQuota(**json.loads(row[1])), row[2], row[3]) async for row in cur
        ]


async def put_token(db: aiosqlite.Connection, token: ApiToken) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO api_tokens (name, hash, role, tenant, created_at, expires_at,"
        " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            token.name,
            token.hash,
            token.role,
            token.tenant,
            token.created_at,
            token.expires_at,
            token.revoked_at,
        ),
    )


async def load_tokens(db: aiosqlite.Connection) -> list[ApiToken]:
    async with db.execute(
        "SELECT name, hash, role, tenant, created_at, expires_at, revoked_at FROM api_tokens"
        " ORDER BY name"
    ) as cur:
        return [ApiToken(*row) async for row in cur]


async def add_audit(db: aiosqlite.Connection, records: Sequence[AuditRecord], keep: int) -> None:
    await db.executemany(
        "INSERT INTO audit (at, who, role, tenant, method, target, outcome, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.at, r.who, r.role, r.tenant, r.method, r.target, r.outcome, r.detail) for r in records],
    )
    # The log is bounded: the oldest records go once there are more than `keep`.
    await db.execute(
        "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", (max(keep, 1),)
    )


async def audit(
    db: aiosqlite.Connection, *, since: float, tenant: str | None, limit: int
) -> list[AuditRecord]:
    query = "SELECT at, who, role, tenant, method, target, outcome, detail, seq FROM audit"
    query += " WHERE at >= ?"
    params: list[object] = [since]
    if tenant is not None:
        query += " AND tenant = ?"
        params.append(tenant)
    query += " ORDER BY seq DESC LIMIT ?"
    params.append(limit)
    async with db.execute(query, params) as cur:
        rows = [AuditRecord(*row) async for row in cur]
    return rows[::-1]
