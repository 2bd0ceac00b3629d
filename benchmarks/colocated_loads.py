"""Inference on a READY lease while other leases load and unload on the same server, against
the same client with nothing loading, side by side in one run.

One daemon; lease A holds `add_sub`. A churn process (this script with `--churn`, apart so
its work shares no GIL with the timing loop) acquires a lease on `blob_classifier` until READY
and releases it until unloaded, over and over: each round the sidecar of A's server loads and
unloads a Python-backend model beside A's. The timing client sends add_sub inferences one
after another through A's lease address, with an unmodified `tritonclient` (HTTP, then
gRPC), for a fixed time per phase; the phases alternate quiet and churning. The last line
holds the figures (milliseconds) as key=value pairs.

The same run also times the same churn on a bare `tritonserver` started by hand, with no TMS:
the client at its direct address, a second churn process loading and unloading
blob_classifier straight over Triton's gRPC repository API. Its ratios (`raw_*`) say what a
neighbour's load costs on this machine whatever drives it; the two paths' rounds alternate so
both see the same machine noise.

Targets (issue 16): max ≤ 50 ms while neighbours load, p99 ≤ 1.5× quiet.
Run: `.venv/bin/python benchmarks/colocated_loads.py [--rounds N] [--seconds S] [--no-raw]`.
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
from benchmarks.time_to_ready import MODEL, RawTriton  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.api.client import TmsClient  # noqa: E402
from tms_core.lease_request import LeaseOptions, ModelRequest  # noqa: E402

NEIGHBOUR_DIR = ROOT / "examples/models/blob_classifier"
NEIGHBOUR = ModelRequest("blob_classifier", NEIGHBOUR_DIR.as_uri(), 64 * 1024**2)


def until_ready(client: TmsClient, models: list[ModelRequest]) -> pb.Lease:
    *_, lease = client.acquire(models, LeaseOptions(duration_s=600))
    assert lease is not None and lease.state == pb.LEASE_READY, lease
    return lease


def stop_when_stdin_closes() -> threading.Event:
    """Set once the parent closes this churn process's stdin: its way of saying stop."""
    stop = threading.Event()

    def wait() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait, daemon=True).start()
    return stop


def churn(target: str, server_id: str) -> None:
    """The churn process: loads and unloads the neighbour until stdin closes; prints one
    line per finished cycle."""
    stop = stop_when_stdin_closes()
    with TmsClient(target) as client:
        while not stop.is_set():
            lease = until_ready(client, [NEIGHBOUR])
            assert lease.server_id == server_id, "the neighbour did not join the server"
            client.release(lease.id)
            print("cycle", flush=True)


def raw_churn(address: str) -> None:
    """The same churn on a bare tritonserver: the neighbour loaded, then unloaded until Triton
    no longer lists it as READY or UNLOADING, over Triton's gRPC API."""
    stop = stop_when_stdin_closes()
    client = grpcclient.InferenceServerClient(address)
    name = NEIGHBOUR.name
    while not stop.is_set():
        client.load_model(name)
        client.unload_model(name)
        while any(
            m.name == name and m.state in ("READY", "UNLOADING")
            for m in client.get_model_repository_index().models
        ):
            time.sleep(0.02)
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
    parser.add_argument("--no-raw", action="store_true", help="skip the bare-Triton reference")
    parser.add_argument("--churn", nargs=2, metavar=("TARGET", "SERVER"), help=argparse.SUPPRESS)
    parser.add_argument("--raw-churn", metavar="GRPC_ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.churn:
        churn(*args.churn)
        return 0
    if args.raw_churn:
        raw_churn(args.raw_churn)
        return 0

    env = bench_env()
    totals: dict[str, list[float]] = {}
    cycles = {"": 0, "raw_": 0}
    with tempfile.TemporaryDirectory(prefix="tms-colocated-") as tmp:
        raw = None if args.no_raw else RawTriton(Path(tmp), models=(MODEL, NEIGHBOUR_DIR))
        try:
            with running_daemon(Path(tmp), env=env) as (target, client):
                lease = until_ready(client, [ADD_SUB])
                paths = {
                    "": (
                        add_sub_call(httpclient, lease.endpoints.http),
                        add_sub_call(grpcclient, lease.endpoints.grpc),
                        ["--churn", target, lease.server_id],
                    )
                }
                if raw is not None:
                    raw.start().load_model(ADD_SUB.name)
                    paths["raw_"] = (
                        add_sub_call(httpclient, raw.http_address),
                        add_sub_call(grpcclient, raw.grpc_address),
                        ["--raw-churn", raw.grpc_address],
                    )
                for http_call, grpc_call, _ in paths.values():
                    for call in (http_call, grpc_call):
                        sample(call, 0.5)  # warm-up: connections, the model's first inferences
                for round_no in range(args.rounds):
                    order = list(paths) if round_no % 2 == 0 else list(reversed(paths))
                    for path in order:
                        http_call, grpc_call, churn_args = paths[path]
                        cycles[path] += measure_round(
                            round_no,
                            {f"{path}http": http_call, f"{path}grpc": grpc_call},
                            [sys.executable, __file__, *churn_args],
                            env,
                            args.seconds,
                            totals,
                        )
                    print(
                        f"round {round_no + 1}: "
                        + "  ".join(
                            f"{k} p99 {p(v, 99):.2f} max {max(v):.1f}" for k, v in totals.items()
                        ),
                        flush=True,
                    )
        finally:
            if raw is not None:
                if raw.proc is not None:
                    raw.stop()
                raw.log.close()
    figures = [f"rounds={args.rounds}", f"neighbour_cycles={cycles['']}"]
    if raw is not None:
        figures.append(f"raw_neighbour_cycles={cycles['raw_']}")
    for key, values in totals.items():
        figures += [
            f"{key}_n={len(values)}",
            f"{key}_p50_ms={p(values, 50):.2f}",
            f"{key}_p99_ms={p(values, 99):.2f}",
            f"{key}_max_ms={max(values):.1f}",
        ]
    for path in paths:
        for proto in ("http", "grpc"):
            ratio = p(totals[f"{path}{proto}_loading"], 99) / p(totals[f"{path}{proto}_quiet"], 99)
            figures.append(f"{path}{proto}_p99_ratio={ratio:.2f}")
    print(" ".join(figures))
    return 0


def measure_round(
    round_no: int,
    calls: dict[str, Callable[[], None]],
    churn_command: list[str],
    env: dict[str, str],
    seconds: float,
    totals: dict[str, list[float]],
) -> int:
    """One quiet and one churning phase (in the order the round's number says), each timing
    every call for `seconds`; the samples go into `totals`. Returns the neighbour's cycles."""
    cycles = 0
    phases = ["quiet", "loading"] if round_no % 2 == 0 else ["loading", "quiet"]
    for phase in phases:
        churner = None
        if phase == "loading":
            churner = subprocess.Popen(
                churn_command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            # Measure from the first load on, not the churn process's start.
            time.sleep(0.3)
        for key, call in calls.items():
            totals.setdefault(f"{key}_{phase}", []).extend(sample(call, seconds))
        if churner is not None:
            assert churner.stdin is not None and churner.stdout is not None
            churner.stdin.close()
            cycles += churner.stdout.read().count(b"cycle")
            if churner.wait(120) != 0:
                raise SystemExit("the churn process failed")
    return cycles


if __name__ == "__main__":
    sys.exit(main())
