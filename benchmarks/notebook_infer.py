"""What `lease.infer(...)` from a notebook costs over a plain `tritonclient` call.

A daemon and one lease on the add_sub example (real tritonserver, CPU). Side by side, in
alternating order each round: **raw** = a kept `tritonclient.http` client calling `infer` with
`InferInput`s built by hand (what a careful user writes); **lease** = `lease.infer("add_sub",
INPUT0=..., INPUT1=...)` (inputs checked against the model's metadata and converted, one kept
client); **fresh** = `run_test_inference` as the console and `%tms infer` use it (metadata
read and a connection opened for each call). Each round prints its medians; the last line
sums up all rounds as key=value pairs (medians in ms, ratios to raw).
Run: `.venv/bin/python benchmarks/notebook_infer.py [--rounds N] [--calls N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

from tests.conftest import Daemon  # noqa: E402
from tests.integration.helpers import example  # noqa: E402
from tms_console.jupyter.lease import NotebookLease  # noqa: E402
from tms_console.testinfer import run_test_inference  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402


def timed(call: Callable[[], object], calls: int) -> float:
    """The median of `calls` calls, in ms."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    daemon = Daemon(Path(tempfile.mkdtemp(prefix="tms-bench-")) / "state").start()
    try:
        final = list(daemon.client.acquire([example("add_sub", 64 * 1024**2)]))[-1]
        assert final.state == pb.LEASE_READY, final.reason
        lease = NotebookLease(final, daemon.client, None)
        a = np.arange(4, dtype=np.float32)
        b = np.ones(4, dtype=np.float32)

        raw_client = httpclient.InferenceServerClient(lease.endpoint)

        def raw() -> object:
            inputs = [
                httpclient.InferInput("INPUT0", [4], "FP32"),
                httpclient.InferInput("INPUT1", [4], "FP32"),
            ]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            return raw_client.infer("add_sub", inputs).as_numpy("OUTPUT0")

        def via_lease() -> object:
            return lease.infer("add_sub", INPUT0=a, INPUT1=b)["OUTPUT0"]

        def fresh() -> object:
            return run_test_inference(final, values={"INPUT0": a, "INPUT1": b}).outputs

        paths: dict[str, Callable[[], object]] = {"raw": raw, "lease": via_lease, "fresh": fresh}
        for call in paths.values():  # warm-up: connections, metadata, Triton's first calls
            timed(call, 10)
        results: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for name in order:
                results[name].append(timed(paths[name], args.calls))
            print(f"round {r + 1}: " + " ".join(f"{n}={results[n][-1]:.3f}ms" for n in paths))
        raw_client.close()
        lease.close()
        daemon.client.release(final.id)
    finally:
        daemon.stop()
    med = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"rounds={args.rounds} calls={args.calls} raw_ms={med['raw']:.3f} "
        f"lease_ms={med['lease']:.3f} fresh_ms={med['fresh']:.3f} "
        f"lease_ratio={med['lease'] / med['raw']:.2f} fresh_ratio={med['fresh'] / med['raw']:.2f}"
    )


if __name__ == "__main__":
    main()
