"""Where, within a neighbour's load, the slow inferences of `colocated_loads.py` fall.

The same set-up as `colocated_loads.py` (lease A on add_sub, a churn process loading and
unloading blob_classifier beside it), with one gRPC client timing add_sub through A's lease
address: first quiet, then while the neighbour churns. A request is slow when it takes over
twice the quiet p99. The load windows are read from the server's own `tritonserver.log`
("loading: blob_classifier" to "successfully loaded"), and each slow request that starts in
one is placed in a tenth of it. Slow requests bunched in a few tenths point at what Triton
does then (starting the Python stub, importing the model), rather than at anything that runs
for the whole load. The last line holds the figures.

Run: `.venv/bin/python benchmarks/colocated_where.py [--seconds S]`.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.colocated_loads import until_ready  # noqa: E402
from benchmarks.harness import ADD_SUB, add_sub_call, bench_env, running_daemon  # noqa: E402

TRITON_TIME = re.compile(r"^[IWE](\d\d)(\d\d) (\d\d):(\d\d):(\d\d\.\d+)")


def triton_time(line: str, year: int) -> float | None:
    """Seconds since the epoch of a Triton log line (glog's prefix: month, day, UTC time)."""
    match = TRITON_TIME.match(line)
    if match is None:
        return None
    month, day, hour, minute = (int(match.group(i)) for i in range(1, 5))
    when = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.UTC)
    return when.timestamp() + float(match.group(5))


def load_windows(log: str, model: str, year: int) -> list[tuple[float, float]]:
    windows, start = [], None
    for line in log.splitlines():
        if f'"loading: {model}:' in line:
            start = triton_time(line, year)
        elif f"successfully loaded '{model}'" in line and start is not None:
            end = triton_time(line, year)
            if end is not None:
                windows.append((start, end))
            start = None
    return windows


def timed(call: object, seconds: float) -> list[tuple[float, float]]:
    """(wall start, seconds taken) of inferences sent one after another for `seconds`."""
    assert callable(call)
    samples = []
    end = time.time() + seconds
    while time.time() < end:
        start = time.time()
        call()
        samples.append((start, time.time() - start))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="of churn")
    args = parser.parse_args(argv)
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="tms-colocated-where-") as tmp:
        with running_daemon(Path(tmp), env=env) as (target, client):
            lease = until_ready(client, [ADD_SUB])
            call = add_sub_call(grpcclient, lease.endpoints.grpc)
            timed(call, 0.5)  # warm-up
            quiet = sorted(taken for _, taken in timed(call, max(5.0, args.seconds / 4)))
            script = str(ROOT / "benchmarks/colocated_loads.py")
            churn = [script, "--churn", target, lease.server_id]
            churner = subprocess.Popen(
                [sys.executable, *churn],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=env,
            )
            assert churner.stdin is not None
            samples = timed(call, args.seconds)
            churner.stdin.close()
            if churner.wait(120) != 0:
                raise SystemExit("the churn process failed")
            log = Path(tmp, "state", "servers", lease.server_id, "tritonserver.log").read_text()
    year = datetime.datetime.now(datetime.UTC).year
    windows = load_windows(log, "blob_classifier", year)
    quiet_p99 = quiet[int(len(quiet) * 0.99)]
    slow = [start for start, taken in samples if taken > 2 * quiet_p99]
    first, last = samples[0][0], samples[-1][0]
    covered = sum(min(b, last) - max(a, first) for a, b in windows if b > first and a < last)
    tenths = [0] * 10
    inside = 0
    for start in slow:
        for a, b in windows:
            if a <= start <= b:
                inside += 1
                tenths[min(9, int((start - a) / (b - a) * 10))] += 1
                break
    share = covered / (last - first) if last > first else 0.0
    print(f"load windows: {len(windows)}, {share:.0%} of the time; slow by tenth: {tenths}")
    print(
        f"quiet_p99_ms={quiet_p99 * 1000:.2f} requests={len(samples)} slow={len(slow)}"
        f" loads={len(windows)} load_time_share={share:.2f} slow_in_loads={inside}"
        f" slow_first_fifth={sum(tenths[:2])} slow_middle={sum(tenths[2:8])}"
        f" slow_last_fifth={sum(tenths[8:])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
