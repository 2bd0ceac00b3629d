"""Renewals per second and their latency with 16 concurrent clients, against the standard gRPC
health check (the empty RPC) on the same daemon, side by side in one run.

One daemon; 16 READY leases on add_sub. Each client has its own channel (its own connection,
as 16 programs would) and sends one request after another: `Renew` of its own lease in the
renew phase, `grpc.health.v1.Health/Check` in the health phase. The clients are coroutines
in a separate process (`--clients`), so their work shares no GIL with this one. Phases
alternate within each round; the figures add up all rounds (rates: the median round), and
paired_ratio is the median of each round's renew/health ratio.

Then the cost of authentication (issue 14), measured by `benchmarks/auth_cost.py` in this
process: renewals with an API token checked on every call against the same API with tokens
off, interleaved call by call; `auth_slowdown` is the median of the rounds' rate ratios.

Targets: renewals ≥ 50% of the health check's rate; renewal p99 ≤ 50 ms (issue 16);
`auth_slowdown` ≤ 1.05 (issue 14).
Run: `.venv/bin/python benchmarks/control_plane.py [--rounds N] [--seconds S]
[--auth-rounds N] [--no-auth]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import auth_cost  # noqa: E402
from benchmarks.harness import ADD_SUB, running_daemon  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.api import tms_pb2_grpc as pb_grpc  # noqa: E402
from tms_core.api.client import resolve_token  # noqa: E402
from tms_core.lease_request import LeaseOptions  # noqa: E402

CLIENTS = 16


async def drive(target: str, kind: str, leases: list[str], seconds: float) -> list[float]:
    """Milliseconds per call of every client, for `seconds`."""
    end = time.perf_counter() + seconds
    # Each call carries the token, as any client's does (the health check needs none, but
    # both pay the same for the header).
    token = os.environ.get("TMS_TOKEN", "")
    auth = (("authorization", f"Bearer {token}"),) if token else ()

    async def client(lease_id: str) -> list[float]:
        times = []
        async with grpc.aio.insecure_channel(target) as channel:
            if kind == "renew":
                stub = pb_grpc.LeaseServiceStub(channel)
                request = pb.RenewRequest(id=lease_id, duration_s=600)
                call = stub.Renew
            else:
                stub = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="")
                call = stub.Check
            await call(request, timeout=10, metadata=auth)  # connect before the clock starts
            while time.perf_counter() < end:
                start = time.perf_counter()
                await call(request, timeout=10, metadata=auth)
                times.append((time.perf_counter() - start) * 1000)
        return times

    results = await asyncio.gather(*(client(lease_id) for lease_id in leases))
    return [t for times in results for t in times]


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def phase(target: str, kind: str, leases: list[str], seconds: float) -> list[float]:
    token = resolve_token(target) or ""
    done = subprocess.run(
        [sys.executable, __file__, "--clients", target, kind, str(seconds), *leases],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TMS_TOKEN": token},
    )
    times: list[float] = json.loads(done.stdout)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase per round")
    parser.add_argument("--auth-rounds", type=int, default=12, help="auth cost, rounds")
    parser.add_argument("--no-auth", action="store_true", help="skip the auth cost")
    parser.add_argument("--clients", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients:
        target, kind, seconds, *leases = args.clients
        print(json.dumps(asyncio.run(drive(target, kind, leases, float(seconds)))))
        return 0

    with tempfile.TemporaryDirectory(prefix="tms-control-plane-") as tmp:
        with running_daemon(Path(tmp), ["--log-level=WARNING"]) as (target, client):
            leases = []
            for _ in range(CLIENTS):
                *_, lease = client.acquire([ADD_SUB], LeaseOptions(duration_s=600))
                assert lease is not None and lease.state == pb.LEASE_READY, lease
                leases.append(lease.id)
            phase(target, "health", leases, 1.0)  # warm-up
            phase(target, "renew", leases, 1.0)
            totals: dict[str, list[float]] = {"health": [], "renew": []}
            rates: dict[str, list[float]] = {"health": [], "renew": []}
            for round_no in range(args.rounds):
                order = ["health", "renew"] if round_no % 2 == 0 else ["renew", "health"]
                for kind in order:
                    times = phase(target, kind, leases, args.seconds)
                    totals[kind].extend(times)
                    rates[kind].append(len(times) / args.seconds)
                print(
                    f"round {round_no + 1}: "
                    + "  ".join(
                        f"{kind} {rates[kind][-1]:.0f}/s p99 {p(totals[kind], 99):.1f} ms"
                        for kind in totals
                    ),
                    flush=True,
                )
    auth = ""
    if not args.no_auth:
        print("authentication cost (benchmarks/auth_cost.py, renewals with and without tokens):")
        figures = auth_cost.measure(args.auth_rounds, 300)
        auth = (
            f" auth_slowdown={figures['slowdown']:.3f} auth_p99_ratio={figures['p99_ratio']:.3f}"
            f" auth_check_us={figures['check_us_tokens'] - figures['check_us_open']:.2f}"
        )
    health_rate = statistics.median(rates["health"])
    renew_rate = statistics.median(rates["renew"])
    # Each round's two phases ran back to back: their ratio is the least noisy figure.
    paired = statistics.median(r / h for r, h in zip(rates["renew"], rates["health"], strict=True))
    print(
        f"rounds={args.rounds} clients={CLIENTS} health_per_s={health_rate:.0f} "
        f"health_p50_ms={p(totals['health'], 50):.2f} health_p99_ms={p(totals['health'], 99):.2f} "
        f"renew_per_s={renew_rate:.0f} renew_p50_ms={p(totals['renew'], 50):.2f} "
        f"renew_p99_ms={p(totals['renew'], 99):.2f} renew_ratio={renew_rate / health_rate:.2f} "
        f"paired_ratio={paired:.2f}" + auth
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
