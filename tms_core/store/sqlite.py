"""The SQLite store: one writer connection, WAL, one transaction per state change.

All writes go through `Store.transaction()`, which serialises writers with a lock and opens
`BEGIN IMMEDIATE`, so a change is either wholly on disk or not at all. The daemon keeps its
working state in memory and reads the database only at start-up, so there is no read path.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiosqlite

from tms_core import metrics
from tms_core.domain import (
    ApiToken,
    AuditRecord,
    Lease,
    LeaseAutoscale,
    LeaseConstraints,
    LeaseModel,
    LeaseNameRecord,
    LeaseState,
    ModelState,
    Pool,
    Server,
    ServerState,
    Tenant,
)
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.store import identity_rows
from tms_core.store.migrations import MIGRATIONS
from tms_core.store.protocol import StoredExtras


def _replica_json(lease: Lease) -> str:
    # Also the lease's parking (same column: how it scales, and where that stands).
    parking = {
        key: value
        for key, value in (
            ("parked_at", lease.parked_at),
            ("woke_at", lease.woke_at),
            ("wake_s", lease.wake_s),
            ("wake_pending", lease.wake_pending),
            ("wake_failed_at", lease.wake_failed_at),
        )
        if value
    }
    if (
        lease.replica_of is None
        and lease.replicas_wanted == 1
        and lease.draining_until is None
        and not parking
    ):
        return ""
    return json.dumps(
        {
            "of": lease.replica_of,
            "wanted": lease.replicas_wanted,
            "draining_until": lease.draining_until,
            **parking,
        }
    )


def _replica_fields(text: str) -> dict[str, Any]:
    if not text:
        return {}
    data = json.loads(text)
    return {
        "replica_of": LeaseId(data["of"]) if data.get("of") else None,
        "replicas_wanted": data.get("wanted", 1),
        "draining_until": data.get("draining_until"),
        "parked_at": data.get("parked_at"),
        "woke_at": data.get("woke_at"),
        "wake_s": data.get("wake_s", 0.0),
        "wake_pending": data.get("wake_pending", False),
        "wake_failed_at": data.get("wake_failed_at"),
    }


class Transaction:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def put_lease(self, lease: Lease) -> None:
        models = json.dumps([asdict(m) for m in lease.models])
        await self._db.execute(
            "INSERT OR REPLACE INTO leases (id, name, state, reason, models, duration_s,"
            " created_at, expires_at, updated_at, server_id, activity_window_s,"
            " last_activity_at, pool, quota, tritonserver, ready_at, http_port, grpc_port,"
            " constraints, labels, priority, autoscale, tenant, replica)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                lease.id,
                lease.name,
                lease.state.value,
                lease.reason,
                models,
                lease.duration_s,
                lease.created_at,
                lease.expires_at,
                lease.updated_at,
                lease.server_id,
                lease.activity_window_s,
                lease.last_activity_at,
                lease.pool,
                lease.quota,
                lease.tritonserver,
                lease.ready_at,
                lease.http_port,
                lease.grpc_port,
                json.dumps(asdict(lease.constraints)),
                json.dumps(lease.labels),
                lease.priority,
                json.dumps(asdict(lease.autoscale)) if lease.autoscale else "",
                lease.tenant,
                _replica_json(lease),
            ),
        )

    async def put_server(self, server: Server) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO servers (id, state, reason, host, http_port, grpc_port,"
            " metrics_port, work_dir, capacity_bytes, created_at, idle_since, pid, sidecar_pid,"
            " binary, pool, node, gpus, framework_group)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                server.id,
                server.state.value,
                server.reason,
                server.host,
                server.http_port,
                server.grpc_port,
                server.metrics_port,
                server.work_dir,
                server.capacity_bytes,
                server.created_at,
                server.idle_since,
                server.pid,
                server.sidecar_pid,
                server.binary,
                server.pool,
                server.node,
                json.dumps(list(server.gpus)),
                server.framework_group,
            ),
        )

    async def put_name(self, record: LeaseNameRecord) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO lease_names (name, lease_id, next_lease_id, http_port,"
            " grpc_port, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.lease_id,
                record.next_lease_id,
                record.http_port,
                record.grpc_port,
                record.updated_at,
            ),
        )

    async def delete_name(self, name: str) -> None:
        await self._db.execute("DELETE FROM lease_names WHERE name = ?", (name,))

    async def put_pool(self, pool: Pool) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO pools (name, tritonserver, server_memory, min_servers,"
            " max_servers, quota_per_server, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                pool.name,
                pool.tritonserver,
                pool.server_memory,
                pool.min_servers,
                pool.max_servers,
                pool.quota_per_server,
                pool.created_at,
            ),
        )

    async def delete_pool(self, name: str) -> None:
        await self._db.execute("DELETE FROM pools WHERE name = ?", (name,))

    async def allow(self, tritonserver: str, now: float) -> None:
        await self._db.execute(
            "INSERT OR IGNORE INTO allowlist (tritonserver, added_at) VALUES (?, ?)",
            (tritonserver, now),
        )

    async def disallow(self, tritonserver: str) -> None:
        await self._db.execute("DELETE FROM allowlist WHERE tritonserver = ?", (tritonserver,))

    async def put_model_memory(self, name: str, uri: str, measured: int, now: float) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO model_memory (name, uri, measured_bytes, updated_at)"
            " VALUES (?, ?, ?, ?)",
            (name, uri, measured, now),
        )

    async def set_meta(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
        )

    async def put_tenant(self, tenant: Tenant) -> None:
        await identity_rows.put_tenant(self._db, tenant)

    async def put_token(self, token: ApiToken) -> None:
        await identity_rows.put_token(self._db, token)

    async def add_audit(self, records: Sequence[AuditRecord], keep: int) -> None:
        await identity_rows.add_audit(self._db, records, keep)


async def _to_the_end(statement: Awaitable[object]) -> bool:
    """Awaits `statement` until it has run, even if the caller is cancelled meanwhile.

    aiosqlite runs statements in its own thread: cancelling the await does not stop the
    statement, so a cancelled BEGIN would still open a transaction that nobody closes.
    Returns whether a cancellation arrived, for the caller to honour once the state is sound.
    """
    task = asyncio.ensure_future(statement)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            return cancelled
        except asyncio.CancelledError:
            if task.done():
                task.result()
                return True
            cancelled = True


# Renewals per statement: three variables each, well under SQLite's limit on variables.
_EXTEND_ROWS = 1000


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode, which is what a daemon
            # killed with SIGKILL needs; only a power loss can drop the last commits.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"state file has schema version {version}; this tms knows up to"
                f" {len(MIGRATIONS)}: upgrade tms"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with self.transaction():
                for statement in filter(str.strip, script.split(";")):
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {number}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            started = time.perf_counter()
            if await _to_the_end(self._db.execute("BEGIN IMMEDIATE")):
                await _to_the_end(self._db.execute("ROLLBACK"))
                raise asyncio.CancelledError
            try:
                yield Transaction(self._db)
            except BaseException:
                await _to_the_end(self._db.execute("ROLLBACK"))
                raise
            if await _to_the_end(self._db.execute("COMMIT")):
                raise asyncio.CancelledError
            metrics.STORE_COMMIT.observe(time.perf_counter() - started)

    async def extend_leases(self, expiries: Sequence[tuple[LeaseId, float, float]]) -> None:
        # One statement is one implicit transaction: a group of renewals costs one trip to
        # the database thread, where BEGIN, the writes and COMMIT would cost three or more.
        # The lock keeps it out of another change's open transaction on this connection.
        rows = list(expiries)
        async with self._lock:
            for start in range(0, len(rows), _EXTEND_ROWS):
                chunk = rows[start : start + _EXTEND_ROWS]
                values = ", ".join(["(?, ?, ?)"] * len(chunk))
                await self._db.execute(
                    "UPDATE leases SET expires_at = max(leases.expires_at, v.column2),"
                    " updated_at = max(leases.updated_at, v.column3)"
                    f" FROM (VALUES {values}) AS v WHERE leases.id = v.column1",
                    [field for row in chunk for field in row],
                )

    async def load(self) -> tuple[list[Lease], list[Server]]:
        leases: list[Lease] = []
        async with self._db.execute(
            "SELECT id, name, state, reason, models, duration_s, created_at, expires_at,"
            " updated_at, server_id, activity_window_s, last_activity_at, pool, quota,"
            " tritonserver, ready_at, http_port, grpc_port, constraints, labels, priority,"
            " autoscale, tenant, replica FROM leases ORDER BY created_at"
        ) as cur:
            async for row in cur:
                models = [
                    LeaseModel(
                        name=ModelName(m["name"]),
                        uri=m["uri"],
                        memory_bytes=m["memory_bytes"],
                        state=ModelState(m["state"]),
                        error=m["error"],
                        load_s=m["load_s"],
                        measured_bytes=m.get("measured_bytes", 0),
                        framework=m.get("framework", ""),
                    )
                    for m in json.loads(row[4])
                ]
                leases.append(
                    Lease(
                        id=LeaseId(row[0]),
                        name=row[1],
                        state=LeaseState(row[2]),
                        reason=row[3],
                        models=models,
                        duration_s=row[5],
                        created_at=row[6],
                        expires_at=row[7],
                        updated_at=row[8],
                        server_id=ServerId(row[9]) if row[9] else None,
                        activity_window_s=row[10],
                        last_activity_at=row[11],
                        pool=row[12],
                        quota=row[13],
                        tritonserver=row[14],
                        ready_at=row[15],
                        http_port=row[16],
                        grpc_port=row[17],
                        constraints=LeaseConstraints(**json.loads(row[18])),
                        labels=json.loads(row[19]),
                        priority=row[20],
                        autoscale=LeaseAutoscale(**json.loads(row[21])) if row[21] else None,
                        tenant=row[22],
                        **_replica_fields(row[23]),
                    )
                )
        servers: list[Server] = []
        async with self._db.execute(
            "SELECT id, state, reason, host, http_port, grpc_port, metrics_port, work_dir,"
            " capacity_bytes, created_at, idle_since, pid, sidecar_pid, binary, pool, node, gpus,"
            " framework_group FROM servers ORDER BY created_at"
        ) as cur:
            async for row in cur:
                servers.append(
                    Server(
                        id=ServerId(row[0]),
                        state=ServerState(row[1]),
                        reason=row[2],
                        host=row[3],
                        http_port=row[4],
                        grpc_port=row[5],
                        metrics_port=row[6],
                        work_dir=row[7],
                        capacity_bytes=row[8],
                        created_at=row[9],
                        idle_since=row[10],
                        pid=row[11],
                        sidecar_pid=row[12],
                        binary=row[13],
                        pool=row[14],
                        node=row[15],
                        gpus=tuple(json.loads(row[16])),
                        framework_group=row[17],
                    )
                )
        return leases, servers

    async def load_extras(self) -> StoredExtras:
        """Names, pools, the allowlist and daemon metadata."""
        extras = StoredExtras()
        async with self._db.execute(
            "SELECT name, lease_id, next_lease_id, http_port, grpc_port, updated_at"
            " FROM lease_names ORDER BY name"
        ) as cur:
            async for row in cur:
                extras.names.append(
                    LeaseNameRecord(
                        name=row[0],
                        lease_id=LeaseId(row[1]) if row[1] else None,
                        next_lease_id=LeaseId(row[2]) if row[2] else None,
                        http_port=row[3],
                        grpc_port=row[4],
                        updated_at=row[5],
                    )
                )
        async with self._db.execute(
            "SELECT name, tritonserver, server_memory, min_servers, max_servers,"
            " quota_per_server, created_at FROM pools ORDER BY name"
        ) as cur:
            async for row in cur:
                extras.pools.append(Pool(*row))
        async with self._db.execute(
            "SELECT tritonserver FROM allowlist ORDER BY added_at, tritonserver"
        ) as cur:
            extras.allowlist = [row[0] async for row in cur]
        async with self._db.execute("SELECT key, value FROM meta") as cur:
            extras.meta = {row[0]: row[1] async for row in cur}
        async with self._db.execute("SELECT name, uri, measured_bytes FROM model_memory") as cur:
            extras.measured = {(row[0], row[1]): row[2] async for row in cur}
        extras.tenants = await identity_rows.load_tenants(self._db)
        return extras

    async def load_tokens(self) -> list[ApiToken]:
        return await identity_rows.load_tokens(self._db)

    async def audit(
        self, *, since: float = 0.0, tenant: str | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """The newest `limit` audit records at or after `since`, oldest first."""
        return await identity_rows.audit(self._db, since=since, tenant=tenant, limit=limit)
