"""The daemon's metrics endpoint: the state gauges read at scrape time, and the counters."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter

from tests.unit.conftest import Harness, request
from tms_core import metrics
from tms_core.backends.local import free_ports
from tms_core.domain import ModelState, ServedModel
from tms_core.ids import ModelName


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


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_model_loads_reported_by_sidecars_are_counted(harness: Harness) -> None:
    await harness.manager.recover()
    ready_before = sample("tms_model_loads_total", outcome="ready")
    failed_before = sample("tms_model_loads_total", outcome="failed")
    seconds_before = sample("tms_model_load_seconds_sum")
    good = await harness.manager.acquire([request("good")])
    assert good.server_id is not None
    loaded = ServedModel(ModelName("good"), good.models[0].uri, ModelState.READY, load_s=2.5)
    await harness.manager.report(good.server_id, triton_ready=True, models=[loaded])
    # The same state reported again (a heartbeat) is not a second load.
    await harness.manager.report(good.server_id, triton_ready=True, models=[loaded])
    bad = await harness.manager.acquire([request("bad")])
    assert bad.server_id is not None
    failed = ServedModel(ModelName("bad"), bad.models[0].uri, ModelState.FAILED, "corrupt")
    await harness.manager.report(bad.server_id, triton_ready=True, models=[loaded, failed])
    assert sample("tms_model_loads_total", outcome="ready") == ready_before + 1
    assert sample("tms_model_loads_total", outcome="failed") == failed_before + 1
    assert sample("tms_model_load_seconds_sum") == seconds_before + 2.5
