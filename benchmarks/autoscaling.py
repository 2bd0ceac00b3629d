"""Autoscaling and standby servers against the raw Triton paths, side by side in one run.

scale-up: both under the same load step (one client thread, back-to-back add_sub
          inferences) on one serving server; raw = start a second tritonserver +
          load_model by hand; tms = from the step on an autoscaling lease (`1:2`, inferences
          per second over a low target, the shortest windows) until the lease's address
          lists a second serving replica: the sidecar's reading, the daemon's decision,
          placement, the new server's start, the model's copy and load, and the commit
          that routes to it; and the same with `servers.standby: 1`, where the replica
          lands on the waiting server and needs only the load.
standby:  raw = load_model + first inference on a running tritonserver;
          tms = Acquire of a cold lease with `servers.standby: 1` until READY + its first
          inference through the lease's address.
parked:   raw = start tritonserver + load_model + first inference; tms = the first
          inference through a PARKED lease's address (`0:1`, its server stopped): the
          router holds it, the daemon wakes the lease (placement, a server's start, the
          model's copy and load) and the held request is then served. With
          `servers.standby: 1` the same first inference against raw load_model + first
          inference: the wake joins the waiting server and needs only the load.

Rounds alternate raw and tms so both see the same machine noise; the figures are medians.
Run: `.venv/bin/python benchmarks/autoscaling.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import ADD_SUB, add_sub_call, running_daemon  # noqa: E402
from benchmarks.time_to_ready import RawTriton, unload_fully  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.api.client import TmsClient  # noqa: E402
from tms_core.lease_request import LeaseOptions, autoscale_request  # noqa: E402

POLL_S = 0.005
SCALE = autoscale_request(
    1,
    2,
    "nv_inference_count_per_second",
    5.0,
    # Shortest windows: the figure is the reaction and the start, not a stabilisation.
    up_window_s=0.001,
    up_cooldown_s=0.001,
    down_window_s=0.5,
    down_cooldown_s=0.5,
    drain_s=0.1,
)


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_S)


class Step:
    """Load on an address from `threads` threads until stopped (bounded by `max_s`)."""

    def __init__(self, address: str, threads: int = 1, max_s: float = 60.0) -> None:
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_s
        self.failures = 0
        self._threads = [
            threading.Thread(target=self._run, args=(address,), daemon=True) for _ in range(threads)
        ]

    def _run(self, address: str) -> None:
        call = add_sub_call(httpclient, address)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                call()
            except Exception:
                self.failures += 1

    def start(self) -> Step:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def serving(client: TmsClient, lease_id: str) -> int:
    return len(client.status(lease_id).endpoints.servers)


def alive_servers(client: TmsClient) -> tuple[list[str], list[str]]:
    """(servers, standby servers) as `tms cluster` lists them."""
    servers: list[str] = []
    standby: list[str] = []
    for node in client.cluster().nodes:
        for resource in [node.cpu, *(g.memory for g in node.gpus)]:
            servers.extend(resource.server_ids)
            standby.extend(resource.standby_server_ids)
    return servers, standby


def running_ids(client: TmsClient) -> set[str]:
    """Servers whose last event says RUNNING."""
    last: dict[str, str] = {}
    for event in client.watch(follow=False):
        if event.kind == "server":
            last[event.id] = event.state
    return {sid for sid, state in last.items() if state == "RUNNING"}


def settled_servers(client: TmsClient) -> bool:
    """No server still stopping (a stop holds the reconciler's pass for its duration)."""
    last: dict[str, str] = {}
    for event in client.watch(follow=False):
        if event.kind == "server":
            last[event.id] = event.state
    return "STOPPING" not in last.values()


def quiet(client: TmsClient, lease_id: str, standby: int) -> None:
    """Waits until the lease serves from one replica, the other servers have stopped, and
    (`standby`) one RUNNING standby server waits."""
    wait(lambda: serving(client, lease_id) == 1, 30, "one serving replica")
    wait(lambda: len(alive_servers(client)[0]) == 1 + standby, 30, "the servers to settle")
    wait(lambda: settled_servers(client), 30, "stopping servers to stop")
    wait(lambda: set(alive_servers(client)[1]) <= running_ids(client), 30, "standby RUNNING")


def step_to_second(client: TmsClient, lease: pb.Lease) -> tuple[float, int]:
    """Seconds from a load step on the lease's address to a second serving replica, and
    the requests that failed meanwhile."""
    t0 = time.perf_counter()
    step = Step(lease.endpoints.http).start()
    wait(lambda: serving(client, lease.id) == 2, 60, "a second serving replica")
    took = time.perf_counter() - t0
    step.stop()
    return took, step.failures


def scale_up_rounds(work: Path, rounds: int) -> tuple[dict[str, list[float]], int]:
    """All three under the same load step on one serving server: raw starts a second
    tritonserver and loads the model by hand; tms reacts on its own, with no standby
    server (it starts one) and with `servers.standby: 1` (it loads on the standby)."""
    times: dict[str, list[float]] = {"raw": [], "tms": [], "tms_standby": []}
    failures = 0
    first = RawTriton(work / "raw-first")
    first_client = first.start()
    first_client.load_model("add_sub")
    first_address = first.http_address
    second = RawTriton(work / "raw-second")
    config = work / "scale-standby.yaml"
    config.write_text("servers:\n  standby: 1\n  idle_grace: 0.2s\n")
    try:
        with (
            running_daemon(work / "scale", ["--idle-grace=0.2s"]) as (_, plain),
            running_daemon(work / "scale-standby", [f"--config={config}"]) as (_, spare),
        ):
            leases = {}
            for client in (plain, spare):
                *_, lease = client.acquire(
                    [ADD_SUB], LeaseOptions(duration_s=3600, autoscale=SCALE)
                )
                assert lease.state == pb.LEASE_READY, lease.reason
                leases[id(client)] = lease
            for measured in [False] + [True] * rounds:
                step = Step(first_address).start()
                t0 = time.perf_counter()
                triton = second.start()
                triton.load_model("add_sub")
                raw_s = time.perf_counter() - t0
                step.stop()
                failures += step.failures
                triton.close()
                second.stop()

                quiet(plain, leases[id(plain)].id, standby=0)
                tms_s, failed = step_to_second(plain, leases[id(plain)])
                failures += failed
                quiet(spare, leases[id(spare)].id, standby=1)
                spare_s, failed = step_to_second(spare, leases[id(spare)])
                failures += failed
                if measured:
                    for key, value in (("raw", raw_s), ("tms", tms_s), ("tms_standby", spare_s)):
                        times[key].append(value)
                    print(
                        f"scale-up round {len(times['raw'])}: raw={raw_s:.3f}s "
                        f"tms={tms_s:.3f}s tms_standby={spare_s:.3f}s",
                        flush=True,
                    )
            for client in (plain, spare):
                client.release(leases[id(client)].id)
    finally:
        first_client.close()
        first.stop()
        first.log.close()
        second.log.close()
    return times, failures


def standby_rounds(work: Path, rounds: int) -> tuple[list[float], list[float]]:
    raw_times: list[float] = []
    tms_times: list[float] = []
    raw = RawTriton(work / "raw-standby")
    triton = raw.start()
    address = raw.http_address
    config = work / "standby.yaml"
    config.write_text("servers:\n  standby: 1\n  idle_grace: 0.2s\n")
    try:
        with running_daemon(work / "standby", [f"--config={config}"]) as (_, client):
            for measured in [False] + [True] * rounds:
                t0 = time.perf_counter()
                triton.load_model("add_sub")
                add_sub_call(httpclient, address)()
                raw_s = time.perf_counter() - t0
                unload_fully(triton, "add_sub")

                # One server, empty, RUNNING: the standby a cold lease finds.
                def one_standby() -> bool:
                    servers, standby = alive_servers(client)
                    return len(servers) == 1 and standby == servers

                wait(one_standby, 30, "one standby server")
                wait(lambda: set(alive_servers(client)[1]) <= running_ids(client), 30, "RUNNING")
                t0 = time.perf_counter()
                *_, lease = client.acquire([ADD_SUB], LeaseOptions(duration_s=600))
                add_sub_call(httpclient, lease.endpoints.http)()
                tms_s = time.perf_counter() - t0
                assert lease.state == pb.LEASE_READY, lease.reason
                client.release(lease.id)
                if measured:
                    raw_times.append(raw_s)
                    tms_times.append(tms_s)
                    print(f"standby round {len(raw_times)}: raw={raw_s:.3f}s tms={tms_s:.3f}s")
    finally:
        triton.close()
        raw.stop()
        raw.log.close()
    return raw_times, tms_times


PARKS = autoscale_request(0, 1, park_after_s=0.3)


def parked_rounds(work: Path, rounds: int, *, standby: bool) -> tuple[list[float], list[float]]:
    """(raw, tms) first-request times of a parked lease, alternating, as the docstring says."""
    raw_times: list[float] = []
    tms_times: list[float] = []
    name = "parked-standby" if standby else "parked"
    raw = RawTriton(work / f"raw-{name}")
    kept = raw.start() if standby else None
    address = raw.http_address  # "" until started: only the kept server's is used
    config = work / f"{name}.yaml"
    config.write_text(f"servers:\n  standby: {int(standby)}\n  idle_grace: 0.2s\n")
    try:
        with running_daemon(work / name, [f"--config={config}"]) as (_, client):
            *_, lease = client.acquire([ADD_SUB], LeaseOptions(duration_s=3600, autoscale=PARKS))
            assert lease.state == pb.LEASE_READY, lease.reason
            for measured in [False] + [True] * rounds:
                if kept is not None:
                    t0 = time.perf_counter()
                    kept.load_model("add_sub")
                    add_sub_call(httpclient, address)()
                    raw_s = time.perf_counter() - t0
                    unload_fully(kept, "add_sub")
                else:
                    t0 = time.perf_counter()
                    triton = raw.start()
                    triton.load_model("add_sub")
                    add_sub_call(httpclient, raw.http_address)()
                    raw_s = time.perf_counter() - t0
                    triton.close()
                    raw.stop()

                def parked_alone() -> bool:
                    if client.status(lease.id).state != pb.LEASE_PARKED:
                        return False
                    servers, waiting = alive_servers(client)
                    # Parked, and what is left is only the standby server, RUNNING; the
                    # stopped server's exit done (as raw's, before its next start).
                    alone = set(servers) == set(waiting) and len(waiting) == int(standby)
                    return alone and settled_servers(client)

                wait(parked_alone, 60, "the lease parked and its server stopped")
                wait(lambda: set(alive_servers(client)[1]) <= running_ids(client), 30, "RUNNING")
                t0 = time.perf_counter()
                add_sub_call(httpclient, lease.endpoints.http)()
                tms_s = time.perf_counter() - t0
                if measured:
                    raw_times.append(raw_s)
                    tms_times.append(tms_s)
                    print(f"{name} round {len(raw_times)}: raw={raw_s:.3f}s tms={tms_s:.3f}s")
            client.release(lease.id)
    finally:
        if kept is not None:
            kept.close()
        if raw.proc is not None and raw.proc.poll() is None:
            raw.stop()
        raw.log.close()
    return raw_times, tms_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only-parked", action="store_true", help="only the parked rounds (the rest print 1.0)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tms-bench-") as tmp:
        work = Path(tmp)
        for sub in ("raw-first", "raw-second", "raw-standby", "scale", "scale-standby"):
            (work / sub).mkdir()
        for sub in ("standby", "parked", "parked-standby"):
            (work / sub).mkdir()
        parked_raw, parked_tms = parked_rounds(work, args.rounds, standby=False)
        parked_sb_raw, parked_sb_tms = parked_rounds(work, args.rounds, standby=True)
        if args.only_parked:
            up = {key: [1.0] for key in ("raw", "tms", "tms_standby")}
            failures = 0
            raw_sb = tms_sb = [1.0]
        else:
            up, failures = scale_up_rounds(work, args.rounds)
            raw_sb, tms_sb = standby_rounds(work, args.rounds)
    med = {key: statistics.median(values) for key, values in up.items()}
    raw_load, tms_first = statistics.median(raw_sb), statistics.median(tms_sb)
    p_raw, p_tms = statistics.median(parked_raw), statistics.median(parked_tms)
    ps_raw, ps_tms = statistics.median(parked_sb_raw), statistics.median(parked_sb_tms)
    print(
        f"rounds={args.rounds} raw_start_load_s={med['raw']:.3f} "
        f"tms_step_to_second_replica_s={med['tms']:.3f} "
        f"scale_up_ratio={med['tms'] / med['raw']:.3f} "
        f"tms_step_to_second_replica_standby_s={med['tms_standby']:.3f} "
        f"scale_up_standby_ratio={med['tms_standby'] / med['raw']:.3f} "
        f"raw_load_infer_s={raw_load:.3f} tms_standby_first_infer_s={tms_first:.3f} "
        f"standby_ratio={tms_first / raw_load:.3f} failed_requests={failures} "
        f"raw_start_load_infer_s={p_raw:.3f} tms_parked_first_infer_s={p_tms:.3f} "
        f"parked_ratio={p_tms / p_raw:.3f} raw_load_infer_standby_s={ps_raw:.3f} "
        f"tms_parked_standby_first_infer_s={ps_tms:.3f} parked_standby_ratio={ps_tms / ps_raw:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
