"""The sidecar's own Prometheus metrics, scraped from a real sidecar beside a real Triton."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLES, Daemon, wait_for
from tests.integration.helpers import example
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_sidecar_serves_its_fetches_loads_and_reports_on_loopback(
    tmp_path: Path, make_daemon: Callable[..., Daemon]
) -> None:
    config = tmp_path / "tms.yaml"
    config.write_text("local:\n  sidecar_metrics: true\n")
    daemon = make_daemon(f"--config={config}")
    lease = next(iter(daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=60))))
    assert daemon.client.wait_until_ready(lease.id).state == pb.LEASE_READY

    [url_file] = (daemon.state_dir / "servers").glob("*/sidecar-metrics.url")
    url = url_file.read_text().strip()
    assert url.startswith("http://127.0.0.1:")
    metrics = scrape(url)
    assert metrics[("tms_sidecar_loads_total", (("outcome", "ready"),))] == 1
    assert metrics[("tms_sidecar_load_seconds_count", ())] == 1
    assert metrics[("tms_sidecar_load_seconds_sum", ())] > 0
    assert metrics[("tms_sidecar_fetch_seconds_count", ())] == 1
    model_bytes = sum(f.stat().st_size for f in (EXAMPLES / "add_sub").rglob("*") if f.is_file())
    assert metrics[("tms_sidecar_fetch_bytes_total", (("source", "download"),))] == model_bytes
    wait_for(
        lambda: scrape(url).get(("tms_sidecar_reports_total", (("outcome", "sent"),)), 0) >= 2,
        timeout=10,
        what="the sidecar's reports counted",
    )
