"""Placement at fleet scale, in the simulator: packing, decision latency and waiting, against
first-fit and one server per lease, and three loading policies' memory and time to first
inference, all on one generated trace.

The trace (tms_core/sim/trace.py, fixed seed): 1,000 nodes x 8 GPUs of 80 GiB, 50,000 lease
requests, Zipf model popularity over 2,000 models, log-normal model memory clipped to
0.5-40 GiB, Poisson arrivals, exponential holding times. The per-request run goes through the
real LeaseManager and placement (best fit) on the sim backend; first-fit and one server per
lease are replayed on the same requests' intervals and sampled at the same instants. Memory
is what the leases declare, each model counted once per server (as placement counts it); the
lower bound at an instant is that memory over the GPU size, rounded up.

Consolidation: the per-request run again with `placement.consolidate` on (the simulated
holders report no inferences, so a lease READY for 10 minutes may move): GPUs in use at
peak and integrated over the trace, the moves and the model loads they caused.

Policies: keep everything loaded (computed from the trace: each model stays from its first
request to the end), load per request (the per-request run), leases with activity renewal
(one lease per model, kept alive by its inferences, run through the manager).

Run: `.venv/bin/python benchmarks/placement_sim.py [--requests N] [--nodes N] [--plot PATH]`.
A saturated fleet: the same trace on 100 nodes (`--nodes 100 --arrivals-per-s 4`; without
`--arrivals-per-s` the arrivals scale down with the fleet), where leases queue; with
`--priorities N` the requests fall into N priority classes and PENDING is reported by class.
The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tms_core.gctune import tune_gc  # noqa: E402
from tms_core.sim.trace import (  # noqa: E402
    GiB,
    Trace,
    TraceSpec,
    generate,
    keep_everything_loaded,
    play_activity,
    play_per_request,
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


class FirstFit:
    """GPUs in node order; a lease goes to the first GPU with its memory free (counting a
    model once per GPU, as placement does per server). A segment tree of free memory finds
    that GPU in log time."""

    def __init__(self, gpus: int, capacity: int) -> None:
        size = 1
        while size < gpus:
            size *= 2
        self.size = size
        self.tree = [0] * (2 * size)
        for i in range(gpus):
            self.tree[size + i] = capacity
        for i in range(size - 1, 0, -1):
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])
        self.capacity = capacity
        self.refs: list[dict[int, int]] = [{} for _ in range(gpus)]
        self.in_use = 0

    def _set(self, gpu: int, free: int) -> None:
        i = self.size + gpu
        before = self.tree[i]
        self.tree[i] = free
        self.in_use += (free < self.capacity) - (before < self.capacity)
        i //= 2
        while i:
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])
            i //= 2

    def place(self, model: int, memory: int) -> int:
        """The GPU the lease goes to; -1 when none has room (a saturated fleet: the lease
        is left out of first-fit's count, which then undercounts)."""
        i = 1
        if self.tree[1] < memory:
            return -1
        while i < self.size:
            i = 2 * i if self.tree[2 * i] >= memory else 2 * i + 1
        gpu = i - self.size
        refs = self.refs[gpu]
        if not refs.get(model):
            self._set(gpu, self.tree[self.size + gpu] - memory)
        refs[model] = refs.get(model, 0) + 1
        return gpu

    def remove(self, gpu: int, model: int, memory: int) -> None:
        if gpu < 0:
            return
        refs = self.refs[gpu]
        refs[model] -= 1
        if not refs[model]:
            del refs[model]
            self._set(gpu, self.tree[self.size + gpu] + memory)


def replay_baselines(trace: Trace, instants: list[float]) -> tuple[list[int], list[int], list[int]]:
    """At `instants` (seconds from the trace's start): GPUs in use under first-fit, under one
    server (one GPU) per lease, and the lower bound: the memory of the distinct models the
    live leases hold (one load of a model serves all its leases) over the GPU size."""
    spec = trace.spec
    events: list[tuple[float, int, int]] = []  # (time, 0 = end / 1 = start, request)
    for n, request in enumerate(trace.requests):
        events.append((request.at, 1, n))
        events.append((request.at + request.hold_s, 0, n))
    events.sort()
    fit = FirstFit(spec.nodes * spec.gpus_per_node, spec.gpu_gib * GiB)
    where: dict[int, int] = {}
    first_fit, per_lease, lower = [], [], []
    live = 0
    holders: dict[int, int] = {}
    distinct = 0
    e = 0
    for instant in instants:
        while e < len(events) and events[e][0] <= instant:
            _, starts, n = events[e]
            request = trace.requests[n]
            memory = trace.memory[request.model]
            if starts:
                where[n] = fit.place(request.model, memory)
                live += 1
                holders[request.model] = holders.get(request.model, 0) + 1
                distinct += memory if holders[request.model] == 1 else 0
            else:
                fit.remove(where.pop(n), request.model, memory)
                live -= 1
                holders[request.model] -= 1
                distinct -= memory if holders[request.model] == 0 else 0
            e += 1
        first_fit.append(fit.in_use)
        per_lease.append(live)
        lower.append(math.ceil(distinct / (spec.gpu_gib * GiB)))
    return first_fit, per_lease, lower


def plot(
    path: Path, policies: dict[str, tuple[float, list[float]]], series: dict[str, object]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    hours = series["hours"]
    labels = ["one server per lease", "first-fit", "best fit (tms)", "lower bound"]
    if "best fit + consolidation" in series:
        labels.insert(3, "best fit + consolidation")
    for label in labels:
        left.plot(hours, series[label], label=label, linewidth=1.2)  # type: ignore[arg-type,unused-ignore]
    left.set_xlabel("simulated hours")
    left.set_ylabel("GPUs in use (log scale)")
    left.set_yscale("log")
    left.set_title("GPUs in use over the trace")
    left.legend()
    names = list(policies)
    memory = [policies[n][0] for n in names]
    ttfi = [percentile(policies[n][1], 99) for n in names]
    bars = right.bar(names, memory, color=["#4c72b0", "#dd8452", "#55a868"])
    right.set_ylabel("memory GiB-hours")
    right.set_title("Loading policies: memory (labels: p99 time to first inference)", fontsize=10)
    for bar, p99 in zip(bars, ttfi, strict=True):
        right.annotate(
            f"p99 TTFI {p99:.0f} s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=TraceSpec.requests)
    parser.add_argument("--nodes", type=int, default=TraceSpec.nodes)
    parser.add_argument("--seed", type=int, default=TraceSpec.seed)
    parser.add_argument("--models", type=int, default=TraceSpec.models)
    parser.add_argument("--zipf", type=float, default=TraceSpec.zipf_s)
    parser.add_argument("--mean-hold", type=float, default=TraceSpec.mean_hold_s)
    parser.add_argument(
        "--arrivals-per-s",
        type=float,
        default=0.0,
        help="default: 4.0, scaled with --requests and --nodes to keep the load per GPU",
    )
    parser.add_argument(
        "--priorities", type=int, default=1, help="priority classes drawn per request"
    )
    parser.add_argument("--activity-window", type=float, default=600.0)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "placement_sim.png")
    parser.add_argument("--no-policies", action="store_true", help="only the per-request run")
    parser.add_argument(
        "--no-consolidation", action="store_true", help="skip the run with consolidation on"
    )
    args = parser.parse_args()
    # Fewer requests keep the same load per GPU: arrivals scale with the trace.
    scale = args.requests / TraceSpec.requests * TraceSpec.nodes / args.nodes
    spec = replace(
        TraceSpec(),
        requests=args.requests,
        nodes=args.nodes,
        seed=args.seed,
        models=args.models,
        zipf_s=args.zipf,
        mean_hold_s=args.mean_hold,
        priorities=args.priorities,
        arrivals_per_s=args.arrivals_per_s
        or TraceSpec.arrivals_per_s * args.requests / TraceSpec.requests / scale,
    )
    began = time.perf_counter()
    trace = generate(spec)
    # As the daemon does after start-up: the collector otherwise walks the whole fleet's
    # state every few hundred thousand allocations, in the middle of decisions.
    tune_gc()
    print(
        f"trace: {spec.requests} requests over {trace.requests[-1].at / 3600:.1f} h, "
        f"{spec.models} models, fleet {spec.fleet}",
        flush=True,
    )

    print("per-request run (LeaseManager + placement on the sim backend)...", flush=True)
    t0 = time.perf_counter()
    played = asyncio.run(play_per_request(trace))
    wall_s = time.perf_counter() - t0
    fleet = played.fleet
    samples = played.samples
    first_fit, per_lease, lower = replay_baselines(trace, [s.at - played.start for s in samples])
    peak_at = max(range(len(samples)), key=lambda i: samples[i].gpus_in_use)
    peak = samples[peak_at]
    peak_ratio = peak.gpus_in_use / max(lower[peak_at], 1)
    decision = [s * 1000 for s in fleet.decision_s]
    decision_cpu = [s * 1000 for s in fleet.decision_cpu_s]
    pending = list(fleet.pending_s.values())
    print(
        f"  {wall_s:.1f} s wall; peak {peak.gpus_in_use} GPUs in use at "
        f"{(peak.at - played.start) / 3600:.2f} h, lower bound {lower[peak_at]}, "
        f"first-fit peak {max(first_fit)}, one-per-lease peak {max(per_lease)}; "
        f"{played.servers_started} servers started, {fleet.loads} model loads",
        flush=True,
    )
    summary = {
        "requests": spec.requests,
        "gpus": spec.nodes * spec.gpus_per_node,
        "peak_gpus": peak.gpus_in_use,
        "lower_bound": lower[peak_at],
        "peak_ratio": round(peak_ratio, 3),
        "firstfit_peak": max(first_fit),
        "firstfit_ratio": round(max(first_fit) / max(lower[first_fit.index(max(first_fit))], 1), 3),
        "per_lease_peak": max(per_lease),
        "decision_p50_ms": round(percentile(decision, 50), 3),
        "decision_p99_ms": round(percentile(decision, 99), 3),
        "decision_cpu_p99_ms": round(percentile(decision_cpu, 99), 3),
        "pending_p50_s": round(percentile(pending, 50), 1),
        "pending_p99_s": round(percentile(pending, 99), 1),
        "waited": sum(1 for s in pending if s > 0),
    }
    if spec.priorities > 1:
        by_priority: dict[int, list[float]] = {}
        for lease_id, waited in fleet.pending_s.items():
            by_priority.setdefault(fleet.lease(lease_id).priority, []).append(waited)
        for priority, waits in sorted(by_priority.items()):
            summary[f"pending_p{priority}_p50_s"] = round(percentile(waits, 50), 1)
            summary[f"pending_p{priority}_p99_s"] = round(percentile(waits, 99), 1)
    summary["gpu_h"] = round(played.gpu_hours(60.0))
    # The bound on GPU-hours: the lower bound at each sample, integrated the same way.
    summary["lower_gpu_h"] = round(sum(lower) * 60.0 / 3600)
    consolidated: list[int] = []
    if not args.no_consolidation:
        print("per-request run with consolidation...", flush=True)
        t1 = time.perf_counter()
        moved = asyncio.run(play_per_request(trace, consolidate=True))
        manager = moved.fleet.manager
        consolidate_peak = max(s.gpus_in_use for s in moved.samples)
        print(
            f"  {time.perf_counter() - t1:.1f} s wall; peak {consolidate_peak} GPUs in use, "
            f"{moved.gpu_hours(60.0):,.0f} GPU-hours against {played.gpu_hours(60.0):,.0f}; "
            f"{manager.moves_done} leases moved, {manager.move_reloads} models loaded for them",
            flush=True,
        )
        # Sampled at the same instants as the first run (the same trace and start).
        consolidated = [s.gpus_in_use for s in moved.samples]
        summary["consolidate_peak"] = consolidate_peak
        summary["consolidate_gpu_h"] = round(moved.gpu_hours(60.0))
        summary["moves"] = manager.moves_done
        summary["reloads"] = manager.move_reloads
        passes = [t * 1000 for t in moved.fleet.consolidate_s]
        summary["consolidate_pass_p99_ms"] = round(percentile(passes, 99), 1)
        locked = [t * 1000 for t in moved.fleet.consolidate_locked_s]
        summary["consolidate_lock_p99_ms"] = round(percentile(locked, 99), 1)
        summary["consolidate_wall_s"] = round(time.perf_counter() - t1, 1)
    policies: dict[str, tuple[float, list[float]]] = {}
    if not args.no_policies:
        policies["keep loaded"] = keep_everything_loaded(trace)
        policies["per request"] = (played.memory_gib_hours(60.0), played.ttfi_s)
        print(f"activity-renewal run (window {args.activity_window:.0f} s)...", flush=True)
        activity = asyncio.run(play_activity(trace, window_s=args.activity_window))
        policies["activity renewal"] = (activity.memory_gib_hours(60.0), activity.ttfi_s)
        for name, (gib_h, ttfi) in policies.items():
            print(
                f"  {name:17} memory {gib_h:12,.0f} GiB-h  TTFI p50 {percentile(ttfi, 50):6.1f} s"
                f"  p99 {percentile(ttfi, 99):6.1f} s  mean {sum(ttfi) / max(len(ttfi), 1):6.1f} s",
                flush=True,
            )
        short = {"keep loaded": "keep", "per request": "perreq", "activity renewal": "activity"}
        for name, (gib_h, ttfi) in policies.items():
            summary[f"{short[name]}_gib_h"] = round(gib_h)
            summary[f"{short[name]}_ttfi_p99_s"] = round(percentile(ttfi, 99), 1)
        hours = [(s.at - played.start) / 3600 for s in samples]
        series: dict[str, object] = {
            "hours": hours,
            "one server per lease": per_lease,
            "first-fit": first_fit,
            "best fit (tms)": [s.gpus_in_use for s in samples],
            "lower bound": lower,
        }
        if len(consolidated) == len(samples):
            series["best fit + consolidation"] = consolidated
        plot(args.plot, policies, series)
        print(f"plot: {args.plot}", flush=True)
    # Other processes on the machine stretch wall-clock figures (decision p99 above all).
    summary["load1"] = round(os.getloadavg()[0], 2)
    summary["wall_s"] = round(wall_s, 1)
    summary["total_s"] = round(time.perf_counter() - began, 1)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
