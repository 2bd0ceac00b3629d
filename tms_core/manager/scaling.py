"""Autoscaling arithmetic (pure): Triton's counters to per-interval rates, rates to a lease's
metric, the metric to a replica count, and the stabilisation that turns those into decisions.

Each replica's sidecar reads its Triton's metrics endpoint and reports, per model, counters
cumulative since the model loaded (queue time, requests, inferences) and the requests
pending now (`TritonLoad`). `LoadTracker` keeps the last two readings of each model on each
server, so a rate is always over the interval between two reports, however far apart they
came. A lease's metric is taken over its serving replicas:

- `nv_inference_queue_duration_ms`: queue time per request, the replicas' queue time over
  their requests in the last interval (0 without requests);
- `nv_inference_pending_request_count`: requests pending, per replica;
- `nv_inference_count_per_second`: inferences per second, per replica.

The recommendation is the HorizontalPodAutoscaler's: `ceil(replicas × metric / target)`,
within the lease's range, unchanged within 10 % of the target. `Stabiliser` acts on it only
once it has held for the up (or down) window, and not within the cooldown after the last
decision; it then moves to the most conservative recommendation seen over the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tms_core.domain import TritonLoad
from tms_core.ids import ModelName, ServerId

TOLERANCE = 0.1
"""A metric within this fraction of its target asks for no change (as the HPA's)."""

STALE_S = 10.0
"""A reading older than this (a server that stopped reporting) counts as no load."""


@dataclass(frozen=True)
class Rates:
    """One model's load on one server over the interval between its last two readings."""

    queue_us: float
    requests: float
    inferences: float
    interval_s: float
    pending: float
    at: float


class LoadTracker:
    def __init__(self) -> None:
        self._last: dict[tuple[ServerId, ModelName], tuple[float, TritonLoad]] = {}
        self.rates: dict[tuple[ServerId, ModelName], Rates] = {}

    def note(self, server_id: ServerId, name: ModelName, load: TritonLoad, at: float) -> None:
        key = (server_id, name)
        before = self._last.get(key)
        if before is not None and load.read_at and load.read_at == before[1].read_at:
            # The same reading again (the report was for something else): no new interval.
            return
        # Intervals between the sidecar's readings where it says when it read them (a
        # report sent for another change carries an older reading), else between reports.
        when = load.read_at or at
        self._last[key] = (when, load)
        if before is None or when <= before[0]:
            self.rates[key] = Rates(0.0, 0.0, 0.0, 0.0, load.pending, at)
            return
        then, old = before
        if load.requests < old.requests or load.inferences < old.inferences:
            # The model was loaded again (its counters restarted): count from the new ones.
            old = TritonLoad()
        self.rates[key] = Rates(
            queue_us=max(0.0, load.queue_us - old.queue_us),
            requests=float(load.requests - old.requests),
            inferences=float(load.inferences - old.inferences),
            interval_s=when - then,
            pending=load.pending,
            at=at,
        )

    def forget(self, server_id: ServerId) -> None:
        for key in [k for k in self._last if k[0] == server_id]:
            self._last.pop(key, None)
            self.rates.pop(key, None)

    def metric(
        self, metric: str, replicas: Iterable[tuple[ServerId, Iterable[ModelName]]], now: float
    ) -> tuple[float, int] | None:
        """The lease's `metric` over its serving replicas (server, the lease's models there),
        and how many replicas that is; None when none serves."""
        queue = requests = inferences = pending = 0.0
        count = 0
        for server_id, names in replicas:
            count += 1
            for name in names:
                rates = self.rates.get((server_id, name))
                if rates is None or now - rates.at > STALE_S:
                    continue
                queue += rates.queue_us
                requests += rates.requests
                pending += rates.pending
                if rates.interval_s > 0:
                    inferences += rates.inferences / rates.interval_s
        if not count:
            return None
        if metric == "nv_inference_pending_request_count":
            return pending / count, count
        if metric == "nv_inference_count_per_second":
            return inferences / count, count
        return (queue / requests / 1000.0 if requests else 0.0), count


def recommend(value: float, target: float, serving: int, current: int, low: int, high: int) -> int:
    """How many replicas the metric, measured over `serving` replicas, asks for (the HPA's
    rule), within [low, high]; `current` (the count wanted now) within the tolerance. The
    serving ones carry the load: a replica still loading adds nothing yet."""
    ratio = value / target
    wanted = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(serving * ratio)
    return min(max(wanted, low), high)


@dataclass
class Stabiliser:
    """One lease's scaling state: since when the metric has asked for more (or fewer)
    replicas, the most conservative count it asked for since, and the last decision."""

    up_since: float | None = None
    up_to: int = 0
    down_since: float | None = None
    down_to: int = 0
    decided_at: float = float("-inf")

    def observe(
        self,
        wanted: int,
        current: int,
        now: float,
        *,
        windows: tuple[float, float],
        cooldowns: tuple[float, float],
    ) -> int | None:
        """Takes one recommendation; returns the new replica count when it is time to act."""
        up_window, down_window = windows
        up_cooldown, down_cooldown = cooldowns
        if wanted > current:
            self.down_since = None
            if self.up_since is None:
                self.up_since, self.up_to = now, wanted
            self.up_to = min(self.up_to, wanted)
            if now - self.up_since >= up_window and now - self.decided_at >= up_cooldown:
                return self._decided(self.up_to, now)
        elif wanted < current:
            self.up_since = None
            if self.down_since is None:
                self.down_since, self.down_to = now, wanted
            self.down_to = max(self.down_to, wanted)
            if now - self.down_since >= down_window and now - self.decided_at >= down_cooldown:
                return self._decided(self.down_to, now)
        else:
            self.up_since = self.down_since = None
        return None

    def _decided(self, count: int, now: float) -> int:
        self.up_since = self.down_since = None
        self.decided_at = now
        return count

    def due(self, windows: tuple[float, float], cooldowns: tuple[float, float]) -> float | None:
        """When a pending change could next be decided."""
        if self.up_since is not None:
            return max(self.up_since + windows[0], self.decided_at + cooldowns[0])
        if self.down_since is not None:
            return max(self.down_since + windows[1], self.decided_at + cooldowns[1])
        return None
