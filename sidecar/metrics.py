"""The sidecar's own Prometheus metrics: fetches, loads, unloads and reports to the daemon.

Off unless `--metrics-listen` (or `TMS_SIDECAR_METRICS_LISTEN`) names an address: the local
backend gives each sidecar a loopback port when `local.sidecar_metrics` is on, and pods
serve them on `kubernetes.sidecar_metrics_port` for a PodMonitor. They hold model names and
timings, never credentials. Served by prometheus-client's HTTP server in a thread of its own,
so a scrape never waits on the sidecar's event loop.

prometheus-client is imported only by `serve`: its import takes 0.15-0.3 s on a loaded
2-core machine, which a cold lease would wait for (the sidecar starts beside tritonserver).
Until then every metric is a stand-in that counts nothing.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("sidecar")

# Fetches and loads take from milliseconds (a cached model) to many minutes (a large
# download, a big engine).
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class Counting(Protocol):
    """What the sidecar calls on a counter (prometheus-client's Counter)."""

    def labels(self, *values: str) -> Counting: ...
    def inc(self, amount: float = 1) -> None: ...


class Timing(Protocol):
    """What the sidecar calls on a histogram (prometheus-client's Histogram)."""

    def observe(self, amount: float) -> None: ...


class _Off:
    """A metric while metrics are off."""

    def labels(self, *values: str) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


FETCH_BYTES: Counting = _Off()
FETCH_SECONDS: Timing = _Off()
LOAD_SECONDS: Timing = _Off()
LOADS: Counting = _Off()
UNLOADS: Counting = _Off()
REPORTS: Counting = _Off()


def _register() -> object:
    """Makes the real metrics (module globals, read at each call) in a registry of their own."""
    global FETCH_BYTES, FETCH_SECONDS, LOAD_SECONDS, LOADS, UNLOADS, REPORTS
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry(auto_describe=True)
    FETCH_BYTES = Counter(
        "tms_sidecar_fetch_bytes",
        "Bytes of models placed in the model directory, by where they came from (download, cache).",
        ["source"],
        registry=registry,
    )
    FETCH_SECONDS = Histogram(
        "tms_sidecar_fetch_seconds",
        "Time to fetch one model into the model directory (download or cache).",
        buckets=_SLOW,
        registry=registry,
    )
    LOAD_SECONDS = Histogram(
        "tms_sidecar_load_seconds",
        "Time Triton took to load one model (successful loads).",
        buckets=_SLOW,
        registry=registry,
    )
    LOADS = Counter(
        "tms_sidecar_loads",
        "Model loads by outcome: ready, failed (Triton refused it), fetch_failed.",
        ["outcome"],
        registry=registry,
    )
    UNLOADS = Counter("tms_sidecar_unloads", "Models unloaded.", registry=registry)
    REPORTS = Counter(
        "tms_sidecar_reports",
        "Reports to the daemon by outcome: sent, failed (the daemon unreachable or refusing).",
        ["outcome"],
        registry=registry,
    )
    return registry


def serve(listen: str) -> None:
    """Serves `/metrics` on `listen` (host:port) from a daemon thread."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = listen.rpartition(":")
    registry = _register()
    assert isinstance(registry, CollectorRegistry)
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    except (OSError, ValueError) as exc:
        # Metrics are an extra: a sidecar that cannot serve them still serves its models.
        log.warning("cannot serve metrics on %s: %s", listen, exc)
        return
    log.info("metrics on http://%s/metrics", listen)
