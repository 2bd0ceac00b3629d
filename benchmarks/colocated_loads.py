"""Inference on a READY lease while other leases load and unload on the same server, against
the same client with nothing loading, side by side in one run.

One daemon; lease A holds `add_sub`. A churn process (this script with `--churn`, apart so
its work shares no GIL with the timing loop) acquires a lease on `blob_classifier` until READY
and releases it until unloaded, over and over: each round the sidecar of A's server loads and
unloads a Python-backend model beside A's. The timing client sends add_sub inferences one
after another through A's lease address, with an unmodified `tritonclient` (HTTP, then
gRPC), for a fixed time per phase; the phases alternate quiet and churning. The last line
holds the figures (milliseconds) as key=value pairs.

Targets (issue 16): max ≤ 50 ms while neighbours load, p99 ≤ 1.5× quiet.
Run: `.venv/bin/python benchmarks/colocated_loads.py [--rounds N] [--seconds S]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import ADD_SUB, add_sub_call, bench_env, running_daemon  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.api.client import TmsClient  # noqa: E402
from tms_core.lease_request import LeaseOptions, ModelRequest  # noqa: E402

NEIGHBOUR = ModelRequest(
    "blob_classifier", (ROOT / "examples/models/blob_classifier").as_uri(), 64 * 1024**2
)


def until_ready(client: TmsClient, models: list[ModelRequest]) -> pb.Lease:
    *_, lease = client.acquire(models, LeaseOptions(duration_s=600))
    assert lease is not None and lease.state == pb.LEASE_READY, lease
    return lease


def churn(target: str, server_id: str) -> None:
    """The churn process: loads and unloads the neighbour until stdin closes; prints one
    line per finished cycle."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    with TmsClient(target) as client:
        while not stop.is_set():
            lease = until_ready(client, [NEIGHBOUR])
            assert lease.server_id == server_id, "the neighbour did not join the server"
            client.release(lease.id)
            print("cycle", flush=True)


def sample(call: Callable[[], None], seconds: float) -> list[float]:
    """Milliseconds per inference, one after another, for `seconds`."""
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per protocol per phase")
    parser.add_argument("--churn", nargs=2, metavar=("TARGET", "SERVER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.churn:
        churn(*args.churn)
        return 0

    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="tms-colocated-") as tmp:
        with running_daemon(Path(tmp), env=env) as (target, client):
            lease = until_ready(client, [ADD_SUB])
            calls = {
                "http": add_sub_call(httpclient, lease.endpoints.http),
                "grpc": add_sub_call(grpcclient, lease.endpoints.grpc),
            }
            for call in calls.values():
                sample(call, 0.5)  # warm-up: connections, the model's first inferences
            totals: dict[str, list[float]] = {
                f"{proto}_{phase}": [] for proto in calls for phase in ("quiet", "loading")
            }
            cycles = 0
            for round_no in range(args.rounds):
                phases = ["quiet", "loading"] if round_no % 2 == 0 else ["loading", "quiet"]
                for phase in phases:
                    churner = None
                    if phase == "loading":
                        churner = subprocess.Popen(
                            [sys.executable, __file__, "--churn", target, lease.server_id],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            env=env,
                        )
                        assert churner.stdout is not None
                        # Measure from the first load on, not the churn process's start.
                        time.sleep(0.3)
                    for proto, call in calls.items():
                        totals[f"{proto}_{phase}"].extend(sample(call, args.seconds))
                    if churner is not None:
                        assert churner.stdin is not None and churner.stdout is not None
                        churner.stdin.close()
                        cycles += churner.stdout.read().count(b"cycle")
                        if churner.wait(120) != 0:
                            raise SystemExit("the churn process failed")
                print(
                    f"round {round_no + 1}: "
                    + "  ".join(
                        f"{key} p50 {p(v, 50):.2f} p99 {p(v, 99):.2f} max {max(v):.1f}"
                        for key, v in totals.items()
                    ),
                    flush=True,
                )
    figures = [f"rounds={args.rounds}", f"neighbour_cycles={cycles}"]
    for key, values in totals.items():
        figures += [
            f"{key}_n={len(values)}",
            f"{key}_p50_ms={p(values, 50):.2f}",
            f"{key}_p99_ms={p(values, 99):.2f}",
            f"{key}_max_ms={max(values):.1f}",
        ]
    for proto in calls:
        ratio = p(totals[f"{proto}_loading"], 99) / p(totals[f"{proto}_quiet"], 99)
        figures.append(f"{proto}_p99_ratio={ratio:.2f}")
    print(" ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
