"""Pools (shared servers that leases take a quota of) and the Triton allowlist.

Validation and the questions the reconciler asks of pools (how many servers each is short
of its minimum, whether an idle one must stay) are answered here, without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tms_core.domain import Pool, Server
from tms_core.errors import AlreadyExists, InvalidArgument
from tms_core.ids import ServerId
from tms_core.lease_request import LeaseOptions
from tms_core.manager.requests import check_dns_label


class PoolTable:
    def __init__(self, pools: Iterable[Pool] = (), allowlist: Iterable[str] = ()) -> None:
        self.pools: dict[str, Pool] = {pool.name: pool for pool in pools}
        self.allowlist: list[str] = list(allowlist)

    def get(self, name: str) -> Pool | None:
        return self.pools.get(name) if name else None

    def check_new(self, pool: Pool) -> None:
        """Raises InvalidArgument (or AlreadyExists) naming what is wrong with `pool`."""
        check_dns_label("name", pool.name)
        if pool.name in self.pools:
            raise AlreadyExists(f"pool {pool.name!r} already exists")
        if pool.quota_per_server <= 0:
            raise InvalidArgument("quota_per_server", "must be at least 1")
        if pool.max_servers < 1:
            raise InvalidArgument("max_servers", "must be at least 1")
        if not 0 <= pool.min_servers <= pool.max_servers:
            raise InvalidArgument(
                "min_servers", f"must be between 0 and max_servers ({pool.max_servers})"
            )
        if pool.server_memory < 0:
            raise InvalidArgument("server_memory", "must not be negative")

    def allowed(self, tritonserver: str, field: str, default: str) -> str:
        """The Triton binary to use for `tritonserver` ("": the configured `default`)."""
        binary = tritonserver or default
        if tritonserver and binary not in self.allowlist:
            raise InvalidArgument(
                field, f"{tritonserver} is not on the Triton allowlist (see `tms allowlist list`)"
            )
        return binary

    def check_disallow(self, tritonserver: str) -> None:
        if tritonserver not in self.allowlist:
            raise InvalidArgument("tritonserver", f"{tritonserver} is not on the allowlist")
        users = [p.name for p in self.pools.values() if p.tritonserver == tritonserver]
        if users:
            raise InvalidArgument(
                "tritonserver", f"{tritonserver} is used by pools {', '.join(users)}"
            )

    @staticmethod
    def running(pool: Pool, servers: Mapping[ServerId, Server]) -> int:
        return sum(1 for s in servers.values() if s.pool == pool.name and s.state.alive)

    def needs(self, server: Server, servers: Mapping[ServerId, Server]) -> bool:
        """Whether an idle pool server must stay up to keep its pool at its minimum."""
        pool = self.pools.get(server.pool)
        return pool is not None and self.running(pool, servers) <= pool.min_servers

    def shortfall(self, servers: Mapping[ServerId, Server]) -> list[Pool]:
        """A pool once for every server it lacks to reach its minimum."""
        return [
            pool
            for pool in self.pools.values()
            for _ in range(pool.min_servers - self.running(pool, servers))
        ]

    def binary_for(self, options: LeaseOptions, default: str) -> str:
        """The Triton a lease runs: its pool's, or the one it asked for from the allowlist;
        checks the pool and quota fields on the way."""
        pool, quota = options.pool, options.quota
        if not pool:
            if quota:
                raise InvalidArgument("quota", "only pool leases (--pool) take a quota")
            return self.allowed(options.tritonserver, "tritonserver", default)
        if pool not in self.pools:
            known = ", ".join(sorted(self.pools)) or "none"
            raise InvalidArgument("pool", f"no pool named {pool!r} (pools: {known})")
        if quota <= 0:
            raise InvalidArgument("quota", "a pool lease needs a quota of at least 1")
        if options.tritonserver:
            raise InvalidArgument("tritonserver", "a pool lease runs on its pool's Triton")
        return self.pools[pool].tritonserver
