"""Schema versions. Each entry upgrades from the previous version; never edit a shipped one."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: leases with their models (JSON: they are always read and written whole), servers.
    """
    CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        models TEXT NOT NULL,
        duration_s REAL NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        server_id TEXT
    );
    CREATE INDEX leases_state ON leases(state);
    CREATE TABLE servers (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL,
        http_port INTEGER NOT NULL,
        grpc_port INTEGER NOT NULL,
        metrics_port INTEGER NOT NULL,
        work_dir TEXT NOT NULL,
        capacity_bytes INTEGER NOT NULL,
        created_at REAL NOT NULL,
        idle_since REAL,
        pid INTEGER,
        sidecar_pid INTEGER,
        binary TEXT NOT NULL DEFAULT ''
    );
    """,
]
