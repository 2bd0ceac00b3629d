"""The daemon's own Prometheus metrics, served over HTTP on `daemon.metrics_listen`.

Counters and histograms are updated where things happen (the API interceptor, the store's
commits, placement); gauges of the state (leases by state and tenant, servers by state,
memory) are read from the lease manager at each scrape by `StateCollector`, so they cost
nothing between scrapes. The HTTP endpoint runs on the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric

from tms_core.errors import ConfigError

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

API_REQUESTS = PromCounter(
    "tms_api_requests",
    "API calls by method and gRPC status code.",
    ["method", "code"],
    registry=REGISTRY,
)
API_LATENCY = Histogram(
    "tms_api_request_seconds",
    "Time to answer a unary API call, by method.",
    ["method"],
    buckets=_FAST,
    registry=REGISTRY,
)
STORE_COMMIT = Histogram(
    "tms_store_commit_seconds",
    "Time of one state-store transaction (write and commit).",
    buckets=_FAST,
    registry=REGISTRY,
)
DECISIONS = PromCounter(
    "tms_placement_decisions",
    "Placement decisions at acquire, by outcome (join, start, wait, reject, quota).",
    ["decision"],
    registry=REGISTRY,
)
DECISION_LATENCY = Histogram(
    "tms_placement_decision_seconds",
    "Time to decide where a new lease goes.",
    buckets=_FAST,
    registry=REGISTRY,
)
MODEL_LOADS = PromCounter(
    "tms_model_loads",
    "Model loads the sidecars reported finished, by outcome (ready, failed).",
    ["outcome"],
    registry=REGISTRY,
)
MODEL_LOAD_SECONDS = Histogram(
    "tms_model_load_seconds",
    "Time Triton took to load a model, as its sidecar reported it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
    registry=REGISTRY,
)
STREAMS = Gauge(
    "tms_api_streams",
    "Open streaming calls (Watch, Follow, Acquire, sidecars' Connect), by method.",
    ["method"],
    registry=REGISTRY,
)


class StateCollector:
    """Gauges read from the daemon's state at scrape time (on the event loop)."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        leases = GaugeMetricFamily(
            "tms_leases", "Leases by state and tenant.", labels=["state", "tenant"]
        )
        counts: Counter[tuple[str, str]] = state["leases"]
        for (lease_state, tenant), count in sorted(counts.items()):
            leases.add_metric([lease_state, tenant], count)
        yield leases
        servers = GaugeMetricFamily("tms_servers", "Servers by state.", labels=["state"])
        for server_state, count in sorted(state["servers"].items()):
            servers.add_metric([server_state], count)
        yield servers
        memory = GaugeMetricFamily(
            "tms_memory_bytes",
            "Memory per node and device (host or gpu<N>): total, declared, measured, free.",
            labels=["node", "device", "kind"],
        )
        for (node, device, kind), value in sorted(state["memory"].items()):
            memory.add_metric([node, device, kind], value)
        yield memory


class MetricsServer:
    """`GET /metrics` over HTTP on the daemon's event loop, so reading the state at a scrape
    races with nothing."""

    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self._collector = StateCollector(read_state)
        self._server: asyncio.Server | None = None

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        try:
            self._server = await asyncio.start_server(self._serve, host or None, int(port))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"daemon.metrics_listen: cannot serve metrics on {listen}: {exc}"
            ) from None
        REGISTRY.register(self._collector)
        log.info("metrics on http://%s/metrics", listen)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path.split(b"?")[0] == b"/metrics":
                status, body = b"200 OK", generate_latest(REGISTRY)
            else:
                status, body = b"404 Not Found", b"see /metrics\n"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + CONTENT_TYPE_LATEST.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            REGISTRY.unregister(self._collector)
            self._server.close()
            await self._server.wait_closed()
