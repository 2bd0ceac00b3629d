"""The sidecar's own Prometheus metrics: fetches, loads, unloads and reports to the daemon.

Off unless `--metrics-listen` (or `TMS_SIDECAR_METRICS_LISTEN`) names an address: the local
backend gives each sidecar a loopback port when `local.sidecar_metrics` is on, and pods
serve them on `kubernetes.sidecar_metrics_port` for a PodMonitor. They hold model names and
timings, never credentials. Served by prometheus-client's HTTP server in a thread of its own,
so a scrape never waits on the sidecar's event loop.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger("sidecar")

REGISTRY = CollectorRegistry(auto_describe=True)
# Fetches and loads take from milliseconds (a cached model) to many minutes (a large
# download, a big engine).
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

FETCH_BYTES = Counter(
    "tms_sidecar_fetch_bytes",
    "Bytes of models placed in the model directory, by where they came from (download, cache).",
    ["source"],
    registry=REGISTRY,
)
FETCH_SECONDS = Histogram(
    "tms_sidecar_fetch_seconds",
    "Time to fetch one model into the model directory (download or cache).",
    buckets=_SLOW,
    registry=REGISTRY,
)
LOAD_SECONDS = Histogram(
    "tms_sidecar_load_seconds",
    "Time Triton took to load one model (successful loads).",
    buckets=_SLOW,
    registry=REGISTRY,
)
LOADS = Counter(
    "tms_sidecar_loads",
    "Model loads by outcome: ready, failed (Triton refused it), fetch_failed.",
    ["outcome"],
    registry=REGISTRY,
)
UNLOADS = Counter("tms_sidecar_unloads", "Models unloaded.", registry=REGISTRY)
REPORTS = Counter(
    "tms_sidecar_reports",
    "Reports to the daemon by outcome: sent, failed (the daemon unreachable or refusing).",
    ["outcome"],
    registry=REGISTRY,
)


def serve(listen: str) -> None:
    """Serves `/metrics` on `listen` (host:port) from a daemon thread."""
    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=REGISTRY)
    except (OSError, ValueError) as exc:
        # Metrics are an extra: a sidecar that cannot serve them still serves its models.
        log.warning("cannot serve metrics on %s: %s", listen, exc)
        return
    log.info("metrics on http://%s/metrics", listen)
