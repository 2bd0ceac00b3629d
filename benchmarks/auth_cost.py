"""What checking identity costs: lease renewals per second and their p99 latency through a
daemon's API that checks an API token on every call, against the same API with
`identity.tokens` off, side by side in one run.

One process serves both: one lease manager (SQLite state, a backend that runs nothing), and
two gRPC servers in front of it — the daemon's interceptor with tokens checked (a user
token, its tenant's ownership of the lease checked on each renewal) and with tokens off. Both
write the audit log, so the difference is authentication and authorisation alone. Each
renewal is one store commit, as in the daemon.

The difference is far smaller than a loaded machine's noise, so the measurement is built to
see through it: renewals alternate between the two modes call by call (which leads alternates
too), so a burst of load from elsewhere falls on both alike; each round's slowdown is the
ratio of the two modes' renewal rates in that round (calls over the time they took), and the
figure reported is the median of those ratios over many rounds, with their quartiles.
Beside it, the check itself (authenticate, authorise, the lease's tenant) is timed alone, in
microseconds per call, which no scheduling noise inflates.

Run: `.venv/bin/python benchmarks/auth_cost.py [--rounds N] [--calls N]`. The last line is
`key=value` pairs; target: `slowdown` ≤ 1.05.
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
from tms_core.identity import policy  # noqa: E402
from tms_core.identity.audit import AuditLog  # noqa: E402
from tms_core.identity.authority import Authority  # noqa: E402
from tms_core.identity.principal import Role  # noqa: E402
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

    async def stop(self, server: Server) -> None:
        server.pid = server.sidecar_pid = None

    def exit_reason(self, server: Server) -> str | None:
        return None

    def adopt(self, server: Server) -> bool:
        return False


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
        self.authorities: dict[str, Authority] = {}
        self.ownership: LeaseManager | None = None
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
        self.ownership = manager
        audit = AuditLog(write)
        flusher = asyncio.create_task(audit.run())
        servers = []
        for mode, required in (("tokens", True), ("open", False)):
            authority = Authority(registry, SidecarKeys(b"k" * 32), tokens_required=required)
            self.authorities[mode] = authority
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


def interleaved_round(
    stubs: dict[str, pb_grpc.LeaseServiceStub],
    lease_id: str,
    calls: int,
    metadata: dict[str, Any],
    first: int,
) -> dict[str, list[float]]:
    """`calls` renewals in each mode, one of each in turn (which mode leads alternates), so a
    burst of load from elsewhere falls on both modes alike rather than on one round."""
    modes = list(stubs)
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    request = pb.RenewRequest(id=lease_id, duration_s=3600)
    for i in range(calls):
        order = modes if (i + first) % 2 == 0 else modes[::-1]
        for mode in order:
            start = time.perf_counter()
            stubs[mode].Renew(request, timeout=10, metadata=metadata[mode])
            latencies[mode].append(time.perf_counter() - start)
    return latencies


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def check_cost(daemon: Daemon, calls: int = 100_000) -> dict[str, float]:
    """Microseconds per call of what the interceptor adds per renewal with tokens on and off:
    authenticate the metadata, authorise the method, and (a user) the lease's tenant."""
    assert daemon.authorities and daemon.ownership is not None
    method = "/tms.v1.LeaseService/Renew"
    rule = policy.rule_for(method)
    metadata = {"tokens": (("authorization", f"Bearer {daemon.token}"),), "open": ()}
    spent: dict[str, float] = {}
    for mode, authority in daemon.authorities.items():
        start = time.perf_counter()
        for _ in range(calls):
            principal = authority.authenticate(metadata[mode])
            policy.authorize(principal, method, rule)
            if principal.role is Role.USER:
                tenant = daemon.ownership.tenant_of(daemon.lease_id)
                if tenant is not None:
                    policy.authorize_tenant(principal, method, "lease", tenant)
        spent[mode] = (time.perf_counter() - start) / calls * 1e6
    return spent


def measure(rounds: int, calls: int, *, show: bool = True) -> dict[str, float]:
    """The side-by-side run; the figures by key (`show`: print the per-mode lines too)."""
    modes = ("tokens", "open")
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp) / "state.db")
        daemon.start()
        try:
            channels = {m: grpc.insecure_channel(f"127.0.0.1:{p}") for m, p in daemon.ports.items()}
            stubs = {m: pb_grpc.LeaseServiceStub(c) for m, c in channels.items()}
            metadata = {"tokens": (("authorization", f"Bearer {daemon.token}"),), "open": ()}
            for mode in modes:  # warm up both paths
                renew_round(stubs[mode], daemon.lease_id, 100, metadata[mode])
            taken: dict[str, list[float]] = {m: [] for m in modes}
            rates: dict[str, list[float]] = {m: [] for m in modes}
            tails: dict[str, list[float]] = {m: [] for m in modes}
            for r in range(rounds):
                measured = interleaved_round(stubs, daemon.lease_id, calls, metadata, first=r)
                for mode, latencies in measured.items():
                    # Renewals per second of one caller in this mode: calls over their time.
                    rates[mode].append(len(latencies) / sum(latencies))
                    tails[mode].append(p99(latencies))
                    taken[mode] += latencies
            for channel in channels.values():
                channel.close()
            # Run on the daemon's loop: the registry is the loop's alone.
            cost = asyncio.run_coroutine_threadsafe(_on_loop(check_cost, daemon), daemon.loop)
            check_us = cost.result()
        finally:
            daemon.stop()
    slowdowns = [o / t for o, t in zip(rates["open"], rates["tokens"], strict=True)]
    tail_ratios = [t / o for t, o in zip(tails["tokens"], tails["open"], strict=True)]
    s_q1, slowdown, s_q3 = quartiles(slowdowns)
    p_q1, p99_ratio, p_q3 = quartiles(tail_ratios)
    added_us = check_us["tokens"] - check_us["open"]
    share = added_us / (statistics.median(taken["open"]) * 1e6)
    if show:
        for mode in ("open", "tokens"):
            median = statistics.median(taken[mode]) * 1000
            print(
                f"{mode:>6}: {statistics.median(rates[mode]):7.0f} renewals/s (median of rounds)"
                f"  median {median:.3f} ms  p99 {p99(taken[mode]) * 1000:.3f} ms  "
                f"check {check_us[mode]:.2f} us/call  ({len(taken[mode])} calls)"
            )
        print(
            f"per-round slowdown: median {slowdown:.3f} (quartiles {s_q1:.3f}-{s_q3:.3f}); "
            f"p99 ratio median {p99_ratio:.3f} (quartiles {p_q1:.3f}-{p_q3:.3f}); "
            f"tokens add {added_us:.2f} us per call = {share * 100:.2f}% of a median renewal"
        )
    return {
        "renewals_per_s_tokens": statistics.median(rates["tokens"]),
        "renewals_per_s_open": statistics.median(rates["open"]),
        "p99_ms_tokens": p99(taken["tokens"]) * 1000,
        "p99_ms_open": p99(taken["open"]) * 1000,
        "p99_ratio": p99_ratio,
        "slowdown": slowdown,
        "slowdown_q1": s_q1,
        "slowdown_q3": s_q3,
        "check_us_tokens": check_us["tokens"],
        "check_us_open": check_us["open"],
        "check_share": share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    figures = measure(args.rounds, args.calls)
    print(
        f"renewals_per_s_tokens={figures['renewals_per_s_tokens']:.0f} "
        f"renewals_per_s_open={figures['renewals_per_s_open']:.0f} "
        f"p99_ms_tokens={figures['p99_ms_tokens']:.3f} "
        f"p99_ms_open={figures['p99_ms_open']:.3f} "
        f"p99_ratio={figures['p99_ratio']:.3f} slowdown={figures['slowdown']:.3f} "
        f"slowdown_q1={figures['slowdown_q1']:.3f} slowdown_q3={figures['slowdown_q3']:.3f} "
        f"check_us_tokens={figures['check_us_tokens']:.2f} "
        f"check_us_open={figures['check_us_open']:.2f} check_share={figures['check_share']:.4f}"
    )


async def _on_loop(func: Any, *args: Any) -> Any:
    return func(*args)


if __name__ == "__main__":
    main()
