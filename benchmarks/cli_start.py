"""Wall time of short `tms` commands against a bare Python that imports grpc and the stubs.

Each sample is a fresh process, run from start to exit: `tms --version`, `tms lease list`
(against a running daemon holding no leases), and the baseline `python -c "import grpc;
import tms_core.api.tms_pb2_grpc"` — the least any command that talks to the daemon loads.
The three alternate in each round so all see the same machine noise; the figures are
medians. Target (issue 16): each command ≤ 1.5× the baseline.
Run: `.venv/bin/python benchmarks/cli_start.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import running_daemon  # noqa: E402

TMS = [sys.executable, "-m", "tms_core.cli.main"]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="tms-cli-start-") as tmp:
        env["HOME"] = tmp  # no saved targets: the target comes from TMS_TARGET
        # The daemon leaves its admin token's pointer under the state home; this process's
        # client and the commands read it there (on the same machine they need no token).
        os.environ["XDG_STATE_HOME"] = env["XDG_STATE_HOME"] = f"{tmp}/state-home"
        with running_daemon(Path(tmp), env=env) as (target, _):
            env["TMS_TARGET"] = target
            commands = {
                "baseline": [sys.executable, "-c", "import grpc; import tms_core.api.tms_pb2_grpc"],
                "version": [*TMS, "--version"],
                "lease_list": [*TMS, "lease", "list"],
            }
            for cmd in commands.values():
                wall(cmd, env)  # warm-up: page cache, bytecode
            times: dict[str, list[float]] = {name: [] for name in commands}
            for round_no in range(args.rounds):
                order = list(commands)
                if round_no % 2:
                    order.reverse()
                for name in order:
                    times[name].append(wall(commands[name], env))
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name}: median {med[name] * 1000:.0f} ms  min {min(values) * 1000:.0f} ms")
    print(
        f"rounds={args.rounds} baseline_s={med['baseline']:.3f} version_s={med['version']:.3f} "
        f"lease_list_s={med['lease_list']:.3f} "
        f"version_ratio={med['version'] / med['baseline']:.2f} "
        f"lease_list_ratio={med['lease_list'] / med['baseline']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
