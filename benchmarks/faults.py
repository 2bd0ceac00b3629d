"""The fault run, then crash-to-READY against the raw path, side by side in one run.

faults:   tests/faults' run (tests/faults/harness.py, the same code): client threads acquire,
          renew, look up by name and release while seeded SIGKILLs hit tritonserver, sidecars,
          the router and the daemon; then every invariant is checked (none may break).
recovery: a READY add_sub lease's tritonserver is SIGKILLed; the time until the lease is
          READY again (on the restarted server, polled every 5 ms) against the raw path: start
          a tritonserver and load add_sub by hand, polled alike. Rounds alternate raw and
          daemon so both see the same machine noise; the figures are medians.

Run: `.venv/bin/python benchmarks/faults.py [--rounds N] [--seed S]`. The last line is the
figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.time_to_ready import RawTriton  # noqa: E402
from tests.conftest import Daemon  # noqa: E402
from tests.faults.harness import FaultRun, seed_from_env  # noqa: E402
from tests.integration.helpers import example  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.lease_request import LeaseOptions  # noqa: E402

POLL_S = 0.005
CONFIG = (
    "servers:\n  max_restarts: 1000\n  idle_grace: 1m\n"
    # Each round is one crash of a healthy server (the first restart is at once): the
    # rounds are further apart than this, so the backoff of a crash loop does not add up.
    "  restart_window: 1s\n"
)


def triton_pid(state_dir: Path, server_id: str) -> int:
    marker = f"--model-repository={state_dir}/servers/{server_id}/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.startswith(marker) for a in argv):
            return int(entry.name)
    raise RuntimeError(f"no tritonserver for {server_id}")


def crash_to_ready(daemon: Daemon, lease: pb.Lease) -> tuple[float, pb.Lease]:
    """SIGKILLs the lease's tritonserver; seconds until the lease is READY on the new one."""
    old = lease.endpoints.servers[0].http
    pid = triton_pid(daemon.state_dir, lease.server_id)
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while True:
        now = daemon.client.status(lease.id)
        if now.state == pb.LEASE_READY and now.endpoints.servers[0].http != old:
            return time.perf_counter() - t0, now
        if now.state in (pb.LEASE_FAILED, pb.LEASE_EXPIRED, pb.LEASE_RELEASED):
            raise RuntimeError(f"lease ended: {now.reason}")
        time.sleep(POLL_S)


def raw_start_and_load(raw: RawTriton) -> float:
    t0 = time.perf_counter()
    triton = raw.start()
    triton.load_model("add_sub")
    elapsed = time.perf_counter() - t0
    triton.close()
    raw.stop()
    return elapsed


def recovery_rounds(work: Path, rounds: int) -> tuple[list[float], list[float]]:
    raw = RawTriton(work)
    config = work / "recovery.yaml"
    config.write_text(CONFIG)
    daemon = Daemon(work / "recovery-state", f"--config={config}").start()
    tms: list[float] = []
    direct: list[float] = []
    try:
        *_, lease = daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=3600))
        assert lease.state == pb.LEASE_READY, lease
        # One unmeasured round each, so both paths start with warm page caches.
        for measured in [False] + [True] * rounds:
            raw_s = raw_start_and_load(raw)
            tms_s, lease = crash_to_ready(daemon, lease)
            if measured:
                direct.append(raw_s)
                tms.append(tms_s)
                print(f"round {len(tms)}: raw={raw_s:.3f}s crash_to_ready={tms_s:.3f}s", flush=True)
    finally:
        daemon.stop()
        daemon.client.close()
        raw.log.close()
    return tms, direct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="crash-to-READY rounds")
    parser.add_argument("--faults", type=int, default=8, help="faults in the fault run")
    parser.add_argument("--seed", type=int, default=None, help="default: TMS_FAULT_SEED or random")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else seed_from_env()
    print(f"fault run seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tms-faults-") as tmp:
        work = Path(tmp)
        run = FaultRun(work / "faults", seed, faults=args.faults, log=print)
        try:
            outcome = run.run()
            violations = run.check()
        finally:
            run.close()
        for violation in violations:
            print(f"VIOLATION: {violation}", flush=True)
        print(outcome.line(), flush=True)
        tms, raw = recovery_rounds(work, args.rounds)
    recoveries = outcome.recoveries + tms
    tms_p50, raw_p50 = statistics.median(tms), statistics.median(raw)
    print(
        f"operations={outcome.operations} faults={sum(outcome.faults.values())} "
        f"leases_lost={outcome.leases_lost} violations={len(violations)} "
        f"recoveries={len(recoveries)} recovery_p50_s={tms_p50:.3f} raw_p50_s={raw_p50:.3f} "
        f"crash_to_ready_ratio={tms_p50 / raw_p50:.3f} seed={seed}"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
