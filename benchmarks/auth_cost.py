"""What checking identity costs: lease renewals per second and their p99 latency through a
daemon's API that checks an API token on every call, against the same API with
`identity.tokens` off, side by side in one run.

One process serves both: one lease manager (SQLite state, a backend that runs nothing), and
two gRPC servers in front of it — the daemon's interceptor with tokens checked (a user
token, its tenant's ownership of the lease checked on each renewal) and with tokens off. Both
write the audit log, so the difference is authentication and authorisation alone. Rounds
alternate between the two so machine noise falls on both alike. Each renewal is one store
commit, as in the daemon. Run: `.venv/bin/python benchmarks/auth_cost.py [--rounds N]
[--calls N]`. The last line is `key=value` pairs; target: `slowdown` ≤ 1.05.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.api import tms_pb2_grpc as pb_grpc  # noqa: E402
from tms_core.api.interceptor import ErrorInterceptor  # noqa: E402
from tms_core.api.servicer import add_servicers  # noqa: E402
from tms_core.backends.base import BackendDefaults  # noqa: E402
from tms_core.clock import SystemClock  # noqa: E402
from tms_core.config import load_settings  # noqa: E402
from tms_core.domain import AuditRecord, Server, ServerState, Tenant, TenantQuota  # noqa: E402
from tms_core.identity.audit import AuditLog  # noqa: E402
from tms_core.identity.authority import Authority  # noqa: E402
from tms_core.identity.sidecar_keys import SidecarKeys  # noqa: E402
from tms_core.identity.tokens import TokenRegistry  # noqa: E402
from tms_core.ids import ServerId  # noqa: E402
from tms_core.lease_request import LeaseOptions, ModelRequest  # noqa: E402
from tms_core.manager.facade import LeaseManager  # noqa: E402
from tms_core.store import Store  # noqa: E402


class NoServers(BackendDefaults):
    default_tritonserver = "/bench/tritonserver"

    def new_server(
        self, server_id: ServerId, *, capacity_bytes: int, now: float, binary: str = ""
    ) -> Server:
        return Server(
            server_id, ServerState.STARTING, "127.0.0.1", 1, 2, 3, "/nonexistent",
            capacity_bytes, now, binary=binary or self.default_tritonserver,
        )  # fmt: skip

    async def start(self, server: Server) -> None:
        server.pid, server.sidecar_pid = 1, 1


class Daemon:
    """The manager and the two API servers, on an event loop in a thread of their own."""

    def __init__(self, state: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._state = state
        self.ports: dict[str, int] = {}
        self.token = ""
        self.lease_id = ""
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    def start(self) -> None:
        self._thread.start()
        self.ready.wait()

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        clock = SystemClock()
        store = await Store.open(self._state)
        settings = load_settings(servers={"memory": "64GiB"})
        manager = LeaseManager(store=store, backend=NoServers(), clock=clock, settings=settings)
        await manager.recover()

        async def persist(token: Any) -> None:
            async with store.transaction() as tx:
                await tx.put_token(token)

        async def write(records: Sequence[AuditRecord]) -> None:
            async with store.transaction() as tx:
                await tx.add_audit(records, 100_000)

        registry = TokenRegistry([], clock=clock, persist=persist)
        await manager.put_tenant(Tenant("bench", TenantQuota(leases=10)))
        _, self.token = await registry.create("bench", "user", tenant="bench")
        lease = await manager.acquire(
            [ModelRequest("m", "file:///models/m", 1024)],
            LeaseOptions(duration_s=3600),
            tenant="bench",
        )
        self.lease_id = lease.id
        audit = AuditLog(write)
        flusher = asyncio.create_task(audit.run())
        servers = []
        for mode, required in (("tokens", True), ("open", False)):
            authority = Authority(registry, SidecarKeys(b"k" * 32), tokens_required=required)
            server = grpc.aio.server(
                interceptors=[
                    ErrorInterceptor(authority, ownership=manager, audit=audit, clock=clock)
                ]
            )
            add_servicers(server, manager)
            self.ports[mode] = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
        self.ready.set()
        await self._stop.wait()
        for server in servers:
            await server.stop(None)
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await store.close()


def renew_round(
    stub: pb_grpc.LeaseServiceStub, lease_id: str, calls: int, metadata: Any
) -> list[float]:
    latencies = []
    request = pb.RenewRequest(id=lease_id, duration_s=3600)
    for _ in range(calls):
        start = time.perf_counter()
        stub.Renew(request, timeout=10, metadata=metadata)
        latencies.append(time.perf_counter() - start)
    return latencies


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp) / "state.db")
        daemon.start()
        try:
            channels = {m: grpc.insecure_channel(f"127.0.0.1:{p}") for m, p in daemon.ports.items()}
            stubs = {m: pb_grpc.LeaseServiceStub(c) for m, c in channels.items()}
            metadata = {"tokens": (("authorization", f"Bearer {daemon.token}"),), "open": ()}
            for mode in stubs:  # warm up both paths
                renew_round(stubs[mode], daemon.lease_id, 50, metadata[mode])
            taken: dict[str, list[float]] = {"tokens": [], "open": []}
            elapsed = {"tokens": 0.0, "open": 0.0}
            for r in range(args.rounds):
                order = ("tokens", "open") if r % 2 == 0 else ("open", "tokens")
                for mode in order:
                    start = time.perf_counter()
                    taken[mode] += renew_round(
                        stubs[mode], daemon.lease_id, args.calls, metadata[mode]
                    )
                    elapsed[mode] += time.perf_counter() - start
            for channel in channels.values():
                channel.close()
        finally:
            daemon.stop()
    rate = {m: len(taken[m]) / elapsed[m] for m in taken}
    tail = {m: p99(taken[m]) * 1000 for m in taken}
    median = {m: statistics.median(taken[m]) * 1000 for m in taken}
    for mode in ("open", "tokens"):
        print(
            f"{mode:>6}: {rate[mode]:7.0f} renewals/s  median {median[mode]:.3f} ms  "
            f"p99 {tail[mode]:.3f} ms  ({len(taken[mode])} calls)"
        )
    slowdown = rate["open"] / rate["tokens"]
    print(
        f"renewals_per_s_tokens={rate['tokens']:.0f} renewals_per_s_open={rate['open']:.0f} "
        f"p99_ms_tokens={tail['tokens']:.3f} p99_ms_open={tail['open']:.3f} "
        f"p99_ratio={tail['tokens'] / tail['open']:.3f} slowdown={slowdown:.3f}"
    )


if __name__ == "__main__":
    main()
