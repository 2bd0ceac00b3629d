"""The daemon's metrics endpoint: the state gauges read at scrape time, and the counters."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter

from tms_core import metrics
from tms_core.backends.local import free_ports


async def test_metrics_are_served_over_http() -> None:
    state = {
        "leases": Counter({("READY", "team-a"): 2}),
        "servers": Counter({"RUNNING": 1}),
        "memory": {("node", "host", "total"): 8},
    }
    server = metrics.MetricsServer(lambda: state)
    port = free_ports(1)[0]
    await server.start(f"127.0.0.1:{port}")
    metrics.API_REQUESTS.labels("LeaseService.Renew", "OK").inc()
    try:

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        status, text = await asyncio.to_thread(get, "/metrics")
        assert status == 200
        assert 'tms_leases{state="READY",tenant="team-a"} 2.0' in text
        assert 'tms_servers{state="RUNNING"} 1.0' in text
        assert 'tms_api_requests_total{code="OK",method="LeaseService.Renew"}' in text
        assert (await asyncio.to_thread(get, "/"))[0] == 404
    finally:
        await server.close()
