"""Which CPU the router runs on: one of its own, by default, where the machine has two or more.

The router is one thread, so one CPU is all it can use; what pinning changes is where the
scheduler wakes it. Left free, each forwarded chunk wakes it on whichever CPU the writer just
used, so on a small machine it queues behind the client or Triton's threads it woke or was
woken by, and moves between CPUs as they do. Pinned, it wakes on a CPU of its own and the
others spread around it. Side by side on a 2-core VM (`benchmarks/router_overhead.py`, five
pairs of runs), add_sub's HTTP inference through a lease address went from 1.32-1.58x the
direct address's p50 to 1.05-1.27x, and gRPC's from 1.14-1.30x to 0.84-1.13x.

`auto` takes the highest-numbered CPU the process may use: CPU 0 is where many machines route
their interrupts by default. A machine whose other work is pinned there already says `none` or
a CPU number (`local.router_cpu`, `python -m tms_core.router --cpu`).

Under `auto` the pin is let go while a lease loads (`Affinity.loading`): a Python-backend
model's stub start and imports hold whole CPUs for a scheduler tick at a time, and a router
kept to one of them waits it out, while one left free is woken where it can run. Side by side
during a neighbour's loads (`benchmarks/colocated_loads.py --no-raw`, five pairs of runs on a
2-core VM), the p99 of HTTP inference through a lease address over its quiet p99 was lower
with the router free in all five (1.49-1.74 against 1.77-2.40), and gRPC's in four. A CPU
number given by hand is kept to, loads or not: whoever named it may have kept the others for
their own work. A lease queued for room (pending) counts as loading too, since its route holds
the same way; a long queue leaves the router free, which costs only the pin's gain.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CHOICES = "auto, none, or a CPU number"


def parse(value: str) -> str | int:
    """`auto`, `none` or a CPU number (>= 0); ValueError naming what is expected otherwise."""
    text = value.strip().lower()
    if text in ("auto", "none"):
        return text
    try:
        cpu = int(text)
    except ValueError:
        cpu = -1
    if cpu < 0:
        raise ValueError(f"expected {CHOICES}, got {value!r}")
    return cpu


def pin(choice: str | int) -> int | None:
    """Keeps this process on the CPU `choice` names; returns it, or None when left free (one
    CPU only, `none`, no affinity calls on this system, or the call refused: logged)."""
    if choice == "none" or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if choice == "auto":
        if len(allowed) < 2:
            return None
        cpu = max(allowed)
    else:
        cpu = int(choice)
        if cpu not in allowed:
            log.warning(
                "CPU %d is not among those this process may use (%s); running unpinned",
                cpu,
                ",".join(map(str, sorted(allowed))),
            )
            return None
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning("cannot pin to CPU %d (%s); running unpinned", cpu, exc)
        return None
    return cpu


class Affinity:
    """The router's CPU: pinned as `choice` says, and under `auto` let go while leases load."""

    def __init__(self, choice: str | int) -> None:
        self.allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.cpu = pin(choice)
        self.follows_loads = choice == "auto" and self.cpu is not None
        self.free = False

    def loading(self, loads: bool) -> None:
        """Lets the pin go while `loads` (a lease is on its way to READY), and takes it back
        once none is; a refused call is logged and leaves the router where it is."""
        if not self.follows_loads or loads == self.free or self.cpu is None:
            return
        cpus = self.allowed if loads else {self.cpu}
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            log.warning("cannot set the router's CPUs to %s (%s)", sorted(cpus), exc)
            return
        self.free = loads
