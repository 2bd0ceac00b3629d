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
    # 2: lease names, pools, the Triton allowlist, activity renewal, router addresses.
    """
    ALTER TABLE leases ADD COLUMN activity_window_s REAL NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN last_activity_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN pool TEXT NOT NULL DEFAULT '';
    ALTER TABLE leases ADD COLUMN quota INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN tritonserver TEXT NOT NULL DEFAULT '';
    ALTER TABLE leases ADD COLUMN ready_at REAL;
    ALTER TABLE leases ADD COLUMN http_port INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN grpc_port INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE servers ADD COLUMN pool TEXT NOT NULL DEFAULT '';
    CREATE TABLE lease_names (
        name TEXT PRIMARY KEY,
        lease_id TEXT,
        next_lease_id TEXT,
        http_port INTEGER NOT NULL,
        grpc_port INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE pools (
        name TEXT PRIMARY KEY,
        tritonserver TEXT NOT NULL,
        server_memory INTEGER NOT NULL,
        min_servers INTEGER NOT NULL,
        max_servers INTEGER NOT NULL,
        quota_per_server INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE allowlist (
        tritonserver TEXT PRIMARY KEY,
        added_at REAL NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: the memory each model (name + URI) was measured to take, for placement.
    """
    CREATE TABLE model_memory (
        name TEXT NOT NULL,
        uri TEXT NOT NULL,
        measured_bytes INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (name, uri)
    );
    """,
    # 4: placement: lease constraints, labels and priority; servers' node, GPUs and framework.
    """
    ALTER TABLE leases ADD COLUMN constraints TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE leases ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE leases ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE servers ADD COLUMN node TEXT NOT NULL DEFAULT '';
    ALTER TABLE servers ADD COLUMN gpus TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE servers ADD COLUMN framework_group TEXT NOT NULL DEFAULT '';
    """,
    # 5: autoscaling leases (JSON of LeaseAutoscale; '' when the lease does not autoscale).
    """
    ALTER TABLE leases ADD COLUMN autoscale TEXT NOT NULL DEFAULT '';
    """,
    # 6: identity: tenants with their quotas, API tokens (hashed), the audit log; lease tenant.
    """
    ALTER TABLE leases ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        quota TEXT NOT NULL,
        over_quota TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        tenant TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        role TEXT NOT NULL,
        tenant TEXT NOT NULL,
        method TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit(at);
    """,
    # 7: replicas: a replica record's lease, a lease's wanted replicas, a replica's drain
    # deadline (JSON; '' for a lease with one replica and no record).
    """
    ALTER TABLE leases ADD COLUMN replica TEXT NOT NULL DEFAULT '';
    """,
]
