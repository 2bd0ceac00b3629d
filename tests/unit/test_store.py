"""The SQLite store: schema, WAL, round trips across a reopen, atomic transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tms_core.domain import Lease, LeaseModel, LeaseState, ModelState, Server, ServerState
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.store import Store
from tms_core.store.migrations import MIGRATIONS


def a_lease(lease_id: str = "l-000000000001", server_id: str | None = "s-00000001") -> Lease:
    return Lease(
        id=LeaseId(lease_id),
        name="my-lease",
        state=LeaseState.READY,
        models=[
            LeaseModel(
                ModelName("resnet"),
                "file:///models/resnet",
                2 * 1024**3,
                ModelState.READY,
                "",
                1.25,
            ),
            LeaseModel(
                ModelName("bert"), "file:///models/bert", 0, ModelState.FAILED, "out of memory", 0.0
            ),
        ],
        duration_s=600.0,
        created_at=1_700_000_000.5,
        expires_at=1_700_000_600.5,
        updated_at=1_700_000_010.0,
        reason="a reason",
        server_id=ServerId(server_id) if server_id else None,
    )


def a_server(server_id: str = "s-00000001") -> Server:
    return Server(
        id=ServerId(server_id),
        state=ServerState.RUNNING,
        host="127.0.0.1",
        http_port=41000,
        grpc_port=41001,
        metrics_port=41002,
        work_dir="/var/tms/servers/s-00000001",
        capacity_bytes=16 * 1024**3,
        created_at=1_699_999_999.0,
        pid=1234,
        sidecar_pid=1235,
        binary="/opt/tritonserver/bin/tritonserver",
        reason="",
        idle_since=1_700_000_100.0,
    )


async def test_open_creates_the_latest_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "state.db"
    store = await Store.open(path)
    try:
        assert path.exists()
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.load() == ([], [])
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"leases", "servers"} <= tables


async def test_reopening_keeps_the_schema_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Store.open(path)
    async with store.transaction() as tx:
        await tx.put_lease(a_lease())
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        leases, _ = await store.load()
        assert [lease.id for lease in leases] == ["l-000000000001"]
    finally:
        await store.close()


async def test_lease_and_server_round_trip_through_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    lease, unplaced, server = a_lease(), a_lease("l-000000000002", server_id=None), a_server()
    unplaced.state, unplaced.created_at = LeaseState.PENDING, lease.created_at + 1
    store = await Store.open(path)
    async with store.transaction() as tx:
        await tx.put_server(server)
        await tx.put_lease(lease)
        await tx.put_lease(unplaced)
    await store.close()

    store = await Store.open(path)
    try:
        leases, servers = await store.load()
    finally:
        await store.close()
    assert leases == [lease, unplaced]
    assert isinstance(leases[0].state, LeaseState)
    assert isinstance(leases[0].models[1].state, ModelState)
    assert servers == [server]
    assert isinstance(servers[0].state, ServerState)


async def test_put_replaces_the_earlier_record(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        lease = a_lease()
        async with store.transaction() as tx:
            await tx.put_lease(lease)
        lease.state, lease.reason = LeaseState.EXPIRED, "not renewed in time"
        async with store.transaction() as tx:
            await tx.put_lease(lease)
        leases, _ = await store.load()
    finally:
        await store.close()
    assert len(leases) == 1
    assert leases[0].state is LeaseState.EXPIRED
    assert leases[0].reason == "not renewed in time"


async def test_a_transaction_that_raises_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Store.open(path)
    try:
        async with store.transaction() as tx:
            await tx.put_lease(a_lease("l-000000000001"))
        with pytest.raises(RuntimeError, match="boom"):
            async with store.transaction() as tx:
                await tx.put_server(a_server())
                await tx.put_lease(a_lease("l-000000000002"))
                raise RuntimeError("boom")
        # The store is usable afterwards, and only the first transaction is there.
        async with store.transaction() as tx:
            await tx.put_lease(a_lease("l-000000000003"))
    finally:
        await store.close()
    store = await Store.open(path)
    try:
        leases, servers = await store.load()
    finally:
        await store.close()
    assert sorted(lease.id for lease in leases) == ["l-000000000001", "l-000000000003"]
    assert servers == []


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Store.open(path)
    await store.close()
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(RuntimeError) as info:
        await Store.open(path)
    message = str(info.value)
    assert f"schema version {newer}" in message
    assert f"knows up to {len(MIGRATIONS)}" in message
    assert "upgrade tms" in message
    # Refusing did not touch the file.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newer
